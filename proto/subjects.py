"""Subjects, streams, consumers and message ids: where each message travels.

One stream per stage. The four stage streams use work-queue retention (a message is gone
once its consumer acknowledges it) and file storage; the event and dead-letter streams keep
their messages for a time. Message ids are deterministic, so JetStream's de-duplication
drops a re-publication after a crash within the duplicate window, and the aggregator's
upsert by (job, idx) makes any later one harmless.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache

from .messages import Chat, encode_part

PREFIX = "introspect"

JOBS = f"{PREFIX}.jobs"
OBSERVATIONS = f"{PREFIX}.score.observation"
REPLIES = f"{PREFIX}.score.reply"
MANIFESTS = f"{PREFIX}.results.manifest"
RESULTS = f"{PREFIX}.results.record"
EVENTS = f"{PREFIX}.events"
PROGRESS = f"{PREFIX}.progress"  # .<job>: how far the producer got with each job


@lru_cache(maxsize=256)
def model_route(model: str) -> str:
    """A model's name as one subject token: the characters NATS gives a meaning become '_'."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", model) or "_"


def generation_subject(model: str, partition: int) -> str:
    """Requests for one model's gateway partition: each model has its own gateways (its own
    servers), and each partition its own cache."""
    return f"{PREFIX}.generate.{model_route(model)}.{partition}"


def dead_letter_subject(service: str) -> str:
    return f"{PREFIX}.dead.{service}"


def progress_subject(job_id: str) -> str:
    """Where the producer keeps a job's progress. A job id may hold any character (dots
    too): the subject has it as one safe token, and a digest of it keeps apart two ids
    that read the same once made safe."""
    digest = hashlib.blake2b(job_id.encode(), digest_size=6).hexdigest()
    return f"{PROGRESS}.{_UNSAFE_IN_TOKEN.sub('_', job_id)[:128]}-{digest}"


_UNSAFE_IN_TOKEN = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True, slots=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    work_queue: bool  # False: limits retention, kept for max_age
    max_age: float = 0.0  # seconds; 0 keeps messages until acknowledged or removed
    duplicate_window: float = 120.0
    max_msgs_per_subject: int = -1  # -1: no limit; 1 keeps each subject's last message only


STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec("INTROSPECT_JOBS", (JOBS,), work_queue=True),
    StreamSpec("INTROSPECT_SCORE", (OBSERVATIONS, REPLIES), work_queue=True),
    StreamSpec("INTROSPECT_GENERATE", (f"{PREFIX}.generate.*.*",), work_queue=True),
    StreamSpec("INTROSPECT_RESULTS", (MANIFESTS, RESULTS), work_queue=True),
    StreamSpec("INTROSPECT_EVENTS", (EVENTS,), work_queue=False, max_age=30 * 86400),
    StreamSpec("INTROSPECT_DEAD", (f"{PREFIX}.dead.*",), work_queue=False, max_age=30 * 86400),
    StreamSpec("INTROSPECT_PROGRESS", (f"{PROGRESS}.*",), work_queue=False, max_age=30 * 86400, max_msgs_per_subject=1),
)
STREAM_OF: dict[str, str] = {
    "producer": "INTROSPECT_JOBS",
    "scorer": "INTROSPECT_SCORE",
    "gateway": "INTROSPECT_GENERATE",
    "aggregator": "INTROSPECT_RESULTS",
}


def stream_of(subject: str) -> str:
    """The stream that stores `subject`."""
    for spec in STREAMS:
        if any(_matches(pattern, subject) for pattern in spec.subjects):
            return spec.name
    raise ValueError(f"no stream stores {subject!r}")


def _matches(pattern: str, subject: str) -> bool:
    """Whether `subject` falls under `pattern`, NATS wildcards and all (`*` one token, `>` the rest)."""
    wanted, tokens = pattern.split("."), subject.split(".")
    for i, want in enumerate(wanted):
        if want == ">":
            return len(tokens) > i
        if i >= len(tokens) or want not in ("*", tokens[i]):
            return False
    return len(wanted) == len(tokens)


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    """A durable pull consumer: the one reader of its subjects in a work-queue stream."""

    durable: str
    stream: str
    filter_subject: str
    ack_wait: float = 15.0  # redelivery after a crash; long work sends in-progress meanwhile
    max_ack_pending: int = 1024  # bounds the work in flight: back-pressure
    max_deliver: int = 20  # then the message goes to the dead letters


def consumer_for(service: str, partition: int = 0, model: str | None = None) -> ConsumerSpec:
    """`model` only for a gateway: the model it serves; None serves every model (one-model setups)."""
    match service:
        case "producer":
            return ConsumerSpec("producer", STREAM_OF[service], JOBS, max_ack_pending=4)
        case "scorer":
            return ConsumerSpec("scorer", STREAM_OF[service], f"{PREFIX}.score.>")
        case "gateway":
            if model is None:
                return ConsumerSpec(f"gateway-{partition}", STREAM_OF[service], f"{PREFIX}.generate.*.{partition}")
            subject = generation_subject(model, partition)
            return ConsumerSpec(f"gateway-{model_route(model)}-{partition}", STREAM_OF[service], subject)
        case "aggregator":
            return ConsumerSpec("aggregator", STREAM_OF[service], f"{PREFIX}.results.>")
    raise ValueError(f"unknown service {service!r}")


# -- deterministic message ids --


def observation_id(job_id: str, idx: int) -> str:
    return f"{job_id}:{idx}:observation"


def request_id(job_id: str, idx: int, step: int) -> str:
    return f"{job_id}:{idx}:request:{step}"


def reply_id(job_id: str, idx: int, step: int) -> str:
    return f"{job_id}:{idx}:reply:{step}"


def result_id(job_id: str, idx: int) -> str:
    return f"{job_id}:{idx}:result"


def manifest_id(job_id: str) -> str:
    return f"{job_id}:manifest"


def partition_of(chat: Chat, message: str, partitions: int) -> int:
    """The gateway partition for a question: the same question always lands on the same cache."""
    if partitions == 1:
        return 0
    digest = hashlib.blake2b(encode_part(chat), digest_size=8)
    digest.update(message.encode())
    return int.from_bytes(digest.digest(), "big") % partitions
