"""Every case of golden_tasks.json: each prompt to the character, and the exact record."""

from __future__ import annotations

import pytest

from services.core.config import TaskConfig
from services.core.observations import observation_from_dict
from services.core.records import record_to_dict
from services.core.replay import Finished, Generation, Pending, advance
from services.core.tasks import Task
from tests.conftest import golden

CASES = golden("tasks")


def _case_id(index: int) -> str:
    case = CASES[index]
    return f"{index}-{case['dataset_category']}-{case['task']}-{'+'.join(case['config']) or 'default'}"


def test_the_golden_file_covers_all_fifteen_tasks() -> None:
    assert len(CASES) == 408
    assert len({(c["dataset_category"], c["task"]) for c in CASES}) == 15


@pytest.mark.parametrize("index", range(len(CASES)), ids=_case_id)
def test_golden_case(index: int) -> None:
    case = CASES[index]
    task = Task(case["task"], case["dataset_category"], TaskConfig.of(case["config"]))
    observation = observation_from_dict(case["dataset_category"], case["observation"])

    answers: list[Generation] = []
    for step, (prompt, response) in enumerate(case["exchanges"]):
        outcome = advance(task, observation, answers)
        assert outcome == Pending(step=step, prompt=prompt)
        answers.append(Generation(response, duration=0.5))

    outcome = advance(task, observation, answers)
    assert isinstance(outcome, Finished)
    record = record_to_dict(outcome.record)
    expected = case["result"]
    assert {key: record[key] for key in expected} == expected
    # Beyond the paper's fields, a record carries only its idx, summed duration and error.
    assert set(record) - set(expected) == {"idx", "duration", "error"}
    assert record["idx"] == case["observation"]["idx"]
    assert record["duration"] == pytest.approx(0.5 * len(case["exchanges"]))
    assert record["error"] is None
