"""The gateway's parts: the RocksDB cache, the backend pool, the OpenAI-compatible backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import msgpack
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import REGISTRY

from services.backends.contract import BackendInfo, BackendUnavailable, Completion, GenerationRejected
from services.backends.openai import OpenAICompletionsBackend
from services.backends.tgi import RetryPolicy, TGIBackend
from services.core.chat import LLAMA2, NO_SYSTEM, ChatTurn, GenerationParameters, generation_defaults
from services.gateway.cache import CachedCompletions, CacheMiss, GenerationCache, cache_key
from services.gateway.pool import BackendPool, PoolMisconfigured
from services.standin import standin_answer
from services.standin.server import STANDIN_MODEL_ID, StandInSettings, create_app

PARAMETERS = generation_defaults(LLAMA2, seed=0)
PROMPTS = [LLAMA2.render([ChatTurn(f"Is the following review positive or negative? Review {i}.")]) for i in range(40)]


async def _serve(settings: StandInSettings | None = None) -> TestServer:
    server = TestServer(create_app(settings or StandInSettings()), host="127.0.0.1")
    await server.start_server()
    return server


def _url(server: TestServer) -> str:
    return str(server.make_url("/")).rstrip("/")


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def test_the_cache_keeps_answers_and_errors_and_one_process_alone_opens_it(tmp_path) -> None:
    cache = GenerationCache(tmp_path / "cache")
    cache.put(b"a", Completion("positive ", 0.25, prompt_tokens=12, generated_tokens=2))
    cache.put_rejection(b"b", "422: too long")
    with pytest.raises(Exception, match="lock"):
        GenerationCache(tmp_path / "cache")  # RocksDB's lock: one process per partition folder
    cache.close()
    reopened = GenerationCache(tmp_path / "cache")
    assert reopened.get(b"a") == Completion("positive ", 0.25, cached=True)  # raw text, server seconds
    with pytest.raises(GenerationRejected, match="422: too long") as rejected:
        reopened.get(b"b")
    assert rejected.value.cached
    assert reopened.get(b"c") is None
    reopened.close()


class _CountingServer:
    """A completion function that counts its calls and can be held until released."""

    def __init__(self, reject: bool = False) -> None:
        self.calls = 0
        self.reject = reject
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, prompt: str, parameters: GenerationParameters) -> Completion:
        self.calls += 1
        await self.release.wait()
        if self.reject:
            raise GenerationRejected("422: too long")
        return Completion(prompt.upper(), 0.5)


async def test_cached_completions_ask_the_server_once_per_key(tmp_path) -> None:
    server, cache = _CountingServer(), GenerationCache(tmp_path / "cache")
    completions = CachedCompletions(cache, "m", server)
    first = await completions("a prompt", PARAMETERS)
    again = await completions("a prompt", PARAMETERS)
    assert (first.text, first.cached, again.text, again.cached) == ("A PROMPT", False, "A PROMPT", True)
    assert again.seconds == 0.5 and server.calls == 1
    await completions("a prompt", generation_defaults(LLAMA2, seed=1))  # other parameters: another key
    assert server.calls == 2
    await CachedCompletions(cache, "other model", server)("a prompt", PARAMETERS)
    assert server.calls == 3  # the served model is part of the key
    cache.close()


async def test_concurrent_requests_for_one_key_share_one_completion(tmp_path) -> None:
    server, cache = _CountingServer(), GenerationCache(tmp_path / "cache")
    server.release.clear()
    completions = CachedCompletions(cache, "m", server)
    waiting = [asyncio.create_task(completions("same", PARAMETERS)) for _ in range(5)]
    await asyncio.sleep(0.01)
    server.release.set()
    results = await asyncio.gather(*waiting)
    assert server.calls == 1 and {r.text for r in results} == {"SAME"}
    cache.close()


async def test_a_rejection_is_remembered_and_offline_misses_are_refused(tmp_path) -> None:
    server, cache = _CountingServer(reject=True), GenerationCache(tmp_path / "cache")
    completions = CachedCompletions(cache, "m", server)
    for expect_cached in (False, True):
        with pytest.raises(GenerationRejected, match="422") as rejected:
            await completions("too long", PARAMETERS)
        assert rejected.value.cached is expect_cached
    assert server.calls == 1
    offline = CachedCompletions(cache, "m", None)
    with pytest.raises(GenerationRejected):
        await offline("too long", PARAMETERS)  # a remembered rejection is an answer, offline too
    with pytest.raises(CacheMiss, match="offline"):
        await offline("never asked", PARAMETERS)
    cache.close()


def test_the_cache_key_is_model_prompt_and_parameters() -> None:
    key = cache_key("m", "prompt", PARAMETERS)
    assert key == cache_key("m", "prompt", generation_defaults(LLAMA2, seed=0))
    assert key != cache_key("other-model", "prompt", PARAMETERS)
    assert key != cache_key("m", "prompt ", PARAMETERS)
    assert key != cache_key("m", "prompt", generation_defaults(LLAMA2, seed=1))


async def test_the_pool_keeps_each_backend_at_the_limit_its_info_gives(session) -> None:
    servers = [await _serve(StandInSettings(latency=0.02, max_concurrent=4)) for _ in range(2)]
    try:
        pool = BackendPool([TGIBackend(_url(server), session) for server in servers])
        await pool.start()
        assert pool.model_id == STANDIN_MODEL_ID and pool.capacity == 8
        for server in servers:
            assert REGISTRY.get_sample_value("introspect_backend_limit", {"backend": _url(server)}) == 4
        answers = await asyncio.gather(*(pool.complete(prompt, PARAMETERS) for prompt in PROMPTS))
        assert [answer.text.removesuffix("[INST]") for answer in answers] == [standin_answer(p) for p in PROMPTS]
        # TGI's token headers (the stand-in counts words): the pool counts them per backend.
        assert all(answer.prompt_tokens == len(p.split()) for answer, p in zip(answers, PROMPTS, strict=True))
        assert all(answer.generated_tokens == len(answer.text.split()) for answer in answers)
        for server in servers:
            async with session.get(f"{_url(server)}/stand-in/stats") as response:
                stats = await response.json()
            assert stats.get("overloaded", 0) == 0  # never pushed past its limit: no 429 at all
            assert stats["generated"] > 0 and stats["peak_in_flight"] <= 4
    finally:
        for server in servers:
            await server.close()


async def test_a_configured_limit_overrides_info(session) -> None:
    server = await _serve(StandInSettings(latency=0.01, max_concurrent=100))
    try:
        pool = BackendPool([TGIBackend(_url(server), session)], limit=3)
        await pool.start()
        await asyncio.gather(*(pool.complete(prompt, PARAMETERS) for prompt in PROMPTS))
        async with session.get(f"{_url(server)}/stand-in/stats") as response:
            assert (await response.json())["peak_in_flight"] <= 3
    finally:
        await server.close()


async def test_backends_serving_different_models_are_refused(session) -> None:
    server = await _serve()
    try:
        tgi = TGIBackend(_url(server), session)
        other = OpenAICompletionsBackend(_url(server), session, model="some-other-model")
        with pytest.raises(PoolMisconfigured, match="different models"):
            await BackendPool([tgi, other]).start()
    finally:
        await server.close()
    with pytest.raises(PoolMisconfigured, match="no backend"):
        BackendPool([])


async def test_the_openai_backend_gets_the_stand_in_answers(session) -> None:
    server = await _serve(StandInSettings(max_input_chars=300))
    try:
        backend = OpenAICompletionsBackend(_url(server) + "/v1", session, RetryPolicy(max_attempts=2))
        assert (await backend.describe()).model_id == STANDIN_MODEL_ID
        short = LLAMA2.render([ChatTurn("Is it positive?")], NO_SYSTEM)
        answer = await backend.complete(short, PARAMETERS)
        assert answer.text == standin_answer(short)
        assert (answer.prompt_tokens, answer.generated_tokens) == (len(short.split()), len(answer.text.split()))
        with pytest.raises(GenerationRejected, match="422"):
            await backend.complete(PROMPTS[0] * 3, PARAMETERS)
    finally:
        await server.close()


class GatedBackend:
    """A backend that answers a prompt only when the test opens its gate."""

    url = "gated://one"
    retries = 0

    def __init__(self) -> None:
        self.gates: dict[str, asyncio.Event] = {}
        self.started: list[str] = []

    async def describe(self) -> BackendInfo:
        return BackendInfo("gated-model", max_concurrent=1)

    async def complete(self, prompt: str, parameters: GenerationParameters) -> Completion:
        self.started.append(prompt)
        await self.gates.setdefault(prompt, asyncio.Event()).wait()
        return Completion(prompt.upper())


async def test_a_freed_slot_is_refilled_before_the_finished_call_s_caller_goes_on() -> None:
    backend = GatedBackend()
    pool = BackendPool([backend])
    await pool.start()

    async def first_caller() -> list[str]:
        await pool.complete("a", PARAMETERS)
        return list(backend.started)  # what had reached the server when the caller went on

    first = asyncio.ensure_future(first_caller())
    await asyncio.sleep(0)
    second = asyncio.ensure_future(pool.complete("b", PARAMETERS))
    await asyncio.sleep(0.01)
    backend.gates["a"].set()
    # The server is kept busy first; the finished generation's cache write and reply wait.
    assert await asyncio.wait_for(first, 2) == ["a", "b"]
    backend.gates["b"].set()
    assert (await asyncio.wait_for(second, 2)).text == "B"


async def test_a_freed_slot_goes_to_the_oldest_waiter_and_survives_its_cancellation() -> None:
    backend = GatedBackend()
    pool = BackendPool([backend])
    await pool.start()
    first = asyncio.ensure_future(pool.complete("a", PARAMETERS))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(pool.complete("b", PARAMETERS))
    third = asyncio.ensure_future(pool.complete("c", PARAMETERS))
    await asyncio.sleep(0.01)
    assert backend.started == ["a"]  # one slot: the others wait, in order
    backend.gates["a"].set()
    await asyncio.sleep(0)  # "a" finishes and hands its slot to "b" ...
    assert pool.members[0].in_flight == 0 and not backend.started[1:]
    second.cancel()  # ... which is cancelled before it runs: the slot must pass on to "c"
    backend.gates.setdefault("c", asyncio.Event()).set()
    assert (await asyncio.wait_for(third, 2)).text == "C"
    assert (await first).text == "A"
    assert backend.started == ["a", "c"] and second.cancelled()


async def test_a_server_answering_null_is_never_cached(tmp_path) -> None:
    from aiohttp import web

    async def info(_: web.Request) -> web.Response:
        return web.json_response({"model_id": "m", "max_concurrent_requests": 4})

    async def generate(_: web.Request) -> web.Response:
        return web.json_response({"generated_text": None})

    app = web.Application()
    app.add_routes([web.get("/info", info), web.post("/generate", generate)])
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    cache = GenerationCache(tmp_path / "cache")
    try:
        async with aiohttp.ClientSession() as session:
            backend = TGIBackend(_url(server), session)
            completions = CachedCompletions(cache, "m", backend.complete)
            with pytest.raises(BackendUnavailable, match="an answer without generated_text"):
                await completions("a prompt", PARAMETERS)  # the worker hands the request back
            assert cache.get(cache_key("m", "a prompt", PARAMETERS)) is None  # and nothing was stored
    finally:
        cache.close()
        await server.close()


def test_an_unreadable_cache_entry_is_a_miss(tmp_path) -> None:
    cache = GenerationCache(tmp_path / "cache")
    cache.db[b"null"] = msgpack.packb([None, 0.0, None])  # what an older version cached from a null answer
    cache.db[b"garbage"] = b"\xc1\xc1\xc1"
    cache.db[b"short"] = msgpack.packb(["text only"])
    assert cache.get(b"null") is None and cache.get(b"garbage") is None and cache.get(b"short") is None
    cache.put(b"null", Completion("positive", 0.5))  # asked again, stored anew
    assert cache.get(b"null") == Completion("positive", 0.5, cached=True)
    cache.close()


async def test_an_answer_is_used_even_when_the_cache_cannot_store_it(tmp_path) -> None:
    class FullDisk(GenerationCache):
        def _put(self, key: bytes, text: str, seconds: float, rejected: str | None) -> None:
            raise OSError(28, "No space left on device")

    server, cache = _CountingServer(), FullDisk(tmp_path / "cache")
    completions = CachedCompletions(cache, "m", server)
    assert (await completions("a prompt", PARAMETERS)).text == "A PROMPT"  # delivered, not thrown away
    assert cache.get(cache_key("m", "a prompt", PARAMETERS)) is None and server.calls == 1
    cache.close()


async def test_a_full_disk_is_reported_answers_flow_and_the_cache_stores_again_once_there_is_room(tmp_path) -> None:
    """A real RocksDB meeting a real write failure: every answer is still delivered, the
    `cache` problem is reported (without stopping work), and the reopened cache stores
    again once there is room, keeping what it held."""
    from services.runtime.health import Health
    from tests.support.full_disk import files_limited_to

    server, cache, health = _CountingServer(), GenerationCache(tmp_path / "cache"), Health("gateway")
    completions = CachedCompletions(cache, "m", server, health)
    assert completions.recovery is not None
    completions.recovery.first = completions.recovery.most = 0.05
    failures = REGISTRY.get_sample_value("introspect_cache_write_failures_total") or 0
    try:
        for i in range(40):  # its write-ahead log past 1,000 bytes
            await completions(f"before {i}", PARAMETERS)
        with files_limited_to(1_000) as limit_files:
            answers = [await completions(f"during {i}", PARAMETERS) for i in range(3)]
            assert [a.text for a in answers] == ["DURING 0", "DURING 1", "DURING 2"]  # delivered all the same
            assert REGISTRY.get_sample_value("introspect_cache_write_failures_total") == failures + 3
            (reason,) = health.reasons()
            assert reason.startswith("cache: cannot write") and "File too large" in reason
            assert health.can_work  # answers flow: the gateway keeps taking work
            limit_files(None)
            async with asyncio.timeout(30):
                while health.problems:  # the cache is reopened until it writes
                    await asyncio.sleep(0.01)
        await completions("after", PARAMETERS)
        for prompt, kept in [("before 0", True), ("before 39", True), ("during 0", False), ("after", True)]:
            assert (cache.get(cache_key("m", prompt, PARAMETERS)) is not None) is kept, prompt
    finally:
        completions.close()
        cache.close()


async def test_a_call_the_server_never_answers_is_given_up_after_two_timeouts(session) -> None:
    """Not eight attempts of the whole timeout each (80 minutes at 600 s) holding a slot:
    two, then the request is handed back to be tried again later."""
    server = await _serve(StandInSettings(hang_every=1))  # takes every request, answers none
    try:
        backend = TGIBackend(_url(server), session, timeout=0.3)
        started = asyncio.get_running_loop().time()
        with pytest.raises(BackendUnavailable, match=r"no answer in 0.3 s, 2 times"):
            await backend.complete(PROMPTS[0], PARAMETERS)
        assert asyncio.get_running_loop().time() - started >= 0.6
        assert backend.retries == 1
    finally:
        await server.close()


async def test_hung_calls_free_their_slot_and_are_tried_again(session) -> None:
    """Every other request hangs; with one slot, each hung call costs one timeout, then the
    slot serves the retry and the rest: every prompt gets its answer."""
    server = await _serve(StandInSettings(hang_every=2))
    try:
        pool = BackendPool([TGIBackend(_url(server), session, timeout=0.3)], limit=1)
        await pool.start()
        answers = await asyncio.gather(*(pool.complete(prompt, PARAMETERS) for prompt in PROMPTS[:6]))
        assert [a.text.removesuffix("[INST]") for a in answers] == [standin_answer(p) for p in PROMPTS[:6]]
        async with session.get(f"{_url(server)}/stand-in/stats") as response:
            stats = await response.json()
        # Requests 2, 4, 6, 8 and 10 hung; each prompt's next request was answered.
        assert stats["hung"] == 5 and stats["generated"] == 6
    finally:
        await server.close()


def test_a_cache_rocksdb_cannot_open_is_refused_or_set_aside_as_asked(tmp_path) -> None:
    from services.runtime.storage import StoreDamaged

    folder = tmp_path / "partition-0"
    cache = GenerationCache(folder)
    cache.db[b"key"] = msgpack.packb(("an answer", 0.5, None))
    cache.close()
    next(folder.glob("MANIFEST-*")).write_bytes(b"not a manifest")
    with pytest.raises(StoreDamaged, match=r"cannot be opened \(Corruption: .*INTROSPECT_CACHE_ON_DAMAGE=set-aside"):
        GenerationCache(folder)
    fresh = GenerationCache(folder, on_damage="set-aside")
    try:
        assert fresh.get(b"key") is None  # empty: the answer will be asked for again
        (aside,) = tmp_path.glob("partition-0.damaged-*")
        assert next(aside.glob("MANIFEST-*")).read_bytes() == b"not a manifest"  # kept for a look
    finally:
        fresh.close()


class SwitchableBackend:
    """A server that can be switched off: then its calls and its /info fail, as a pod that is
    gone does; or made to refuse calls while /info answers, as an overloaded one does."""

    url = "http://switchable"
    retries = 0

    def __init__(self) -> None:
        self.up, self.overloaded, self.described = True, False, 0

    async def describe(self) -> BackendInfo:
        self.described += 1
        if not self.up:
            raise BackendUnavailable(f"{self.url}: connection refused")
        return BackendInfo("switchable-model", max_concurrent=4)

    async def complete(self, prompt: str, parameters: GenerationParameters) -> Completion:
        if not self.up:
            raise BackendUnavailable(f"{self.url}: connection refused")
        if self.overloaded:
            raise BackendUnavailable(f"{self.url}: HTTP 429, 8 times")
        return Completion(prompt.upper())


@pytest.fixture
def quick_probes(monkeypatch) -> None:
    from services.gateway import pool as pool_module

    monkeypatch.setattr(pool_module, "PROBE_FIRST", 0.01)
    monkeypatch.setattr(pool_module, "PROBE_MAX", 0.01)


async def test_while_no_server_answers_requests_wait_and_the_gateway_takes_no_work(quick_probes) -> None:
    """An outage of any length spends no delivery: the calls wait for the server (their
    messages held), the gateway reports the problem, and they complete once it is back."""
    from services.runtime.health import Health

    backend, health = SwitchableBackend(), Health("gateway")
    pool = BackendPool([backend], health=health)
    await pool.start()
    backend.up = False
    calls = [asyncio.ensure_future(pool.complete(prompt, PARAMETERS)) for prompt in PROMPTS[:6]]
    async with asyncio.timeout(30):
        while backend.described < 5:  # asked once when the calls failed, then probed again and again
            await asyncio.sleep(0.01)
    assert not any(call.done() for call in calls)  # waiting, not failed
    assert not health.can_work  # the worker asks for no new messages
    (reason,) = health.reasons()
    assert reason.startswith("model-server: no model server answers") and "connection refused" in reason
    assert REGISTRY.get_sample_value("introspect_problem", {"stage": "gateway", "problem": "model-server"}) == 1
    backend.up = True
    answers = await asyncio.wait_for(asyncio.gather(*calls), 30)
    assert [answer.text for answer in answers] == [prompt.upper() for prompt in PROMPTS[:6]]
    assert health.can_work and health.reasons() == []
    assert REGISTRY.get_sample_value("introspect_problem", {"stage": "gateway", "problem": "model-server"}) == 0
    await pool.close()


class HeldBackend(SwitchableBackend):
    """A server whose calls wait until `release` is set (its limit, 4, from /info)."""

    url = "http://held"

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def complete(self, prompt: str, parameters: GenerationParameters) -> Completion:
        await self.release.wait()
        return await super().complete(prompt, parameters)


def _pool_gauges(model: str) -> tuple[float | None, float | None, float | None]:
    """(ready servers, requests waiting, oldest wait in seconds) as /metrics says them."""
    labels = {"model": model}
    return (
        REGISTRY.get_sample_value("introspect_backends_ready", labels),
        REGISTRY.get_sample_value("introspect_backend_waiting", labels),
        REGISTRY.get_sample_value("introspect_backend_wait_oldest_seconds", labels),
    )


async def test_the_pool_says_its_ready_servers_and_the_requests_waiting_for_room(quick_probes) -> None:
    """What the alerts read: how many servers of a model answer, how many requests wait for
    room at them and for how long; counted when scraped, from the pool itself."""
    backend = HeldBackend()
    pool = BackendPool([backend], model="gauged-model")
    assert _pool_gauges("gauged-model") == (0, 0, 0)  # no server yet
    await pool.start()
    calls = [asyncio.ensure_future(pool.complete(prompt, PARAMETERS)) for prompt in PROMPTS[:7]]
    async with asyncio.timeout(30):
        while pool.members[0].in_flight < 4:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    ready, waiting, oldest = _pool_gauges("gauged-model")
    assert ready == 1 and waiting == 3  # at its limit of 4; three wait for room
    assert oldest is not None and oldest >= 0.05
    assert REGISTRY.get_sample_value("introspect_backend_in_flight", {"backend": backend.url}) == 4
    assert REGISTRY.get_sample_value("introspect_backend_limit", {"backend": backend.url}) == 4
    calls[-1].cancel()  # a request given up while waiting no longer counts
    await asyncio.sleep(0)
    assert _pool_gauges("gauged-model")[1] == 2
    backend.release.set()
    await asyncio.wait_for(asyncio.gather(*calls[:-1]), 30)
    assert _pool_gauges("gauged-model") == (1, 0, 0)

    backend.up = False  # gone: out of the rotation once a call finds it so
    failing = asyncio.ensure_future(pool.complete(PROMPTS[0], PARAMETERS))
    async with asyncio.timeout(30):
        while pool.members[0].answers:
            await asyncio.sleep(0.01)
    assert _pool_gauges("gauged-model")[0] == 0
    backend.up = True
    await asyncio.wait_for(failing, 30)
    assert _pool_gauges("gauged-model")[0] == 1
    await pool.close()


async def test_a_server_that_answers_but_refuses_a_call_hands_it_back(quick_probes) -> None:
    """A 429 storm or a hung call: the server is there, so the request is handed back (to
    be tried again later) and the gateway stays ready."""
    from services.runtime.health import Health

    backend, health = SwitchableBackend(), Health("gateway")
    pool = BackendPool([backend], health=health)
    await pool.start()
    backend.overloaded = True
    with pytest.raises(BackendUnavailable, match="429"):
        await pool.complete(PROMPTS[0], PARAMETERS)
    assert health.can_work and health.reasons() == [] and pool.members[0].answers
    await pool.close()


async def test_a_password_in_a_backend_url_is_in_no_label_log_or_error(session, caplog, closed_port: int) -> None:
    """A model server behind basic auth, named with its password in the URL: the requests
    carry it, and nothing shown (metric labels, log lines, errors) does."""
    from prometheus_client import generate_latest

    server = await _serve()
    try:
        url = _url(server).replace("http://", "http://researcher:hunter2@")
        pool = BackendPool([TGIBackend(url, session)])
        await pool.start()
        answer = await pool.complete(PROMPTS[0], PARAMETERS)
        assert answer.text.removesuffix("[INST]") == standin_answer(PROMPTS[0])
        page = generate_latest().decode()
        assert 'backend="http://researcher:***@127.0.0.1' in page and "hunter2" not in page
    finally:
        await server.close()
    gone = TGIBackend(f"http://researcher:hunter2@127.0.0.1:{closed_port}", session,
                      retry=RetryPolicy(max_attempts=2, first_delay=0.01))  # fmt: skip
    for call in (gone.describe(), gone.complete(PROMPTS[0], PARAMETERS)):
        with pytest.raises(BackendUnavailable) as failed:
            await call
        assert "hunter2" not in str(failed.value) and "researcher:***@" in str(failed.value)
    assert "hunter2" not in caplog.text
