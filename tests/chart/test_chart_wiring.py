"""The chart's wiring, run for real: every service started with the environment the chart
renders for it (its own role's NATS user and password, partitions, model, served models,
model server discovery), against a nats-server running the chart's nats.conf, whose
permissions let each role use only its own subjects, and a local stand-in for the
Kubernetes API whose EndpointSlices point at the stand-in model server: its TGI routes for
a TGI model, its OpenAI-compatible route for a vLLM model. The job is submitted, and `helm
test` run, with the submitter's credentials. What the cluster would supply is put in by the
test: the rendered Secret's values, the pod index, free ports and local folders."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from proto import Job
from services.client import list_jobs, wait_for_job
from services.errors import AggregatorRefused, JobRejected
from services.jobs import with_job_id
from services.local import free_port
from services.runtime.settings import Settings
from services.standin.server import StandInSettings, create_app
from tests.conftest import DATASET_MIRROR
from tests.support.chart import env_of, pod_specs, render, run_chart_nats, secret_data
from tests.support.kubernetes_fake import endpoint_slice, serve_fake_kubernetes

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.chart]

NAMESPACE = "research"


def _containers(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The rendered `introspect serve` container of each service, by service."""
    containers = {}
    for _, pod in pod_specs(objects):
        for container in pod["containers"]:
            if container.get("args", [None])[0] == "serve":
                containers[container["args"][1]] = container
    return containers


def _environment(container: dict[str, Any], index: int, nats_url: str, data: Path, kubernetes: str,
                 secret: dict[str, str]) -> dict[str, str]:  # fmt: skip
    """The container's environment as Kubernetes would give it, made to run on this machine."""
    env: dict[str, str] = {}
    for name, value in env_of(container).items():
        if isinstance(value, str):
            env[name] = value
        elif "fieldRef" in value:  # the StatefulSet pod index
            env[name] = str(index)
        else:
            env[name] = secret[value["secretKeyRef"]["key"]]
    local = {"INTROSPECT_NATS_URL": nats_url, "INTROSPECT_METRICS_HOST": "127.0.0.1",
             "INTROSPECT_METRICS_PORT": str(free_port()), "INTROSPECT_KUBERNETES_API": kubernetes}  # fmt: skip
    for path_setting in ("INTROSPECT_DATA_DIR", "INTROSPECT_RESULTS_DIR", "HF_HOME", "XDG_CACHE_HOME"):
        if path_setting in env:
            local[path_setting] = str(data / env[path_setting].strip("/"))
    if "INTROSPECT_DATA_ROOTS" in env:  # the producer's data claim holds the dataset mirror here
        local["INTROSPECT_DATA_ROOTS"] = str(DATASET_MIRROR)
    return {**os.environ, **env, **local}


# The routes a model server of each engine is asked at: TGI's own, or the OpenAI-compatible one.
ROUTES = {"tgi": {"/info", "/generate"}, "vllm": {"/v1/models", "/v1/completions"}}


@pytest.mark.parametrize("engine", list(ROUTES))
async def test_the_services_as_the_chart_configures_them_run_a_job(tmp_path: Path, engine: str) -> None:
    # A claim holding the dataset mirror (this machine reaches no Hugging Face Hub), mounted
    # as the producer's one data root.
    model = {"name": "llama2-7b", "modelId": "meta-llama/Llama-2-7b-chat-hf", "engine": engine}
    objects = render("--set", "producer.data.claimName=datasets", "--set-json", f"models=[{json.dumps(model)}]",
                     namespace=NAMESPACE)  # fmt: skip
    secret = secret_data(objects, "introspect-nats-auth")
    with run_chart_nats(objects, tmp_path, secret) as (nats,):
        token = secret_data(objects, "introspect-api-token")
        routes = await _run_a_job(objects, tmp_path, nats.url, {**secret, **token})
    assert routes == ROUTES[engine]  # the gateways spoke the model's engine, and only it


