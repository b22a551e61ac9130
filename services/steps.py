"""One step of an observation's task, as the message that takes it further.

A work item (the observation, its task, its answers so far) is enough to replay the task
(`core.replay.advance`) to its next question or to its end. The scorer takes an
observation's first step; the gateway that answered a question takes the next one itself,
so each generation costs one message (the request), not two (a request and a reply to the
scorer). `next_message` is that step, for both.
"""

from __future__ import annotations

from proto import MAX_SOURCES, Answer, AnswerSource, GenerationRequest, WorkItem, replace
from proto import subjects as sub

from .core.config import InvalidTaskConfig
from .core.observations import InvalidObservation
from .core.replay import Pending, TranscriptTooLong, advance
from .core.tasks import UnknownTask
from .provenance import merge_sources
from .runtime.handlers import Outgoing, Reject
from .runtime.metrics import QUESTIONS, SCORED, child
from .wire import generations_of, observation_of, scored_result, task_of


def next_message(work: WorkItem, partitions: int) -> Outgoing:
    """The one message that takes `work` a step further: a question for the gateway
    partition that owns its cache entry, or the scored result for the aggregator."""
    try:
        task, observation = task_of(work), observation_of(work)
        outcome = advance(task, observation, generations_of(work))
    except (UnknownTask, InvalidTaskConfig, InvalidObservation, TranscriptTooLong) as error:
        raise Reject(f"job {work.job_id}, observation {work.idx}: {error}", "bad-work") from None
    if isinstance(outcome, Pending):
        child(QUESTIONS, work.task).inc()
        request = GenerationRequest(message=outcome.prompt, work=work)
        partition = sub.partition_of(work.chat, outcome.prompt, partitions)
        return Outgoing(
            sub.generation_subject(work.chat.model, partition),
            request,
            sub.request_id(work.job_id, observation.idx, outcome.step),
        )
    child(SCORED, work.task).inc()
    result = scored_result(work.job_id, outcome.record, task.kind, work.sources)
    return Outgoing(sub.RESULTS, result, sub.result_id(work.job_id, observation.idx))


def answered(work: WorkItem, answer: Answer, source: AnswerSource | None) -> WorkItem:
    """`work` with one more answer, and where it came from among its sources."""
    sources = merge_sources(work.sources, [source], MAX_SOURCES)
    return replace(work, answers=[*work.answers, answer], sources=sources)
