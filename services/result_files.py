"""The files an experiment ends in: the paper's result JSON and every record as Parquet.

The Parquet file is written a batch of records at a time, with a schema fixed by the
record's type (not guessed from the values, which a batch of errors alone would get
wrong), so that a job of any size is written in bounded memory.

Both files carry the result's provenance (`services.provenance`): the JSON under the key
`provenance` beside the paper's `args`, `results` and `durations`, the Parquet file in its
schema metadata (`provenance`, the same object as JSON text).

A result is never silently replaced by one of other provenance (`place_result`): the same
experiment under the same conditions replaces its earlier result; otherwise a person's
`introspect evaluate` is refused with one line saying what differs (`--force` replaces),
and the aggregator, which must not lose a job, writes beside it under the job's own name.
A stand-in's result never takes the place of one that may be a real model's, not even
with `--force`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .core.records import ResultRecord, record_to_dict
from .core.results import Aggregate, ExperimentSpec, result_json
from .provenance import differences, is_real

BATCH = 5_000  # records per Parquet row group: a few MB of text


PROVENANCE_KEY = "provenance"  # in the result JSON, and in the Parquet file's schema metadata

# One writer at a time decides where a result goes and puts it there, so that two jobs of one
# experiment finishing together in one process cannot both take the experiment's name.
PLACING = threading.Lock()


class ResultNotReplaced(Exception):
    """The experiment's result files hold a result this run may not replace (one line)."""


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a result's two files go, and why there when it is not the experiment's name."""

    result: Path
    records: Path
    note: str | None = None


def result_paths(out: Path, name: str) -> tuple[Path, Path]:
    return out / f"{name}.json", out / f"{name}.parquet"


def existing_provenance(out: Path, spec: ExperimentSpec) -> tuple[bool, dict[str, Any] | None]:
    """Whether a result of the experiment is in `out`, and its provenance (None when it has
    none: written before provenance, by hand, or unreadable). The JSON says it; a Parquet
    file alone (the JSON lost) says it in its metadata."""
    result, records = result_paths(out, spec.experiment_id)
    if result.exists():
        try:
            written = json.loads(result.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return True, None
        found = written.get(PROVENANCE_KEY) if isinstance(written, dict) else None
        return True, found if isinstance(found, dict) else None
    if records.exists():
        return True, records_provenance(records)
    return False, None


def records_provenance(path: Path) -> dict[str, Any] | None:
    """The provenance in a records Parquet file's schema metadata, None if it has none."""
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(path).metadata or {}
        found = json.loads(metadata[PROVENANCE_KEY.encode()])
    except (OSError, KeyError, ValueError):  # pyarrow's ArrowInvalid is a ValueError
        return None
    return found if isinstance(found, dict) else None


def place_result(
    out: Path, spec: ExperimentSpec, provenance: dict[str, Any], *, force: bool = False, beside: str | None = None
) -> Placement:
    """Where this result goes: the experiment's name when nothing is there, or when what is
    there was run under the same conditions (`provenance.conditions`). Otherwise, with
    `beside` (a token of this run), `<experiment id>.<beside>.json` and `.parquet`; without
    it, ResultNotReplaced, unless `force` (which never lets a stand-in replace a result
    that may be a real model's)."""
    result, records = result_paths(out, spec.experiment_id)
    exists, old = existing_provenance(out, spec)
    if not exists:
        return Placement(result, records)
    standin_over_real = is_real(old) and not is_real(provenance)
    differ = differences(old, provenance)
    if not differ and not standin_over_real:
        return Placement(result, records)
    if standin_over_real:
        why = f"{result} holds a result that may be a real model's; a stand-in result never replaces it"
    else:
        more = f", and {len(differ) - 1} more" if len(differ) > 1 else ""
        why = f"{result} holds a result of other provenance ({differ[0]}{more})"
    if beside is not None:
        name = f"{spec.experiment_id}.{_file_token(beside)}"
        placed, placed_records = result_paths(out, name)
        return Placement(placed, placed_records, f"{why}: written beside it as {placed.name}")
    if force and not standin_over_real:
        return Placement(result, records, f"{why}: replaced (--force)")
    fix = "write it elsewhere with --out" if standin_over_real else "--force replaces it, --out writes elsewhere"
    raise ResultNotReplaced(f"{why}; not replaced: {fix}")


