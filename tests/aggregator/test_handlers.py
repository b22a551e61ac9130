"""The aggregator's handlers alone, on the in-memory bus (`services/runtime/memory.py`): no NATS."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from proto import (
    JobEvent,
    JobManifest,
    ScoredResult,
    replace,
)
from services.aggregator.service import Aggregator
from services.aggregator.store import _record_key
from services.core.observations import SentimentObservation
from services.core.replay import run_transcript
from services.core.tasks import Task
from services.jobs import prepare_job
from services.runtime.memory import MemoryBus
from services.wire import scored_result
from tests.support.messages import JOB


def _result(job_id: str, idx: int, predict_answer: str = "positive") -> ScoredResult:
    observation = SentimentObservation(idx=idx, label="positive", text=f"Review {idx}.")
    return scored_result(
        job_id, run_transcript(Task("classify", "sentiment"), observation, [predict_answer]), "classify"
    )


def _manifest(job_id: str, expected: int) -> JobManifest:
    prepared = prepare_job(replace(JOB, job_id=job_id))
    spec = prepared.experiment
    return JobManifest(job=replace(JOB, job_id=job_id), experiment_id=spec.experiment_id, experiment=spec.args(),
                       expected=expected)  # fmt: skip


def _job_gauges(job_id: str) -> dict[str, float | None]:
    """A job's progress and completion as /metrics says them."""
    gauges = {state: REGISTRY.get_sample_value("introspect_job_observations", {"job_id": job_id, "state": state})
              for state in ("expected", "received")}  # fmt: skip
    return gauges | {"complete": REGISTRY.get_sample_value("introspect_job_complete", {"job_id": job_id})}


async def test_the_aggregator_counts_each_record_once_and_finishes_the_job(tmp_path: Path) -> None:
    aggregator, bus = Aggregator(tmp_path), MemoryBus()
    await aggregator.start(bus)
    try:
        assert await bus.deliver(aggregator, _manifest("j1", 2)) == []
        assert await bus.deliver(aggregator, _result("j1", 0)) == []
        assert await bus.deliver(aggregator, _result("j1", 0)) == []  # a redelivery: counted once
        assert aggregator.jobs["j1"].received == 1
        (completed,) = await bus.deliver(aggregator, _result("j1", 1, "negative"))
    finally:
        await aggregator.close()
    event = completed.message
    assert isinstance(event, JobEvent) and event.event == "completed" and completed.msg_id == "j1:completed"
    result = json.loads(Path(aggregator.jobs["j1"].status()["result_file"]).read_text())
    assert (result["results"]["correct"], result["results"]["total"]) == (1, 2)

    restarted = Aggregator(tmp_path)  # a restart: the job is known complete, nothing re-published
    await restarted.start(bus)
    try:
        assert restarted.jobs["j1"].complete and restarted.jobs["j1"].received == 2
        assert _job_gauges("j1") == {"expected": 2, "received": 2, "complete": 1}
    finally:
        await restarted.close()
    assert len(bus.of(JobEvent)) == 1


async def test_the_aggregator_dead_letters_results_it_cannot_place(tmp_path: Path) -> None:
    aggregator, bus = Aggregator(tmp_path), MemoryBus()
    await aggregator.start(bus)
    try:
        await bus.deliver(aggregator, _manifest("j1", 5))
        good = _result("j1", 0)
        assert await bus.deliver(aggregator, _result("unknown-job", 0)) == []
        assert await bus.deliver(aggregator, replace(good, idx=3)) == []  # does not match its record
        assert await bus.deliver(aggregator, replace(good, record={"idx": 1})) == []  # not a record
    finally:
        await aggregator.close()
    assert [letter.category for letter in bus.dead_letters] == ["unknown-job", "bad-record", "bad-record"]
    assert aggregator.jobs["j1"].received == 0


