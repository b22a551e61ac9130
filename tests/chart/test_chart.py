"""The Helm chart, checked offline: lint, render, validate against Kubernetes 1.33, and what
the rendered objects must say (GPUs, volumes, secrets, non-root containers, wiring)."""

from __future__ import annotations

import base64
import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from proto import subjects as sub
from services.runtime.bus import Bus
from services.runtime.settings import ENV_PREFIX, Settings
from tests.support.chart import CHART, TWO_MODELS, env_of, helm, named, of_kind, pod_specs, render, run_chart_nats
from tests.support.pipeline import get_bytes

pytestmark = pytest.mark.chart

KUBERNETES = "1.33.0"
# Custom resources of the Prometheus Operator: no schema ships with Kubernetes.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
VALUES = {"default": (), "two-models": ("-f", str(TWO_MODELS))}


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
        namespace, name_port = env["INTROSPECT_TGI_SERVICE"].split("/")
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
    (container,) = nats["spec"]["template"]["spec"]["containers"]
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
    token, password = "hf_not_a_real_token_1234", "not-a-real-password-5678"
    objects = render("--set", f"tgi.hfToken.value={token}", "--set", f"nats.auth.password={password}")
    secrets = {s["metadata"]["name"]: s for s in of_kind(objects, "Secret")}
    decoded = {base64.b64decode(v).decode() for s in secrets.values() for v in s["data"].values()}
    assert {token, password} <= decoded
    for configmap in of_kind(objects, "ConfigMap"):
        text = "\n".join(configmap["data"].values())
        assert token not in text and password not in text, configmap["metadata"]["name"]
    for workload, pod in pod_specs(objects):
        for container in pod["containers"]:
            for value in env_of(container).values():
                if isinstance(value, dict) and "secretKeyRef" in value:
                    ref = value["secretKeyRef"]
                    assert ref["key"] in secrets[ref["name"]]["data"], f"{workload}: {ref}"


def test_a_generated_nats_password_is_strong_and_existing_secrets_are_not_recreated() -> None:
    (secret,) = [s for s in of_kind(render(), "Secret") if s["metadata"]["name"] == "introspect-nats-auth"]
    assert len(base64.b64decode(secret["data"]["password"])) == 32
    objects = render("-f", str(TWO_MODELS))
    assert of_kind(objects, "Secret") == []  # NATS credentials and the HF token are the user's Secrets
    for _, pod in pod_specs(objects):
        for container in pod["containers"]:
            user = env_of(container).get("INTROSPECT_NATS_USER") or env_of(container).get("NATS_USER")
            if user is not None:
                assert user["secretKeyRef"]["name"] == "introspect-nats-credentials"


def test_monitoring_network_policy_and_dashboard_objects() -> None:
    objects = render("-f", str(TWO_MODELS))
    services = of_kind(objects, "Service")
    monitors = {m["metadata"]["name"]: m for m in of_kind(objects, "ServiceMonitor")}
    assert set(monitors) == {"introspect", "introspect-tgi"}
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

    policies = {p["metadata"]["name"]: p for p in of_kind(objects, "NetworkPolicy")}
    tgi_policy = policies["introspect-tgi"]["spec"]
    gateway_labels = named(objects, "StatefulSet", "introspect-gateway-llama2-70b")["spec"]["template"]["metadata"]
    allowed = tgi_policy["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    assert allowed.items() <= gateway_labels["labels"].items()  # gateways reach TGI
    scorer_labels = named(objects, "Deployment", "introspect-scorer")["spec"]["template"]["metadata"]["labels"]
    assert not allowed.items() <= scorer_labels.items()  # nothing else of the release does
    nats_from = policies["introspect-nats"]["spec"]["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": {"app": "research-notebook"}}} in nats_from

    (dashboard,) = [c for c in of_kind(objects, "ConfigMap") if c["metadata"]["name"] == "introspect-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "Introspect"}
    shipped = (CHART / "files" / "introspect-dashboard.json").read_text(encoding="utf-8")
    assert dashboard["data"]["introspect.json"] == shipped.rstrip("\n")


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("models=null", "models"),
        ("models[0].gpus=0", "gpus"),
        ("gateway.partitions=0", "partitions"),
        ("tgi.port=80", "port"),
        ("nats.jetstream.storage=lots", "storage"),
        ("scorer.unknownKey=1", "unknownKey"),
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
    assert "dashboard" in notes and "grafana_dashboard=1" in notes


async def test_the_rendered_nats_config_runs_and_the_services_credentials_open_it(tmp_path: Path) -> None:
    """The chart's nats.conf, started by the real nats-server: JetStream on, the Secret's
    user and password accepted, every stream of the pipeline declared within its limits."""
    password = "not-a-real-password-5678"
    objects = render("--set", f"nats.auth.password={password}")
    with run_chart_nats(objects, tmp_path, "introspect", password) as nats:
        settings = Settings(nats_url=nats.url, nats_user="introspect", nats_password=password)
        bus = await Bus.open(settings, "chart-test")
        try:
            names = {stream.config.name for stream in await bus.js.streams_info()}
            assert names == {spec.name for spec in sub.STREAMS}
        finally:
            await bus.close()
        jetstream = json.loads(get_bytes(f"{nats.monitor_url}/varz"))["jetstream"]["config"]
        assert jetstream["max_storage"] == 20 * 1024**3  # jetstream.storage: 20Gi
        assert jetstream["max_memory"] == 1024**3  # jetstream.maxMemory: 1Gi


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
            assert settings.nats_user == settings.nats_password == "from-a-secret"
            assert settings.metrics_port == 9090 and settings.partitions >= 1
            if container["args"][1] == "gateway":
                assert settings.partition == settings.partitions - 1 and settings.model and settings.tgi_service
            if container["args"][1] == "producer":
                assert settings.served_models
            checked += 1
    assert checked == (4 if values == "default" else 5)


def test_helm_test_checks_the_aggregator_api_and_nats_with_the_release_credentials() -> None:
    objects = render()
    (pod,) = of_kind(objects, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    api, nats = pod["spec"]["containers"]
    assert api["args"] == ["status", "--aggregator", "http://introspect-aggregator:9090"]
    assert nats["args"] == ["dead-letters", "list"]
    env = env_of(nats)
    assert env["INTROSPECT_NATS_URL"] == "nats://introspect-nats:4222"
    assert env["INTROSPECT_NATS_PASSWORD"] == {"secretKeyRef": {"name": "introspect-nats-auth", "key": "password"}}
    assert pod["spec"]["restartPolicy"] == "Never"
    # The release's NetworkPolicies admit it: it carries the release's labels.
    labels = pod["metadata"]["labels"]
    assert labels["app.kubernetes.io/instance"] == "introspect" and labels["app.kubernetes.io/part-of"] == "introspect"
