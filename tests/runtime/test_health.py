"""What a service says of its health: problems reported and cleared, `/healthz` and the metric."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

from services.runtime.health import Health
from services.runtime.metrics import health_app


def _problem(stage: str, problem: str) -> float | None:
    return REGISTRY.get_sample_value("introspect_problem", {"stage": stage, "problem": problem})


async def test_healthz_says_each_problem_until_it_passes(caplog) -> None:
    health = Health("probe-test")
    async with TestClient(TestServer(health_app(health.reasons))) as client:
        assert (await client.get("/healthz")).status == 200
        health.report("store", "cannot write (No space left on device)")
        health.report("store", "cannot write (No space left on device)")  # again: logged once
        health.report("cache", "cannot store", blocks_work=False)
        response = await client.get("/healthz")
        assert response.status == 503
        assert await response.text() == (
            "not ready\ncache: cannot store\nstore: cannot write (No space left on device)\n"
        )
        assert not health.can_work  # the store blocks work; the cache alone would not
        assert _problem("probe-test", "store") == 1 and _problem("probe-test", "cache") == 1
        health.clear("store")
        assert health.can_work and (await client.get("/healthz")).status == 503
        health.clear("cache")
        assert (await client.get("/healthz")).status == 200
        assert _problem("probe-test", "store") == 0
    lines = [r.getMessage() for r in caplog.records if "probe-test" in r.getMessage()]
    assert lines == [
        "probe-test: store: cannot write (No space left on device); taking no new work until it passes",
        "probe-test: cache: cannot store; working on",
        "probe-test: store: recovered",
        "probe-test: cache: recovered",
    ]
