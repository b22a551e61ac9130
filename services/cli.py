"""The `introspect` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .core.chat import (
    MODELS,
    ChatFormat,
    ChatTurn,
    GenerationParameters,
    SystemMessage,
    SystemMessageNotSupported,
    UnknownModel,
    generation_defaults,
)
from .core.config import TASK_OPTIONS, InvalidTaskConfig, TaskConfig
from .core.datasets import DATASETS, UnknownDataset, resolve_dataset
from .core.observations import DATASET_CATEGORIES, SPLIT_NAMES, InvalidObservation, Observation
from .core.records import ResultRecord, record_to_dict
from .core.results import Aggregate, ExperimentSpec, result_json, summary
from .core.tasks import TASK_KINDS, Task, UnknownTask
from .models import load_model

# Mistakes a user can make; each becomes one line on stderr, never a traceback.
_USER_ERRORS = (
    InvalidTaskConfig,
    UnknownDataset,
    UnknownModel,
    UnknownTask,
    SystemMessageNotSupported,
    InvalidObservation,
    FileNotFoundError,
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not the whole usage text
        self.exit(2, f"introspect: error: {message} (see --help)\n")


def _pairs(values: Sequence[str], what: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, target = value.partition("=")
        if not sep or not key or not target:
            raise InvalidObservation(f"{what} must look like NAME=VALUE, got {value!r}")
        out[key] = target
    return out


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="introspect", description="Are LLM self-explanations faithful? Run the paper's protocol.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    evaluate = commands.add_parser(
        "evaluate",
        help="run one experiment in this process (no message bus)",
        description="Run one task over a dataset split in this process, print the aggregates, write result files.",
    )
    evaluate.add_argument(
        "--dataset", required=True, help=f"one of {', '.join(DATASETS)}, or a .jsonl/.csv/.parquet file"
    )
    evaluate.add_argument("--split", default="test", choices=SPLIT_NAMES)
    evaluate.add_argument("--task", required=True, choices=TASK_KINDS)
    evaluate.add_argument("--config", action="append", default=[], metavar="OPTION", help="task option (repeatable)")
    evaluate.add_argument("--model", default="llama2-7b", help="shorthand, Hugging Face id, or tokenizer_config.json")
    evaluate.add_argument("--system-message", default=None, help="default, none, or a custom text")
    evaluate.add_argument("--seed", type=_count(0), default=0)
    evaluate.add_argument("--limit", type=_count(0), default=None, help="evaluate at most this many observations")
    evaluate.add_argument("--concurrency", type=_count(1), default=32)
    evaluate.add_argument(
        "--endpoint", default=None, help="URL of a TGI server (default: the stand-in, in this process)"
    )
    evaluate.add_argument("--mirror", default=None, help="folder with local copies of the datasets' raw files")
    evaluate.add_argument("--category", choices=DATASET_CATEGORIES, help="category of a local data file")
    evaluate.add_argument("--column", action="append", default=[], metavar="FIELD=COLUMN", help="map a file column")
    evaluate.add_argument("--label", action="append", default=[], metavar="RAW=LABEL", help="rename a label")
    evaluate.add_argument("--out", default="results", help="folder for the result JSON and the records Parquet")

    commands.add_parser("tasks", help="list the tasks, task options, datasets and models")

    standin = commands.add_parser("standin", help="serve the deterministic stand-in model over TGI's HTTP protocol")
    standin.add_argument("--host", default="127.0.0.1")
    standin.add_argument("--port", type=int, default=8080)
    standin.add_argument("--latency", type=float, default=0.0, help="seconds per generation")
    standin.add_argument("--max-concurrent", type=int, default=128, help="answer 429 past this many in flight")
    standin.add_argument("--error-every", type=int, default=0, help="every n-th request fails with 503")
    standin.add_argument("--max-input-chars", type=int, default=100_000, help="answer 422 for longer prompts")

    render = commands.add_parser("render", help="show the prompt a model's chat template makes of a message")
    render.add_argument("message")
    render.add_argument("--model", default="llama2-7b")
    render.add_argument("--system-message", default=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        match args.command:
            case "evaluate":
                return _evaluate(args)
            case "tasks":
                return _tasks()
            case "render":
                return _render(args)
            case "standin":
                return _standin(args)
    except _USER_ERRORS as error:
        print(f"introspect: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("introspect: interrupted", file=sys.stderr)
        return 130
    return 0


def _system(args: argparse.Namespace, default: SystemMessage) -> SystemMessage:
    return default if args.system_message is None else SystemMessage.parse(args.system_message)


def _render(args: argparse.Namespace) -> int:
    model = load_model(args.model)
    print(model.chat_format.render([ChatTurn(args.message)], _system(args, model.default_system)))
    return 0


def _standin(args: argparse.Namespace) -> int:
    from .standin.server import StandInSettings, serve

    settings = StandInSettings(args.latency, args.max_concurrent, args.error_every, args.max_input_chars)
    serve(settings, args.host, args.port)
    return 0


def _tasks() -> int:
    print("tasks:    " + ", ".join(TASK_KINDS))
    print("datasets: " + ", ".join(f"{d.name} ({d.category})" for d in DATASETS.values()))
    print("models:   " + ", ".join(MODELS))
    print("options:")
    for option, meaning in TASK_OPTIONS.items():
        print(f"  {option:18} {meaning}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from . import datasets as loading
    from .backends.tgi import BackendUnavailable
    from .standin import STANDIN_NAME

    started = time.monotonic()
    model = load_model(args.model)
    system = _system(args, model.default_system)
    model.chat_format.render([ChatTurn("check")], system)  # refuse a system message early

    source: str | loading.LocalFileDataset
    if Path(args.dataset).suffix.lower() in (".jsonl", ".json", ".csv", ".parquet"):
        if args.category is None:
            raise UnknownDataset("a local data file needs --category (sentiment, entailment or multi-choice)")
        source = loading.LocalFileDataset(
            Path(args.dataset), args.category, _pairs(args.column, "--column"), _pairs(args.label, "--label")
        )
        category, dataset_name = args.category, source.name
    else:
        definition = resolve_dataset(args.dataset)
        source, category, dataset_name = definition.name, definition.category, definition.name

    task = Task(args.task, category, TaskConfig.of(args.config))
    try:
        observations = loading.load_split(source, args.split, seed=args.seed, mirror=args.mirror)
    except loading.DatasetLoadError as error:
        print(f"introspect: error: {error}", file=sys.stderr)
        return 1
    if args.limit is not None:
        observations = observations[: args.limit]

    spec = ExperimentSpec(
        model=model.name,
        system_message=system.id_part,
        dataset=dataset_name,
        split=args.split,
        task=task.kind,
        config=tuple(task.config.sorted()),
        seed=args.seed,
        max_observations=args.limit,
    )
    source_name = args.endpoint or STANDIN_NAME
    print(f"{spec.experiment_id}: {len(observations)} observations, answers from {source_name}", file=sys.stderr)
    parameters = generation_defaults(model.chat_format, args.seed)
    setup_seconds = time.monotonic() - started
    try:
        records, running = asyncio.run(
            _run(task, observations, model.chat_format, system, parameters, args.endpoint, args.concurrency)
        )
    except BackendUnavailable as error:
        print(f"introspect: error: {error}", file=sys.stderr)
        return 1

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = result_json(spec, running, setup_seconds)
    result_path = out / f"{spec.experiment_id}.json"
    result_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    records_path = out / f"{spec.experiment_id}.parquet"
    _write_records(records_path, [record_to_dict(r) for r in records])

    _print_results(result["results"])
    print(f"results: {result_path}\nrecords: {records_path}")
    return 0


async def _run(
    task: Task,
    observations: list[Observation],
    chat_format: ChatFormat,
    system: SystemMessage,
    parameters: GenerationParameters,
    endpoint: str | None,
    concurrency: int,
) -> tuple[list[ResultRecord], Aggregate]:
    import aiohttp
    from tqdm import tqdm

    from .backends.tgi import TGIBackend
    from .runner import ChatModel, evaluate
    from .standin import complete_in_process

    async with aiohttp.ClientSession() as session:
        complete = TGIBackend(endpoint, session).complete if endpoint else complete_in_process
        chat_model = ChatModel(chat_format, system, parameters, complete)
        with tqdm(total=len(observations), unit="obs", file=sys.stderr, disable=None) as progress:
            return await evaluate(task, observations, chat_model.generate, concurrency, lambda _: progress.update())


def _write_records(path: Path, rows: list[dict[str, object]]) -> None:
    import pandas as pd

    pd.DataFrame(rows).to_parquet(path, index=False)


def _print_results(results: dict[str, object]) -> None:
    counts = {k: v for k, v in results.items() if k != "answer"}
    width = max(len(k) for k in counts)
    for key, value in counts.items():
        print(f"{key:>{width}}  {value}")
    for name, proportion in summary(results).items():
        print(f"{name:>{width}}  {proportion}")


def entry_point() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
