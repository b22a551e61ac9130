"""An in-memory stand-in for JetStream, for tests of a service's handlers: no server, no
network, milliseconds a message.

`MemoryBus.deliver` settles one message the way the worker does: the message goes through
the codec as its subject's types (a handler sees exactly what the wire would give it), the
handler runs, what it returns is stored in `published` (a repeated message id is dropped,
as JetStream's de-duplication does), and a `Reject` lands in `dead_letters`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from proto import Message, decode, encode

from .handlers import Handled, Outgoing, Reject, handle_and_publish

M = TypeVar("M", bound=Message)


class Handles(Protocol):
    """What `deliver` needs of a service."""

    accepts: tuple[type[Message], ...]

    def handle(self, message: Any) -> Handled: ...


@dataclass(frozen=True, slots=True)
class MemoryDeadLetter:
    message: Message
    reason: str
    category: str


class MemoryBus:
    def __init__(self) -> None:
        self.published: list[Outgoing] = []
        self.dead_letters: list[MemoryDeadLetter] = []
        self._ids: set[str] = set()

    async def publish(self, outgoing: Iterable[Outgoing], timeout: float = 10.0) -> None:
        for item in outgoing:
            decode(encode(item.message), type(item.message))  # what could not cross the wire fails here
            if item.msg_id not in self._ids:
                self._ids.add(item.msg_id)
                self.published.append(item)

    async def last(self, subject: str, kind: type[M]) -> M | None:
        """The last message published to `subject`, as `kind` (as a stream keeps it)."""
        for item in reversed(self.published):
            if item.subject == subject:
                return decode(encode(item.message), kind)
        return None

    async def deliver(self, service: Handles, message: Message) -> list[Outgoing]:
        """Handle one message as the worker would; what it published (a rejection's too)."""
        before = len(self.published)
        decoded = decode(encode(message), *service.accepts)
        try:
            await handle_and_publish(service.handle, decoded, self)
        except Reject as rejected:
            self.dead_letters.append(MemoryDeadLetter(message, str(rejected), rejected.category))
        return self.published[before:]

    def of(self, kind: type[M]) -> list[M]:
        """The published messages of one kind, in order."""
        return [item.message for item in self.published if isinstance(item.message, kind)]
