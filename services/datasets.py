"""Loading dataset splits: from the Hugging Face Hub, from a local mirror of a dataset's
raw files, or from a user's own JSONL/CSV/Parquet file.

The Hub and a user's file are read with Hugging Face `datasets`. A local mirror is a
folder laid out like the source (`<dir>/<hub id>/<split>.jsonl`, and the bAbI archive as
`<dir>/babi/tasks_1-20_v1-2.tar.gz`), which is how the tests and offline machines use it;
it is read with the standard library, because importing `datasets` takes a second, the
longest wait of a small local run. The rows, the split arithmetic and the seeded order
are those `datasets` gives (tests/test_datasets.py compares them).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from .core.datasets import (
    BABI_ARCHIVE_URL,
    BABI_TASK_FILES,
    DatasetDefinition,
    Restructure,
    UnknownDataset,
    parse_babi,
    resolve_dataset,
)
from .core.observations import (
    DATASET_CATEGORIES,
    InvalidObservation,
    Observation,
    observation_from_dict,
)

# Where local mirrors live when no folder is given (e.g. on a machine without the Hub).
MIRROR_ENV = "INTROSPECT_DATASETS_DIR"


@cache
def _hf() -> Any:
    """Hugging Face `datasets`, imported on first use: it takes a second to import, and
    only the processes that load a split need it."""
    import datasets

    datasets.disable_progress_bars()  # Introspect shows its own progress; per-file bars are noise
    return datasets


# The label names of each Hub source's `ClassLabel`: a mirror's JSON lines may hold a label
# as its number or its name, as the Hub's files do.
SOURCE_LABEL_NAMES: dict[tuple[str, str | None], tuple[str, ...]] = {
    ("stanfordnlp/imdb", "plain_text"): ("neg", "pos"),
    ("nyu-mll/glue", "sst2"): ("negative", "positive"),
    ("nyu-mll/glue", "rte"): ("entailment", "not_entailment"),
}

Row = dict[str, Any]


Mirror = str | os.PathLike[str] | None


class DatasetLoadError(RuntimeError):
    """A dataset could not be read (missing file, no network, bad schema)."""


@dataclass(frozen=True, slots=True)
class LocalFileDataset:
    """A user's own data: one JSONL, CSV or Parquet file, its columns mapped onto the
    observation fields of a declared category (e.g. {"text": "review", "label": "stars"}),
    labels optionally renamed (e.g. {"1": "negative", "5": "positive"})."""

    path: Path
    category: str
    columns: Mapping[str, str] = field(default_factory=dict)
    label_map: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.stem

    def file_format(self) -> str:
        suffix = self.path.suffix.lower()
        formats = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
        if suffix not in formats:
            raise DatasetLoadError(f"{self.path}: unsupported file type {suffix!r}; use .jsonl, .csv or .parquet")
        return formats[suffix]


def load_split(
    dataset: str | LocalFileDataset,
    split: str,
    seed: int = 0,
    mirror: Mirror = None,
) -> list[Observation]:
    """The observations of one split, `idx` assigned in source order, then shuffled by `seed`."""
    if isinstance(dataset, LocalFileDataset):
        rows = _load_local_file(dataset)
        restructure = _local_restructure(dataset)
    else:
        definition = resolve_dataset(dataset)
        rows = _load_source(definition, definition.split_selection(split), mirror or os.environ.get(MIRROR_ENV))
        restructure = definition.restructure
    return shuffled([restructure(row, idx) for idx, row in enumerate(rows)], seed)


def shuffled(observations: list[Observation], seed: int) -> list[Observation]:
    """The seeded order of the paper: `datasets.Dataset.shuffle(seed=seed)`, which is the
    permutation of NumPy's default generator seeded so; it changes nothing but order."""
    import numpy as np

    return [observations[i] for i in np.random.default_rng(seed).permutation(len(observations))]


def _hub_rows(table: Any) -> list[Row]:
    """The rows of a Hugging Face dataset, each label by its name when it is a class label."""
    feature = table.features.get("label")
    names = list(feature.names) if isinstance(feature, _hf().ClassLabel) else None
    # to_list converts the Arrow table column by column: iterating the Dataset formats
    # every row on its own, half a second for 10,000 rows.
    rows = table.to_list()
    return rows if names is None else [{**row, "label": names[row["label"]]} for row in rows]


