"""The in-process runner: one task over a dataset split, with bounded concurrency.

It is the reference the distributed pipeline must agree with: the same task programs,
driven by the same `advance`, over any async `generate` function (usually
`generation.ChatModel.generate`, the path the gateway takes too). No message bus here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from .core.observations import Observation
from .core.records import ResultRecord
from .core.replay import Finished, Generation, advance
from .core.results import Aggregate
from .core.tasks import Task

# Answers one user message (the task's question) with a Generation.
Generate = Callable[[str], Awaitable[Generation]]


async def run_observation(task: Task, observation: Observation, generate: Generate) -> ResultRecord:
    answers: list[Generation] = []
    while not isinstance(outcome := advance(task, observation, answers), Finished):
        answers.append(await generate(outcome.prompt))
    return outcome.record


async def evaluate(
    task: Task,
    observations: Sequence[Observation],
    generate: Generate,
    concurrency: int = 32,
    on_record: Callable[[ResultRecord], None] | None = None,
) -> tuple[list[ResultRecord], Aggregate]:
    """Run `task` on every observation, at most `concurrency` at a time.

    Records come back in the order of `observations`; `on_record` sees each as it finishes.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    records: list[ResultRecord | None] = [None] * len(observations)
    running = Aggregate(task.kind)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for position in range(len(observations)):
        queue.put_nowait(position)

    async def worker() -> None:
        while not queue.empty():
            position = queue.get_nowait()
            record = await run_observation(task, observations[position], generate)
            records[position] = record
            running.add(record)
            if on_record is not None:
                on_record(record)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(observations)) or 1)))
    return [record for record in records if record is not None], running
