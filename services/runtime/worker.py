"""`Worker`: the loop every service runs.

Ask the service's durable pull consumer for as many messages as there is room for, decode
each delivered message into the types its subject carries, run the service's handler and
publish what it returns (`handlers.handle_and_publish`), and acknowledge only once that is
stored. What can never be processed goes to the dead-letter stream with the reason; a
passing failure (a backend down, NATS busy) hands the message back for redelivery with a
growing delay. Slow work is kept alive with in-progress acknowledgements. While the
service reports a problem that blocks its work (`health`), it asks for nothing new.

The pull loop speaks JetStream's protocol over plain NATS requests instead of nats-py's
`fetch`, which costs twice the CPU per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import nats.errors
from nats.aio.msg import Msg

from proto import InvalidMessage, Message, decode
from proto.subjects import ConsumerSpec

from . import metrics
from .bus import Bus, deliveries, header
from .handlers import HandBack, Handler, Reject, handle_and_publish
from .health import Health

log = logging.getLogger("introspect")

PULL_EXPIRES = 5.0  # seconds a pull request waits on the server for messages to arrive


class Worker:
    """Consume one durable pull consumer with bounded concurrency until `stop` is set.

    JetStream delivers a pull consumer's messages in answer to pull requests ("send me up
    to n"), to an inbox this worker subscribes to. The worker keeps the messages it asked
    for and has in hand within `concurrency`, asking again once there is room for an
    eighth of it: messages arrive as soon as they are stored, and each costs a callback,
    not a round trip (nats-py's `fetch` waits on each message with its own timeout).
    JetStream ends each pull request when it is served or expires; an expired one says
    how many of its messages it did not deliver (a 408 with Nats-Pending-Messages), and a
    reconnection ends them all.
    """

    def __init__(
        self,
        bus: Bus,
        consumer: ConsumerSpec,
        accepts: tuple[type[Message], ...],
        handle: Handler,
        concurrency: int = 256,
        batch: int = 256,
        grace: float = 20.0,
        pull_expires: float = PULL_EXPIRES,
        health: Health | None = None,
    ) -> None:
        self.bus = bus
        self.consumer = consumer
        self.accepts = accepts
        self.handle = handle
        self.concurrency = concurrency
        self.batch = batch
        self.grace = grace  # seconds in-flight work may take to finish on shutdown
        self.pull_expires = pull_expires
        self.health = health
        self.in_flight: dict[asyncio.Task[None], Msg] = {}
        self._started: dict[asyncio.Task[None], float] = {}
        self.requested = 0  # messages asked for in live pull requests, not yet delivered
        self._heard_at = 0.0  # when JetStream last delivered or answered (monotonic)
        self._recheck = False  # JetStream answered a pull with an error: check the consumer first
        self._wake = asyncio.Event()  # set when there may be room to ask for more
        # Ask only once there is room for a good handful: with slow handlers (a gateway
        # waiting 200 ms on each generation) slots free one at a time, and a pull request
        # (and a wake-up of the loop) per freed slot cost more CPU than the messages.
        self.low_water = max(1, min(self.batch, self.concurrency // 8))
        metrics.IN_FLIGHT.labels(bus.service).set_function(lambda: len(self.in_flight))  # read when scraped

    async def run(self, stop: asyncio.Event) -> None:
        client, spec = self.bus.client, self.consumer
        await self.bus.ensure_consumer(spec)
        inbox = client.new_inbox()
        subscription = await client.subscribe(inbox, cb=self._deliver, pending_msgs_limit=-1, pending_bytes_limit=-1)
        forget = self.bus.on_reconnect(self._forget_pull_requests)
        next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{spec.stream}.{spec.durable}"
        keepalive = asyncio.create_task(self._keep_alive(stop))
        stopping = asyncio.create_task(_set_when(stop, self._wake))
        try:
            while not stop.is_set():
                if self.health is not None and not self.health.can_work:
                    # Back-pressure: what waits in the stream keeps its deliveries for later.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.pull_expires):  # then look at `stop` again
                            await self.health.until_can_work()
                    continue
                now = time.monotonic()
                if self.requested and now - self._heard_at > self.pull_expires + 2.0:
                    self.requested = 0  # no answer to a pull request in its lifetime: it is gone
                room = self.concurrency - len(self.in_flight) - self.requested
                if room < self.low_water and (self.in_flight or self.requested):
                    self._wake.clear()
                    await _wait(self._wake, self.pull_expires)
                    continue
                if self._recheck and not await self._check_consumer(stop):
                    continue
                count = min(room, self.batch)
                request = json.dumps({"batch": count, "expires": int(self.pull_expires * 1e9)}).encode()
                try:
                    await client.publish(next_subject, request, reply=inbox)
                except nats.errors.ConnectionClosedError:
                    break
                except nats.errors.Error as error:  # reconnecting with a full buffer
                    log.warning("%s: could not ask for messages (%s), retrying", self.bus.service, error)
                    await _wait(stop, 0.5)
                    continue
                if not self.requested:
                    self._heard_at = now  # the new request's lifetime starts now
                self.requested += count
        finally:
            forget()
            keepalive.cancel()
            stopping.cancel()
            # Drained, the inbox has no interest and JetStream drops the live pull requests;
            # what it sent before it heard so is still taken in (and finished or handed back
            # below). Unsubscribing outright dropped those messages, which then waited out the
            # ack wait (a minute, stalling a job) before JetStream sent them again.
            try:
                await subscription.drain()
            except (nats.errors.Error, TimeoutError):  # the connection is closing anyway
                with contextlib.suppress(nats.errors.Error):
                    await subscription.unsubscribe()
            await self._release_in_flight()

    async def _deliver(self, msg: Msg) -> None:
        """A message JetStream delivered, or its answer ending a pull request."""
        self._heard_at = time.monotonic()
        if not msg.reply:  # a status: no ack subject
            self._end_pull_request(msg.headers or {})
            return
        self.requested = max(0, self.requested - 1)
        task = asyncio.create_task(self._process(msg))
        self.in_flight[task] = msg
        self._started[task] = self._heard_at
        task.add_done_callback(self._done)

    def _end_pull_request(self, headers: dict[str, Any]) -> None:
        status = header(headers, "Status") or ""
        if status == "100":  # an idle heartbeat: the request lives on
            return
        pending = header(headers, "Nats-Pending-Messages")
        if pending is not None and pending.isdigit():
            self.requested = max(0, self.requested - int(pending))
        else:
            self.requested = 0  # an answer that does not say how many it ended: ask afresh
        if status != "408":  # 408: expired, the normal end of a request nothing was left for
            description = header(headers, "Description") or ""
            log.warning("%s: JetStream answered a pull request with %s %s", self.bus.service, status, description)
            self._recheck = True
        self._wake.set()

    def _forget_pull_requests(self) -> None:
        """Reconnected: the server dropped our pull requests with the old connection."""
        self.requested = 0
        self._wake.set()

    async def _check_consumer(self, stop: asyncio.Event) -> bool:
        """After an error answer (a deleted consumer, JetStream restarting): recreate the
        consumer if it is gone. False: not yet, try again after a pause."""
        await _wait(stop, 0.5)
        try:
            await self.bus.ensure_consumer(self.consumer)
        except nats.errors.Error as error:
            log.warning("%s: consumer check failed (%s), retrying", self.bus.service, type(error).__name__)
            return False
        self._recheck = False
        return True

    def _done(self, task: asyncio.Task[None]) -> None:
        self.in_flight.pop(task, None)
        self._started.pop(task, None)
        if self.concurrency - len(self.in_flight) - self.requested >= self.low_water or not self.in_flight:
            self._wake.set()

    async def _process(self, msg: Msg) -> None:
        try:
            await self._settle(msg)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the ack, nak or dead letter itself failed: JetStream redelivers it
            log.warning("%s: could not settle a message (%s: %s)", self.bus.service, type(error).__name__, error)

    async def _settle(self, msg: Msg) -> None:
        service = self.bus.service
        started = time.perf_counter()
        kind = "unknown"
        try:
            message = decode(msg.data, *self.accepts)
            kind = message.KIND
            metrics.child(metrics.MESSAGES_CONSUMED, service, kind).inc()
            await handle_and_publish(self.handle, message, self.bus)
        except InvalidMessage as invalid:
            metrics.child(metrics.MESSAGES_CONSUMED, service, kind).inc()
            await self._dead_letter(msg, f"invalid message: {invalid}", "invalid-message")
        except Reject as rejected:
            await self._dead_letter(msg, str(rejected), rejected.category)
        except asyncio.CancelledError:
            raise
        except HandBack:  # stopping: what it published stays; the next delivery goes on from there
            await msg.nak()
        except Exception as error:  # a passing failure: try again later, or give up with the reason
            delivered = deliveries(msg)
            if delivered >= self.consumer.max_deliver:
                reason = f"failed {delivered} times, last: {type(error).__name__}: {error}"
                await self._dead_letter(msg, reason, "gave-up")
            else:
                log.warning("%s: %s failed (%s: %s), redelivering", service, kind, type(error).__name__, error)
                metrics.child(metrics.REDELIVERIES, service).inc()
                await msg.nak(delay=min(0.1 * 2**delivered, 30.0))
        else:
            await msg.ack()
            metrics.child(metrics.PROCESSING_SECONDS, service, kind).observe(time.perf_counter() - started)

    async def _dead_letter(self, msg: Msg, reason: str, category: str) -> None:
        await self.bus.dead_letter(msg, reason, category)
        await msg.ack()  # the dead-letter stream holds it now

    async def _keep_alive(self, stop: asyncio.Event) -> None:
        """Tell JetStream that slow work (a long generation) is still going, so it is not redelivered."""
        period = self.consumer.ack_wait / 3
        while not stop.is_set():
            await asyncio.sleep(period)
            now = time.monotonic()
            for task, msg in list(self.in_flight.items()):
                if now - self._started.get(task, now) >= period:
                    try:
                        await msg.in_progress()
                    except nats.errors.Error:  # reconnecting; the next round tries again
                        break

    async def _release_in_flight(self) -> None:
        """Shutdown: let in-flight work finish for `grace` seconds, hand back what remains."""
        if not self.in_flight:
            return
        _, unfinished = await asyncio.wait(list(self.in_flight), timeout=self.grace)
        # Every message first, then cancel: cancelling one task can end another at once (a
        # request waiting on the same generation), which then leaves `in_flight` before its
        # turn here, and its message would wait out the ack wait instead of coming back now.
        held = [(task, self.in_flight.get(task)) for task in unfinished]
        for task, _ in held:
            task.cancel()
        for _, msg in held:
            if msg is not None and self.bus.client.is_connected:
                await msg.nak()


async def _set_when(done: asyncio.Event, then: asyncio.Event) -> None:
    await done.wait()
    then.set()


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Until `event` is set, for at most `seconds`."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
