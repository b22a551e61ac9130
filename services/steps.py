"""One step of an observation's task, as the message that takes it further.

A work item (the observation, its task, its answers so far) is enough to replay the task
(`core.replay`) to its next question or to its end. The scorer takes an observation's
first step; the gateway that answered a question takes the next one itself, so each
generation costs one message (the request), not two (a request and a reply to the
scorer). `next_message` is that step; `ReplayedWork` keeps the replay running for the
gateway, which may answer several questions in a row from its cache.
"""

from __future__ import annotations

from proto import MAX_SOURCES, Answer, AnswerSource, GenerationRequest, WorkItem, replace
from proto import subjects as sub

from .core.config import InvalidTaskConfig
from .core.observations import InvalidObservation
from .core.replay import Finished, Pending, Replay, TranscriptTooLong
from .core.tasks import UnknownTask
from .provenance import merge_sources
from .runtime.handlers import Outgoing, Reject
from .runtime.metrics import QUESTIONS, SCORED, child
from .wire import generation_of, observation_of, scored_result, task_of

_BAD_WORK = (UnknownTask, InvalidTaskConfig, InvalidObservation, TranscriptTooLong)


class ReplayedWork:
    """A work item with its task replayed over the answers it carries; `answer` adds one
    more (to the item, and to the running replay), `next_message` is where it goes now.
    Bad work (an unknown task, a malformed observation, an answer too many) is a `Reject`."""

    def __init__(self, work: WorkItem) -> None:
        self.work = work
        try:
            self.replay = Replay(task_of(work), observation_of(work))
            for answer in work.answers:
                self._give(answer)
        except _BAD_WORK as error:
            raise self._rejected(error) from None

    @classmethod
    def asking(cls, work: WorkItem) -> ReplayedWork:
        """`work` replayed, to answer the question it asks; work whose task has ended asks
        none, and is refused before anyone answers it."""
        replayed = cls(work)
        replay = replayed.replay
        if replay.ended_by_error:
            ended = ValueError(f"{replay.task.kind} ended at a generation error: it asks nothing more")
            raise replayed._rejected(ended)
        if isinstance(replay.outcome, Finished):
            kind, given = replay.task.kind, replay.answered
            raise replayed._rejected(TranscriptTooLong(f"{kind} finished after {given} answers, {given + 1} given"))
        return replayed

    def answer(self, answer: Answer, source: AnswerSource | None) -> None:
        """One more answer, and where it came from among the item's sources."""
        self.work = answered(self.work, answer, source)
        try:  # the task and the observation were read when the replay began: only the count can be wrong
            self._give(answer)
        except TranscriptTooLong as error:
            raise self._rejected(error) from None

    def next_message(self, partitions: int) -> Outgoing:
        """The one message that takes the work a step further: a question for the gateway
        partition that owns its cache entry, or the scored result for the aggregator."""
        work, outcome = self.work, self.replay.outcome
        if isinstance(outcome, Pending):
            child(QUESTIONS, work.task).inc()
            request = GenerationRequest(message=outcome.prompt, work=work)
            partition = sub.partition_of(work.chat, outcome.prompt, partitions)
            return Outgoing(
                sub.generation_subject(work.chat.model, partition),
                request,
                sub.request_id(work.job_id, work.idx, outcome.step),
            )
        child(SCORED, work.task).inc()
        result = scored_result(work.job_id, outcome.record, self.replay.task.kind, work.sources)
        return Outgoing(sub.RESULTS, result, sub.result_id(work.job_id, work.idx))

    def _give(self, answer: Answer) -> None:
        self.replay.give(generation_of(answer), len(self.work.answers))

    def _rejected(self, error: Exception) -> Reject:
        return Reject(f"job {self.work.job_id}, observation {self.work.idx}: {error}", "bad-work")


def next_message(work: WorkItem, partitions: int) -> Outgoing:
    """The message that takes `work` a step further (see `ReplayedWork.next_message`)."""
    return ReplayedWork(work).next_message(partitions)


def answered(work: WorkItem, answer: Answer, source: AnswerSource | None) -> WorkItem:
    """`work` with one more answer, and where it came from among its sources."""
    sources = merge_sources(work.sources, [source], MAX_SOURCES)
    return replace(work, answers=[*work.answers, answer], sources=sources)
