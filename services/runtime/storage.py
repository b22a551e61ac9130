"""Opening a RocksDB folder: raw bytes in and out, created on first use.

RocksDB's lock file makes a second process that opens the same folder fail at once, which
is what keeps each gateway partition and the aggregator's store to one owner. A folder
RocksDB cannot open (a truncated file, a damaged MANIFEST) is refused with a message that
says what to do; a store that can be rebuilt (the gateway's cache) may instead be set
aside and started afresh.

A write RocksDB could not make (a full disk) leaves it refusing every later write, even once
there is room again: its log writer keeps the error. `WriteRecovery` reports the store's
problem and reopens it, with growing pauses, until a test write succeeds; reopening replays
the log, so nothing written before the failure is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Protocol

from rocksdict import Options, Rdict

from .health import Health

log = logging.getLogger("introspect")

ON_DAMAGE = ("refuse", "set-aside")


class StoreDamaged(RuntimeError):
    """A RocksDB folder that cannot be opened."""


def open_rocksdb(path: Path, on_damage: str = "refuse", what: str = "the store") -> Rdict:
    """`path` opened; on damage, refuse (raise StoreDamaged) or set the folder aside
    (renamed `<name>.damaged-<time>`, kept for a look) and start with an empty one."""
    path.mkdir(parents=True, exist_ok=True)
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    try:
        return Rdict(str(path), options=options)
    except Exception as error:  # rocksdict raises plain Exceptions: Corruption, IO error, ...
        reason = str(error).strip().splitlines()[0][:300]
        if "lock" in reason.lower():  # another process has it open: not damage
            raise
        if on_damage != "set-aside":
            raise StoreDamaged(f"{what} at {path} cannot be opened ({reason})") from None
        aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        path.rename(aside)
        log.warning("%s at %s could not be opened (%s); set aside as %s, starting empty", what, path, reason, aside)
        return open_rocksdb(path, "refuse", what)


def is_store_error(error: BaseException) -> bool:
    """A RocksDB status error (I/O, no space, corruption): rocksdict raises them as bare
    `Exception`s. Anything more specific is a bug of ours, not the store's."""
    return type(error) is Exception or isinstance(error, OSError)


def reopen_rocksdb(db: Rdict, path: Path) -> Rdict:
    """`db` closed (what closing says is of no use: it repeats the write error) and opened again."""
    with contextlib.suppress(Exception):
        db.close()
    return open_rocksdb(path)


class RocksStore:
    """A RocksDB folder held open by one of our stores, with what each does alike: reopen it
    after a failed write, check that it writes, close it. A folder that cannot be opened is
    refused with `advice`: what to do about it for this store."""

    def __init__(self, path: Path, on_damage: str, what: str, advice: str) -> None:
        self.path = path
        try:
            self.db = open_rocksdb(path, on_damage, what)
        except StoreDamaged as damaged:
            raise StoreDamaged(f"{damaged}; {advice}") from None

    def reopen(self) -> None:
        self.db = reopen_rocksdb(self.db, self.path)

    def check_writable(self) -> None:
        self.db[b"\0write-check"] = b""
        del self.db[b"\0write-check"]

    def close(self) -> None:
        self.db.close()


class Reopenable(Protocol):
    def reopen(self) -> None:
        """Close the RocksDB and open it again."""

    def check_writable(self) -> None:
        """Write and delete a test entry; raise if the store cannot."""


class WriteRecovery:
    """A store's failed writes: the problem reported, the store reopened until it writes.

    `failed` is told of each failed write and starts the recovery once; `until_recovered`
    waits for it (the aggregator holds a result until it can store it). A store whose
    failure blocks the service's work (the aggregator's records) pauses the service; one
    that does not (the gateway's cache: answers still flow) is only reported."""

    def __init__(
        self,
        store: Reopenable,
        health: Health,
        problem: str,
        *,
        blocks_work: bool,
        first: float = 0.5,
        most: float = 15.0,
    ) -> None:
        self.store = store
        self.health = health
        self.problem = problem
        self.blocks_work = blocks_work
        self.first, self.most = first, most  # seconds between attempts: doubling
        self.failed_reopens = 0  # attempts that found the store still unable to write
        self._task: asyncio.Task[None] | None = None
        self._writable = asyncio.Event()
        self._writable.set()

    @property
    def writable(self) -> bool:
        return self._writable.is_set()

    def failed(self, error: Exception) -> None:
        reason = f"cannot write ({type(error).__name__}: {str(error).strip()[:300]})"
        self.health.report(self.problem, reason, blocks_work=self.blocks_work)
        self._writable.clear()
        if self._task is None:
            self._task = asyncio.create_task(self._recover())

    async def until_recovered(self) -> None:
        await self._writable.wait()

    async def _recover(self) -> None:
        delay = self.first
        try:
            while True:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.most)
                try:
                    self.store.reopen()
                    self.store.check_writable()
                except Exception as error:  # still full; said once per change by the health report
                    self.failed_reopens += 1
                    self.health.report(self.problem, f"cannot write ({type(error).__name__}: {error})"[:400],
                                       blocks_work=self.blocks_work)  # fmt: skip
                    continue
                break
        finally:
            self._task = None
        self.health.clear(self.problem)
        self._writable.set()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
