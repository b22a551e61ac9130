"""The gateway: generation requests in, answers out, through the one generation path.

What happens to a generation request (`Gateway.handle`):
1. Check it is for this gateway's model, and build the model it names (chat template,
   system message, sampling: `wire.chat_model_of`).
2. `ChatModel.generate` (services/generation.py): render the prompt, complete it through
   `CachedCompletions` (gateway/cache.py: the (served model id, prompt, parameters) key in
   this partition's RocksDB; on a miss the backend pool, `pool.py`, joined if the same key
   is already in flight; what the server said is stored, rejections included), clean the
   answer. Offline, a miss goes to the dead letters instead, to be replayed later.
3. Take the observation's next step (`steps.ReplayedWork`, as the scorer takes its first):
   the work item with the answer added (and where this gateway's answers come from,
   `AnswerSource`, for result provenance) replays the task to its next question or its end.
   While the next question is this partition's and its cache holds the answer, that step is
   taken here too (`CachedCompletions.from_cache`, no server asked). What is published is
   the next question, for the partition that owns it, or the scored result, for the aggregator.
A server that is gone is waited for (the pool asks it until it answers; the gateway takes
no new work meanwhile); one that answers but not this request raises, and the worker hands
the request back for redelivery: an outage delays a job, it never records wrong results.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
from jinja2 import TemplateError

from proto import AnswerSource, GenerationRequest, WorkItem
from proto import subjects as sub
from proto.messages import encode_part
from proto.subjects import ConsumerSpec

from ..backends import engine_spec, make_backend
from ..backends.contract import GENERATION_TIMEOUT, Engine
from ..core.chat import SystemMessageNotSupported, UnknownModel
from ..core.replay import Generation
from ..generation import ChatModel
from ..models import model_name
from ..provenance import answer_source, cache_only
from ..runtime.handlers import Outgoing, Publisher, Reject
from ..runtime.lock import FolderLock
from ..runtime.ownership import Claim, folder_owner
from ..runtime.service import ServiceBase
from ..runtime.settings import InvalidSettings
from ..steps import ReplayedWork
from ..wire import answer_of, chat_model_of
from . import metrics
from .cache import CachedCompletions, CacheMiss, GenerationCache
from .pool import BackendPool

if TYPE_CHECKING:  # the Kubernetes client is imported only by a gateway that discovers its servers
    from .discovery import EndpointSliceWatcher, ServiceRef

log = logging.getLogger("introspect")


class Gateway(ServiceBase):
    name = "gateway"
    accepts = (GenerationRequest,)

    def __init__(
        self,
        cache_dir: Path,
        backends: tuple[str, ...],
        *,
        partition: int = 0,
        partitions: int = 1,
        backend_limit: int = 0,
        generation_timeout: float = GENERATION_TIMEOUT,
        offline: bool = False,
        cache_on_damage: str = "refuse",
        model_service: str | None = None,
        model_engine: Engine = "tgi",
        kubernetes_api: str | None = None,
        model: str | None = None,
    ) -> None:
        self.cache_dir = cache_dir
        self.backend_specs = backends
        self.partition = partition
        self.partitions = partitions  # the model's partitions: where the next question of an observation goes
        self.backend_limit = backend_limit
        self.generation_timeout = generation_timeout
        self.cache_on_damage = cache_on_damage
        # namespace/name[:port]: find its model server pods through the Kubernetes API; they
        # speak `model_engine`'s protocol
        self.model_service = model_service
        self.model_engine = model_engine  # checked where settings are read (runtime/settings.py)
        self.kubernetes_api = kubernetes_api  # None: the in-cluster API server
        if not (offline or backends or model_service):
            raise InvalidSettings(
                "the gateway has no model server: give --backend URL (INTROSPECT_BACKENDS) or --model-service "
                "(INTROSPECT_MODEL_SERVICE); --offline answers from its cache alone"
            )
        self.offline = offline or not (backends or model_service)
        # The model this gateway's servers run, as messages name it; None takes every model's
        # requests, which is right only where one model is served.
        self.model = None if model is None else model_name(model)
        self.watcher: EndpointSliceWatcher | None = None
        self.cache: GenerationCache | None = None
        self.pool: BackendPool | None = None
        self.session: aiohttp.ClientSession | None = None
        self.completions: CachedCompletions | None = None
        self.lock: FolderLock | None = None
        # By the encoded Chat (jobs share a handful): asking the cache then the servers, and the cache alone.
        self._models: dict[bytes, tuple[ChatModel, ChatModel]] = {}
        self.source: AnswerSource | None = None  # where its answers come from; set by start

    def consumer(self) -> ConsumerSpec:
        return sub.consumer_for("gateway", self.partition, self.model)

    def claim(self) -> Claim:
        """Its partition, for this cache folder alone: a second gateway on the partition with
        another folder would take half its requests and split its cache."""
        model = "all-models" if self.model is None else sub.model_route(self.model)
        return folder_owner(self.cache_dir / f"partition-{self.partition}", f"gateway.{model}.{self.partition}")

    async def start(self, bus: Publisher) -> None:
        folder = self.cache_dir / f"partition-{self.partition}"
        # RocksDB locks the folder too, but says only "Resource temporarily unavailable".
        self.lock = FolderLock.beside(folder, f"the gateway cache {folder}")
        self.lock.acquire()
        self.cache = GenerationCache(folder, self.cache_on_damage)
        if self.offline:
            # With no server to ask, the cache key needs the served model id from configuration.
            self.completions = CachedCompletions(self.cache, _offline_model_id(self.cache_dir), None)
            self.source = cache_only(self.completions.model_id)
            return
        session = self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        if self.model_service is not None:
            timeout, engine = self.generation_timeout, self.model_engine
            self.pool = BackendPool(
                limit=self.backend_limit,
                make_backend=lambda url: make_backend(engine_spec(engine, url), session, timeout),
                health=self.health,
                model=self.model or "all-models",
            )
            from .discovery import ServiceRef

            self._watch(ServiceRef.parse(self.model_service))
            log.info("waiting for a ready %s pod of %s", engine, self.model_service)
        else:
            backends = [make_backend(spec, session, self.generation_timeout) for spec in self.backend_specs]
            self.pool = BackendPool(backends, self.backend_limit, health=self.health, model=self.model or "all-models")
            await self.pool.start()
        model_id = await self.pool.wait_ready()
        (self.cache_dir / "served-model").write_text(model_id + "\n", encoding="utf-8")
        self.completions = CachedCompletions(self.cache, model_id, self.pool.complete, self.health)
        self.source = answer_source(self.backend_specs, model_id, service=self.model_service, engine=self.model_engine)

    def _watch(self, service: ServiceRef) -> None:
        """Follow the model server pods of `service`; each change of the ready set updates the pool."""
        loop, pool = asyncio.get_running_loop(), self.pool
        assert pool is not None

        def on_change(urls: set[str]) -> None:  # called from the watcher's thread
            loop.call_soon_threadsafe(lambda: asyncio.ensure_future(pool.update(urls)))

        from .discovery import EndpointSliceWatcher, discovery_api

        self.watcher = EndpointSliceWatcher(discovery_api(self.kubernetes_api), service, on_change)
        self.watcher.start()

    async def close(self) -> None:
        if self.watcher is not None:
            self.watcher.close()
        if self.pool is not None:
            await self.pool.close()
        if self.completions is not None:
            self.completions.close()
        if self.session is not None:
            await self.session.close()
        if self.cache is not None:
            self.cache.close()
        if self.lock is not None:
            self.lock.release()

    async def handle(self, request: GenerationRequest) -> list[Outgoing]:
        work = request.work
        if self.model is not None and work.chat.model != self.model:
            # Only a model name that maps to the same subject token lands here: never answer
            # one model's question with another model's server.
            raise Reject(
                f"job {work.job_id}: a request for {work.chat.model!r} reached the gateway of {self.model!r}",
                "wrong-model",
            )
        asking, from_cache = self._chat_models(work)
        replayed = ReplayedWork.asking(work)  # bad work is refused before the server is asked
        try:
            generation = await self._generate(asking, request.message, work)
        except CacheMiss as miss:
            metrics.CACHE_MISSES.inc()
            raise Reject(str(miss), "offline-miss") from None
        (metrics.CACHE_HITS if generation.cached else metrics.CACHE_MISSES).inc()
        replayed.answer(answer_of(generation), self.source)
        # The next step is taken here (services/steps.py), and so is every step after it whose
        # question this partition's cache already answers: a re-run of a finished experiment
        # sends one request per observation instead of two messages per generation. The
        # replay runs on from answer to answer; it is not started again for each.
        mine = sub.generation_subject(work.chat.model, self.partition)
        onward = replayed.next_message(self.partitions)
        while isinstance(onward.message, GenerationRequest) and onward.subject == mine:
            try:
                generation = await self._generate(from_cache, onward.message.message, work)
            except CacheMiss:
                break  # the model is needed: the question goes through the stream, to this gateway
            metrics.CACHE_HITS.inc()
            replayed.answer(answer_of(generation), self.source)
            onward = replayed.next_message(self.partitions)
        return [onward]

    @staticmethod
    async def _generate(model: ChatModel, message: str, work: WorkItem) -> Generation:
        try:
            return await model.generate(message)
        except (SystemMessageNotSupported, TemplateError) as error:
            raise Reject(f"job {work.job_id}, observation {work.idx}: {error}", "bad-request") from None

    def _chat_models(self, work: WorkItem) -> tuple[ChatModel, ChatModel]:
        """The model a request names, built once per distinct chat settings: asking the cache
        and then the servers, and asking the cache alone."""
        key = encode_part(work.chat)
        models = self._models.get(key)
        if models is None:
            if len(self._models) >= 256:  # many custom system messages: start afresh
                self._models.clear()
            assert self.completions is not None
            try:
                asking = chat_model_of(work.chat, self.completions)
            except UnknownModel as error:
                raise Reject(f"job {work.job_id}, observation {work.idx}: {error}", "bad-request") from None
            models = self._models[key] = (asking, dataclasses.replace(asking, complete=self.completions.from_cache))
        return models


def _offline_model_id(cache_dir: Path) -> str:
    served = cache_dir / "served-model"
    if not served.is_file():
        raise SystemExit(f"gateway: offline, but {served} does not say which model the cache holds")
    return served.read_text(encoding="utf-8").strip()
