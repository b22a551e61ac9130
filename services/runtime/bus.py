"""The one NATS connection helper: connect, declare streams, publish, dead-letter, consume.

`Worker` is the loop every service runs: ask its durable pull consumer for as many
messages as it has room for, decode each delivered message into the types its subject
carries, hand it to the service's handler, and acknowledge only when the handler has
returned, that is when its effect (a publication JetStream acknowledged, a RocksDB write)
is durable. What can never be processed goes to the dead-letter stream with the reason;
a passing failure (a backend down, NATS busy) hands the message back for redelivery with
a growing delay.

Both hot paths speak JetStream's protocol over plain NATS requests instead of nats-py's
`fetch` and `publish_async`, which cost twice the CPU per message (see `Worker` and
`Bus.publish`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
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
from nats.js import api

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


class PublishRefused(Exception):
    """JetStream answered a publication with an error instead of storing it."""


async def connect(settings: Settings, name: str, reconnected: Callable[[], Awaitable[None]] | None = None) -> Client:
    options: dict[str, Any] = {
        "servers": [settings.nats_url],
        "name": name,
        "max_reconnect_attempts": 10,  # the first connection: give up after about 5 s
        "reconnect_time_wait": 0.5,
        "error_cb": _log_error,
        "disconnected_cb": _log_disconnected,
        "reconnected_cb": reconnected or _log_reconnected,
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
        # Publications waiting for JetStream's ack, by reply subject: (future, deadline).
        # One watchdog enforces the deadlines: a timer per publication cost the gateway 7%
        # of its CPU.
        self._unacked: dict[str, tuple[asyncio.Future[None], float]] = {}
        self._ack_inbox: str | None = None
        self._sequence = itertools.count()
        self._watchdog: asyncio.Task[None] | None = None
        self._reconnect_listeners: list[Callable[[], None]] = []

    @classmethod
    async def open(cls, settings: Settings, service: str) -> Bus:
        listeners: list[Callable[[], None]] = []

        async def reconnected() -> None:
            await _log_reconnected()
            for listener in listeners:
                listener()

        bus = cls(await connect(settings, f"introspect-{service}", reconnected), service)
        bus._reconnect_listeners = listeners
        await bus.ensure_streams()
        return bus

    def on_reconnect(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` after each reconnection (the server forgot our pull requests);
        returns what stops it."""
        self._reconnect_listeners.append(listener)
        return lambda: self._reconnect_listeners.remove(listener)

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

    async def ensure_consumer(self, spec: ConsumerSpec) -> None:
        """Create the durable consumer `spec` unless it exists. JetStream refuses a consumer
        whose subjects overlap another's on a work-queue stream."""
        try:
            await self.js.consumer_info(spec.stream, spec.durable)
            return
        except nats.js.errors.NotFoundError:
            pass
        config = api.ConsumerConfig(
            durable_name=spec.durable,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=spec.ack_wait,
            max_ack_pending=spec.max_ack_pending,
            max_deliver=-1,  # the worker dead-letters after spec.max_deliver itself, with the reason
            filter_subject=spec.filter_subject,
        )
        await self.js.add_consumer(spec.stream, config)

    async def publish(self, outgoing: Iterable[Outgoing], timeout: float = 10.0) -> None:
        """Publish all, then wait until JetStream has stored every one.

        A publication not acknowledged in `timeout` seconds (the server restarting, say;
        checked four times a second) raises, so the message that caused it is handed back
        and tried again: JetStream's de-duplication drops whichever copies did get stored.

        Each publication is a plain NATS publish whose reply subject is one of this bus's
        inbox subjects; JetStream's ack arrives there. nats-py's `publish_async` does the
        same with a semaphore, random tokens and a parsed PubAck each: 20 µs more a message.
        """
        if self._ack_inbox is None:
            await self._listen_for_acks()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        replies = []
        try:
            for item in outgoing:
                reply = f"{self._ack_inbox}.{next(self._sequence)}"
                future: asyncio.Future[None] = loop.create_future()
                self._unacked[reply] = (future, deadline)
                replies.append(reply)
                headers = {"Nats-Msg-Id": item.msg_id}
                await self.client.publish(item.subject, encode(item.message), reply=reply, headers=headers)
                metrics.child(metrics.MESSAGES_PUBLISHED, self.service, item.message.KIND).inc()
            for reply in replies:
                await self._unacked[reply][0]
        finally:
            for reply in replies:
                future, _ = self._unacked.pop(reply)
                if future.done():
                    if not future.cancelled():
                        future.exception()  # retrieved: a failure after the first is not logged again
                else:
                    future.cancel()  # nobody waits for it any more

    async def _listen_for_acks(self) -> None:
        inbox = self.client.new_inbox()
        await self.client.subscribe(f"{inbox}.*", cb=self._on_ack, pending_msgs_limit=-1, pending_bytes_limit=-1)
        self._ack_inbox = inbox
        self._watchdog = asyncio.create_task(self._expire_unacked(every=0.25))

    async def _on_ack(self, msg: Msg) -> None:
        """JetStream's answer to a publication: stored (`{"stream":..,"seq":..}`) or an error."""
        entry = self._unacked.get(msg.subject)
        if entry is None or entry[0].done():
            return  # its publisher gave up already
        future = entry[0]
        status = _header(msg.headers or {}, "Status")
        if status:  # 503: no stream takes the subject
            future.set_exception(PublishRefused(f"NATS status {status}: no JetStream answered"))
        elif b'"error"' in msg.data:
            error = json.loads(msg.data).get("error") or {}
            future.set_exception(PublishRefused(f"JetStream refused it: {error.get('description', error)}"))
        else:
            future.set_result(None)

    async def _expire_unacked(self, every: float) -> None:
        """Fail the publications JetStream did not acknowledge by their deadline."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(every)
            now = loop.time()
            for future, deadline in list(self._unacked.values()):
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
            msg_id=_header(headers, "Nats-Msg-Id"),
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


def _header(headers: dict[str, Any], name: str) -> str | None:
    """One header's value: nats-py gives a list instead where fast-mail-parser is installed."""
    value = headers.get(name)
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _deliveries(msg: Msg) -> int:
    try:
        return msg.metadata.num_delivered or 1
    except Exception:  # not a JetStream message
        return 1


Handler = Callable[[Any, Msg], Awaitable[None]]


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
    ) -> None:
        self.bus = bus
        self.consumer = consumer
        self.accepts = accepts
        self.handle = handle
        self.concurrency = concurrency
        self.batch = batch
        self.grace = grace  # seconds in-flight work may take to finish on shutdown
        self.pull_expires = pull_expires
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
            # Unsubscribed, the inbox has no interest, and JetStream drops the live pull
            # requests instead of delivering into the void.
            with contextlib.suppress(nats.errors.Error):  # the connection is closing anyway
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
        status = _header(headers, "Status") or ""
        if status == "100":  # an idle heartbeat: the request lives on
            return
        pending = _header(headers, "Nats-Pending-Messages")
        if pending is not None and pending.isdigit():
            self.requested = max(0, self.requested - int(pending))
        else:
            self.requested = 0  # an answer that does not say how many it ended: ask afresh
        if status != "408":  # 408: expired, the normal end of a request nothing was left for
            description = _header(headers, "Description") or ""
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


async def _set_when(done: asyncio.Event, then: asyncio.Event) -> None:
    await done.wait()
    then.set()


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Until `event` is set, for at most `seconds`."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
