"""The aggregator's RocksDB: job manifests, one record per (job, idx), completions.

Keys sort by job, then by idx (big-endian), so a job's records are one prefix scan in
observation order. A record is stored under its (job, idx) key: a redelivered result
finds its key taken and counts nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import msgspec

from proto import AnswerSource

from ..runtime.storage import RocksStore

_MANIFEST = b"manifest\0"
_RECORD = b"record\0"
_COMPLETE = b"complete\0"
_SOURCES = b"sources\0"  # a job's distinct answer sources, for its provenance
_SOURCES_DECODER = msgspec.msgpack.Decoder(list[AnswerSource])


def _record_key(job_id: str, idx: int) -> bytes:
    return _RECORD + job_id.encode() + b"\0" + idx.to_bytes(8, "big", signed=True)


class ResultStore(RocksStore):
    def __init__(self, path: Path) -> None:
        # Never set aside on its own: it holds every job's records.
        advice = ("it holds the jobs' records: restore it from a backup, or move it away to start without them "
                  "(finished jobs' result files stay where they are)")  # fmt: skip
        super().__init__(path, "refuse", "the aggregator's store", advice)

    def put_manifest(self, job_id: str, manifest: bytes) -> None:
        self.db[_MANIFEST + job_id.encode()] = manifest

    def manifests(self) -> Iterator[tuple[str, bytes]]:
        for key, value in self._prefix(_MANIFEST):
            yield key[len(_MANIFEST) :].decode(), value

    def add_record(self, job_id: str, idx: int, record: dict[str, Any]) -> bool:
        """Store the record unless (job, idx) has one already; True when it is new."""
        key = _record_key(job_id, idx)
        if self.db.key_may_exist(key) and self.db.get(key) is not None:
            return False
        self.db[key] = msgpack.packb(record, use_bin_type=True)
        return True

    def records(self, job_id: str) -> Iterator[tuple[bytes, bytes]]:
        """The job's stored records as (key, msgpack bytes): decoding is the caller's, so one
        damaged entry cannot end the iteration."""
        yield from self._prefix(_RECORD + job_id.encode() + b"\0")

    def record_batches(self, job_id: str, size: int) -> Iterator[list[tuple[bytes, bytes]]]:
        """The job's stored records, `size` at a time, in idx order: a job of any size read
        in bounded memory. Each batch is read by an iterator of its own, closed before the
        batch is handed out, so the caller may wait between batches (the store may even be
        reopened meanwhile) without a RocksDB iterator left open across the wait."""
        prefix = _RECORD + job_id.encode() + b"\0"
        start = prefix
        while True:
            batch: list[tuple[bytes, bytes]] = []
            for key, value in self.db.items(from_key=start):
                if not isinstance(key, bytes) or not key.startswith(prefix) or len(batch) == size:
                    break
                batch.append((key, value))
            if not batch:
                return
            start = batch[-1][0] + b"\0"  # the next key after the last one read
            yield batch
            if len(batch) < size:
                return

    def forget(self, key: bytes) -> None:
        """Drop a stored entry that cannot be read, so a redelivery of it is stored anew."""
        del self.db[key]

    def mark_complete(self, job_id: str, info: dict[str, Any]) -> None:
        self.db[_COMPLETE + job_id.encode()] = msgpack.packb(info, use_bin_type=True)

    def completion(self, job_id: str) -> dict[str, Any] | None:
        raw = self.db.get(_COMPLETE + job_id.encode())
        return None if raw is None else msgpack.unpackb(raw)

    def put_sources(self, job_id: str, sources: list[AnswerSource]) -> None:
        self.db[_SOURCES + job_id.encode()] = msgspec.msgpack.encode(sources)

    def sources(self, job_id: str) -> list[AnswerSource]:
        """The job's answer sources as stored; ValueError if they do not read."""
        raw = self.db.get(_SOURCES + job_id.encode())
        if raw is None:
            return []
        try:
            return _SOURCES_DECODER.decode(raw)
        except msgspec.MsgspecError as error:
            raise ValueError(f"stored answer sources do not read: {error}") from None

    def _prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        for key, value in self.db.items(from_key=prefix):
            if not isinstance(key, bytes) or not key.startswith(prefix):
                break
            yield key, value
