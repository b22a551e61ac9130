"""golden_templates.json: chat renderings and generation defaults of the paper's formats."""

from __future__ import annotations

import pytest

from services.core.chat import (
    DEFAULT_SYSTEM,
    FORMATS,
    NO_SYSTEM,
    ChatTurn,
    SystemMessage,
    SystemMessageNotSupported,
    generation_defaults,
)
from tests.conftest import golden

CASES = golden("templates")
RENDERINGS = [c for c in CASES if "prompt" in c]
ERRORS = [c for c in CASES if "error" in c]
DEFAULTS = [c for c in CASES if "generation_defaults" in c]
CUSTOM = SystemMessage.parse("You are a terse assistant.")


def _system(name: str) -> SystemMessage:
    return {"default": DEFAULT_SYSTEM, "none": NO_SYSTEM, "custom": CUSTOM}[name]


def test_every_case_is_checked() -> None:
    assert len(RENDERINGS) + len(ERRORS) + len(DEFAULTS) == len(CASES)
    assert {c["model_type"] for c in DEFAULTS} == {"Llama2", "Falcon", "Mistral"}


@pytest.mark.parametrize("case", RENDERINGS, ids=lambda c: f"{c['model_type']}-{c['system_message']}")
def test_rendering(case: dict) -> None:
    history = [ChatTurn(turn["user"], turn["assistant"]) for turn in case["history"]]
    assert FORMATS[case["model_type"]].render(history, _system(case["system_message"])) == case["prompt"]


@pytest.mark.parametrize("case", ERRORS, ids=lambda c: f"{c['model_type']}-{c['system_message']}")
def test_refused_system_message(case: dict) -> None:
    with pytest.raises(SystemMessageNotSupported) as refused:
        FORMATS[case["model_type"]].render([ChatTurn("What is 1 + 1?")], _system(case["system_message"]))
    assert str(refused.value) == case["error"]


@pytest.mark.parametrize("case", DEFAULTS, ids=lambda c: c["model_type"])
def test_generation_defaults(case: dict) -> None:
    expected = case["generation_defaults"]
    assert generation_defaults(FORMATS[case["model_type"]], seed=expected["seed"]).to_dict() == expected
