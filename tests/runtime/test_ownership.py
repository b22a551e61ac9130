"""One owner per gateway partition, claimed in JetStream, against a real nats-server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.errors import OwnedElsewhere
from services.runtime.bus import Bus
from services.runtime.ownership import Ownership, folder_owner
from services.runtime.settings import Settings
from tests.support.nats import NatsServer


async def test_a_partition_has_one_owner_and_a_restart_on_its_folder_is_that_owner(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    bus = await Bus.open(Settings(nats_url=nats_server.url), "test")
    try:
        first = folder_owner(tmp_path / "a" / "partition-0", "gateway.m.0")
        second = folder_owner(tmp_path / "b" / "partition-0", "gateway.m.0")
        assert first.owner != second.owner and folder_owner(tmp_path / "a" / "partition-0", "gateway.m.0") == first
        held = await Ownership.take(bus.js, first)
        with pytest.raises(OwnedElsewhere, match=r"gateway\.m\.0 is held by .*/a/partition-0: one owner"):
            await Ownership.take(bus.js, second)
        await Ownership.take(bus.js, folder_owner(tmp_path / "c" / "partition-1", "gateway.m.1"))  # another partition
        restarted = await Ownership.take(bus.js, first)  # the same folder after a crash: the same owner
        await restarted.release()  # a clean stop frees it at once
        await held.release()  # an old revision releases nothing, and raises nothing
        taken = await Ownership.take(bus.js, second)
        with pytest.raises(OwnedElsewhere):
            await Ownership.take(bus.js, first)
        await taken.release()
    finally:
        await bus.close()


async def test_an_owner_stopped_past_its_lease_gives_way_and_knows_it(nats_server: NatsServer, tmp_path: Path) -> None:
    """A claim not renewed lapses; another takes it; the old owner, renewing at last, learns
    it lost the claim (and the service stops) instead of consuming beside the new one."""
    bus = await Bus.open(Settings(nats_url=nats_server.url), "test")
    try:
        first = folder_owner(tmp_path / "a" / "partition-0", "gateway.m.0")
        second = folder_owner(tmp_path / "b" / "partition-0", "gateway.m.0")
        held = await Ownership.take(bus.js, first, lease=1.0)  # the bucket's lease: its entries' max age
        async with asyncio.timeout(30):
            while True:  # until the unrenewed claim has lapsed
                try:
                    taker = await Ownership.take(bus.js, second, lease=1.0)
                    break
                except OwnedElsewhere:
                    await asyncio.sleep(0.1)
        lost = asyncio.Event()
        await asyncio.wait_for(held.keep(lost), 30)  # its next renewal finds the other owner
        assert lost.is_set()
        kept = asyncio.Event()
        renewing = asyncio.create_task(taker.keep(kept))
        await asyncio.sleep(2.5)  # several renewals, each a third of the lease
        assert not kept.is_set() and not renewing.done()
        renewing.cancel()
    finally:
        await bus.close()


def test_a_second_gateway_on_a_partition_is_refused_in_one_line(nats_server: NatsServer, tmp_path: Path) -> None:
    """Two gateway processes, one partition, two data folders: the second stops at once with
    a message naming the first, before it opens a cache or consumes a request."""
    from services.local import free_port

    def gateway(data: str) -> subprocess.Popen[str]:
        env = {**os.environ, "INTROSPECT_NATS_URL": nats_server.url, "INTROSPECT_DATA_DIR": str(tmp_path / data),
               "INTROSPECT_METRICS_PORT": str(free_port()), "INTROSPECT_BACKENDS": standin_url}  # fmt: skip
        command = [sys.executable, "-m", "services.cli", "serve", "gateway"]
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    standin_port = free_port()
    standin = subprocess.Popen([sys.executable, "-m", "services.cli", "standin", "--port", str(standin_port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    standin_url = f"http://127.0.0.1:{standin_port}"
    first = gateway("one")
    try:
        assert first.stdout is not None
        for line in first.stdout:  # until it serves
            if "ready: metrics on" in line:
                break
        else:
            raise AssertionError(f"the first gateway did not start: {first.wait()}")
        second = gateway("two")
        output, _ = second.communicate(timeout=120)
        assert second.returncode == 1
        first_folder = (tmp_path / "one" / "cache" / "partition-0").resolve()
        assert output.strip().splitlines()[-1] == (
            f"introspect: error: gateway.all-models.0 is held by {os.uname().nodename}:{first_folder}: one owner "
            "per partition; stop that one or give this one another partition (a dead owner's claim lapses 30 s "
            "after its last renewal)"
        )
        assert not (tmp_path / "two" / "cache" / "partition-0").exists()  # no cache opened
    finally:
        for process in (first, standin):
            process.terminate()
            process.wait(30)
