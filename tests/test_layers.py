"""The layering ARCHITECTURE.md promises, checked on the imports themselves."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    """The absolute names a module imports (relative imports resolved against its package)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.add(".".join([*base, node.module] if node.module else base))
            elif node.module:
                names.add(node.module)
    return names


def _modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", _modules("services/core"), ids=lambda p: p.name)
def test_the_core_imports_nothing_of_the_project_outside_itself(path: Path) -> None:
    outside = {n for n in _imports(path) if n.split(".")[0] in ("services", "proto")}
    assert {n for n in outside if not n.startswith("services.core")} == set()


@pytest.mark.parametrize("path", _modules("proto"), ids=lambda p: p.name)
def test_the_wire_contract_imports_nothing_of_the_services(path: Path) -> None:
    assert {n for n in _imports(path) if n.startswith("services")} == set()


@pytest.mark.parametrize("path", _modules("services/backends") + _modules("services/gateway"), ids=lambda p: p.name)
def test_backends_and_gateway_do_not_import_the_in_process_runner(path: Path) -> None:
    assert "services.runner" not in _imports(path)


SERVICES = ("producer", "scorer", "gateway", "aggregator")


@pytest.mark.parametrize("service", SERVICES)
def test_services_do_not_import_each_other(service: str) -> None:
    others = {f"services.{other}" for other in SERVICES if other != service}
    for path in _modules(f"services/{service}"):
        assert not {n for n in _imports(path) if n.rsplit(".", 1)[0] in others or n in others}, path


@pytest.mark.parametrize("path", [p for s in SERVICES for p in _modules(f"services/{s}")], ids=lambda p: p.name)
def test_handlers_never_see_nats(path: Path) -> None:
    assert not {n for n in _imports(path) if n.startswith("nats")}, "only runtime/ talks to NATS"


HEAVY = ("datasets", "kubernetes", "pandas", "pyarrow")


@pytest.mark.parametrize(
    "module",
    ["services.cli", "services.producer.service", "services.scorer.service", "services.gateway.service",
     "services.aggregator.service"],
)  # fmt: skip
def test_starting_a_process_imports_no_heavy_library_it_may_not_use(module: str) -> None:
    """Hugging Face datasets (a second to import), the Kubernetes client, pandas and pyarrow
    are imported where they are used: loading a split, discovering servers, writing files."""
    probe = f"import sys, {module}; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert loaded.stdout.split() == []
