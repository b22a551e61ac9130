"""Every service's /metrics counts the work that was done: no more, no less."""

from __future__ import annotations

import urllib.request

import pytest

from proto import Job, replace
from services.local import LocalPipeline
from tests.conftest import DATASET_MIRROR
from tests.support.pipeline import scrape, standin_stats, submit_jobs, wait_complete

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def _metrics(pipeline: LocalPipeline, service: str) -> dict[str, float]:
    return scrape(f"http://127.0.0.1:{pipeline.ports[service]}/metrics")


def test_counters_equal_the_work_done_and_a_rerun_is_all_cache_hits(tmp_path, pipeline: LocalPipeline) -> None:
    job = Job(job_id="", model="llama2-7b", dataset="RTE", task="counterfactual", mirror=str(DATASET_MIRROR))
    for service in pipeline.service_names():
        url = f"http://127.0.0.1:{pipeline.ports[service]}/healthz"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200

    (first,) = submit_jobs(pipeline, [job])
    status = wait_complete(pipeline, [first.job_id])[first.job_id]
    calls = standin_stats(pipeline)["requests"]

    producer = _metrics(pipeline, "producer")
    assert producer["introspect_observations_published_total"] == 12
    assert producer['introspect_jobs_total{outcome="accepted"}'] == 1
    assert producer['introspect_messages_consumed_total{kind="job",stage="producer"}'] == 1

    # The scorer takes each observation's first step (a question); the gateway every later one.
    scorer, gateway = _metrics(pipeline, "scorer-0"), _metrics(pipeline, "gateway-0")
    task = 'task="counterfactual"'
    assert scorer[f"introspect_questions_total{{{task}}}"] == 12
    assert scorer.get(f"introspect_observations_scored_total{{{task}}}", 0) == 0
    assert scorer['introspect_messages_consumed_total{kind="observation",stage="scorer"}'] == 12
    assert scorer['introspect_messages_published_total{kind="generation-request",stage="scorer"}'] == 12
    assert gateway[f"introspect_observations_scored_total{{{task}}}"] == 12
    assert gateway['introspect_messages_published_total{kind="scored-result",stage="gateway"}'] == 12
    questions = 12 + gateway[f"introspect_questions_total{{{task}}}"]
    asked_again = gateway['introspect_messages_published_total{kind="generation-request",stage="gateway"}']
    assert gateway['introspect_messages_consumed_total{kind="generation-request",stage="gateway"}'] == 12 + asked_again
    # Every question is answered once: from a request taken from the stream (a hit or a
    # miss), or, for a later step whose answer this partition held, from its cache (a hit).
    hits, misses = gateway["introspect_cache_hits_total"], gateway["introspect_cache_misses_total"]
    assert hits + misses == questions
    backend = f'backend="{pipeline.standin_url}"'
    assert gateway[f'introspect_generations_total{{{backend},outcome="ok"}}'] == calls <= misses
    assert gateway[f"introspect_backend_seconds_count{{{backend}}}"] == calls
    assert gateway[f"introspect_backend_in_flight{{{backend}}}"] == 0
    stats = standin_stats(pipeline)
    assert gateway[f"introspect_prompt_tokens_total{{{backend}}}"] == stats["prompt_tokens"] > 0
    assert gateway[f"introspect_generated_tokens_total{{{backend}}}"] == stats["generated_tokens"] > 0

    aggregator = _metrics(pipeline, "aggregator")
    assert aggregator['introspect_observations_completed_total{task="counterfactual"}'] == 12
    assert aggregator["introspect_jobs_completed_total"] == 1
    job_label = f'job_id="{first.job_id}"'
    assert aggregator[f'introspect_job_observations{{{job_label},state="received"}}'] == 12
    assert aggregator[f"introspect_job_correct{{{job_label}}}"] == status["results"]["correct"]
    faithful = status["results"]["faithful_and_correct"]
    assert aggregator[f"introspect_job_faithful_and_correct{{{job_label}}}"] == faithful

    (second,) = submit_jobs(pipeline, [replace(job, job_id="")])
    wait_complete(pipeline, [second.job_id])
    assert standin_stats(pipeline)["requests"] == calls  # no backend call at all
    gateway = _metrics(pipeline, "gateway-0")
    assert gateway["introspect_cache_hits_total"] == hits + questions
    assert gateway["introspect_cache_misses_total"] == misses
    # One request per observation (the scorer's): every later step was taken from the cache.
    assert gateway['introspect_messages_published_total{kind="generation-request",stage="gateway"}'] == asked_again
    assert gateway['introspect_messages_consumed_total{kind="generation-request",stage="gateway"}'] == 24 + asked_again
    assert gateway[f"introspect_prompt_tokens_total{{{backend}}}"] == stats["prompt_tokens"]  # hits cost none
    assert _metrics(pipeline, "aggregator")["introspect_jobs_completed_total"] == 2
