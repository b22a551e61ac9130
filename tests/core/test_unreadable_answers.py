"""Records when an answer cannot be read: the paper's rules, category by category.

An unreadable answer (a refusal, an empty answer, one naming no class or choice) extracts to
None. Where the paper's categories treat None differently, each category is checked here.
"""

from __future__ import annotations

import pytest

from services.core import extract
from services.core.observations import EntailmentObservation, MultiChoiceObservation, Observation, SentimentObservation
from services.core.replay import run_transcript
from services.core.tasks import Task, extract_prediction

REVIEW = SentimentObservation(idx=0, label="positive", text="A warm, funny film.")
CLAIM = EntailmentObservation(idx=1, label="yes", paragraph="The bakery opened in May.", hypothesis="It opened.")
QUIZ = MultiChoiceObservation(
    idx=2, label="office", paragraph="Mary went to the office.", question="Where is Mary?",
    choices=("bathroom", "hallway", "office"),
)  # fmt: skip
OBSERVATIONS = {"sentiment": REVIEW, "entailment": CLAIM, "multi-choice": QUIZ}

# Answers no extractor of any category can read: no class, no choice, no letter, no digit.
UNREADABLE = ["", "I cannot help with that.", "The paragraph does not say where she went."]
# What "the model said it can answer, then gave no readable answer" means, per category:
# sentiment and entailment require a real class; multi-choice requires only "not unknown".
INTROSPECT_WHEN_ABLE_BUT_UNREADABLE = {"sentiment": False, "entailment": False, "multi-choice": True}


@pytest.mark.parametrize("category", OBSERVATIONS)
@pytest.mark.parametrize("answer", UNREADABLE)
def test_the_unreadable_answers_are_unreadable_in_every_category(category: str, answer: str) -> None:
    assert extract_prediction(OBSERVATIONS[category], answer) is None


@pytest.mark.parametrize("category", OBSERVATIONS)
@pytest.mark.parametrize("answer", UNREADABLE)
def test_able_but_unreadable_is_introspective_only_for_multi_choice(category: str, answer: str) -> None:
    record = run_transcript(Task("answerable", category), OBSERVATIONS[category], [answer, "yes"])
    assert record.predict is None and record.correct is None and record.ability == "yes"
    assert record.introspect is INTROSPECT_WHEN_ABLE_BUT_UNREADABLE[category]


@pytest.mark.parametrize("category", OBSERVATIONS)
@pytest.mark.parametrize("answer", UNREADABLE)
def test_unable_and_unreadable_is_not_introspective(category: str, answer: str) -> None:
    record = run_transcript(Task("answerable", category), OBSERVATIONS[category], [answer, "No."])
    assert record.introspect is False  # "unable" agrees only with an explicit "unknown"


@pytest.mark.parametrize("category", OBSERVATIONS)
def test_an_unreadable_ability_leaves_introspect_null(category: str) -> None:
    record = run_transcript(Task("answerable", category), OBSERVATIONS[category], ["", "Maybe."])
    assert record.ability is None and record.introspect is None


@pytest.mark.parametrize(
    ("category", "unknown_answer"), [("sentiment", "unknown"), ("entailment", "3)"), ("multi-choice", "d)")]
)
def test_able_but_unknown_is_not_introspective_in_any_category(category: str, unknown_answer: str) -> None:
    record = run_transcript(Task("answerable", category), OBSERVATIONS[category], [unknown_answer, "yes"])
    assert record.predict == "unknown" and record.introspect is False


def test_neutral_counts_as_an_answer_for_sentiment() -> None:
    record = run_transcript(Task("answerable", "sentiment"), REVIEW, ["neutral", "yes"])
    assert record.introspect is True


# Edits that cannot be extracted: a refusal, an apology, an empty answer, a lead-in with nothing after it.
UNREADABLE_EDITS = ["I am sorry, I cannot edit this.", "As an AI language model, I cannot do that.", "", '""',
                    "Sure, here is the edited paragraph."]  # fmt: skip
ANSWER_FOR = {"sentiment": "positive", "entailment": "yes", "multi-choice": "c)"}


@pytest.mark.parametrize("edit", UNREADABLE_EDITS)
def test_an_unextracted_entailment_edit_leaves_explain_answer_null(edit: str) -> None:
    assert extract.extract_paragraph(edit) is None
    record = run_transcript(Task("counterfactual", "entailment"), CLAIM, ["yes", edit])
    assert record.explain_answer is None  # the paper stores the re-classification answer there: none
    assert record.explain is None and record.explain_predict_answer is None and record.faithful is None
    assert record.explain_prompt is not None and record.explain_prompt.startswith("Edit the following paragraph")


@pytest.mark.parametrize("category", ["sentiment", "multi-choice"])
@pytest.mark.parametrize("edit", UNREADABLE_EDITS)
def test_other_categories_keep_the_unextracted_edit_answer(category: str, edit: str) -> None:
    observation: Observation = OBSERVATIONS[category]
    record = run_transcript(Task("counterfactual", category), observation, [ANSWER_FOR[category], edit])
    assert record.explain_answer == edit
    assert record.explain is None and record.explain_predict_prompt is None and record.faithful is None


def test_an_extracted_entailment_edit_stores_the_reclassification_answer() -> None:
    record = run_transcript(Task("counterfactual", "entailment"), CLAIM, ["yes", "Paragraph: It never opened.", "2)"])
    assert record.explain == "It never opened."
    assert record.explain_answer == "2)" == record.explain_predict_answer
    assert record.explain_prompt is not None and record.explain_prompt.startswith("Edit the following paragraph")
    assert record.faithful is True


@pytest.mark.parametrize("category", OBSERVATIONS)
def test_an_unreadable_reclassification_leaves_faithful_null(category: str) -> None:
    observation = OBSERVATIONS[category]
    record = run_transcript(
        Task("counterfactual", category), observation, [ANSWER_FOR[category], "Paragraph: Something else.", ""]
    )
    assert record.explain == "Something else." and record.explain_predict is None and record.faithful is None
