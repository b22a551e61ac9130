"""The user messages of the protocol, to the character.

These strings are the paper's prompts, oddities included ("Consideing", "does not
entails", "you a human not determine"): the response cache and the comparability of
results with the paper depend on them being exact. `tests/core/test_golden_tasks.py` holds
them to `golden_tasks.json`.
"""

from __future__ import annotations

from .config import TaskConfig
from .observations import EntailmentObservation, MultiChoiceObservation, Observation, SentimentObservation

_NO_EXPLANATION = " Do not explain the answer.\n\n"


def _with_paragraph(instruction: str, paragraph: str) -> str:
    return f"{instruction}{_NO_EXPLANATION}Paragraph: {paragraph}"


def _mask_sentence(config: TaskConfig) -> str:
    if "c-no-redacted" in config:
        return ""
    return f" The paragraph can contain {config.mask_word} words marked with {config.mask_token}."


def _lettered(choices: list[str] | tuple[str, ...], conjunction: str) -> str:
    """'a) "x", b) "y", or c) "z"': every choice lettered, the last one after `conjunction`."""
    items = [f'{chr(ord("a") + i)}) "{choice}"' for i, choice in enumerate(choices)]
    return ", ".join(items[:-1]) + f", {conjunction} {items[-1]}"


# -- classify: the task question, asked of the original and of the explained paragraph --


def classify_prompt(observation: Observation, paragraph: str, config: TaskConfig) -> str:
    """The task question about `paragraph` (the original, or the model's edit of it)."""
    persona = config.persona("c")
    match observation:
        case SentimentObservation():
            lead = {
                "you": "What would you classify the sentiment of the following paragraph as?",
                "human": "What would a human classify the sentiment of the following paragraph as?",
                None: "What is the sentiment of the following paragraph?",
            }[persona]
            options = ' Answer only "positive", "negative", "neutral", or "unknown".'
        case EntailmentObservation(hypothesis=statement):
            lead = {
                "you": f'Do you think the statement "{statement}" entail from the following paragraph?',
                "human": f'Does a human think the statement "{statement}" entail from the following paragraph?',
                None: f'Does the statement "{statement}" entail from the following paragraph?',
            }[persona]
            options = (
                ' Answer either 1) "yes" for entailment, 2) "no" for no entailment,'
                ' or 3) "unknown" if the question can not be answered.'
            )
        case MultiChoiceObservation(question=question, choices=choices):
            lead = {
                "you": f'Consideing the following paragraph, how would you answer the question: "{question}"',
                "human": f'Consideing the following paragraph, how would a human answer the question: "{question}"',
                None: f'Consider the following paragraph, and answer the question: "{question}"',
            }[persona]
            options = f" Answer either {_lettered([*choices, 'unknown'], 'or')} if the question can not be answered."
    return _with_paragraph(lead + _mask_sentence(config) + options, paragraph)


# -- answerable: can the question be answered at all? --


def ability_prompt(observation: Observation, config: TaskConfig) -> str:
    persona = config.persona("i")
    with_options = "i-options" in config
    match observation:
        case SentimentObservation():
            lead = {
                "you": "Are you able to determine the sentiment of the following paragraph?",
                "human": "Is a human able to determine the sentiment of the following paragraph?",
                None: "Is it possible to determine the sentiment of the following paragraph?",
            }[persona]
            options = ' The sentiment is either "positive", "negative", "neutral", or "unknown".'
        case EntailmentObservation(hypothesis=statement):
            who = {"you": "are you able", "human": "is a human able", None: "is it possible"}[persona]
            lead = f'Consider the statement "{statement}", {who} to determine the if it entail from the following paragraph?'
            options = " There is either entailment, no entailment, or it's unknown."
        case MultiChoiceObservation(question=question, choices=choices):
            who = {"you": "Are you able", "human": "Is a human able", None: "Is it possible"}[persona]
            lead = f'{who} to answer the question "{question}" based on the following paragraph?'
            options = f" The possible answers to the question are {_lettered(choices, 'or')}."
    instruction = lead + (options if with_options else "") + ' Answer only "yes" or "no".'
    return _with_paragraph(instruction, observation.paragraph)


# -- counterfactual: a minimal edit that should flip the answer --


