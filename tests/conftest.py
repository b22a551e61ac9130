"""Shared by every test: the fixture files, the golden cases, and a nats-server."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from services.local import LocalPipeline
from services.standin.server import StandInSettings, create_app
from tests.support.nats import NatsServer

FIXTURES = Path(__file__).parent / "fixtures"
DATASET_MIRROR = FIXTURES / "datasets"


def golden(name: str) -> Any:
    return json.loads((FIXTURES / f"golden_{name}.json").read_text(encoding="utf-8"))


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port where nothing listens, and nothing can start to while the test runs:
    bound here and never listening, so a connection is refused. (A port found free and let
    go could be taken by any process before the test connects to it: it once answered 404.)"""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server with JetStream of this test's own, stopped when the test ends."""
    server = NatsServer(tmp_path / "jetstream")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[LocalPipeline]:
    """The whole pipeline on this machine, as `introspect run` starts it: nats-server, the
    stand-in and the four services as processes, stopped when the test ends."""
    with LocalPipeline(tmp_path / "run") as running:
        yield running


@pytest.fixture
async def standin_url() -> AsyncIterator[str]:
    """The stand-in's HTTP server in this test's event loop, at its URL."""
    server = TestServer(create_app(StandInSettings()), host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("/")).rstrip("/")
    await server.close()
