"""Observations: one row of a dataset split, as the tasks see it.

Three dataset categories exist, each with its own observation shape. Every
observation carries `idx` (its row number in the split selection, assigned
before shuffling) and `label` (a string).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, TypeAlias, get_args

DatasetCategory: TypeAlias = Literal["sentiment", "entailment", "multi-choice"]
DATASET_CATEGORIES: tuple[DatasetCategory, ...] = get_args(DatasetCategory)

SplitName: TypeAlias = Literal["train", "valid", "test"]
SPLIT_NAMES: tuple[SplitName, ...] = get_args(SplitName)


MAX_IDX = 2**63  # an observation's position is a signed 64-bit number wherever it is stored


class InvalidObservation(ValueError):
    """An observation dict does not have the shape its category requires."""


@dataclass(frozen=True, slots=True)
class SentimentObservation:
    idx: int
    label: str
    text: str

    category = "sentiment"

    @property
    def paragraph(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class EntailmentObservation:
    idx: int
    label: str
    paragraph: str
    hypothesis: str

    category = "entailment"


@dataclass(frozen=True, slots=True)
class MultiChoiceObservation:
    idx: int
    label: str
    paragraph: str
    question: str
    choices: tuple[str, ...]

    category = "multi-choice"


Observation: TypeAlias = SentimentObservation | EntailmentObservation | MultiChoiceObservation

OBSERVATION_TYPES: dict[str, type[Observation]] = {
    "sentiment": SentimentObservation,
    "entailment": EntailmentObservation,
    "multi-choice": MultiChoiceObservation,
}

SENTIMENT_LABELS = ("negative", "positive")
ENTAILMENT_LABELS = ("yes", "no")


def observation_to_dict(observation: Observation) -> dict[str, Any]:
    data = asdict(observation)
    if isinstance(observation, MultiChoiceObservation):
        data["choices"] = list(observation.choices)
    return data


def observation_from_dict(category: str, data: dict[str, Any]) -> Observation:
    """Build an observation of `category` from a plain dict, naming the bad field on error."""
    try:
        kind = OBSERVATION_TYPES[category]
    except KeyError:
        raise InvalidObservation(
            f"unknown dataset category {category!r}; expected one of {', '.join(OBSERVATION_TYPES)}"
        ) from None

    fields: dict[str, Any] = {}
    for name in kind.__dataclass_fields__:
        if name not in data:
            raise InvalidObservation(f"{category} observation is missing field {name!r}")
        value = data[name]
        if name == "idx":
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidObservation(f"field 'idx' must be an integer, got {value!r}")
            if not 0 <= value < MAX_IDX:  # stores key records by a signed 64-bit idx
                raise InvalidObservation(f"field 'idx' must be from 0 to 2**63 - 1, got {value}")
        elif name == "choices":
            if not isinstance(value, (list, tuple)) or not value or not all(isinstance(c, str) for c in value):
                raise InvalidObservation("field 'choices' must be a non-empty list of strings")
            value = tuple(value)
        elif not isinstance(value, str):
            raise InvalidObservation(f"field {name!r} must be a string, got {type(value).__name__}")
        fields[name] = value

    observation = kind(**fields)
    _check_label(observation)
    return observation


def _check_label(observation: Observation) -> None:
    match observation:
        case SentimentObservation(label=label) if label not in SENTIMENT_LABELS:
            raise InvalidObservation(f"field 'label' must be one of {SENTIMENT_LABELS}, got {label!r}")
        case EntailmentObservation(label=label) if label not in ENTAILMENT_LABELS:
            raise InvalidObservation(f"field 'label' must be one of {ENTAILMENT_LABELS}, got {label!r}")
        case MultiChoiceObservation(label=label, choices=choices) if label not in choices:
            raise InvalidObservation(f"field 'label' {label!r} is not one of the choices {list(choices)}")