def select_rows(selection: str, splits: Mapping[str, list[Row]]) -> list[Row]:
    """The rows a split selection names (`test`, `train[:80%]`, `train[80%:]`, `train[10:20]`),
    by the arithmetic of `datasets.ReadInstruction`: a percentage boundary is the closest
    row (Python's rounding), a negative one counts from the end, both are clipped."""
    match = re.fullmatch(r"([\w.-]+)(?:\[(-?\d+)?(%?):(-?\d+)?(%?)\])?", selection)
    if match is None:
        raise DatasetLoadError(f"cannot read the split selection {selection!r}")
    name, start, start_unit, stop, stop_unit = match.groups()
    if name not in splits:
        raise DatasetLoadError(f"no split {name!r} (there are {', '.join(sorted(splits)) or 'none'})")
    rows = splits[name]

    def bound(value: str | None, unit: str, default: int) -> int:
        if value is None:
            return default
        number = round(int(value) * len(rows) / 100.0) if unit == "%" else int(value)
        return min(max(len(rows) + number, 0) if number < 0 else number, len(rows))

    return rows[bound(start, start_unit, 0) : bound(stop, stop_unit, len(rows))]


def _load_source(definition: DatasetDefinition, selection: str, mirror: Mirror) -> list[Row]:
    if definition.source == "babi":
        return _load_babi(definition, selection, mirror)
    try:
        if mirror is None:
            return _hub_rows(
                _hf().load_dataset(
                    definition.source, definition.source_config, revision=definition.source_revision, split=selection
                )
            )
        return _load_mirror(definition, selection, Path(mirror))
    except DatasetLoadError:
        raise
    except Exception as error:  # the Hub, the network or the files: all end the same way
        hint = "; without the Hugging Face Hub, point --mirror (or INTROSPECT_DATASETS_DIR) at copies of its files"
        if mirror is not None:
            hint = ""
        raise DatasetLoadError(f"could not load {definition.name} ({definition.source}): {error}{hint}") from error


def _load_babi(definition: DatasetDefinition, selection: str, mirror: Mirror) -> list[Row]:
    """bAbI comes as one archive of text files; parse the task's train or test file."""
    if mirror is not None:
        archive = Path(mirror) / "babi" / "tasks_1-20_v1-2.tar.gz"
    else:
        try:
            archive = Path(_hf().DownloadManager().download(BABI_ARCHIVE_URL))
        except Exception as error:
            raise DatasetLoadError(f"could not download the bAbI archive: {error}") from error
    if not archive.is_file():
        raise DatasetLoadError(f"no bAbI archive at {archive}")

    tables: dict[str, list[Row]] = {}
    with tarfile.open(archive, "r:gz") as tar:
        for raw_split in ("train", "test"):
            member = BABI_TASK_FILES[definition.source_config or ""].format(split=raw_split)
            try:
                handle = tar.extractfile(member)
            except KeyError:
                handle = None
            if handle is None:
                raise DatasetLoadError(f"{archive} has no file {member}")
            tables[raw_split] = parse_babi(handle.read().decode("utf-8").splitlines())
    return select_rows(selection, tables)


def _load_mirror(definition: DatasetDefinition, selection: str, mirror: Path) -> list[Row]:
    """A split from a mirror's JSON lines, read with the standard library: the rows the Hub's
    loader gives for the same files, without importing `datasets` (a second, on a laptop)."""
    folder = mirror / definition.source / (definition.source_config or "default")
    files = {path.stem: path for path in sorted(folder.glob("*.jsonl"))}
    if not files:
        raise DatasetLoadError(f"no mirror of {definition.name} in {folder} (expected <split>.jsonl files)")
    name = selection.partition("[")[0]
    if name not in files:
        raise DatasetLoadError(f"no split {name!r} in the mirror {folder} (there are {', '.join(files)})")
    path = files[name]
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetLoadError(f"could not read {path}: {error}") from None
    rows = _plain_rows(path, text, "json")
    names = SOURCE_LABEL_NAMES.get((definition.source, definition.source_config))
    if names is not None:
        rows = [{**row, "label": _label_name(row.get("label"), names, path, number)} for number, row in enumerate(rows)]
    return select_rows(selection, {name: rows})


