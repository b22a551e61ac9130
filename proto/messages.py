"""Every message the services exchange, its schema version, and its msgpack encoding.

On the wire a message is a msgpack map: the fields below, plus `v` (the schema version)
and `kind` (which message it is). `decode` checks all three against what the receiving
subject expects and names the first bad field it finds, so a malformed message can go to
the dead-letter stream with a reason a person can act on.

The types are msgspec Structs: msgspec encodes and validates msgpack in C, an order of
magnitude faster than checking dataclasses field by field in Python, and the services
decode and encode several messages per generation.

These types know nothing of the protocol: an observation or a result record travels as a
plain map here and is validated by `services.core` where it is used.
"""

from __future__ import annotations

import re
import typing
from functools import lru_cache
from typing import Annotated, Any, ClassVar, Literal, TypeAlias, TypeVar, Union

import msgspec

SCHEMA_VERSION = 1
MAX_MESSAGE_BYTES = 512 << 10  # well under JetStream's default 1 MiB payload limit

replace = msgspec.structs.replace  # a copy of a message with some fields changed

# Whole numbers a message may carry: non-negative and within a signed 64-bit integer, as
# stores key them and model servers read them; anything else is refused at decoding.
Natural = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
# Unix seconds, 0 where unknown (finite: NaN and infinities are refused).
Seconds = Annotated[float, msgspec.Meta(ge=0.0, le=1e12)]
# Provenance: short texts, so that what rides on every reply and result stays small.
SourceText = Annotated[str, msgspec.Meta(max_length=256)]
MAX_SOURCES = 4  # distinct answer sources one observation (or one result) carries


class InvalidMessage(ValueError):
    """A message that cannot be decoded into the type its subject carries."""


class _Part(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A part of a message."""


class _Message(_Part, frozen=True, tag_field="kind"):
    """A whole message: tagged with its kind, stamped with the schema version."""

    KIND: ClassVar[str]


# -- parts shared by several messages --


class Sampling(_Part, frozen=True):
    """Generation parameters, as TGI names them."""

    temperature: float = 0.1
    top_p: float = 0.95
    repetition_penalty: float = 1.2
    top_k: Natural = 50
    max_new_tokens: Natural = 1024
    stop: list[str] = []
    seed: Natural = 0


class Chat(_Part, frozen=True):
    """Whom to ask and how: the model, its chat template, system message and sampling."""

    model: str  # a shorthand (llama2-7b), a Hugging Face id, or a local model's name
    system: str  # "default", "none", or a custom system message text
    sampling: Sampling
    # A local model's tokenizer_config.json entries (chat_template, bos_token, eos_token),
    # so the gateway can render its template without the file.
    template: dict[str, Any] | None = None


class Answer(_Part, frozen=True):
    """One generation as a task sees it: cleaned text, server seconds, or an error."""

    text: str
    duration: float = 0.0
    error: str | None = None


class AnswerSource(_Part, frozen=True):
    """Where a gateway's answers come from: the kind of server, its host:port (never
    credentials), and the model id the server reports. A cache-only gateway (offline) names
    the model its cache holds."""

    backend: Literal["stand-in", "tgi", "openai-compatible", "cache-only"]
    endpoint: SourceText  # host:port, comma-separated for a pool; a Kubernetes Service as namespace/name:port
    model_id: SourceText


class WorkItem(_Part, frozen=True, omit_defaults=True):
    """One observation's state in the protocol: all the scorer needs to take the next step.

    Fields at their defaults are left out on the wire (no answers yet, no sources): so a
    work item with no sources reads at a service older than `sources`, during an upgrade."""

    job_id: str
    task: str
    category: str
    config: list[str]
    observation: dict[str, Any]
    chat: Chat
    answers: list[Answer] = []
    # Where its answers so far came from (each distinct source once): carried, as the
    # transcript is, so that the scored result can say it. Absent in older messages.
    sources: Annotated[list[AnswerSource], msgspec.Meta(max_length=MAX_SOURCES)] = []

    @property
    def idx(self) -> int:
        idx = self.observation.get("idx")
        return idx if isinstance(idx, int) else -1


# -- the messages --


class Job(_Message, frozen=True, tag="job"):
    """An experiment to run, as a user submits it."""

    KIND: ClassVar[str] = "job"
    job_id: str
    model: str
    dataset: str  # a dataset name (IMDB, RTE, ...) or a path to a local data file
    task: str
    split: str = "test"
    config: list[str] = []
    seed: Natural = 0
    system_message: str | None = None  # None: the paper's choice for the model
    limit: Natural | None = None  # at most this many observations, after shuffling
    start: Natural = 0  # then only positions [start, stop) of the shuffled split
    stop: Natural | None = None
    category: str | None = None  # for a local data file
    columns: dict[str, str] = {}  # local file column -> field
    labels: dict[str, str] = {}  # raw label -> label
    mirror: str | None = None  # folder with local copies of the datasets' raw files
    v: int = SCHEMA_VERSION


class JobManifest(_Message, frozen=True, tag="job-manifest"):
    """What the producer made of a job: its experiment and how many results to expect."""

    KIND: ClassVar[str] = "job-manifest"
    job: Job
    experiment_id: str
    experiment: dict[str, Any]  # the paper's `args` object
    expected: Natural
    setup_seconds: float = 0.0
    # Provenance (absent in older manifests): the chat settings the job's questions are
    # asked with, and when the producer took the job.
    chat: Chat | None = None
    started_at: Seconds = 0.0
    v: int = SCHEMA_VERSION


class ObservationMessage(_Message, frozen=True, tag="observation"):
    """One row of a job's split, entering the protocol."""

    KIND: ClassVar[str] = "observation"
    work: WorkItem
    v: int = SCHEMA_VERSION


