"""The aggregator's store on a full disk (a real RocksDB, a real write failure): the problem
is reported, the result in hand waits instead of being lost or redelivered, and writing
resumes once there is room, with nothing stored before the failure lost."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

from prometheus_client import REGISTRY

from services.aggregator.service import Aggregator
from services.runtime.memory import MemoryBus
from tests.aggregator.test_handlers import _manifest, _result
from tests.support.full_disk import files_limited_to

ROWS = 200
STORE_PROBLEM = {"stage": "aggregator", "problem": "store"}


async def _until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_a_full_disk_pauses_the_aggregator_and_it_resumes_with_every_record(tmp_path: Path) -> None:
    aggregator, bus = Aggregator(tmp_path), MemoryBus()
    await aggregator.start(bus)
    recovery = aggregator.recovery
    assert recovery is not None
    recovery.first = recovery.most = 0.05
    half = ROWS // 2
    try:
        await bus.deliver(aggregator, _manifest("j1", ROWS))
        for idx in range(half):
            await bus.deliver(aggregator, _result("j1", idx))
        # The disk is full: the next record cannot be logged, and reopening the store (which
        # writes new files) fails too, attempt after attempt.
        with files_limited_to(1_000) as limit_files:
            waiting = asyncio.ensure_future(bus.deliver(aggregator, _result("j1", half)))
            await _until(lambda: recovery.failed_reopens >= 3)
            assert not waiting.done()  # held: neither acknowledged nor handed back
            assert not aggregator.health.can_work  # the worker takes no new messages
            (reason,) = aggregator.health.reasons()  # what /healthz says, beside its 503
            assert reason.startswith("store: cannot write") and "File too large" in reason
            assert REGISTRY.get_sample_value("introspect_problem", STORE_PROBLEM) == 1
            limit_files(None)  # room again
            await asyncio.wait_for(waiting, 30)
        assert aggregator.health.can_work and aggregator.health.reasons() == []
        assert REGISTRY.get_sample_value("introspect_problem", STORE_PROBLEM) == 0
        for idx in range(half + 1, ROWS):
            await bus.deliver(aggregator, _result("j1", idx))
        assert aggregator.jobs["j1"].complete and aggregator.jobs["j1"].received == ROWS
        result = json.loads(Path(aggregator.jobs["j1"].status()["result_file"]).read_text())
        assert result["results"]["total"] == ROWS
    finally:
        await aggregator.close()
    restarted = Aggregator(tmp_path)  # what was stored before and after the failure is all there
    await restarted.start(bus)
    try:
        assert restarted.store is not None and sum(1 for _ in restarted.store.records("j1")) == ROWS
    finally:
        await restarted.close()
    assert bus.dead_letters == []
