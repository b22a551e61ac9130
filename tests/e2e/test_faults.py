"""The faults of issue 14 that `test_chaos.py` does not inject: nats-server killed in quick
succession and kept down, processes stopped with SIGSTOP, a 429 storm, the producer killed
mid-publication together with the aggregator, and nats-server killed four times while a
6,000-observation job runs at full speed.

Each job must end with every observation's record exactly once, the records and aggregates
of the undisturbed in-process run, and nothing dead-lettered. Faults are combined in one
job where each still shows on its own: the next begins only once records flow again after
the last. Each fault's outcome goes to the fault table (`tests/support/faults.py`).

Scaled, where the behaviour is the same: the ack wait is 2 s instead of 15 s (what a dead
or stopped process held comes back sooner), and so the aggregator's and nats-server's
SIGSTOP last 10 s instead of 30 s (still five ack waits) and the 429 storm 10 s instead of
40 s (still longer than the gateway's whole retry chain, 6.35 s, so requests are handed
back and redelivered). The gateway's SIGSTOP keeps its 30 s: its partition's claim, renewed
every 10 s, lapses 30 s after the last renewal, so a stop that long may outlive it, and no
setting shortens the lease.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path

import nats
import pytest

from proto import Job, JobProgress, decode
from proto import subjects as sub
from services.client import submit
from services.local import LocalPipeline
from services.producer.service import CHUNK
from services.runtime.settings import Settings
from tests.support.faults import (
    assert_as_in_process,
    dead_lettered,
    expected_idx,
    paused,
    received,
    record_fault,
    seconds_to_next_record,
    wait_received,
)
from tests.support.pipeline import records_frame, standin_process, submit_jobs, wait_complete
from tests.support.synthetic import write_sentiment_lines, write_synthetic

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

ACK_WAIT = 2.0  # scaled from the default 15 s: the work a fault held comes back sooner


def _classify_job(path: Path) -> Job:
    """One generation per observation: each answer completes a record, so the records stored
    follow the generations closely and a fault timed by them lands where work is left."""
    return Job(job_id="", model="llama2-7b", dataset=str(path), category="sentiment", task="classify")


def _about_to_be_interrupted(pipeline: LocalPipeline, job: Job, at_least: int, rows: int) -> None:
    """Until `at_least` records are stored, failing if the job is already over: a fault must land mid-job."""
    assert wait_received(pipeline, job.job_id, at_least) < rows, "the job finished before the fault"


def _kill_nats(pipeline: LocalPipeline, down: float = 0.0) -> float:
    """SIGKILL nats-server, keep it down `down` seconds, start it again on its port and
    store; the moment it answers again (the fault's end)."""
    pipeline.kill("nats")
    if down:
        time.sleep(down)  # the outage itself, not a wait for a condition
    pipeline.restart_nats()
    return time.monotonic()


def test_nats_server_sigkilled_three_times_in_9_s_then_down_for_20_s(tmp_path, request) -> None:
    rows = 600
    files = write_synthetic(tmp_path / "data", rows=rows)
    # The stand-in answers 2 requests at a time, 0.05 s each (429 past that): at most 40
    # observations/s, so on any machine at most 400 are done when nats-server goes down.
    latency = "0.05"
    pipeline = LocalPipeline(tmp_path / "run", standin_args=("--latency", latency, "--max-concurrent", "2"),
                             ack_wait=ACK_WAIT)  # fmt: skip
    with pipeline:
        (job,) = submit_jobs(pipeline, [_classify_job(files["sentiment"])])
        _about_to_be_interrupted(pipeline, job, 20, rows)
        started = time.monotonic()
        for at in (0.0, 4.5, 9.0):  # three kills in 9 s, each followed by an immediate restart
            time.sleep(max(0.0, started + at - time.monotonic()))
            assert received(pipeline, job.job_id) < rows, "the job finished before the fault"
            restarted = _kill_nats(pipeline)
        quick_recovery = seconds_to_next_record(pipeline, job.job_id, since=restarted)

        assert received(pipeline, job.job_id) < rows, "the job finished before the fault"
        back = _kill_nats(pipeline, down=20.0)
        down_recovery = seconds_to_next_record(pipeline, job.job_id, since=back)
        wait_complete(pipeline, [job.job_id], timeout=180)
        done = time.monotonic() - back

        records = records_frame(pipeline, job.job_id)
        dead = dead_lettered(pipeline)
        expected = expected_idx(job)
        record_fault(request, "nats-server SIGKILLed 3 times in 9 s, restarted at once each time",
                     expected=expected, seen=records["idx"], recovery_s=quick_recovery, done_s=None,
                     dead_letters=dead, scaled="ack wait 2 s (15 s)")  # fmt: skip
        record_fault(request, "nats-server SIGKILLed and down 20 s (same job, next)", expected=expected,
                     seen=records["idx"], recovery_s=down_recovery, done_s=done, dead_letters=dead,
                     scaled="ack wait 2 s (15 s)")  # fmt: skip
        assert dead == 0
        with standin_process("--latency", latency) as reference:  # same answers and durations, no limit
            assert_as_in_process(pipeline, job, records, reference, tmp_path)


def _overload(pipeline: LocalPipeline, seconds: float) -> None:
    """Start a 429 storm at the stand-in: every generation request refused for `seconds`."""
    body = json.dumps({"seconds": seconds}).encode()
    post = urllib.request.Request(f"{pipeline.standin_url}/stand-in/faults/overload", data=body, method="POST",
                                  headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(post, timeout=30) as response:
        assert response.status == 200


def test_sigstop_of_gateway_nats_server_and_aggregator_and_a_429_storm(tmp_path, request) -> None:
    """One job, four faults in turn, each once records flow again after the last: the
    gateway stopped 30 s, nats-server stopped 10 s, every generation answered 429 for 10 s,
    the aggregator stopped 10 s (last: the stages before it run on and may finish the job
    meanwhile, which is what it must absorb)."""
    rows = 1_200
    files = write_synthetic(tmp_path / "data", rows=rows)
    # At most 200 observations/s (4 at a time, 0.02 s each): generation is the bottleneck, as
    # on a cluster, so when a fault begins the rest of the job still needs the model server.
    latency = "0.02"
    pipeline = LocalPipeline(tmp_path / "run", standin_args=("--latency", latency, "--max-concurrent", "4"),
                             ack_wait=ACK_WAIT)  # fmt: skip
    storm = 10.0
    with pipeline:
        (job,) = submit_jobs(pipeline, [_classify_job(files["sentiment"])])
        recoveries: dict[str, float | None] = {}

        _about_to_be_interrupted(pipeline, job, rows // 6, rows)
        with paused(pipeline, "gateway-0"):
            time.sleep(30)  # the stop itself
        recoveries["gateway"] = seconds_to_next_record(pipeline, job.job_id, since=time.monotonic())

        _about_to_be_interrupted(pipeline, job, 2 * rows // 6, rows)
        with paused(pipeline, "nats"):
            time.sleep(10)
        recoveries["nats"] = seconds_to_next_record(pipeline, job.job_id, since=time.monotonic())

        _about_to_be_interrupted(pipeline, job, 3 * rows // 6, rows)
        _overload(pipeline, storm)
        storm_over = time.monotonic() + storm
        time.sleep(storm)  # the storm itself
        recoveries["storm"] = seconds_to_next_record(pipeline, job.job_id, since=storm_over)
        stats = json.load(urllib.request.urlopen(f"{pipeline.standin_url}/stand-in/stats", timeout=30))
        assert stats.get("storm_429", 0) > 0, "no generation was asked for during the storm"

        _about_to_be_interrupted(pipeline, job, 4 * rows // 6, rows)
        with paused(pipeline, "aggregator"):
            time.sleep(10)
        resumed = time.monotonic()
        recoveries["aggregator"] = seconds_to_next_record(pipeline, job.job_id, since=resumed)
        wait_complete(pipeline, [job.job_id], timeout=120)
        done = time.monotonic() - resumed

        records = records_frame(pipeline, job.job_id)
        dead = dead_lettered(pipeline)
        expected = expected_idx(job)
        for fault, key, scaled, finished in (
            ("gateway SIGSTOPped 30 s", "gateway", "ack wait 2 s (15 s)", None),
            ("nats-server SIGSTOPped 10 s (same job, next)", "nats", "10 s (30 s), ack wait 2 s (15 s)", None),
            ("429 from the model server to every request for 10 s (same job, next)", "storm", "10 s (40 s)", None),
            ("aggregator SIGSTOPped 10 s (same job, last)", "aggregator", "10 s (30 s), ack wait 2 s (15 s)", done),
        ):
            record_fault(request, fault, expected=expected, seen=records["idx"], recovery_s=recoveries[key],
                         done_s=finished, dead_letters=dead, scaled=scaled)  # fmt: skip
        assert dead == 0
        with standin_process("--latency", latency) as reference:  # same answers and durations, no limit
            assert_as_in_process(pipeline, job, records, reference, tmp_path)


async def _submit_and_kill_mid_publication(
    pipeline: LocalPipeline, job: Job, names: tuple[str, ...]
) -> tuple[Job, int]:
    """Submit `job`, SIGKILL `names` once the producer has stored its first chunk of
    observations (its progress message says so); the job as submitted, and how many
    observations the producer had stored when killed."""
    client = await nats.connect(pipeline.nats_url)
    try:
        first_chunk = asyncio.Event()

        async def on_progress(msg: nats.aio.msg.Msg) -> None:
            if decode(msg.data, JobProgress).published >= CHUNK:
                first_chunk.set()

        await client.subscribe(f"{sub.PROGRESS}.*", cb=on_progress)
        ((job, _),) = await submit(Settings(nats_url=pipeline.nats_url), [job])
        await asyncio.wait_for(first_chunk.wait(), 120)
        for name in names:
            pipeline.kill(name)
        stored = await client.jetstream().get_last_msg("INTROSPECT_PROGRESS", sub.progress_subject(job.job_id))
        return job, decode(stored.data or b"", JobProgress).published
    finally:
        await client.close()


def test_producer_and_aggregator_sigkilled_mid_publication_then_nats_server_four_times_at_full_speed(
    tmp_path, request
) -> None:
    """6,000 observations, the stand-in answering at once. The producer and the aggregator
    are killed together while the producer publishes; once both are back and records flow,
    nats-server is killed four times (at a fifth, two, three and four fifths of the job)."""
    rows = 6_000
    data = write_sentiment_lines(tmp_path / "reviews.jsonl", rows)
    job = _classify_job(data)
    pipeline = LocalPipeline(tmp_path / "run", ack_wait=ACK_WAIT)
    with pipeline:
        job, published = asyncio.run(_submit_and_kill_mid_publication(pipeline, job, ("producer", "aggregator")))
        assert CHUNK <= published < rows, "the producer finished before it could be killed"
        for name in ("producer", "aggregator"):
            pipeline.start_service(name)
            pipeline.wait_healthy(name)
        job_id = job.job_id
        kill_recovery = seconds_to_next_record(pipeline, job_id, since=time.monotonic())

        nats_recoveries: list[float | None] = []
        for fifth in range(1, 5):
            _about_to_be_interrupted(pipeline, job, fifth * rows // 5, rows)
            restarted = _kill_nats(pipeline)
            nats_recoveries.append(seconds_to_next_record(pipeline, job_id, since=restarted))
        wait_complete(pipeline, [job_id], timeout=180)
        done = time.monotonic() - restarted

        records = records_frame(pipeline, job_id)
        dead = dead_lettered(pipeline)
        expected = expected_idx(job)
        record_fault(request, f"producer (at {published:,} of {rows:,} published) and aggregator SIGKILLed together",
                     expected=expected, seen=records["idx"], recovery_s=kill_recovery, done_s=None,
                     dead_letters=dead, scaled="ack wait 2 s (15 s)")  # fmt: skip
        slowest = max((seconds for seconds in nats_recoveries if seconds is not None), default=None)
        record_fault(request, "nats-server SIGKILLed 4 times at full speed, 6,000 observations (same job, next; "
                     "slowest recovery of the 4)", expected=expected, seen=records["idx"], recovery_s=slowest,
                     done_s=done, dead_letters=dead, scaled="ack wait 2 s (15 s)")  # fmt: skip
        assert dead == 0
        assert_as_in_process(pipeline, job, records, pipeline.standin_url, tmp_path)


def test_the_fault_table_counts_what_was_lost_and_doubled_and_prints_markdown(tmp_path, monkeypatch, capsys) -> None:
    """The table's numbers are counted, not given: an idx missing is lost, one seen twice or
    one not expected is doubled; lines are written once the test has ended, with its outcome."""
    from types import SimpleNamespace

    import pytest as _pytest

    from tests.support import faults

    assert faults.lost_and_doubled(range(5), [0, 1, 1, 3, 4, 4, 4, 9]) == (1, 4)  # 2 lost; 1, 4, 4 and 9 extra
    assert faults.lost_and_doubled(range(3), [2, 0, 1]) == (0, 0)

    table = tmp_path / "faults.jsonl"
    finalizers: list = []
    session = SimpleNamespace(testsfailed=0)
    fake = SimpleNamespace(node=SimpleNamespace(nodeid="t.py::test_x", stash=_pytest.Stash()), session=session,
                           addfinalizer=finalizers.append)  # fmt: skip
    monkeypatch.delenv(faults.TABLE_VARIABLE, raising=False)
    faults.record_fault(fake, "nothing written", expected=[0], seen=[0], recovery_s=None, done_s=None)
    assert finalizers == []  # unset: nothing to write

    monkeypatch.setenv(faults.TABLE_VARIABLE, str(table))
    faults.record_fault(fake, "a | b", expected=range(3), seen=[0, 0, 2], recovery_s=1.234, done_s=None)
    faults.record_fault(fake, "second", expected=range(3), seen=[0, 1, 2], recovery_s=None, done_s=2.0, scaled="x")
    assert not table.exists() and len(finalizers) == 1  # written once the test has ended
    session.testsfailed = 1  # the test failed after measuring
    finalizers[0]()
    lines = [json.loads(line) for line in table.read_text().splitlines()]
    assert [(r["fault"], r["lost"], r["doubled"], r["passed"]) for r in lines] == [
        ("a | b", 1, 1, False),
        ("second", 0, 0, False),
    ]
    assert faults.main([str(table)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("| Fault injected |") and len(printed) == 4
    assert printed[2] == "| a \\| b | — | 3 | 1 | 1 | — | 1.23 | — | `test_x` (FAILED) |"
