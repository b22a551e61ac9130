"""The worker loop and the publish path against a real nats-server.

The worker asks its pull consumer for messages itself (pull requests with credits); these
tests hold it to what that promises: never more in hand than its concurrency, every
message handled once and acknowledged, expired pull requests renewed, a deleted consumer
recreated, and a NATS restart survived.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import nats.errors
import pytest

from proto import JobEvent
from proto.subjects import ConsumerSpec, StreamSpec
from services.runtime.bus import Bus, PublishRefused
from services.runtime.handlers import Outgoing
from services.runtime.settings import Settings
from services.runtime.worker import Worker
from tests.support.nats import NatsServer

STREAM = StreamSpec("TEST_WORK", ("test.work",), work_queue=True)
CONSUMER = ConsumerSpec("test-worker", STREAM.name, "test.work")


async def open_bus(nats_server: NatsServer) -> Bus:
    bus = await Bus.open(Settings(nats_url=nats_server.url), "test")
    await bus.ensure_streams([STREAM])
    return bus


def event(n: int) -> Outgoing:
    return Outgoing("test.work", JobEvent(f"job-{n}", "accepted", "", float(n)), f"test:{n}")


async def eventually(condition: Callable[[], bool], within: float) -> float:
    """Seconds until `condition` held; fails after `within`."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < within, "condition not met in time"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def jetstream_ready(bus: Bus) -> None:
    """After a restart, JetStream answers once it has recovered its streams."""
    for _ in range(100):
        try:
            await bus.js.stream_info(STREAM.name)
            return
        except (nats.errors.Error, TimeoutError):  # not ready yet: no responders, a timeout
            await asyncio.sleep(0.1)
    raise AssertionError("JetStream did not come back")


