"""Result records: what one observation's run of a task produced.

Field names are the paper's. `duration` is the summed server-reported inference time of
every generation of the observation; `error` is set (and the observation counted as an
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
    """The record of type `kind` (a task kind's `KindSpec.record`) in `data`."""
    unknown = sorted(set(data).difference(_field_names(kind)))
    if unknown:
        raise ValueError(f"{kind.__name__}: unknown field(s) {', '.join(unknown)}")
    return kind(**data)


def error_record(kind: type[ResultRecord], idx: int, label: str, error: str, duration: float) -> ResultRecord:
    return kind(idx=idx, label=label, error=error, duration=duration)


def with_duration(record: ResultRecord, duration: float) -> ResultRecord:
    return replace(record, duration=duration)
