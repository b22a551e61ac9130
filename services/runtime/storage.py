"""Opening a RocksDB folder: raw bytes in and out, created on first use.

RocksDB's lock file makes a second process that opens the same folder fail at once, which
is what keeps each gateway partition and the aggregator's store to one owner.
"""

from __future__ import annotations

from pathlib import Path

from rocksdict import Options, Rdict


def open_rocksdb(path: Path) -> Rdict:
    path.mkdir(parents=True, exist_ok=True)
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    return Rdict(str(path), options=options)
