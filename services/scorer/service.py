"""What happens to an observation and to each generation reply: one step of its task.

The scorer keeps nothing in memory between messages. An observation message, or a reply
carrying the transcript of answers so far, is enough to replay the task (`core.replay`)
to its next question, sent to the gateway partition that owns its cache entry, or to its
end, sent to the aggregator as a scored result.
"""

from __future__ import annotations

from proto import MAX_SOURCES, GenerationReply, GenerationRequest, ObservationMessage, ScoredResult, WorkItem, replace
from proto import subjects as sub
from proto.subjects import ConsumerSpec

from ..core.config import InvalidTaskConfig
from ..core.observations import InvalidObservation
from ..core.replay import Pending, TranscriptTooLong, advance
from ..core.tasks import UnknownTask
from ..provenance import merge_sources
from ..runtime.handlers import Outgoing, Reject
from ..runtime.metrics import child
from ..runtime.service import ServiceBase
from ..wire import generations_of, observation_of, scored_result, task_of
from . import metrics


def next_message(work: WorkItem, partitions: int) -> Outgoing:
    """The one message that takes `work` a step further: a question, or the result."""
    try:
        task, observation = task_of(work), observation_of(work)
        outcome = advance(task, observation, generations_of(work))
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
    result = scored_result(work.job_id, outcome.record, task.kind, work.sources)
    return Outgoing(sub.RESULTS, result, sub.result_id(work.job_id, observation.idx))


class Scorer(ServiceBase):
    name = "scorer"
    accepts = (ObservationMessage, GenerationReply)

    def __init__(self, partitions: int = 1) -> None:
        self.partitions = partitions

    def consumer(self) -> ConsumerSpec:
        return sub.consumer_for("scorer")

    async def handle(self, message: ObservationMessage | GenerationReply) -> list[Outgoing]:
        if isinstance(message, GenerationReply):
            sources = merge_sources(message.work.sources, [message.source], MAX_SOURCES)
            work = replace(message.work, answers=[*message.work.answers, message.answer], sources=sources)
        else:
            work = message.work
        outgoing = next_message(work, self.partitions)
        if isinstance(outgoing.message, ScoredResult):
            child(metrics.SCORED, work.task).inc()
        else:
            child(metrics.QUESTIONS, work.task).inc()
        return [outgoing]
