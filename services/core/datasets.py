"""The paper's datasets as definitions: where each comes from, how its splits are cut,
and how a raw row becomes an observation. Loading them (Hugging Face `datasets`, files)
is the job of `services.datasets`; everything here is pure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .observations import (
    EntailmentObservation,
    MultiChoiceObservation,
    Observation,
    SentimentObservation,
    SplitName,
)

# A raw row (as the source stores it, labels already as their class names) and its idx.
Restructure = Callable[[Mapping[str, Any], int], Observation]


class UnknownDataset(ValueError):
    """A dataset name Introspect does not know."""


@dataclass(frozen=True, slots=True)
class DatasetDefinition:
    name: str
    category: str
    source: str  # Hugging Face dataset id, or the bAbI archive name
    source_config: str | None
    splits: Mapping[str, str]  # our split -> the source's split selection, in `datasets` syntax
    restructure: Restructure
    # The Hub revision to read; None is the default branch.
    source_revision: str | None = None

    def split_selection(self, split: SplitName | str) -> str:
        try:
            return self.splits[split]
        except KeyError:
            raise UnknownDataset(f"{self.name} has no split {split!r}; use one of {', '.join(self.splits)}") from None


_SPLITS_80_20 = {"train": "train[:80%]", "valid": "train[80%:]", "test": "test"}


def _imdb(row: Mapping[str, Any], idx: int) -> Observation:
    label = {"neg": "negative", "pos": "positive"}[row["label"]]
    return SentimentObservation(idx=idx, label=label, text=row["text"].replace("<br />", "\n"))


def _sst2(row: Mapping[str, Any], idx: int) -> Observation:
    return SentimentObservation(idx=idx, label=row["label"], text=row["sentence"])


def _rte(row: Mapping[str, Any], idx: int) -> Observation:
    label = {"entailment": "yes", "not_entailment": "no"}[row["label"]]
    return EntailmentObservation(idx=idx, label=label, paragraph=row["sentence1"], hypothesis=row["sentence2"])


def _babi(row: Mapping[str, Any], idx: int) -> Observation:
    return MultiChoiceObservation(
        idx=idx, label=row["label"], paragraph=row["paragraph"], question=row["question"], choices=tuple(row["choices"])
    )


def _mctest(row: Mapping[str, Any], idx: int) -> Observation:
    options: Mapping[str, str] = row["answer_options"]
    return MultiChoiceObservation(
        idx=idx,
        label=options[row["answer"]],
        paragraph=row["story"].replace("\\newline", "\n"),
        question=row["question"],
        choices=tuple(sorted(options.values())),
    )


DATASETS: dict[str, DatasetDefinition] = {
    d.name: d
    for d in (
        DatasetDefinition("IMDB", "sentiment", "stanfordnlp/imdb", "plain_text", _SPLITS_80_20, _imdb),
        # The paper's `glue` now lives at `nyu-mll/glue`, stored as Parquet: the same rows and labels.
        DatasetDefinition("SST2", "sentiment", "nyu-mll/glue", "sst2", {**_SPLITS_80_20, "test": "validation"}, _sst2),
        DatasetDefinition("RTE", "entailment", "nyu-mll/glue", "rte", {**_SPLITS_80_20, "test": "validation"}, _rte),
        DatasetDefinition("bAbI-1", "multi-choice", "babi", "qa1", _SPLITS_80_20, _babi),
        DatasetDefinition("bAbI-2", "multi-choice", "babi", "qa2", _SPLITS_80_20, _babi),
        DatasetDefinition("bAbI-3", "multi-choice", "babi", "qa3", _SPLITS_80_20, _babi),
        # A loading-script dataset, which `datasets` no longer runs: read the Hub's Parquet
        # conversion of it instead. The paper asked for no config and got the script's default,
        # mc500 (its tests expect 1200 / 200 / 600 rows: MC500's train / dev / test).
        DatasetDefinition(
            "MCTest",
            "multi-choice",
            "sagnikrayc/mctest",
            "mc500",
            {"train": "train", "valid": "validation", "test": "test"},
            _mctest,
            source_revision="refs/convert/parquet",
        ),
    )
}


def resolve_dataset(name: str) -> DatasetDefinition:
    for known, definition in DATASETS.items():
        if known.lower() == name.lower():
            return definition
    raise UnknownDataset(f"unknown dataset {name!r}; use one of {', '.join(DATASETS)} or a local file")


# -- bAbI --

BABI_ARCHIVE_URL = "http://www.thespermwhale.com/jaseweston/babi/tasks_1-20_v1-2.tar.gz"
BABI_TASK_FILES = {
    "qa1": "tasks_1-20_v1-2/en-10k/qa1_single-supporting-fact_{split}.txt",
    "qa2": "tasks_1-20_v1-2/en-10k/qa2_two-supporting-facts_{split}.txt",
    "qa3": "tasks_1-20_v1-2/en-10k/qa3_three-supporting-facts_{split}.txt",
}


def parse_babi(lines: Iterable[str]) -> list[dict[str, Any]]:
    """bAbI task lines -> rows of paragraph, question, choices, label.

    A story runs from a line numbered 1 to the next line numbered 1. Statements add to
    the story; a question line (question, answer, supporting ids: tab-separated) makes one
    row whose paragraph is the statements so far joined with " Then, ". `choices` is the
    sorted set of the answers to every question of the story.
    """
    rows: list[dict[str, Any]] = []
    story_rows: list[dict[str, Any]] = []
    statements: list[str] = []

    def close_story() -> None:
        choices = sorted({row["label"] for row in story_rows})
        for row in story_rows:
            row["choices"] = choices
        rows.extend(story_rows)

    for line_number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        number, _, content = line.partition(" ")
        if not number.isdigit():
            raise ValueError(f"bAbI line {line_number} does not start with a line number: {line!r}")
        if number == "1":
            close_story()
            story_rows, statements = [], []
        if "\t" in content:
            question, answer, *_ = content.split("\t")
            story_rows.append(
                {"paragraph": " Then, ".join(statements), "question": question.strip(), "label": answer.strip()}
            )
        else:
            statements.append(content.strip())
    close_story()
    return rows
