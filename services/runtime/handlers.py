"""The handler contract: a service's handler takes one decoded message and returns what to
publish; it never sees NATS. The worker (or, in tests, the in-memory bus) publishes what
it returns, waits until JetStream has stored all of it, and only then acknowledges the
input, so a message's effects are durable before the message is let go.

A handler returns a list of messages, or, where it publishes a lot in a set order (the
producer: a manifest, then a job's observations in chunks, then an event), an async
iterator of batches; each batch is stored before the next is sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from proto import Message

M = TypeVar("M", bound=Message)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to publish: where, what, and its id (JetStream drops a repeated id)."""

    subject: str
    message: Message
    msg_id: str


class Reject(Exception):
    """The message can never be processed as it is: dead-letter it with this reason, after
    publishing `publish` (a `rejected` event, say)."""

    def __init__(self, reason: str, category: str = "rejected", publish: Sequence[Outgoing] = ()) -> None:
        super().__init__(reason)
        self.category = category  # a bounded metric label: what kind of rejection
        self.publish = publish


class HandBack(Exception):
    """Not now: the service is stopping. What was published so far stays published; hand
    the message back at once, for another delivery to go on from there."""


Handled = Awaitable[Sequence[Outgoing]] | AsyncIterator[Sequence[Outgoing]]
Handler = Callable[[Any], Handled]


class Publisher(Protocol):
    """Where a service's messages go: the NATS bus, or the in-memory one in tests."""

    async def publish(self, outgoing: Iterable[Outgoing], timeout: float = 10.0) -> None: ...

    async def last(self, subject: str, kind: type[M]) -> M | None:
        """The last message stored on `subject`, as `kind`; None if there is none."""
        ...


async def handle_and_publish(handle: Handler, message: Message, publisher: Publisher) -> None:
    """Run the handler on `message` and publish what it returns, batch after batch.

    Raises what the handler raises; a `Reject`'s own messages are published before it
    propagates, so the caller only has to dead-letter the input."""
    try:
        handled = handle(message)
        if isinstance(handled, AsyncIterator):
            async for batch in handled:
                await publisher.publish(batch)
        else:
            outgoing = await handled
            if outgoing:
                await publisher.publish(outgoing)
    except Reject as rejected:
        if rejected.publish:
            await publisher.publish(rejected.publish)
        raise
