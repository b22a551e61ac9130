"""Driving a task over a transcript: pending questions, errors, and misuse."""

from __future__ import annotations

import pytest

from services.core.config import InvalidTaskConfig, TaskConfig
from services.core.observations import EntailmentObservation, MultiChoiceObservation, SentimentObservation
from services.core.replay import Finished, Generation, Pending, Replay, TranscriptTooLong, advance, run_transcript
from services.core.tasks import KINDS, TASK_KINDS, Task, UnknownTask, counterfactual_target, is_introspective

REVIEW = SentimentObservation(idx=3, label="positive", text="A warm, funny film.")


def test_a_task_stops_at_its_first_unanswered_question() -> None:
    task = Task("counterfactual", "sentiment")
    first = advance(task, REVIEW, [])
    assert isinstance(first, Pending) and first.step == 0
    second = advance(task, REVIEW, [Generation("positive")])
    assert isinstance(second, Pending) and second.step == 1
    assert 'such that the sentiment is "negative"' in second.prompt


def test_a_failed_explanation_ends_the_task_early_with_null_fields() -> None:
    record = run_transcript(Task("redacted", "sentiment"), REVIEW, ["positive", "I am sorry, I cannot do that."])
    assert record.explain is None and record.explain_predict_prompt is None and record.faithful is None
    assert record.correct is True


def test_an_unextractable_word_list_skips_the_last_question() -> None:
    record = run_transcript(Task("importance", "sentiment"), REVIEW, ["negative", ""])
    assert record.explain is None and record.faithful is None and record.correct is False


def test_a_generation_error_makes_the_observation_an_error() -> None:
    task = Task("importance", "sentiment", TaskConfig.of(["m-removed"]))
    outcome = advance(task, REVIEW, [Generation("positive", 0.5), Generation("", 0.25, error="422: input too long")])
    assert isinstance(outcome, Finished)
    assert outcome.record.error == "422: input too long"
    assert outcome.record.duration == pytest.approx(0.75)
    assert outcome.record.predict is None  # an error record carries no partial results


@pytest.mark.parametrize("kind", TASK_KINDS)
def test_a_running_replay_given_answers_one_by_one_agrees_with_replaying_from_the_start(kind: str) -> None:
    """The gateway keeps a replay running from answer to answer (`Replay.give`); the scorer
    replays the transcript from the start (`advance`). Every step of every task agrees."""
    task = Task(kind, "sentiment")  # type: ignore[arg-type]
    replies = ["negative", 'Here is the paragraph: "A cold, dull film."', "yes", "A, film", "positive"]
    replay, answers = Replay(task, REVIEW), []
    while isinstance(replay.outcome, Pending):
        assert replay.outcome == advance(task, REVIEW, answers)
        answers.append(Generation(replies[len(answers)], duration=0.25))
        replay.give(answers[-1])
    assert replay.outcome == advance(task, REVIEW, answers) and isinstance(replay.outcome, Finished)
    assert replay.outcome.record.duration == pytest.approx(0.25 * len(answers))
    with pytest.raises(TranscriptTooLong, match=f"finished after {len(answers)} answers, {len(answers) + 1} given"):
        replay.give(Generation("extra"))


def test_a_running_replay_ends_at_a_generation_error() -> None:
    task = Task("counterfactual", "sentiment")
    answers = [Generation("positive", 0.5), Generation("", 0.25, error="422: input too long")]
    replay = Replay(task, REVIEW)
    replay.give(answers[0])
    outcome = replay.give(answers[1])
    assert outcome == advance(task, REVIEW, answers) and replay.ended_by_error
    assert isinstance(outcome, Finished) and outcome.record.error == "422: input too long"
    assert replay.give(Generation("after the error")) == outcome  # nothing was asked after it, as in advance
    assert advance(task, REVIEW, [*answers, Generation("after the error")]) == outcome


