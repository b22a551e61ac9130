"""What the fault tests share: injecting a pause, timing the recovery, and the fault table.

Each fault test measures its outcome and hands it to `record_fault`: the fault in words,
records lost and records doubled (counted from the records the job produced against the
idx it should have produced), and two times, both from the moment the fault ended (the
part restarted and ready, resumed, or the server answering again):

- recovery: until the first record stored after it (the aggregator's count rises above
  what it was when the fault ended; for the producer's own tests, the observation stream's);
- job done: until the whole job is complete (the last fault of a test only).

With `INTROSPECT_FAULT_TABLE=FILE` set, each outcome is appended to FILE as a JSON line
once the test has ended (with whether it passed); unset, nothing is written.
`python -m tests.support.faults FILE` prints those lines as the README's Markdown table.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from proto import Job
from services.client import dead_letters
from services.jobs import prepare_job
from services.local import LocalPipeline
from services.runtime.settings import Settings
from tests.support.pipeline import get_json, in_process, result_json

TABLE_VARIABLE = "INTROSPECT_FAULT_TABLE"


@dataclass(frozen=True)
class FaultOutcome:
    fault: str  # what was injected, in words
    scaled: str  # what differs from the fault as the issue states it ("" where nothing)
    expected: int  # records the job should produce
    lost: int  # expected idx missing from the records
    doubled: int  # records beyond the first for an idx (and records of an idx not expected)
    recovery_s: float | None  # fault's end -> first record stored after it
    done_s: float | None  # fault's end -> job complete
    dead_letters: int | None  # dead-lettered while it ran (None: not measured)
    test: str  # the test's node id
    passed: bool | None = None  # the test's outcome, known once it has ended


_PENDING = pytest.StashKey[list[FaultOutcome]]()  # a test's outcomes, written once it has ended


def lost_and_doubled(expected: Iterable[int], seen: Iterable[int]) -> tuple[int, int]:
    """(expected idx never seen, records beyond one per expected idx): an idx that is not
    expected at all counts as doubled too, a record that should not be there."""
    wanted = set(expected)
    counts = Counter(int(idx) for idx in seen)
    lost = len(wanted - counts.keys())
    doubled = sum(n - 1 if idx in wanted else n for idx, n in counts.items())
    return lost, doubled


def expected_idx(job: Job) -> list[int]:
    """The idx a job's records should hold: those of its observations, as the in-process run reads them."""
    return [observation.idx for observation in prepare_job(job).load_observations()]


def record_fault(
    request: pytest.FixtureRequest,
    fault: str,
    *,
    expected: Iterable[int],
    seen: Iterable[int],
    recovery_s: float | None,
    done_s: float | None,
    dead_letters: float | None = None,
    scaled: str = "",
) -> FaultOutcome:
    """Measure a fault's outcome and, with INTROSPECT_FAULT_TABLE set, write it once the test has ended.

    Call it before asserting on the records, so that a failing run still shows what it lost."""
    wanted = list(expected)
    lost, doubled = lost_and_doubled(wanted, seen)
    outcome = FaultOutcome(
        fault=fault,
        scaled=scaled,
        expected=len(wanted),
        lost=lost,
        doubled=doubled,
        recovery_s=None if recovery_s is None else round(recovery_s, 2),
        done_s=None if done_s is None else round(done_s, 2),
        dead_letters=None if dead_letters is None else int(dead_letters),
        test=request.node.nodeid,
    )
    target = os.environ.get(TABLE_VARIABLE)
    if target:
        pending = request.node.stash.get(_PENDING, None)
        if pending is None:  # the test's first outcome: write them all, in order, once it has ended
            pending = []
            request.node.stash[_PENDING] = pending
            # The test's own failure is counted by the time its finalizers run (its call phase
            # has been reported): more failures than now means this test failed after measuring.
            failed_before = request.session.testsfailed

            def write() -> None:
                passed = request.session.testsfailed == failed_before
                with open(target, "a", encoding="utf-8") as table:
                    for measured in pending:
                        table.write(json.dumps(asdict(measured) | {"passed": passed}) + "\n")

            request.addfinalizer(write)
        pending.append(outcome)
    return outcome


def dead_lettered(pipeline: LocalPipeline) -> int:
    """Dead letters on the pipeline's stream, every service's: counted where they are kept,
    so that a restarted process's metrics, which start again at 0, do not hide any."""
    import asyncio

    return len(asyncio.run(dead_letters(Settings(nats_url=pipeline.nats_url))))