def _label_name(label: Any, names: tuple[str, ...], path: Path, number: int) -> str:
    if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(names):
        return names[label]
    if isinstance(label, str) and label in names:
        return label
    raise DatasetLoadError(
        f"{path}: row {number + 1} has the label {label!r}, not one of {', '.join(names)} or its number"
    )


def _load_local_file(dataset: LocalFileDataset) -> list[Row]:
    if dataset.category not in DATASET_CATEGORIES:
        raise UnknownDataset(f"unknown category {dataset.category!r}; use one of {', '.join(DATASET_CATEGORIES)}")
    if not dataset.path.is_file():
        raise DatasetLoadError(f"no such file: {dataset.path}")
    try:
        return _hub_rows(_hf().load_dataset(dataset.file_format(), data_files=str(dataset.path), split="train"))
    except Exception as error:
        raise DatasetLoadError(f"could not read {dataset.path}: {error}") from error


def _local_restructure(dataset: LocalFileDataset) -> Restructure:
    def restructure(row: Mapping[str, Any], idx: int) -> Observation:
        data: dict[str, Any] = {}
        for name, column in {**_identity_columns(dataset.category), **dataset.columns}.items():
            if column not in row:
                raise InvalidObservation(
                    f"{dataset.path}: row {idx + 1} has no column {column!r} (for {name}); "
                    f"its columns are {', '.join(map(str, row))}; name one with --column {name}=COLUMN"
                )
            data[name] = row[column]
        raw = str(data["label"])
        data["label"] = dataset.label_map.get(raw, raw)
        data["idx"] = idx
        try:
            return observation_from_dict(dataset.category, data)
        except InvalidObservation as error:
            hint = ""
            if "'label'" in str(error) and raw not in dataset.label_map:
                hint = f"; map it with --label {raw}=LABEL"
            raise InvalidObservation(f"{dataset.path}: row {idx + 1}: {error}{hint}") from None

    return restructure


def check_local_file(dataset: LocalFileDataset) -> None:
    """The mistakes people make with their own data file, found before anything starts and
    named with the file and row: missing, empty, only a header, not UTF-8, a column or a
    label that does not fit. CSV and JSON lines are read with the standard library (a
    Parquet file is checked when it is loaded)."""
    path = dataset.path
    if dataset.category not in DATASET_CATEGORIES:
        raise UnknownDataset(f"unknown category {dataset.category!r}; use one of {', '.join(DATASET_CATEGORIES)}")
    if not path.is_file():
        raise DatasetLoadError(f"no such file: {path}")
    file_format = dataset.file_format()
    if path.stat().st_size == 0:
        raise DatasetLoadError(f"{path} is empty")
    if file_format == "parquet":
        return
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is how Excel saves "CSV UTF-8"
    except UnicodeDecodeError as error:
        byte = error.object[error.start]
        raise DatasetLoadError(
            f"{path} is not UTF-8 text (byte {byte:#04x} at offset {error.start}); save it as UTF-8"
        ) from None
    rows = _plain_rows(path, text, file_format)
    if not rows:
        raise DatasetLoadError(f"{path} has a header but no rows" if file_format == "csv" else f"{path} has no rows")
    restructure = _local_restructure(dataset)
    for idx, row in enumerate(rows):
        restructure(row, idx)


def _plain_rows(path: Path, text: str, file_format: str) -> list[dict[str, Any]]:
    if file_format == "csv":
        return list(csv.DictReader(io.StringIO(text)))
    if text.lstrip().startswith("["):  # a .json file holding one array
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as error:
            raise DatasetLoadError(f"{path} is not valid JSON: {error}") from None
        return [row for row in rows if isinstance(row, dict)]
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DatasetLoadError(f"{path}: line {number} is not JSON ({error})") from None
            if not isinstance(row, dict):
                raise DatasetLoadError(f"{path}: line {number} is not a JSON object (one row per line)")
            rows.append(row)
    return rows


def _identity_columns(category: str) -> dict[str, str]:
    names = {
        "sentiment": ("text", "label"),
        "entailment": ("paragraph", "hypothesis", "label"),
        "multi-choice": ("paragraph", "question", "choices", "label"),
    }[category]
    return {name: name for name in names}
