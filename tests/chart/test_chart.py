"""The Helm chart, checked offline: lint, render, validate against Kubernetes 1.33, and what
the rendered objects must say (GPUs, volumes, secrets, non-root containers, wiring)."""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import kubernetes_validate
import nats.errors
import pytest

from proto import subjects as sub
from services.errors import NatsRefused
from services.runtime.bus import Bus
from services.runtime.settings import ENV_PREFIX, Settings
from tests.support.chart import (
    CHART,
    ENGINES,
    KEDA,
    TWO_MODELS,
    Endpoint,
    env_of,
    helm,
    named,
    network_allows,
    of_kind,
    pod_endpoint,
    pod_specs,
    render,
    run_chart_nats,
    secret_data,
)
from tests.support.pipeline import get_bytes

pytestmark = pytest.mark.chart

KUBERNETES = "1.33.0"
# Custom resources of the Prometheus Operator and KEDA: no schema ships with Kubernetes.
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("keda.sh/v1alpha1", "ScaledObject"),
}
VALUES = {"default": (), "two-models": ("-f", str(TWO_MODELS)), "engines": ("-f", str(ENGINES))}


@pytest.fixture(scope="module", params=list(VALUES))
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(*VALUES[request.param])


@pytest.mark.parametrize("values", list(VALUES))
def test_helm_lint_strict_is_clean(values: str) -> None:
    result = helm("lint", "--strict", str(CHART), *VALUES[values])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout and "[WARNING]" not in result.stdout


def test_every_object_validates_strictly_against_kubernetes_1_33(rendered) -> None:
    name, objects = rendered
    assert len(objects) >= 20
    for o in objects:
        if (o["apiVersion"], o["kind"]) in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(o, KUBERNETES, strict=True)
        except kubernetes_validate.ValidationError as error:
            raise AssertionError(f"{name}: {o['kind']}/{o['metadata']['name']}: {error.message}") from None
    kinds = {o["kind"] for o in objects}
    assert {"StatefulSet", "Deployment", "Service", "ConfigMap", "NetworkPolicy", "Role", "RoleBinding"} <= kinds


