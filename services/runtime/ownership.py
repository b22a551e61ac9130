"""One owner per gateway partition, across machines and data folders.

A folder lock (lock.py) keeps two processes from opening one cache folder, but two
gateways on one partition with different folders would both consume its requests and
split its cache between them. So a gateway claims its partition in a JetStream key-value
bucket before it consumes: the entry names its owner (an id kept in the cache folder, so a
restarted gateway on the same folder is the same owner), and the owner renews it every
third of the lease. Entries expire a lease after their last renewal, so a gateway that died
without a word frees its partition by then; one that stops cleanly frees it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import nats.errors
import nats.js.errors
from nats.js import api
from nats.js.kv import KeyValue

from ..errors import OwnedElsewhere

log = logging.getLogger("introspect")

BUCKET = "INTROSPECT_OWNERS"
LEASE = 30.0  # seconds an owner that stopped renewing keeps its claim


@dataclass(frozen=True, slots=True)
class Claim:
    """What a service claims: `key`, as `owner` (a stable id), described as `where`."""

    key: str
    owner: str
    where: str


def folder_owner(folder: Path, key: str) -> Claim:
    """A claim on `key` by whoever uses `folder`: its id is made once and kept beside it
    (`<folder>.owner-id`; not inside, where a store set aside would take it along)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    path = folder.with_name(folder.name + ".owner-id")
    if not path.is_file():
        path.write_text(uuid.uuid4().hex + "\n", encoding="utf-8")
    return Claim(key, path.read_text(encoding="utf-8").strip(), f"{socket.gethostname()}:{folder.resolve()}")


class Ownership:
    """A claim held in the bucket: taken, renewed, released."""

    def __init__(self, kv: KeyValue, claim: Claim, lease: float) -> None:
        self.kv, self.claim, self.lease = kv, claim, lease
        self.revision = 0

    @classmethod
    async def take(
        cls, js: nats.js.JetStreamContext, claim: Claim, lease: float = LEASE, replicas: int = 1
    ) -> Ownership:
        """The claim, taken; `OwnedElsewhere` if another owner holds it."""
        try:
            kv = await js.key_value(BUCKET)
        except nats.js.errors.BucketNotFoundError:
            config = api.KeyValueConfig(
                bucket=BUCKET, history=1, ttl=lease, storage=api.StorageType.FILE, replicas=replicas
            )
            kv = await js.create_key_value(config)
        ownership = cls(kv, claim, lease)
        await ownership._take()
        return ownership

    async def _take(self) -> None:
        value = self._value()
        for _ in range(5):  # another owner may come or go between the read and the write
            try:
                entry = await self.kv.get(self.claim.key)
            except nats.js.errors.KeyNotFoundError:  # never claimed, released, or expired
                try:
                    self.revision = await self.kv.create(self.claim.key, value)
                    return
                except nats.js.errors.KeyWrongLastSequenceError:
                    continue
            holder = _holder(entry.value)
            if holder.get("owner") != self.claim.owner:
                raise OwnedElsewhere(
                    f"{self.claim.key} is held by {holder.get('where', 'another process')}: one owner per "
                    f"partition; stop that one or give this one another partition (a dead owner's claim "
                    f"lapses {self.lease:g} s after its last renewal)"
                )
            try:  # ours, from before a restart on the same folder
                self.revision = await self.kv.update(self.claim.key, value, last=entry.revision)
                return
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
        raise OwnedElsewhere(f"{self.claim.key}: the claim kept changing hands; try again")

    async def keep(self, lost: asyncio.Event) -> None:
        """Renew the claim every third of the lease until cancelled; set `lost` if another
        owner has it now (this one was stopped past its lease, and the other took over)."""
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                self.revision = await self.kv.update(self.claim.key, self._value(), last=self.revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                try:
                    await self._take()  # lapsed, not taken: claim it again
                except OwnedElsewhere as taken:
                    log.error("lost the claim: %s", taken)
                    lost.set()
                    return
            except (nats.errors.Error, TimeoutError) as error:  # NATS away: renew next round
                log.warning("could not renew the claim on %s (%s)", self.claim.key, type(error).__name__)

    def _value(self) -> bytes:
        return json.dumps({"owner": self.claim.owner, "where": self.claim.where, "since": time.time()}).encode()

    async def release(self) -> None:
        """Free the claim now, if it is still ours, so that a successor need not wait."""
        with contextlib.suppress(nats.errors.Error, nats.js.errors.Error, TimeoutError):
            await self.kv.delete(self.claim.key, last=self.revision)


def _holder(raw: bytes | None) -> dict[str, str]:
    try:
        holder = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}
