"""The generation cache: RocksDB, keyed by served model id, rendered prompt and parameters,
and `CachedCompletions`, the cache put in front of a completion function.

An entry holds what the server said (the raw text, before answer cleaning, and its seconds)
or the reason it rejected the request, so a replay gives exactly what the first run got.
RocksDB's lock file makes sure one process alone opens a cache folder; several gateways
each open their own partition's folder.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import msgpack

from ..backends.contract import Complete, Completion, GenerationRejected
from ..core.chat import GenerationParameters
from ..runtime.health import Health
from ..runtime.storage import RocksStore, WriteRecovery
from .metrics import CACHE_UNREADABLE as UNREADABLE
from .metrics import CACHE_WRITE_FAILURES as WRITE_FAILURES

log = logging.getLogger("introspect")


class CacheMiss(LookupError):
    """Offline: the cache does not hold this generation and there is no server to ask."""


def cache_key(model_id: str, prompt: str, parameters: GenerationParameters) -> bytes:
    identity = msgpack.packb([model_id, prompt, parameters.to_dict()], use_bin_type=True)
    return hashlib.sha256(identity).digest()


class GenerationCache(RocksStore):
    """Completions and rejections by key, on disk."""

    def __init__(self, path: Path, on_damage: str = "refuse") -> None:
        # A cache can be rebuilt (its answers asked for again): with on_damage="set-aside",
        # one RocksDB cannot open is kept aside and the gateway starts on an empty one.
        advice = ("start on an empty cache with INTROSPECT_CACHE_ON_DAMAGE=set-aside (the damaged folder is kept "
                  "beside it), or move the folder away")  # fmt: skip
        super().__init__(path, on_damage, "the gateway cache", advice)

    def get(self, key: bytes) -> Completion | None:
        """The stored completion, marked cached; a stored rejection raises it again. An entry
        that cannot be read (damaged on disk, or stored wrong by an older version) is a
        miss: the generation is asked for again and stored anew."""
        try:
            raw = self.db.get(key)
            text, seconds, rejected = msgpack.unpackb(raw) if raw is not None else (None, None, None)
        except Exception as error:  # RocksDB's checksum and I/O errors, msgpack's format errors
            log.warning("gateway cache: an unreadable entry is a miss (%s: %s)", type(error).__name__, error)
            UNREADABLE.inc()
            return None
        if raw is None:
            return None
        if rejected is not None:
            if not isinstance(rejected, str):
                UNREADABLE.inc()
                return None
            raise GenerationRejected(rejected, cached=True)
        if not isinstance(text, str) or not isinstance(seconds, int | float) or isinstance(seconds, bool):
            UNREADABLE.inc()  # a null answer an older version cached: asked again, stored anew
            return None
        return Completion(text, seconds, cached=True)

    def put(self, key: bytes, completion: Completion) -> None:
        self._put(key, completion.text, completion.seconds, None)

    def put_rejection(self, key: bytes, reason: str) -> None:
        self._put(key, "", 0.0, reason)

    def _put(self, key: bytes, text: str, seconds: float, rejected: str | None) -> None:
        # Written to the write-ahead log before put returns: a killed process keeps it.
        self.db[key] = msgpack.packb([text, seconds, rejected], use_bin_type=True)


class CachedCompletions:
    """A completion function with the cache in front: a hit is answered from disk, a miss is
    completed once (a request for a key already being completed waits for that one) and
    stored, rejections included. With no `complete` (offline), a miss raises `CacheMiss`."""

    def __init__(
        self, cache: GenerationCache, model_id: str, complete: Complete | None, health: Health | None = None
    ) -> None:
        self.cache = cache
        self.model_id = model_id  # the served model: part of every key
        self.complete = complete
        # A cache that cannot store is reported and reopened until it can; answers flow meanwhile.
        self.recovery = None if health is None else WriteRecovery(cache, health, "cache", blocks_work=False)
        self._in_flight: dict[bytes, asyncio.Future[Completion]] = {}

    async def __call__(self, prompt: str, parameters: GenerationParameters) -> Completion:
        key = cache_key(self.model_id, prompt, parameters)
        if (completion := self.cache.get(key)) is not None:
            return completion
        if self.complete is None:
            raise CacheMiss("offline: this generation is not in the cache")
        if key in self._in_flight:
            # Joined to the one server call already asking this: for this request it is an
            # answer the cache gave, and its seconds are not spent again (`durations`).
            return dataclasses.replace(await asyncio.shield(self._in_flight[key]), cached=True)
        future: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            completion = await self._complete_and_store(key, prompt, parameters)
            future.set_result(completion)
            return completion
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as error:
            future.set_exception(error)
            future.exception()  # retrieved here, so a future nobody joined logs nothing
            raise
        finally:
            del self._in_flight[key]

    async def from_cache(self, prompt: str, parameters: GenerationParameters) -> Completion:
        """The cached completion, asking no server; CacheMiss when this partition has none."""
        if (completion := self.cache.get(cache_key(self.model_id, prompt, parameters))) is not None:
            return completion
        raise CacheMiss("this generation is not in the cache")

    async def _complete_and_store(self, key: bytes, prompt: str, parameters: GenerationParameters) -> Completion:
        assert self.complete is not None
        try:
            completion = await self.complete(prompt, parameters)
        except GenerationRejected as rejected:
            reason = str(rejected)
            self._store(lambda: self.cache.put_rejection(key, reason))
            raise
        self._store(lambda: self.cache.put(key, completion))
        return completion

    def _store(self, write: Callable[[], None]) -> None:
        """Store what a server said; if the store cannot take it (a full disk), the answer is
        still used: a generation paid for is never thrown away for want of a cache entry.
        The failure is reported as the `cache` problem, which stops no work, until the
        reopened store takes a write again."""
        if self.recovery is not None and not self.recovery.writable:
            WRITE_FAILURES.inc()  # recovering: the store refuses every write until reopened
            return
        try:
            write()
        except Exception as error:
            WRITE_FAILURES.inc()
            if self.recovery is not None:
                self.recovery.failed(error)
            else:
                log.warning("gateway cache: could not store a generation (%s: %s)", type(error).__name__, error)

    def close(self) -> None:
        if self.recovery is not None:
            self.recovery.close()
