"""The backend pool: every backend kept at its own concurrency limit, requests to the least loaded.

Limits come from the server itself where it says (TGI's `/info` gives
`max_concurrent_requests`), or from configuration. A request waits for room in the pool
rather than overloading a server: that wait is the gateway's back-pressure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ..backends.http import BackendUnavailable, CompletionBackend
from ..core.chat import GenerationParameters
from ..runner import GenerationRejected
from ..runtime.metrics import child
from . import metrics

DEFAULT_LIMIT = 16


class PoolMisconfigured(RuntimeError):
    """The backends disagree on the model they serve, or there are none."""


@dataclass(slots=True)
class Member:
    backend: CompletionBackend
    limit: int
    in_flight: int = 0
    retries_seen: int = 0

    @property
    def load(self) -> float:
        return self.in_flight / self.limit


class BackendPool:
    def __init__(self, backends: Sequence[CompletionBackend], limit: int = 0) -> None:
        if not backends:
            raise PoolMisconfigured("no backend configured")
        self.backends = list(backends)
        self.configured_limit = limit
        self.members: list[Member] = []
        self.model_id = ""
        self._room: asyncio.Semaphore | None = None

    async def start(self) -> None:
        infos = await asyncio.gather(*(backend.describe() for backend in self.backends))
        served = {info.model_id for info in infos}
        if len(served) != 1:
            raise PoolMisconfigured(f"backends serve different models: {', '.join(sorted(served))}")
        self.model_id = served.pop()
        self.members = [
            Member(backend, self.configured_limit or info.max_concurrent or DEFAULT_LIMIT)
            for backend, info in zip(self.backends, infos, strict=True)
        ]
        self._room = asyncio.Semaphore(sum(member.limit for member in self.members))

    @property
    def capacity(self) -> int:
        return sum(member.limit for member in self.members)

    async def complete(self, prompt: str, parameters: GenerationParameters) -> tuple[str, float]:
        assert self._room is not None, "start() the pool first"
        async with self._room:
            member = min(self.members, key=lambda m: m.load)  # the semaphore guarantees one has room
            member.in_flight += 1
            url = member.backend.url
            child(metrics.BACKEND_IN_FLIGHT, url).inc()
            started = time.perf_counter()
            outcome = "ok"
            try:
                return await member.backend.complete(prompt, parameters)
            except GenerationRejected:
                outcome = "rejected"
                raise
            except BackendUnavailable:
                outcome = "unavailable"
                raise
            finally:
                member.in_flight -= 1
                child(metrics.BACKEND_IN_FLIGHT, url).dec()
                child(metrics.BACKEND_SECONDS, url).observe(time.perf_counter() - started)
                child(metrics.GENERATIONS, url, outcome).inc()
                retries = member.backend.retries
                child(metrics.RETRIES, url).inc(retries - member.retries_seen)
                member.retries_seen = retries
