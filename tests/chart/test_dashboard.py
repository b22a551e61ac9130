"""The Grafana dashboard: every PromQL expression parses, and names only metrics (and labels)
that an Introspect service, a model server (TGI, vLLM, SGLang) or NATS's exporter exports."""

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
from proto import subjects as sub
from tests.support.chart import CHART

pytestmark = pytest.mark.chart

SERVICE_METRICS = (
    services.runtime.metrics,
    services.runtime.health,  # introspect_problem{stage, problem}
    services.producer.metrics,
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
# vLLM's and SGLang's own metrics on /metrics (SGLang with --enable-metrics, which the chart
# sets): name -> (type, label names). As their sources define them: vLLM's
# vllm/v1/metrics/loggers.py (PrometheusStatLogger: every metric labelled model_name and
# engine; prometheus-client exposes a counter with `_total`), docs.vllm.ai "Production
# Metrics"; SGLang's python/sglang/srt/metrics/collector.py (the scheduler's gauges and the
# tokenizer's counters and histograms, labelled model_name and more), docs.sglang.io
# "Production Metrics", where the counters are named with their `_total` already.
_VLLM = {"model_name", "engine"}
_SGLANG = {"model_name", "engine_type", "tp_rank", "pp_rank"}
ENGINE_METRICS = {
    "vllm:num_requests_running": ("gauge", _VLLM),
    "vllm:num_requests_waiting": ("gauge", _VLLM),
    "vllm:kv_cache_usage_perc": ("gauge", _VLLM),
    "vllm:e2e_request_latency_seconds": ("histogram", _VLLM),
    "vllm:prompt_tokens": ("counter", _VLLM),
    "vllm:generation_tokens": ("counter", _VLLM),
    "sglang:num_running_reqs": ("gauge", _SGLANG),
    "sglang:num_queue_reqs": ("gauge", _SGLANG),
    "sglang:token_usage": ("gauge", _SGLANG),
    "sglang:e2e_request_latency_seconds": ("histogram", {"model_name"}),
    # prometheus-client takes a counter's name without `_total` and adds it back.
    "sglang:prompt_tokens": ("counter", {"model_name"}),
    "sglang:generation_tokens": ("counter", {"model_name"}),
}
# NATS's JetStream metrics, as the official prometheus-nats-exporter (0.20.1, the chart's
# nats.exporter) serves them with -jsz=all: nats-io/prometheus-nats-exporter,
# collector/jsz.go (newJszCollector: prefix "jetstream", every one a gauge; the labels of
# each level add to those of the one above). name -> label names.
_JSZ_SERVER = {"server_id", "server_name", "cluster", "domain", "meta_leader", "is_meta_leader"}
_JSZ_ACCOUNT = _JSZ_SERVER | {"account", "account_name", "account_id"}
_JSZ_STREAM = _JSZ_ACCOUNT | {"stream_name", "stream_leader", "is_stream_leader", "stream_raft_group"}
_JSZ_CONSUMER = _JSZ_STREAM | {"consumer_name", "consumer_leader", "is_consumer_leader", "consumer_desc"}
_JSZ_METRICS = (
    (_JSZ_SERVER, "jetstream_server_", ("jetstream_disabled", "total_streams", "total_consumers", "total_messages",
                                        "total_message_bytes", "max_memory", "max_storage")),
    (_JSZ_ACCOUNT, "jetstream_account_", ("max_memory", "max_storage", "storage_used", "memory_used")),
    (_JSZ_STREAM, "jetstream_stream_", ("total_messages", "total_bytes", "first_seq", "last_seq", "consumer_count",
                                        "subject_count", "limit_bytes", "limit_messages")),
    (_JSZ_CONSUMER, "jetstream_consumer_", ("delivered_consumer_seq", "delivered_stream_seq", "last_delivery_seconds",
                                            "last_ack_seconds", "num_ack_pending", "num_redelivered", "num_waiting",
                                            "num_pending", "ack_floor_stream_seq", "ack_floor_consumer_seq")),
)  # fmt: skip
NATS_EXPORTER_METRICS = {prefix + name: labels for labels, prefix, names in _JSZ_METRICS for name in names}
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
    """Series name -> label names, for every metric the services, the model servers and NATS's exporter export."""
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
    for name, (kind, labels) in ENGINE_METRICS.items():
        for sample in _sample_names(name, kind):
            series[sample] = labels | ({"le"} if kind == "histogram" else set())
    for name, labels in NATS_EXPORTER_METRICS.items():
        series[name] = labels
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
        "vLLM requests running and waiting",
        "vLLM KV cache usage",
        "vLLM request duration",
        "vLLM tokens / s",
        "SGLang requests running and queued",
        "SGLang token usage",
        "SGLang request duration",
        "SGLang tokens / s",
        "NATS JetStream: jobs",
        "NATS JetStream: score",
        "NATS JetStream: generate",
        "NATS JetStream: results",
        "NATS JetStream: dead letters",
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
            found.append(f"{selector.name} is exported by no service, no model server nor NATS's exporter")
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
        "introspect_generation_total is exported by no service, no model server nor NATS's exporter"
    ]
    assert problems('jetstream_consumer_num_pending{stream="INTROSPECT_SCORE"}') == [
        "jetstream_consumer_num_pending has no label stream"  # it is stream_name
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


def test_the_jetstream_panels_show_each_stage_s_work_from_its_leader() -> None:
    """One panel per stage (jobs, score, generate, results, dead letters), on the streams of
    proto/subjects.py: messages waiting, in hand and redelivered for each consumer, each
    counted once (by its leader, where 3 NATS servers each report the copy they keep)."""
    panels = {p["title"]: p for p in DASHBOARD["panels"] if p["title"].startswith("NATS JetStream: ")}
    streams = {spec.name for spec in sub.STREAMS}
    for stage, service in (("jobs", "producer"), ("score", "scorer"), ("generate", "gateway"),
                           ("results", "aggregator")):  # fmt: skip
        read: dict[str, str] = {}
        for target in panels[f"NATS JetStream: {stage}"]["targets"]:
            (selector,) = _selectors(_parse(target["expr"]))
            matchers = {m.name: m.value for m in selector.matchers.matchers}
            assert matchers["is_consumer_leader"] == "true", target["expr"]
            read[selector.name] = matchers["stream_name"]
        wanted = ("num_pending", "num_ack_pending", "num_redelivered")  # waiting, in hand, redelivered
        assert read == {f"jetstream_consumer_{name}": sub.STREAM_OF[service] for name in wanted}
    dead = [_selectors(_parse(t["expr"])) for t in panels["NATS JetStream: dead letters"]["targets"]]
    for (selector,) in dead:
        matchers = {m.name: m.value for m in selector.matchers.matchers}
        assert matchers["stream_name"] == "INTROSPECT_DEAD" and matchers["is_stream_leader"] == "true"
    for panel in panels.values():
        for target in panel.get("targets", []):  # the row has none
            for selector in _selectors(_parse(target["expr"])):
                named_streams = {m.value for m in selector.matchers.matchers if m.name == "stream_name"}
                assert named_streams <= streams, named_streams


def test_each_engine_s_panels_read_the_metrics_operators_watch_it_by() -> None:
    """vLLM's and SGLang's own panels: its running and waiting requests, KV cache, request
    latency and tokens, by the names (and `_total` of the counters) each engine exports."""
    read = {selector.name for _, expr in expressions() for selector in _selectors(_parse(expr))}
    assert {
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:e2e_request_latency_seconds_bucket",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "sglang:num_running_reqs",
        "sglang:num_queue_reqs",
        "sglang:token_usage",
        "sglang:e2e_request_latency_seconds_bucket",
    } <= read
    assert problems("sum(rate(vllm:prompt_tokens[$__rate_interval]))") == [  # a counter's series ends in _total
        "vllm:prompt_tokens is exported by no service, no model server nor NATS's exporter"
    ]
    assert problems("sum by (tp_rank) (vllm:num_requests_running)") == ["grouping by tp_rank, a label it does not have"]
