"""The Grafana dashboard against a real Prometheus (Debian's `prometheus`) scraping a real
local run: every query the dashboard sends (its Grafana variables substituted as Grafana
would) returns data, but those of panels only a cluster can feed, which are named below
with the reason."""

from __future__ import annotations

import asyncio
import json
import math
import time
import urllib.request
from pathlib import Path
from typing import Any

import nats
import pytest

from proto import Job, encode, replace
from proto import subjects as sub
from services.local import LocalPipeline
from tests.chart.test_dashboard import DASHBOARD, _parse, _selectors, substituted
from tests.conftest import DATASET_MIRROR
from tests.support.pipeline import get_json, metric_total, submit_jobs, wait_complete
from tests.support.prometheus import Prometheus

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

# Metrics that only a cluster can feed, by name prefix, and why this test cannot. A query
# that reads one is fed by a cluster only; a panel whose queries all do is listed as such.
# Every other query must return data here.
CLUSTER_ONLY = {
    "tgi_": "TGI's own metrics: TGI serves a model on a GPU; the stand-in speaks its API but not its /metrics",
    "vllm:": "vLLM's own metrics: vLLM serves a model on a GPU",
    "sglang:": "SGLang's own metrics: SGLang serves a model on a GPU",
    "kube_": "kube-state-metrics: a Kubernetes API server",
    "container_": "cAdvisor's, through the kubelet of a Kubernetes node",
    # No package registry here ships the prometheus-nats-exporter (not Debian, not PyPI):
    # the chart runs it beside NATS (nats.exporter), and there alone it serves these.
    "jetstream_": "the prometheus-nats-exporter's (JetStream), which no package registry here ships",
    "gnatsd_": "the prometheus-nats-exporter's (NATS server), which no package registry here ships",
}


def cluster_only(expr: str) -> str | None:
    """Why a query is fed by a cluster only, or None if this test's run must feed it."""
    for selector in _selectors(_parse(expr)):
        for prefix, reason in CLUSTER_ONLY.items():
            if selector.name.startswith(prefix):
                return reason
    return None


def panels() -> dict[str, list[str]]:
    """Panel title -> its queries, as the dashboard has them (rows, which only group panels, left out)."""
    return {
        panel["title"]: [t["expr"] for t in panel.get("targets", [])]
        for panel in DASHBOARD["panels"]
        if panel.get("type") != "row"
    }


def cluster_only_panels() -> dict[str, str]:
    """The panels a cluster alone feeds (every query of theirs reads its metrics), with why."""
    listed = {}
    for title, queries in panels().items():
        reasons = [cluster_only(expr) for expr in queries]
        if queries and all(reasons):
            listed[title] = "; ".join(sorted({reason for reason in reasons if reason}))
    return listed


def _has_a_number(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(sample["value"][1])) for sample in result)


def _post(url: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


async def _publish(url: str, subject: str, payload: bytes) -> None:
    client = await nats.connect(url)
    await client.jetstream().publish(subject, payload)
    await client.close()


def test_the_cluster_only_list_is_by_metric_and_every_panel_is_fed_here_or_on_it() -> None:
    """Each panel either has a query this test's run feeds, or is on the list with its
    reason; a panel without queries would be neither."""
    listed = cluster_only_panels()
    assert set(listed) <= set(panels())
    assert {"TGI queue size", "TGI batch size", "TGI request duration"} <= set(listed)
    for title, queries in panels().items():
        assert queries, f"{title}: no query"
        assert title in listed or any(cluster_only(expr) is None for expr in queries), title
    assert cluster_only('sum(rate(vllm:prompt_tokens_total{namespace=~"$namespace"}[5m]))') is not None
    assert cluster_only('sum(introspect_consumer_pending{namespace=~"$namespace"})') is None


def test_every_dashboard_query_returns_data_from_a_real_prometheus_scraping_a_local_run(tmp_path: Path) -> None:
    """One run that exercises every panel fed here: a job answered by the stand-in, which
    first answers every call 429 for 8 s (retries, calls that fail after the gateway's 6.35 s
    of retries, messages handed back and redelivered); the same job again (all from the
    cache); and a job for an unknown dataset (a dead letter). Prometheus scrapes every
    service every second from before the first job, so that every rate has something to
    measure."""
    pipeline = LocalPipeline(tmp_path / "run")
    with pipeline:
        targets = [f"127.0.0.1:{pipeline.ports[name]}" for name in pipeline.service_names()]
        with Prometheus(tmp_path / "prometheus", targets) as prometheus:
            up = prometheus.wait_until(f"count(up == 1) == {len(targets)}")
            assert float(up[0]["value"][1]) == len(targets)

            job = Job(job_id="", model="llama2-7b", dataset="RTE", task="counterfactual", mirror=str(DATASET_MIRROR))
            _post(f"{pipeline.standin_url}/stand-in/faults/overload", {"seconds": 8.0})
            (first,) = submit_jobs(pipeline, [job])
            wait_complete(pipeline, [first.job_id], timeout=300)
            (again,) = submit_jobs(pipeline, [replace(job, job_id="")])
            unknown = Job(job_id="unknown-dataset", model="llama2-7b", dataset="NO-SUCH-DATASET", task="classify")
            asyncio.run(_publish(pipeline.nats_url, sub.JOBS, encode(unknown)))
            wait_complete(pipeline, [again.job_id], timeout=300)
            assert get_json(f"{pipeline.standin_url}/stand-in/stats")["overloaded"] > 0
            assert metric_total(pipeline, "gateway", "introspect_messages_released_total") > 0
            assert metric_total(pipeline, "producer", "introspect_dead_letters_total") == 1

            fed = {(title, expr) for title, queries in panels().items() for expr in queries if not cluster_only(expr)}
            # Until every query has data (scrapes come each second), with a generous deadline.
            answers: dict[tuple[str, str], list[dict[str, Any]]] = {}
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                answers = {query: prometheus.query(substituted(query[1])) for query in sorted(fed)}
                if all(_has_a_number(result) for result in answers.values()):
                    break
                time.sleep(1)
            without = [f"{title}: {expr} -> {answers[title, expr]}" for title, expr in sorted(fed)
                       if not _has_a_number(answers[title, expr])]  # fmt: skip
            assert without == [], "queries without data (or only NaN):\n" + "\n".join(without)
            # A cluster's queries are real PromQL that Prometheus takes, and find nothing here.
            for title, queries in panels().items():
                for expr in queries:
                    if cluster_only(expr):
                        assert prometheus.query(substituted(expr)) == [], f"{title}: {expr}"
