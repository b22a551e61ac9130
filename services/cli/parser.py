"""The `introspect` command line: its arguments, and the jobs they describe."""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from proto import Job

from ..backends.contract import ENGINES
from ..core.datasets import DATASETS, UnknownDataset
from ..core.observations import DATASET_CATEGORIES, SPLIT_NAMES, InvalidObservation
from ..core.tasks import TASK_KINDS
from ..grid import GRID_NAMES, PAPER_SEED, PAPER_SPLIT, GridEntry, InvalidGrid
from ..grid import grid as grid_entries
from ..jobs import LOCAL_FILE_SUFFIXES

SERVICE_NAMES = ("producer", "scorer", "gateway", "aggregator")
DEFAULT_AGGREGATOR = "http://127.0.0.1:9090"
ENDPOINT_HELP = "a TGI URL, or vllm+URL, sglang+URL, openai+URL (llama.cpp and other OpenAI-compatible servers)"


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
    # A grid may be named instead (`submit --grid paper`): then --dataset and --task are not required.
    parser.add_argument(
        "--dataset", required=not grid, help=f"one of {', '.join(DATASETS)}, or a .jsonl/.csv/.parquet file", **many
    )
    parser.add_argument("--task", required=not grid, choices=TASK_KINDS, **many)
    parser.add_argument("--model", default=None if grid else "llama2-7b", **many,
                        help="shorthand, Hugging Face id, or tokenizer_config.json (default llama2-7b)")  # fmt: skip
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
    run.add_argument("--endpoint", default=None, help=f"{ENDPOINT_HELP} (default: stand-in)")
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
        "--endpoint",
        default=None,
        help=f"{ENDPOINT_HELP} (default: the stand-in, in this process)",
    )
    evaluate.add_argument(
        "--data-dir",
        default=None,
        help="use the generation cache of this folder, as `run --data-dir` does (default: no cache)",
    )
    evaluate.add_argument("--gateways", type=_count(1), default=1, help="the cache partitions the folder's run used")
    evaluate.add_argument("--out", default="results", help="folder for the result JSON and the records Parquet")
    evaluate.add_argument(
        "--force", action="store_true", help="replace a result of other provenance (not a real one by the stand-in's)"
    )

    serve = commands.add_parser("serve", help="run one service (settings from INTROSPECT_* variables and flags)")
    serve.add_argument("service", choices=SERVICE_NAMES)
    _nats_argument(serve)
    serve.add_argument("--data-dir", default=None)
    serve.add_argument("--metrics-port", type=_count(0), default=None)
    serve.add_argument("--partitions", type=_count(1), default=None, help="gateway partitions in the deployment")
    serve.add_argument("--partition", type=_count(0), default=None, help="the partition this gateway serves")
    serve.add_argument("--backend", action="append", default=None, metavar="URL",
                       help=f"gateway: {ENDPOINT_HELP} (repeatable)")  # fmt: skip
    serve.add_argument("--backend-concurrency", type=_count(1), default=None, help="gateway: per-backend limit")
    serve.add_argument("--generation-timeout", type=float, default=None,
                       help="gateway: seconds for one call to a model server (default 300)")  # fmt: skip
    serve.add_argument("--model-service", "--tgi-service", dest="model_service", default=None,
                       metavar="NAMESPACE/NAME[:PORT]",
                       help="gateway: find its model server pods through the Kubernetes API")  # fmt: skip
    serve.add_argument("--model-engine", choices=ENGINES, default=None,
                       help="gateway: what the --model-service pods run (default: tgi)")  # fmt: skip
    serve.add_argument("--offline", action="store_true", default=None, help="gateway: answer from the cache alone")
    serve.add_argument("--model", default=None,
                       help="gateway: the model its servers run, as jobs name it (default: every model)")  # fmt: skip
    serve.add_argument("--served-model", action="append", default=None, dest="served_models", metavar="MODEL",
                       help="producer: refuse jobs for other models (repeatable; default: any)")  # fmt: skip

    submit = commands.add_parser("submit", help="publish one job, or a grid of jobs, to a running pipeline")
    _job_arguments(submit, grid=True)
    submit.add_argument("--wait", type=float, nargs="?", const=600.0, default=None, metavar="SECONDS",
                        help="wait until the producer takes or refuses each job (default 600 s)")  # fmt: skip
    submit.add_argument("--grid", choices=GRID_NAMES, default=None,
                        help="the paper's experiment set (its job scripts); --task narrows it")  # fmt: skip
    submit.add_argument("--dry-run", action="store_true", help="print how many jobs and generations; submit nothing")
    _nats_argument(submit)

    status = commands.add_parser("status", help="progress of every job the aggregator knows")
    status.add_argument("--aggregator", default=DEFAULT_AGGREGATOR, help="the aggregator's HTTP address")

    results = commands.add_parser("results", help="a job's results: a table, the paper's JSON, or the records")
    results.add_argument("job_id", help="a job id, its experiment id, or a unique prefix of a job id")
    results.add_argument("--aggregator", default=DEFAULT_AGGREGATOR)
    results.add_argument("--format", choices=("table", "json", "parquet"), default="table")
    results.add_argument("--out", default=None, help="with --format parquet: the file to write")

    compare = commands.add_parser(
        "compare", help="one table across experiments: intervals, and paired tests with --pair",
        description="One row per experiment of a results folder (or of a deployment's complete jobs), "
        "accuracy and faithfulness with 95%% Wilson intervals; --pair adds McNemar's exact test and a paired "
        "bootstrap interval of the difference, Holm-corrected.",
    )  # fmt: skip
    compare.add_argument("folder", nargs="?", default="results", help="folder of <experiment id>.json and .parquet")
    compare.add_argument("--aggregator", default=None, help="compare the complete jobs of this aggregator instead")
    compare.add_argument("--format", choices=("table", "markdown", "csv"), default="table")
    compare.add_argument("--pair", nargs=2, action="append", default=[], metavar=("A", "B"),
                         help="two experiments on the same observations: row numbers, ids or id prefixes")  # fmt: skip

    report = commands.add_parser("report", help="the report page of a results folder, as static files")
    report.add_argument("folder", nargs="?", default="results", help="folder of <experiment id>.json and .parquet")
    report.add_argument("--out", required=True, help="the folder to write index.html and its data into")

    figures = commands.add_parser("figures", help="the paper's figures (PDF, PNG) and compute table, from results")
    figures.add_argument("folder", nargs="?", default="results", help="folder of <experiment id>.json")
    figures.add_argument("--out", default="figures", help="folder to write the figures and tables to")

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
    standin.add_argument("--hang-every", type=int, default=0, help="every n-th request is never answered")

    render = commands.add_parser("render", help="show the prompt a model's chat template makes of a message")
    render.add_argument("message")
    render.add_argument("--model", default="llama2-7b")
    render.add_argument("--system-message", default=None)
    return parser