def test_each_model_gets_tgi_with_its_gpus_shards_probes_and_shared_memory() -> None:
    objects = render("-f", str(TWO_MODELS))
    big = named(objects, "Deployment", "introspect-tgi-llama2-70b")
    assert big["spec"]["replicas"] == 2
    pod = big["spec"]["template"]["spec"]
    (tgi,) = pod["containers"]
    assert tgi["resources"]["limits"]["nvidia.com/gpu"] == tgi["resources"]["requests"]["nvidia.com/gpu"] == 4
    assert tgi["resources"]["limits"]["memory"] == "128Gi"  # the model's own resources are kept
    assert "--model-id=meta-llama/Llama-2-70b-chat-hf" in tgi["args"] and "--num-shard=4" in tgi["args"]
    assert "--max-concurrent-requests=256" in tgi["args"] and "--max-input-tokens" in tgi["args"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    startup = tgi["startupProbe"]
    assert startup["httpGet"]["path"] == "/health" and tgi["readinessProbe"]["httpGet"]["path"] == "/health"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 5400  # patient enough for a 70B load
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["shm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "4Gi"}
    assert volumes["model-cache"]["persistentVolumeClaim"]["claimName"] == "hf-model-cache"
    assert env_of(tgi)["HF_TOKEN"] == {"secretKeyRef": {"name": "hf-token", "key": "token"}}

    small = named(objects, "Deployment", "introspect-tgi-mistral-v2-7b")
    (tgi,) = small["spec"]["template"]["spec"]["containers"]
    assert tgi["resources"]["limits"] == {"nvidia.com/gpu": 1} and "--quantize=awq" in tgi["args"]
    assert not any(arg.startswith("--num-shard") for arg in tgi["args"])


def test_gateways_per_model_own_a_volume_per_partition_and_find_their_model_s_pods() -> None:
    objects = render("-f", str(TWO_MODELS), namespace="lab")
    services = {s["metadata"]["name"]: s for s in of_kind(objects, "Service")}
    for model in ("llama2-70b", "mistral-v2-7b"):
        gateway = named(objects, "StatefulSet", f"introspect-gateway-{model}")
        assert gateway["spec"]["replicas"] == 3
        (claim,) = gateway["spec"]["volumeClaimTemplates"]
        assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
        assert claim["spec"]["storageClassName"] == "fast-ssd"
        (container,) = gateway["spec"]["template"]["spec"]["containers"]
        assert {"name": claim["metadata"]["name"], "mountPath": "/data"} in container["volumeMounts"]
        env = env_of(container)
        assert env["INTROSPECT_DATA_DIR"] == "/data" and env["INTROSPECT_PARTITIONS"] == "3"
        assert env["INTROSPECT_PARTITION"] == {
            "fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}
        }
        assert env["INTROSPECT_MODEL"] == model
        # Discovery names a Service that exists, in the release's namespace, with that port.
        namespace, name_port = env["INTROSPECT_MODEL_SERVICE"].split("/")
        name, port = name_port.split(":")
        assert namespace == "lab" and port in {p["name"] for p in services[name]["spec"]["ports"]}
        assert gateway["spec"]["template"]["spec"]["serviceAccountName"] == "introspect-gateway"
    (role,) = of_kind(objects, "Role")
    assert role["rules"] == [
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}
    ]


def test_the_scorer_producer_and_aggregator_agree_with_the_gateways() -> None:
    objects = render("-f", str(TWO_MODELS))
    scorer = named(objects, "Deployment", "introspect-scorer")
    assert env_of(scorer["spec"]["template"]["spec"]["containers"][0])["INTROSPECT_PARTITIONS"] == "3"
    assert "replicas" not in scorer["spec"]  # the autoscaler owns it
    (hpa,) = of_kind(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "introspect-scorer" and hpa["spec"]["maxReplicas"] == 12
    producer = named(objects, "Deployment", "introspect-producer")
    assert env_of(producer["spec"]["template"]["spec"]["containers"][0])["INTROSPECT_SERVED_MODELS"] == (
        "llama2-70b,mistral-v2-7b"
    )
    aggregator = named(objects, "StatefulSet", "introspect-aggregator")
    assert aggregator["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "10Gi"
    (container,) = aggregator["spec"]["template"]["spec"]["containers"]
    assert env_of(container)["INTROSPECT_RESULTS_DIR"] == "/data/results"
    assert named(objects, "Service", "introspect-aggregator")["spec"]["ports"][0]["port"] == 9090
    for _, pod in pod_specs([o for o in objects if o["kind"] != "Pod"]):  # the services, not `helm test`
        for c in pod["containers"]:
            if c["image"].startswith("registry.example.org/research/introspect"):
                assert c["image"] == "registry.example.org/research/introspect:0.1.0"
                assert c["args"][0] == "serve" and c["readinessProbe"]["httpGet"]["path"] == "/healthz"
                # A service listens on loopback unless told otherwise; in a pod, the probes,
                # Prometheus and the API's clients come from outside it.
                assert env_of(c)["INTROSPECT_METRICS_HOST"] == "0.0.0.0"


def test_nats_keeps_its_streams_on_a_persistent_volume() -> None:
    objects = render()
    nats = named(objects, "StatefulSet", "introspect-nats")
    (claim,) = nats["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    container, _exporter = nats["spec"]["template"]["spec"]["containers"]
    assert {"name": claim["metadata"]["name"], "mountPath": "/data"} in container["volumeMounts"]
    assert "store_dir: /data" in named(objects, "ConfigMap", "introspect-nats-config")["data"]["nats.conf"]
    assert container["command"] == ["nats-server", "--config", "/etc/nats/nats.conf"]
    assert {"name": "config", "mountPath": "/etc/nats", "readOnly": True} in container["volumeMounts"]


@pytest.mark.parametrize("values", list(VALUES))
def test_every_container_is_non_root_with_a_read_only_root_filesystem(values: str) -> None:
    for workload, pod in pod_specs(render(*VALUES[values])):
        pod_context = pod.get("securityContext", {})
        for container in pod["containers"] + pod.get("initContainers", []):
            context = {**pod_context, **container.get("securityContext", {})}
            where = f"{workload}/{container['name']}"
            assert context.get("runAsNonRoot") is True, where
            assert context.get("runAsUser", 1) != 0, where
            assert context.get("readOnlyRootFilesystem") is True, where
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("capabilities", {}).get("drop") == ["ALL"], where


def test_no_secret_value_is_in_any_configmap_and_every_secret_reference_resolves() -> None:
    token = "hf_not_a_real_token_1234"
    objects = render("--set", f"hfToken.value={token}")
    secrets = {s["metadata"]["name"]: s for s in of_kind(objects, "Secret")}
    passwords = set(secret_data(objects, "introspect-nats-auth").values())
    assert token in {base64.b64decode(v).decode() for s in secrets.values() for v in s["data"].values()}
    for configmap in of_kind(objects, "ConfigMap"):
        text = "\n".join(configmap["data"].values())
        assert token not in text and not any(p in text for p in passwords), configmap["metadata"]["name"]
    for workload, pod in pod_specs(objects):
        for container in pod["containers"]:
            for value in env_of(container).values():
                if isinstance(value, dict) and "secretKeyRef" in value:
                    ref = value["secretKeyRef"]
                    assert ref["key"] in secrets[ref["name"]]["data"], f"{workload}: {ref}"


ROLES = ("producer", "scorer", "gateway", "aggregator", "submitter", "operator")
SECRET_KEYS = {f"{role}-password" for role in ROLES} | {"cluster-password"}  # as values.yaml documents them


def test_generated_nats_passwords_are_strong_and_one_per_role() -> None:
    passwords = secret_data(render(), "introspect-nats-auth")
    assert set(passwords) == SECRET_KEYS
    assert all(len(p) == 32 and p.isalnum() for p in passwords.values())  # alphanumeric: fit for a route URL
    assert len(set(passwords.values())) == len(passwords)


def _nats_secret_references(objects: list[dict[str, Any]]) -> dict[str, list[dict[str, str]]]:
    """workload/container -> the secretKeyRefs of its NATS passwords."""
    references: dict[str, list[dict[str, str]]] = {}
    for workload, pod in pod_specs(objects):
        for container in pod["containers"]:
            for name, value in env_of(container).items():
                if name.endswith("_PASSWORD") and isinstance(value, dict):
                    references.setdefault(f"{workload}/{container['name']}", []).append(value["secretKeyRef"])
    return references


@pytest.mark.parametrize("values", list(VALUES))
def test_each_pod_gets_only_its_own_role_s_nats_password(values: str) -> None:
    objects = render(*VALUES[values])
    references = _nats_secret_references(objects)
    services = {"producer": "producer", "scorer": "scorer", "aggregator": "aggregator"}
    for workload, refs in references.items():
        keys = [ref["key"] for ref in refs]
        if workload.startswith("introspect-gateway-"):
            assert keys == ["gateway-password"], workload
        elif workload == "introspect-test-connection/nats":
            assert keys == ["submitter-password"], workload
        elif workload == "introspect-nats/nats":  # the server checks every role's password
            wanted = {f"{role}-password" for role in ROLES}
            assert set(keys) == (SECRET_KEYS if values == "two-models" else wanted), keys  # 3 replicas: routes too
        else:
            role = services[workload.removeprefix("introspect-").split("/")[0]]
            assert keys == [f"{role}-password"], workload
    for _, pod in pod_specs(objects):
        for container in pod["containers"]:
            env = env_of(container)
            if container.get("args", [None])[0] == "serve":
                assert env["INTROSPECT_NATS_USER"] == container["args"][1]  # its role's NATS user
                assert env["INTROSPECT_NATS_INBOX_PREFIX"] == f"_INBOX_{container['args'][1]}"  # and replies
                assert env["INTROSPECT_STREAM_REPLICAS"] == ("3" if values == "two-models" else "1")  # = NATS's
    models = {"default": 1, "two-models": 2, "engines": 3}[values]
    assert len(references) == 3 + models + 2  # 3 services and a gateway per model, helm test, NATS


def test_an_existing_secret_replaces_the_generated_one_everywhere() -> None:
    """GitOps renders (`helm template`, where `lookup` finds nothing) would make new passwords
    each time: with nats.auth.existingSecret the chart makes no Secret, and every reference
    names the user's, with the keys values.yaml documents."""
    objects = render("--set", "nats.auth.existingSecret=introspect-nats")
    assert [s["metadata"]["name"] for s in of_kind(objects, "Secret")] == ["introspect-api-token"]  # NATS's alone
    references = [ref for refs in _nats_secret_references(objects).values() for ref in refs]
    assert references and all(ref["name"] == "introspect-nats" for ref in references)
    assert {ref["key"] for ref in references} <= SECRET_KEYS
    # The two-model values use one too, and the user's HF token and API token Secrets: the chart makes none.
    objects = render("-f", str(TWO_MODELS))
    assert of_kind(objects, "Secret") == []
    references = [ref for refs in _nats_secret_references(objects).values() for ref in refs]
    assert {ref["name"] for ref in references} == {"introspect-nats-credentials"}
    assert {ref["key"] for ref in references} == SECRET_KEYS
    # A NATS server of your own needs your Secret: the chart cannot know its passwords.
    result = helm(
        "template", "introspect", str(CHART), "--set", "nats.enabled=false", "--set", "nats.url=nats://x:4222"
    )
    assert result.returncode != 0 and "nats.auth.existingSecret" in result.stderr


def test_the_aggregator_api_asks_for_a_token_from_a_secret_kept_across_upgrades() -> None:
    objects = render()
    token = secret_data(objects, "introspect-api-token")["token"]
    assert len(token) == 40
    reference = {"secretKeyRef": {"name": "introspect-api-token", "key": "token"}}
    aggregator = [
        c for _, pod in pod_specs(objects) for c in pod["containers"] if c.get("args") == ["serve", "aggregator"]
    ]
    assert [env_of(c)["INTROSPECT_API_TOKEN"] for c in aggregator] == [reference]
    (pod,) = of_kind(objects, "Pod")  # `helm test` asks the API with it
    assert env_of(pod["spec"]["containers"][0])["INTROSPECT_API_TOKEN"] == reference
    for config in of_kind(objects, "ConfigMap"):  # never in clear
        assert token not in json.dumps(config)
    theirs = render("--set", "aggregator.apiToken.existingSecret=mine", "--set", "aggregator.apiToken.key=api")
    assert "introspect-api-token" not in {s["metadata"]["name"] for s in of_kind(theirs, "Secret")}
    (pod,) = of_kind(theirs, "Pod")
    assert env_of(pod["spec"]["containers"][0])["INTROSPECT_API_TOKEN"] == {
        "secretKeyRef": {"name": "mine", "key": "api"}
    }


def test_the_producer_reads_jobs_own_files_only_from_its_read_only_data_claim() -> None:
    def producer(objects: list[dict[str, Any]]) -> dict[str, Any]:
        (spec,) = [pod for name, pod in pod_specs(objects) if name == "introspect-producer"]
        return spec

    default = producer(render())
    assert "INTROSPECT_DATA_ROOTS" not in env_of(default["containers"][0])  # datasets by name only
    claimed = producer(render("--set", "producer.data.claimName=datasets", "--set", "producer.data.mountPath=/mirror"))
    (container,) = claimed["containers"]
    assert env_of(container)["INTROSPECT_DATA_ROOTS"] == "/mirror"
    assert {"name": "data", "mountPath": "/mirror", "readOnly": True} in container["volumeMounts"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "datasets", "readOnly": True}} in claimed["volumes"]


def test_monitoring_network_policy_and_dashboard_objects() -> None:
    objects = render("-f", str(TWO_MODELS))
    services = of_kind(objects, "Service")
    monitors = {m["metadata"]["name"]: m for m in of_kind(objects, "ServiceMonitor")}
    assert set(monitors) == {"introspect", "introspect-model-servers", "introspect-nats"}
    for monitor in monitors.values():
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        wanted = monitor["spec"]["selector"]["matchLabels"]
        (endpoint,) = monitor["spec"]["endpoints"]
        selected = [s for s in services if wanted.items() <= s["metadata"]["labels"].items()]
        assert selected and all(endpoint["port"] in {p["name"] for p in s["spec"]["ports"]} for s in selected)
    scraped = {s["metadata"]["name"] for s in services if s["metadata"]["labels"].get("introspect.dev/metrics")}
    assert scraped == {
        "introspect-producer",
        "introspect-scorer",
        "introspect-aggregator",
        "introspect-gateway-llama2-70b",
        "introspect-gateway-mistral-v2-7b",
    }

    (dashboard,) = [c for c in of_kind(objects, "ConfigMap") if c["metadata"]["name"] == "introspect-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "Introspect"}
    shipped = (CHART / "files" / "introspect-dashboard.json").read_text(encoding="utf-8")
    assert dashboard["data"]["introspect.json"] == shipped.rstrip("\n")


def test_the_alerting_rules_are_a_prometheus_rule_the_operator_picks_up_when_enabled() -> None:
    """Optional, as the ServiceMonitor: a PrometheusRule with the labels the Operator's
    ruleSelector matches; tests/chart/test_alerts.py runs the rules themselves in promtool."""
    assert of_kind(render(), "PrometheusRule") == []
    (rule,) = of_kind(render("-f", str(TWO_MODELS)), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["metadata"]["name"] == "introspect"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["metadata"]["labels"]["app.kubernetes.io/instance"] == "introspect"
    (group,) = rule["spec"]["groups"]
    assert group["name"] == "introspect" and len(group["rules"]) == 7
    for alert in group["rules"]:
        assert set(alert) <= {"alert", "expr", "for", "labels", "annotations"}, alert["alert"]
        assert alert["alert"].startswith("Introspect") and alert["expr"].strip()
        assert alert["labels"]["team"] == "ml-platform" and alert["labels"]["severity"] in {"critical", "warning"}


def _pods(objects: list[dict[str, Any]]) -> dict[str, Endpoint]:
    """Every workload's pod, as its template labels it, in the release's namespace."""
    pods = {}
    for o in objects:
        if o["kind"] in ("Deployment", "StatefulSet"):
            labels = o["spec"]["template"]["metadata"]["labels"]
            pods[o["metadata"]["name"].removeprefix("introspect-")] = pod_endpoint(labels)
        elif o["kind"] == "Pod":
            pods["helm-test"] = pod_endpoint(o["metadata"]["labels"])
    return pods


DNS = Endpoint({"k8s-app": "kube-dns"}, "kube-system", {"kubernetes.io/metadata.name": "kube-system"})
PROMETHEUS = pod_endpoint({"app.kubernetes.io/name": "prometheus"}, "monitoring")
KEDA_DEFAULT = pod_endpoint({"app": "keda-operator"}, "keda")
KEDA_TWO_MODELS = Endpoint({"app": "keda-operator"}, "autoscaling", {"kubernetes.io/metadata.name": "autoscaling"})
NOTEBOOK = pod_endpoint({"app": "research-notebook"})
STRANGER = pod_endpoint({"app": "something-else"})  # another pod in the release's namespace
HUB = Endpoint(ip="18.154.227.7")  # huggingface.co, outside the cluster
API_SERVER = Endpoint(ip="192.168.10.4")  # a control-plane node


def test_network_policies_admit_each_role_only_what_it_needs() -> None:
    """Who may open which connection, by the rendered policies evaluated as Kubernetes
    does (both the source's egress and the destination's ingress)."""
    objects = render("-f", str(TWO_MODELS))
    policies = of_kind(objects, "NetworkPolicy")
    pods = _pods(objects)
    nats, tgi, gateway = pods["nats"], pods["tgi-llama2-70b"], pods["gateway-llama2-70b"]
    aggregator, producer, scorer = pods["aggregator"], pods["producer"], pods["scorer"]
    services = [producer, scorer, aggregator, gateway, pods["gateway-mistral-v2-7b"]]

    def allows(source: Endpoint, destination: Endpoint, port: int, protocol: str = "TCP") -> bool:
        return network_allows(policies, source, destination, port, protocol)

    for client in [*services, pods["helm-test"], NOTEBOOK]:
        assert allows(client, nats, 4222)
    for other in (tgi, pods["tgi-mistral-v2-7b"], STRANGER, PROMETHEUS):
        assert not allows(other, nats, 4222)  # a model server reaches no NATS
    # NATS's monitoring port (JSON): KEDA only; its exporter's metrics: Prometheus only.
    assert allows(KEDA_TWO_MODELS, nats, 8222) and allows(PROMETHEUS, nats, 7777)
    for other in (*services, tgi, NOTEBOOK, STRANGER, KEDA_DEFAULT, PROMETHEUS):
        assert not allows(other, nats, 8222)
    for other in (*services, tgi, NOTEBOOK, STRANGER, KEDA_TWO_MODELS):
        assert not allows(other, nats, 7777)
    # The NATS cluster's routes: its servers only.
    assert allows(nats, nats, 6222) and not any(allows(s, nats, 6222) for s in services)
    # Generation: the gateways reach TGI, nothing else of the release does; Prometheus scrapes it.
    assert allows(gateway, tgi, 8080) and allows(PROMETHEUS, tgi, 8080)
    for other in (scorer, producer, aggregator, nats, NOTEBOOK, STRANGER):
        assert not allows(other, tgi, 8080)
    # The aggregator's API: `helm test`, submitters and Prometheus; not TGI, not the others.
    for client in (pods["helm-test"], NOTEBOOK, PROMETHEUS):
        assert allows(client, aggregator, 9090)
    for other in (tgi, STRANGER, scorer):
        assert not allows(other, aggregator, 9090)
    assert allows(PROMETHEUS, scorer, 9090) and not allows(NOTEBOOK, scorer, 9090)
    # Out of the release: DNS for every pod; the Hub for TGI and the producer only; the
    # API server for the gateways only (narrowed to its addresses in the two-model values).
    for source in (*pods.values(),):
        assert allows(source, DNS, 53, "UDP") and allows(source, DNS, 53, "TCP")
    assert allows(tgi, HUB, 443) and allows(producer, HUB, 443)
    for source in (scorer, aggregator, gateway, nats):
        assert not allows(source, HUB, 443)
    assert allows(gateway, API_SERVER, 6443) and not allows(gateway, Endpoint(ip="203.0.113.9"), 6443)
    for source in (tgi, scorer, producer, aggregator):
        assert not allows(source, API_SERVER, 6443)
    # TGI reaches nothing of the release, whatever the port.
    for destination, port in ((aggregator, 9090), (scorer, 9090), (nats, 8222), (gateway, 9090)):
        assert not allows(tgi, destination, port)


def test_with_a_nats_server_of_your_own_the_services_reach_it_by_the_egress_you_give() -> None:
    to_shared = [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "shared"}}}],
                  "ports": [{"port": 4222, "protocol": "TCP"}]}]  # fmt: skip
    objects = render("--set", "nats.enabled=false", "--set", "nats.url=nats://nats.shared:4222",
                     "--set", "nats.auth.existingSecret=nats-passwords",
                     "--set-json", f"networkPolicy.egress.nats={json.dumps(to_shared)}")  # fmt: skip
    for o in objects:
        kubernetes_validate.validate(o, KUBERNETES, strict=True)
    policies, pods = of_kind(objects, "NetworkPolicy"), _pods(objects)
    shared_nats = Endpoint({"app": "nats"}, "shared", {"kubernetes.io/metadata.name": "shared"})
    for name in ("producer", "scorer", "aggregator", "gateway-llama2-7b", "helm-test"):
        assert network_allows(policies, pods[name], shared_nats, 4222), name
    assert not network_allows(policies, pods["tgi-llama2-7b"], shared_nats, 4222)
    assert "nats" not in pods and not any(p["metadata"]["name"] == "introspect-nats" for p in policies)


