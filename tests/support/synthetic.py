"""Synthetic data files with enough rows for the pipeline tests (hundreds per category).

Rows are made from small word banks with a seeded generator, so every run sees the same
files. The stand-in's answers depend on each prompt's text, so varied rows give every
task varied answers: predictions of each label, failed extractions and refusals.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

_SUBJECTS = ["The film", "This movie", "The sequel", "The documentary", "The play", "The series", "The remake"]
_GOOD = ["wonderful", "moving", "clever", "great", "delightful", "brilliant", "charming"]
_BAD = ["boring", "awful", "dull", "terrible", "clumsy", "tedious", "bad"]
_DETAILS = [
    "the acting carries every scene",
    "the plot wanders in the middle",
    "the music lingers afterwards",
    "the ending arrives too soon",
    "the camera work is restless",
    "the dialogue feels natural",
]
_PEOPLE = ["Mary", "John", "Sandra", "Daniel", "Fred", "Bill", "Julie"]
_PLACES = ["kitchen", "garden", "office", "hallway", "bathroom", "bedroom"]


def _review(rng: random.Random, positive: bool) -> str:
    words = _GOOD if positive else _BAD
    sentences = [
        f"{rng.choice(_SUBJECTS)} was {rng.choice(words)}.",
        f"I thought {rng.choice(_DETAILS)}.",
        f"Overall it felt {rng.choice(words)} and {rng.choice(words)}.",
    ]
    rng.shuffle(sentences)
    return " ".join(sentences[: rng.randint(2, 3)])


def write_synthetic(folder: Path, rows: int = 200, seed: int = 0) -> dict[str, Path]:
    """One JSONL file per category, each with `rows` rows; their paths by category."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sentiment, entailment, choice = [], [], []
    for _ in range(rows):
        positive = rng.random() < 0.5
        sentiment.append({"text": _review(rng, positive), "label": "positive" if positive else "negative"})

        person, place = rng.choice(_PEOPLE), rng.choice(_PLACES)
        claimed = place if rng.random() < 0.5 else rng.choice(_PLACES)
        paragraph = f"{person} went to the {place}. {rng.choice(_PEOPLE)} stayed in the {rng.choice(_PLACES)}."
        entailment.append(
            {
                "paragraph": paragraph,
                "hypothesis": f"{person} is in the {claimed}.",
                "label": "yes" if claimed == place else "no",
            }
        )

        others = rng.sample([p for p in _PLACES if p != place], 3)
        choices = [place, *others]
        rng.shuffle(choices)
        choice.append(
            {
                "paragraph": f"{person} moved to the {place}. Then {person} picked up the milk.",
                "question": f"Where is {person}?",
                "choices": choices,
                "label": place,
            }
        )
    paths = {}
    for category, data in (("sentiment", sentiment), ("entailment", entailment), ("multi-choice", choice)):
        path = folder / f"synthetic-{category}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in data), encoding="utf-8")
        paths[category] = path
    return paths


def write_sentiment_lines(path: Path, rows: int, seed: int = 0) -> Path:
    """A sentiment JSON lines file of `rows` reviews, written a row at a time (a million
    rows are about 100 MB, never held at once)."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as file:
        for _ in range(rows):
            positive = rng.random() < 0.5
            row = {"text": _review(rng, positive), "label": "positive" if positive else "negative"}
            file.write(json.dumps(row) + "\n")
    return path
