"""The word-list extractor in one pass: the same results as the original's regexes, and
no answer, however hostile, takes more than linear time."""

from __future__ import annotations

import random
import re
import subprocess
import sys
import textwrap

import pytest

from proto import MAX_MESSAGE_BYTES
from services.core.extract import _first_trailing_word, _list_items

# The original's patterns (llm-introspection's importance extractor), the reference.
ORIGINAL_LIST_ITEM = re.compile(r'(?:["*]([^",*.]+)[,.]?["*]|(\w[\w \-]*)(?:,|\.|$))(?:\. |, | and | or | |$|)')
ORIGINAL_TRAILING_WORD = re.compile(r"(\w+)(?:,|\.|$)")

PIECES = ["a", "b", "é", "1", "_", " ", " ", "-", ",", ".", '"', "*", ":", "!", "?", "'", " and ", " or ", ". ", ", "]


def _random_line(rng: random.Random) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 24)))


def test_one_pass_equals_the_original_regexes_on_random_lines() -> None:
    rng = random.Random(20261129)
    for _ in range(200_000):
        line = _random_line(rng)
        expected = [quoted or bare for quoted, bare in ORIGINAL_LIST_ITEM.findall(line) if quoted or bare]
        assert _list_items(line) == expected, line
        trailing = ORIGINAL_TRAILING_WORD.search(line)
        assert _first_trailing_word(line) == (trailing.start() if trailing else None), line


@pytest.mark.parametrize(
    "line",
    [
        "The most important words are: great, awful and boring.",
        '"great", "awful", "boring"',
        "*great*, *awful* or *boring*",
        "well-made, slow-paced. terrible",
        "no list here!",
        "",
    ],
)
def test_one_pass_equals_the_original_regexes_on_usual_answers(line: str) -> None:
    expected = [quoted or bare for quoted, bare in ORIGINAL_LIST_ITEM.findall(line) if quoted or bare]
    assert _list_items(line) == expected


# Answers of the largest message size built to make backtracking regexes quadratic: one
# long word, long runs of words and spaces, of quotes, stars, hyphens, brackets, tags.
HOSTILE = textwrap.dedent(
    """
    import sys
    from services.core.extract import (extract_ability, extract_choice, extract_entailment, extract_list,
                                       extract_paragraph, extract_sentiment)
    n = int(sys.argv[1])
    shapes = ["a" * n + "!", "ab " * (n // 3) + "!", "x: " + "a" * n + "!", "*" * n, "*" + "a" * n,
              '"a' * (n // 2), " " * n + "x", "a" + "-" * n + "!", "<" * n, "a<p" * (n // 3), "a\\n" * (n // 2),
              "1. " + "a" * n, "[" * n, "Here is " * (n // 8), '"' + ":" * n, "a, " * (n // 3) + "!"]
    for text in shapes:
        for extract in (extract_sentiment, extract_entailment, extract_ability, extract_paragraph, extract_list,
                        lambda answer: extract_choice(answer, ["a", "b", "c", "d"])):
            extract(text)
    print("done")
    """
)


def test_no_hostile_answer_of_the_largest_message_size_blocks_an_extractor() -> None:
    """Run in a process of its own, so that a quadratic extractor (2.4 s for 8 KB before,
    hours for 512 KB) fails this test by its ceiling instead of hanging the suite. A
    linear pass over these 16 shapes x 6 extractors takes a few seconds."""
    done = subprocess.run([sys.executable, "-c", HOSTILE, str(MAX_MESSAGE_BYTES)], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "done"