def _file_token(token: str) -> str:
    """`token` as part of one file name: kept when it is plain, else a digest of it."""
    if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", token):
        return token
    return hashlib.blake2b(token.encode(), digest_size=6).hexdigest()


def beside_token(job_id: str, experiment_id: str) -> str:
    """The part of a job id that names its files beside the experiment's: the submission
    token after the experiment id (`...s-0.20261129210739-df06` -> `20261129210739-df06`)."""
    return job_id.removeprefix(experiment_id + ".") if job_id.startswith(experiment_id + ".") else job_id


def write_result_files(
    out: Path,
    spec: ExperimentSpec,
    running: Aggregate,
    setup_seconds: float,
    records: Sequence[ResultRecord],
    provenance: dict[str, Any] | None = None,
    *,
    force: bool = False,
) -> tuple[Path, Path]:
    """Write `<experiment id>.json` and `<experiment id>.parquet` into `out`; return both
    paths. With provenance, ResultNotReplaced where `place_result` refuses (nothing written)."""
    kind = type(records[0]) if records else None
    parquet = RecordsFile(out, spec, kind, provenance)
    try:
        for first in range(0, len(records), BATCH):
            parquet.write(records[first : first + BATCH])
        with PLACING:
            placement = (
                Placement(*result_paths(out, spec.experiment_id))
                if provenance is None
                else place_result(out, spec, provenance, force=force)
            )
            # The JSON first: if it cannot be written nothing has changed, and once it is,
            # a retry finds its own provenance there and goes to the same place.
            result_path = write_result_json(out, spec, running, setup_seconds, provenance, path=placement.result)
            records_path = parquet.finish(placement.records)
    except BaseException:
        parquet.abandon()
        raise
    return result_path, records_path


def write_result_json(
    out: Path,
    spec: ExperimentSpec,
    running: Aggregate,
    setup_seconds: float,
    provenance: dict[str, Any] | None = None,
    *,
    path: Path | None = None,
) -> Path:
    """`<experiment id>.json` (or `path`), written beside its final name and renamed: a
    reader never sees half a file, and a failed write (a full disk) leaves nothing behind.
    The paper's keys stay as they are; `provenance`, when given, is one more."""
    out.mkdir(parents=True, exist_ok=True)
    result_path = path or out / f"{spec.experiment_id}.json"
    content = result_json(spec, running, setup_seconds)
    if provenance is not None:
        content[PROVENANCE_KEY] = provenance
    partial = _partial(result_path)
    try:
        partial.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
        partial.replace(result_path)
    finally:
        partial.unlink(missing_ok=True)
    return result_path


class RecordsFile:
    """`<experiment id>.parquet`, written batch by batch under a partial name of its own and
    renamed into place by `finish` (or removed by `abandon`)."""

    def __init__(
        self,
        out: Path,
        spec: ExperimentSpec,
        kind: type[ResultRecord] | None,
        provenance: dict[str, Any] | None = None,
    ) -> None:
        import pyarrow.parquet as pq  # here, not at the top: only the process that writes the files needs it

        out.mkdir(parents=True, exist_ok=True)
        self.path = out / f"{spec.experiment_id}.parquet"
        self.partial = _partial(self.path)
        # Schema metadata is fixed when the writer opens (the footer's copy of the Arrow
        # schema is taken then): the provenance is known by then, its end time included.
        schema = _schema(kind)
        self.schema = schema if provenance is None else schema.with_metadata({PROVENANCE_KEY: json.dumps(provenance)})
        self.writer = pq.ParquetWriter(self.partial, self.schema)

    def write(self, records: Iterable[ResultRecord]) -> None:
        import pyarrow as pa

        rows = [record_to_dict(record) for record in records]
        if rows:
            self.writer.write_table(pa.Table.from_pylist(rows, schema=self.schema))

    def finish(self, path: Path | None = None) -> Path:
        """Close the file and rename it into place: the experiment's name, or `path`."""
        self.writer.close()
        self.path = path or self.path
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