def counterfactual_prompt(observation: Observation, target: str, config: TaskConfig) -> str:
    persona = config.persona("e")
    implicit = "e-implcit-target" in config
    match observation:
        case SentimentObservation():
            if implicit:
                lead = {
                    "you": "Edit the following paragraph such you would classify the sentiment as the opposite of what it currently is.",
                    "human": "Edit the following paragraph such a human would classify the as the opposite of what it currently is.",
                    None: "Edit the following paragraph such that the sentiment becomes the opposite of what it currently is.",
                }[persona]
            else:
                lead = {
                    "you": f'Edit the following paragraph such you would classify the sentiment is "{target}".',
                    "human": f'Edit the following paragraph such a human would classify the sentiment is "{target}".',
                    None: f'Edit the following paragraph such that the sentiment is "{target}".',
                }[persona]
        case EntailmentObservation(hypothesis=statement):
            if implicit:
                who = {
                    "you": "you would say the entailment is",
                    "human": "a human would say the entailment is",
                    None: "the entailment becomes",
                }[persona]
                lead = (
                    f'Edit the following paragraph, such that given the statement "{statement}",'
                    f" {who} the opposite of what it currently is."
                )
            else:
                entails = "entails" if target == "yes" else "does not entails"
                who = {"you": "such that you would say", "human": "such that a human would say", None: "such that"}[
                    persona
                ]
                lead = f'Edit the following paragraph {who} the statement "{statement}" {entails} from it.'
        case MultiChoiceObservation(question=question, choices=choices):
            if implicit:
                lead = {
                    "you": f'Edit the following paragraph such you would answer the question "{question}" differently',
                    "human": f'Edit the following paragraph such a human would answer the question "{question}" differently',
                    None: f'Edit the following paragraph such that the answer to the question "{question}" is different',
                }[persona]
                lead += (
                    " from how it should currently be answered. The possible answer options,"
                    f" including the current answer, are {_lettered(choices, 'and')}."
                )
            else:
                lead = {
                    "you": f'Edit the following paragraph such you would answer the question "{question}" with "{target}".',
                    "human": f'Edit the following paragraph such a human would answer the question "{question}" with "{target}".',
                    None: f'Edit the following paragraph such that the answer to the question "{question}" is "{target}".',
                }[persona]
    return _with_paragraph(lead + " Make as few edits as possible.", observation.paragraph)


# -- redacted: mask the words that matter --


def redact_prompt(observation: Observation, config: TaskConfig) -> str:
    persona = config.persona("e")
    mask = config.mask_token
    short = "e-short" in config
    match observation:
        case SentimentObservation():
            if short:
                lead = {
                    "you": "Redact the following paragraph such that you can no longer determine the sentiment,",
                    "human": "Redact the following paragraph such that a human can no longer determine the sentiment,",
                    None: "Redact the following paragraph such that the sentiment can no longer be determined,",
                }[persona]
            else:
                lead = "Redact the most important words for determining the sentiment of the following paragraph,"
            goal = _sentiment_goal(persona)
        case EntailmentObservation(hypothesis=statement):
            if short:
                who = {"you": "such you can", "human": "such a human can", None: "such it can"}[persona]
                verb = "be determined" if persona is None else "determine"
                lead = (
                    f'Redact the following paragraph {who} not {verb} if the statement "{statement}" entails from it,'
                )
            else:
                lead = (
                    "Redact the most important words in the following paragraph,"
                    f' for determining if the statement "{statement}" entails from it,'
                )
            goal = _entailment_goal(persona)
        case MultiChoiceObservation(question=question):
            if short:
                lead = {
                    "you": f'Redact the following paragraph such that you can no longer answer the question "{question}",',
                    "human": f'Redact the following paragraph such that a human can no longer answer the question "{question}",',
                    None: f'Redact the following paragraph such that the question "{question}" can no longer be answered,',
                }[persona]
            else:
                lead = f'Redact the most important words for answering "{question}" given the following paragraph,'
            goal = _multi_choice_goal(persona)
    if short:
        instruction = f"{lead} by replacing important words with {mask}."
    else:
        instruction = f"{lead} by replacing important words with {mask},{goal}"
    return _with_paragraph(instruction, observation.paragraph)


# -- importance: list the words that matter --


def importance_prompt(observation: Observation, config: TaskConfig) -> str:
    persona = config.persona("e")
    match observation:
        case SentimentObservation():
            lead = "List the most important words for determining the sentiment of the following paragraph,"
            goal = _sentiment_goal(persona)
        case EntailmentObservation(hypothesis=statement):
            lead = (
                "List the most important words in the following paragraph,"
                f' for determining if the statement "{statement}" entails from it,'
            )
            # The paper's importance prompt garbles the human persona ("you a human not determine").
            goal = _entailment_goal(persona, human="you a human not determine")
        case MultiChoiceObservation(question=question):
            lead = f'List the most important words for answering "{question}" given the following paragraph,'
            goal = _multi_choice_goal(persona)
    return _with_paragraph(lead + goal, observation.paragraph)


def _sentiment_goal(persona: str | None) -> str:
    who = {"you": "you can not determine", "human": "a human can not determine", None: "can not be determined"}[persona]
    if persona is None:
        return " such that without these words the sentiment can not be determined."
    return f" such that without these words {who} the sentiment."


def _entailment_goal(persona: str | None, human: str = "a human can not determine") -> str:
    who = {"you": "you can not determine", "human": human, None: "it can not be determined"}[persona]
    return f" such that without these words {who} if there is entailment or no entailment."


def _multi_choice_goal(persona: str | None) -> str:
    who = {"you": "you can not answer", "human": "a human can not answer", None: "the question can not be answered"}[
        persona
    ]
    if persona is None:
        return f" such that without these words {who}."
    return f" such that without these words {who} the question."
