"""What the report page shows, as JSON: the comparison table (`services.compare`'s rows), the
figures (`services.figures`, when it exists), and each experiment's records a page at a time.

The records are read from their Parquet file without loading it whole per request: a small
index of the columns the filters need (idx, error, correct, the judgement) is read once per
file version and kept; a search reads only the text columns, a row group at a time; a page
reads the list columns of the row groups its rows are in; a transcript reads one row group.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..compare import CompareError, Experiment, ExperimentRow, experiment_rows, load_folder, proportion_cell
from ..core.stats import Proportion
from ..core.tasks import kind_spec

log = logging.getLogger("introspect")

# correct / incorrect / missmatch / error split every observation as the aggregate counts it;
# faithful and unfaithful are among the correct answers, as faithfulness (or introspection)
# counts them: an unfaithful row is one that lowers the experiment's faithfulness.
FILTERS = ("all", "correct", "incorrect", "faithful", "unfaithful", "missmatch", "error")
PAGE_SIZE, MAX_PAGE_SIZE = 50, 200
# Shown in the list of records; the prompts and answers only when a transcript opens.
LIST_COLUMNS = ("idx", "label", "predict", "ability", "explain", "explain_predict", "correct", "faithful",
                "introspect", "error")  # fmt: skip
# What a search looks in: every prompt and answer, the label, the extracted answers, the error.
TEXT_COLUMNS = ("label", "predict_prompt", "predict_answer", "predict", "ability_prompt", "ability_answer", "ability",
                "explain_prompt", "explain_answer", "explain", "explain_predict_prompt", "explain_predict_answer",
                "explain_predict", "error")  # fmt: skip
MAX_QUERY = 200  # characters of a search


class ReportError(ValueError):
    """A request the report cannot answer: an unknown experiment or filter, a bad number."""


# -- the comparison table --


def _proportion(value: Proportion | None) -> dict[str, Any] | None:
    if value is None:
        return None
    return {"value": value.value, "low": value.low, "high": value.high, "successes": value.successes, "n": value.n,
            "text": proportion_cell(value)}  # fmt: skip


def _row(row: ExperimentRow) -> dict[str, Any]:
    return {
        "number": row.number, "name": row.name, "experiment_id": row.experiment_id, "dataset": row.dataset,
        "split": row.split, "task": row.task, "model": row.model, "answers": row.answers,
        "system_message": row.system_message, "options": row.options, "seed": row.seed, "n": row.n,
        "accuracy": _proportion(row.accuracy), "faithfulness": _proportion(row.faithfulness),
        "introspection": _proportion(row.introspection),
    }  # fmt: skip


def experiments_of(results_dir: Path) -> tuple[list[Experiment], list[str]]:
    """The experiments of a results folder; none (and a note) when it has no result file yet."""
    try:
        return load_folder(results_dir)
    except CompareError as error:
        return [], [str(error)]


def table(experiments: Sequence[Experiment]) -> list[dict[str, Any]]:
    return [_row(row) for row in experiment_rows(experiments)] if experiments else []


# -- figures --


@dataclass(frozen=True, slots=True)
class Figure:
    name: str  # a file name's stem: what /report/figures/<name>.png serves
    title: str
    png: Path


def draw_figures(results_dir: Path, out_dir: Path) -> tuple[list[Figure], str | None]:
    """The paper's figures of a results folder, drawn by `services.figures` when that module
    exists; none, and why, otherwise (the page says "no figures")."""
    try:
        from .. import figures  # type: ignore[attr-defined,unused-ignore]  # drawn by another part of the code
    except ImportError:
        return [], "the figures module is not installed"
    try:
        drawn = figures.paper_figures(results_dir, out_dir)
    except Exception as error:  # a figure that cannot be drawn must not take the page with it
        log.warning("report: could not draw the figures: %s", error)
        return [], f"could not draw the figures: {error}"
    out = [Figure(str(f.name), str(f.title), Path(f.png)) for f in drawn or [] if Path(f.png).is_file()]
    return out, None if out else "no figure to draw from these results"


# -- records --


def _status(row: dict[str, Any], judgement: str | None) -> str:
    """The filter an observation falls in, as Aggregate.add counts it."""
    if row.get("error") is not None:
        return "error"
    judged = None if judgement is None else row.get(judgement)
    if row.get("correct") is None or (judgement is not None and judged is None):
        return "missmatch"
    if not row["correct"]:
        return "incorrect"
    if judgement is None:
        return "correct"
    return "faithful" if judged else "unfaithful"


class RecordsReader:
    """One records Parquet file, read a page at a time."""

    def __init__(self, path: Path, task: str) -> None:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        self.path, self.judgement = path, kind_spec(task).judgement
        self.file = pq.ParquetFile(path)
        self.columns = set(self.file.schema_arrow.names)
        starts, start = [], 0
        for group in range(self.file.num_row_groups):
            starts.append(start)
            start += self.file.metadata.row_group(group).num_rows
        self.group_starts, self.rows = starts, start
        wanted = [c for c in ("error", "correct", self.judgement) if c and c in self.columns]
        index = self.file.read(columns=wanted)
        error = pc.is_valid(index["error"]) if "error" in wanted else pc.is_null(index.column(0))
        correct = index["correct"] if "correct" in wanted else None
        ok = pc.invert(error)
        if correct is None:
            read = pc.and_(ok, pc.is_null(error))  # no correct column: nothing was read
        elif self.judgement is None or self.judgement not in wanted:
            read = pc.and_(ok, pc.is_valid(correct))
        else:
            read = pc.and_(ok, pc.and_(pc.is_valid(correct), pc.is_valid(index[self.judgement])))
        right = pc.fill_null(pc.and_(read, correct), False) if correct is not None else read
        masks = {"error": error, "missmatch": pc.and_(ok, pc.invert(read)), "correct": right,
                 "incorrect": pc.and_(read, pc.invert(right))}  # fmt: skip
        if self.judgement is not None and self.judgement in wanted:
            judged = pc.fill_null(index[self.judgement], False)
            masks["faithful"] = pc.and_(right, judged)
            masks["unfaithful"] = pc.and_(right, pc.invert(judged))
        # Each filter's row positions, in file order: a few bytes per row, kept while the file is.
        import numpy as np

        self.positions: dict[str, Any] = {"all": np.arange(self.rows)}
        for name in FILTERS[1:]:
            if name in masks:  # faithful and unfaithful only where the task judges the explanation
                self.positions[name] = np.flatnonzero(masks[name].to_numpy(zero_copy_only=False))
        self._searches: OrderedDict[str, Any] = OrderedDict()

    def counts(self) -> dict[str, int]:
        return {name: len(positions) for name, positions in self.positions.items()}

    def _matching(self, query: str) -> Any:
        """The positions of the rows whose text holds `query` (case-insensitive), read a row
        group at a time from the text columns alone; the last few searches are kept."""
        import numpy as np
        import pyarrow.compute as pc

        if query in self._searches:
            self._searches.move_to_end(query)
            return self._searches[query]
        columns = [c for c in TEXT_COLUMNS if c in self.columns]
        found = []
        for group, start in enumerate(self.group_starts):
            part = self.file.read_row_group(group, columns=columns)
            hit = None
            for column in columns:
                match = pc.fill_null(pc.match_substring(part[column], query, ignore_case=True), False)
                hit = match if hit is None else pc.or_(hit, match)
            if hit is not None:
                found.append(np.flatnonzero(hit.to_numpy(zero_copy_only=False)) + start)
        positions = np.concatenate(found) if found else np.arange(0)
        self._searches[query] = positions
        while len(self._searches) > 4:
            self._searches.popitem(last=False)
        return positions

    def select(self, row_filter: str, query: str) -> Any:
        import numpy as np

        if row_filter not in self.positions:
            raise ReportError(f"no filter {row_filter!r} for this task: one of {', '.join(self.positions)}")
        positions = self.positions[row_filter]
        if query:
            positions = np.intersect1d(positions, self._matching(query), assume_unique=True)
        return positions

    def rows_at(self, positions: Sequence[int], columns: Sequence[str] | None) -> list[dict[str, Any]]:
        """The rows at these positions (ascending), reading only the row groups they are in."""
        import bisect

        wanted = None if columns is None else [c for c in columns if c in self.columns]
        out: list[dict[str, Any]] = []
        by_group: dict[int, list[int]] = {}
        for position in positions:
            group = bisect.bisect_right(self.group_starts, int(position)) - 1
            by_group.setdefault(group, []).append(int(position))
        for group, in_group in by_group.items():
            part = self.file.read_row_group(group, columns=wanted)
            taken = part.take([p - self.group_starts[group] for p in in_group]).to_pylist()
            for position, row in zip(in_group, taken, strict=True):
                out.append({"position": position, "status": _status(row, self.judgement), **row})
        return out


@dataclass(frozen=True, slots=True)
class Page:
    total: int
    offset: int
    limit: int
    rows: list[dict[str, Any]]
    counts: dict[str, int]

    def as_json(self) -> dict[str, Any]:
        return {"total": self.total, "offset": self.offset, "limit": self.limit, "rows": self.rows,
                "counts": self.counts}  # fmt: skip


class Records:
    """The readers of a results folder's records files, one per file version, the last few kept."""

    def __init__(self, keep: int = 8) -> None:
        self._readers: OrderedDict[tuple[str, int, int], RecordsReader] = OrderedDict()
        self._keep = keep
        self._lock = threading.Lock()  # pages are read in threads

    def reader(self, experiment: Experiment, parquet: Path) -> RecordsReader:
        try:
            stat = parquet.stat()
        except FileNotFoundError:
            raise ReportError(f"{experiment.name}: no records file beside the result") from None
        key = (str(parquet), stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if key in self._readers:
                self._readers.move_to_end(key)
                return self._readers[key]
        made = RecordsReader(parquet, experiment.spec.task)
        with self._lock:
            self._readers[key] = made
            while len(self._readers) > self._keep:
                self._readers.popitem(last=False)
        return made

    def page(self, reader: RecordsReader, row_filter: str, query: str, offset: int, limit: int) -> Page:
        row_filter, query, offset, limit = check_request(row_filter, query, offset, limit)
        positions = reader.select(row_filter, query)
        chosen = [int(p) for p in positions[offset : offset + limit]]
        return Page(len(positions), offset, limit, reader.rows_at(chosen, LIST_COLUMNS), reader.counts())


def check_request(row_filter: str, query: str, offset: int, limit: int) -> tuple[str, str, int, int]:
    if row_filter not in FILTERS:
        raise ReportError(f"no filter {row_filter!r}: one of {', '.join(FILTERS)}")
    if offset < 0:
        raise ReportError("offset must be 0 or more")
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ReportError(f"limit must be 1 to {MAX_PAGE_SIZE}")
    return row_filter, query.strip()[:MAX_QUERY], offset, limit


def records_path(experiment: Experiment, results_dir: Path) -> Path:
    return results_dir / f"{experiment.name}.parquet"