def test_no_policy_rule_admits_everyone_by_an_empty_peer_list() -> None:
    """An ingress rule without `from` admits every source: with the optional peer lists
    empty, the chart leaves such rules out rather than open the port to all."""
    empty = ("--set", "networkPolicy.metricsFrom=null", "--set", "networkPolicy.kedaFrom=null")
    for values in ((), empty):
        for policy in of_kind(render(*values), "NetworkPolicy"):
            for rule in policy["spec"].get("ingress", []):
                assert rule.get("from"), policy["metadata"]["name"]
    policies = of_kind(render(*empty), "NetworkPolicy")
    pods = _pods(render(*empty))
    assert not network_allows(policies, PROMETHEUS, pods["nats"], 8222)
    assert not network_allows(policies, PROMETHEUS, pods["nats"], 7777)
    assert not network_allows(policies, PROMETHEUS, pods["scorer"], 9090)
    assert network_allows(policies, pods["scorer"], pods["nats"], 4222)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("models=null", "models"),
        ("models[0].gpus=0", "gpus"),
        ("gateway.partitions=0", "partitions"),
        ("modelServers.port=80", "port"),
        ("models[0].engine=ollama", "engine"),
        ("models[0].gpuMemoryShare=1.5", "gpuMemoryShare"),
        ("modelServers.modelCache.accessMode=ReadOnlyMany", "accessMode"),
        ("nats.jetstream.storage=lots", "storage"),
        ("scorer.unknownKey=1", "unknownKey"),
        ("nats.replicas=2", "replicas"),  # a JetStream cluster needs a majority: 3
        ("nats.jetstream.syncInterval=sometimes", "syncInterval"),
        ("image.digest=sha256:abc", "digest"),
        ("modelServers.vllm.image.digest=latest", "digest"),
        ("nats.auth.password=secret", "password"),  # one password for all is gone: a Secret's keys
        ("networkPolicy.natsClientsFrom=null", "natsClientsFrom"),  # now submittersFrom
    ],
)
def test_values_the_chart_cannot_use_are_refused_by_its_schema(setting: str, message: str) -> None:
    result = helm("template", "introspect", str(CHART), "--set", setting)
    assert result.returncode != 0 and "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr


