"""The files an experiment ends in: the paper's result JSON and every record as Parquet."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

from .core.records import ResultRecord, record_to_dict
from .core.results import Aggregate, ExperimentSpec, result_json


def write_result_files(
    out: Path, spec: ExperimentSpec, running: Aggregate, setup_seconds: float, records: Sequence[ResultRecord]
) -> tuple[Path, Path]:
    """Write `<experiment id>.json` and `<experiment id>.parquet` into `out`; return both paths.

    Each file is written beside its final name and renamed, so a reader never sees half a file.
    """
    out.mkdir(parents=True, exist_ok=True)
    result_path = out / f"{spec.experiment_id}.json"
    records_path = out / f"{spec.experiment_id}.parquet"
    partial = _partial(result_path)
    try:
        partial.write_text(json.dumps(result_json(spec, running, setup_seconds), indent=2) + "\n", encoding="utf-8")
        partial.replace(result_path)
    finally:
        partial.unlink(missing_ok=True)  # a failed write (a full disk) leaves nothing behind
    import pandas as pd  # here, not at the top: only the process that writes the files needs it

    partial = _partial(records_path)
    try:
        pd.DataFrame([record_to_dict(r) for r in records]).to_parquet(partial, index=False)
        partial.replace(records_path)
    finally:
        partial.unlink(missing_ok=True)
    return result_path, records_path


def _partial(final: Path) -> Path:
    """A name of its own beside `final`: two writers of one experiment (two jobs, or a retry
    beside a slow first try) never write into each other's half-written file."""
    return final.with_name(f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.partial")
