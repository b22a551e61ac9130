"""The memory of the two services that hold a job's state, against the size of the job.

The producer: its peak RSS publishing a synthetic sentiment JSON lines file of N rows.
The aggregator: its peak RSS storing N scored results (about 1 KB of prompts and answers
each) in its RocksDB, restarting before the last one (so that it recounts the job from the
store) and finishing it (the records read back into Parquet and the result JSON).

Each measurement runs in a process of its own, so that its peak is of that job alone: the
service's handler, as the worker runs it, publishing to a bus that encodes each message
for the wire and drops it (JetStream's storage is not the service's memory). The process's
peak resident set (VmHWM) includes the interpreter and the modules it imports; what
grows with N is, in the producer, the split's order and row index, 16 bytes a row.

    python -m tests.bench.memory [ROWS ...]    # default: 1,000, 100,000 and 1,000,000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Measurement:
    rows: int
    peak_rss_mib: float  # the measured process's peak resident set
    manifest_seconds: float  # from the job's delivery until its manifest was handed over
    seconds: float  # until its last message was handed over
    file_mib: float


def measure(rows: int, timeout: float = 900.0) -> Measurement:
    """Write `rows` synthetic rows to a temporary file and run the producer over it in a
    fresh process; what that process reports."""
    from tests.support.synthetic import write_sentiment_lines

    with tempfile.TemporaryDirectory(prefix="introspect-memory-") as folder:
        path = write_sentiment_lines(Path(folder) / f"reviews-{rows}.jsonl", rows)
        command = [sys.executable, "-m", "tests.bench.memory", "--produce", str(path)]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"the producer failed on {rows} rows:\n{done.stderr[-4000:]}")
        report = json.loads(done.stdout.strip().splitlines()[-1])
        return Measurement(rows=rows, file_mib=path.stat().st_size / 2**20, **report)


def measure_aggregator(rows: int, timeout: float = 3600.0) -> Measurement:
    """The aggregator over a job of `rows` results, in a fresh process; what it reports."""
    with tempfile.TemporaryDirectory(prefix="introspect-memory-") as folder:
        command = [sys.executable, "-m", "tests.bench.memory", "--aggregate", str(rows), folder]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"the aggregator failed on {rows} results:\n{done.stderr[-4000:]}")
        report = json.loads(done.stdout.strip().splitlines()[-1])
        return Measurement(rows=rows, manifest_seconds=0.0, file_mib=0.0, **report)


async def _produce(path: Path) -> dict[str, float]:
    """In the measured process: one job over `path`, as the worker would run it."""
    from proto import Job, JobManifest, encode
    from services.producer.service import Producer
    from services.runtime.handlers import Outgoing, handle_and_publish

    class WireOnly:
        """Encodes what it is given, as the bus does, and keeps nothing."""

        manifest_at = 0.0

        async def publish(self, outgoing: Iterable[Outgoing], timeout: float = 10.0) -> None:
            for item in outgoing:
                encode(item.message)
                if isinstance(item.message, JobManifest):
                    self.manifest_at = time.monotonic()

        async def last(self, subject: str, kind: type) -> None:
            return None

    job = Job("memory", "llama2-7b", str(path), "classify", category="sentiment")
    publisher = WireOnly()
    producer = Producer(data_roots=(str(path.parent),))
    await producer.start(publisher)
    started = time.monotonic()
    await handle_and_publish(producer.handle, job, publisher)
    finished = time.monotonic()
    return {
        "peak_rss_mib": peak_rss_of(),
        "manifest_seconds": publisher.manifest_at - started,
        "seconds": finished - started,
    }


async def _aggregate(rows: int, folder: Path) -> dict[str, float]:
    """In the measured process: a job of `rows` results through the aggregator's handler,
    a restart before the last one, and the finish."""
    from proto import JobManifest, encode, replace
    from services.aggregator.service import Aggregator
    from services.core.observations import SentimentObservation
    from services.core.replay import run_transcript
    from services.core.tasks import Task
    from services.jobs import prepare_job
    from services.runtime.handlers import Outgoing
    from services.wire import scored_result
    from tests.support.messages import JOB

    class WireOnly:
        async def publish(self, outgoing: Iterable[Outgoing], timeout: float = 10.0) -> None:
            for item in outgoing:
                encode(item.message)

    text = "An evenly paced film with a few fine turns and more than a few flat ones. " * 6
    review = SentimentObservation(idx=0, label="positive", text=text)
    template = scored_result("memory", run_transcript(Task("classify", "sentiment"), review, ["positive"]), "classify")

    def result(idx: int) -> object:
        return replace(template, idx=idx, record={**template.record, "idx": idx})

    spec = prepare_job(replace(JOB, job_id="memory")).experiment
    manifest = JobManifest(job=replace(JOB, job_id="memory"), experiment_id=spec.experiment_id,
                           experiment=spec.args(), expected=rows)  # fmt: skip
    bus, started = WireOnly(), time.monotonic()
    aggregator = Aggregator(folder)
    await aggregator.start(bus)
    await aggregator.handle(manifest)
    for idx in range(rows - 1):
        await aggregator.handle(result(idx))  # type: ignore[arg-type]
    await aggregator.close()
    restarted = Aggregator(folder)  # recounts the job from its store
    await restarted.start(bus)
    await restarted.handle(result(rows - 1))  # type: ignore[arg-type]
    assert restarted.jobs["memory"].complete and restarted.jobs["memory"].received == rows
    await restarted.close()
    return {"peak_rss_mib": peak_rss_of(), "seconds": time.monotonic() - started}


def peak_rss_of(pid: int | str = "self") -> float:
    """A process's peak resident set in MiB: VmHWM, the high-water mark of its own memory.
    Not `ru_maxrss`, which Linux carries over from the process that forked it (a bench
    that has imported pandas would lend its children its own peak); 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", nargs="*", type=int, default=[1_000, 100_000, 1_000_000])
    parser.add_argument("--produce", type=Path, help=argparse.SUPPRESS)  # the measured processes
    parser.add_argument("--aggregate", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.produce is not None:
        print(json.dumps(asyncio.run(_produce(args.produce))))
        return
    if args.aggregate is not None:
        print(json.dumps(asyncio.run(_aggregate(int(args.aggregate[0]), Path(args.aggregate[1])))))
        return
    print(f"{'service':>10} {'rows':>10} {'file MiB':>9} {'peak RSS MiB':>13} {'manifest s':>11} {'total s':>8}")
    for rows in args.rows:
        result = measure(rows)
        print(f"{'producer':>10} {result.rows:>10,} {result.file_mib:>9.1f} {result.peak_rss_mib:>13.1f} "
              f"{result.manifest_seconds:>11.2f} {result.seconds:>8.1f}", flush=True)  # fmt: skip
        result = measure_aggregator(rows)
        print(f"{'aggregator':>10} {result.rows:>10,} {'':>9} {result.peak_rss_mib:>13.1f} {'':>11} "
              f"{result.seconds:>8.1f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