class GenerationRequest(_Message, frozen=True, tag="generation-request"):
    """A question for the model; `work` travels along so the reply carries the state back."""

    KIND: ClassVar[str] = "generation-request"
    message: str  # the user turn; the gateway renders the chat template around it
    work: WorkItem
    v: int = SCHEMA_VERSION


class GenerationReply(_Message, frozen=True, tag="generation-reply"):
    KIND: ClassVar[str] = "generation-reply"
    answer: Answer
    work: WorkItem
    cached: bool = False
    source: AnswerSource | None = None  # the gateway's servers; absent from an older gateway
    v: int = SCHEMA_VERSION


class ScoredResult(_Message, frozen=True, tag="scored-result"):
    """The result record of one observation (`record` is the paper's record as a map)."""

    KIND: ClassVar[str] = "scored-result"
    job_id: str
    task: str
    idx: Natural
    record: dict[str, Any]
    sources: Annotated[list[AnswerSource], msgspec.Meta(max_length=MAX_SOURCES)] = []  # the work item's
    v: int = SCHEMA_VERSION


class JobEvent(_Message, frozen=True, tag="job-event"):
    """Something that happened to a job: accepted, rejected, completed."""

    KIND: ClassVar[str] = "job-event"
    job_id: str
    event: str
    detail: str = ""
    at: float = 0.0  # unix seconds
    v: int = SCHEMA_VERSION


class JobProgress(_Message, frozen=True, tag="job-progress"):
    """How far the producer got with a job: the first `published` of its `expected`
    observations (in the order it publishes them) are stored. Kept, the last one per job,
    so that a job delivered again goes on from there."""

    KIND: ClassVar[str] = "job-progress"
    job_id: str
    published: Natural
    expected: Natural
    v: int = SCHEMA_VERSION


class DeadLetter(_Message, frozen=True, tag="dead-letter"):
    """A message a service could not process, kept with the reason (an oversized one, cut)."""

    KIND: ClassVar[str] = "dead-letter"
    MAX_BYTES: ClassVar[int] = MAX_MESSAGE_BYTES + (64 << 10)  # the kept payload and the envelope
    service: str
    subject: str  # where it was published, so it can be replayed there
    reason: str
    payload: bytes
    msg_id: str | None = None
    deliveries: int = 1
    at: float = 0.0
    v: int = SCHEMA_VERSION


