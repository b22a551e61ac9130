"""Crashes in the middle of a job lose nothing and count nothing twice.

The scorer, the gateway and the aggregator are killed with SIGKILL (no clean-up at all)
while a job runs, then started again; the NATS server is restarted in another run. Each
job must finish with exactly one record per observation and the aggregates of the
undisturbed in-process run. Each fault's outcome goes to the fault table
(`tests/support/faults.py`); `test_faults.py` holds the rest of issue 14's faults.
"""

from __future__ import annotations

import time

import pandas as pd
import pytest

from proto import Job
from services.local import LocalPipeline
from tests.support.faults import (
    assert_as_in_process,
    dead_lettered,
    expected_idx,
    record_fault,
    seconds_to_next_record,
)
from tests.support.pipeline import get_json, records_frame, scrape, standin_process, submit_jobs, wait_complete
from tests.support.synthetic import write_synthetic

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

ROWS = 600


def _wait_until_received(pipeline: LocalPipeline, job_id: str, at_least: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = {job["job_id"]: job for job in get_json(f"{pipeline.aggregator_url}/jobs")}
        received = jobs.get(job_id, {}).get("received", 0)
        if received >= at_least:
            return received
        time.sleep(0.02)
    raise AssertionError(f"{job_id} never reached {at_least} records")


def _submit_and_reach_a_quarter(pipeline: LocalPipeline, job: Job) -> Job:
    """Submit `job` and return once a quarter of it is stored but not all: the moment to interrupt."""
    (job,) = submit_jobs(pipeline, [job])
    received = _wait_until_received(pipeline, job.job_id, ROWS // 4)
    assert received < ROWS, "the job finished before it could be interrupted"
    return job


def _restart(pipeline: LocalPipeline, names: tuple[str, ...]) -> None:
    for name in names:
        pipeline.start_service(name)
        pipeline.wait_healthy(name)


def _recover_and_record(
    pipeline: LocalPipeline, job: Job, request, fault: str, scaled: str = "", timeout: float = 120
) -> pd.DataFrame:
    """After the fault has ended (now): time the first record and the job's completion
    (within `timeout`), record the outcome in the fault table, and return the records."""
    ended = time.monotonic()
    recovery = seconds_to_next_record(pipeline, job.job_id, since=ended, timeout=timeout)
    wait_complete(pipeline, [job.job_id], timeout=timeout - (time.monotonic() - ended))
    done = time.monotonic() - ended
    records = records_frame(pipeline, job.job_id)
    record_fault(request, fault, expected=expected_idx(job), seen=records["idx"], recovery_s=recovery, done_s=done,
                 dead_letters=dead_lettered(pipeline), scaled=scaled)  # fmt: skip
    return records


def _check_against_in_process(pipeline: LocalPipeline, job: Job, records: pd.DataFrame, tmp) -> None:
    assert len(records) == ROWS and records["idx"].is_unique  # every observation, none twice
    assert_as_in_process(pipeline, job, records, pipeline.standin_url, tmp)


def test_sigkill_of_scorer_gateway_and_aggregator_mid_job(tmp_path, request) -> None:
    files = write_synthetic(tmp_path / "data", rows=ROWS)
    # Slow answers keep the job running long enough to be interrupted; ack_wait is short so
    # the work the dead processes held is redelivered quickly.
    pipeline = LocalPipeline(tmp_path / "run", standin_args=("--latency", "0.02"), ack_wait=2.0)
    with pipeline:
        job = Job(job_id="", model="llama2-7b", dataset=str(files["sentiment"]), category="sentiment",
                  task="counterfactual")  # fmt: skip
        job = _submit_and_reach_a_quarter(pipeline, job)
        for name in ("scorer-0", "gateway-0", "aggregator"):
            pipeline.kill(name)
        _restart(pipeline, ("scorer-0", "gateway-0", "aggregator"))
        records = _recover_and_record(pipeline, job, request, "scorer, gateway and aggregator SIGKILLed together, "
                                      "restarted", scaled="ack wait 2 s (15 s)")  # fmt: skip
        _check_against_in_process(pipeline, job, records, tmp_path)


def test_a_nats_server_restart_then_a_sigkill_mid_job(tmp_path, request) -> None:
    files = write_synthetic(tmp_path / "data", rows=ROWS)
    # At most 4 answers at a time, 0.02 s each: at most 200 generations/s, so the job (about
    # 1,500 of them) lasts 7 s or more on any machine, and both faults land while it runs.
    pipeline = LocalPipeline(tmp_path / "run", standin_args=("--latency", "0.02", "--max-concurrent", "4"),
                             ack_wait=2.0)  # fmt: skip
    with pipeline:
        job = Job(job_id="", model="llama2-7b", dataset=str(files["entailment"]), category="entailment",
                  task="redacted")  # fmt: skip
        job = _submit_and_reach_a_quarter(pipeline, job)
        pipeline.restart_nats()  # same port, same store folder: the services reconnect
        recovery = seconds_to_next_record(pipeline, job.job_id, since=time.monotonic())
        # Then once more, killed outright: no goodbye to the clients, nothing flushed.
        assert _wait_until_received(pipeline, job.job_id, ROWS // 2) < ROWS, "the job finished before the kill"
        pipeline.kill("nats")
        pipeline.restart_nats()
        killed = time.monotonic()
        killed_recovery = seconds_to_next_record(pipeline, job.job_id, since=killed)
        wait_complete(pipeline, [job.job_id], timeout=120)
        done = time.monotonic() - killed
        records, dead, expected = records_frame(pipeline, job.job_id), dead_lettered(pipeline), expected_idx(job)
        record_fault(request, "nats-server restarted (SIGTERM, started again at once)", expected=expected,
                     seen=records["idx"], recovery_s=recovery, done_s=None, dead_letters=dead,
                     scaled="ack wait 2 s (15 s)")  # fmt: skip
        record_fault(request, "nats-server SIGKILLed once, restarted at once (same job, next)", expected=expected,
                     seen=records["idx"], recovery_s=killed_recovery, done_s=done, dead_letters=dead,
                     scaled="ack wait 2 s (15 s)")  # fmt: skip
        with standin_process("--latency", "0.02") as reference:  # same answers and durations, no limit
            assert_as_in_process(pipeline, job, records, reference, tmp_path)


def test_sigterm_finishes_or_hands_back_in_flight_work(tmp_path, request) -> None:
    """A stopped service leaves nothing hanging: with a 60 s ack wait, any message it kept
    unacknowledged would stall the job for a minute; the job must finish well before."""
    files = write_synthetic(tmp_path / "data", rows=ROWS)
    pipeline = LocalPipeline(tmp_path / "run", standin_args=("--latency", "0.05"), ack_wait=60.0)
    with pipeline:
        job = Job(job_id="", model="llama2-7b", dataset=str(files["multi-choice"]), category="multi-choice",
                  task="importance")  # fmt: skip
        job = _submit_and_reach_a_quarter(pipeline, job)
        for name in ("gateway-0", "scorer-0"):
            process = pipeline.processes[name]
            started = time.monotonic()
            pipeline.stop_process(name)
            assert process.returncode == 0 and time.monotonic() - started < 20
        _restart(pipeline, ("gateway-0", "scorer-0"))
        # Within 40 s: long before the 60 s ack wait would bring back anything left unacknowledged.
        records = _recover_and_record(pipeline, job, request, "gateway then scorer SIGTERMed mid-job (each stopped "
                                      "within the grace), restarted", timeout=40)  # fmt: skip
        _check_against_in_process(pipeline, job, records, tmp_path)


def test_a_restarted_aggregator_remembers_finished_jobs_without_rescanning(
    tmp_path, pipeline: LocalPipeline, request
) -> None:
    from tests.conftest import DATASET_MIRROR

    job = Job(job_id="", model="llama2-7b", dataset="RTE", task="answerable", mirror=str(DATASET_MIRROR))
    (job,) = submit_jobs(pipeline, [job])
    before = wait_complete(pipeline, [job.job_id])[job.job_id]
    pipeline.kill("aggregator")
    _restart(pipeline, ("aggregator",))
    after = get_json(f"{pipeline.aggregator_url}/jobs/{job.job_id}")
    records = records_frame(pipeline, job.job_id)
    record_fault(request, "aggregator SIGKILLed after its job completed, restarted", expected=expected_idx(job),
                 seen=records["idx"], recovery_s=None, done_s=None, dead_letters=dead_lettered(pipeline))  # fmt: skip
    assert after == before and after["complete"] and after["received"] == 12
    assert len(records) == 12
    # The dashboard's per-job series come back too, from the kept counts.
    gauges = scrape(f"{pipeline.aggregator_url}/metrics")
    label = f'job_id="{job.job_id}"'
    assert gauges[f'introspect_job_observations{{{label},state="received"}}'] == 12
    assert gauges[f"introspect_job_correct{{{label}}}"] == before["results"]["correct"]
    assert gauges[f"introspect_job_faithful_and_correct{{{label}}}"] == before["results"]["introspect_and_correct"]


def test_a_model_server_that_never_answers_some_requests_delays_the_job_only(tmp_path, monkeypatch, request) -> None:
    """One request in 7 is taken and never answered. Each such call is given up after the
    generation timeout and tried again; the job completes with every record and the
    aggregates of the undisturbed run, nothing dead-lettered (the timeout scaled down from
    300 s to 1 s through its setting)."""
    from tests.support.pipeline import metric_total

    files = write_synthetic(tmp_path / "data", rows=60)
    monkeypatch.setenv("INTROSPECT_GENERATION_TIMEOUT", "1")
    pipeline = LocalPipeline(tmp_path / "run", standin_args=("--hang-every", "7"))
    with pipeline:
        job = Job(job_id="", model="llama2-7b", dataset=str(files["sentiment"]), category="sentiment",
                  task="counterfactual")  # fmt: skip
        submitted = time.monotonic()
        (job,) = submit_jobs(pipeline, [job])
        wait_complete(pipeline, [job.job_id], timeout=120)
        records = records_frame(pipeline, job.job_id)
        # The fault lasts the whole job: "job done" is counted from the submission.
        record_fault(request, "1 in 7 generation requests taken and never answered, the whole job",
                     expected=expected_idx(job), seen=records["idx"], recovery_s=None,
                     done_s=time.monotonic() - submitted, dead_letters=dead_lettered(pipeline),
                     scaled="generation timeout 1 s (300 s); job done from submission")  # fmt: skip
        assert len(records) == 60 and records["idx"].is_unique and records["error"].isna().all()
        assert get_json(f"{pipeline.standin_url}/stand-in/stats")["hung"] > 0
        assert metric_total(pipeline, "gateway", "introspect_backend_retries_total") > 0
        assert metric_total(pipeline, "scorer", "introspect_dead_letters_total") == 0
        assert metric_total(pipeline, "gateway", "introspect_dead_letters_total") == 0
        # What the undisturbed run gives: the same deterministic answers, from a stand-in that hangs on nothing.
        with standin_process() as reference:
            assert_as_in_process(pipeline, job, records, reference, tmp_path, ignore=("duration",))


def _healthz(port: int) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_a_model_server_gone_for_long_costs_no_delivery_and_the_job_completes(tmp_path, request) -> None:
    """The stand-in is killed and its port closed (connections refused, as to a pod that is
    gone) for 20 s, three times the gateway's whole retry chain. The gateway says so on
    /healthz, holds the requests it has and takes no new ones; not one message is handed
    back for redelivery, so an outage of any length ends the same way: the job completes
    with every record and the undisturbed run's aggregates, nothing dead-lettered."""
    import socket

    from tests.support.pipeline import metric_total

    files = write_synthetic(tmp_path / "data", rows=ROWS)
    pipeline = LocalPipeline(tmp_path / "run", standin_args=("--latency", "0.2"))
    with pipeline:
        job = Job(job_id="", model="llama2-7b", dataset=str(files["sentiment"]), category="sentiment",
                  task="counterfactual")  # fmt: skip
        (job,) = submit_jobs(pipeline, [job])
        _wait_until_received(pipeline, job.job_id, 10)  # under way, most of it still to do
        port = pipeline.ports["standin"]
        pipeline.kill("standin")
        pipeline.sockets.pop("standin").close()
        # Nothing listens on the port now: connections are refused. It stays bound, so that
        # no connection the gateway opens on this machine is given it as its own port (a
        # client that connects to a free port of its own range can connect to itself).
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + 60
        while True:  # until the killed server's connections have closed
            try:
                server.bind(("127.0.0.1", port))
                break
            except OSError:
                assert time.monotonic() < deadline, "the killed stand-in's port never came free"
                time.sleep(0.05)
        gateway = pipeline.ports["gateway-0"]
        while (health := _healthz(gateway))[0] != 503:
            assert time.monotonic() < deadline, "the gateway never said it has no model server"
            time.sleep(0.05)
        assert "model-server: no model server answers" in health[1]
        time.sleep(20)
        assert _healthz(gateway)[0] == 503
        assert _wait_until_received(pipeline, job.job_id, 0) < ROWS
        server.listen(512)
        pipeline.sockets["standin"] = server  # the stand-in comes back on the port the gateway knows
        _restart(pipeline, ("standin",))
        records = _recover_and_record(pipeline, job, request, "model server gone 20 s (SIGKILLed, connections "
                                      "refused), restarted")  # fmt: skip
        assert _healthz(gateway) == (200, "ok\n")
        assert metric_total(pipeline, "gateway", "introspect_messages_released_total") == 0  # no delivery spent
        for stage in ("gateway", "scorer", "aggregator"):
            assert metric_total(pipeline, stage, "introspect_dead_letters_total") == 0
        _check_against_in_process(pipeline, job, records, tmp_path)
