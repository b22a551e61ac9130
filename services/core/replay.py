"""Drive a task over the answers received so far, with no I/O and no state kept.

`advance` re-runs the task program from the start, feeding it the transcript of answers;
it stops at the first question not yet answered (`Pending`) or at the end (`Finished`).
This is how the scorer stays stateless: the transcript travels in the messages. A task
asks at most three questions, so replaying from the start costs next to nothing.
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


def advance(task: Task, observation: Observation, answers: Sequence[Generation]) -> Pending | Finished:
    program = task.program(observation)
    duration = 0.0
    step = -1
    try:
        prompt = next(program)
        for step, generation in enumerate(answers):  # noqa: B007 (read after the loop)
            duration += generation.duration
            if generation.error is not None:
                program.close()
                return Finished(
                    error_record(
                        KINDS[task.kind].record, observation.idx, observation.label, generation.error, duration
                    )
                )
            prompt = program.send(generation.text)
    except StopIteration as done:
        if step + 1 != len(answers):
            raise TranscriptTooLong(f"{task.kind} finished after {step + 1} answers, {len(answers)} given") from None
        return Finished(with_duration(done.value, duration))
    return Pending(step=len(answers), prompt=prompt)


def run_transcript(task: Task, observation: Observation, answers: Sequence[str]) -> ResultRecord:
    """The record a task produces from a complete recorded transcript of answer texts."""
    outcome = advance(task, observation, [Generation(text) for text in answers])
    if isinstance(outcome, Pending):
        raise ValueError(f"transcript ends before question {outcome.step + 1} of {task.kind}")
    return outcome.record
