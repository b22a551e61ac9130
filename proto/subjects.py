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


@dataclass(frozen=True, slots=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    work_queue: bool  # False: limits retention, kept for max_age
    max_age: float = 0.0  # seconds; 0 keeps messages until acknowledged or removed
    duplicate_window: float = 120.0


STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec("INTROSPECT_JOBS", (JOBS,), work_queue=True),
    StreamSpec("INTROSPECT_SCORE", (OBSERVATIONS, REPLIES), work_queue=True),
    StreamSpec("INTROSPECT_GENERATE", (f"{PREFIX}.generate.*.*",), work_queue=True),
    StreamSpec("INTROSPECT_RESULTS", (MANIFESTS, RESULTS), work_queue=True),
    StreamSpec("INTROSPECT_EVENTS", (EVENTS,), work_queue=False, max_age=30 * 86400),
    StreamSpec("INTROSPECT_DEAD", (f"{PREFIX}.dead.*",), work_queue=False, max_age=30 * 86400),
)
STREAM_OF: dict[str, str] = {
    "producer": "INTROSPECT_JOBS",
    "scorer": "INTROSPECT_SCORE",
    "gateway": "INTROSPECT_GENERATE",
    "aggregator": "INTROSPECT_RESULTS",
}


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
