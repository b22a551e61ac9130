"""The Dockerfile, checked without a Docker engine: what its final stage holds and runs as,
what the build context leaves out, and that the chart runs the image as the user it has."""

from __future__ import annotations

import fnmatch
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.chart import ROOT, pod_specs, render

pytestmark = pytest.mark.chart


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def _stages() -> list[list[tuple[str, str]]]:
    """The instructions of each stage (the global ARGs before the first FROM are not in one)."""
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions():
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def _global_args() -> dict[str, str]:
    preamble = _instructions()[: [kind for kind, _ in _instructions()].index("FROM")]
    assert {kind for kind, _ in preamble} <= {"ARG"}, preamble
    return dict(args.split("=", 1) for _, args in preamble)


def _ignored(path: str) -> bool:
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines() if p.strip()]
    return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path.split("/")[0], p) for p in patterns)


def test_the_final_stage_holds_only_the_built_environment_and_runs_as_non_root() -> None:
    build, final = _stages()
    # one base for both stages, a build argument (tests/image builds on a Debian base made locally)
    assert _global_args() == {"BASE": "python:3.11-slim"}
    assert build[0] == ("FROM", "${BASE} AS build") and final[0] == ("FROM", "${BASE}")
    copies = [args for kind, args in final if kind in ("COPY", "ADD")]
    assert copies == ["--from=build /opt/introspect /opt/introspect"]  # no sources, no build context
    runs = " ".join(args for kind, args in final if kind == "RUN")
    assert not any(tool in runs for tool in ("apt-get", "pip ", "gcc", "build-essential"))
    (user,) = [args for kind, args in final if kind == "USER"]
    assert user == "10001:10001"
    assert ("ENTRYPOINT", '["introspect"]') in final
    install = " ".join(args for kind, args in build if kind == "RUN")
    assert "--no-cache-dir" in install and "uninstall --yes pip setuptools" in install
    assert install.startswith("python3 -m venv")  # `python3`: the Python image's and Debian's both have it
    assert "-type d -name tests -exec rm -rf {} +" in install  # the libraries' own test suites, not in the image


def test_the_build_context_leaves_out_environments_caches_and_results() -> None:
    for path in (".venv", ".venv-llama", ".git", ".cache", "results", ".introspect", "tests", "charts"):
        assert _ignored(path), path
    build, _ = _stages()
    for kind, args in build:
        if kind == "COPY":
            *sources, _destination = shlex.split(args)
            for source in sources:
                assert (ROOT / source).exists() and not _ignored(source), source


def test_the_chart_runs_the_image_as_the_user_the_image_has() -> None:
    services = [(w, pod) for w, pod in pod_specs(render()) if pod["containers"][0]["image"].startswith("introspect:")]
    assert len(services) == 5  # producer, scorer, the gateway of the one default model, aggregator, `helm test`
    for workload, pod in services:
        assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (10001, 10001), workload


def test_the_wheel_the_image_installs_holds_every_module_of_the_services(tmp_path: Path) -> None:
    """The build stage copies its sources and runs `pip install .`: from exactly those
    sources, the wheel pip builds must carry every module the repository has."""
    source = tmp_path / "src"
    source.mkdir()
    build_stage, _ = _stages()
    for kind, args in build_stage:
        if kind == "COPY":
            *paths, _destination = shlex.split(args)
            for path in paths:
                copy = shutil.copytree if (ROOT / path).is_dir() else shutil.copy
                copy(ROOT / path, source / path)
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
             "--wheel-dir", str(tmp_path), str(source)]  # fmt: skip
    subprocess.run(build, check=True, capture_output=True)
    (wheel,) = tmp_path.glob("introspect-*.whl")
    packaged = {name for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".py")}
    modules = {str(path.relative_to(ROOT)) for top in ("services", "proto") for path in (ROOT / top).rglob("*.py")}
    assert packaged == modules
    entry_points = zipfile.ZipFile(wheel).read(f"{wheel.name.split('-py3')[0]}.dist-info/entry_points.txt").decode()
    assert "introspect = services.cli:entry_point" in entry_points
