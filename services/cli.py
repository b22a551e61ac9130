"""The `introspect` command."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from nats.errors import NoServersError

from proto import Job

from .core.chat import MODELS, ChatTurn
from .core.config import TASK_OPTIONS
from .core.datasets import DATASETS, UnknownDataset
from .core.observations import DATASET_CATEGORIES, SPLIT_NAMES, InvalidObservation, Observation
from .core.records import ResultRecord
from .core.results import Aggregate, summary
from .core.tasks import TASK_KINDS
from .jobs import JOB_ERRORS, LOCAL_FILE_SUFFIXES, PreparedJob, prepare_job
from .models import load_model
from .runtime.settings import InvalidSettings, Settings

SERVICE_NAMES = ("producer", "scorer", "gateway", "aggregator")
DEFAULT_AGGREGATOR = "http://127.0.0.1:9090"

# Mistakes a user can make; each becomes one line on stderr, never a traceback.
_USER_ERRORS: tuple[type[Exception], ...] = (*JOB_ERRORS, InvalidSettings)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not the whole usage text
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


def _job_arguments(parser: argparse.ArgumentParser, grid: bool = False) -> None:
    """The arguments that make a job; with `grid`, model, dataset and task take several values."""
    many: dict[str, Any] = {"nargs": "+"} if grid else {}
    parser.add_argument(
        "--dataset", required=True, help=f"one of {', '.join(DATASETS)}, or a .jsonl/.csv/.parquet file", **many
    )
    parser.add_argument("--task", required=True, choices=TASK_KINDS, **many)
    parser.add_argument("--model", default=["llama2-7b"] if grid else "llama2-7b", **many,
                        help="shorthand, Hugging Face id, or tokenizer_config.json")  # fmt: skip
    parser.add_argument("--split", default="test", choices=SPLIT_NAMES)
    parser.add_argument("--config", action="append", default=[], metavar="OPTION", help="task option (repeatable)")
    if grid:
        parser.add_argument(
            "--variant", action="append", default=[], metavar="OPTIONS",
            help="a prompt variant: comma-separated task options, or 'none' (repeatable; replaces --config)",
        )  # fmt: skip
    parser.add_argument("--system-message", default=None, help="default, none, or a custom text")
    parser.add_argument("--seed", type=_count(0), default=0)
    parser.add_argument("--limit", type=_count(0), default=None, help="at most this many observations")
    parser.add_argument("--start", type=_count(0), default=0, help="then only positions from START (shuffled order)")
    parser.add_argument("--stop", type=_count(0), default=None, help="... up to, not including, STOP")
    parser.add_argument("--mirror", default=None, help="folder with local copies of the datasets' raw files")
    parser.add_argument("--category", choices=DATASET_CATEGORIES, help="category of a local data file")
    parser.add_argument("--column", action="append", default=[], metavar="FIELD=COLUMN", help="map a file column")
    parser.add_argument("--label", action="append", default=[], metavar="RAW=LABEL", help="rename a label")


def _nats_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nats", default=None, help="NATS URL (default: $INTROSPECT_NATS_URL or nats://127.0.0.1:4222)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="introspect", description="Are LLM self-explanations faithful? Run the paper's protocol.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser(
        "run",
        help="run one experiment through the whole pipeline on this machine",
        description="Start NATS, the four services and the stand-in (or use --endpoint), run one job, print results.",
    )
    _job_arguments(run)
    run.add_argument(
        "--endpoint", default=None, help="TGI URL, or openai+URL for an OpenAI-compatible server (default: stand-in)"
    )
    run.add_argument("--data-dir", default=".introspect", help="NATS store, caches and the aggregator's database")
    run.add_argument("--out", default="results", help="folder for the result JSON and the records Parquet")
    run.add_argument("--gateways", type=_count(1), default=1, help="gateway processes (cache partitions)")

    evaluate = commands.add_parser(
        "evaluate",
        help="run one experiment in this process (no message bus)",
        description="Run one task over a dataset split in this process, print the aggregates, write result files.",
    )
    _job_arguments(evaluate)
    evaluate.add_argument("--concurrency", type=_count(1), default=32)
    evaluate.add_argument(
        "--endpoint", default=None, help="URL of a TGI server (default: the stand-in, in this process)"
    )
    evaluate.add_argument("--out", default="results", help="folder for the result JSON and the records Parquet")

    serve = commands.add_parser("serve", help="run one service (settings from INTROSPECT_* variables and flags)")
    serve.add_argument("service", choices=SERVICE_NAMES)
    _nats_argument(serve)
    serve.add_argument("--data-dir", default=None)
    serve.add_argument("--metrics-port", type=_count(0), default=None)
    serve.add_argument("--partitions", type=_count(1), default=None, help="gateway partitions in the deployment")
    serve.add_argument("--partition", type=_count(0), default=None, help="the partition this gateway serves")
    serve.add_argument("--backend", action="append", default=None, metavar="URL",
                       help="gateway: a TGI URL, or openai+URL (repeatable)")  # fmt: skip
    serve.add_argument("--backend-concurrency", type=_count(1), default=None, help="gateway: per-backend limit")
    serve.add_argument("--tgi-service", default=None, metavar="NAMESPACE/NAME[:PORT]",
                       help="gateway: find TGI pods through the Kubernetes API (EndpointSlices)")  # fmt: skip
    serve.add_argument("--offline", action="store_true", default=None, help="gateway: answer from the cache alone")
    serve.add_argument("--model", default=None,
                       help="gateway: the model its servers run, as jobs name it (default: every model)")  # fmt: skip
    serve.add_argument("--served-model", action="append", default=None, dest="served_models", metavar="MODEL",
                       help="producer: refuse jobs for other models (repeatable; default: any)")  # fmt: skip

    submit = commands.add_parser("submit", help="publish one job, or a grid of jobs, to a running pipeline")
    _job_arguments(submit, grid=True)
    submit.add_argument("--wait", type=float, nargs="?", const=600.0, default=None, metavar="SECONDS",
                        help="wait until the producer takes or refuses each job (default 600 s)")  # fmt: skip
    _nats_argument(submit)

    status = commands.add_parser("status", help="progress of every job the aggregator knows")
    status.add_argument("--aggregator", default=DEFAULT_AGGREGATOR, help="the aggregator's HTTP address")

    results = commands.add_parser("results", help="a job's results: a table, the paper's JSON, or the records")
    results.add_argument("job_id")
    results.add_argument("--aggregator", default=DEFAULT_AGGREGATOR)
    results.add_argument("--format", choices=("table", "json", "parquet"), default="table")
    results.add_argument("--out", default=None, help="with --format parquet: the file to write")

    dead = commands.add_parser("dead-letters", help="list or replay messages the services could not process")
    dead.add_argument("action", choices=("list", "replay"))
    dead.add_argument("--service", choices=SERVICE_NAMES, default=None)
    dead.add_argument("--seq", type=_count(1), action="append", default=None, help="replay only these (repeatable)")
    _nats_argument(dead)

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
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "run": _run,
        "evaluate": _evaluate,
        "serve": _serve,
        "submit": _submit,
        "status": _status,
        "results": _results,
        "dead-letters": _dead_letters,
        "tasks": _tasks,
        "render": _render,
        "standin": _standin,
    }
    try:
        return commands[args.command](args)
    except _USER_ERRORS as error:
        return _fail(str(error), 2)
    except (ConnectionError, OSError, NoServersError) as error:
        return _fail(f"cannot reach a server: {error}", 1)
    except KeyboardInterrupt:
        print("introspect: interrupted", file=sys.stderr)
        return 130


def _fail(message: str, code: int = 1) -> int:
    print(f"introspect: error: {message}", file=sys.stderr)
    return code


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    return Settings.from_env(nats_url=getattr(args, "nats", None), **overrides)


# -- one job from arguments --


def _job(args: argparse.Namespace, model: str, dataset: str, task: str, config: Sequence[str]) -> Job:
    local = Path(dataset).suffix.lower() in LOCAL_FILE_SUFFIXES
    if local and args.category is None:
        raise UnknownDataset("a local data file needs --category (sentiment, entailment or multi-choice)")
    return Job(
        job_id="",
        model=model,
        # The producer may run elsewhere: a local file and a mirror are named absolutely.
        dataset=str(Path(dataset).resolve()) if local else dataset,
        task=task,
        split=args.split,
        config=list(config),
        seed=args.seed,
        system_message=args.system_message,
        limit=args.limit,
        start=args.start,
        stop=args.stop,
        category=args.category,
        columns=_pairs(args.column, "--column"),
        labels=_pairs(args.label, "--label"),
        mirror=str(Path(args.mirror).resolve()) if args.mirror else None,
    )


def _grid(args: argparse.Namespace) -> list[Job]:
    variants = [[o for o in v.split(",") if o and o != "none"] for v in args.variant] or [args.config]
    return [
        _job(args, model, dataset, task, variant)
        for model, dataset, task, variant in itertools.product(args.model, args.dataset, args.task, variants)
    ]


# -- commands --


def _render(args: argparse.Namespace) -> int:
    from .core.chat import SystemMessage

    model = load_model(args.model)
    system = model.default_system if args.system_message is None else SystemMessage.parse(args.system_message)
    print(model.chat_format.render([ChatTurn(args.message)], system))
    return 0


def _standin(args: argparse.Namespace) -> int:
    from .standin.server import StandInSettings, serve

    settings = StandInSettings(args.latency, args.max_concurrent, args.error_every, args.max_input_chars)
    serve(settings, args.host, args.port)
    return 0


def _tasks(_: argparse.Namespace) -> int:
    print("tasks:    " + ", ".join(TASK_KINDS))
    print("datasets: " + ", ".join(f"{d.name} ({d.category})" for d in DATASETS.values()))
    print("models:   " + ", ".join(MODELS))
    print("options:")
    for option, meaning in TASK_OPTIONS.items():
        print(f"  {option:18} {meaning}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .runtime.service import Service, run

    settings = _settings(
        args,
        data_dir=args.data_dir,
        metrics_port=args.metrics_port,
        partitions=args.partitions,
        partition=args.partition,
        backends=tuple(args.backend) if args.backend else None,
        backend_concurrency=args.backend_concurrency,
        offline=args.offline,
        tgi_service=args.tgi_service,
        model=args.model,
        served_models=tuple(args.served_models) if args.served_models else None,
    )
    service: Service
    match args.service:
        case "producer":
            from .producer.service import Producer

            service = Producer(settings.served_models)
        case "scorer":
            from .scorer.service import Scorer

            service = Scorer(settings.partitions)
        case "gateway":
            from .gateway.service import Gateway

            service = Gateway(
                settings.data_path / "cache",
                settings.backends,
                settings.partition,
                settings.backend_concurrency,
                settings.offline,
                settings.tgi_service,
                settings.kubernetes_api,
                settings.model,
            )
        case _:
            from .aggregator.service import Aggregator

            service = Aggregator(settings.data_path, Path(settings.results_dir) if settings.results_dir else None)
    run(service, settings)
    return 0


def _submit(args: argparse.Namespace) -> int:
    from .client import submit

    submitted = asyncio.run(submit(_settings(args), _grid(args), wait=args.wait or 0.0))
    for job, verdict in submitted:
        print(job.job_id if verdict is None else f"{job.job_id}  {verdict.event}: {verdict.detail}")
    print(f"submitted {len(submitted)} job(s)", file=sys.stderr)
    if args.wait:
        rejected = sum(1 for _, verdict in submitted if verdict is not None and verdict.event == "rejected")
        unknown = sum(1 for _, verdict in submitted if verdict is None)
        if rejected or unknown:
            print(f"introspect: {rejected} rejected, {unknown} not yet taken by a producer", file=sys.stderr)
            return 1
    return 0


def _status(args: argparse.Namespace) -> int:
    import urllib.request

    with urllib.request.urlopen(f"{args.aggregator.rstrip('/')}/jobs", timeout=10) as response:
        jobs = json.load(response)
    if not jobs:
        print("no jobs")
    for job in jobs:
        print(f"{job['job_id']}  {_bar(job['received'], job['expected'])}  {'complete' if job['complete'] else ''}")
    return 0


def _bar(done: int, total: int, width: int = 30) -> str:
    filled = width if total == 0 else width * done // total
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"


def _results(args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.request

    base = f"{args.aggregator.rstrip('/')}/jobs/{args.job_id}"
    try:
        if args.format == "parquet":
            out = Path(args.out or f"{args.job_id}.parquet")
            with urllib.request.urlopen(f"{base}/records.parquet", timeout=60) as response:
                out.write_bytes(response.read())
            print(out)
        elif args.format == "json":
            with urllib.request.urlopen(f"{base}/result.json", timeout=60) as response:
                print(response.read().decode())
        else:
            with urllib.request.urlopen(base, timeout=60) as response:
                status = json.load(response)
            _print_results(status["results"])
    except urllib.error.HTTPError as error:
        return _fail(f"{args.job_id}: {error.read().decode().strip() or error.reason}")
    return 0


def _dead_letters(args: argparse.Namespace) -> int:
    from .client import dead_letters, replay_dead_letters

    settings = _settings(args)
    if args.action == "list":
        letters = asyncio.run(dead_letters(settings, args.service))
        for seq, letter in letters:
            print(f"{seq}\t{letter.service}\t{letter.subject}\t{letter.reason}")
        print(f"{len(letters)} dead letter(s)", file=sys.stderr)
    else:
        replayed = asyncio.run(replay_dead_letters(settings, args.seq))
        print(f"replayed {len(replayed)} dead letter(s)", file=sys.stderr)
    return 0


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .client import JobRejected, wait_for_job, with_job_id
    from .local import LocalPipeline, PipelineError

    job = with_job_id(_job(args, args.model, args.dataset, args.task, args.config))
    source = args.endpoint or "the stand-in (deterministic, not a language model)"
    print(f"{job.job_id}: answers from {source}", file=sys.stderr)
    pipeline = LocalPipeline(Path(args.data_dir).resolve(), args.endpoint, partitions=args.gateways,
                             results_dir=Path(args.out).resolve())  # fmt: skip
    try:
        with pipeline, tqdm(unit="obs", file=sys.stderr, disable=None) as progress:

            def on_progress(received: int, expected: int) -> None:
                progress.total = expected
                progress.update(received - progress.n)

            settings = Settings.from_env(nats_url=pipeline.nats_url)
            status = asyncio.run(
                wait_for_job(settings, pipeline.aggregator_url, job, on_progress, check=pipeline.check_alive)
            )
    except PipelineError as error:
        return _fail(str(error))
    except JobRejected as error:
        return _fail(str(error))
    _print_results(status["results"])
    print(f"results: {status['result_file']}\nrecords: {status['records_file']}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from . import datasets as loading
    from .backends.contract import BackendUnavailable
    from .result_files import write_result_files
    from .standin import STANDIN_NAME

    started = time.monotonic()
    prepared = prepare_job(_job(args, args.model, args.dataset, args.task, args.config))
    try:
        observations = prepared.load_observations()
    except loading.DatasetLoadError as error:
        return _fail(str(error))
    spec = prepared.experiment
    print(f"{spec.experiment_id}: {len(observations)} observations, answers from {args.endpoint or STANDIN_NAME}",
          file=sys.stderr)  # fmt: skip
    setup_seconds = time.monotonic() - started
    try:
        records, running = asyncio.run(_evaluate_in_process(prepared, observations, args.endpoint, args.concurrency))
    except BackendUnavailable as error:
        return _fail(str(error))
    result_path, records_path = write_result_files(Path(args.out), spec, running, setup_seconds, records)
    _print_results(running.results())
    print(f"results: {result_path}\nrecords: {records_path}")
    return 0


async def _evaluate_in_process(
    prepared: PreparedJob, observations: list[Observation], endpoint: str | None, concurrency: int
) -> tuple[list[ResultRecord], Aggregate]:
    import aiohttp
    from tqdm import tqdm

    from .backends.tgi import TGIBackend
    from .generation import ChatModel
    from .runner import evaluate
    from .standin import complete_in_process

    async with aiohttp.ClientSession() as session:
        complete = TGIBackend(endpoint, session).complete if endpoint else complete_in_process
        chat_model = ChatModel(prepared.model.chat_format, prepared.system, prepared.parameters, complete)
        with tqdm(total=len(observations), unit="obs", file=sys.stderr, disable=None) as progress:
            return await evaluate(
                prepared.task, observations, chat_model.generate, concurrency, lambda _: progress.update()
            )


def _print_results(results: dict[str, Any]) -> None:
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
