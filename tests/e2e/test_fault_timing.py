"""The chaos tests' recovery timer (`tests/support/faults.py`), on scripted job statuses."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from tests.support import faults


def _scripted(monkeypatch: pytest.MonkeyPatch, *statuses: dict[str, Any]) -> None:
    answers = iter(statuses)
    monkeypatch.setattr(faults, "get_json", lambda _url: [{"job_id": "j", **next(answers)}])


def test_a_job_with_every_record_in_needs_no_recovery_even_while_its_files_are_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # All records stored, the result files not yet written: no record can follow, and
    # waiting for one would time out (what made a chaos test fail on a fast machine).
    _scripted(monkeypatch, {"received": 600, "expected": 600, "complete": False})
    pipeline: Any = SimpleNamespace(aggregator_url="http://aggregator")
    assert faults.seconds_to_next_record(pipeline, "j", since=0.0, timeout=1.0) is None


def test_the_recovery_is_the_time_to_the_first_record_after_the_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    _scripted(
        monkeypatch,
        {"received": 10, "expected": 600, "complete": False},
        {"received": 10, "expected": 600, "complete": False},
        {"received": 11, "expected": 600, "complete": False},
    )
    pipeline: Any = SimpleNamespace(aggregator_url="http://aggregator")
    seconds = faults.seconds_to_next_record(pipeline, "j", since=0.0, timeout=60.0)
    assert seconds is not None and seconds > 0
