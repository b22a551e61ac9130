"""What each `introspect` command does. Talking to NATS and the aggregator is
`services.client`'s; starting a local pipeline is `services.local`'s. Heavy imports stay
inside the commands that need them, so `introspect --help` starts fast."""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import importlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from proto.subjects import partition_of

from ..backends.contract import BackendUnavailable, Complete
from ..compare import CompareError, live_summary, resolve_job, result_lines
from ..core.chat import MODELS, render_checked, template_mismatch
from ..core.config import TASK_OPTIONS
from ..core.datasets import DATASETS
from ..core.observations import Observation
from ..core.records import ResultRecord
from ..core.replay import Generation
from ..core.results import Aggregate
from ..core.tasks import TASK_KINDS
from ..errors import AggregatorRefused, JobRejected, NatsRefused, NatsUnreachable, OwnedElsewhere
from ..grid import InvalidGrid
from ..grid import summary as grid_summary
from ..jobs import JOB_ERRORS, PreparedJob, job_folders, prepare_job, with_job_id
from ..models import ResolvedModel, load_model
from ..result_files import ResultNotReplaced
from ..runtime.lock import FolderInUse, FolderLock
from ..runtime.settings import InvalidSettings, Settings, redact_url
from ..runtime.storage import StoreDamaged
from .parser import build_parser, grid_from, job_from, named_grid

