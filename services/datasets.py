"""Loading dataset splits: from the Hugging Face Hub, from a local mirror of a dataset's
raw files, or from a user's own JSONL/CSV/Parquet file.

A split is opened, not loaded: `open_split` counts its rows and notes where each one is
(a byte offset in a JSON lines or CSV file, a position in a memory-mapped Arrow table),
and `SplitRows.read` reads the rows asked for. So the producer publishes a split of a
million rows a chunk at a time without ever holding it; `load_split` reads a whole split,
for the in-process runner and the tests.

The Hub and a user's Parquet file are read with Hugging Face `datasets`, whose Arrow
tables are memory-mapped and read by position. A user's JSON lines or CSV file and a
local mirror (a folder laid out like the source, `<dir>/<hub id>/<split>.jsonl`, and the
bAbI archive as `<dir>/babi/tasks_1-20_v1-2.tar.gz`) are read with the standard library:
importing `datasets` takes a second, the longest wait of a small local run. The rows, the
split arithmetic and the seeded order are those `datasets` gives (tests/test_datasets.py
compares them).
"""

from __future__ import annotations

import codecs
import csv
import json
import os
import re
import tarfile
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

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

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

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


Fetch = Callable[[Sequence[int]], list[Row]]  # the raw rows at these positions, in that order

READ_BLOCK = 1000  # rows read at once when a whole split is read or checked


@dataclass(frozen=True, slots=True)
class SplitRows:
    """One split, its rows left where they are (a file, a memory-mapped Arrow table) until
    read. Position p is the p-th row of the split selection in source order: the `idx` of
    the observation it becomes."""

    count: int
    fetch: Fetch
    restructure: Restructure

    def __len__(self) -> int:
        return self.count

    def read(self, positions: Sequence[int]) -> list[Observation]:
        """The observations at `positions`, in that order."""
        rows = self.fetch(positions)
        return [self.restructure(row, position) for position, row in zip(positions, rows, strict=True)]

    def blocks(self, size: int = READ_BLOCK) -> Iterator[list[Observation]]:
        """Every observation in source order, `size` at a time."""
        for first in range(0, self.count, size):
            yield self.read(range(first, min(first + size, self.count)))


def open_split(dataset: str | LocalFileDataset, split: str, mirror: Mirror = None) -> SplitRows:
    """The rows of one split, counted and indexed but not read."""
    if isinstance(dataset, LocalFileDataset):
        return _open_local_file(dataset)
    definition = resolve_dataset(dataset)
    selection = definition.split_selection(split)
    count, fetch = _open_source(definition, selection, mirror or os.environ.get(MIRROR_ENV))
    return SplitRows(count, fetch, definition.restructure)


def load_split(
    dataset: str | LocalFileDataset,
    split: str,
    seed: int = 0,
    mirror: Mirror = None,
) -> list[Observation]:
    """The observations of one split, `idx` assigned in source order, then shuffled by `seed`."""
    rows = open_split(dataset, split, mirror)
    return shuffled([observation for block in rows.blocks() for observation in block], seed)


def seeded_order(count: int, seed: int) -> npt.NDArray[np.integer[Any]]:
    """The seeded order of the paper: `datasets.Dataset.shuffle(seed=seed)`, which is the
    permutation of NumPy's default generator seeded so. Shuffling 32-bit positions draws
    the same numbers as shuffling `range(count)`, in half the memory."""
    import numpy as np

    positions = np.arange(count, dtype=np.int32 if count < 2**31 else np.int64)
    return np.random.default_rng(seed).permutation(positions)


def shuffled(observations: list[Observation], seed: int) -> list[Observation]:
    """The observations in the seeded order; it changes nothing but order."""
    return [observations[i] for i in seeded_order(len(observations), seed)]


def _hub_rows(table: Any) -> list[Row]:
    """The rows of a Hugging Face dataset, each label by its name when it is a class label."""
    feature = table.features.get("label")
    names = list(feature.names) if isinstance(feature, _hf().ClassLabel) else None
    # to_list converts the Arrow table column by column: iterating the Dataset formats
    # every row on its own, half a second for 10,000 rows.
    rows = table.to_list()
    return rows if names is None else [{**row, "label": names[row["label"]]} for row in rows]


