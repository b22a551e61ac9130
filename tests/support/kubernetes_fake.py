"""A local HTTP server that answers like the Kubernetes API for EndpointSlices (list, watch)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

PATH = "/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"


def endpoint_slice(
    name: str,
    port: int,
    ready: dict[str, bool],
    service: str = "tgi-llama",
    namespace: str = "gpu",
    port_name: str = "http",
) -> dict[str, Any]:
    """An EndpointSlice of `service`: its endpoints' addresses and readiness, and two ports."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": namespace, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address], "conditions": {"ready": up}} for address, up in ready.items()],
        "ports": [
            {"name": "metrics", "port": 9000, "protocol": "TCP"},
            {"name": port_name, "port": port, "protocol": "TCP"},
        ],
    }


class FakeKubernetes:
    """List and watch of EndpointSlices, as the API server answers them (JSON lines for a watch)."""

    def __init__(self) -> None:
        self.slices: dict[str, dict[str, Any]] = {}
        self.events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()  # None ends a watch
        self.selectors: list[str] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.selectors.append(request.query.get("labelSelector", ""))
        if request.query.get("watch") not in ("true", "True", "1"):
            items = list(self.slices.values())
            return web.json_response({"kind": "EndpointSliceList", "apiVersion": "discovery.k8s.io/v1",
                                      "metadata": {"resourceVersion": "1"}, "items": items})  # fmt: skip
        response = web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(request)
        while (event := await self.events.get()) is not None:
            await response.write(json.dumps(event).encode() + b"\n")
        return response

    def publish(self, kind: str, body: dict[str, Any]) -> None:
        self.events.put_nowait({"type": kind, "object": body})


@asynccontextmanager
async def serve_fake_kubernetes() -> AsyncIterator[tuple[FakeKubernetes, str]]:
    """The fake API server on a free loopback port: (the fake, its URL)."""
    fake = FakeKubernetes()
    app = web.Application()
    app.router.add_get(PATH, fake.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield fake, str(server.make_url("")).rstrip("/")
    finally:
        for _ in range(8):  # end the open watches, so the server can close
            fake.events.put_nowait(None)
        await server.close()
