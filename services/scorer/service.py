"""What happens to an observation and to each generation reply: one step of its task.

The scorer keeps nothing in memory between messages. An observation message, or a reply
carrying the transcript of answers so far, is enough to replay the task (`core.replay`)
to its next question, sent to the gateway partition that owns its cache entry, or to its
end, sent to the aggregator as a scored result.
"""

from __future__ import annotations

from functools import lru_cache

from nats.aio.msg import Msg

from proto import GenerationReply, GenerationRequest, ObservationMessage, ScoredResult, WorkItem, replace
from proto import subjects as sub
from proto.subjects import ConsumerSpec

from ..core.config import InvalidTaskConfig, TaskConfig
from ..core.observations import InvalidObservation, observation_from_dict
from ..core.records import record_to_dict
from ..core.replay import Generation, Pending, TranscriptTooLong, advance
from ..core.tasks import Task, UnknownTask
from ..runtime.bus import Outgoing, Reject
from ..runtime.metrics import child
from ..runtime.service import ServiceBase
from . import metrics


@lru_cache(maxsize=256)
def _task(kind: str, category: str, config: tuple[str, ...]) -> Task:
    return Task(kind, category, TaskConfig.of(config))


def next_message(work: WorkItem, partitions: int) -> Outgoing:
    """The one message that takes `work` a step further: a question, or the result."""
    try:
        task = _task(work.task, work.category, tuple(work.config))
        observation = observation_from_dict(work.category, work.observation)
        answers = [Generation(a.text, a.duration, a.error) for a in work.answers]
        outcome = advance(task, observation, answers)
    except (UnknownTask, InvalidTaskConfig, InvalidObservation, TranscriptTooLong) as error:
        raise Reject(f"job {work.job_id}, observation {work.idx}: {error}", "bad-work") from None
    if isinstance(outcome, Pending):
        request = GenerationRequest(message=outcome.prompt, work=work)
        partition = sub.partition_of(work.chat, outcome.prompt, partitions)
        return Outgoing(
            sub.generation_subject(work.chat.model, partition),
            request,
            sub.request_id(work.job_id, observation.idx, outcome.step),
        )
    result = ScoredResult(work.job_id, task.kind, observation.idx, record_to_dict(outcome.record))
    return Outgoing(sub.RESULTS, result, sub.result_id(work.job_id, observation.idx))


class Scorer(ServiceBase):
    name = "scorer"
    accepts = (ObservationMessage, GenerationReply)

    def __init__(self, partitions: int = 1) -> None:
        self.partitions = partitions

    def consumer(self) -> ConsumerSpec:
        return sub.consumer_for("scorer")

    async def handle(self, message: ObservationMessage | GenerationReply, msg: Msg) -> None:
        assert self.bus is not None
        if isinstance(message, GenerationReply):
            work = replace(message.work, answers=[*message.work.answers, message.answer])
        else:
            work = message.work
        outgoing = next_message(work, self.partitions)
        await self.bus.publish([outgoing])
        if isinstance(outgoing.message, ScoredResult):
            child(metrics.SCORED, work.task).inc()
        else:
            child(metrics.QUESTIONS, work.task).inc()
