"""What a user does to a running pipeline: submit jobs, follow them, read and replay dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import nats.js.errors
from nats.js import api

from proto import DeadLetter, InvalidMessage, Job, JobEvent, decode
from proto import subjects as sub

from .errors import AggregatorRefused, JobRejected
from .jobs import with_job_id
from .runtime.bus import Bus
from .runtime.handlers import Outgoing
from .runtime.settings import Settings

DEAD_STREAM = "INTROSPECT_DEAD"


async def submit(settings: Settings, jobs: Iterable[Job], wait: float = 0.0) -> list[tuple[Job, JobEvent | None]]:
    """Publish the jobs; with `wait`, follow them for up to that many seconds until the
    producer has accepted or rejected each. Each job with its verdict (None: not known)."""
    bus = await Bus.open(settings, "cli")
    try:
        submitted = [with_job_id(job) for job in jobs]
        watch = await watch_events(bus) if wait else None
        await bus.publish(Outgoing(sub.JOBS, job, job.job_id) for job in submitted)
        deadline = time.monotonic() + wait
        while watch is not None and time.monotonic() < deadline:
            if all(_verdict(watch, job.job_id) for job in submitted):
                break
            await watch.next_event(deadline - time.monotonic())
        return [(job, _verdict(watch, job.job_id) if watch else None) for job in submitted]
    finally:
        await bus.close()


def _verdict(watch: JobWatch, job_id: str) -> JobEvent | None:
    return next((e for e in watch.events.get(job_id, []) if e.event in ("accepted", "rejected")), None)


@dataclass
class JobWatch:
    """Events of the jobs a client follows, as they arrive."""

    events: dict[str, list[JobEvent]]
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # set by each event

    def last(self, job_id: str) -> JobEvent | None:
        seen = self.events.get(job_id)
        return seen[-1] if seen else None

    async def next_event(self, seconds: float) -> None:
        """Until another event arrives, or `seconds` pass."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.arrived.wait(), seconds)
        self.arrived.clear()


async def watch_events(bus: Bus) -> JobWatch:
    """Follow job events from now on (an ordered consumer: nothing to clean up afterwards)."""
    watch = JobWatch({})

    async def on_event(msg: Any) -> None:
        try:
            event = decode(msg.data, JobEvent)
        except InvalidMessage:
            return
        watch.events.setdefault(event.job_id, []).append(event)
        watch.arrived.set()

    config = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.NEW)
    await bus.js.subscribe(sub.EVENTS, cb=on_event, ordered_consumer=True, config=config)
    return watch


async def job_status(session: aiohttp.ClientSession, aggregator: str, job_id: str) -> dict[str, Any] | None:
    async with session.get(f"{aggregator.rstrip('/')}/jobs/{job_id}") as response:
        if response.status == 404:
            return None
        if response.status != 200:
            detail = (await response.text()).strip() or f"HTTP {response.status} {response.reason}"
            raise AggregatorRefused(f"{job_id}: {detail}")
        return await response.json()


async def wait_for_job(
    settings: Settings,
    aggregator: str,
    job: Job,
    on_progress: Callable[[int, int], None],
    poll: float = 0.25,
    check: Callable[[], None] | None = None,
    on_dead_letter: Callable[[DeadLetter], None] | None = None,
) -> dict[str, Any]:
    """Submit `job`, then report (received, expected) until it completes; its final status.

    `check` runs at every poll and may raise to give up (a local service died);
    `on_dead_letter` sees every dead letter any service writes from now on, as it happens.
    """
    bus = await Bus.open(settings, "cli")
    try:
        watch = await watch_events(bus)
        if on_dead_letter is not None:
            await _follow_dead_letters(bus, on_dead_letter)
        await bus.publish([Outgoing(sub.JOBS, job, job.job_id)])
        async with aiohttp.ClientSession(headers=bearer(settings.api_token)) as session:
            while True:
                if check is not None:
                    check()
                event = watch.last(job.job_id)
                if event is not None and event.event == "rejected":
                    raise JobRejected(event.detail)
                status = await job_status(session, aggregator, job.job_id)
                if status is not None:
                    on_progress(status["received"], status["expected"])
                    if status["complete"]:
                        return status
                await watch.next_event(poll)  # a `completed` event ends the wait at once
    finally:
        await bus.close()


