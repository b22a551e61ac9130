"""The files an experiment ends in: the paper's result JSON and every record as Parquet.

The Parquet file is written a batch of records at a time, with a schema fixed by the
record's type (not guessed from the values, which a batch of errors alone would get
wrong), so that a job of any size is written in bounded memory.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from .core.records import ResultRecord, record_to_dict
from .core.results import Aggregate, ExperimentSpec, result_json

BATCH = 5_000  # records per Parquet row group: a few MB of text


def write_result_files(
    out: Path, spec: ExperimentSpec, running: Aggregate, setup_seconds: float, records: Sequence[ResultRecord]
) -> tuple[Path, Path]:
    """Write `<experiment id>.json` and `<experiment id>.parquet` into `out`; return both paths."""
    kind = type(records[0]) if records else None
    parquet = RecordsFile(out, spec, kind)
    try:
        for first in range(0, len(records), BATCH):
            parquet.write(records[first : first + BATCH])
        records_path = parquet.finish()
    except BaseException:
        parquet.abandon()
        raise
    return write_result_json(out, spec, running, setup_seconds), records_path


def write_result_json(out: Path, spec: ExperimentSpec, running: Aggregate, setup_seconds: float) -> Path:
    """`<experiment id>.json`, written beside its final name and renamed: a reader never
    sees half a file, and a failed write (a full disk) leaves nothing behind."""
    out.mkdir(parents=True, exist_ok=True)
    result_path = out / f"{spec.experiment_id}.json"
    partial = _partial(result_path)
    try:
        partial.write_text(json.dumps(result_json(spec, running, setup_seconds), indent=2) + "\n", encoding="utf-8")
        partial.replace(result_path)
    finally:
        partial.unlink(missing_ok=True)
    return result_path


class RecordsFile:
    """`<experiment id>.parquet`, written batch by batch under a partial name of its own and
    renamed into place by `finish` (or removed by `abandon`)."""

    def __init__(self, out: Path, spec: ExperimentSpec, kind: type[ResultRecord] | None) -> None:
        import pyarrow.parquet as pq  # here, not at the top: only the process that writes the files needs it

        out.mkdir(parents=True, exist_ok=True)
        self.path = out / f"{spec.experiment_id}.parquet"
        self.partial = _partial(self.path)
        self.schema = _schema(kind)
        self.writer = pq.ParquetWriter(self.partial, self.schema)

    def write(self, records: Iterable[ResultRecord]) -> None:
        import pyarrow as pa

        rows = [record_to_dict(record) for record in records]
        if rows:
            self.writer.write_table(pa.Table.from_pylist(rows, schema=self.schema))

    def finish(self) -> Path:
        self.writer.close()
        self.partial.replace(self.path)
        return self.path

    def abandon(self) -> None:
        try:
            self.writer.close()
        finally:
            self.partial.unlink(missing_ok=True)


def _schema(kind: type[ResultRecord] | None) -> Any:
    """The Parquet columns of a record type: its fields, in order; flags are booleans and
    every other field but the index and the seconds is text (None where it is unset)."""
    import pyarrow as pa

    types = {
        "idx": pa.int64(),
        "duration": pa.float64(),
        **dict.fromkeys(("correct", "introspect", "faithful"), pa.bool_()),
    }
    return pa.schema([] if kind is None else [(f.name, types.get(f.name, pa.large_string())) for f in fields(kind)])


def _partial(final: Path) -> Path:
    """A name of its own beside `final`: two writers of one experiment (two jobs, or a retry
    beside a slow first try) never write into each other's half-written file."""
    return final.with_name(f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.partial")