def test_too_many_or_too_few_answers_are_refused() -> None:
    with pytest.raises(TranscriptTooLong):
        advance(Task("classify", "sentiment"), REVIEW, [Generation("positive"), Generation("extra")])
    with pytest.raises(ValueError, match="transcript ends before question 2"):
        run_transcript(Task("answerable", "sentiment"), REVIEW, ["positive"])


def test_tasks_refuse_unknown_kinds_and_other_categories() -> None:
    with pytest.raises(UnknownTask, match="unknown task 'summarise'"):
        Task("summarise", "sentiment")  # type: ignore[arg-type]
    with pytest.raises(UnknownTask, match="unknown dataset category 'poetry'"):
        Task("classify", "poetry")
    with pytest.raises(UnknownTask, match="cannot run a sentiment observation"):
        Task("classify", "entailment").program(REVIEW)


def test_counterfactual_targets_oppose_the_label() -> None:
    assert counterfactual_target(EntailmentObservation(0, "yes", "p", "h")) == "no"
    assert counterfactual_target(EntailmentObservation(0, "no", "p", "h")) == "yes"
    quiz = MultiChoiceObservation(0, "office", "p", "q?", ("bathroom", "hallway", "office"))
    assert counterfactual_target(quiz) == "bathroom"  # wraps around


def test_introspection_for_an_unextracted_sentiment_prediction() -> None:
    assert is_introspective(REVIEW, "yes", None) is False
    assert is_introspective(REVIEW, "no", "unknown") is True
    assert is_introspective(REVIEW, None, "positive") is None


def test_implicit_multi_choice_counterfactual_accepts_any_other_choice() -> None:
    quiz = MultiChoiceObservation(
        0, "office", "Mary went to the office.", "Where is Mary?", ("bathroom", "hallway", "office")
    )
    task = Task("counterfactual", "multi-choice", TaskConfig.of(["e-implcit-target"]))
    assert run_transcript(task, quiz, ["c)", "Paragraph: Mary went home.", "b)"]).faithful is True
    assert run_transcript(task, quiz, ["c)", "Paragraph: Mary went home.", "c)"]).faithful is False
    assert run_transcript(task, quiz, ["c)", "Paragraph: Mary went home.", "d)"]).faithful is False


def test_every_task_kind_is_declared_once_with_everything_it_needs() -> None:
    assert tuple(KINDS) == TASK_KINDS  # the type checker's names and the table agree
    for kind, spec in KINDS.items():
        assert spec.table[:2] == ("label", "predict"), kind
        record = run_transcript(
            Task(kind, "sentiment"),
            REVIEW,
            ["positive", "yes", "Paragraph: Fine.", "positive"][: {"classify": 1, "answerable": 2}.get(kind, 3)],
        )
        assert type(record) is spec.record
        assert spec.judgement is None or hasattr(record, spec.judgement)
        assert all(hasattr(record, column) for column in spec.table)


@pytest.mark.parametrize(
    ("kind", "option"),
    [("classify", "e-short"), ("counterfactual", "i-options"), ("importance", "e-implcit-target"),
     ("answerable", "e-persona-you"), ("redacted", "e-implcit-target")],
)  # fmt: skip
def test_an_option_a_task_kind_never_reads_is_refused(kind: str, option: str) -> None:
    with pytest.raises(InvalidTaskConfig, match=rf"option\(s\) {option} do not apply to {kind}; its options are "):
        Task(kind, "sentiment", TaskConfig.of([option]))  # type: ignore[arg-type]


def test_every_option_of_the_paper_s_grid_is_accepted() -> None:
    Task("classify", "sentiment", TaskConfig.of(["c-persona-human", "c-no-redacted"]))
    Task("counterfactual", "entailment", TaskConfig.of(["e-implcit-target", "c-persona-you", "e-persona-you"]))
    Task("redacted", "multi-choice", TaskConfig.of(["m-removed", "e-short", "e-persona-human", "c-persona-human"]))
    Task("answerable", "sentiment", TaskConfig.of(["i-options", "i-persona-you", "m-removed"]))
