"""golden_extraction.json: every extractor, every case."""

from __future__ import annotations

import pytest

from services.core import extract
from tests.conftest import golden

CASES = golden("extraction")


def test_every_extractor_has_cases() -> None:
    assert set(CASES) == {"sentiment", "entailment", "multi_choice", "ability", "paragraph", "list", "redact"}


@pytest.mark.parametrize(("answer", "expected"), CASES["sentiment"])
def test_sentiment(answer: str, expected: str | None) -> None:
    assert extract.extract_sentiment(answer) == expected


@pytest.mark.parametrize(("answer", "expected"), CASES["entailment"])
def test_entailment(answer: str, expected: str | None) -> None:
    assert extract.extract_entailment(answer) == expected


@pytest.mark.parametrize(("choices", "answer", "expected"), CASES["multi_choice"])
def test_multi_choice(choices: list[str], answer: str, expected: str | None) -> None:
    assert extract.extract_choice(answer, choices) == expected


@pytest.mark.parametrize(("answer", "expected"), CASES["ability"])
def test_ability(answer: str, expected: str | None) -> None:
    assert extract.extract_ability(answer) == expected


@pytest.mark.parametrize(("answer", "expected"), CASES["paragraph"])
def test_paragraph(answer: str, expected: str | None) -> None:
    assert extract.extract_paragraph(answer) == expected


@pytest.mark.parametrize(("answer", "expected"), CASES["list"])
def test_list(answer: str, expected: list[str] | None) -> None:
    assert extract.extract_list(answer) == expected


@pytest.mark.parametrize(("paragraph", "words", "mask", "expected"), CASES["redact"])
def test_redact(paragraph: str, words: list[str], mask: str, expected: str) -> None:
    assert extract.redact_words(paragraph, words, mask) == expected


def test_redacting_with_no_words_changes_nothing() -> None:
    assert extract.redact_words("A fine day.", ["", ""], "[REDACTED]") == "A fine day."
