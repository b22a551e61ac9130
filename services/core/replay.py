"""Drive a task over the answers received so far, with no I/O and no state kept.

`advance` re-runs the task program from the start, feeding it the transcript of answers;
it stops at the first question not yet answered (`Pending`) or at the end (`Finished`).
This is how the scorer stays stateless: the transcript travels in the messages. A task
asks at most three questions, so replaying from the start costs next to nothing.

`Replay` is the same program kept running: one who has replayed a transcript and then
learns further answers (the gateway answering the next questions from its cache) gives
them to it one at a time instead of replaying from the start for each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .observations import Observation
from .records import ResultRecord, error_record, with_duration
from .tasks import KINDS, Task


@dataclass(frozen=True, slots=True)
class Generation:
    """One answer as the task sees it: cleaned text, server time, or a generation error."""

    text: str
    duration: float = 0.0
    error: str | None = None
    cached: bool = False  # where it came from; the task reads only the fields above


@dataclass(frozen=True, slots=True)
class Pending:
    """The task needs the answer to `prompt`, its question number `step` (from 0)."""

    step: int
    prompt: str


@dataclass(frozen=True, slots=True)
class Finished:
    record: ResultRecord


class TranscriptTooLong(ValueError):
    """More answers were given than the task asked questions."""


class Replay:
    """A task's program over one observation, fed its answers one at a time (`give`); what
    it needs next, or its end, is `outcome`. Lives for one handler call, never between
    messages: the transcript in the message stays the state."""

    def __init__(self, task: Task, observation: Observation) -> None:
        self.task = task
        self.observation = observation
        self.answered = 0
        self.duration = 0.0
        self.ended_by_error = False
        self._program = task.program(observation)
        try:
            self.outcome: Pending | Finished = Pending(step=0, prompt=next(self._program))
        except StopIteration as done:
            self.outcome = Finished(with_duration(done.value, 0.0))

    def give(self, generation: Generation, given: int | None = None) -> Pending | Finished:
        """The answer to the pending question; what the task needs next, or its record.

        An answer after a generation error is ignored (the error ended the task, nothing
        was asked after it); one after the task's end is `TranscriptTooLong`, saying that
        `given` answers were given in all (default: one more than it took)."""
        if self.ended_by_error:
            return self.outcome
        if isinstance(self.outcome, Finished):
            given = self.answered + 1 if given is None else given
            raise TranscriptTooLong(f"{self.task.kind} finished after {self.answered} answers, {given} given")
        self.answered += 1
        self.duration += generation.duration
        if generation.error is not None:
            self._program.close()
            self.ended_by_error = True
            record = error_record(
                KINDS[self.task.kind].record, self.observation.idx, self.observation.label, generation.error,
                self.duration,
            )  # fmt: skip
            self.outcome = Finished(record)
            return self.outcome
        try:
            self.outcome = Pending(step=self.answered, prompt=self._program.send(generation.text))
        except StopIteration as done:
            self.outcome = Finished(with_duration(done.value, self.duration))
        return self.outcome


def advance(task: Task, observation: Observation, answers: Sequence[Generation]) -> Pending | Finished:
    replay = Replay(task, observation)
    for generation in answers:
        replay.give(generation, len(answers))
    return replay.outcome


def run_transcript(task: Task, observation: Observation, answers: Sequence[str]) -> ResultRecord:
    """The record a task produces from a complete recorded transcript of answer texts."""
    outcome = advance(task, observation, [Generation(text) for text in answers])
    if isinstance(outcome, Pending):
        raise ValueError(f"transcript ends before question {outcome.step + 1} of {task.kind}")
    return outcome.record
