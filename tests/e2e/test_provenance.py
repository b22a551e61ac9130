"""Provenance and durations through a real pipeline (nats-server, the four services as
processes, the stand-in over HTTP reporting 10 ms of inference per generation).

A cold job's `durations.eval` is the stand-in's 10 ms times the generations it computed; the
same job again, answered from the gateway's cache, costs 0 s. `introspect evaluate` against
the same stand-in, with a cache of its own, writes the same records, the same total and
the same conditions in its provenance as the pipeline.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from proto import Job, replace
from services.cli.commands import main
from services.local import LocalPipeline
from services.provenance import conditions
from tests.conftest import DATASET_MIRROR
from tests.support.pipeline import records_frame, result_json, standin_stats, submit_jobs, wait_complete

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

LATENCY = 0.01  # seconds the stand-in takes, and reports (x-inference-time, in whole ms), per generation
JOB = Job(job_id="", model="llama2-7b", dataset="IMDB", task="counterfactual", mirror=str(DATASET_MIRROR), limit=12)


def test_durations_count_only_computed_generations_and_evaluate_agrees(tmp_path: Path) -> None:
    with LocalPipeline(tmp_path / "run", standin_args=("--latency", str(LATENCY))) as pipeline:
        (cold,) = submit_jobs(pipeline, [JOB])
        cold_status = wait_complete(pipeline, [cold.job_id])[cold.job_id]
        cold_result, cold_records = result_json(pipeline, cold.job_id), records_frame(pipeline, cold.job_id)
        computed = standin_stats(pipeline)["generated"]

        (warm,) = submit_jobs(pipeline, [replace(JOB, job_id="")])
        warm_status = wait_complete(pipeline, [warm.job_id])[warm.job_id]
        warm_result, warm_records = result_json(pipeline, warm.job_id), records_frame(pipeline, warm.job_id)
        assert standin_stats(pipeline)["generated"] == computed  # the second job asked the server nothing

        out = tmp_path / "evaluated"
        argv = ["evaluate", "--dataset", "IMDB", "--task", "counterfactual", "--mirror", str(DATASET_MIRROR),
                "--limit", "12", "--endpoint", pipeline.standin_url, "--data-dir", str(tmp_path / "own-cache"),
                "--out", str(out)]  # fmt: skip
        assert main(argv) == 0

    # Cold: every generation computed once, 10 ms each; warm: nothing computed, 0 s.
    assert computed > 0
    assert cold_result["durations"]["eval"] == pytest.approx(computed * LATENCY)
    assert cold_records["duration"].sum() == pytest.approx(computed * LATENCY)
    assert warm_result["durations"]["eval"] == 0 and (warm_records["duration"] == 0).all()
    assert warm_result["results"] == cold_result["results"]

    # Provenance: the gateway's part (the stand-in over HTTP, its host:port, its model id)
    # and the job's part, in the JSON and in the Parquet file's metadata.
    provenance = cold_result["provenance"]
    port = pipeline.standin_url.rsplit(":", 1)[1]
    assert provenance["answers_from"] == [
        {"backend": "stand-in", "endpoint": f"127.0.0.1:{port}", "model_id": "introspect-stand-in"}
    ]
    assert provenance["stand_in"] is True and provenance["written_by"] == "introspect aggregator"
    assert provenance["selection"] == {"limit": 12, "start": 0, "stop": None}
    assert provenance["chat_template"] == {"name": "Llama2"} and provenance["sampling"]["seed"] == 0
    assert provenance["started_at"] <= provenance["finished_at"]
    on_disk = Path(warm_status["result_file"])
    # The same experiment under the same conditions: the warm job's result took the name.
    assert on_disk.name == f"{cold_status['experiment_id']}.json"
    assert warm_status["result_note"] is None and warm_status["result_file"] == cold_status["result_file"]
    in_parquet = json.loads(pq.read_schema(warm_status["records_file"]).metadata[b"provenance"])
    assert in_parquet == warm_result["provenance"]

    # `introspect evaluate` with a cold cache of its own: the same records, the same total
    # inference time, the same conditions.
    evaluated = json.loads((out / f"{cold_status['experiment_id']}.json").read_text())
    assert evaluated["results"] == cold_result["results"]
    assert evaluated["durations"]["eval"] == pytest.approx(cold_result["durations"]["eval"])
    assert conditions(evaluated["provenance"]) == conditions(provenance)
    frame = pd.read_parquet(out / f"{cold_status['experiment_id']}.parquet").sort_values("idx").reset_index(drop=True)
    # Which of two observations asking one question pays for it depends on who asks first:
    # records are compared without their seconds, the total above with them.
    pd.testing.assert_frame_equal(frame.drop(columns="duration"), cold_records.drop(columns="duration"))
