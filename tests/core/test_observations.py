"""Validation of observations and task configs: every mistake names its field or option."""

from __future__ import annotations

import pytest

from services.core.config import InvalidTaskConfig, TaskConfig
from services.core.observations import (
    InvalidObservation,
    MultiChoiceObservation,
    observation_from_dict,
    observation_to_dict,
)


def test_observations_round_trip() -> None:
    data = {"paragraph": "p", "question": "q?", "choices": ["a", "b"], "label": "b", "idx": 4}
    observation = observation_from_dict("multi-choice", data)
    assert observation == MultiChoiceObservation(4, "b", "p", "q?", ("a", "b"))
    assert observation_to_dict(observation) == data


@pytest.mark.parametrize(
    ("category", "data", "message"),
    [
        ("poetry", {}, "unknown dataset category 'poetry'"),
        ("sentiment", {"idx": 0, "label": "positive"}, "missing field 'text'"),
        ("sentiment", {"idx": "0", "label": "positive", "text": "t"}, "field 'idx' must be an integer"),
        ("sentiment", {"idx": True, "label": "positive", "text": "t"}, "field 'idx' must be an integer"),
        ("sentiment", {"idx": 0, "label": "positive", "text": 5}, "field 'text' must be a string"),
        ("sentiment", {"idx": 0, "label": "happy", "text": "t"}, "field 'label' must be one of"),
        ("entailment", {"idx": 0, "label": "maybe", "paragraph": "p", "hypothesis": "h"}, "field 'label' must be one"),
        ("multi-choice", {"idx": 0, "label": "a", "paragraph": "p", "question": "q", "choices": []}, "'choices'"),
        ("multi-choice", {"idx": 0, "label": "c", "paragraph": "p", "question": "q", "choices": ["a"]}, "not one of"),
    ],
)
def test_invalid_observations_name_the_field(category: str, data: dict, message: str) -> None:
    with pytest.raises(InvalidObservation, match=message):
        observation_from_dict(category, data)


def test_task_config_validation_and_mask_tokens() -> None:
    assert TaskConfig.of([]).mask_token == "[REDACTED]"
    config = TaskConfig.of(["m-removed", "e-persona-human"])
    assert config.mask_token == "[REMOVED]" and config.mask_word == "removed"
    assert config.persona("e") == "human" and config.persona("c") is None
    assert config.sorted() == ["e-persona-human", "m-removed"]
    with pytest.raises(InvalidTaskConfig, match="unknown task option 'e-implicit-target'"):
        TaskConfig.of(["e-implicit-target"])
    with pytest.raises(InvalidTaskConfig, match="exclude each other"):
        TaskConfig.of(["c-persona-you", "c-persona-human"])
