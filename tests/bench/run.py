"""`just bench`: the pipeline measured against its limits and against plain baselines.

Prints one table (and the machine it ran on). Every number comes from a real run: a real
nats-server, the services as processes, the stand-in over HTTP. CPU time is read from
/proc for the Introspect service processes only (not nats-server, not the stand-in).
Every throughput is of a whole job, from submit to result files: a pipeline job from
`introspect submit` until the aggregator has written them, a baseline from preparing the
job (loading its split) until it has written the same files. The throughput and
saturation cases run three rounds (`--rounds`), each on a fresh pipeline, and print the
median with the range: a single 3-second run on a shared 2-core machine moves by a
fifth from one minute to the next. Case 8 (`tests/bench/commands.py`) times whole commands
as a user types them: `introspect run` against `introspect evaluate`, cold and warm.

    python -m tests.bench.run [--quick] [--start-up] [--commands]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import uvloop

from proto import Job, replace
from proto import subjects as sub
from services.backends.contract import Completion
from services.backends.tgi import TGIBackend, tgi_payload
from services.client import watch_events
from services.core.chat import GenerationParameters
from services.generation import ChatModel
from services.jobs import prepare_job, with_job_id
from services.local import PRELOADED, LocalPipeline, free_port, wait_for_port
from services.result_files import write_result_files
from services.runner import evaluate
from services.runtime.bus import Bus
from services.runtime.handlers import Outgoing
from services.runtime.settings import Settings
from tests.bench import spread
from tests.bench.commands import SIZES as WHOLE_COMMAND_SIZES
from tests.bench.commands import table as whole_commands
from tests.bench.memory import peak_rss_of
from tests.support.pipeline import get_json, metric_total
from tests.support.synthetic import write_synthetic

CONCURRENCY = 256  # the services' default messages in flight; the baselines get the same
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Row:
    what: str
    value: str
    goal: str = ""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def service_pids(pipeline: LocalPipeline) -> dict[str, int]:
    return {name: pipeline.processes[name].pid for name in pipeline.service_names()}


async def submit_and_wait(pipeline: LocalPipeline, job: Job, timeout: float = 600.0) -> float:
    """Submit `job`; seconds until the aggregator announces it complete (result files
    written). The bench listens for the `completed` event instead of polling the
    aggregator, so that measuring does not take the CPUs it measures."""
    bus = await Bus.open(Settings(nats_url=pipeline.nats_url), "bench")
    try:
        watch = await watch_events(bus)
        started = time.monotonic()
        submitted = with_job_id(job)
        await bus.publish([Outgoing(sub.JOBS, submitted, submitted.job_id)])
        while time.monotonic() - started < timeout:
            event = watch.last(submitted.job_id)
            if event is not None and event.event in ("completed", "rejected"):
                if event.event == "rejected":
                    raise RuntimeError(f"the producer refused the job: {event.detail}")
                return time.monotonic() - started
            await asyncio.sleep(0.005)
        raise TimeoutError(f"{submitted.job_id} did not complete in {timeout} s")
    finally:
        await bus.close()


@dataclass
class Timed:
    seconds: float
    cpu: float  # CPU seconds of all service processes
    generations: int  # backend calls (stand-in `generated`)
    questions: int  # generation requests answered (from cache or backend)


def run_job(pipeline: LocalPipeline, job: Job) -> Timed:
    pids = service_pids(pipeline)
    cpu_before = sum(cpu_seconds(pid) for pid in pids.values())
    generated_before = sum(standin_counts(pipeline))
    questions_before = questions(pipeline)
    seconds = uvloop.run(submit_and_wait(pipeline, replace(job, job_id="")))
    cpu = sum(cpu_seconds(pid) for pid in pids.values()) - cpu_before
    return Timed(seconds, cpu, sum(standin_counts(pipeline)) - generated_before, questions(pipeline) - questions_before)


def standin_counts(pipeline: LocalPipeline) -> list[int]:
    urls = [pipeline.standin_url] if pipeline.endpoint is None else pipeline.endpoint.split(",")
    return [get_json(f"{url}/stand-in/stats").get("generated", 0) for url in urls]


def questions(pipeline: LocalPipeline) -> int:
    """Generations asked: each observation's first question (the scorer's), every later one (the gateways')."""
    return int(sum(metric_total(pipeline, service, "introspect_questions_total") for service in ("scorer", "gateway")))


# -- baselines without a message bus --
#
# Each runs the whole job as `introspect evaluate` does, timed like a pipeline job from
# submit to result files: prepare it, load the split, run every observation, write the
# paper's JSON and the records' Parquet.


async def whole_job(job: Job, complete: Callable[..., Awaitable[Completion]], concurrency: int, out: Path) -> float:
    started = time.monotonic()
    prepared = prepare_job(job)
    observations = prepared.load_observations()
    setup_seconds = time.monotonic() - started
    model = ChatModel(prepared.model.chat_format, prepared.system, prepared.parameters, complete)
    records, running = await evaluate(prepared.task, observations, model.generate, concurrency)
    await asyncio.to_thread(write_result_files, out, prepared.experiment, running, setup_seconds, records)
    return time.monotonic() - started


async def in_process(job: Job, url: str, concurrency: int, out: Path) -> float:
    """The core's in-process runner against the stand-in over HTTP, one shared session."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        return await whole_job(job, TGIBackend(url, session).complete, concurrency, out)


async def naive(job: Job, url: str, concurrency: int, out: Path) -> float:
    """What research code often does: an asyncio loop that opens a new HTTP session per request."""

    async def complete(prompt: str, parameters: GenerationParameters) -> Completion:
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{url}/generate", json=tgi_payload(prompt, parameters)) as response,
        ):
            return Completion((await response.json())["generated_text"])

    return await whole_job(job, complete, concurrency, out)


# -- the measurements --


@dataclass
class Round:
    """One round of the overhead case: a fresh pipeline cold then warm, then the baselines
    against the same stand-in, close in time, so their ratios share the machine's mood."""

    cold: Timed
    warm: Timed
    in_process: float  # seconds
    in_process_again: float
    naive: float


def overhead_round(tmp: Path, job: Job) -> Round:
    with LocalPipeline(tmp, standin_args=("--max-concurrent", "100000")) as pipeline:
        cold = run_job(pipeline, job)
        warm = run_job(pipeline, job)
        assert cold.generations > 0 and warm.generations == 0
        url = pipeline.standin_url
        baseline = uvloop.run(in_process(job, url, CONCURRENCY, tmp / "in-process"))
        baseline_again = uvloop.run(in_process(job, url, CONCURRENCY, tmp / "in-process"))
        research = asyncio.run(naive(job, url, CONCURRENCY, tmp / "naive"))  # plain asyncio, as research code runs
    return Round(cold, warm, baseline, baseline_again, research)


def overhead_and_throughput(
    tmp: Path, files: dict[str, Path], rows: Callable[[Row], None], size: int, rounds: int
) -> None:
    job = Job(job_id="", model="llama2-7b", dataset=str(files["sentiment"]), category="sentiment",
              task="counterfactual", limit=size)  # fmt: skip
    done = [overhead_round(tmp / f"overhead-{n}", job) for n in range(rounds)]
    questions = done[0].cold.questions

    def rate(seconds: Callable[[Round], float], count: int = size) -> str:
        return spread([count / seconds(r) for r in done], "{:.0f}")

    def ratio(numerator: Callable[[Round], float], denominator: Callable[[Round], float]) -> str:
        return spread([numerator(r) / denominator(r) for r in done])

    cold_cpu = spread([1000 * r.cold.cpu / r.cold.questions for r in done])
    warm_cpu = spread([1000 * r.warm.cpu / r.warm.questions for r in done])
    rows(Row(f"1. overhead, counterfactual, {size} obs, cold",
             f"{cold_cpu} CPU-ms per generation ({questions} generations)", "<= 1.0"))  # fmt: skip
    rows(Row("2. throughput cold", f"{rate(lambda r: r.cold.seconds)} obs/s, "
             f"{rate(lambda r: r.cold.seconds, questions)} gen/s"))  # fmt: skip
    rows(Row("2. throughput warm (all from cache)", f"{rate(lambda r: r.warm.seconds)} obs/s, "
             f"{rate(lambda r: r.warm.seconds, questions)} gen/s; backend calls: 0"))  # fmt: skip
    rows(Row("2. warm CPU", f"{warm_cpu} CPU-ms per generation"))
    rows(Row("3. in-process baseline (shared session)", f"{rate(lambda r: r.in_process)} obs/s; "
             f"second run {rate(lambda r: r.in_process_again)} (it has no cache)"))  # fmt: skip
    rows(Row("3. pipeline cold / in-process", ratio(lambda r: r.in_process, lambda r: r.cold.seconds), ">= 0.80"))
    rows(Row("3. pipeline warm / in-process second run",
             ratio(lambda r: r.in_process_again, lambda r: r.warm.seconds), ">= 1.00"))  # fmt: skip
    rows(Row("3. naive loop (new session per request)", f"{rate(lambda r: r.naive)} obs/s"))
    rows(Row("3. pipeline cold / naive loop", ratio(lambda r: r.naive, lambda r: r.cold.seconds), ">= 2.00"))


@dataclass
class Saturation:
    steady: float  # generations per second while the backends were busy
    achieved: float  # generations per second from submit to done
    overloaded: int  # 429 answers


def saturation_round(tmp: Path, job: Job) -> Saturation:
    ports = [free_port() for _ in range(4)]
    command = [sys.executable, "-m", "services.cli", "standin", "--latency", "0.2", "--max-concurrent", "32"]
    servers = [subprocess.Popen([*command, "--port", str(port)], stdout=subprocess.DEVNULL) for port in ports]
    try:
        for port, server in zip(ports, servers, strict=True):
            wait_for_port(port, "a stand-in", server)
        endpoint = ",".join(f"http://127.0.0.1:{port}" for port in ports)
        with LocalPipeline(tmp, endpoint=endpoint) as pipeline:
            timed = run_job(pipeline, job)
            stats = [get_json(f"{url}/stand-in/stats") for url in endpoint.split(",")]
    finally:
        for server in servers:
            server.terminate()
    # The backends' own window: from the first generation any of them started to the last
    # one finished. Dataset loading and start-up are outside it.
    busy = max(s["last_finished_at"] for s in stats) - min(s["first_started_at"] for s in stats)
    overloaded = sum(s.get("overloaded", 0) for s in stats)
    return Saturation(timed.generations / busy, timed.generations / timed.seconds, overloaded)


def saturation(tmp: Path, files: dict[str, Path], rows: Callable[[Row], None], size: int, rounds: int) -> None:
    job = Job(job_id="", model="llama2-7b", dataset=str(files["sentiment"]), category="sentiment",
              task="classify", limit=size)  # fmt: skip
    done = [saturation_round(tmp / f"saturation-{n}", job) for n in range(rounds)]
    ideal = 4 * 32 / 0.2
    rows(Row(f"4. saturation, 4 backends x 32 at 0.2 s, {size} obs",
             f"{spread([100 * r.steady / ideal for r in done], '{:.1f}')}% of ideal {ideal:.0f} gen/s while "
             f"generating; {spread([100 * r.achieved / ideal for r in done], '{:.1f}')}% submit to done "
             f"(429s: {sum(r.overloaded for r in done)})", ">= 95%"))  # fmt: skip


def memory(tmp: Path, files: dict[str, Path], rows: Callable[[Row], None], sizes: tuple[int, ...]) -> None:
    for size in sizes:
        job = Job(job_id="", model="llama2-7b", dataset=str(files["sentiment"]), category="sentiment",
                  task="classify", limit=size)  # fmt: skip
        with LocalPipeline(tmp / f"memory-{size}", standin_args=("--max-concurrent", "100000")) as pipeline:
            run_job(pipeline, job)
            peaks = {name.split("-")[0]: peak_rss_of(pid) for name, pid in service_pids(pipeline).items()}
        shown = ", ".join(f"{name} {mib:.0f}" for name, mib in sorted(peaks.items()))
        rows(Row(f"5. peak RSS MiB, classify, {size} obs", shown, "flat"))


def job_state_memory(rows: Callable[[Row], None], sizes: tuple[int, ...]) -> None:
    """The two services that hold a job's state, alone, at sizes a whole run would take
    minutes to reach (tests/bench/memory.py)."""
    from tests.bench.memory import measure, measure_aggregator

    for size in sizes:
        producer, aggregator = measure(size), measure_aggregator(size)
        rows(Row(f"5. peak RSS MiB alone, {size} obs",
                 f"producer {producer.peak_rss_mib:.0f} (manifest after {producer.manifest_seconds:.2f} s), "
                 f"aggregator {aggregator.peak_rss_mib:.0f} (store, restart, finish)", "flat"))  # fmt: skip


def scaling(tmp: Path, files: dict[str, Path], rows: Callable[[Row], None], size: int) -> None:
    job = Job(job_id="", model="llama2-7b", dataset=str(files["sentiment"]), category="sentiment",
              task="counterfactual", limit=size)  # fmt: skip
    for processes in (1, 2):
        with LocalPipeline(tmp / f"scaling-{processes}", partitions=processes, scorers=processes,
                           standin_args=("--max-concurrent", "100000")) as pipeline:  # fmt: skip
            timed = run_job(pipeline, job)
        rows(Row(f"6. {processes} scorer + {processes} gateway, {size} obs cold",
                 f"{size / timed.seconds:.0f} obs/s, {timed.questions / timed.seconds:.0f} gen/s"))  # fmt: skip


SERVICE_MODULES = ("services.cli", "services.producer.service", "services.scorer.service",
                   "services.gateway.service", "services.aggregator.service")  # fmt: skip


def start_up(tmp: Path, rows: Callable[[Row], None], rounds: int) -> None:
    """What a person on a laptop waits for: each process's imports, and a whole 20-observation
    `introspect run` (start NATS, the stand-in and four services, run, stop) with a warm cache."""
    imports = {
        module.removeprefix("services.").removesuffix(".service"): min(_import_seconds((module,)) for _ in range(3))
        for module in SERVICE_MODULES
    }
    rows(Row("7. python -c 'import ...', best of 3, seconds",
             ", ".join(f"{name} {seconds:.2f}" for name, seconds in imports.items())))  # fmt: skip
    # What `run` waits for before the first service can start: the launcher's one import of
    # every service's modules (each service is then forked from it, importing nothing).
    launcher = min(_import_seconds(PRELOADED) for _ in range(3))
    rows(Row("7. the launcher's imports (every service's modules), seconds", f"{launcher:.2f}"))
    command = [sys.executable, "-m", "services.cli", "run", "--dataset", "IMDB", "--task", "counterfactual",
               "--mirror", str(Path(__file__).parents[1] / "fixtures" / "datasets"),
               "--data-dir", str(tmp / "start-up"), "--out", str(tmp / "start-up-out")]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)  # fills the cache
    seconds = []
    for _ in range(max(rounds, 3)):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        seconds.append(time.perf_counter() - started)
    rows(Row("7. introspect run, 20 obs counterfactual, warm cache, whole command",
             f"{spread(seconds)} s", "<= 3 s"))  # fmt: skip