def _table_fetch(table: Any) -> Fetch:
    """Rows by position from a Hugging Face dataset: its Arrow table is memory-mapped from
    the cache, and `select` reads only the rows asked for."""
    return lambda positions: _hub_rows(table.select(positions))


def _memory_fetch(rows: Sequence[Row]) -> Fetch:
    return lambda positions: [rows[position] for position in positions]


S = TypeVar("S", bound=Sequence[Any])


def select_rows(selection: str, splits: Mapping[str, S]) -> S:
    """The rows a split selection names (`test`, `train[:80%]`, `train[80%:]`, `train[10:20]`),
    by the arithmetic of `datasets.ReadInstruction`: a percentage boundary is the closest
    row (Python's rounding), a negative one counts from the end, both are clipped. Any
    sequence: a list of rows, or a range of their positions."""
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

    return rows[bound(start, start_unit, 0) : bound(stop, stop_unit, len(rows))]  # type: ignore[return-value]


def _open_source(definition: DatasetDefinition, selection: str, mirror: Mirror) -> tuple[int, Fetch]:
    if definition.source == "babi":
        rows = _load_babi(definition, selection, mirror)
        return len(rows), _memory_fetch(rows)
    try:
        if mirror is None:
            table = _hf().load_dataset(
                definition.source, definition.source_config, revision=definition.source_revision, split=selection
            )
            return len(table), _table_fetch(table)
        return _open_mirror(definition, selection, Path(mirror))
    except DatasetLoadError:
        raise
    except Exception as error:  # the Hub, the network or the files: all end the same way
        hint = "; without the Hugging Face Hub, point --mirror (or INTROSPECT_DATASETS_DIR) at copies of its files"
        if mirror is not None:
            hint = ""
        raise DatasetLoadError(f"could not load {definition.name} ({definition.source}): {error}{hint}") from error


def _load_babi(definition: DatasetDefinition, selection: str, mirror: Mirror) -> list[Row]:
    """bAbI comes as one archive of text files; parse the task's train or test file. A
    task file is a few megabytes at most: its rows are held."""
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


def _open_mirror(definition: DatasetDefinition, selection: str, mirror: Path) -> tuple[int, Fetch]:
    """A split from a mirror's JSON lines, read with the standard library: the rows the Hub's
    loader gives for the same files, without importing `datasets` (a second, on a laptop).

    Every line is parsed and every label checked here, as reading the file whole did; what
    is kept is where each row starts."""
    folder = mirror / definition.source / (definition.source_config or "default")
    files = {path.stem: path for path in sorted(folder.glob("*.jsonl"))}
    if not files:
        raise DatasetLoadError(f"no mirror of {definition.name} in {folder} (expected <split>.jsonl files)")
    name = selection.partition("[")[0]
    if name not in files:
        raise DatasetLoadError(f"no split {name!r} in the mirror {folder} (there are {', '.join(files)})")
    path = files[name]
    names = SOURCE_LABEL_NAMES.get((definition.source, definition.source_config))

    def named(row: Row, number: int) -> Row:
        return row if names is None else {**row, "label": _label_name(row.get("label"), names, path, number)}

    try:
        if _holds_one_array(path, bom=False):
            every_row = _json_array(path, bom=False)
            rows = select_rows(selection, {name: [named(row, number) for number, row in enumerate(every_row)]})
            return len(rows), _memory_fetch(rows)
        offsets = _offsets(path)
        problem: DatasetLoadError | None = None  # a bad label is named once the whole file has read
        try:
            for number, (offset, row) in enumerate(_json_lines(path, bom=False)):
                offsets.append(offset)
                if problem is None:
                    try:
                        named(row, number)
                    except DatasetLoadError as error:
                        problem = error
        except DatasetLoadError:
            _read_through(path, bom=False)  # bytes that are not UTF-8 are named first, as before
            raise
    except _NotUtf8 as error:
        raise DatasetLoadError(f"could not read {path}: {error.describe()}") from None
    except OSError as error:
        raise DatasetLoadError(f"could not read {path}: {error}") from None
    if problem is not None:
        raise problem
    numbers = select_rows(selection, {name: range(len(offsets))})  # the file's row numbers in the selection

    def fetch(positions: Sequence[int]) -> list[Row]:
        chosen = [numbers[position] for position in positions]
        rows = _json_lines_at(path, [offsets[number] for number in chosen])
        return [named(row, number) for row, number in zip(rows, chosen, strict=True)]

    return len(numbers), fetch


