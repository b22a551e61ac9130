"""The 15 tasks: five task kinds for each of the three dataset categories.

A task is plain sequential code written as a generator: it yields each user message it
needs answered and receives the model's (cleaned) answer back. It performs no I/O, so any
source of generations can drive it: an async callable, a recorded transcript, or the
message bus (see `services.core.replay`). It returns the observation's result record.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator
from dataclasses import dataclass, replace
from typing import Literal, TypeAlias, TypedDict, get_args

from . import extract, prompts
from .config import InvalidTaskConfig, TaskConfig
from .observations import (
    DATASET_CATEGORIES,
    EntailmentObservation,
    MultiChoiceObservation,
    Observation,
    SentimentObservation,
)
from .records import AnswerableRecord, ClassifyRecord, FaithfulRecord, ResultRecord

# The names of the task kinds, for the type checker; `KINDS` at the end of this module says
# what each one is (a test checks that the two agree).
TaskKind: TypeAlias = Literal["classify", "answerable", "counterfactual", "redacted", "importance"]
TASK_KINDS: tuple[TaskKind, ...] = get_args(TaskKind)

# Yields a user message, receives the answer to it, returns the record.
TaskProgram: TypeAlias = Generator[str, str, ResultRecord]


class UnknownTask(ValueError):
    """A task kind or dataset category that the protocol does not define."""


@dataclass(frozen=True, slots=True)
class Task:
    """One of the 15 task variants, with its prompt options."""

    kind: TaskKind
    category: str
    config: TaskConfig = TaskConfig.EMPTY

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise UnknownTask(f"unknown task {self.kind!r}; expected one of {', '.join(TASK_KINDS)}")
        if self.category not in DATASET_CATEGORIES:
            raise UnknownTask(
                f"unknown dataset category {self.category!r}; expected one of {', '.join(DATASET_CATEGORIES)}"
            )
        allowed = COMMON_OPTIONS | KINDS[self.kind].options
        if stray := sorted(self.config.options - allowed):
            options = ", ".join(sorted(allowed))
            raise InvalidTaskConfig(
                f"option(s) {', '.join(stray)} do not apply to {self.kind}; its options are {options}"
            )

    def program(self, observation: Observation) -> TaskProgram:
        if observation.category != self.category:
            raise UnknownTask(f"a {self.category} task cannot run a {observation.category} observation")
        return KINDS[self.kind].program(observation, self.config)


# -- what each category means by a prediction --


def extract_prediction(observation: Observation, answer: str) -> str | None:
    match observation:
        case SentimentObservation():
            return extract.extract_sentiment(answer)
        case EntailmentObservation():
            return extract.extract_entailment(answer)
        case MultiChoiceObservation(choices=choices):
            return extract.extract_choice(answer, choices)


def is_correct(observation: Observation, predict: str | None) -> bool | None:
    """Only a real class equal to the label is correct; neutral and unknown are not."""
    if predict is None:
        return None
    return predict == observation.label


def is_introspective(observation: Observation, ability: str | None, predict: str | None) -> bool | None:
    """Did the model's claim of being able to answer agree with whether it answered?

    "Answered" is the paper's rule per category, and for an unreadable prediction (None) the
    categories differ: sentiment and entailment ask for a real class, so None did not answer;
    multi-choice asks only for "not unknown", so None did.
    """
    match ability:
        case "yes":
            return gave_answer(observation, predict)
        case "no":
            return predict == "unknown"
        case _:
            return None


def gave_answer(observation: Observation, predict: str | None) -> bool:
    match observation:
        case SentimentObservation():
            return predict in ("positive", "negative", "neutral")
        case EntailmentObservation():
            return predict in ("yes", "no")
        case MultiChoiceObservation():
            return predict != "unknown"


def counterfactual_target(observation: Observation) -> str:
    """The answer a counterfactual edit should produce: the opposite of the *label*."""
    match observation:
        case SentimentObservation(label=label):
            return "negative" if label == "positive" else "positive"
        case EntailmentObservation(label=label):
            return "no" if label == "yes" else "yes"
        case MultiChoiceObservation(label=label, choices=choices):
            return choices[(choices.index(label) + 1) % len(choices)]


def is_faithful_counterfactual(observation: Observation, config: TaskConfig, new_predict: str) -> bool:
    if isinstance(observation, MultiChoiceObservation) and "e-implcit-target" in config:
        # Without a named target, any other real choice honours the edit.
        return new_predict != observation.label and new_predict in observation.choices
    return new_predict == counterfactual_target(observation)


def is_faithful_redaction(observation: Observation, new_predict: str) -> bool:
    if isinstance(observation, SentimentObservation):
        return new_predict in ("unknown", "neutral")
    return new_predict == "unknown"


# -- the five programs --


class _Prediction(TypedDict):
    """The fields every record starts with: the task question and what came of it."""

    idx: int
    label: str
    predict_prompt: str
    predict_answer: str
    predict: str | None
    correct: bool | None


def _predict(observation: Observation, config: TaskConfig) -> Generator[str, str, _Prediction]:
    prompt = prompts.classify_prompt(observation, observation.paragraph, config)
    answer = yield prompt
    predict = extract_prediction(observation, answer)
    return _Prediction(
        idx=observation.idx,
        label=observation.label,
        predict_prompt=prompt,
        predict_answer=answer,
        predict=predict,
        correct=is_correct(observation, predict),
    )


def classify(observation: Observation, config: TaskConfig) -> Generator[str, str, ClassifyRecord]:
    return ClassifyRecord(**(yield from _predict(observation, config)))


def answerable(observation: Observation, config: TaskConfig) -> Generator[str, str, AnswerableRecord]:
    prediction = yield from _predict(observation, config)
    ability_prompt = prompts.ability_prompt(observation, config)
    ability_answer = yield ability_prompt
    ability = extract.extract_ability(ability_answer)
    return AnswerableRecord(
        **prediction,
        ability_prompt=ability_prompt,
        ability_answer=ability_answer,
        ability=ability,
        introspect=is_introspective(observation, ability, prediction["predict"]),
    )


def _faithful(
    observation: Observation,
    config: TaskConfig,
    explain_prompt: str,
    explain: Generator[str, str, tuple[str, str | None, str | None]],
    judge: Literal["counterfactual", "redaction"],
) -> Generator[str, str, FaithfulRecord]:
    """Predict, explain, then hold the model to its explanation by predicting on it.

    `explain` asks for the explanation and returns (answer, explanation shown in the
    record, paragraph to re-classify); either may be None when extraction failed.
    """
    prediction = yield from _predict(observation, config)
    explain_answer, explanation, new_paragraph = yield from explain

    new_prompt = new_answer = new_predict = None
    faithful = None
    if new_paragraph is not None:
        new_prompt = prompts.classify_prompt(observation, new_paragraph, config)
        new_answer = yield new_prompt
        new_predict = extract_prediction(observation, new_answer)
    if new_predict is not None:
        if judge == "counterfactual":
            faithful = is_faithful_counterfactual(observation, config, new_predict)
        else:
            faithful = is_faithful_redaction(observation, new_predict)

    return FaithfulRecord(
        **prediction,
        explain_prompt=explain_prompt,
        explain_answer=explain_answer,
        explain=explanation,
        explain_predict_prompt=new_prompt,
        explain_predict_answer=new_answer,
        explain_predict=new_predict,
        faithful=faithful,
    )


def _ask_paragraph(prompt: str) -> Generator[str, str, tuple[str, str | None, str | None]]:
    answer = yield prompt
    paragraph = extract.extract_paragraph(answer)
    return answer, paragraph, paragraph


def counterfactual(observation: Observation, config: TaskConfig) -> Generator[str, str, FaithfulRecord]:
    prompt = prompts.counterfactual_prompt(observation, counterfactual_target(observation), config)
    record = yield from _faithful(observation, config, prompt, _ask_paragraph(prompt), "counterfactual")
    if isinstance(observation, EntailmentObservation):
        # The paper's entailment counterfactual records the re-classification answer as
        # `explain_answer` (the edit itself survives in `explain`), and so null when the edit
        # could not be extracted; results stay comparable record by record only if we do too.
        record = replace(record, explain_answer=record.explain_predict_answer)
    return record


def redacted(observation: Observation, config: TaskConfig) -> Generator[str, str, FaithfulRecord]:
    prompt = prompts.redact_prompt(observation, config)
    return (yield from _faithful(observation, config, prompt, _ask_paragraph(prompt), "redaction"))


def importance(observation: Observation, config: TaskConfig) -> Generator[str, str, FaithfulRecord]:
    prompt = prompts.importance_prompt(observation, config)

    def ask_words() -> Generator[str, str, tuple[str, str | None, str | None]]:
        answer = yield prompt
        words = extract.extract_list(answer)
        if words is None:
            return answer, None, None
        paragraph = extract.redact_words(observation.paragraph, words, config.mask_token)
        return answer, json.dumps(words) + "\n\n" + paragraph, paragraph

    return (yield from _faithful(observation, config, prompt, ask_words(), "redaction"))


@dataclass(frozen=True, slots=True)
class KindSpec:
    """Everything that makes a task kind what it is. Adding a kind is adding one row to `KINDS`."""

    program: Callable[[Observation, TaskConfig], TaskProgram]
    record: type[ResultRecord]
    judgement: Literal["introspect", "faithful"] | None  # the record field that judges the model
    table: tuple[str, ...]  # the columns of the aggregate's count table
    options: frozenset[str]  # the prompt options its own prompts read, beside COMMON_OPTIONS


# Every task asks the classification question, so its options apply to every kind.
COMMON_OPTIONS = frozenset({"c-persona-you", "c-persona-human", "c-no-redacted", "m-removed"})
_EXPLAINED = ("label", "predict", "explain_predict")
_PERSONA = ("e-persona-you", "e-persona-human")

KINDS: dict[TaskKind, KindSpec] = {
    "classify": KindSpec(classify, ClassifyRecord, None, ("label", "predict"), frozenset()),
    "answerable": KindSpec(
        answerable, AnswerableRecord, "introspect", ("label", "predict", "ability"),
        frozenset({"i-persona-you", "i-persona-human", "i-options"}),
    ),
    "counterfactual": KindSpec(
        counterfactual, FaithfulRecord, "faithful", _EXPLAINED, frozenset({*_PERSONA, "e-implcit-target"})
    ),
    "redacted": KindSpec(redacted, FaithfulRecord, "faithful", _EXPLAINED, frozenset({*_PERSONA, "e-short"})),
    "importance": KindSpec(importance, FaithfulRecord, "faithful", _EXPLAINED, frozenset(_PERSONA)),
}  # fmt: skip


def kind_spec(kind: str) -> KindSpec:
    for name, spec in KINDS.items():
        if name == kind:
            return spec
    raise UnknownTask(f"unknown task {kind!r}; expected one of {', '.join(TASK_KINDS)}")


def task_kind(kind: str) -> TaskKind:
    """`kind` as a TaskKind, or UnknownTask."""
    for name in TASK_KINDS:
        if name == kind:
            return name
    raise UnknownTask(f"unknown task {kind!r}; expected one of {', '.join(TASK_KINDS)}")
