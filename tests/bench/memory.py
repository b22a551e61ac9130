"""The producer's memory against the size of a job: its peak RSS publishing a synthetic
sentiment JSON lines file of N rows.

Each measurement runs in a process of its own, so that its peak is of that job alone: the
producer's handler, as the worker runs it, over the file, publishing to a bus that encodes
each message for the wire and drops it (JetStream's storage is not the producer's memory).
The process's peak resident set (`ru_maxrss`) includes the interpreter and the modules the
producer imports; what grows with N is the split's order and row index, 16 bytes a row.

    python -m tests.bench.memory [ROWS ...]    # default: 1,000, 100,000 and 1,000,000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
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
    peak_rss_mib: float  # the producer process's peak resident set
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


def peak_rss_mib(rows: int) -> float:
    """The producer's peak RSS in MiB publishing a synthetic job of `rows` rows."""
    return measure(rows).peak_rss_mib


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
    producer = Producer()
    await producer.start(publisher)
    started = time.monotonic()
    await handle_and_publish(producer.handle, job, publisher)
    finished = time.monotonic()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "peak_rss_mib": peak_kib / 1024,
        "manifest_seconds": publisher.manifest_at - started,
        "seconds": finished - started,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", nargs="*", type=int, default=[1_000, 100_000, 1_000_000])
    parser.add_argument("--produce", type=Path, help=argparse.SUPPRESS)  # the measured process
    args = parser.parse_args(argv)
    if args.produce is not None:
        print(json.dumps(asyncio.run(_produce(args.produce))))
        return
    print(f"{'rows':>10} {'file MiB':>9} {'peak RSS MiB':>13} {'manifest s':>11} {'total s':>8}")
    for rows in args.rows:
        result = measure(rows)
        print(f"{result.rows:>10,} {result.file_mib:>9.1f} {result.peak_rss_mib:>13.1f} "
              f"{result.manifest_seconds:>11.2f} {result.seconds:>8.1f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