def _load_mirror(definition: DatasetDefinition, selection: str, mirror: Path) -> list[Row]:
    """A mirror's split read whole (the rows `datasets` gives for the same files)."""
    count, fetch = _open_mirror(definition, selection, mirror)
    return fetch(range(count))


def _label_name(label: Any, names: tuple[str, ...], path: Path, number: int) -> str:
    if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(names):
        return names[label]
    if isinstance(label, str) and label in names:
        return label
    raise DatasetLoadError(
        f"{path}: row {number + 1} has the label {label!r}, not one of {', '.join(names)} or its number"
    )


def _open_local_file(dataset: LocalFileDataset) -> SplitRows:
    """A user's file: JSON lines and CSV indexed with the standard library (a JSON file
    holding one array is read whole), Parquet through `datasets` and checked row by row
    here (`check_local_file` leaves it to this)."""
    if dataset.category not in DATASET_CATEGORIES:
        raise UnknownDataset(f"unknown category {dataset.category!r}; use one of {', '.join(DATASET_CATEGORIES)}")
    path = dataset.path
    if not path.is_file():
        raise DatasetLoadError(f"no such file: {path}")
    file_format = dataset.file_format()
    restructure = _local_restructure(dataset)
    try:
        if file_format == "parquet":
            table = _hf().load_dataset("parquet", data_files=str(path), split="train")
            count, fetch = len(table), _table_fetch(table)
        elif file_format == "csv":
            count, fetch = _index_csv(path)
        elif _holds_one_array(path, bom=True):
            rows = _json_array(path, bom=True)
            count, fetch = len(rows), _memory_fetch(rows)
        else:
            count, fetch = _index_json_lines(path)
    except _NotUtf8 as error:
        raise DatasetLoadError(f"could not read {path}: {error.describe()}") from None
    except DatasetLoadError:
        raise
    except Exception as error:
        raise DatasetLoadError(f"could not read {path}: {error}") from error
    split = SplitRows(count, fetch, restructure)
    if file_format == "parquet":
        for _ in split.blocks():  # a row that does not fit is named before anything is published
            pass
    return split


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
    label that does not fit. CSV and JSON lines are read with the standard library, as a
    stream (a JSON file holding one array is read whole); a Parquet file is checked when
    it is opened. Which mistake is named is what reading the whole file first named: bytes
    that are not UTF-8 anywhere, then a line that does not parse, then the first row that
    does not fit."""
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
    restructure = _local_restructure(dataset)
    problem: InvalidObservation | None = None  # the first row that does not fit
    count = 0
    try:
        try:
            for idx, row in enumerate(_local_rows(path, file_format)):
                count += 1
                if problem is None:
                    try:
                        restructure(row, idx)
                    except InvalidObservation as error:
                        problem = error
        except (DatasetLoadError, csv.Error):
            _read_through(path, bom=True)
            raise
    except _NotUtf8 as error:
        # A byte-order mark is how Excel saves "CSV UTF-8": offsets count from after it.
        offset = error.offset - (len(codecs.BOM_UTF8) if _starts_with_bom(path) else 0)
        raise DatasetLoadError(
            f"{path} is not UTF-8 text (byte {error.byte:#04x} at offset {offset}); save it as UTF-8"
        ) from None
    if not count:
        raise DatasetLoadError(f"{path} has a header but no rows" if file_format == "csv" else f"{path} has no rows")
    if problem is not None:
        raise problem


def _local_rows(path: Path, file_format: str) -> Iterator[Row]:
    if file_format == "csv":
        _, records = _csv_records(path)
        yield from (row for _, row in records)
    elif _holds_one_array(path, bom=True):
        yield from _json_array(path, bom=True)
    else:
        yield from (row for _, row in _json_lines(path, bom=True))


# -- text files as streams of lines --
#
# A line ends at \n, \r\n or a lone \r, as Python's universal newlines have it (how the
# files were read whole before), and each is decoded on its own: none of those bytes can be
# part of a longer UTF-8 character.

_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")


class _NotUtf8(Exception):
    """Bytes that are not UTF-8, at `offset` in the file."""

    def __init__(self, offset: int, error: UnicodeDecodeError) -> None:
        super().__init__(offset, error)
        self.offset = offset
        self.byte = error.object[error.start]
        self.length = error.end - error.start
        self.reason = error.reason

    def describe(self) -> str:
        """What decoding the whole file said."""
        if self.length == 1:
            return f"'utf-8' codec can't decode byte {self.byte:#04x} in position {self.offset}: {self.reason}"
        last = self.offset + self.length - 1
        return f"'utf-8' codec can't decode bytes in position {self.offset}-{last}: {self.reason}"


def _text_lines(file: IO[bytes], start: int = 0, bom: bool = False) -> Iterator[tuple[int, int, str]]:
    """(where it starts, where it ends, its text ending in "\\n") of each line from byte
    `start`; a byte-order mark first in the file is skipped when `bom`."""
    file.seek(start)
    offset = start
    for raw in file:  # split at \n; a \r elsewhere ends a line too
        one_line = b"\r" not in raw or (raw.endswith(b"\r\n") and raw.find(b"\r") == len(raw) - 2)
        pieces = [raw] if one_line else _LINE.findall(raw)
        for piece in pieces:
            begin, offset = offset, offset + len(piece)
            if begin == 0 and bom and piece.startswith(codecs.BOM_UTF8):
                piece, begin = piece[len(codecs.BOM_UTF8) :], len(codecs.BOM_UTF8)
            try:
                text = piece.decode("utf-8")
            except UnicodeDecodeError as error:
                raise _NotUtf8(begin + error.start, error) from None
            if text.endswith("\r\n"):
                text = text[:-2] + "\n"
            elif text.endswith("\r"):
                text = text[:-1] + "\n"
            yield begin, offset, text


def _read_through(path: Path, bom: bool) -> None:
    """Decode the whole file: raises `_NotUtf8` at its first byte that is not UTF-8."""
    with path.open("rb") as file:
        for _ in _text_lines(file, bom=bom):
            pass


def _starts_with_bom(path: Path) -> bool:
    with path.open("rb") as file:
        return file.read(len(codecs.BOM_UTF8)) == codecs.BOM_UTF8


def _holds_one_array(path: Path, bom: bool) -> bool:
    """Whether the file's first character that is not white space opens a JSON array."""
    with path.open("rb") as file:
        head = file.read(len(codecs.BOM_UTF8))
        if not (bom and head == codecs.BOM_UTF8):
            file.seek(0)
        while block := file.read(1 << 16):
            text = block.decode("utf-8", errors="replace").lstrip()
            if text:
                return text.startswith("[")
    return False


