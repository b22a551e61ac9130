"""The producer's handlers alone, on the in-memory bus (`services/runtime/memory.py`): no NATS."""

from __future__ import annotations

from pathlib import Path

from proto import (
    Job,
    JobEvent,
    JobManifest,
    ObservationMessage,
    replace,
)
from proto import subjects as sub
from services.producer.service import Producer
from services.runtime.memory import MemoryBus
from tests.support.messages import JOB


async def test_the_producer_publishes_the_manifest_then_the_observations_then_accepted() -> None:
    bus = MemoryBus()
    published = await bus.deliver(Producer(), JOB)
    kinds = [type(item.message) for item in published]
    assert kinds == [JobManifest, ObservationMessage, ObservationMessage, ObservationMessage, JobEvent]
    manifest = published[0].message
    assert isinstance(manifest, JobManifest) and manifest.expected == 3 and manifest.job == JOB
    assert manifest.experiment_id.startswith("analysis_m-llama2-7b_y-none_d-imdb_p-test_t-classify")
    observations = bus.of(ObservationMessage)
    assert [item.msg_id for item in published[1:4]] == [sub.observation_id("j1", o.work.idx) for o in observations]
    assert {o.work.task for o in observations} == {"classify"} and len({o.work.idx for o in observations}) == 3
    (accepted,) = bus.of(JobEvent)
    assert accepted.event == "accepted" and accepted.detail.startswith("3 observations of ")
    assert await bus.deliver(Producer(), JOB) == []  # redelivered: every id is a repeat


async def test_the_producer_rejects_a_bad_job_with_an_event_and_a_dead_letter(tmp_path: Path) -> None:
    bus = MemoryBus()
    job = replace(JOB, job_id="j2", dataset="RTE", mirror=str(tmp_path))
    (event,) = [item.message for item in await bus.deliver(Producer(), job)]
    assert isinstance(event, JobEvent) and event.event == "rejected" and "no mirror of RTE" in event.detail
    (letter,) = bus.dead_letters
    assert letter.category == "bad-job" and letter.reason.startswith("job j2: no mirror of RTE")


async def test_a_job_whose_split_is_not_a_split_is_rejected(tmp_path: Path) -> None:
    bus = MemoryBus()
    data = tmp_path / "reviews.jsonl"
    data.write_text('{"text": "Good.", "label": "positive"}\n')
    job = Job("j3", "llama2-7b", str(data), "classify", split="../../../x", category="sentiment")
    (event,) = [item.message for item in await bus.deliver(Producer(), job)]
    assert isinstance(event, JobEvent) and event.event == "rejected"
    (letter,) = bus.dead_letters
    assert letter.category == "bad-job" and "unknown split '../../../x'; use one of train, valid, test" in letter.reason