def job_from(args: argparse.Namespace, model: str, dataset: str, task: str, config: Sequence[str]) -> Job:
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


def grid_from(args: argparse.Namespace) -> list[Job]:
    if getattr(args, "grid", None):
        return [job_from(args, e.model, e.dataset, e.task, e.config) for e in named_grid(args)]
    if not args.dataset or not args.task:
        raise InvalidGrid("submit needs --dataset and --task, or --grid paper")
    variants = [[o for o in v.split(",") if o and o != "none"] for v in args.variant] or [args.config]
    models = args.model or ["llama2-7b"]
    return [
        job_from(args, model, dataset, task, variant)
        for model, dataset, task, variant in itertools.product(models, args.dataset, args.task, variants)
    ]


def named_grid(args: argparse.Namespace) -> list[GridEntry]:
    """The experiments of `--grid NAME`, narrowed by --task; what the grid fixes may not be given."""
    fixed = {"--model": args.model, "--dataset": args.dataset, "--config": args.config, "--variant": args.variant,
             "--system-message": args.system_message, "--category": args.category}  # fmt: skip
    given = [flag for flag, value in fixed.items() if value]
    if args.split != PAPER_SPLIT or args.seed != PAPER_SEED:
        given.append("--split" if args.split != PAPER_SPLIT else "--seed")
    if given:
        raise InvalidGrid(f"--grid {args.grid} sets the models, datasets, split, seed and prompts; drop {given[0]}")
    return grid_entries(args.grid, args.task)
