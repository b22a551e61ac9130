"""The files an experiment ends in: the paper's result JSON and every record as Parquet."""

from __future__ import annotations

import json
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
    partial = result_path.with_suffix(".json.partial")
    partial.write_text(json.dumps(result_json(spec, running, setup_seconds), indent=2) + "\n", encoding="utf-8")
    partial.replace(result_path)
    import pandas as pd  # here, not at the top: only the process that writes the files needs it

    partial = records_path.with_suffix(".parquet.partial")
    pd.DataFrame([record_to_dict(r) for r in records]).to_parquet(partial, index=False)
    partial.replace(records_path)
    return result_path, records_path
