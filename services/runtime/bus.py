"""The one NATS connection helper: connect, declare streams, publish, dead-letter, consume.

`Worker` is the loop every service runs: fetch a batch from its durable pull consumer,
decode each message into the types its subject carries, hand it to the service's
handler, and acknowledge only when the handler has returned, that is when its effect
(a publication JetStream acknowledged, a RocksDB write) is durable. What can never be
processed goes to the dead-letter stream with the reason; a passing failure (a backend
down, NATS busy) hands the message back for redelivery with a growing delay.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from proto import MAX_MESSAGE_BYTES, DeadLetter, InvalidMessage, Message, decode, encode
from proto.subjects import STREAMS, ConsumerSpec, StreamSpec, dead_letter_subject

from . import metrics
from .settings import Settings

log = logging.getLogger("introspect")


class Reject(Exception):
    """The message can never be processed as it is: dead-letter it with this reason."""

    def __init__(self, reason: str, category: str = "rejected") -> None:
        super().__init__(reason)
        self.category = category  # a bounded metric label: what kind of rejection


@dataclass(frozen=True, slots=True)
class Outgoing:
    subject: str
    message: Message
    msg_id: str


async def connect(settings: Settings, name: str) -> Client:
    options: dict[str, Any] = {
        "servers": [settings.nats_url],
        "name": name,
        "max_reconnect_attempts": 10,  # the first connection: give up after about 5 s
        "reconnect_time_wait": 0.5,
        "error_cb": _log_error,
        "disconnected_cb": _log_disconnected,
        "reconnected_cb": _log_reconnected,
    }
    if settings.nats_creds:
        options["user_credentials"] = settings.nats_creds
    if settings.nats_user:
        options["user"], options["password"] = settings.nats_user, settings.nats_password
    if settings.nats_token:
        options["token"] = settings.nats_token
    if settings.nats_tls_ca or settings.nats_tls_cert:
        context = ssl.create_default_context(cafile=settings.nats_tls_ca)
        if settings.nats_tls_cert:
            context.load_cert_chain(settings.nats_tls_cert, settings.nats_tls_key)
        options["tls"] = context
    client = await nats.connect(**options)
    # Once connected, never give up reconnecting: a NATS restart must not end a service.
    client.options["max_reconnect_attempts"] = -1
    return client


async def _log_error(error: Exception) -> None:
    log.info("nats: %s: %s", type(error).__name__, error)


async def _log_disconnected() -> None:
    log.info("nats: disconnected")


async def _log_reconnected() -> None:
    log.info("nats: reconnected")


class Bus:
    """A service's view of JetStream."""

    def __init__(self, client: Client, service: str) -> None:
        self.client = client
        self.js = client.jetstream()
        self.service = service
        # Publications waiting for JetStream's ack, with their deadlines. One watchdog
        # enforces the deadlines: a timer per publication cost the gateway 7% of its CPU.
        self._unacked: dict[asyncio.Future[Any], float] = {}
        self._watchdog: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, settings: Settings, service: str) -> Bus:
        bus = cls(await connect(settings, f"introspect-{service}"), service)
        await bus.ensure_streams()
        return bus

    async def ensure_streams(self, streams: Iterable[StreamSpec] = STREAMS) -> None:
        """Create each stream, or bring its config up to date: safe to run from every service."""
        for spec in streams:
            config = api.StreamConfig(
                name=spec.name,
                subjects=list(spec.subjects),
                retention=api.RetentionPolicy.WORK_QUEUE if spec.work_queue else api.RetentionPolicy.LIMITS,
                storage=api.StorageType.FILE,
                max_age=spec.max_age or None,
                duplicate_window=spec.duplicate_window,
            )
            try:
                await self.js.add_stream(config)
            except nats.js.errors.BadRequestError:  # exists with another config
                await self.js.update_stream(config)

    async def pull_subscription(self, spec: ConsumerSpec) -> JetStreamContext.PullSubscription:
        """Bind to the durable consumer `spec`, creating it if needed. JetStream refuses a
        consumer whose subjects overlap another's on a work-queue stream."""
        config = api.ConsumerConfig(
            durable_name=spec.durable,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=spec.ack_wait,
            max_ack_pending=spec.max_ack_pending,
            max_deliver=-1,  # the worker dead-letters after spec.max_deliver itself, with the reason
            filter_subject=spec.filter_subject,
        )
        return await self.js.pull_subscribe(
            spec.filter_subject, durable=spec.durable, stream=spec.stream, config=config
        )

    async def publish(self, outgoing: Iterable[Outgoing], timeout: float = 10.0) -> None:
        """Publish all, then wait until JetStream has stored every one.

        A publication not acknowledged in `timeout` seconds (the server restarting, say;
        checked four times a second) raises, so the message that caused it is handed back and tried again: JetStream's
        de-duplication drops whichever copies did get stored.
        """
        if self._watchdog is None:
            self._watchdog = asyncio.create_task(self._expire_unacked(every=0.25))
        deadline = asyncio.get_running_loop().time() + timeout
        pending = []
        for item in outgoing:
            headers = {"Nats-Msg-Id": item.msg_id}
            future = await self.js.publish_async(item.subject, encode(item.message), headers=headers)
            self._unacked[future] = deadline
            pending.append(future)
            metrics.child(metrics.MESSAGES_PUBLISHED, self.service, item.message.KIND).inc()
        try:
            for future in pending:
                await future
        except TimeoutError:
            for future in pending:
                future.cancel()
            raise
        finally:
            for future in pending:
                self._unacked.pop(future, None)

    async def _expire_unacked(self, every: float) -> None:
        """Fail the publications JetStream did not acknowledge by their deadline."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(every)
            now = loop.time()
            for future, deadline in list(self._unacked.items()):
                if deadline <= now and not future.done():
                    future.set_exception(TimeoutError("JetStream did not acknowledge the publication in time"))

    async def dead_letter(self, msg: Msg, reason: str, category: str) -> None:
        headers = msg.headers or {}
        payload = msg.data
        if len(payload) > MAX_MESSAGE_BYTES:  # keep the start; the whole would not fit in a message
            payload = payload[:MAX_MESSAGE_BYTES]
            reason += f" (payload cut to its first {MAX_MESSAGE_BYTES} bytes)"
        letter = DeadLetter(
            service=self.service,
            subject=msg.subject,
            reason=reason,
            payload=payload,
            msg_id=headers.get("Nats-Msg-Id"),
            deliveries=_deliveries(msg),
            at=time.time(),
        )
        await self.js.publish(dead_letter_subject(self.service), encode(letter))
        metrics.child(metrics.DEAD_LETTERS, self.service, category).inc()
        log.warning("%s: dead letter from %s: %s", self.service, msg.subject, reason)

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        if not self.client.is_closed:
            await self.client.flush()
            await self.client.close()


def _deliveries(msg: Msg) -> int:
    try:
        return msg.metadata.num_delivered or 1
    except Exception:  # not a JetStream message
        return 1


Handler = Callable[[Any, Msg], Awaitable[None]]


class Worker:
    """Consume one durable pull consumer with bounded concurrency until `stop` is set."""

    def __init__(
        self,
        bus: Bus,
        consumer: ConsumerSpec,
        accepts: tuple[type[Message], ...],
        handle: Handler,
        concurrency: int = 256,
        batch: int = 256,
        grace: float = 20.0,
    ) -> None:
        self.bus = bus
        self.consumer = consumer
        self.accepts = accepts
        self.handle = handle
        self.concurrency = concurrency
        self.batch = batch
        self.grace = grace  # seconds in-flight work may take to finish on shutdown
        self.in_flight: dict[asyncio.Task[None], Msg] = {}
        self._started: dict[asyncio.Task[None], float] = {}
        self._slot_free = asyncio.Event()  # set once there is room to fetch again
        # Fetch only once there is room for a good handful: with slow handlers (a gateway
        # waiting 200 ms on each generation) slots free one at a time, and a pull request
        # (and a wake-up of the fetch loop) per freed slot cost more CPU than the messages.
        self.low_water = max(1, min(self.batch, self.concurrency // 8))

    async def run(self, stop: asyncio.Event) -> None:
        subscription = await self.bus.pull_subscription(self.consumer)
        keepalive = asyncio.create_task(self._keep_alive(stop))
        try:
            while not stop.is_set():
                room = self.concurrency - len(self.in_flight)
                if room < self.low_water and self.in_flight:
                    self._slot_free.clear()
                    await _first(self._slot_free.wait(), stop.wait())
                    continue
                try:
                    messages = await subscription.fetch(min(room, self.batch), timeout=0.5)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
                except nats.errors.ConnectionClosedError:
                    break
                except nats.errors.Error as error:  # JetStream restarting, a reconnect under way
                    log.warning("%s: fetch failed (%s), retrying", self.bus.service, type(error).__name__)
                    await asyncio.sleep(0.5)
                    continue
                for msg in messages:
                    task = asyncio.create_task(self._process(msg))
                    self.in_flight[task] = msg
                    self._started[task] = time.monotonic()
                    metrics.child(metrics.IN_FLIGHT, self.bus.service).inc()
                    task.add_done_callback(self._done)
        finally:
            keepalive.cancel()
            await self._release_in_flight()
            await subscription.unsubscribe()

    def _done(self, task: asyncio.Task[None]) -> None:
        self.in_flight.pop(task, None)
        self._started.pop(task, None)
        metrics.child(metrics.IN_FLIGHT, self.bus.service).dec()
        if self.concurrency - len(self.in_flight) >= self.low_water or not self.in_flight:
            self._slot_free.set()

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
            await self.handle(message, msg)
        except InvalidMessage as invalid:
            metrics.child(metrics.MESSAGES_CONSUMED, service, kind).inc()
            await self._dead_letter(msg, f"invalid message: {invalid}", "invalid-message")
        except Reject as rejected:
            await self._dead_letter(msg, str(rejected), rejected.category)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a passing failure: try again later, or give up with the reason
            deliveries = _deliveries(msg)
            if deliveries >= self.consumer.max_deliver:
                reason = f"failed {deliveries} times, last: {type(error).__name__}: {error}"
                await self._dead_letter(msg, reason, "gave-up")
            else:
                log.warning("%s: %s failed (%s: %s), redelivering", service, kind, type(error).__name__, error)
                metrics.child(metrics.REDELIVERIES, service).inc()
                await msg.nak(delay=min(0.1 * 2**deliveries, 30.0))
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
        for task in unfinished:
            msg = self.in_flight.get(task)
            task.cancel()
            if msg is not None and self.bus.client.is_connected:
                await msg.nak()


async def _first(*waits: Awaitable[Any]) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
