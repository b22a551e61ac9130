"""Model server discovery against a local server that answers like the Kubernetes API for EndpointSlices."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import REGISTRY

from proto import GenerationRequest, ScoredResult
from services.backends.tgi import TGIBackend
from services.core.chat import LLAMA2, ChatTurn, generation_defaults
from services.gateway.discovery import EndpointSliceWatcher, ServiceRef, discovery_api, ready_urls
from services.gateway.pool import BackendPool
from services.gateway.service import Gateway
from services.runtime.memory import MemoryBus
from services.standin.server import StandInSettings, create_app
from tests.support.kubernetes_fake import FakeKubernetes, endpoint_slice, serve_fake_kubernetes
from tests.support.messages import work


@pytest.fixture
async def kubernetes() -> AsyncIterator[tuple[FakeKubernetes, str]]:
    async with serve_fake_kubernetes() as served:
        yield served


def test_ready_urls_take_the_named_port_and_skip_unready_endpoints() -> None:
    from kubernetes.client import ApiClient

    api_client = ApiClient()
    raw = endpoint_slice("a", 8080, {"10.0.0.1": True, "10.0.0.2": False, "fd00::3": True})
    parsed = api_client.deserialize(json.dumps(raw), "V1EndpointSlice", "application/json")
    assert ready_urls([parsed], "http") == {"http://10.0.0.1:8080", "http://[fd00::3]:8080"}
    assert ready_urls([parsed], "grpc") == set()
    assert ServiceRef.parse("gpu/tgi-llama:http") == ServiceRef("gpu", "tgi-llama", "http")
    with pytest.raises(ValueError, match="namespace/name"):
        ServiceRef.parse("tgi-llama")


async def _until(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition never held")


async def test_pods_that_come_and_go_change_the_pool(kubernetes) -> None:
    fake, host = kubernetes
    pods = [TestServer(create_app(StandInSettings(max_concurrent=4)), host="127.0.0.1") for _ in range(2)]
    for pod in pods:
        await pod.start_server()
    ports = [pod.port for pod in pods]
    fake.slices["tgi-a"] = endpoint_slice("tgi-a", ports[0], {"127.0.0.1": True})
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:
        pool = BackendPool(make_backend=lambda url: TGIBackend(url, session))

        def on_change(urls: set[str]) -> None:
            loop.call_soon_threadsafe(lambda: asyncio.ensure_future(pool.update(urls)))

        watcher = EndpointSliceWatcher(discovery_api(host), ServiceRef("gpu", "tgi-llama", "http"), on_change)
        watcher.start()
        try:
            members = lambda: sorted(m.backend.url for m in pool.members)  # noqa: E731
            await _until(lambda: members() == [f"http://127.0.0.1:{ports[0]}"])
            assert await pool.wait_ready() == "introspect-stand-in" and pool.capacity == 4
            assert fake.selectors[0] == "kubernetes.io/service-name=tgi-llama"

            fake.publish("ADDED", endpoint_slice("tgi-b", ports[1], {"127.0.0.1": True}))
            await _until(lambda: len(members()) == 2)
            parameters = generation_defaults(LLAMA2)
            prompts = [LLAMA2.render([ChatTurn(f"Question {i}?")]) for i in range(24)]
            await asyncio.gather(*(pool.complete(prompt, parameters) for prompt in prompts))
            for pod in pods:
                async with session.get(f"http://127.0.0.1:{pod.port}/stand-in/stats") as response:
                    stats = await response.json()
                assert stats["generated"] > 0 and stats["peak_in_flight"] <= 4  # both used, each at its limit

            fake.publish("MODIFIED", endpoint_slice("tgi-a", ports[0], {"127.0.0.1": False}))  # not ready
            await _until(lambda: members() == [f"http://127.0.0.1:{ports[1]}"])
            limits = {p: REGISTRY.get_sample_value("introspect_backend_limit", {"backend": f"http://127.0.0.1:{p}"})
                      for p in ports}  # fmt: skip
            assert limits == {ports[0]: None, ports[1]: 4}  # a pod that left has no series on the dashboard
            fake.publish("DELETED", endpoint_slice("tgi-b", ports[1], {"127.0.0.1": True}))
            await _until(lambda: members() == [])

            waiting = asyncio.ensure_future(pool.complete(prompts[0], parameters))
            await asyncio.sleep(0.2)
            assert not waiting.done()  # no pod: the request waits rather than fails
            fake.publish("MODIFIED", endpoint_slice("tgi-a", ports[0], {"127.0.0.1": True}))
            assert (await asyncio.wait_for(waiting, 10)).text
        finally:
            watcher.close()
            for pod in pods:
                await pod.close()


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
async def test_a_gateway_finds_its_engine_s_pods_and_speaks_their_protocol(kubernetes, tmp_path, engine) -> None:
    """The pods of a vLLM or SGLang model are found as TGI's are, asked at /v1/completions with
    that engine's body, and kept at the limit the chart gives (they report none)."""
    fake, host = kubernetes
    paths: list[str] = []

    @web.middleware
    async def seen(request: web.Request, handler):  # type: ignore[no-untyped-def]
        paths.append(request.path)
        return await handler(request)

    app = create_app(StandInSettings(max_concurrent=64))
    app.middlewares.append(seen)
    pod = TestServer(app, host="127.0.0.1")
    await pod.start_server()
    fake.slices["a"] = endpoint_slice("a", pod.port, {"127.0.0.1": True}, service=f"{engine}-llama")
    gateway = Gateway(tmp_path, (), backend_limit=12, model_service=f"gpu/{engine}-llama:http",
                      model_engine=engine, kubernetes_api=host, model="llama2-7b")  # fmt: skip
    bus = MemoryBus()
    try:
        await asyncio.wait_for(gateway.start(bus), 10)
        assert gateway.pool is not None and [m.limit for m in gateway.pool.members] == [12]
        request = GenerationRequest("What is the sentiment? Paragraph: A warm, funny film.", work())
        (reply,) = await bus.deliver(gateway, request)
        assert isinstance(reply.message, ScoredResult) and reply.message.record["error"] is None
        assert paths == ["/v1/models", "/v1/completions"]  # never TGI's /info or /generate
        assert gateway.source is not None and gateway.source.endpoint == f"gpu/{engine}-llama:http"
    finally:
        await gateway.close()
        await pod.close()