def assert_as_in_process(
    pipeline: LocalPipeline,
    job: Job,
    records: pd.DataFrame,
    standin_url: str,
    tmp: Path,
    ignore: tuple[str, ...] = (),
) -> None:
    """Every observation's record once, and the records (but the columns `ignore`) and
    aggregates of the in-process run against the stand-in at `standin_url` (the pipeline's
    own, or one answering alike).

    A record's `duration` counts only what a server computed for this run: an answer the
    gateway's cache gave (a prompt asked before, or work redone after a fault) counts 0,
    while the reference, which has no cache, counts every answer. So durations are held to
    at most the reference's: never counted twice, whatever was redelivered."""
    assert records["idx"].is_unique and sorted(records["idx"]) == sorted(expected_idx(job))
    expected_records, expected_results = in_process(job, standin_url, tmp)
    assert result_json(pipeline, job.job_id)["results"] == expected_results
    if "duration" not in ignore:
        excess = records["duration"] - expected_records["duration"]
        assert (excess <= 1e-9).all(), records.loc[excess > 1e-9, ["idx", "duration"]]
    dropped = list(dict.fromkeys(["duration", *ignore]))
    pd.testing.assert_frame_equal(records.drop(columns=dropped), expected_records.drop(columns=dropped))


def received(pipeline: LocalPipeline, job_id: str) -> int:
    """How many records the aggregator has stored for the job (0 before it knows the job)."""
    jobs = {job["job_id"]: job for job in get_json(f"{pipeline.aggregator_url}/jobs")}
    return int(jobs.get(job_id, {}).get("received", 0))


def wait_received(pipeline: LocalPipeline, job_id: str, at_least: int, timeout: float = 120.0) -> int:
    """Until the aggregator has stored `at_least` records of the job; how many it has."""
    deadline = time.monotonic() + timeout
    while (count := received(pipeline, job_id)) < at_least:
        assert time.monotonic() < deadline, f"{job_id} never reached {at_least} records (at {count})"
        time.sleep(0.02)
    return count


def seconds_to_next_record(pipeline: LocalPipeline, job_id: str, since: float, timeout: float = 120.0) -> float | None:
    """Seconds from `since` (time.monotonic() when a fault ended) until the aggregator stores
    a record more than it held when first asked here, right after the fault's end; None if
    the job had all its records by then (the work in hand finished while the parts
    restarted): complete, or still writing its result files, when no record can follow."""
    deadline = time.monotonic() + timeout
    held = None
    while True:
        with contextlib.suppress(OSError):  # a restarted aggregator may not answer at once
            job = {j["job_id"]: j for j in get_json(f"{pipeline.aggregator_url}/jobs")}.get(job_id, {})
            count = int(job.get("received", 0))
            if held is None and (job.get("complete") or count >= int(job.get("expected", count + 1))):
                return None
            if held is None:
                held = count
            elif count > held:
                return time.monotonic() - since
        assert time.monotonic() < deadline, f"no record of {job_id} within {timeout:.0f} s of the fault's end"
        time.sleep(0.02)


def pause(pipeline: LocalPipeline, name: str) -> None:
    """SIGSTOP a process of the pipeline; returns once the kernel has stopped it."""
    process = pipeline.processes[name]
    process.send_signal(signal.SIGSTOP)
    deadline = time.monotonic() + 10
    while _state(process.pid) != "T":  # a busy process stops a moment after the signal
        assert time.monotonic() < deadline, f"{name} did not stop within 10 s"
        time.sleep(0.005)


def resume(pipeline: LocalPipeline, name: str) -> None:
    pipeline.processes[name].send_signal(signal.SIGCONT)


@contextlib.contextmanager
def paused(pipeline: LocalPipeline, name: str) -> Iterator[None]:
    """`name` stopped with SIGSTOP inside the block, continued however the block ends (a
    stopped process ignores the SIGTERM that would end the pipeline)."""
    pause(pipeline, name)
    try:
        yield
    finally:
        resume(pipeline, name)


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return stat.read().rpartition(")")[2].split()[0]


COLUMNS = (
    "Fault injected",
    "Scaled",
    "Records",
    "Lost",
    "Doubled",
    "Dead-lettered",
    "Recovery (s)",
    "Job done (s)",
    "Test",
)


def markdown(outcomes: Iterable[dict[str, Any]]) -> str:
    """The fault table: one row per recorded outcome, in the order recorded."""

    def cell(value: object) -> str:
        if value is None or value == "":
            return "—"
        if isinstance(value, float):
            return f"{value:.2f}"
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in outcomes:
        test = f"`{row['test'].rpartition('::')[2]}`" + (" (FAILED)" if row.get("passed") is False else "")
        values = (row["fault"], row["scaled"], row["expected"], row["lost"], row["doubled"], row["dead_letters"],
                  row["recovery_s"], row["done_s"], test)  # fmt: skip
        lines.append("| " + " | ".join(cell(v) for v in values) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.support.faults FILE (the JSON lines INTROSPECT_FAULT_TABLE named)")
        return 2
    lines = Path(argv[0]).read_text(encoding="utf-8").splitlines()
    print(markdown(json.loads(line) for line in lines if line.strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