def test_the_notes_say_how_to_submit_a_job_and_open_the_dashboard() -> None:
    result = helm("install", "introspect", str(CHART), "--dry-run=client", "--namespace", "research")
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "introspect submit --model llama2-7b" in notes
    assert "port-forward svc/introspect-nats 4222:4222" in notes
    assert "INTROSPECT_NATS_INBOX_PREFIX=_INBOX_submitter" in notes  # the submitter's own replies
    assert "get secret introspect-api-token -o jsonpath='{.data.token}'" in notes  # the API's token
    assert "dashboard" in notes and "grafana_dashboard=1" in notes


async def test_the_rendered_nats_config_runs_and_each_role_s_credentials_open_it(tmp_path: Path) -> None:
    """The chart's nats.conf, started by the real nats-server: JetStream on, each role's
    user and password from the rendered Secret accepted (and another role's refused),
    every stream of the pipeline declared within its limits."""
    objects = render()
    secret = secret_data(objects, "introspect-nats-auth")
    with run_chart_nats(objects, tmp_path, secret) as (nats,):
        for role in ROLES:
            settings = Settings(nats_url=nats.url, nats_user=role, nats_password=secret[f"{role}-password"],
                                nats_inbox_prefix=f"_INBOX_{role}")  # fmt: skip
            bus = await Bus.open(settings, "chart-test")  # declares every stream, as each role does
            await bus.close()
        monitor = json.loads(get_bytes(f"{nats.monitor_url}/jsz?streams=true"))
        names = {stream["name"] for account in monitor["account_details"] for stream in account["stream_detail"]}
        assert names == {spec.name for spec in sub.STREAMS}
        with pytest.raises(NatsRefused):  # a password opens its own role only
            wrong = Settings(nats_url=nats.url, nats_user="operator", nats_password=secret["scorer-password"])
            await Bus.open(wrong, "chart-test")
        jetstream = json.loads(get_bytes(f"{nats.monitor_url}/varz"))["jetstream"]["config"]
        assert jetstream["max_storage"] == 20 * 1024**3  # jetstream.storage: 20Gi
        assert jetstream["max_memory"] == 1024**3  # jetstream.maxMemory: 1Gi
        assert jetstream["sync_interval"] == 120 * 10**9 and not jetstream.get("sync_always")  # NATS's default


@pytest.mark.parametrize(("value", "interval", "always"), [("10s", 10 * 10**9, False), ("always", None, True)])
def test_jetstream_sync_interval_reaches_the_running_server(tmp_path: Path, value: str, interval: int | None,
                                                            always: bool) -> None:  # fmt: skip
    objects = render("--set", f"nats.jetstream.syncInterval={value}")
    config = named(objects, "ConfigMap", "introspect-nats-config")["data"]["nats.conf"]
    assert f'sync_interval: "{value}"' in config
    with run_chart_nats(objects, tmp_path, secret_data(objects, "introspect-nats-auth")) as (nats,):
        jetstream = json.loads(get_bytes(f"{nats.monitor_url}/varz"))["jetstream"]["config"]
        assert bool(jetstream.get("sync_always")) is always
        if interval is not None:
            assert jetstream["sync_interval"] == interval


def test_images_are_pinned_by_digest_where_one_is_given() -> None:
    digest = "sha256:" + "ab" * 32
    images = {c["image"] for _, pod in pod_specs(render()) for c in pod["containers"]}
    assert images == {
        "introspect:0.1.0",
        "ghcr.io/huggingface/text-generation-inference:3.3.5",
        "nats:2.15.1-alpine",
        "natsio/prometheus-nats-exporter:0.20.1",
    }
    pinned = ("image.digest", "modelServers.tgi.image.digest", "nats.image.digest", "nats.exporter.image.digest")
    objects = render(*(arg for key in pinned for arg in ("--set", f"{key}={digest}")))
    images = {c["image"] for _, pod in pod_specs(objects) for c in pod["containers"]}
    assert images == {
        f"introspect@{digest}",
        f"ghcr.io/huggingface/text-generation-inference@{digest}",
        f"nats@{digest}",
        f"natsio/prometheus-nats-exporter@{digest}",
    }
    images = {c["image"] for _, pod in pod_specs(render("-f", str(TWO_MODELS))) for c in pod["containers"]}
    assert "nats@sha256:" + "0123456789abcdef" * 4 in images  # the two-model values pin NATS alone
    assert "registry.example.org/research/introspect:0.1.0" in images