class _LosesTheFirstEvent(MemoryBus):
    """JetStream failing to store the first job event (a timeout): the input is redelivered."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    async def publish(self, outgoing, timeout: float = 10.0) -> None:
        items = list(outgoing)
        if not self.failed and any(isinstance(item.message, JobEvent) for item in items):
            self.failed = True
            raise TimeoutError("JetStream did not acknowledge the publication in time")
        await super().publish(items, timeout)


async def test_a_completed_event_that_failed_to_publish_is_sent_on_redelivery(tmp_path: Path) -> None:
    aggregator, bus = Aggregator(tmp_path), _LosesTheFirstEvent()
    await aggregator.start(bus)
    try:
        await bus.deliver(aggregator, _manifest("j1", 1))
        last = _result("j1", 0)
        with pytest.raises(TimeoutError):  # the worker naks: the result comes again
            await bus.deliver(aggregator, last)
        assert aggregator.jobs["j1"].complete and bus.of(JobEvent) == []
        (again,) = await bus.deliver(aggregator, last)  # a duplicate record, but the event goes out
        assert isinstance(again.message, JobEvent) and again.message.event == "completed"
        assert again.msg_id == "j1:completed" and "1 records; results in " in again.message.detail
        assert await bus.deliver(aggregator, _manifest("j1", 1)) == []  # sent once: JetStream drops repeats
    finally:
        await aggregator.close()


@pytest.mark.parametrize(
    ("change", "reason"),
    [({"duration": "slow"}, "field 'duration' must be a number, got 'slow'"),
     ({"label": 5}, "field 'label' must be text, got 5"),
     ({"correct": 1}, "field 'correct' must be true or false or null, got 1"),
     ({"duration": float("nan")}, "field 'duration' must be a number of seconds")],
)  # fmt: skip
async def test_a_mistyped_record_is_dead_lettered_before_it_is_stored(
    tmp_path: Path, change: dict, reason: str
) -> None:
    aggregator, bus = Aggregator(tmp_path), MemoryBus()
    await aggregator.start(bus)
    try:
        await bus.deliver(aggregator, _manifest("j1", 1))
        good = _result("j1", 0)
        assert await bus.deliver(aggregator, replace(good, record={**good.record, **change})) == []
        assert aggregator.jobs["j1"].received == 0  # nothing stored, nothing counted
        (completed,) = await bus.deliver(aggregator, good)  # the genuine record still finishes the job
        assert isinstance(completed.message, JobEvent) and completed.message.event == "completed"
    finally:
        await aggregator.close()
    (letter,) = bus.dead_letters
    assert letter.category == "bad-record" and reason in letter.reason


@pytest.mark.parametrize(
    ("change", "reason"),
    [({"model_name": "../../etc/llama"}, "is not a file name"),
     ({"seed": None}, "seed must be a whole number"),
     ({"split": None}, "split must be non-empty text")],
)  # fmt: skip
async def test_a_manifest_that_cannot_name_its_result_files_is_dead_lettered(
    tmp_path: Path, change: dict, reason: str
) -> None:
    aggregator, bus = Aggregator(tmp_path), MemoryBus()
    await aggregator.start(bus)
    manifest = _manifest("j1", 1)
    try:
        assert await bus.deliver(aggregator, replace(manifest, experiment={**manifest.experiment, **change})) == []
        missing = {k: v for k, v in manifest.experiment.items() if k != "seed"}
        assert await bus.deliver(aggregator, replace(manifest, experiment=missing)) == []
        assert aggregator.jobs == {}
    finally:
        await aggregator.close()
    assert [letter.category for letter in bus.dead_letters] == ["bad-manifest", "bad-manifest"]
    assert reason in bus.dead_letters[0].reason and "args has no 'seed'" in bus.dead_letters[1].reason
    restarted = Aggregator(tmp_path)  # and nothing of them was stored to trip a restart
    await restarted.start(bus)
    await restarted.close()


async def test_a_restart_skips_what_it_cannot_read_and_goes_on(tmp_path: Path) -> None:
    aggregator, bus = Aggregator(tmp_path), MemoryBus()
    await aggregator.start(bus)
    await bus.deliver(aggregator, _manifest("j1", 3))
    await bus.deliver(aggregator, _result("j1", 0))
    assert aggregator.store is not None
    aggregator.store.add_record("j1", 1, {"idx": 1, "label": 5})  # as an older version might have stored it
    aggregator.store.db[_record_key("j1", 2)] = b"\xc1 damaged"
    aggregator.store.put_manifest("j2", b"\xc1 not a manifest")
    await aggregator.close()

    restarted = Aggregator(tmp_path)
    await restarted.start(bus)  # does not fail: skips and reports all three
    try:
        assert set(restarted.jobs) == {"j1"} and restarted.jobs["j1"].received == 1
        # The unreadable records were dropped: their redeliveries are stored and complete the job.
        assert await bus.deliver(restarted, _result("j1", 1)) == []
        (completed,) = await bus.deliver(restarted, _result("j1", 2))
        assert isinstance(completed.message, JobEvent) and completed.message.event == "completed"
    finally:
        await restarted.close()


async def test_a_finish_that_fails_is_retried_until_the_job_completes(tmp_path: Path, monkeypatch) -> None:
    import services.aggregator.service as aggregator_module

    real, failures = aggregator_module.write_result_json, []

    def full_disk_twice(*args, **kwargs):
        if len(failures) < 2:
            failures.append(1)
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(aggregator_module, "write_result_json", full_disk_twice)
    monkeypatch.setattr(aggregator_module, "FINISH_RETRY_FIRST", 0.01)
    aggregator, bus = Aggregator(tmp_path), MemoryBus()
    await aggregator.start(bus)
    try:
        await bus.deliver(aggregator, _manifest("j1", 1))
        assert await bus.deliver(aggregator, _result("j1", 0)) == []  # stored and acknowledged, not finished
        assert not aggregator.jobs["j1"].complete
        # What the alert on a job whose records are all in but that does not complete reads.
        assert _job_gauges("j1") == {"expected": 1, "received": 1, "complete": 0}
        for _ in range(500):  # until the background retry has written the files
            if aggregator.jobs["j1"].complete:
                break
            await asyncio.sleep(0.01)
    finally:
        await aggregator.close()
    assert aggregator.jobs["j1"].complete and len(failures) == 2
    assert _job_gauges("j1") == {"expected": 1, "received": 1, "complete": 1}
    (event,) = bus.of(JobEvent)
    assert event.event == "completed"
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [
        f"{_manifest('j1', 1).experiment_id}.json",
        f"{_manifest('j1', 1).experiment_id}.parquet",
    ]  # no half-written files left behind


async def test_last_records_arriving_together_finish_the_job_once(tmp_path: Path, monkeypatch) -> None:
    """The last record and its redelivered copies arrive at once: the files are written once."""
    import services.aggregator.service as aggregator_module

    writes = []
    real_write = aggregator_module.write_result_json

    def counted(*args, **kwargs):
        writes.append(args[1])
        return real_write(*args, **kwargs)

    monkeypatch.setattr(aggregator_module, "write_result_json", counted)
    aggregator, bus = Aggregator(tmp_path), MemoryBus()
    await aggregator.start(bus)
    try:
        await bus.deliver(aggregator, _manifest("j1", 2))
        await bus.deliver(aggregator, _result("j1", 0))
        await asyncio.gather(*(bus.deliver(aggregator, _result("j1", 1)) for _ in range(8)))
        assert len(writes) == 1
        assert aggregator.jobs["j1"].complete and aggregator.jobs["j1"].received == 2
    finally:
        await aggregator.close()


def test_a_store_rocksdb_cannot_open_is_refused_with_what_it_holds(tmp_path: Path) -> None:
    from services.aggregator.store import ResultStore
    from services.runtime.storage import StoreDamaged

    ResultStore(tmp_path / "store").close()
    next((tmp_path / "store").glob("MANIFEST-*")).write_bytes(b"not a manifest")
    with pytest.raises(
        StoreDamaged, match=r"the aggregator's store at .* cannot be opened .* restore it from a backup"
    ):
        ResultStore(tmp_path / "store")
    assert not list(tmp_path.glob("store.damaged-*"))  # never set aside on its own


async def test_a_job_is_recounted_and_finished_a_batch_at_a_time(tmp_path: Path, monkeypatch) -> None:
    """The store is read (at a restart, and at the finish) a few records at a time, never
    whole: every record is counted once and reaches the Parquet file once, in idx order,
    with the same column types whether a batch holds answers or only errors."""
    import pandas as pd

    import services.aggregator.service as aggregator_module
    from services.core.records import ClassifyRecord

    monkeypatch.setattr(aggregator_module, "BATCH", 3)
    aggregator, bus = Aggregator(tmp_path), MemoryBus()
    await aggregator.start(bus)
    try:
        await bus.deliver(aggregator, _manifest("j1", 11))
        for idx in (9, 0, 1, 2, 3):
            await bus.deliver(aggregator, _result("j1", idx, "positive" if idx % 2 else "negative"))
        for idx in (4, 5, 6, 7, 8):  # a batch of errors alone among them
            error = ClassifyRecord(idx=idx, label="positive", error="422: too long", duration=0.5)
            await bus.deliver(aggregator, scored_result("j1", error, "classify"))
    finally:
        await aggregator.close()
    restarted = Aggregator(tmp_path)
    await restarted.start(bus)
    try:
        assert restarted.jobs["j1"].received == 10  # recounted from the store, three at a time
        await bus.deliver(restarted, _result("j1", 10))
    finally:
        await restarted.close()
    state = restarted.jobs["j1"]
    assert state.complete and state.received == 11
    frame = pd.read_parquet(state.status()["records_file"])
    assert frame["idx"].tolist() == list(range(11))
    assert frame["error"].fillna("").tolist() == [""] * 4 + ["422: too long"] * 5 + [""] * 2
    assert frame["correct"].tolist() == [False, True, False, True] + [None] * 5 + [True, True]
    assert str(frame["idx"].dtype) == "int64" and str(frame["duration"].dtype) == "float64"
    results = json.loads(Path(state.status()["result_file"]).read_text())["results"]
    assert (results["total"], results["error"], results["correct"]) == (11, 5, 4)


async def test_the_api_asks_for_its_bearer_token_and_the_client_sends_it(tmp_path: Path) -> None:
    """Records hold rows of the data a job read: with a token set, /jobs... answer 401
    without it; /metrics and /healthz are the runtime's and need none."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from services.client import job_state, list_jobs
    from services.errors import AggregatorRefused

    aggregator, bus = Aggregator(tmp_path, api_token="s3cret-token"), MemoryBus()
    await aggregator.start(bus)
    app = web.Application()
    app.add_routes(aggregator.routes())
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("/")).rstrip("/")
    try:
        await bus.deliver(aggregator, _manifest("j1", 2))
        for token in (None, "wrong", "s3cret-token-but-longer"):
            with pytest.raises(AggregatorRefused, match="the job list: this API needs its bearer token"):
                await asyncio.to_thread(list_jobs, url, token)
            with pytest.raises(AggregatorRefused, match="j1: this API needs its bearer token"):
                await asyncio.to_thread(job_state, url, "j1", token)
        (job,) = await asyncio.to_thread(list_jobs, url, "s3cret-token")
        assert job["job_id"] == "j1" and job["expected"] == 2
        assert (await asyncio.to_thread(job_state, url, "j1", "s3cret-token"))["received"] == 0
    finally:
        await server.close()
        await aggregator.close()
