"""Opening a RocksDB folder: raw bytes in and out, created on first use.

RocksDB's lock file makes a second process that opens the same folder fail at once, which
is what keeps each gateway partition and the aggregator's store to one owner. A folder
RocksDB cannot open (a truncated file, a damaged MANIFEST) is refused with a message that
says what to do; a store that can be rebuilt (the gateway's cache) may instead be set
aside and started afresh.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from rocksdict import Options, Rdict

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
