"""Shared by every test: the fixture files, the golden cases, and a nats-server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.nats import NatsServer

FIXTURES = Path(__file__).parent / "fixtures"
DATASET_MIRROR = FIXTURES / "datasets"


def golden(name: str) -> Any:
    return json.loads((FIXTURES / f"golden_{name}.json").read_text(encoding="utf-8"))


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server with JetStream of this test's own, stopped when the test ends."""
    server = NatsServer(tmp_path / "jetstream")
    server.start()
    try:
        yield server
    finally:
        server.stop()
