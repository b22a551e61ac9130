"""A producer stopped mid-job, against a real nats-server: the job is delivered again, the
next producer goes on from the progress the first one stored, and the observation stream
holds each observation exactly once.

Killed with SIGKILL (a process of its own) and stopped cooperatively (the worker in this
process, the producer told it is stopping): both must leave the stream whole. The killed and
the SIGTERMed producer go to the fault table (`tests/support/faults.py`), their "records"
the observations on the stream.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from proto import Job, JobEvent, JobManifest, JobProgress, ObservationMessage, decode
from proto import subjects as sub
from services.client import dead_letters
from services.local import free_port
from services.producer.service import CHUNK, Producer
from services.runtime.bus import Bus
from services.runtime.handlers import Outgoing
from services.runtime.settings import Settings
from services.runtime.worker import Worker
from tests.support.faults import record_fault
from tests.support.messages import ANYWHERE
from tests.support.nats import NatsServer
from tests.support.pipeline import get_bytes, scrape
from tests.support.synthetic import write_sentiment_lines

ROWS = 20_000  # 40 chunks: publication outlasts the wait for its first chunks


def _job(path: Path, job_id: str) -> Job:
    return Job(job_id, "llama2-7b", str(path), "classify", category="sentiment", seed=3)


async def _until(condition: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    """Check `condition` every few milliseconds until it holds; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while not await condition():
        assert time.monotonic() < deadline, f"{what}: not within {within:.0f} s"
        await asyncio.sleep(0.01)


async def _stored(bus: Bus, stream: str) -> int:
    return (await bus.js.stream_info(stream)).state.messages


async def _at_least(bus: Bus, observations: int) -> bool:
    return await _stored(bus, "INTROSPECT_SCORE") >= observations


async def _accepted(bus: Bus, job_id: str) -> bool:
    try:
        event = decode((await bus.js.get_last_msg("INTROSPECT_EVENTS", sub.EVENTS)).data or b"", JobEvent)
    except Exception:  # no event yet
        return False
    return event.job_id == job_id and event.event == "accepted"


async def _observation_ids(bus: Bus) -> list[int]:
    """The idx of every observation the stream holds, taking them (as a scorer would)."""
    stored = await _stored(bus, "INTROSPECT_SCORE")
    reader = await bus.js.pull_subscribe(sub.OBSERVATIONS, durable="check", stream="INTROSPECT_SCORE")
    seen: list[int] = []
    while len(seen) < stored:
        for msg in await reader.fetch(1000, timeout=10):
            seen.append(decode(msg.data, ObservationMessage).work.observation["idx"])
            await msg.ack()
    await reader.unsubscribe()
    return seen


async def _check_whole(bus: Bus, job_id: str, measured: Callable[[list[int]], None] = lambda ids: None) -> None:
    """The job accepted and each observation on the stream once; `measured` is shown their idx first."""
    assert await _accepted(bus, job_id)
    ids = await _observation_ids(bus)
    measured(ids)
    assert len(ids) == ROWS and sorted(ids) == list(range(ROWS))  # each exactly once
    assert await _stored(bus, "INTROSPECT_RESULTS") == 1  # one manifest: its repeat was dropped
    manifest = decode((await bus.js.get_last_msg("INTROSPECT_RESULTS", sub.MANIFESTS)).data or b"", JobManifest)
    assert manifest.expected == ROWS


