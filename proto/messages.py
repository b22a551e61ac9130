"""Every message the services exchange, its schema version, and its msgpack encoding.

On the wire a message is a msgpack map: the fields below, plus `v` (the schema version)
and `kind` (which message it is). `decode` checks all three against what the receiving
subject expects and names the first bad field it finds, so a malformed message can go to
the dead-letter stream with a reason a person can act on.

These types know nothing of the protocol: an observation or a result record travels as a
plain map here and is validated by `services.core` where it is used.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from functools import cache
from typing import Any, ClassVar, TypeAlias, TypeVar, Union, get_args, get_origin, get_type_hints

import msgpack

SCHEMA_VERSION = 1
MAX_MESSAGE_BYTES = 512 << 10  # well under JetStream's default 1 MiB payload limit


class InvalidMessage(ValueError):
    """A message that cannot be decoded into the type its subject carries."""


# -- parts shared by several messages --


@dataclass(frozen=True, slots=True)
class Sampling:
    """Generation parameters, as TGI names them."""

    temperature: float = 0.1
    top_p: float = 0.95
    repetition_penalty: float = 1.2
    top_k: int = 50
    max_new_tokens: int = 1024
    stop: list[str] = field(default_factory=list)
    seed: int = 0


@dataclass(frozen=True, slots=True)
class Chat:
    """Whom to ask and how: the model, its chat template, system message and sampling."""

    model: str  # a shorthand (llama2-7b), a Hugging Face id, or a local model's name
    system: str  # "default", "none", or a custom system message text
    sampling: Sampling
    # A local model's tokenizer_config.json entries (chat_template, bos_token, eos_token),
    # so the gateway can render its template without the file.
    template: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """One generation as a task sees it: cleaned text, server seconds, or an error."""

    text: str
    duration: float = 0.0
    error: str | None = None


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One observation's state in the protocol: all the scorer needs to take the next step."""

    job_id: str
    task: str
    category: str
    config: list[str]
    observation: dict[str, Any]
    chat: Chat
    answers: list[Answer] = field(default_factory=list)

    @property
    def idx(self) -> int:
        idx = self.observation.get("idx")
        return idx if isinstance(idx, int) else -1


# -- the messages --


@dataclass(frozen=True, slots=True)
class Job:
    """An experiment to run, as a user submits it."""

    KIND: ClassVar[str] = "job"
    job_id: str
    model: str
    dataset: str  # a dataset name (IMDB, RTE, ...) or a path to a local data file
    task: str
    split: str = "test"
    config: list[str] = field(default_factory=list)
    seed: int = 0
    system_message: str | None = None  # None: the paper's choice for the model
    limit: int | None = None  # at most this many observations, after shuffling
    start: int = 0  # then only positions [start, stop) of the shuffled split
    stop: int | None = None
    category: str | None = None  # for a local data file
    columns: dict[str, str] = field(default_factory=dict)  # local file column -> field
    labels: dict[str, str] = field(default_factory=dict)  # raw label -> label
    mirror: str | None = None  # folder with local copies of the datasets' raw files


@dataclass(frozen=True, slots=True)
class JobManifest:
    """What the producer made of a job: its experiment and how many results to expect."""

    KIND: ClassVar[str] = "job-manifest"
    job: Job
    experiment_id: str
    experiment: dict[str, Any]  # the paper's `args` object
    expected: int
    setup_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class ObservationMessage:
    """One row of a job's split, entering the protocol."""

    KIND: ClassVar[str] = "observation"
    work: WorkItem


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """A question for the model; `work` travels along so the reply carries the state back."""

    KIND: ClassVar[str] = "generation-request"
    message: str  # the user turn; the gateway renders the chat template around it
    work: WorkItem


@dataclass(frozen=True, slots=True)
class GenerationReply:
    KIND: ClassVar[str] = "generation-reply"
    answer: Answer
    work: WorkItem
    cached: bool = False


