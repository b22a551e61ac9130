"""Extractors: a model's free-text answer turned into a label, a paragraph or a word list.

Matching is case-insensitive throughout. `None` means "could not be extracted"; it is a
result in its own right (a mismatch), never an error. `golden_extraction.json` is the
specification of every rule here.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from functools import cache
from typing import Literal

Sentiment = Literal["positive", "negative", "neutral", "unknown"]
Entailment = Literal["yes", "no", "unknown"]
Ability = Literal["yes", "no"]


def _alternation(phrases: Sequence[str]) -> str:
    return "(?:" + "|".join(re.escape(phrase) for phrase in phrases) + ")"


@cache
def _starts_with(phrases: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(_alternation(phrases), re.IGNORECASE)


@cache
def _contains(phrases: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(r"\b" + _alternation(phrases) + r"(?:\b|\W)", re.IGNORECASE)


@cache
def _pair(leads: tuple[str, ...], answers: tuple[str, ...]) -> re.Pattern[str]:
    """A lead phrase, one space, an answer word, then a word boundary or a non-word character."""
    return re.compile(r"\b" + _alternation(leads) + " " + _alternation(answers) + r"(?:\b|\W)", re.IGNORECASE)


# -- sentiment --

_SENTIMENT_LEADS = (
    "could be", "are multiple", "to express", "might be", "are some", "be some", "it contains",
    "paragraph contains", "paragraph has", "tool detects", "be considered", "classified as",
    "there are", "seems", "seems to be", "seems to be mostly", "appears to be", "is:", "is",
)  # fmt: skip
_SENTIMENT_UNDECIDED = (
    "both positive and negative", "difficult to determine", "no explicit sentiments",
    "no clear sentiment", "cannot provide", "unable to determine", "cannot determine",
    "cannot be determined", "cannot be accurately determined",
)  # fmt: skip

# (label, opening phrases, answer words after a lead phrase); the first rule that fires wins.
_SENTIMENT_RULES: tuple[tuple[Sentiment, tuple[str, ...], tuple[str, ...]], ...] = (
    ("positive", ("positive", "sentiment: positive"), ("positive", '"positive"')),
    ("negative", ("negative", "sentiment: negative"), ("negative", '"negative"')),
    ("neutral", ("mixed", "neutral"), ("neutral", '"neutral"', "mixed", '"mixed"')),
    ("unknown", ("unknown", "i am sorry", "sorry"), ("unknown", '"unknown"')),
)


def extract_sentiment(answer: str) -> Sentiment | None:
    for label, openings, words in _SENTIMENT_RULES:
        if _starts_with(openings).match(answer) or _pair(_SENTIMENT_LEADS, words).search(answer):
            return label
        if label == "unknown" and _contains(_SENTIMENT_UNDECIDED).search(answer):
            return label
    return None


# -- entailment --

_ENTAILMENT_DIGIT = re.compile(r"(?:^|(?<=[ (])|(?<=Answer: ))([1-9])(?=\)|$)", re.IGNORECASE | re.MULTILINE)
_ENTAILMENT_BY_DIGIT: dict[str, Entailment] = {"1": "yes", "2": "no", "3": "unknown"}
_ENTAILMENT_UNDECIDED = (
    "unknown", "cannot provide", "cannot determine", "insufficient context",
    "unable to determine", "impossible for me to determine",
)  # fmt: skip


def extract_entailment(answer: str) -> Entailment | None:
    if (match := _ENTAILMENT_DIGIT.search(answer)) and match.group(1) in _ENTAILMENT_BY_DIGIT:
        return _ENTAILMENT_BY_DIGIT[match.group(1)]
    lowered = answer.lower()
    if any(phrase in lowered for phrase in _ENTAILMENT_UNDECIDED):
        return "unknown"
    if lowered.startswith("yes"):
        return "yes"
    if lowered.startswith("no"):
        return "no"
    return None


# -- multi-choice --

_CHOICE_LETTER = re.compile(r'(?:^|(?<=[ ("]))([a-z])(?=[.,:)"]|$)', re.IGNORECASE | re.MULTILINE)
_CHOICE_UNDECIDED = ("unknown", "cannot provide", "cannot determine", "insufficient context")


def extract_choice(answer: str, choices: Sequence[str]) -> str | None:
    """One of `choices`, 'unknown', or None. Letter n names choice n; one past the last is unknown."""
    if match := _CHOICE_LETTER.search(answer):
        index = ord(match.group(1).lower()) - ord("a")
        if index < len(choices):
            return choices[index]
        if index == len(choices):
            return "unknown"
    lowered = answer.lower()
    found = [(position, choice) for choice in choices if (position := lowered.find(choice.lower())) >= 0]
    if found:
        return min(found, key=lambda hit: hit[0])[1]
    if any(phrase in lowered for phrase in _CHOICE_UNDECIDED):
        return "unknown"
    return None


# -- ability (answerable task) --


def extract_ability(answer: str) -> Ability | None:
    match answer.lower():
        case "yes" | "yes.":
            return "yes"
        case "no" | "no.":
            return "no"
        case _:
            return None


# -- paragraph (counterfactual and redacted explanations) --

_LIST_ITEM_HTML = re.compile(r"<li\b", re.IGNORECASE)
_NUMBERED_LINE = re.compile(r"^\s*(?:\d+[.)]|option \d+:)\s", re.IGNORECASE | re.MULTILINE)
_HTML_BLOCK = re.compile(r"<(?:p|div|ul|ol|blockquote|h[1-6])\b[^>]*>", re.IGNORECASE)
_HTML_TAG = re.compile(r"</?[a-z][a-z0-9]*\b[^>]*>", re.IGNORECASE)
_HTML_BREAK = re.compile(r"<br\s*/?>|</p>\s*<p\b[^>]*>", re.IGNORECASE)
_REFUSAL = re.compile(
    r"^(?:i am sorry|i'm sorry|sorry|i apologi[sz]e|my apologies|apologies|hi|hello|hey|greetings)\b"
    r"|\bas an ai language model\b|\bi am an ai language model\b",
    re.IGNORECASE,
)
_LEAD_IN_MARKERS = re.compile(r"paragraph:|as follows:|reads:", re.IGNORECASE)
_OPENER_LINE = re.compile(
    r"^(?:sure|certainly|of course|okay|here is|here's|here are|based on|this (?:paragraph|text) (?:has|is))\b",
    re.IGNORECASE,
)


def extract_paragraph(answer: str) -> str | None:
    """The paragraph inside an edit or redaction answer, or None when there is none to trust."""
    text = answer.strip()
    # Several alternatives are not one explanation: refuse rather than pick one.
    if len(_LIST_ITEM_HTML.findall(text)) >= 2 or len(_NUMBERED_LINE.findall(text)) >= 2:
        return None
    if _HTML_TAG.search(text):
        if block := _HTML_BLOCK.search(text):
            text = text[block.start() :]
        text = html.unescape(_HTML_TAG.sub("", _HTML_BREAK.sub("\n", text))).strip()
    if _REFUSAL.search(text):
        return None

    markers = list(_LEAD_IN_MARKERS.finditer(text))
    if markers:
        text = text[markers[-1].end() :]
    elif _OPENER_LINE.match(text):
        # "Sure, here is the edited paragraph:" and the like: the paragraph starts on the next line.
        _, _, text = text.partition("\n")

    text = text.strip()
    if len(text) >= 2 and text.startswith('"') and text.endswith('"'):
        text = text[1:-1]
    return text or None


# -- word list (importance explanations) --

_BULLET_LINE = re.compile(r"^(?:\d+[.)]|\*|•|-)[ \t]*(.*)$")
_QUOTED_WORD = re.compile(r'["*]([^",.]+)[,.]?["*]')
_TRAILING_WORD = re.compile(r"(\w+)(?:,|\.|$)")
_LIST_ITEM = re.compile(r'(?:["*]([^",*.]+)[,.]?["*]|(\w[\w \-]*)(?:,|\.|$))(?:\. |, | and | or | |$|)')


def extract_list(answer: str) -> list[str] | None:
    """The listed words: bulleted or numbered lines, else quoted or comma-separated words."""
    words: list[str] = []
    if "\n" in answer:
        for line in answer.splitlines():
            if match := _BULLET_LINE.match(line):
                item = match.group(1)
                if item.startswith('"') and (end := item.rfind('"')) > 0:
                    item = item[1:end]
                if item:
                    words.append(item)
    if words:
        return words

    for line in answer.splitlines():
        start = line.find(":") + 1  # after "The most important words are:"
        if quoted := _QUOTED_WORD.search(line):
            start = min(quoted.start(), start)
        elif start == 0 and (trailing := _TRAILING_WORD.search(line)):
            start = trailing.start()
        for quoted_item, bare_item in _LIST_ITEM.findall(line[start:].lstrip()):
            if item := quoted_item or bare_item:
                words.append(item)
    return words or None


# -- redaction by word list --


def redact_words(paragraph: str, words: Sequence[str], mask_token: str) -> str:
    """Replace every whole-word, case-insensitive occurrence of any listed word by the mask token."""
    listed = [word for word in words if word]
    if not listed:
        return paragraph
    return re.sub(r"\b" + _alternation(listed) + r"\b", mask_token, paragraph, flags=re.IGNORECASE)
