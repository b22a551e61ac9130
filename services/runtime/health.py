"""A service's health: what keeps it from doing its work, said in one place.

A service reports a problem (no model server answers, a store that cannot write) under a
fixed name with a reason, and clears it once it has passed. While a problem that blocks
work stands, `/healthz` answers 503 with the reasons, the worker asks JetStream for no new
messages (back-pressure: work waits in the stream instead of burning its deliveries on a
service that cannot do it), and `introspect_problem{stage, problem}` is 1. A problem that
does not block work (a cache that cannot store, while answers still flow) is reported the
same way but stops nothing. Each change is logged once, not once per message.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from prometheus_client import Gauge

log = logging.getLogger("introspect")

PROBLEM = Gauge(
    "introspect_problem",
    "1 while a service reports the problem (model-server, store, cache, ...), else 0",
    ["stage", "problem"],
)


@dataclass(frozen=True, slots=True)
class Problem:
    reason: str
    blocks_work: bool


@dataclass(slots=True)
class Health:
    stage: str
    problems: dict[str, Problem] = field(default_factory=dict)
    # Set while no problem blocks work; waited on by the worker. An Event made outside a
    # running loop binds to the loop that first waits on it.
    _can_work: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._can_work.set()

    def report(self, problem: str, reason: str, *, blocks_work: bool = True) -> None:
        """Say that `problem` stands, for `reason`; logged when it starts or its reason changes."""
        previous = self.problems.get(problem)
        self.problems[problem] = Problem(reason, blocks_work)
        if previous is None or previous.reason != reason:
            consequence = "taking no new work until it passes" if blocks_work else "working on"
            log.warning("%s: %s: %s; %s", self.stage, problem, reason, consequence)
        PROBLEM.labels(self.stage, problem).set(1)
        self._update()

    def clear(self, problem: str) -> None:
        """Say that `problem` has passed (nothing happens if it was not reported)."""
        if self.problems.pop(problem, None) is not None:
            log.warning("%s: %s: recovered", self.stage, problem)
            PROBLEM.labels(self.stage, problem).set(0)
            self._update()

    @property
    def can_work(self) -> bool:
        return self._can_work.is_set()

    async def until_can_work(self) -> None:
        await self._can_work.wait()

    def reasons(self) -> list[str]:
        """One line per standing problem, for `/healthz`."""
        return [f"{name}: {problem.reason}" for name, problem in sorted(self.problems.items())]

    def _update(self) -> None:
        if any(problem.blocks_work for problem in self.problems.values()):
            self._can_work.clear()
        else:
            self._can_work.set()
