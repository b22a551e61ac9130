"""Extractors: a model's free-text answer turned into a label, a paragraph or a word list.

Matching is case-insensitive throughout. `None` means "could not be extracted"; it is a
result in its own right (a mismatch), never an error. `golden_extraction.json` is the
specification of every rule here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from typing import Literal

import regex

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
    answer = answer.lower()  # as the paper does before matching, so Unicode case folds alike
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
    if _contains(_ENTAILMENT_UNDECIDED).search(lowered):
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
        # [a-z] ignoring case also matches "İ", whose lower case is two characters; the
        # paper's code crashes on it, here it reads as the letter it folds to.
        index = ord(match.group(1).lower()[0]) - ord("a")
        if index < len(choices):
            return choices[index]
        if index == len(choices):
            return "unknown"
    lowered = answer.lower()
    # The earliest in the answer; at one position the first in sort order, as the paper sorts them.
    found = [(position, choice) for choice in choices if (position := lowered.find(choice.lower())) >= 0]
    if found:
        return min(found)[1]
    if _contains(_CHOICE_UNDECIDED).search(lowered):
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
#
# The rules below are the paper's, in the paper's order, quirks included: tags are removed
# without decoding entities, `<li>` and `</li>` are matched in lower case only, the "Here is
# ...:" search is case-sensitive, and a marker counts only when a character follows it. Each
# of them decides which paragraph is re-classified, so each changes `faithful`.

_SUGGESTIONS = ("here are some suggestions",)
_SUGGESTION_ITEMS = ("<li>", "<p>", "- ")
# `<blockqoute>` is misspelt in the paper's code too: a <blockquote> does not trigger the cut.
_HTML_OPENERS = ("<p>", "<ul>", "<ol>", "<blockqoute>")
_HTML_BLOCK_TAGS = ("<p>", "</p>", "<ul>", "</ul>", "<ol>", "</ol>", "<blockquote>", "</blockquote>")
_HTML_BREAKS = ("<br>", "<br />")
_REFUSAL_OPENINGS = ("I am sorry,", "Sorry,", "I cannot determine", "Hi ")
_REFUSAL_PHRASES = ("as an AI language model", "as per my programming, I cannot", "goes against my programming")
_LEAD_IN_MARKERS = (
    "I edited the paragraph as follows:", "to:", "Paragraph:", "sentiments:", "Sentiment:",
    "Analysis:", "version of it:", "the paragraph could be:", "it can be rewritten as follows:",
    "you can change the first sentence to something like this:",
    "I have edited the given paragraph as follows:", "we can modify the last sentence to read:",
    "The edited paragraph reads:", "The revised paragraph reads:", "the given paragraph could be:",
    "We could say something like:", "while removing unnecessary details:",
    "we can change the last sentence to something like this:", "I have edited the paragraph as follows:",
    "paragraph could be:", "without changing its meaning:", "the paragraph could be something like this:",
    "without explaining why:", "paragraph are as follows:", "here are the redacted words:",
)  # fmt: skip
# The two lead-in searches run on the `regex` module, as the paper's do: its word characters
# (combining marks count, "²" does not) and full case folding ("ß" matches "ss") are not the
# standard library's, and either changes which paragraph is kept. Searching in reverse
# finds the last match, as the paper does.
_REVERSE = regex.REVERSE | regex.VERSION1
# Case-sensitive, unlike every other rule: "here is" in lower case is not a lead-in.
_HERE_LEAD_IN = regex.compile(r"\b(Here's|Here are|Here is)\b[\w ]*:", flags=_REVERSE)
_LAST_MARKER = regex.compile(r"\b" + _alternation(_LEAD_IN_MARKERS) + r"(\b|\W)", flags=regex.IGNORECASE | _REVERSE)
_OPENER_LINES = (
    "Sure, here's", "Sure, here is", "Sure thing! Here's", "Sure! Here's", "Sure! Here is", "Here is",
    "Here's", "Thank you for sharing your thoughts", "Thank you for sharing your opinion",
    "Thank you for your feedback.", "This paragraph has been edited", "What specific changes",
    "What specific aspects of the original text did you change", "This paragraph",
    "Thank you for sharing this information with me.", "Based on your prompt", "Based on your instructions",
    "Based on your input", "Based on your description", "Based on the provided text", "Based on the given text",
    "Based on my analysis",
)  # fmt: skip
_BLANK_LINES = re.compile(r"\n\n+")


@cache
def _anywhere(phrases: tuple[str, ...]) -> re.Pattern[str]:
    """Any of the phrases, anywhere, with no word boundaries."""
    return re.compile(_alternation(phrases), re.IGNORECASE)


def _html_to_text(text: str) -> str:
    """Block tags become blank lines, breaks newlines, list items '* '; then every line is
    stripped and runs of newlines become one blank line."""
    text = _anywhere(_HTML_BLOCK_TAGS).sub("\n\n", text)
    text = _anywhere(_HTML_BREAKS).sub("\n", text)
    text = text.replace("<li>", "* ").replace("</li>", "")
    text = _BLANK_LINES.sub("\n\n", text)
    return "\n".join(line.strip() for line in text.splitlines()).strip()


def extract_paragraph(answer: str) -> str | None:
    """The paragraph inside an edit or redaction answer, or None when there is none to trust."""
    text = answer
    # Several suggestions are not one explanation.
    if _contains(_SUGGESTIONS).search(text) and len(_anywhere(_SUGGESTION_ITEMS).findall(text)) > 1:
        return None
    if _contains(_HTML_OPENERS).search(text):
        text = text[text.find("<") :]
    text = _html_to_text(text)

    if _starts_with(_REFUSAL_OPENINGS).match(text) or _contains(_REFUSAL_PHRASES).search(text):
        return None
    # The last listed marker; failing any, the last "Here is ...:"; failing that, an opener line.
    lead_in = _LAST_MARKER.search(text) or _HERE_LEAD_IN.search(text)
    if lead_in is not None:
        text = text[lead_in.end() :]
    elif _starts_with(_OPENER_LINES).match(text):
        # "Sure, here is the edited paragraph." and the like: the paragraph starts on the next line.
        if (line_break := text.find("\n")) < 0:
            return None
        text = text[line_break + 1 :]

    text = text.strip()
    if text.startswith('"') and text.endswith('"'):
        text = text[1:-1]
    return text or None


# -- word list (importance explanations) --

_BULLET_LINE = re.compile(r"^(?:\d+\.|\*|•|-)[ \t]*(.*)$")
_QUOTED_WORD = re.compile(r'["*]([^",.]+)[,.]?["*]')
# The original finds list items with `findall` of
#     (?:["*]([^",*.]+)[,.]?["*]|(\w[\w \-]*)(?:,|\.|$))(?:\. |, | and | or | |$|)
# and where a line's list starts with `search` of (\w+)(?:,|\.|$). Both try every position
# of a run of word characters and backtrack through the rest of it: quadratic, hours for
# one long word in a hostile answer. `_list_items` and `_first_trailing_word` give the same
# results in one pass (tests/core/test_extract_linear.py compares them with the regexes).
_QUOTED_ITEM = re.compile(r'["*]([^",*.]+)[,.]?["*]')
_BARE_ITEM = re.compile(r"\w[\w \-]*+")
_WORD_RUN = re.compile(r"\w+")
_ITEM_SEPARATORS = (". ", ", ", " and ", " or ", " ")


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
        elif start == 0 and (trailing := _first_trailing_word(line)) is not None:
            start = trailing
        words += _list_items(line[start:].lstrip())
    return words or None


def _first_trailing_word(line: str) -> int | None:
    """Where the first run of word characters followed by a comma, a full stop or the end of
    the line starts: a run matches from its first character exactly when its end does, so
    one look at each run's end decides (a line holds no line break, so `$` is its end)."""
    for run in _WORD_RUN.finditer(line):
        if run.end() == len(line) or line[run.end()] in ",.":
            return run.start()
    return None