# Mistakes a user can make; each becomes one line on stderr, never a traceback.
_USER_ERRORS: tuple[type[Exception], ...] = (
    *JOB_ERRORS, InvalidSettings, FolderInUse, InvalidGrid, CompareError, ResultNotReplaced
)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "run": _run,
        "evaluate": _evaluate,
        "serve": _serve,
        "submit": _submit,
        "status": _status,
        "results": _results,
        "compare": _compare,
        "figures": _figures,
        "report": _report,
        "dead-letters": _dead_letters,
        "tasks": _tasks,
        "render": _render,
        "standin": _standin,
    }
    try:
        return commands[args.command](args)
    except _USER_ERRORS as error:
        return _fail(str(error), 2)
    except BackendUnavailable as unavailable:
        return _fail(str(unavailable))
    except AggregatorRefused as refused:
        return _fail(str(refused))
    except (StoreDamaged, OwnedElsewhere) as refused:
        return _fail(str(refused))
    except NatsRefused as refused:
        return _fail(f"{refused} (--nats, or INTROSPECT_NATS_USER / _PASSWORD / _TOKEN / _CREDS)", 1)
    except NatsUnreachable:
        return _fail(f"cannot reach NATS at {_nats_url(args)} (is it running? --nats or INTROSPECT_NATS_URL)", 1)
    except (ConnectionError, OSError) as error:
        return _fail(f"cannot reach a server: {error}", 1)
    except Stopped as stopped:
        print(f"introspect: stopped by {signal.Signals(stopped.signum).name}", file=sys.stderr)
        return 128 + stopped.signum
    except KeyboardInterrupt:
        print("introspect: interrupted", file=sys.stderr)
        return 130


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP (a batch scheduler, `timeout`, a closed terminal): stop as for Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _stopping_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP raise `Stopped` while the block runs, so that everything it
    started is stopped on the way out, as Ctrl-C does."""

    def stop(signum: int, _frame: object) -> None:
        raise Stopped(signum)

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# More than this share of error records ends a run with a warning and exit code 1.
ERROR_SHARE_LIMIT = 0.5


def _too_many_errors(total: int, errors: Sequence[str]) -> str | None:
    """The warning for a run whose observations were mostly generation errors, else None."""
    if not errors or len(errors) <= ERROR_SHARE_LIMIT * total:
        return None
    reason, count = collections.Counter(errors).most_common(1)[0]
    return (f"{len(errors)} of {total} observations are generation errors; the most common "
            f"({count}): {reason}")  # fmt: skip


def _nats_url(args: argparse.Namespace) -> str:
    try:
        return _settings(args).public_nats_url
    except InvalidSettings:
        return redact_url(str(getattr(args, "nats", None)))


def _fail(message: str, code: int = 1) -> int:
    print(f"introspect: error: {message}", file=sys.stderr)
    return code


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    return Settings.from_env(nats_url=getattr(args, "nats", None), **overrides)


def _render(args: argparse.Namespace) -> int:
    from ..core.chat import SystemMessage

    model = load_model(args.model)
    system = model.default_system if args.system_message is None else SystemMessage.parse(args.system_message)
    print(render_checked(model.chat_format, args.message, system))
    return 0


def _standin(args: argparse.Namespace) -> int:
    from ..standin.server import StandInSettings, serve

    settings = StandInSettings(
        args.latency, args.max_concurrent, args.error_every, args.max_input_chars, hang_every=args.hang_every
    )
    handed = Settings.from_env()  # a socket and a ready pipe, when the local pipeline started it
    serve(settings, args.host, args.port, handed.listen_fd, handed.ready_fd)
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
    from ..runtime.service import Service, run

    settings = _settings(
        args,
        data_dir=args.data_dir,
        metrics_port=args.metrics_port,
        partitions=args.partitions,
        partition=args.partition,
        backends=tuple(args.backend) if args.backend else None,
        backend_concurrency=args.backend_concurrency,
        generation_timeout=args.generation_timeout,
        offline=args.offline,
        model_service=args.model_service,
        model_engine=args.model_engine,
        model=args.model,
        served_models=tuple(args.served_models) if args.served_models else None,
    )
    service: Service
    match args.service:
        case "producer":
            from ..producer.service import Producer

            service = Producer(settings.served_models, settings.data_roots)
        case "scorer":
            from ..scorer.service import Scorer

            service = Scorer(settings.partitions)
        case "gateway":
            from ..gateway.service import Gateway

            service = Gateway(
                settings.data_path / "cache",
                settings.backends,
                partition=settings.partition,
                partitions=settings.partitions,
                backend_limit=settings.backend_concurrency,
                generation_timeout=settings.generation_timeout,
                offline=settings.offline,
                cache_on_damage=settings.cache_on_damage,
                model_service=settings.model_service,
                model_engine=settings.model_engine,
                kubernetes_api=settings.kubernetes_api,
                model=settings.model,
            )
        case _:
            from ..aggregator.service import Aggregator

            results = Path(settings.results_dir) if settings.results_dir else None
            service = Aggregator(settings.data_path, results, settings.api_token)
    run(service, settings)
    return 0


def _submit(args: argparse.Namespace) -> int:
    from ..client import submit

    jobs = grid_from(args)
    if args.grid:
        print(grid_summary(args.grid, named_grid(args), args.limit, args.start, args.stop), file=sys.stderr)
    if args.dry_run:
        for job in jobs:
            print(f"{job.model} {job.dataset} {job.task} {','.join(job.config) or 'none'}")
        print(f"dry run: {len(jobs)} job(s), none submitted", file=sys.stderr)
        return 0
    submitted = asyncio.run(submit(_settings(args), jobs, wait=args.wait or 0.0))
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
    from ..client import list_jobs

    jobs = list_jobs(args.aggregator, _settings(args).api_token)
    if not jobs:
        print("no jobs")
    for job in jobs:
        state = "complete" if job["complete"] else "running"
        print(f"{job['job_id']}  {_bar(job['received'], job['expected'])}  {state}  {live_summary(job['results'])}")
    return 0


def _bar(done: int, total: int, width: int = 30) -> str:
    filled = width if total == 0 else width * done // total
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"


def _results(args: argparse.Namespace) -> int:
    from ..client import job_file, job_state, list_jobs

    token = _settings(args).api_token
    args.job_id = resolve_job(list_jobs(args.aggregator, token), args.job_id)
    if args.format == "parquet":
        out = Path(args.out or f"{args.job_id}.parquet")
        out.write_bytes(job_file(args.aggregator, args.job_id, "records.parquet", token))
        print(out)
    elif args.format == "json":
        print(job_file(args.aggregator, args.job_id, "result.json", token).decode())
    else:
        _print_results(job_state(args.aggregator, args.job_id, token)["results"])
    return 0


def _compare(args: argparse.Namespace) -> int:
    from ..compare import experiment_rows, load_aggregator, load_folder, pair_rows, render

    if args.aggregator:
        experiments, notes = load_aggregator(args.aggregator, _settings(args).api_token)
    else:
        experiments, notes = load_folder(Path(args.folder))
    for note in notes:
        print(f"introspect: {note}", file=sys.stderr)
    rows = experiment_rows(experiments)
    sys.stdout.write(render(rows, pair_rows(experiments, rows, args.pair), args.format))
    return 0


def _report(args: argparse.Namespace) -> int:
    from ..report.static import write_report

    out = Path(args.out)
    written = write_report(Path(args.folder), out)
    pages = f"{written['experiments']} experiment(s), {written['pages']} page(s) of records"
    print(f"report: {out / 'index.html'} ({pages})")
    return 0


def _figures(args: argparse.Namespace) -> int:
    from ..figures import paper_figures, paper_tables

    out = Path(args.out)
    figures, tables = paper_figures(Path(args.folder), out), paper_tables(Path(args.folder), out)
    for written in [*((f.pdf, f.png) for f in figures), *((t.csv, t.markdown, t.latex) for t in tables)]:
        print(*written, sep="\n")
    if not figures and not tables:
        print(f"introspect: no figure has data in {args.folder}", file=sys.stderr)
    return 0


def _dead_letters(args: argparse.Namespace) -> int:
    from ..client import dead_letters, replay_dead_letters

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
    from ..local import LocalPipeline, PipelineError, start_launcher, stop_launcher

    start_launcher()  # the services' imports, in the background, while this checks the job
    from .progress import RunProgress

    job = with_job_id(job_from(args, args.model, args.dataset, args.task, args.config))
    if args.endpoint:
        _probe(args.endpoint, load_model(args.model))  # before anything starts: a wrong endpoint fails in a second
    source = args.endpoint or "the stand-in (deterministic, not a language model)"
    print(f"{job.job_id}: answers from {source}", file=sys.stderr)
    pipeline = LocalPipeline(Path(args.data_dir).resolve(), args.endpoint, partitions=args.gateways,
                             results_dir=Path(args.out).resolve(), data_roots=job_folders(job))  # fmt: skip
    progress = RunProgress(pipeline.generation_counts)
    pipeline.on_step, pipeline.on_stop = progress.step, lambda: progress.step("stopping services...")
    # The NATS and HTTP clients of `wait_for_job` (0.3 s of imports), loaded in a thread while
    # the services start: this thread mostly waits for them meanwhile.
    clients = threading.Thread(target=importlib.import_module, args=("services.client",), daemon=True)
    clients.start()
    try:
        with _stopping_on_signals(), pipeline:
            clients.join()
            from ..client import wait_for_job

            settings = Settings.from_env(nats_url=pipeline.nats_url)
            status = asyncio.run(
                wait_for_job(
                    settings,
                    pipeline.aggregator_url,
                    job,
                    progress.update,
                    check=pipeline.check_alive,
                    on_dead_letter=progress.dead_letter,
                )
            )
    except (PipelineError, FolderInUse, JobRejected) as error:
        return _fail(str(error))
    finally:
        progress.close()
        stop_launcher()
    _print_results(status["results"])
    if status.get("result_note"):  # written beside a result of other provenance
        print(f"introspect: {status['result_note']}", file=sys.stderr)
    print(f"results: {status['result_file']}\nrecords: {status['records_file']}")
    if status["results"]["error"]:
        errors = _record_errors(Path(status["records_file"]))
        if warning := _too_many_errors(status["results"]["total"], errors):
            return _fail(warning)
    return 0


def _record_errors(records_file: Path) -> list[str]:
    import pyarrow.parquet as pq

    column = pq.read_table(records_file, columns=["error"]).column("error").to_pylist()
    return [error for error in column if error is not None]


def _evaluate(args: argparse.Namespace) -> int:
    from .. import datasets as loading
    from ..provenance import answer_source, standin_in_process
    from ..provenance import build as build_provenance
    from ..result_files import place_result, write_result_files
    from ..standin import STANDIN_NAME

    started, started_at = time.monotonic(), time.time()
    prepared = prepare_job(job_from(args, args.model, args.dataset, args.task, args.config))
    source = standin_in_process()
    if args.endpoint:
        source = answer_source([args.endpoint], _probe(args.endpoint, prepared.model))

    def provenance() -> dict[str, Any]:
        return build_provenance(job=prepared.job, chat=prepared.chat, sources=[source], started_at=started_at,
                                finished_at=time.time(), written_by="introspect evaluate")  # fmt: skip

    # Refused before any question is asked, not after hours of them (and checked again at the end).
    place_result(Path(args.out), prepared.experiment, provenance(), force=args.force)
    try:
        observations = prepared.load_observations()
    except loading.DatasetLoadError as error:
        return _fail(str(error))
    spec = prepared.experiment
    print(f"{spec.experiment_id}: {len(observations)} observations, answers from {args.endpoint or STANDIN_NAME}",
          file=sys.stderr)  # fmt: skip
    setup_seconds = time.monotonic() - started
    try:
        records, running = asyncio.run(
            _evaluate_in_process(prepared, observations, args.endpoint, args.concurrency, args.data_dir, args.gateways)
        )
    except BackendUnavailable as error:
        return _fail(str(error))
    result_path, records_path = write_result_files(
        Path(args.out), spec, running, setup_seconds, records, provenance(), force=args.force
    )
    _print_results(running.results())
    print(f"results: {result_path}\nrecords: {records_path}")
    if warning := _too_many_errors(len(records), [r.error for r in records if r.error is not None]):
        return _fail(warning)
    return 0


async def _evaluate_in_process(
    prepared: PreparedJob,
    observations: list[Observation],
    endpoint: str | None,
    concurrency: int,
    data_dir: str | None = None,
    partitions: int = 1,
) -> tuple[list[ResultRecord], Aggregate]:
    import aiohttp
    from tqdm import tqdm

    from ..backends import make_backend
    from ..generation import ChatModel
    from ..runner import evaluate
    from ..standin import STANDIN_MODEL_ID, complete_in_process

    async with aiohttp.ClientSession() as session, contextlib.AsyncExitStack() as stack:
        complete: Complete = complete_in_process
        model_id = STANDIN_MODEL_ID  # what the stand-in server says it serves: a run's cache answers
        if endpoint:
            backend = make_backend(endpoint, session, Settings.from_env().generation_timeout)
            complete, model_id = backend.complete, (await backend.describe()).model_id
        completes = [complete]
        if data_dir is not None:
            completes = [stack.enter_context(_cached(Path(data_dir), k, model_id, complete)) for k in range(partitions)]
        models = [ChatModel(prepared.model.chat_format, prepared.system, prepared.parameters, c) for c in completes]
        chat = prepared.chat

        async def generate(message: str) -> Generation:
            # The partition a run's scorer would send this question to, so its answer is found.
            return await models[partition_of(chat, message, len(models))].generate(message)

        with tqdm(total=len(observations), unit="obs", file=sys.stderr, disable=None) as progress:
            return await evaluate(prepared.task, observations, generate, concurrency, lambda _: progress.update())


@contextlib.contextmanager
def _cached(data_dir: Path, partition: int, model_id: str, complete: Complete) -> Iterator[Complete]:
    """The completion function behind partition `partition` of the gateway cache in `data_dir`."""
    from ..gateway.cache import CachedCompletions, GenerationCache

    folder = data_dir / "cache" / f"partition-{partition}"
    with FolderLock.beside(folder, f"the gateway cache {folder}"):
        cache = GenerationCache(folder)
        try:
            yield CachedCompletions(cache, model_id, complete)
        finally:
            cache.close()


def _probe(endpoint: str, model: ResolvedModel) -> str:
    """Ask the model server what it serves (its model id); say so, or raise BackendUnavailable saying why not."""
    from ..backends import probe

    info = asyncio.run(probe(endpoint))
    print(f"{endpoint} serves {info.model_id}", file=sys.stderr)
    if template_mismatch(model.chat_format.name, info.model_id):
        warning = (
            f"introspect: warning: {endpoint} serves {info.model_id}, but --model {model.name} renders the "
            f"{model.chat_format.name} chat template; give the --model that matches the server"
        )
        print(warning, file=sys.stderr)
    return info.model_id


def _print_results(results: dict[str, Any]) -> None:
    print("\n".join(result_lines(results)))
