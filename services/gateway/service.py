"""What happens to a generation request: render, look up, generate on a miss, reply.

1. Render the model's chat template around the question, with the system message.
2. Look the (served model id, prompt, parameters) key up in this partition's RocksDB cache.
3. On a miss, ask the backend pool (a request already in flight for the same key is
   joined, not repeated), and store what the server said, errors it rejected the request
   with included. Offline, a miss goes to the dead letters instead, to be replayed later.
4. Reply to the scorer with the cleaned answer and the work item the request carried.
A backend that stays unavailable raises, and the worker hands the request back for
redelivery: an outage delays a job, it never records wrong results.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp
from jinja2 import TemplateError
from nats.aio.msg import Msg

from proto import Answer, GenerationReply, GenerationRequest
from proto import subjects as sub
from proto.subjects import ConsumerSpec

from ..backends.http import CompletionBackend
from ..backends.openai import OpenAICompletionsBackend
from ..backends.tgi import TGIBackend
from ..core.chat import ChatTurn, GenerationParameters, SystemMessageNotSupported, UnknownModel, clean_answer
from ..jobs import parameters_of, system_of
from ..models import chat_format_of, model_name
from ..runner import GenerationRejected
from ..runtime.bus import Bus, Outgoing, Reject
from ..runtime.service import ServiceBase
from . import metrics
from .cache import CachedGeneration, GenerationCache, cache_key
from .discovery import EndpointSliceWatcher, ServiceRef, discovery_api
from .pool import BackendPool

OPENAI_PREFIX = "openai+"
log = logging.getLogger("introspect")


def make_backend(spec: str, session: aiohttp.ClientSession) -> CompletionBackend:
    """`http://host:port` is a TGI server; `openai+http://host:port` an OpenAI-compatible one."""
    if spec.startswith(OPENAI_PREFIX):
        return OpenAICompletionsBackend(spec.removeprefix(OPENAI_PREFIX), session)
    return TGIBackend(spec, session)


class Gateway(ServiceBase):
    name = "gateway"
    accepts = (GenerationRequest,)

    def __init__(
        self,
        cache_dir: Path,
        backends: tuple[str, ...],
        partition: int = 0,
        backend_limit: int = 0,
        offline: bool = False,
        tgi_service: str | None = None,
        kubernetes_api: str | None = None,
        model: str | None = None,
    ) -> None:
        self.cache_dir = cache_dir
        self.backend_specs = backends
        self.partition = partition
        self.backend_limit = backend_limit
        self.tgi_service = tgi_service  # namespace/name[:port]: find its pods through the Kubernetes API
        self.kubernetes_api = kubernetes_api  # None: the in-cluster API server
        self.offline = offline or not (backends or tgi_service)
        # The model this gateway's servers run, as messages name it; None takes every model's
        # requests, which is right only where one model is served.
        self.model = None if model is None else model_name(model)
        self.watcher: EndpointSliceWatcher | None = None
        self.bus: Bus | None = None
        self.cache: GenerationCache | None = None
        self.pool: BackendPool | None = None
        self.session: aiohttp.ClientSession | None = None
        self.model_id = ""
        self._in_flight: dict[bytes, asyncio.Future[CachedGeneration]] = {}

    def consumer(self) -> ConsumerSpec:
        return sub.consumer_for("gateway", self.partition, self.model)

    async def start(self, bus: Bus) -> None:
        self.bus = bus
        self.cache = GenerationCache(self.cache_dir / f"partition-{self.partition}")
        if self.offline:
            # With no server to ask, the cache key needs the served model id from configuration.
            self.model_id = _offline_model_id(self.cache_dir)
            return
        session = self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        if self.tgi_service is not None:
            self.pool = BackendPool(limit=self.backend_limit, make_backend=lambda url: TGIBackend(url, session))
            self._watch(ServiceRef.parse(self.tgi_service))
            log.info("waiting for a ready pod of %s", self.tgi_service)
        else:
            self.pool = BackendPool([make_backend(spec, session) for spec in self.backend_specs], self.backend_limit)
            await self.pool.start()
        self.model_id = await self.pool.wait_ready()
        (self.cache_dir / "served-model").write_text(self.model_id + "\n", encoding="utf-8")

    def _watch(self, service: ServiceRef) -> None:
        """Follow the TGI pods of `service`; each change of the ready set updates the pool."""
        loop, pool = asyncio.get_running_loop(), self.pool
        assert pool is not None

        def on_change(urls: set[str]) -> None:  # called from the watcher's thread
            loop.call_soon_threadsafe(lambda: asyncio.ensure_future(pool.update(urls)))

        self.watcher = EndpointSliceWatcher(discovery_api(self.kubernetes_api), service, on_change)
        self.watcher.start()

    async def close(self) -> None:
        if self.watcher is not None:
            self.watcher.close()
        if self.session is not None:
            await self.session.close()
        if self.cache is not None:
            self.cache.close()

    async def handle(self, request: GenerationRequest, msg: Msg) -> None:
        assert self.bus is not None and self.cache is not None
        work = request.work
        if self.model is not None and work.chat.model != self.model:
            # Only a model name that maps to the same subject token lands here: never answer
            # one model's question with another model's server.
            raise Reject(
                f"job {work.job_id}: a request for {work.chat.model!r} reached the gateway of {self.model!r}",
                "wrong-model",
            )
        try:
            chat_format = chat_format_of(work.chat.model, work.chat.template)
            prompt = chat_format.render([ChatTurn(request.message)], system_of(work.chat))
        except (UnknownModel, SystemMessageNotSupported, TemplateError) as error:
            raise Reject(f"job {work.job_id}, observation {work.idx}: {error}", "bad-request") from None
        parameters = parameters_of(work.chat.sampling)
        key = cache_key(self.model_id, prompt, parameters)

        generation = self.cache.get(key)
        cached = generation is not None
        if generation is not None:
            metrics.CACHE_HITS.inc()
        else:
            metrics.CACHE_MISSES.inc()
            if self.offline:
                raise Reject("offline: this generation is not in the cache", "offline-miss")
            generation = await self._generate_once(key, prompt, parameters)

        if generation.error is None:
            answer = Answer(clean_answer(generation.text, parameters.stop), generation.duration)
        else:
            answer = Answer("", generation.duration, generation.error)
        step = len(work.answers)
        reply = GenerationReply(answer=answer, work=work, cached=cached)
        await self.bus.publish([Outgoing(sub.REPLIES, reply, sub.reply_id(work.job_id, work.idx, step))])

    async def _generate_once(self, key: bytes, prompt: str, parameters: GenerationParameters) -> CachedGeneration:
        """Generate and cache; a request for a key already being generated waits for that one."""
        if key in self._in_flight:
            return await asyncio.shield(self._in_flight[key])
        future: asyncio.Future[CachedGeneration] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            generation = await self._generate(prompt, parameters)
            assert self.cache is not None
            self.cache.put(key, generation)
            future.set_result(generation)
            return generation
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as error:
            future.set_exception(error)
            future.exception()  # retrieved here, so a future nobody joined logs nothing
            raise
        finally:
            del self._in_flight[key]

    async def _generate(self, prompt: str, parameters: GenerationParameters) -> CachedGeneration:
        assert self.pool is not None
        try:
            completion = await self.pool.complete(prompt, parameters)
        except GenerationRejected as rejected:
            return CachedGeneration("", 0.0, str(rejected))
        return CachedGeneration(completion.text, completion.seconds)


def _offline_model_id(cache_dir: Path) -> str:
    served = cache_dir / "served-model"
    if not served.is_file():
        raise SystemExit(f"gateway: offline, but {served} does not say which model the cache holds")
    return served.read_text(encoding="utf-8").strip()