def test_three_nats_replicas_make_a_cluster_with_authenticated_routes() -> None:
    objects = render("-f", str(TWO_MODELS))
    nats = named(objects, "StatefulSet", "introspect-nats")
    assert nats["spec"]["replicas"] == 3 and nats["spec"]["podManagementPolicy"] == "Parallel"
    headless = named(objects, "Service", "introspect-nats-headless")
    assert nats["spec"]["serviceName"] == "introspect-nats-headless"
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    assert {p["port"] for p in headless["spec"]["ports"]} == {4222, 6222, 8222}
    container, _exporter = nats["spec"]["template"]["spec"]["containers"]
    env = env_of(container)
    secret = {"name": "introspect-nats-credentials", "key": "cluster-password"}
    assert env["CLUSTER_PASSWORD"] == {"secretKeyRef": secret}
    assert [env[f"ROUTE_{n}"] for n in range(3)] == [
        f"nats://route:$(CLUSTER_PASSWORD)@introspect-nats-{n}.introspect-nats-headless.research.svc:6222"
        for n in range(3)
    ]
    config = named(objects, "ConfigMap", "introspect-nats-config")["data"]["nats.conf"]
    assert "routes: [\n    $ROUTE_0\n    $ROUTE_1\n    $ROUTE_2\n  ]" in config
    assert "password: $CLUSTER_PASSWORD" in config
    (budget,) = of_kind(objects, "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= nats["spec"]["template"]["metadata"]["labels"].items()
    # One server: no cluster, no routes, no budget.
    single = render()
    assert named(single, "StatefulSet", "introspect-nats")["spec"]["replicas"] == 1
    assert "cluster {" not in named(single, "ConfigMap", "introspect-nats-config")["data"]["nats.conf"]
    assert of_kind(single, "PodDisruptionBudget") == []


async def test_three_rendered_nats_servers_form_a_jetstream_cluster(tmp_path: Path) -> None:
    """The 3-replica nats.conf and environment, run by three real nats-servers: the routes
    authenticate with the cluster password, JetStream elects a leader over all three,
    and a service declares its streams through any of them."""
    objects = render("-f", str(TWO_MODELS))
    secret = {key: f"{key.replace('-', '')}0123456789" for key in SECRET_KEYS}  # the user's Secret
    with run_chart_nats(objects, tmp_path, secret) as servers:
        assert len(servers) == 3
        meta: dict[str, Any] = {}
        for _ in range(300):
            routed = [json.loads(get_bytes(f"{s.monitor_url}/routez"))["routes"] for s in servers]
            meta = json.loads(get_bytes(f"{servers[0].monitor_url}/jsz")).get("meta_cluster", {})
            peers = [{route["remote_name"] for route in routes} for routes in routed]
            if meta.get("leader") and meta.get("cluster_size") == 3 and all(len(p) == 2 for p in peers):
                break
            await asyncio.sleep(0.1)
        assert [sorted(p) for p in peers] == [
            [f"introspect-nats-{m}" for m in range(3) if m != n] for n in range(3)
        ]  # every server routed to both others
        assert meta["cluster_size"] == 3 and meta["leader"].startswith("introspect-nats-")
        settings = Settings(nats_url=servers[2].url, nats_user="scorer", nats_password=secret["scorer-password"],
                            nats_inbox_prefix="_INBOX_scorer", stream_replicas=3)  # as the chart sets them  # fmt: skip
        for attempt in range(50):  # a new meta leader takes a moment to take requests
            try:
                bus = await Bus.open(settings, "chart-test")
                break
            except (TimeoutError, nats.errors.Error):  # no answer yet, or JetStream "unavailable"
                assert attempt < 49
                await asyncio.sleep(0.2)
        await bus.close()
        # A person's `introspect submit` does not know how many copies the cluster keeps: it
        # declares each stream as it is (it may not change one), and the copies stay three.
        submitter = Settings(nats_url=servers[0].url, nats_user="submitter", nats_password=secret["submitter-password"],
                             nats_inbox_prefix="_INBOX_submitter")  # fmt: skip
        await (await Bus.open(submitter, "submitter")).close()
        for server in servers:  # each server stores every stream: three copies of each
            monitor = json.loads(get_bytes(f"{server.monitor_url}/jsz?streams=true&config=true"))
            details = [s for account in monitor.get("account_details", []) for s in account["stream_detail"]]
            assert {s["name"] for s in details} == {spec.name for spec in sub.STREAMS}
            assert {s["config"]["num_replicas"] for s in details} == {3}


@pytest.mark.parametrize("values", list(VALUES))
def test_the_services_accept_the_settings_the_chart_gives_them(values: str) -> None:
    """Every INTROSPECT_* variable the chart sets is a setting the services know, and the
    settings loader takes the rendered values (a misspelt name would be silently ignored)."""
    known = {ENV_PREFIX + spec.name.upper() for spec in fields(Settings)}
    checked = 0
    for workload, pod in pod_specs(render(*VALUES[values])):
        for container in pod["containers"]:
            if container.get("args", [None])[0] != "serve":
                continue
            env = env_of(container)
            introspect = {name: value for name, value in env.items() if name.startswith(ENV_PREFIX)}
            assert set(introspect) <= known, f"{workload}: {set(introspect) - known}"
            # What Kubernetes puts there: a Secret's value; the pod index of the last gateway.
            last = str(int(introspect["INTROSPECT_PARTITIONS"]) - 1)
            resolved = {name: value if isinstance(value, str) else last if "fieldRef" in value else "from-a-secret"
                        for name, value in introspect.items()}  # fmt: skip
            settings = Settings.from_env(resolved)
            assert settings.nats_user == container["args"][1] and settings.nats_password == "from-a-secret"
            assert settings.metrics_port == 9090 and settings.partitions >= 1
            if container["args"][1] == "gateway":
                assert settings.partition == settings.partitions - 1 and settings.model and settings.model_service
            if container["args"][1] == "producer":
                assert settings.served_models
            checked += 1
    assert checked == 3 + {"default": 1, "two-models": 2, "engines": 3}[values]  # a gateway per model


def test_helm_test_checks_the_aggregator_api_and_nats_with_a_submitter_s_credentials() -> None:
    objects = render()
    (pod,) = of_kind(objects, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    api, nats = pod["spec"]["containers"]
    assert api["args"] == ["status", "--aggregator", "http://introspect-aggregator:9090"]
    assert nats["args"] == ["dead-letters", "list"]
    env = env_of(nats)
    assert env["INTROSPECT_NATS_URL"] == "nats://introspect-nats:4222"
    assert env["INTROSPECT_NATS_USER"] == "submitter"
    assert env["INTROSPECT_NATS_PASSWORD"] == {
        "secretKeyRef": {"name": "introspect-nats-auth", "key": "submitter-password"}
    }
    assert pod["spec"]["restartPolicy"] == "Never"
    # The release's NetworkPolicies admit it to NATS and the aggregator's API.
    policies, test_pod, pods = of_kind(objects, "NetworkPolicy"), _pods(objects)["helm-test"], _pods(objects)
    assert network_allows(policies, test_pod, pods["nats"], 4222)
    assert network_allows(policies, test_pod, pods["aggregator"], 9090)


def test_no_secret_is_in_any_process_argument_or_plain_value() -> None:
    """Secrets reach containers by secretKeyRef alone: never in an argument (which `ps` shows
    to everyone on the node), a plain environment value or a ConfigMap."""
    objects = render()
    secrets = [v for s in of_kind(objects, "Secret") for v in secret_data(objects, s["metadata"]["name"]).values()]
    assert secrets
    shown = json.dumps(
        [
            {"args": c.get("args"), "command": c.get("command"), "env": [e.get("value") for e in c.get("env", [])]}
            for _, pod in pod_specs(objects)
            for c in [*pod["containers"], *pod.get("initContainers", [])]
        ]
        + of_kind(objects, "ConfigMap")
    )
    assert not [secret for secret in secrets if secret in shown]


# -- NATS's metrics (its exporter) and scaling on the work waiting (KEDA) --

# KEDA's nats-jetstream trigger metadata, as its scaler reads it (kedacore/keda,
# pkg/scalers/nats_jetstream_scaler.go, natsJetStreamMetadata): the values are strings.
KEDA_TRIGGER_KEYS = {"natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold",
                     "activationLagThreshold"}  # fmt: skip


def test_nats_runs_the_prometheus_exporter_beside_it_with_jetstream_metrics() -> None:
    objects = render()
    nats = named(objects, "StatefulSet", "introspect-nats")
    server, exporter = nats["spec"]["template"]["spec"]["containers"]
    assert server["name"] == "nats" and exporter["name"] == "exporter"
    assert exporter["image"] == "natsio/prometheus-nats-exporter:0.20.1"
    # Its flags (main.go of nats-io/prometheus-nats-exporter): JetStream down to each
    # consumer, the server and its connection counts, never one series per connection; the
    # URL of the server's monitoring port over the pod's loopback comes last.
    assert exporter["args"][-1] == "http://localhost:8222"
    assert {"-jsz=all", "-varz", "-connz", "-port=7777", "-use_internal_server_name"} <= set(exporter["args"])
    assert not any(arg.startswith("-connz_detailed") for arg in exporter["args"])
    assert exporter["ports"] == [{"name": "metrics", "containerPort": 7777}]
    assert {"name": "monitor", "containerPort": 8222} in server["ports"]
    assert "readinessProbe" not in exporter  # NATS's readiness does not hang on its exporter
    assert exporter["resources"]["limits"]["memory"] == "128Mi"
    service = named(objects, "Service", "introspect-nats")
    assert {"name": "metrics", "port": 7777, "targetPort": "metrics"} in service["spec"]["ports"]
    assert service["metadata"]["labels"]["introspect.dev/nats-metrics"] == "true"

    # The ServiceMonitor scrapes the exporter (not the JSON port), on the Service whose pods are NATS's.
    objects = render("-f", str(TWO_MODELS))
    monitor = named(objects, "ServiceMonitor", "introspect-nats")
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]
    wanted = monitor["spec"]["selector"]["matchLabels"]
    (scraped,) = [s for s in of_kind(objects, "Service") if wanted.items() <= s["metadata"]["labels"].items()]
    assert scraped["metadata"]["name"] == "introspect-nats"
    pod_labels = named(objects, "StatefulSet", "introspect-nats")["spec"]["template"]["metadata"]["labels"]
    assert scraped["spec"]["selector"].items() <= pod_labels.items()

    # Without the exporter: no sidecar, no port, no ServiceMonitor for it, no rule for 7777.
    objects = render("--set", "nats.exporter.enabled=false", "--set", "metrics.serviceMonitor.enabled=true")
    (server,) = named(objects, "StatefulSet", "introspect-nats")["spec"]["template"]["spec"]["containers"]
    assert server["name"] == "nats"
    assert 7777 not in {p["port"] for p in named(objects, "Service", "introspect-nats")["spec"]["ports"]}
    assert {m["metadata"]["name"] for m in of_kind(objects, "ServiceMonitor")} == {
        "introspect",
        "introspect-model-servers",
    }
    policies, pods = of_kind(objects, "NetworkPolicy"), _pods(objects)
    assert not network_allows(policies, PROMETHEUS, pods["nats"], 7777)
    assert network_allows(policies, KEDA_DEFAULT, pods["nats"], 8222)


def test_keda_values_lint_and_render_strictly_valid_objects() -> None:
    result = helm("lint", "--strict", str(CHART), "-f", str(KEDA))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout and "[WARNING]" not in result.stdout
    objects = render("-f", str(KEDA))
    for o in objects:
        if (o["apiVersion"], o["kind"]) not in CUSTOM_KINDS:
            try:
                kubernetes_validate.validate(o, KUBERNETES, strict=True)
            except kubernetes_validate.ValidationError as error:
                raise AssertionError(f"keda: {o['kind']}/{o['metadata']['name']}: {error.message}") from None
    assert {o["metadata"]["name"] for o in of_kind(objects, "ScaledObject")} == {
        "introspect-scorer",
        "introspect-producer",
    }


def _trigger(scaled: dict[str, Any]) -> dict[str, str]:
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "nats-jetstream"
    metadata: dict[str, str] = trigger["metadata"]
    assert set(metadata) == KEDA_TRIGGER_KEYS and all(isinstance(v, str) for v in metadata.values())
    return metadata


def test_with_keda_the_scorer_and_producer_scale_on_their_consumer_s_lag_and_no_hpa() -> None:
    objects = render("-f", str(KEDA), namespace="lab")
    assert of_kind(objects, "HorizontalPodAutoscaler") == []  # KEDA makes its own: never two
    scaled = {o["metadata"]["name"]: o for o in of_kind(objects, "ScaledObject")}
    headless = named(objects, "Service", "introspect-nats-headless")
    for service, (minimum, maximum, lag, activation) in {"scorer": (0, 16, "500", "5"),
                                                         "producer": (1, 2, "1", "0")}.items():  # fmt: skip
        scaledobject = scaled[f"introspect-{service}"]
        assert scaledobject["apiVersion"] == "keda.sh/v1alpha1"
        spec = scaledobject["spec"]
        target = spec["scaleTargetRef"]
        assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
        deployment = named(objects, "Deployment", target["name"])
        assert "replicas" not in deployment["spec"]  # KEDA owns the count
        assert deployment["spec"]["template"]["spec"]["containers"][0]["args"] == ["serve", service]
        assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (minimum, maximum)
        assert (spec["pollingInterval"], spec["cooldownPeriod"]) == (10, 600)
        trigger = _trigger(scaledobject)
        # The service's own durable consumer, as proto/subjects.py names it.
        consumer = sub.consumer_for(service)
        assert (trigger["stream"], trigger["consumer"]) == (consumer.stream, consumer.durable)
        assert (trigger["lagThreshold"], trigger["activationLagThreshold"]) == (lag, activation)
        assert trigger["account"] == "$G"  # nats.conf defines no accounts: every user is in the global one
        # host:port, no scheme (KEDA adds it): the headless Service, whose per-pod names
        # let KEDA find the leader of a consumer among the 3 servers, on its monitoring port.
        host, port = trigger["natsServerMonitoringEndpoint"].split(":")
        assert host == "introspect-nats-headless.lab.svc" and "://" not in host
        assert int(port) in {p["port"] for p in headless["spec"]["ports"] if p["name"] == "monitor"}
    # The gateways (a cache partition each) and the aggregator (the one writer) keep their count.
    assert named(objects, "StatefulSet", "introspect-aggregator")["spec"]["replicas"] == 1
    assert named(objects, "StatefulSet", "introspect-gateway-llama2-7b")["spec"]["replicas"] == 2
    # KEDA's operator reaches NATS's monitoring port, on every server of the cluster.
    keda = Endpoint(KEDA_DEFAULT.labels, "keda", KEDA_DEFAULT.namespace_labels)
    assert network_allows(of_kind(objects, "NetworkPolicy"), keda, _pods(objects)["nats"], 8222, namespace="lab")


def test_without_keda_the_scorer_scales_on_cpu_when_autoscaling_is_enabled() -> None:
    objects = render("--set", "scorer.autoscaling.enabled=true")
    (hpa,) = of_kind(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "introspect-scorer"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 8)
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert of_kind(objects, "ScaledObject") == []
    assert "replicas" not in named(objects, "Deployment", "introspect-scorer")["spec"]
    # Neither without autoscaling; KEDA on alone scales nothing that is not asked to.
    for values in ((), ("--set", "keda.enabled=true")):
        objects = render(*values)
        assert of_kind(objects, "HorizontalPodAutoscaler") == [] and of_kind(objects, "ScaledObject") == []
        assert named(objects, "Deployment", "introspect-scorer")["spec"]["replicas"] == 2
        assert named(objects, "Deployment", "introspect-producer")["spec"]["replicas"] == 1
    # KEDA on for the scorer alone: its ScaledObject, with the defaults of values.yaml.
    objects = render("--set", "keda.enabled=true", "--set", "scorer.autoscaling.enabled=true")
    assert of_kind(objects, "HorizontalPodAutoscaler") == []
    (scaledobject,) = of_kind(objects, "ScaledObject")
    assert scaledobject["spec"]["scaleTargetRef"]["name"] == "introspect-scorer"
    assert (scaledobject["spec"]["minReplicaCount"], scaledobject["spec"]["maxReplicaCount"]) == (2, 8)
    assert (scaledobject["spec"]["pollingInterval"], scaledobject["spec"]["cooldownPeriod"]) == (15, 300)
    assert _trigger(scaledobject)["lagThreshold"] == "1000"
    assert named(objects, "Deployment", "introspect-producer")["spec"]["replicas"] == 1


def test_a_nats_server_of_your_own_is_scaled_on_from_the_endpoint_and_account_you_give() -> None:
    settings = ("--set", "nats.enabled=false", "--set", "nats.url=nats://nats.shared:4222",
                "--set", "nats.auth.existingSecret=nats-passwords", "--set", "keda.enabled=true",
                "--set", "scorer.autoscaling.enabled=true")  # fmt: skip
    result = helm("template", "introspect", str(CHART), *settings)
    assert result.returncode != 0 and "keda.natsMonitoringEndpoint" in result.stderr
    objects = render(*settings, "--set", "keda.natsMonitoringEndpoint=nats-0.nats.shared.svc:8222",
                     "--set", "keda.natsAccount=INTROSPECT")  # fmt: skip
    trigger = _trigger(named(objects, "ScaledObject", "introspect-scorer"))
    assert trigger["natsServerMonitoringEndpoint"] == "nats-0.nats.shared.svc:8222"
    assert trigger["account"] == "INTROSPECT"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (("producer.autoscaling.enabled=true",), "needs keda.enabled"),  # only KEDA sees jobs waiting
        (("scorer.autoscaling.enabled=true", "scorer.autoscaling.minReplicas=0"), "0 needs keda.enabled"),
        (("keda.enabled=true", "scorer.autoscaling.enabled=true", "scorer.autoscaling.minReplicas=9"), "above"),
        (("producer.autoscaling.maxReplicas=5",), "maxReplicas"),  # its consumer hands out 4 jobs at once
        (("keda.natsMonitoringEndpoint=http://nats:8222",), "natsMonitoringEndpoint"),  # host:port, no scheme
        (("keda.pollingInterval=0",), "pollingInterval"),
    ],
)
def test_autoscaling_values_the_chart_cannot_use_are_refused(settings: tuple[str, ...], message: str) -> None:
    result = helm("template", "introspect", str(CHART), *(arg for s in settings for arg in ("--set", s)))
    assert result.returncode != 0 and message in result.stderr, result.stderr


