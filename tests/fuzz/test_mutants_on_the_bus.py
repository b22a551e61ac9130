"""The mutants published on every consumed subject of a running pipeline (nats-server, the
four services as processes): nothing takes the "might work later" path, nothing is left
pending, and a normal job completes afterwards."""

from __future__ import annotations

import asyncio
import random
import time

import nats
import pytest

from proto import Job
from proto import subjects as sub
from services.datasets import MIRROR_ENV
from services.local import LocalPipeline
from tests.conftest import DATASET_MIRROR
from tests.fuzz.mutants import mutate
from tests.fuzz.test_mutants import real_messages
from tests.support.pipeline import metric_total, submit_jobs, wait_complete

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

PER_SUBJECT = 250
SUBJECTS = {
    "producer": [sub.JOBS],
    "scorer": [sub.OBSERVATIONS, sub.REPLIES],
    "gateway": [sub.generation_subject("llama2-7b", 0)],
    "aggregator": [sub.MANIFESTS, sub.RESULTS],
}
CONSUMERS = [sub.consumer_for(name) for name in ("producer", "scorer", "aggregator")] + [sub.consumer_for("gateway", 0)]


async def _publish_mutants(url: str, rng: random.Random) -> int:
    seeds = real_messages()
    client = await nats.connect(url)
    js = client.jetstream()
    published = 0
    for name, subjects in SUBJECTS.items():
        for subject in subjects:
            for _ in range(PER_SUBJECT):
                await js.publish(subject, mutate(rng.choice(seeds[name]), rng))
                published += 1
    await client.close()
    return published


async def _pending(url: str) -> dict[str, tuple[int, int]]:
    client = await nats.connect(url)
    js = client.jetstream()
    found = {}
    for spec in CONSUMERS:
        info = await js.consumer_info(spec.stream, spec.durable)
        found[spec.durable] = (info.num_pending or 0, info.num_ack_pending or 0)
    await client.close()
    return found


def test_mutants_on_every_subject_leave_the_pipeline_working(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv(MIRROR_ENV, str(DATASET_MIRROR))  # a mutant without its mirror: no Hub to wait for here
    with LocalPipeline(tmp_path / "run") as pipeline:
        published = asyncio.run(_publish_mutants(pipeline.nats_url, random.Random(7)))
        (job,) = submit_jobs(pipeline, [Job("", "llama2-7b", "RTE", "classify", mirror=str(DATASET_MIRROR))])
        status = wait_complete(pipeline, [job.job_id], timeout=180)[job.job_id]
        assert status["received"] == status["expected"] > 0
        deadline, pending = time.monotonic() + 120, {}
        while time.monotonic() < deadline:
            pending = asyncio.run(_pending(pipeline.nats_url))
            if not any(waiting or unacked for waiting, unacked in pending.values()):
                break
            time.sleep(0.5)
        assert not any(waiting or unacked for waiting, unacked in pending.values()), pending
        released = {name: metric_total(pipeline, name, "introspect_messages_released_total") for name in SUBJECTS}
        dead = {name: metric_total(pipeline, name, "introspect_dead_letters_total") for name in SUBJECTS}
        with capsys.disabled():
            print(f"\nfuzz on the bus: {published} mutants published; dead-lettered at once {dead}; handed "
                  f"back for redelivery {released}; then a {status['expected']}-observation job completed")  # fmt: skip
        assert all(count == 0 for count in released.values()), released
        assert sum(dead.values()) > published / 2
