"""The one NATS connection helper: connect, declare streams and consumers, publish, dead-letter.

Publishing speaks JetStream's protocol over plain NATS publishes instead of nats-py's
`publish_async`, which costs twice the CPU per message (see `Bus.publish`). The loop that
consumes a service's messages is `worker.Worker`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api

from proto import MAX_MESSAGE_BYTES, DeadLetter, decode, encode
from proto.subjects import STREAMS, ConsumerSpec, StreamSpec, dead_letter_subject, stream_of

from ..errors import NatsRefused, NatsUnreachable
from . import metrics
from .handlers import M, Outgoing
from .health import Health
from .settings import Settings

log = logging.getLogger("introspect")


class PublishRefused(Exception):
    """JetStream answered a publication with an error instead of storing it."""


class StorageFull(PublishRefused):
    """JetStream cannot store the publication: its disk, or its storage limit, is full."""


# JetStream's error codes for "no room": insufficient resources (its max_file_store or the
# disk reached), insufficient storage.
_NO_ROOM = (10023, 10047)
STORAGE_RETRY_FIRST, STORAGE_RETRY_MAX = 0.5, 15.0  # seconds between attempts: doubling


async def connect(settings: Settings, name: str, reconnected: Callable[[], Awaitable[None]] | None = None) -> Client:
    refused: list[Exception] = []  # what the server said while the first connection was tried

    async def on_error(error: Exception) -> None:
        if isinstance(error, nats.errors.AuthorizationError) or "authorization" in str(error).lower():
            refused.append(error)
        await _log_error(error)

    options: dict[str, Any] = {
        "servers": [settings.nats_url],
        "name": name,
        "max_reconnect_attempts": 10,  # the first connection: give up after about 5 s
        "reconnect_time_wait": 0.5,
        "error_cb": on_error,
        "disconnected_cb": _log_disconnected,
        "reconnected_cb": reconnected or _log_reconnected,
        "inbox_prefix": settings.nats_inbox_prefix,
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
    try:
        client = await nats.connect(**options)
    except nats.errors.NoServersError:
        if refused:
            url = settings.public_nats_url
            raise NatsRefused(f"NATS at {url} refused the credentials: authorization failed") from None
        raise NatsUnreachable(f"cannot reach NATS at {settings.public_nats_url}") from None
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

    def __init__(self, client: Client, service: str, replicas: int | None = None, health: Health | None = None) -> None:
        self.client = client
        self.health = health  # told when JetStream has no room to store what this service publishes
        self.replicas = replicas  # of each stream; None: 1 for a new one, an existing one's own
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
    async def open(cls, settings: Settings, service: str, health: Health | None = None) -> Bus:
        listeners: list[Callable[[], None]] = []

        async def reconnected() -> None:
            await _log_reconnected()
            for listener in listeners:
                listener()

        client = await connect(settings, f"introspect-{service}", reconnected)
        bus = cls(client, service, settings.stream_replicas, health)
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
                max_msgs_per_subject=spec.max_msgs_per_subject,
                num_replicas=self.replicas or 1,
            )
            try:
                await self.js.add_stream(config)
            except nats.js.errors.BadRequestError:  # exists with another config
                if self.replicas is None and await self._declared_keeping_replicas(config):
                    continue
                await self.js.update_stream(config)

    async def _declared_keeping_replicas(self, config: api.StreamConfig) -> bool:
        """Declare the stream with the replicas it has: True if that was all that differed
        (a submitter, who may not update streams, declares them too)."""
        assert config.name is not None
        existing = await self.js.stream_info(config.name)
        config.num_replicas = existing.config.num_replicas or 1
        try:
            await self.js.add_stream(config)
        except nats.js.errors.BadRequestError:
            return False
        return True

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
        One JetStream has no room for (a full disk, its storage limit) is reported as the
        `nats` problem, which pauses the service, and published again, with growing
        pauses, until it is stored: the message in hand waits instead of spending its
        deliveries on a server that cannot take what it makes.
        """
        batch = list(outgoing)
        delay, refused = STORAGE_RETRY_FIRST, False
        while True:
            try:
                await self._publish(batch, timeout)
            except StorageFull as full:
                if self.health is None:
                    raise
                refused = True
                self.health.report("nats", f"JetStream cannot store what this service publishes ({full})")
                await asyncio.sleep(delay)
                delay = min(delay * 2, STORAGE_RETRY_MAX)
                continue
            if refused and self.health is not None:
                self.health.clear("nats")
            return

    async def _publish(self, outgoing: list[Outgoing], timeout: float) -> None:
        """One attempt at `publish`.

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

    async def last(self, subject: str, kind: type[M]) -> M | None:
        """The last message stored on `subject`, as `kind`; None if there is none (a
        malformed one raises `InvalidMessage`)."""
        try:
            stored = await self.js.get_last_msg(stream_of(subject), subject)
        except nats.js.errors.NotFoundError:
            return None
        return decode(stored.data or b"", kind)

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
        status = header(msg.headers or {}, "Status")
        if status:  # 503: no stream takes the subject
            future.set_exception(PublishRefused(f"NATS status {status}: no JetStream answered"))
        elif b'"error"' in msg.data:
            error = json.loads(msg.data).get("error") or {}
            refused = StorageFull if error.get("err_code") in _NO_ROOM else PublishRefused
            future.set_exception(refused(f"JetStream refused it: {error.get('description', error)}"))
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
        msg_id = header(headers, "Nats-Msg-Id")
        letter = DeadLetter(
            service=self.service,
            subject=msg.subject[:MAX_DEAD_LETTER_TEXT],
            # A reason quotes what it could not read: bounded, so that every letter stays
            # under DeadLetter.MAX_BYTES and can be listed and replayed.
            reason=_bounded(reason),
            payload=payload,
            msg_id=None if msg_id is None else msg_id[:MAX_DEAD_LETTER_TEXT],
            deliveries=deliveries(msg),
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


MAX_DEAD_LETTER_TEXT = 4096  # characters of a dead letter's reason, subject or message id


def _bounded(text: str) -> str:
    if len(text) <= MAX_DEAD_LETTER_TEXT:
        return text
    return text[:MAX_DEAD_LETTER_TEXT] + f"... ({len(text) - MAX_DEAD_LETTER_TEXT} more characters cut)"


def header(headers: dict[str, Any], name: str) -> str | None:
    """One header's value: nats-py gives a list instead where fast-mail-parser is installed."""
    value = headers.get(name)
    if isinstance(value, list):
        return value[0] if value else None
    return value


def deliveries(msg: Msg) -> int:
    try:
        return msg.metadata.num_delivered or 1
    except Exception:  # not a JetStream message
        return 1