def _keda_lag(jsz: dict[str, Any], account: str, stream: str, consumer: str) -> int:
    """The lag KEDA's nats-jetstream scaler reads from /jsz (getMaxMsgLag, with IsAccount
    matching the account by name or id): the consumer's num_pending + num_ack_pending."""
    for details in jsz["account_details"]:
        if account in (details["name"], details["id"]):
            for found in details.get("stream_detail", []):
                if found["name"] == stream:
                    for info in found.get("consumer_detail", []):
                        if info["name"] == consumer:
                            return int(info["num_pending"]) + int(info["num_ack_pending"])
    raise AssertionError(f"no consumer {stream}/{consumer} in account {account}")


async def test_the_scaled_objects_name_an_account_stream_and_consumer_the_running_nats_reports(
    tmp_path: Path,
) -> None:
    """The chart's nats.conf run by the real nats-server, its consumers made by the services'
    own users: the URL KEDA's scaler asks (/jsz?acc=<account>&consumers=true&config=true)
    reports each ScaledObject's account, stream and consumer, with the work waiting and in
    hand as its lag."""
    objects = render("--set", "keda.enabled=true", "--set", "scorer.autoscaling.enabled=true",
                     "--set", "producer.autoscaling.enabled=true")  # fmt: skip
    secret = secret_data(objects, "introspect-nats-auth")

    def settings(role: str) -> Settings:
        return Settings(nats_url=nats.url, nats_user=role, nats_password=secret[f"{role}-password"],
                        nats_inbox_prefix=f"_INBOX_{role}")  # fmt: skip

    with run_chart_nats(objects, tmp_path, secret) as (nats,):
        for service in ("scorer", "producer"):
            bus = await Bus.open(settings(service), "chart-test")
            await bus.ensure_consumer(sub.consumer_for(service))
            await bus.close()
        # Work waiting: 3 observations for the scorer (one of them taken, not yet acknowledged),
        # 2 jobs for the producer.
        producer, submitter = await Bus.open(settings("producer"), "p"), await Bus.open(settings("submitter"), "s")
        for n in range(3):
            await producer.client.request(sub.OBSERVATIONS, b"observation %d" % n, timeout=5)
        for n in range(2):
            await submitter.client.request(sub.JOBS, b"job %d" % n, timeout=5)
        await producer.close()
        await submitter.close()
        scorer = await Bus.open(settings("scorer"), "chart-test")
        inbox = scorer.client.new_inbox()  # a pull request, as the scorer's worker sends them
        pulled = await scorer.client.subscribe(inbox)
        await scorer.client.publish(f"$JS.API.CONSUMER.MSG.NEXT.{sub.STREAM_OF['scorer']}.scorer", b'{"batch": 1}',
                                    reply=inbox)  # fmt: skip
        assert (await pulled.next_msg(timeout=5)).data == b"observation 0"
        for scaledobject in of_kind(objects, "ScaledObject"):
            trigger = _trigger(scaledobject)
            query = f"acc={trigger['account']}&consumers=true&config=true"
            jsz = json.loads(get_bytes(f"{nats.monitor_url}/jsz?{query}"))
            lag = _keda_lag(jsz, trigger["account"], trigger["stream"], trigger["consumer"])
            assert lag == {"introspect-scorer": 3, "introspect-producer": 2}[scaledobject["metadata"]["name"]]
        await scorer.close()