async def _run_a_job(objects: list[dict[str, Any]], tmp_path: Path, nats_url: str, secret: dict[str, str]) -> set[str]:
    """Run the rendered services through a job; the routes the model server was asked at."""
    containers = _containers(objects)
    assert set(containers) == {"producer", "scorer", "gateway", "aggregator"}
    gateway_env = env_of(containers["gateway"])
    namespace, service_and_port = gateway_env["INTROSPECT_MODEL_SERVICE"].split("/")
    service, port_name = service_and_port.split(":")
    partitions = int(gateway_env["INTROSPECT_PARTITIONS"])
    routes: set[str] = set()

    @web.middleware
    async def record(request: web.Request, handler):  # type: ignore[no-untyped-def]
        routes.add(request.path)
        return await handler(request)

    app = create_app(StandInSettings())
    app.middlewares.append(record)
    model_server = TestServer(app, host="127.0.0.1")
    await model_server.start_server()
    running: dict[str, tuple[dict[str, str], subprocess.Popen[bytes]]] = {}
    async with serve_fake_kubernetes() as (fake, kubernetes):
        fake.slices["tgi"] = endpoint_slice(
            "tgi-1", model_server.port, {"127.0.0.1": True}, service=service, namespace=namespace, port_name=port_name
        )
        try:
            pods = [("producer", 0), ("scorer", 0), ("aggregator", 0), *(("gateway", k) for k in range(partitions))]
            for name, index in pods:
                env = _environment(containers[name], index, nats_url, tmp_path / f"{name}-{index}",
                                   kubernetes, secret)  # fmt: skip
                assert env["INTROSPECT_NATS_USER"] == name  # each service its own role's user
                log = (tmp_path / f"{name}-{index}.log").open("wb")
                command = [sys.executable, "-m", "services.cli", *containers[name]["args"]]
                running[f"{name}-{index}"] = (
                    env,
                    subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT),
                )
            for name, (env, process) in running.items():
                await _healthy(name, int(env["INTROSPECT_METRICS_PORT"]), process, tmp_path / f"{name}.log")
            assert f"kubernetes.io/service-name={service}" in fake.selectors  # the gateways found it through the API

            submitter = secret["submitter-password"]
            settings = Settings(nats_url=nats_url, nats_user="submitter", nats_password=submitter,
                                nats_inbox_prefix="_INBOX_submitter", api_token=secret["token"])  # fmt: skip
            aggregator = f"http://127.0.0.1:{running['aggregator-0'][0]['INTROSPECT_METRICS_PORT']}"
            with pytest.raises(AggregatorRefused, match="needs its bearer token"):  # records are not for anyone
                list_jobs(aggregator)
            job = with_job_id(Job("", "llama2-7b", "IMDB", "counterfactual", limit=8, mirror=str(DATASET_MIRROR)))
            status = await asyncio.wait_for(wait_for_job(settings, aggregator, job, lambda _r, _e: None), 120)
            assert status["complete"] and status["received"] == 8
            # A job naming a file outside the producer's data root is refused before it is read.
            private = tmp_path / "private.jsonl"
            private.write_text('{"text": "a row the API must never serve", "label": "positive"}\n', encoding="utf-8")
            outside = with_job_id(Job("", "llama2-7b", str(private), "classify", category="sentiment"))
            with pytest.raises(JobRejected, match="outside the folders this producer may read"):
                await asyncio.wait_for(wait_for_job(settings, aggregator, outside, lambda _r, _e: None), 60)
            # A job for a model this release does not serve is refused, not left waiting.
            other = with_job_id(Job("", "mistral-v2-7b", "IMDB", "classify", limit=2, mirror=str(DATASET_MIRROR)))
            with pytest.raises(JobRejected, match="no gateway serves model 'mistral-v2-7b'"):
                await asyncio.wait_for(wait_for_job(settings, aggregator, other, lambda _r, _e: None), 60)
            # `helm test`: its pod's two commands pass against the running release.
            (test_pod,) = [o for o in objects if o["kind"] == "Pod"]
            for container in test_pod["spec"]["containers"]:
                args = [aggregator if arg.startswith("http://") else arg for arg in container["args"]]
                env = _environment(container, 0, nats_url, tmp_path / "helm-test", kubernetes, secret)
                check = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "services.cli", *args, env=env, stdout=asyncio.subprocess.PIPE
                )
                out, _ = await asyncio.wait_for(check.communicate(), 60)
                assert check.returncode == 0, f"helm test {container['name']}: {out.decode()}"
                if container["name"] == "aggregator-api":
                    assert f"{job.job_id}  [" in out.decode()  # the finished job, with its progress bar
                else:
                    assert "no gateway serves model 'mistral-v2-7b'" in out.decode()  # the refused job's letter
        finally:
            for _, process in running.values():
                process.terminate()
            for _, process in running.values():
                process.wait(timeout=30)
            await model_server.close()
    return routes


async def _healthy(name: str, port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    """Wait for /healthz to say ready, without blocking this loop (it serves the fake API)."""
    async with aiohttp.ClientSession() as session:
        for _ in range(int(timeout / 0.1)):
            assert process.poll() is None, f"{name} exited: {log.read_text()[-2000:]}"
            try:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{name} not ready after {timeout} s: {log.read_text()[-2000:]}")
