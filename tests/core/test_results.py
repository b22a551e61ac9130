"""Aggregates, the paper's summary numbers, experiment ids and the result JSON."""

from __future__ import annotations

import pytest

from services.core.records import (
    AnswerableRecord,
    ClassifyRecord,
    FaithfulRecord,
    error_record,
    record_from_dict,
    record_to_dict,
)
from services.core.results import ExperimentSpec, Proportion, aggregate, result_json, summary


def _faithful(label: str, predict: str | None, new: str | None, faithful: bool | None) -> FaithfulRecord:
    correct = None if predict is None else predict == label
    return FaithfulRecord(
        idx=0, label=label, predict=predict, correct=correct, explain_predict=new, faithful=faithful, duration=1.0
    )


def test_faithfulness_aggregate_counts_and_table() -> None:
    records = [
        _faithful("positive", "positive", "negative", True),
        _faithful("positive", "positive", "positive", False),
        _faithful("negative", "positive", "negative", False),
        _faithful("negative", "negative", "positive", True),
        _faithful("negative", None, None, None),  # prediction not extracted
        _faithful("positive", "positive", None, None),  # explanation not extracted
        error_record(FaithfulRecord, 7, "negative", "prompt too long", 0.25),
    ]
    running = aggregate("counterfactual", records)
    results = running.results()
    assert {k: v for k, v in results.items() if k != "answer"} == {
        "faithful": 2,
        "faithful_and_correct": 2,
        "correct": 3,
        "missmatch": 2,
        "error": 1,
        "total": 7,
    }
    assert results["answer"] == [
        {"count": 1, "label": "negative", "predict": "negative", "explain_predict": "positive"},
        {"count": 1, "label": "negative", "predict": "positive", "explain_predict": "negative"},
        {"count": 1, "label": "positive", "predict": "positive", "explain_predict": "negative"},
        {"count": 1, "label": "positive", "predict": "positive", "explain_predict": "positive"},
    ]
    assert running.duration == pytest.approx(6.25)
    numbers = summary(results)
    assert numbers["accuracy"] == Proportion(3, 5)
    assert numbers["faithfulness"] == Proportion(2, 3)
    assert str(numbers["faithfulness"]) == "66.7% (2/3)"


def test_aggregates_do_not_depend_on_order() -> None:
    records = [_faithful("positive", p, n, f) for p, n, f in [("positive", "negative", True), ("negative", None, None)]]
    assert aggregate("redacted", records).results() == aggregate("redacted", records[::-1]).results()


def test_classify_and_answerable_aggregates() -> None:
    classify = aggregate(
        "classify",
        [
            ClassifyRecord(idx=0, label="yes", predict="yes", correct=True),
            ClassifyRecord(idx=1, label="no", predict="unknown", correct=False),
            ClassifyRecord(idx=2, label="no", predict=None, correct=None),
        ],
    ).results()
    assert classify == {
        "answer": [{"count": 1, "label": "no", "predict": "unknown"}, {"count": 1, "label": "yes", "predict": "yes"}],
        "correct": 1,
        "missmatch": 1,
        "error": 0,
        "total": 3,
    }
    assert summary(classify) == {"accuracy": Proportion(1, 2)}

    answerable = aggregate(
        "answerable",
        [
            AnswerableRecord(idx=0, label="yes", predict="yes", correct=True, ability="yes", introspect=True),
            AnswerableRecord(idx=1, label="no", predict="yes", correct=False, ability="no", introspect=False),
            AnswerableRecord(idx=2, label="no", predict="no", correct=True, ability=None, introspect=None),
        ],
    ).results()
    assert answerable["introspect"] == 1
    assert answerable["introspect_and_correct"] == 1
    assert answerable["missmatch"] == 1
    assert answerable["answer"][0] == {"count": 1, "label": "no", "predict": "yes", "ability": "no"}
    assert summary(answerable)["introspection"] == Proportion(1, 1)


def test_a_proportion_of_nothing_is_not_a_number() -> None:
    assert Proportion(0, 0).value is None
    assert str(Proportion(0, 0)) == "n/a (0/0)"


def test_experiment_id_and_result_json() -> None:
    spec = ExperimentSpec("Llama2-70B", "none", "IMDB", "test", "redacted", ("m-removed", "e-short"), 0, 10)
    assert spec.experiment_id == "analysis_m-llama2-70b_y-none_d-imdb_p-test_t-redacted_c-e-short-m-removed_s-0"
    assert ExperimentSpec("falcon-7b", "default", "RTE", "test", "classify").experiment_id == (
        "analysis_m-falcon-7b_y-default_d-rte_p-test_t-classify_c-_s-0"
    )
    running = aggregate("redacted", [_faithful("positive", "positive", "unknown", True)])
    result = result_json(spec, running, setup_seconds=2.5)
    assert result["args"]["task_config"] == ["e-short", "m-removed"]
    assert result["args"]["max_observations"] == 10
    assert result["results"]["faithful"] == 1
    assert result["durations"] == {"setup": 2.5, "eval": 1.0}


def test_records_round_trip_through_dicts() -> None:
    record = _faithful("positive", "positive", "negative", True)
    assert record_from_dict(FaithfulRecord, record_to_dict(record)) == record
    with pytest.raises(ValueError, match="unknown field"):
        record_from_dict(ClassifyRecord, {"idx": 0, "label": "yes", "faithful": True})
