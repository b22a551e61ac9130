"""Driving a `LocalPipeline` from tests: submit, wait, read results, compare with the in-process runner."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

from proto import Job
from services.backends.tgi import TGIBackend
from services.client import submit
from services.core.tasks import kind_spec
from services.generation import ChatModel
from services.jobs import prepare_job
from services.local import LocalPipeline, free_port, wait_for_port
from services.result_files import RecordsFile
from services.runner import evaluate
from services.runtime.settings import Settings


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def get_bytes(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def submit_jobs(pipeline: LocalPipeline, jobs: list[Job]) -> list[Job]:
    return [job for job, _ in asyncio.run(submit(Settings(nats_url=pipeline.nats_url), jobs))]


def wait_complete(pipeline: LocalPipeline, job_ids: list[str], timeout: float = 300.0) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = {job["job_id"]: job for job in get_json(f"{pipeline.aggregator_url}/jobs")}
        if all(status.get(job_id, {}).get("complete") for job_id in job_ids):
            return {job_id: status[job_id] for job_id in job_ids}
        for name, process in pipeline.processes.items():
            assert process.poll() is None, f"{name} died; see {pipeline.log_path(name)}"
        time.sleep(0.25)
    waiting = {j: f"{status[j]['received']}/{status[j]['expected']}" if j in status else "unknown" for j in job_ids}
    raise AssertionError(f"jobs not complete after {timeout} s: {waiting}; logs in {pipeline.data_dir / 'logs'}")


def records_frame(pipeline: LocalPipeline, job_id: str) -> pd.DataFrame:
    raw = get_bytes(f"{pipeline.aggregator_url}/jobs/{job_id}/records.parquet")
    return pd.read_parquet(io.BytesIO(raw)).sort_values("idx").reset_index(drop=True)


def result_json(pipeline: LocalPipeline, job_id: str) -> dict[str, Any]:
    return json.loads(get_bytes(f"{pipeline.aggregator_url}/jobs/{job_id}/result.json"))


def in_process(job: Job, standin_url: str, tmp: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The same job through the core's in-process runner, against the same stand-in server."""
    prepared = prepare_job(job)
    observations = prepared.load_observations()

    async def go() -> Any:
        async with aiohttp.ClientSession() as session:
            backend = TGIBackend(standin_url, session)
            model = ChatModel(prepared.model.chat_format, prepared.system, prepared.parameters, backend.complete)
            return await evaluate(prepared.task, observations, model.generate, concurrency=32)

    records, running = asyncio.run(go())
    # Through the same Parquet writer as the pipeline's records, so both have the same column types.
    parquet = RecordsFile(tmp / f"{job.job_id}-in-process", prepared.experiment, kind_spec(prepared.task.kind).record)
    parquet.write(records)
    frame = pd.read_parquet(parquet.finish()).sort_values("idx").reset_index(drop=True)
    return frame, running.results()


def scrape(url: str) -> dict[str, float]:
    """A /metrics page as {'name{label="value",...}': value}, counters' samples included."""
    samples = {}
    for family in text_string_to_metric_families(get_bytes(url).decode()):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def metric_total(pipeline: LocalPipeline, prefix: str, name: str) -> float:
    """The sum of metric `name` (all label sets) over every service process named `prefix*`."""
    total = 0.0
    for service in pipeline.service_names():
        if service.startswith(prefix):
            for key, value in scrape(f"http://127.0.0.1:{pipeline.ports[service]}/metrics").items():
                if key == name or key.startswith(name + "{"):
                    total += value
    return total


def standin_stats(pipeline: LocalPipeline) -> dict[str, int]:
    return get_json(f"{pipeline.standin_url}/stand-in/stats")


@contextlib.contextmanager
def standin_process(*args: str) -> Iterator[str]:
    """A stand-in server process of its own (its URL), started with `args` (`--latency 5`,
    say): a reference for the in-process run where the pipeline's stand-in is set to
    misbehave (the same deterministic answers and durations), or a slow server to signal a
    run against."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "services.cli", "standin", "--port", str(port), *args],
                              stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for_port(port, "the stand-in", server, timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait()
