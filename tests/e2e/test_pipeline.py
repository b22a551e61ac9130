"""End to end: a real nats-server, the four services as processes, the stand-in over HTTP.

Every one of the 15 task variants (5 task kinds x 3 dataset categories) runs on 200
observations through producer, scorer, gateway and aggregator; each record and each
aggregate must equal what the core's in-process runner makes of the same data with the
same stand-in. Then the same jobs again: all from the cache, no backend call at all.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from proto import Job, replace
from services.core.tasks import TASK_KINDS
from services.local import BACKGROUND_NICENESS, LocalPipeline
from tests.support.pipeline import (
    in_process,
    metric_total,
    records_frame,
    result_json,
    standin_stats,
    submit_jobs,
    wait_complete,
)
from tests.support.synthetic import write_synthetic

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

ROWS = 200
# Some prompts are longer than this: the stand-in rejects them with 422, like TGI's
# validation error, so error records travel the pipeline too.
MAX_INPUT_CHARS = 390


def _jobs(files: dict[str, Path]) -> list[Job]:
    return [
        Job(job_id="", model="llama2-7b", dataset=str(path), category=category, task=task)
        for category, path in files.items()
        for task in TASK_KINDS
    ]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("pipeline")
    files = write_synthetic(tmp / "data", rows=ROWS)
    pipeline = LocalPipeline(
        tmp / "run", partitions=2, scorers=2, standin_args=("--max-input-chars", str(MAX_INPUT_CHARS))
    )
    with pipeline:
        jobs = submit_jobs(pipeline, _jobs(files))
        status = wait_complete(pipeline, [job.job_id for job in jobs])
        yield pipeline, jobs, status, tmp


def test_every_task_variant_equals_the_in_process_runner(first_run) -> None:
    pipeline, jobs, status, tmp = first_run
    assert len(jobs) == 15
    errors = 0
    for job in jobs:
        expected_records, expected_results = in_process(
            replace(job, job_id=job.job_id + "-local"), pipeline.standin_url, tmp
        )
        records = records_frame(pipeline, job.job_id)
        assert len(records) == ROWS == status[job.job_id]["received"]
        pd.testing.assert_frame_equal(records, expected_records, obj=job.job_id)
        paper = result_json(pipeline, job.job_id)
        assert paper["results"] == expected_results == status[job.job_id]["results"], job.job_id
        assert paper["args"]["dataset"] == Path(job.dataset).stem
        errors += paper["results"]["error"]
        # Non-trivial results: the stand-in drives the extractors both ways.
        assert 0 < paper["results"]["correct"] < ROWS, (job.task, job.category, paper["results"]["error"])
    assert errors > 0  # rejected prompts became error records, as in process


def test_on_one_machine_every_service_but_the_gateways_yields_the_cpu(first_run) -> None:
    pipeline = first_run[0]
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    for name in pipeline.service_names():
        niceness = os.getpriority(os.PRIO_PROCESS, pipeline.processes[name].pid)
        expected = ours if name.startswith("gateway") else min(19, ours + BACKGROUND_NICENESS)
        assert niceness == expected, name


def test_a_resubmitted_job_is_answered_from_the_cache_alone(first_run) -> None:
    pipeline, jobs, first_status, _ = first_run
    before = standin_stats(pipeline)
    hits_before = metric_total(pipeline, "gateway", "introspect_cache_hits_total")
    misses_before = metric_total(pipeline, "gateway", "introspect_cache_misses_total")

    again = submit_jobs(pipeline, [replace(job, job_id="") for job in jobs])
    status = wait_complete(pipeline, [job.job_id for job in again])

    assert standin_stats(pipeline)["requests"] == before["requests"]  # not one backend call
    assert metric_total(pipeline, "gateway", "introspect_cache_misses_total") == misses_before
    # questions of both runs: each observation's first (the scorer's), and the later ones (the gateways')
    questions = sum(metric_total(pipeline, service, "introspect_questions_total") for service in ("scorer", "gateway"))
    hits = metric_total(pipeline, "gateway", "introspect_cache_hits_total") - hits_before
    assert hits == questions / 2 > 0  # every question of the second run was a hit
    for old, new in zip(jobs, again, strict=True):
        assert status[new.job_id]["results"] == first_status[old.job_id]["results"]
        pd.testing.assert_frame_equal(records_frame(pipeline, new.job_id), records_frame(pipeline, old.job_id))