class Recorder:
    """A handler that remembers what it saw and how much was in the worker's hands."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.seen: list[str] = []
        self.running = 0
        self.most_running = 0
        self.most_in_hand = 0
        self.worker: Worker | None = None

    async def __call__(self, message: JobEvent) -> list[Outgoing]:
        assert self.worker is not None
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        self.most_in_hand = max(self.most_in_hand, len(self.worker.in_flight) + self.worker.requested)
        await asyncio.sleep(self.seconds)
        self.seen.append(message.job_id)
        self.running -= 1
        return []


@contextlib.asynccontextmanager
async def running_worker(
    nats_server: NatsServer, recorder: Recorder, **options: float
) -> AsyncIterator[tuple[Bus, Worker]]:
    """A bus and a worker running `recorder` until the block ends."""
    bus = await open_bus(nats_server)
    worker = Worker(bus, CONSUMER, (JobEvent,), recorder, **options)  # type: ignore[arg-type]
    recorder.worker = worker
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        yield bus, worker
    finally:
        stop.set()
        await running
        await bus.close()


async def test_every_message_is_handled_once_within_the_concurrency(nats_server: NatsServer) -> None:
    recorder = Recorder(seconds=0.005)
    async with running_worker(nats_server, recorder, concurrency=16, batch=16) as (bus, _):
        await bus.publish([event(n) for n in range(300)])
        await eventually(lambda: len(recorder.seen) == 300, within=30)
        assert sorted(recorder.seen) == sorted(f"job-{n}" for n in range(300))
        assert recorder.most_running <= 16
        assert recorder.most_in_hand <= 16  # asked for and in hand together
        for _ in range(100):  # JetStream applies acks asynchronously
            info = await bus.js.consumer_info(CONSUMER.stream, CONSUMER.durable)
            if info.num_ack_pending == 0:
                break
            await asyncio.sleep(0.05)
        assert info.num_ack_pending == 0 and info.num_pending == 0  # all acknowledged
        assert info.num_redelivered == 0


async def test_expired_pull_requests_are_renewed(nats_server: NatsServer) -> None:
    recorder = Recorder()
    async with running_worker(nats_server, recorder, concurrency=8, batch=8, pull_expires=0.3) as (bus, worker):
        await asyncio.sleep(1.2)  # four pull requests expire, each answered with a 408
        assert worker.requested == 8  # their credit came back and was asked for again
        await bus.publish([event(1)])
        # A live pull request takes it at once; without one it would wait for the worker
        # to give up on its lost request (2 s past its expiry).
        assert await eventually(lambda: recorder.seen == ["job-1"], within=1.0) < 1.0


async def test_a_deleted_consumer_is_recreated(nats_server: NatsServer) -> None:
    recorder = Recorder()
    async with running_worker(nats_server, recorder, concurrency=8, batch=8, pull_expires=1.0) as (bus, _):
        await asyncio.sleep(0.2)
        await bus.js.delete_consumer(CONSUMER.stream, CONSUMER.durable)  # live pull requests get a 409
        await asyncio.sleep(1.0)
        await bus.publish([event(2)])
        await eventually(lambda: recorder.seen == ["job-2"], within=10)


@pytest.mark.slow
@pytest.mark.chaos  # kills the server
async def test_the_worker_goes_on_after_nats_restarts(nats_server: NatsServer) -> None:
    recorder = Recorder()
    async with running_worker(nats_server, recorder, concurrency=8, batch=8) as (bus, _):
        await bus.publish([event(1)])
        await eventually(lambda: recorder.seen == ["job-1"], within=5)
        nats_server.kill()  # the server forgets the worker's pull requests
        nats_server.start()
        await eventually(lambda: bus.client.is_connected, within=10)
        await jetstream_ready(bus)
        await bus.publish([event(2)])
        # Within the pull requests' 5 s lifetime: the reconnection itself renewed them.
        await eventually(lambda: recorder.seen == ["job-1", "job-2"], within=4.5)


async def test_a_publication_no_stream_takes_is_refused_at_once(nats_server: NatsServer) -> None:
    bus = await open_bus(nats_server)
    try:
        started = time.monotonic()
        with pytest.raises(PublishRefused):
            await bus.publish([Outgoing("nobody.listens", JobEvent("job", "accepted", "", 1.0), "x:1")], timeout=10)
        assert time.monotonic() - started < 2.0  # NATS says no responders; no waiting for the timeout
        assert not bus._unacked
    finally:
        await bus.close()


async def test_a_service_with_a_problem_that_blocks_its_work_takes_no_messages(nats_server: NatsServer) -> None:
    """Back-pressure: while the service reports such a problem (no model server, a store
    that cannot write), its messages wait in the stream with their deliveries unspent."""
    from services.runtime.health import Health

    class CountingHealth(Health):
        pauses = 0

        async def until_can_work(self) -> None:
            CountingHealth.pauses += 1
            await super().until_can_work()

    health = CountingHealth("test")
    health.report("cache", "cannot store", blocks_work=False)  # reported, but stops nothing
    health.report("store", "cannot write (no space left)")
    recorder = Recorder()
    bus = await open_bus(nats_server)
    worker = Worker(bus, CONSUMER, (JobEvent,), recorder, concurrency=8, batch=8, pull_expires=0.2, health=health)  # type: ignore[arg-type]
    recorder.worker = worker
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        await bus.publish([event(n) for n in range(20)])
        await eventually(lambda: CountingHealth.pauses >= 3, within=30)  # three rounds of waiting
        info = await bus.js.consumer_info(CONSUMER.stream, CONSUMER.durable)
        assert recorder.seen == [] and info.num_pending == 20 and info.num_ack_pending == 0
        assert info.num_waiting == 0  # not one pull request asked
        health.clear("store")
        await eventually(lambda: len(recorder.seen) == 20, within=30)
        info = await bus.js.consumer_info(CONSUMER.stream, CONSUMER.durable)
        assert info.num_redelivered == 0
    finally:
        stop.set()
        await running
        await bus.close()
