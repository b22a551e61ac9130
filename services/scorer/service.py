"""What happens to an observation: its first step.

The scorer keeps nothing in memory between messages. An observation message is enough to
replay the task (`core.replay`) to its first question, sent to the gateway partition that
owns its cache entry, or (an observation that needs no question) to its end, sent to the
aggregator as a scored result. Every later step is taken by the gateway that answered
the question before it (`services/steps.py`); a reply from a gateway of an earlier version,
which sent answers back here, still takes its step here.
"""

from __future__ import annotations

from proto import GenerationReply, ObservationMessage
from proto import subjects as sub
from proto.subjects import ConsumerSpec

from ..runtime.handlers import Outgoing
from ..runtime.service import ServiceBase
from ..steps import answered, next_message


class Scorer(ServiceBase):
    name = "scorer"
    accepts = (ObservationMessage, GenerationReply)

    def __init__(self, partitions: int = 1) -> None:
        self.partitions = partitions

    def consumer(self) -> ConsumerSpec:
        return sub.consumer_for("scorer")

    async def handle(self, message: ObservationMessage | GenerationReply) -> list[Outgoing]:
        work = message.work
        if isinstance(message, GenerationReply):
            work = answered(work, message.answer, message.source)
        return [next_message(work, self.partitions)]