def _list_items(text: str) -> list[str]:
    """The items of one line's list, as the original's `findall` finds them, in one pass.

    At each position: a quoted or starred item; else a run of word characters, spaces and
    hyphens that starts with a word character and is followed by a comma, a full stop or
    the end. Such a run cannot end earlier (its characters are none of those), so a run
    that fails fails from every position inside it, and the scan skips it whole.
    """
    items = []
    position = 0
    while position < len(text):
        if text[position] in '"*':
            if quoted := _QUOTED_ITEM.match(text, position):
                items.append(quoted.group(1))
                position = _after_separator(text, quoted.end())
            else:
                position += 1
        elif bare := _BARE_ITEM.match(text, position):
            end = bare.end()
            if end == len(text) or text[end] in ",.":
                items.append(bare.group())
                position = _after_separator(text, end + 1)
            else:
                position = end
        else:
            position += 1
    return items


def _after_separator(text: str, position: int) -> int:
    for separator in _ITEM_SEPARATORS:  # in the original's order: the first that fits
        if text.startswith(separator, position):
            return position + len(separator)
    return position


# -- redaction by word list --


def redact_words(paragraph: str, words: Sequence[str], mask_token: str) -> str:
    """Replace every whole-word, case-insensitive occurrence of any listed word by the mask token."""
    listed = [word for word in words if word]
    if not listed:
        return paragraph
    return re.sub(r"\b" + _alternation(listed) + r"\b", mask_token, paragraph, flags=re.IGNORECASE)
