"""A full disk, for real: RLIMIT_FSIZE makes every write that would grow a file of this
process past a size fail with EFBIG ("File too large"), as a write to a full disk fails with
ENOSPC. RocksDB meets it in its own write-ahead log, exactly where a full disk hits it."""

from __future__ import annotations

import resource
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def files_limited_to(size: int) -> Iterator[Callable[[int | None], None]]:
    """Inside, no file this process writes grows past `size` bytes. What it yields changes
    the limit: smaller (the disk fills further: even a new file has no room), or None to
    lift it (the disk has room again). SIGXFSZ, which would kill the process, is ignored
    meanwhile, so the write fails instead."""
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)

    def limit(size: int | None) -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft if size is None else size, hard))

    limit(size)
    try:
        yield limit
    finally:
        limit(None)
        signal.signal(signal.SIGXFSZ, handler)
