"""Result records: what one observation's run of a task produced.

Field names are the paper's. `duration` is the summed server-reported inference time of
the observation's generations that a server computed for this run (one answered from the
generation cache counts 0); `error` is set (and the observation counted as an
error) when a generation was rejected by the server for the request itself.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, TypeAlias


@dataclass(frozen=True, slots=True, kw_only=True)
class ClassifyRecord:
    idx: int
    label: str
    predict_prompt: str | None = None
    predict_answer: str | None = None
    predict: str | None = None
    correct: bool | None = None
    duration: float = 0.0
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AnswerableRecord(ClassifyRecord):
    ability_prompt: str | None = None
    ability_answer: str | None = None
    ability: str | None = None
    introspect: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FaithfulRecord(ClassifyRecord):
    explain_prompt: str | None = None
    explain_answer: str | None = None
    explain: str | None = None
    explain_predict_prompt: str | None = None
    explain_predict_answer: str | None = None
    explain_predict: str | None = None
    faithful: bool | None = None


ResultRecord: TypeAlias = ClassifyRecord | AnswerableRecord | FaithfulRecord


_FIELD_NAMES: dict[type, tuple[str, ...]] = {
    kind: tuple(field.name for field in fields(kind)) for kind in (ClassifyRecord, AnswerableRecord, FaithfulRecord)
}


def _field_names(kind: type[ResultRecord]) -> tuple[str, ...]:
    return _FIELD_NAMES[kind]


def record_to_dict(record: ResultRecord) -> dict[str, Any]:
    # Every field holds a plain value: a shallow copy is what `asdict` gives, without its deep copies.
    return {name: getattr(record, name) for name in _field_names(type(record))}


def record_from_dict(kind: type[ResultRecord], data: dict[str, Any]) -> ResultRecord:
    """The record of type `kind` (a task kind's `KindSpec.record`) in `data`, every field's
    type checked: a record that is stored and counted must not fail later, when counted
    again or written out. Raises ValueError naming the first bad field."""
    if not isinstance(data, dict):
        raise ValueError(f"{kind.__name__}: a record is a map, got {type(data).__name__}")
    unknown = sorted(str(name) for name in set(data).difference(_field_names(kind)))
    if unknown:
        raise ValueError(f"{kind.__name__}: unknown field(s) {', '.join(unknown)}")
    for name, value in data.items():
        expected = _FIELD_TYPES[name]
        if not _fits(value, expected):
            raise ValueError(f"{kind.__name__}: field {name!r} must be {_describe(expected)}, got {value!r}")
    duration = data.get("duration", 0.0)
    if not 0 <= duration < float("inf"):  # negative, infinite or NaN
        raise ValueError(f"{kind.__name__}: field 'duration' must be a number of seconds, got {duration!r}")
    missing = [name for name in ("idx", "label") if name not in data]
    if missing:
        raise ValueError(f"{kind.__name__}: field {missing[0]!r} is missing")
    return kind(**data)


# What each field may hold; None only where the record's type allows it.
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "idx": (int,), "label": (str,), "duration": (int, float),
    "correct": (bool, type(None)), "introspect": (bool, type(None)), "faithful": (bool, type(None)),
    **{name: (str, type(None)) for name in (
        "predict_prompt", "predict_answer", "predict", "error", "ability_prompt", "ability_answer", "ability",
        "explain_prompt", "explain_answer", "explain", "explain_predict_prompt", "explain_predict_answer",
        "explain_predict",
    )},
}  # fmt: skip


def _fits(value: Any, expected: tuple[type, ...]) -> bool:
    # bool is an int to Python; nowhere here is a flag a number, or a number a flag.
    if isinstance(value, bool):
        return bool in expected
    return isinstance(value, expected) and not (bool in expected and isinstance(value, int))


def _describe(expected: tuple[type, ...]) -> str:
    names = {int: "a whole number", float: "a number", str: "text", bool: "true or false", type(None): "null"}
    if float in expected:  # a whole number is a number
        expected = tuple(t for t in expected if t is not int)
    return " or ".join(names[t] for t in expected)


def error_record(kind: type[ResultRecord], idx: int, label: str, error: str, duration: float) -> ResultRecord:
    return kind(idx=idx, label=label, error=error, duration=duration)


def with_duration(record: ResultRecord, duration: float) -> ResultRecord:
    return replace(record, duration=duration)
