"""The backend pool: every backend kept at its own concurrency limit, requests to the least loaded.

Limits come from the server itself where it says (TGI's `/info` gives
`max_concurrent_requests`), or from configuration. A request waits for room in the pool
rather than overloading a server: that wait is the gateway's back-pressure.

A server that stops answering (its calls fail, and so does asking what it serves) leaves
the rotation and is asked again, with growing pauses, until it answers. Requests meanwhile
wait for a server that answers, holding their messages: an outage of any length delays a
job and spends none of its deliveries. While no server answers, the gateway reports the
`model-server` problem (see runtime/health.py): readiness down, and no new work taken.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..backends.contract import BackendInfo, BackendUnavailable, Completion, CompletionBackend, GenerationRejected
from ..core.chat import GenerationParameters
from ..runtime.health import Health
from ..runtime.metrics import child
from . import metrics

DEFAULT_LIMIT = 16
PROBE_FIRST, PROBE_MAX = 0.5, 5.0  # seconds between questions to a server that stopped answering
log = logging.getLogger("introspect")


class PoolMisconfigured(RuntimeError):
    """The backends disagree on the model they serve, or there are none."""


@dataclass(slots=True)
class Member:
    backend: CompletionBackend
    limit: int
    in_flight: int = 0
    retries_seen: int = 0
    answers: bool = True  # False: out of the rotation while `probe` asks it until it answers
    probe: asyncio.Task[None] | None = None
    checking: asyncio.Future[bool] | None = None  # one "do you still answer?" for many failed calls

    @property
    def load(self) -> float:
        return self.in_flight / self.limit


class BackendPool:
    """Backends of one model; members can come and go (pods found by discovery) while it runs."""

    def __init__(
        self,
        backends: Sequence[CompletionBackend] = (),
        limit: int = 0,
        make_backend: Callable[[str], CompletionBackend] | None = None,
        health: Health | None = None,
        model: str = "all-models",
    ) -> None:
        if not backends and make_backend is None:
            raise PoolMisconfigured("no backend configured")
        self.backends = list(backends)
        self.configured_limit = limit
        self.make_backend = make_backend
        self.health = health
        self.members: list[Member] = []
        self.model_id = ""
        # Requests waiting for room (since when, woken by), first come first served. A freed
        # slot wakes one of them, not all: with hundreds waiting, waking all on every
        # completion costs more CPU than the requests themselves.
        self._waiting: deque[tuple[float, asyncio.Future[None]]] = deque()
        self._has_members = asyncio.Event()
        self._updating = asyncio.Lock()  # one update at a time: each describes new pods (awaits)
        # Read when scraped: nothing on the path of a request.
        metrics.BACKENDS_READY.labels(model).set_function(lambda: sum(m.answers for m in self.members))
        metrics.BACKEND_WAITING.labels(model).set_function(lambda: len(self._still_waiting()))
        metrics.BACKEND_WAIT_OLDEST.labels(model).set_function(self._oldest_wait)

    async def start(self, patience: float = 30.0) -> None:
        """Describe the configured backends; they must all serve one model.

        A backend that does not answer yet (still starting, loading weights) is asked again
        for `patience` seconds before the gateway gives up on it."""
        if not self.backends:
            return
        infos = await asyncio.gather(*(_describe_when_up(backend, patience) for backend in self.backends))
        served = {info.model_id for info in infos}
        if len(served) != 1:
            raise PoolMisconfigured(f"backends serve different models: {', '.join(sorted(served))}")
        self.model_id = served.pop()
        for backend, info in zip(self.backends, infos, strict=True):
            self._add(Member(backend, self.configured_limit or info.max_concurrent or DEFAULT_LIMIT))

    async def wait_ready(self) -> str:
        """The served model id, once at least one backend is known."""
        await self._has_members.wait()
        return self.model_id

    async def update(self, urls: set[str]) -> None:
        """Make the members exactly `urls`: describe the new ones, drop the gone ones.

        A dropped member gets no new requests; the ones it is serving finish normally.
        """
        assert self.make_backend is not None, "a pool of fixed backends cannot be updated"
        async with self._updating:
            await self._update(urls, self.make_backend)

    async def _update(self, urls: set[str], make_backend: Callable[[str], CompletionBackend]) -> None:
        current = {member.backend.url: member for member in self.members}
        for url in set(current) - urls:
            self._stop_probe(current[url])
            self.members.remove(current[url])
            metrics.BACKEND_LIMIT.remove(url)
            log.info("backend %s left the pool", url)
        for url in sorted(urls - set(current)):
            backend = make_backend(url)
            try:
                info = await backend.describe()
            except BackendUnavailable as error:
                log.warning("backend %s not added: %s", url, error)
                continue
            if self.model_id and info.model_id != self.model_id:
                log.warning("backend %s serves %s, not %s: not added", url, info.model_id, self.model_id)
                continue
            self.model_id = info.model_id
            self._add(Member(backend, self.configured_limit or info.max_concurrent or DEFAULT_LIMIT))
            log.info("backend %s joined the pool", url)
        self._wake(len(self._waiting))
        self._report("no ready server in the pool")

    def _add(self, member: Member) -> None:
        self.members.append(member)
        metrics.BACKEND_LIMIT.labels(member.backend.url).set(member.limit)
        self._has_members.set()
        self._wake(member.limit)

    @property
    def capacity(self) -> int:
        return sum(member.limit for member in self.members)

    async def _acquire(self) -> Member:
        """The least loaded member with room, waiting for room if there is none."""
        while True:
            free = [member for member in self.members if member.answers and member.in_flight < member.limit]
            if free:
                member = min(free, key=lambda m: m.load)
                member.in_flight += 1
                return member
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append((time.monotonic(), waiter))
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake(1)  # woken, then cancelled: pass the slot on
                raise

    def _wake(self, count: int) -> None:
        """Wake up to `count` waiting requests, oldest first."""
        while count > 0 and self._waiting:
            _, waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                count -= 1

    def _still_waiting(self) -> list[float]:
        """Since when each request still waiting has waited (cancelled ones are left out)."""
        return [since for since, waiter in self._waiting if not waiter.done()]

    def _oldest_wait(self) -> float:
        waiting = self._still_waiting()
        return time.monotonic() - waiting[0] if waiting else 0.0

    async def complete(self, prompt: str, parameters: GenerationParameters) -> Completion:
        """The completion, from the least loaded server that answers.

        A call that fails on a server that still answers (a 429 storm, a hung call) raises
        `BackendUnavailable`: the request is handed back and tried again later. A call
        that fails because the server is gone waits for one that answers and tries there."""
        while True:
            member = await self._acquire()
            try:
                return await self._call(member, prompt, parameters)
            except BackendUnavailable as error:
                if await self._still_answers(member, error):
                    raise

    async def _call(self, member: Member, prompt: str, parameters: GenerationParameters) -> Completion:
        url = member.backend.url
        child(metrics.BACKEND_IN_FLIGHT, url).inc()
        started = time.perf_counter()
        outcome = "ok"
        try:
            completion = await member.backend.complete(prompt, parameters)
            if completion.prompt_tokens is not None:
                child(metrics.PROMPT_TOKENS, url).inc(completion.prompt_tokens)
            if completion.generated_tokens is not None:
                child(metrics.GENERATED_TOKENS, url).inc(completion.generated_tokens)
        except GenerationRejected:
            outcome = "rejected"
            raise
        except BackendUnavailable:
            outcome = "unavailable"
            raise
        finally:
            member.in_flight -= 1
            self._wake(1)
            child(metrics.BACKEND_IN_FLIGHT, url).dec()
            child(metrics.BACKEND_SECONDS, url).observe(time.perf_counter() - started)
            child(metrics.GENERATIONS, url, outcome).inc()
            retries = member.backend.retries
            child(metrics.RETRIES, url).inc(retries - member.retries_seen)
            member.retries_seen = retries
        # Calls to one server finish in bursts, and each freed slot wakes a waiting request.
        # Yield once, so that those requests reach the servers before this generation's
        # own post-processing (its cache write, its reply) runs.
        await asyncio.sleep(0)
        return completion

    async def _still_answers(self, member: Member, error: BackendUnavailable) -> bool:
        """After a failed call: does the server answer at all? If not, it leaves the rotation
        until its probe hears from it. The calls failing together ask once."""
        if not member.answers:
            return False
        if member.checking is None:
            member.checking = asyncio.ensure_future(_answers(member.backend))
        checking = member.checking
        try:
            answers = await asyncio.shield(checking)
        finally:
            if member.checking is checking and checking.done():
                member.checking = None
        if not answers and member.answers and member in self.members:
            member.answers = False
            log.warning("backend %s does not answer (%s); out of the pool until it does", member.backend.url, error)
            member.probe = asyncio.create_task(self._probe(member))
            self._report(f"no model server answers (last: {error})")
        return answers

    async def _probe(self, member: Member) -> None:
        """Ask a server that stopped answering what it serves, with growing pauses, until it
        answers with the pool's model; then it takes requests again."""
        delay = PROBE_FIRST
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, PROBE_MAX)
            try:
                info = await member.backend.describe()
            except BackendUnavailable:
                continue
            if info.model_id != self.model_id:
                url, served = member.backend.url, info.model_id
                log.warning("backend %s now serves %s, not %s: kept out", url, served, self.model_id)
                continue
            break
        member.answers, member.probe = True, None
        log.warning("backend %s answers again", member.backend.url)
        self._wake(member.limit)
        self._report("")

    def _report(self, reason: str) -> None:
        """Tell the gateway's health whether any server answers."""
        if self.health is None:
            return
        if any(member.answers for member in self.members):
            self.health.clear("model-server")
        else:
            self.health.report("model-server", reason or "no model server answers")

    def _stop_probe(self, member: Member) -> None:
        if member.probe is not None:
            member.probe.cancel()
            member.probe = None

    async def close(self) -> None:
        for member in self.members:
            self._stop_probe(member)


async def _answers(backend: CompletionBackend) -> bool:
    try:
        await backend.describe()
    except BackendUnavailable:
        return False
    return True


async def _describe_when_up(backend: CompletionBackend, patience: float) -> BackendInfo:
    deadline = time.monotonic() + patience
    delay = 0.05
    while True:
        try:
            return await backend.describe()
        except BackendUnavailable as error:
            if time.monotonic() + delay > deadline:
                raise
            if delay >= 1.0:  # quiet for the first second: a server starting beside us is normal
                log.info("waiting for backend %s: %s", backend.url, error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