def _start_producer(nats: NatsServer, port: int, data: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "INTROSPECT_NATS_URL": nats.url, "INTROSPECT_METRICS_PORT": str(port),
           "INTROSPECT_DATA_DIR": str(data), "INTROSPECT_ACK_WAIT": "1",
           "INTROSPECT_DATA_ROOTS": str(data)}  # the job's file is in its folder  # fmt: skip
    log = (data / "producer.log").open("ab")
    return subprocess.Popen([sys.executable, "-m", "services.cli", "serve", "producer"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)  # fmt: skip


async def _restarted_and_done(
    bus: Bus, nats: NatsServer, port: int, data: Path, job_id: str
) -> tuple[subprocess.Popen[bytes], float, float]:
    """Start the next producer; it, the seconds from its start to the first observation it
    stores, and to the job accepted (every observation stored)."""
    held = await _stored(bus, "INTROSPECT_SCORE")
    producer = _start_producer(nats, port, data)
    started = time.monotonic()
    await _until(lambda: _at_least(bus, held + 1), 120, "an observation from the next producer")
    recovery = time.monotonic() - started
    await _until(lambda: _accepted(bus, job_id), 120, "the job accepted")
    return producer, recovery, time.monotonic() - started


async def _producer_under_way(bus: Bus, nats: NatsServer, data: Path, job: Job) -> tuple[subprocess.Popen[bytes], int]:
    """`job` submitted to a producer process of its own, once its first chunks are stored:
    the moment to interrupt it. The process and its metrics port."""
    await bus.publish([Outgoing(sub.JOBS, job, job.job_id)])
    port = free_port()
    producer = _start_producer(nats, port, data)
    await _until(lambda: _at_least(bus, 2 * CHUNK), 120, "the first chunks stored")
    return producer, port


async def _healthy(port: int) -> bool:
    try:
        await asyncio.to_thread(get_bytes, f"http://127.0.0.1:{port}/healthz")
        return True
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.chaos
async def test_a_producer_killed_mid_job_is_gone_on_from_and_publishes_each_observation_once(
    tmp_path: Path, nats_server: NatsServer, request: pytest.FixtureRequest
) -> None:
    data = write_sentiment_lines(tmp_path / "reviews.jsonl", ROWS)
    job = _job(data, "killed")
    bus = await Bus.open(Settings(nats_url=nats_server.url), "test")
    producer: subprocess.Popen[bytes] | None = None
    try:
        producer, port = await _producer_under_way(bus, nats_server, tmp_path, job)
        producer.send_signal(signal.SIGKILL)
        producer.wait()
        assert await _stored(bus, "INTROSPECT_SCORE") < ROWS, "the job finished before it could be killed"
        progress = await bus.last(sub.progress_subject(job.job_id), JobProgress)
        assert progress is not None and CHUNK <= progress.published < ROWS and progress.expected == ROWS

        # The job comes back after the ack wait.
        producer, recovery, done = await _restarted_and_done(bus, nats_server, port, tmp_path, job.job_id)
        published = scrape(f"http://127.0.0.1:{port}/metrics")["introspect_observations_published_total"]
        dead = len(await dead_letters(Settings(nats_url=nats_server.url)))
        fault = f"producer SIGKILLed mid-publication ({progress.published:,} of {ROWS:,} stored), restarted"

        def measured(ids: list[int]) -> None:
            scaled = "ack wait 1 s (15 s); bare nats-server, observations counted"
            record_fault(request, fault, expected=range(ROWS), seen=ids, recovery_s=recovery, done_s=done,
                         dead_letters=dead, scaled=scaled)  # fmt: skip

        await _check_whole(bus, job.job_id, measured)
        assert published == ROWS - progress.published  # the rest, from where the stored progress says
        assert dead == 0
    finally:
        if producer is not None and producer.poll() is None:
            producer.terminate()
            producer.wait()
        await bus.close()


@pytest.mark.slow
@pytest.mark.chaos
async def test_sigterm_ends_a_producer_s_publication_at_once_and_the_job_goes_on_without_delay(
    tmp_path: Path, nats_server: NatsServer, request: pytest.FixtureRequest
) -> None:
    """SIGTERM mid-job: the producer ends at the next chunk, well inside the 20 s grace it
    would otherwise be given, and hands the job straight back (no redelivery delay, no
    failure counted); the next producer goes on from the stored progress."""
    data = write_sentiment_lines(tmp_path / "reviews.jsonl", ROWS)
    job = _job(data, "terminated")
    bus = await Bus.open(Settings(nats_url=nats_server.url), "test")
    producer: subprocess.Popen[bytes] | None = None
    try:
        producer, port = await _producer_under_way(bus, nats_server, tmp_path, job)
        producer.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(producer.wait, 15) == 0  # it stopped itself; not the grace's end
        progress = await bus.last(sub.progress_subject(job.job_id), JobProgress)
        assert progress is not None and 2 * CHUNK <= progress.published < ROWS
        assert await _stored(bus, "INTROSPECT_SCORE") == progress.published  # stopped where it says

        producer, recovery, done = await _restarted_and_done(bus, nats_server, port, tmp_path, job.job_id)
        metrics = scrape(f"http://127.0.0.1:{port}/metrics")
        dead = len(await dead_letters(Settings(nats_url=nats_server.url)))
        fault = f"producer SIGTERMed mid-publication (stopped at {progress.published:,} of {ROWS:,}), restarted"

        def measured(ids: list[int]) -> None:
            record_fault(request, fault, expected=range(ROWS), seen=ids, recovery_s=recovery, done_s=done,
                         dead_letters=dead, scaled="bare nats-server, observations counted")  # fmt: skip

        await _check_whole(bus, job.job_id, measured)
        assert metrics["introspect_observations_published_total"] == ROWS - progress.published
        assert dead == 0
        log = (tmp_path / "producer.log").read_text()
        assert "redelivering" not in log  # a hand-back is not a failure
    finally:
        if producer is not None and producer.poll() is None:
            producer.terminate()
            producer.wait()
        await bus.close()


async def test_a_producer_told_to_stop_ends_at_a_chunk_boundary_and_the_next_goes_on(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    """What SIGTERM does once the service shell tells the producer it is stopping: the
    publication ends at the next chunk, its progress stored, and the job is handed back."""
    data = write_sentiment_lines(tmp_path / "reviews.jsonl", ROWS)
    job = _job(data, "stopped")
    bus = await Bus.open(Settings(nats_url=nats_server.url), "test")
    try:
        await bus.publish([Outgoing(sub.JOBS, job, job.job_id)])
        first, stop = Producer(data_roots=ANYWHERE), asyncio.Event()
        await first.start(bus)
        # A grace long enough to publish it all: only a producer that stops by itself ends sooner.
        worker = Worker(bus, first.consumer(), first.accepts, first.handle, grace=600)
        running = asyncio.create_task(worker.run(stop))
        await _until(lambda: _at_least(bus, 2 * CHUNK), 120, "the first chunks stored")
        first.stopping()
        stop.set()
        await running
        progress = await bus.last(sub.progress_subject(job.job_id), JobProgress)
        assert progress is not None and 2 * CHUNK <= progress.published < ROWS
        assert await _stored(bus, "INTROSPECT_SCORE") == progress.published  # stopped where it says
        assert not await _accepted(bus, job.job_id)

        before = _published_total()
        second = Producer(data_roots=ANYWHERE)
        await second.start(bus)
        stop = asyncio.Event()
        running = asyncio.create_task(Worker(bus, second.consumer(), second.accepts, second.handle).run(stop))
        await _until(lambda: _accepted(bus, job.job_id), 120, "the job accepted")
        stop.set()
        await running
        assert _published_total() - before == ROWS - progress.published
        await _check_whole(bus, job.job_id)
    finally:
        await bus.close()


def _published_total() -> float:
    return REGISTRY.get_sample_value("introspect_observations_published_total") or 0.0