# -- model servers: TGI, vLLM, SGLang --


def _server(objects: list[dict[str, Any]], name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A model server Deployment's pod spec and its one container."""
    pod = named(objects, "Deployment", name)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


def test_each_engine_runs_with_its_image_arguments_shared_memory_token_and_probes() -> None:
    objects = render("-f", str(ENGINES))
    pod, tgi = _server(objects, "introspect-tgi-llama2-13b")
    assert tgi["image"] == "ghcr.io/huggingface/text-generation-inference:3.3.5" and "command" not in tgi
    assert tgi["args"] == ["--model-id=meta-llama/Llama-2-13b-chat-hf", "--hostname=0.0.0.0", "--port=8080",
                           "--max-concurrent-requests=96", "--num-shard=2", "--max-total-tokens=4096",
                           "--cuda-memory-fraction=0.95", "--quantize=eetq"]  # fmt: skip
    assert {v["name"]: v for v in pod["volumes"]}["shm"]["emptyDir"]["sizeLimit"] == "1Gi"  # TGI's default

    pod, vllm = _server(objects, "introspect-vllm-llama2-70b")
    assert vllm["image"].startswith("vllm/vllm-openai@sha256:fedcba98")  # the digest pins it
    assert vllm["command"] == ["vllm", "serve"]
    assert vllm["args"] == ["meta-llama/Llama-2-70b-chat-hf", "--host=0.0.0.0", "--port=8080",
                            "--tensor-parallel-size=4", "--max-num-seqs=256", "--max-model-len=4096",
                            "--gpu-memory-utilization=0.92", "--quantization=fp8",
                            "--enable-prefix-caching"]  # fmt: skip
    assert env_of(vllm)["VLLM_NO_USAGE_STATS"] == "1"
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == vllm["resources"]["requests"]["nvidia.com/gpu"] == 4
    assert {v["name"]: v for v in pod["volumes"]}["shm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "32Gi"}

    pod, sglang = _server(objects, "introspect-sglang-mistral-v2-7b")
    assert sglang["image"] == "lmsysorg/sglang:v0.5.20"
    assert sglang["command"] == ["python3", "-m", "sglang.launch_server"]
    assert sglang["args"] == ["--model-path=mistralai/Mistral-7B-Instruct-v0.2", "--host=0.0.0.0", "--port=8080",
                              "--tp-size=1", "--max-running-requests=64", "--enable-metrics",
                              "--context-length=8192", "--mem-fraction-static=0.85", "--quantization=awq"]  # fmt: skip
    assert {v["name"]: v for v in pod["volumes"]}["shm"]["emptyDir"]["sizeLimit"] == "16Gi"  # SGLang's default

    for name in ("introspect-tgi-llama2-13b", "introspect-vllm-llama2-70b", "introspect-sglang-mistral-v2-7b"):
        pod, server = _server(objects, name)
        env = env_of(server)
        assert env["HF_TOKEN"] == {"secretKeyRef": {"name": "introspect-hf-token", "key": "token"}}
        assert env["HF_HOME"] == "/data" and {"name": "model-cache", "mountPath": "/data"} in server["volumeMounts"]
        assert [p["containerPort"] for p in server["ports"]] == [8080]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert server[probe]["httpGet"] == {"path": "/health", "port": "http"}, (name, probe)
        startup = server["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 5400  # a 70B download and load
        assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_the_weights_stay_on_a_volume_of_the_model_across_restarts() -> None:
    objects = render("-f", str(ENGINES))
    claims = {c["metadata"]["name"]: c["spec"] for c in of_kind(objects, "PersistentVolumeClaim")}
    assert set(claims) == {f"introspect-weights-{m}" for m in ("llama2-13b", "llama2-70b", "mistral-v2-7b")}
    assert claims["introspect-weights-llama2-70b"] == {
        "accessModes": ["ReadWriteMany"],  # two vLLM replicas share it
        "storageClassName": "shared-nfs",
        "resources": {"requests": {"storage": "500Gi"}},
    }
    for model, engine in (("llama2-13b", "tgi"), ("llama2-70b", "vllm"), ("mistral-v2-7b", "sglang")):
        pod, _ = _server(objects, f"introspect-{engine}-{model}")
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["model-cache"]["persistentVolumeClaim"] == {"claimName": f"introspect-weights-{model}"}
    # The default: a claim per model, of one replica.
    (claim,) = of_kind(render(), "PersistentVolumeClaim")
    assert claim["metadata"]["name"] == "introspect-weights-llama2-7b"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"] and "storageClassName" not in claim["spec"]
    # Not persistent: an emptyDir per pod; an existing claim: no claim of the chart's.
    pod, _ = _server(render("--set", "modelServers.modelCache.persistent=false"), "introspect-tgi-llama2-7b")
    assert {v["name"]: v for v in pod["volumes"]}["model-cache"]["emptyDir"] == {"sizeLimit": "200Gi"}
    assert of_kind(render("-f", str(TWO_MODELS)), "PersistentVolumeClaim") == []
    # Two replicas cannot share a ReadWriteOnce claim: said before anything is deployed.
    refused = helm("template", "introspect", str(CHART), "--set", "models[0].name=llama2-7b",
                   "--set", "models[0].modelId=meta-llama/Llama-2-7b-chat-hf",
                   "--set", "models[0].replicas=2")  # fmt: skip
    assert refused.returncode != 0 and "llama2-7b has 2 replicas" in refused.stderr
    assert "modelServers.modelCache.accessMode ReadWriteMany" in refused.stderr


def test_each_model_s_gateways_speak_its_engine_and_keep_its_pods_at_their_limit() -> None:
    objects = render("-f", str(ENGINES), namespace="lab")
    services = {s["metadata"]["name"]: s for s in of_kind(objects, "Service")}
    expected = {"llama2-13b": ("tgi", "0"), "llama2-70b": ("vllm", "256"), "mistral-v2-7b": ("sglang", "64")}
    for model, (engine, concurrency) in expected.items():
        gateway = named(objects, "StatefulSet", f"introspect-gateway-{model}")
        env = env_of(gateway["spec"]["template"]["spec"]["containers"][0])
        assert env["INTROSPECT_MODEL_ENGINE"] == engine and env["INTROSPECT_MODEL"] == model
        # TGI says its limit in /info (0: ask it); vLLM and SGLang are told theirs, and so is the gateway.
        assert env["INTROSPECT_BACKEND_CONCURRENCY"] == concurrency
        namespace, name_port = env["INTROSPECT_MODEL_SERVICE"].split("/")
        name, port = name_port.split(":")
        assert namespace == "lab" and name == f"introspect-{engine}-{model}"
        assert [p["name"] for p in services[name]["spec"]["ports"]] == [port]
        assert services[name]["metadata"]["labels"]["introspect.dev/engine"] == engine
        settings = Settings.from_env({k: v for k, v in env.items() if isinstance(v, str)})
        assert (settings.model_engine, settings.model_service) == (engine, env["INTROSPECT_MODEL_SERVICE"])
    # A limit given for every gateway wins over the model's.
    objects = render("-f", str(ENGINES), "--set", "gateway.backendConcurrency=10")
    for model in expected:
        gateway = named(objects, "StatefulSet", f"introspect-gateway-{model}")
        assert env_of(gateway["spec"]["template"]["spec"]["containers"][0])["INTROSPECT_BACKEND_CONCURRENCY"] == "10"


def test_every_engine_s_pods_are_reached_by_gateways_and_scraped_only() -> None:
    objects = render("-f", str(ENGINES))
    policies, pods = of_kind(objects, "NetworkPolicy"), _pods(objects)
    servers = [pods["tgi-llama2-13b"], pods["vllm-llama2-70b"], pods["sglang-mistral-v2-7b"]]
    gateway, scorer, nats = pods["gateway-llama2-70b"], pods["scorer"], pods["nats"]
    for server in servers:
        assert network_allows(policies, gateway, server, 8080) and network_allows(policies, PROMETHEUS, server, 8080)
        assert network_allows(policies, server, HUB, 443)  # its weights
        for other in (scorer, STRANGER):
            assert not network_allows(policies, other, server, 8080)
        for destination, port in ((nats, 4222), (pods["aggregator"], 9090), (gateway, 9090)):
            assert not network_allows(policies, server, destination, port)
    # Prometheus scrapes every engine's /metrics on its HTTP port, through one ServiceMonitor.
    (monitor,) = [m for m in of_kind(objects, "ServiceMonitor") if m["metadata"]["name"] == "introspect-model-servers"]
    wanted = monitor["spec"]["selector"]["matchLabels"]
    scraped = [s for s in of_kind(objects, "Service") if wanted.items() <= s["metadata"]["labels"].items()]
    assert {s["metadata"]["labels"]["introspect.dev/engine"] for s in scraped} == {"tgi", "vllm", "sglang"}
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]


def test_values_of_chart_0_2_0_s_tgi_block_are_refused_with_the_new_names() -> None:
    refused = helm("template", "introspect", str(CHART), "--set", "tgi.startupSeconds=5400")
    assert refused.returncode != 0
    assert "`tgi` became `modelServers`" in refused.stderr and "`hfToken`" in refused.stderr
    unknown = helm("template", "introspect", str(CHART), "--set", "models[0].engine=ollama",
                   "--set", "models[0].name=x", "--set", "models[0].modelId=y")  # fmt: skip
    assert unknown.returncode != 0 and "engine" in unknown.stderr
