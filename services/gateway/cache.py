"""The generation cache: RocksDB, keyed by served model id, rendered prompt and parameters.

A cached entry holds what the server said (the raw text, before answer cleaning) or the
error it rejected the request with, so a replay gives exactly what the first run got.
RocksDB's lock file makes sure one process alone opens a cache folder; several gateways
each open their own partition's folder.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import msgpack

from ..core.chat import GenerationParameters
from ..runtime.storage import open_rocksdb


@dataclass(frozen=True, slots=True)
class CachedGeneration:
    text: str
    duration: float
    error: str | None = None


def cache_key(model_id: str, prompt: str, parameters: GenerationParameters) -> bytes:
    identity = msgpack.packb([model_id, prompt, parameters.to_dict()], use_bin_type=True)
    return hashlib.sha256(identity).digest()


class GenerationCache:
    def __init__(self, path: Path) -> None:
        self.db = open_rocksdb(path)

    def get(self, key: bytes) -> CachedGeneration | None:
        raw = self.db.get(key)
        if raw is None:
            return None
        text, duration, error = msgpack.unpackb(raw)
        return CachedGeneration(text, duration, error)

    def put(self, key: bytes, generation: CachedGeneration) -> None:
        # Written to the write-ahead log before put returns: a killed process keeps it.
        self.db[key] = msgpack.packb([generation.text, generation.duration, generation.error], use_bin_type=True)

    def close(self) -> None:
        self.db.close()
