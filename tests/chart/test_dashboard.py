"""The Grafana dashboard: every PromQL expression parses, and names only metrics (and labels)
that an Introspect service or TGI exports."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import promql_parser
import pytest

import services.aggregator.metrics
import services.gateway.metrics
import services.producer.metrics
import services.runtime.health
import services.runtime.metrics
import services.scorer.metrics
from tests.support.chart import CHART

pytestmark = pytest.mark.chart

SERVICE_METRICS = (
    services.runtime.metrics,
    services.runtime.health,  # introspect_problem{stage, problem}
    services.producer.metrics,
    services.scorer.metrics,
    services.gateway.metrics,
    services.aggregator.metrics,
)
DASHBOARD = json.loads((CHART / "files" / "introspect-dashboard.json").read_text(encoding="utf-8"))

# TGI's own metrics, as its documentation lists them (reference/metrics): name -> type.
TGI_METRICS = {
    "tgi_batch_current_max_tokens": "gauge",
    "tgi_batch_current_size": "gauge",
    "tgi_batch_inference_count": "counter",
    "tgi_batch_inference_duration": "histogram",
    "tgi_batch_next_size": "histogram",
    "tgi_queue_size": "gauge",
    "tgi_request_count": "counter",
    "tgi_request_duration": "histogram",
    "tgi_request_failure": "counter",
    "tgi_request_generated_tokens": "histogram",
    "tgi_request_input_length": "histogram",
    "tgi_request_mean_time_per_token_duration": "histogram",
    "tgi_request_queue_duration": "histogram",
    "tgi_request_success": "counter",
}
# Labels Prometheus adds to every series it scrapes (target labels of Kubernetes discovery).
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "container", "endpoint"}
# Grafana's variables, replaced by what Grafana would put there before the query runs.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$job_id": ".*", "$namespace": ".*"}


def _sample_names(name: str, kind: str) -> set[str]:
    """The series names a metric family of this type exposes."""
    match kind:
        case "counter":
            return {f"{name}_total"}
        case "histogram":
            return {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        case _:
            return {name}


def exported() -> dict[str, set[str]]:
    """Series name -> label names, for every metric the services and TGI export."""
    series: dict[str, set[str]] = {}
    for module in SERVICE_METRICS:
        for metric in vars(module).values():
            # prometheus-client keeps a metric's label names only in `_labelnames`.
            if hasattr(metric, "_labelnames") and hasattr(metric, "describe"):
                for family in metric.describe():
                    labels = set(metric._labelnames) | ({"le"} if family.type == "histogram" else set())
                    for name in _sample_names(family.name, family.type):
                        series[name] = labels
    for name, kind in TGI_METRICS.items():
        for sample in _sample_names(name, kind):
            series[sample] = {"le"} if kind == "histogram" else set()
    return series


def expressions() -> Iterator[tuple[str, str]]:
    for panel in DASHBOARD["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def substituted(expr: str) -> str:
    """`expr` as Grafana sends it to Prometheus: its variables replaced by their values."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"an unknown Grafana variable in {expr}"
    return expr


def _parse(expr: str) -> Any:
    return promql_parser.parse(substituted(expr))


def _selectors(ast: Any) -> list[Any]:
    found: list[Any] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(ast, visit)
    return found


def test_the_dashboard_has_the_panels_researchers_watch() -> None:
    titles = {panel["title"] for panel in DASHBOARD["panels"]}
    assert {
        "Observations completed / s",
        "Generations / s",
        "Tokens / s",
        "Backend latency",
        "Queue depth per stage",
        "Cache hit ratio",
        "Backend errors and retries",
        "Dead letters (last hour)",
        "Progress per job",
        "Live correctness and faithfulness per job",
        "Backend utilisation",
        "TGI queue size",
        "TGI batch size",
        "TGI request duration",
    } <= titles
    assert DASHBOARD["uid"] == "introspect"
    datasources = {json.dumps(t["datasource"]) for p in DASHBOARD["panels"] for t in p.get("targets", [])}
    assert datasources == {json.dumps({"type": "prometheus", "uid": "${datasource}"})}  # any Prometheus


def problems(expr: str) -> list[str]:
    """What is wrong with a dashboard expression: metrics nobody exports, labels they lack."""
    series = exported()
    ast = _parse(expr)
    selectors = _selectors(ast)
    found = [] if selectors else ["reads no metric"]
    for selector in selectors:
        if selector.name not in series:
            found.append(f"{selector.name} is exported by no service and not by TGI")
            continue
        labels = series[selector.name] | TARGET_LABELS
        found += [f"{selector.name} has no label {m.name}" for m in selector.matchers.matchers if m.name not in labels]

    def check_grouping(node: Any) -> None:
        if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            inner = set().union(*(series.get(s.name, set()) for s in _selectors(node.expr))) | TARGET_LABELS
            found.extend(
                f"grouping by {label}, a label it does not have" for label in node.modifier.labels if label not in inner
            )

    promql_parser.walk(ast, check_grouping)
    return found


@pytest.mark.parametrize(("title", "expr"), list(expressions()))
def test_every_expression_parses_and_names_exported_metrics_and_labels(title: str, expr: str) -> None:
    assert problems(expr) == [], title


def test_a_wrong_metric_or_label_would_be_caught() -> None:
    """The check above is not vacuous: a typo in a name or a label fails it."""
    assert problems("sum(rate(introspect_generation_total[$__rate_interval]))") == [
        "introspect_generation_total is exported by no service and not by TGI"
    ]
    assert problems('sum by (stage) (introspect_consumer_pending{kind="job"})') == [
        "introspect_consumer_pending has no label kind"
    ]
    assert problems("sum by (model) (tgi_queue_size)") == ["grouping by model, a label it does not have"]
    with pytest.raises(ValueError):
        _parse("sum by (stage (introspect_consumer_pending)")
    assert problems("vector(1)") == ["reads no metric"]


def test_the_job_variable_lists_the_jobs_the_aggregator_reports() -> None:
    (variable,) = [v for v in DASHBOARD["templating"]["list"] if v["name"] == "job_id"]
    assert variable["definition"] == 'label_values(introspect_job_observations{namespace=~"$namespace"}, job_id)'
    assert "job_id" in exported()["introspect_job_observations"]


def test_every_series_is_filtered_by_the_namespace_variable() -> None:
    """Two releases, or other TGI servers in the cluster, never mix into one panel."""
    for title, expr in expressions():
        for selector in _selectors(_parse(expr)):
            names = {(m.name, m.value) for m in selector.matchers.matchers}
            assert ("namespace", ".*") in names, f"{title}: {selector.name} is not filtered by namespace"