async def _follow_dead_letters(bus: Bus, on_dead_letter: Callable[[DeadLetter], None]) -> None:
    async def on_message(msg: Any) -> None:
        with contextlib.suppress(InvalidMessage):  # not ours to report
            on_dead_letter(decode(msg.data, DeadLetter, max_bytes=DeadLetter.MAX_BYTES))

    # A plain subscription: JetStream stores them, and a listener hears each as it is published.
    await bus.client.subscribe(sub.dead_letter_subject("*"), cb=on_message)


# -- dead letters --


async def dead_letters(settings: Settings, service: str | None = None) -> list[tuple[int, DeadLetter]]:
    """Every dead letter still kept, with its stream sequence number, oldest first."""
    bus = await Bus.open(settings, "cli")
    try:
        return await _dead_letters(bus, service)
    finally:
        await bus.close()


async def _dead_letters(bus: Bus, service: str | None) -> list[tuple[int, DeadLetter]]:
    info = await bus.js.stream_info(DEAD_STREAM)
    letters: list[tuple[int, DeadLetter]] = []
    if not info.state.messages:
        return letters
    for seq in range(max(info.state.first_seq, 1), info.state.last_seq + 1):
        try:
            raw = await bus.js.get_msg(DEAD_STREAM, seq)
        except nats.js.errors.NotFoundError:  # deleted after a replay
            continue
        try:
            letter = decode(raw.data or b"", DeadLetter, max_bytes=DeadLetter.MAX_BYTES)
        except InvalidMessage as error:  # one letter that does not read must not hide the others
            letter = unreadable_letter(len(raw.data or b""), str(error))
        if service is None or letter.service in (service, UNREADABLE):
            letters.append((seq, letter))
    return letters


UNREADABLE = "?"  # the service of a letter that does not read: it is shown, never replayed


def unreadable_letter(size: int, error: str) -> DeadLetter:
    """What is shown of a stored dead letter that cannot be decoded (written by another
    version, or damaged): its size and why; it has no subject to be replayed to."""
    return DeadLetter(service=UNREADABLE, subject="", reason=f"unreadable dead letter of {size} bytes: {error[:500]}",
                      payload=b"")  # fmt: skip


async def replay_dead_letters(
    settings: Settings, sequences: Iterable[int] | None = None
) -> list[tuple[int, DeadLetter]]:
    """Publish dead letters again to where they came from, then remove them; all when no sequences."""
    bus = await Bus.open(settings, "cli")
    try:
        letters = await _dead_letters(bus, None)
        if sequences is not None:
            wanted = set(sequences)
            letters = [(seq, letter) for seq, letter in letters if seq in wanted]
        letters = [(seq, letter) for seq, letter in letters if letter.service != UNREADABLE]  # kept to be seen
        for seq, letter in letters:
            # A fresh message id: the original may still be inside the de-duplication window.
            headers = {"Nats-Msg-Id": f"{letter.msg_id or 'dead'}:replay:{seq}"}
            await bus.js.publish(letter.subject, letter.payload, headers=headers)
            await bus.js.delete_msg(DEAD_STREAM, seq)
        return letters
    finally:
        await bus.close()


# -- the aggregator's HTTP API, for the command line --


def bearer(token: str | None) -> dict[str, str]:
    """The headers that carry the API's token (INTROSPECT_API_TOKEN), if one is set."""
    return {} if token is None else {"Authorization": f"Bearer {token}"}


def list_jobs(aggregator: str, token: str | None = None) -> list[dict[str, Any]]:
    """The state of every job the aggregator knows."""
    return json.loads(_get(f"{aggregator.rstrip('/')}/jobs", "the job list", token, timeout=10))


def job_state(aggregator: str, job_id: str, token: str | None = None) -> dict[str, Any]:
    """One job's state: counts, results so far, its result files once complete."""
    return json.loads(_get(f"{aggregator.rstrip('/')}/jobs/{job_id}", job_id, token))


def job_file(aggregator: str, job_id: str, name: str, token: str | None = None) -> bytes:
    """`result.json` or `records.parquet` of a complete job."""
    return _get(f"{aggregator.rstrip('/')}/jobs/{job_id}/{name}", job_id, token)


def _get(url: str, about: str, token: str | None, timeout: float = 60) -> bytes:
    """The body at `url`; an error answer raises AggregatorRefused, naming `about`."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=bearer(token)), timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace").strip() or f"HTTP {error.code} {error.reason}"
        raise AggregatorRefused(f"{about}: {detail}") from None