Message: TypeAlias = (
    Job
    | JobManifest
    | ObservationMessage
    | GenerationRequest
    | GenerationReply
    | ScoredResult
    | JobEvent
    | JobProgress
    | DeadLetter
)
MESSAGE_TYPES: dict[str, type[Message]] = {t.KIND: t for t in typing.get_args(Message)}
M = TypeVar("M", bound=Message)

_ENCODER = msgspec.msgpack.Encoder()


class _Envelope(msgspec.Struct):
    """What is checked before the body: the version and the kind (other fields are skipped)."""

    v: Any = None
    kind: Any = None


_ENVELOPE = msgspec.msgpack.Decoder(_Envelope)


def encode(message: Message) -> bytes:
    return _ENCODER.encode(message)


def encode_part(part: _Part) -> bytes:
    """The msgpack bytes of a message part: the same part always gives the same bytes."""
    return _ENCODER.encode(part)


def decode(payload: bytes, *expected: type[M], max_bytes: int = MAX_MESSAGE_BYTES) -> M:
    """The message in `payload`, which must be one of the `expected` types (any, if none)."""
    if len(payload) > max_bytes:
        raise InvalidMessage(f"message of {len(payload)} bytes exceeds {max_bytes}")
    # type[M] of a bound that is a union is not seen as a type[Message]: say so.
    allowed = typing.cast(tuple[type[Message], ...], expected) if expected else tuple(MESSAGE_TYPES.values())
    try:
        envelope = _ENVELOPE.decode(payload)
    except msgspec.ValidationError:
        raise InvalidMessage("message is not a map") from None
    except msgspec.DecodeError as error:
        raise InvalidMessage(f"not msgpack ({error})") from None
    except RecursionError:  # msgspec's own limit on nesting, reached by a hostile message
        raise InvalidMessage("values nested too deeply") from None
    if envelope.v != SCHEMA_VERSION:
        raise InvalidMessage(f"field 'v': schema version {envelope.v!r} is not {SCHEMA_VERSION}")
    if not isinstance(envelope.kind, str) or envelope.kind not in _kinds(allowed):
        raise InvalidMessage(f"field 'kind': {envelope.kind!r} is not {' or '.join(t.KIND for t in allowed)}")
    try:
        return typing.cast(M, _decoder(allowed).decode(payload))
    except msgspec.ValidationError as error:
        raise InvalidMessage(_field_error(str(error))) from None
    except msgspec.DecodeError as error:
        raise InvalidMessage(f"not msgpack ({error})") from None
    except RecursionError:
        raise InvalidMessage("values nested too deeply") from None


@lru_cache(maxsize=64)
def _kinds(types: tuple[type[Message], ...]) -> frozenset[str]:
    return frozenset(t.KIND for t in types)


@lru_cache(maxsize=64)
def _decoder(types: tuple[type[Message], ...]) -> msgspec.msgpack.Decoder[Any]:
    return msgspec.msgpack.Decoder(Union[types] if len(types) > 1 else types[0])  # noqa: UP007 (a runtime union of a tuple)


_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$")
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]+)`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<name>[^`]+)`$")
_EXPECTED = re.compile(r"^Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`$")
_TYPE_NAMES = {"object": "a map", "array": "a list"}


def _field_error(text: str) -> str:
    """msgspec's message in this project's words: the field's dotted path first."""
    match = _AT.match(text)
    what, path = (match["what"], (match["path"] or "").lstrip(".")) if match else (text, "")
    if missing := _MISSING.match(what):
        return f"field {_join(path, missing['name'])!r} is missing"
    if unknown := _UNKNOWN.match(what):
        return f"unknown field {_join(path, unknown['name'])!r}"
    if expected := _EXPECTED.match(what):
        want, got = (_TYPE_NAMES.get(name, name) for name in (expected["want"], expected["got"]))
        what = f"must be {want}, got {got}"
        return f"field {path!r} {what}" if path else f"message {what}"
    return f"field {path!r}: {what}" if path else what


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