def _import_seconds(modules: tuple[str, ...]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "; ".join(f"import {m}" for m in modules)], check=True)
    return time.perf_counter() - started


def calibration_ms() -> float:
    """A fixed pure-Python workload, best of three: the shared machine's speed right now.
    Printed before and after, so a reader can tell a slow minute from a slow pipeline."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        sum(i * i for i in range(1_000_000))
        best = min(best, time.perf_counter() - started)
    return 1000 * best


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())  # fmt: skip
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return (f"{os.cpu_count()} cores ({model}), {memory_kib / 2**20:.0f} GiB, Python {platform.python_version()}, "
            f"{time.strftime('%Y-%m-%d')}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, one round, to check the bench itself")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the throughput and saturation cases (median)")
    parser.add_argument("--start-up", action="store_true", help="case 7 alone: imports and a whole small run")
    parser.add_argument("--commands", action="store_true", help="case 8 alone: whole commands, run against evaluate")
    args = parser.parse_args()
    big = 10_000
    sizes = {"overhead": 3000, "saturation": 6000, "memory": (1000, big), "scaling": 2000}
    state_sizes: tuple[int, ...] = (1_000, 100_000)
    rounds = args.rounds
    if args.quick:
        big = 600
        sizes = {"overhead": 300, "saturation": 300, "memory": (100, big), "scaling": 200}
        state_sizes = (100, 1_000)
        rounds = 1

    rows: list[Row] = []

    def show(row: Row) -> None:
        rows.append(row)
        print(f"  {row.what:52} {row.value}" + (f"   [goal {row.goal}]" if row.goal else ""), flush=True)

    started = time.monotonic()
    print(f"machine: {machine()}; calibration loop {calibration_ms():.0f} ms")
    with tempfile.TemporaryDirectory(prefix="introspect-bench-") as folder:
        tmp = Path(folder)
        if args.start_up or args.commands:
            if args.start_up:
                start_up(tmp, show, max(rounds, 5))
            if args.commands:
                whole_commands(WHOLE_COMMAND_SIZES if not args.quick else (20, 200), rounds)
            print(f"bench took {time.monotonic() - started:.0f} s; calibration loop {calibration_ms():.0f} ms")
            return
        files = write_synthetic(tmp / "data", rows=big)
        overhead_and_throughput(tmp, files, show, sizes["overhead"], rounds)
        saturation(tmp, files, show, sizes["saturation"], rounds)
        memory(tmp, files, show, sizes["memory"])
        job_state_memory(show, state_sizes)
        scaling(tmp, files, show, sizes["scaling"])
        start_up(tmp, show, rounds)
    whole_commands(WHOLE_COMMAND_SIZES if not args.quick else (20, 200), rounds)
    print(f"bench took {time.monotonic() - started:.0f} s; calibration loop {calibration_ms():.0f} ms")


if __name__ == "__main__":
    main()