def _json_array(path: Path, bom: bool) -> list[Row]:
    """A .json file holding one array, read whole: the standard library has no streaming
    JSON parser. Its objects are its rows; anything else in it is passed over."""
    data = path.read_bytes()
    skip = len(codecs.BOM_UTF8) if bom and data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[skip:].decode("utf-8")
    except UnicodeDecodeError as error:
        raise _NotUtf8(skip + error.start, error) from None
    del data
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as error:
        raise DatasetLoadError(f"{path} is not valid JSON: {error}") from None
    return [row for row in rows if isinstance(row, dict)]


def _json_lines(path: Path, bom: bool) -> Iterator[tuple[int, Row]]:
    """(where it starts, the row) of each row of a JSON lines file; blank lines are passed
    over, and a line that is not a JSON object is named by its number."""
    with path.open("rb") as file:
        for number, (offset, _, text) in enumerate(_text_lines(file, bom=bom), start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text[:-1] if text.endswith("\n") else text)
            except json.JSONDecodeError as error:
                raise DatasetLoadError(f"{path}: line {number} is not JSON ({error})") from None
            if not isinstance(row, dict):
                raise DatasetLoadError(f"{path}: line {number} is not a JSON object (one row per line)")
            yield offset, row


def _offsets(path: Path) -> array[int]:
    """An empty array for the byte offsets of a file's rows: 4 bytes each below 4 GiB."""
    return array("I" if path.stat().st_size < 2**32 else "q")