@dataclass(frozen=True, slots=True)
class ScoredResult:
    """The result record of one observation (`record` is the paper's record as a map)."""

    KIND: ClassVar[str] = "scored-result"
    job_id: str
    task: str
    idx: int
    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class JobEvent:
    """Something that happened to a job: accepted, rejected, completed."""

    KIND: ClassVar[str] = "job-event"
    job_id: str
    event: str
    detail: str = ""
    at: float = 0.0  # unix seconds


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message a service could not process, kept with the reason (an oversized one, cut)."""

    MAX_BYTES: ClassVar[int] = MAX_MESSAGE_BYTES + (64 << 10)  # the kept payload and the envelope

    KIND: ClassVar[str] = "dead-letter"
    service: str
    subject: str  # where it was published, so it can be replayed there
    reason: str
    payload: bytes
    msg_id: str | None = None
    deliveries: int = 1
    at: float = 0.0


Message: TypeAlias = (
    Job | JobManifest | ObservationMessage | GenerationRequest | GenerationReply | ScoredResult | JobEvent | DeadLetter
)
MESSAGE_TYPES: dict[str, type[Message]] = {t.KIND: t for t in get_args(Message)}
M = TypeVar("M", bound=Message)


def encode(message: Message) -> bytes:
    body = {"v": SCHEMA_VERSION, "kind": message.KIND, **_plain(message)}
    return msgpack.packb(body, use_bin_type=True)


def decode(payload: bytes, *expected: type[M], max_bytes: int = MAX_MESSAGE_BYTES) -> M:
    """The message in `payload`, which must be one of the `expected` types (any, if none)."""
    if len(payload) > max_bytes:
        raise InvalidMessage(f"message of {len(payload)} bytes exceeds {max_bytes}")
    try:
        body = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException) as error:
        raise InvalidMessage(f"not msgpack ({type(error).__name__}{': ' if str(error) else ''}{error})") from None
    if not isinstance(body, dict):
        raise InvalidMessage(f"message is a {type(body).__name__}, not a map")
    version = body.pop("v", None)
    if version != SCHEMA_VERSION:
        raise InvalidMessage(f"field 'v': schema version {version!r} is not {SCHEMA_VERSION}")
    kind = body.pop("kind", None)
    allowed = expected or tuple(MESSAGE_TYPES.values())
    message_type = next((t for t in allowed if kind == t.KIND), None)
    if message_type is None:
        raise InvalidMessage(f"field 'kind': {kind!r} is not {' or '.join(t.KIND for t in allowed)}")
    return typing.cast(M, _build(message_type, body, ""))


# -- plain values <-> dataclasses, with checks that name the field --


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


@cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _build(cls: type, body: Any, path: str) -> Any:
    where = path or cls.KIND  # type: ignore[attr-defined]
    if not isinstance(body, dict):
        raise InvalidMessage(f"field {where!r} must be a map, got {type(body).__name__}")
    hints = _hints(cls)
    values = {}
    for spec in dataclasses.fields(cls):
        name = f"{path}.{spec.name}" if path else spec.name
        if spec.name not in body:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                raise InvalidMessage(f"field {name!r} is missing")
            continue
        values[spec.name] = _check(body[spec.name], hints[spec.name], name)
    unknown = sorted(set(body) - {spec.name for spec in dataclasses.fields(cls)})
    if unknown:
        prefix = f"{path}." if path else ""
        raise InvalidMessage(f"unknown field {prefix + unknown[0]!r}")
    return cls(**values)


def _check(value: Any, hint: Any, name: str) -> Any:
    origin = get_origin(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        (inner,) = [option for option in options if option is not type(None)]
        return _check(value, inner, name)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, name)  # type: ignore[arg-type]
    if origin is list:
        if not isinstance(value, list):
            raise InvalidMessage(f"field {name!r} must be a list, got {type(value).__name__}")
        (item,) = get_args(hint)
        return [_check(v, item, f"{name}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise InvalidMessage(f"field {name!r} must be a map, got {type(value).__name__}")
        _, item = get_args(hint)
        return {k: _check(v, item, f"{name}.{k}") for k, v in value.items()}
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise InvalidMessage(f"field {name!r} must be {hint.__name__}, got {type(value).__name__}")
    return value