def _index_json_lines(path: Path) -> tuple[int, Fetch]:
    """Where each row of a JSON lines file starts (its lines are parsed when read)."""
    offsets = _offsets(path)
    with path.open("rb") as file:
        offsets.extend(offset for offset, _, text in _text_lines(file, bom=True) if text.strip())
    return len(offsets), lambda positions: _json_lines_at(path, [offsets[position] for position in positions])


def _json_lines_at(path: Path, offsets: Sequence[int]) -> list[Row]:
    """The rows starting at `offsets`, read in file order and returned in the given order."""
    rows: list[Row] = [{}] * len(offsets)
    with path.open("rb") as file:
        for i in sorted(range(len(offsets)), key=offsets.__getitem__):
            try:
                _, _, text = next(_text_lines(file, offsets[i]))
                row = json.loads(text)
            except (StopIteration, _NotUtf8, ValueError):
                row = None
            if not isinstance(row, dict):
                raise DatasetLoadError(f"could not read {path}: no JSON object at byte {offsets[i]}; did it change?")
            rows[i] = row
    return rows


class _Lines:
    """Lines for the csv reader, noting where in the file the last one handed over ends."""

    def __init__(self, lines: Iterator[tuple[int, int, str]], at: int) -> None:
        self._lines = lines
        self.at = at

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        _, self.at, text = next(self._lines)
        return text


def _csv_records(path: Path) -> tuple[list[str], Iterator[tuple[int, Row]]]:
    """A CSV file's header and (where it starts, the row) of each row, by `csv.DictReader`
    (a quoted value may span lines)."""
    file = path.open("rb")
    lines = _Lines(_text_lines(file, bom=True), 0)
    reader = csv.DictReader(lines)
    try:
        fieldnames = list(reader.fieldnames or [])  # the header is read here: rows start after it
    except BaseException:
        file.close()
        raise

    def records() -> Iterator[tuple[int, Row]]:
        with file:
            while True:
                start = lines.at
                try:
                    row = next(reader)
                except StopIteration:
                    return
                yield start, row

    return fieldnames, records()


def _index_csv(path: Path) -> tuple[int, Fetch]:
    """Where each row of a CSV file starts (blank lines before it included: the reader
    passes over them again)."""
    fieldnames, records = _csv_records(path)
    offsets = _offsets(path)
    offsets.extend(start for start, _ in records)

    def fetch(positions: Sequence[int]) -> list[Row]:
        rows: list[Row] = [{}] * len(positions)
        with path.open("rb") as file:
            for i in sorted(range(len(positions)), key=positions.__getitem__):
                start = offsets[positions[i]]
                reader = csv.DictReader(_Lines(_text_lines(file, start), start), fieldnames=fieldnames)
                try:
                    rows[i] = next(reader)
                except (StopIteration, _NotUtf8, csv.Error):
                    raise DatasetLoadError(
                        f"could not read {path}: no CSV row at byte {start}; did it change?"
                    ) from None
        return rows

    return len(offsets), fetch


def _identity_columns(category: str) -> dict[str, str]:
    names = {
        "sentiment": ("text", "label"),
        "entailment": ("paragraph", "hypothesis", "label"),
        "multi-choice": ("paragraph", "question", "choices", "label"),
    }[category]
    return {name: name for name in names}
