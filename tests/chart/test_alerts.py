"""The chart's alerting rules (its PrometheusRule), run by Prometheus's own `promtool`: every
rule is checked, and fed synthetic series under which it fires and under which it does not
(`tests/chart/alerts/<alert>.yaml`, one file per alert, read against the rendered rules)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from tests.chart.test_dashboard import TARGET_LABELS, _selectors, exported
from tests.support.chart import of_kind, render

pytestmark = pytest.mark.chart

ALERT_TESTS = Path(__file__).parent / "alerts"
ENABLED = ("--set", "metrics.prometheusRule.enabled=true")


def promtool() -> str:
    """Debian's `promtool` (package `prometheus`; `.ci/run` installs it)."""
    found = shutil.which("promtool")
    assert found is not None, "promtool is missing: apt-get install prometheus"
    return found


def rule_groups(*values: str) -> list[dict[str, Any]]:
    """The rule groups of the rendered PrometheusRule, as a Prometheus rules file has them."""
    (rule,) = of_kind(render(*ENABLED, *values), "PrometheusRule")
    groups: list[dict[str, Any]] = rule["spec"]["groups"]
    return groups


def alerts(groups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


def cases() -> dict[str, set[bool]]:
    """Alert -> whether its unit tests expect it to fire ({True, False}: both kinds are there)."""
    found: dict[str, set[bool]] = {}
    for path in sorted(ALERT_TESTS.glob("*.yaml")):
        for test in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            for check in test.get("alert_rule_test", []):
                found.setdefault(check["alertname"], set()).add(bool(check.get("exp_alerts")))
    return found


@pytest.fixture(scope="module")
def rules_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rendered rules as `rules.yaml`, beside a copy of every unit test that reads it."""
    folder = tmp_path_factory.mktemp("alerts")
    (folder / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups()}, sort_keys=False), encoding="utf-8")
    for path in ALERT_TESTS.glob("*.yaml"):
        shutil.copy(path, folder / path.name)
    return folder


def test_the_rendered_rules_pass_promtool_check(rules_folder: Path) -> None:
    result = subprocess.run([promtool(), "check", "rules", str(rules_folder / "rules.yaml")],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts(rule_groups()))} rules found" in result.stdout


def test_each_alert_fires_and_stays_quiet_as_its_unit_tests_say(rules_folder: Path) -> None:
    files = sorted(str(path) for path in rules_folder.glob("Introspect*.yaml"))
    result = subprocess.run([promtool(), "test", "rules", *files], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(files)


def test_every_alert_has_a_firing_and_a_quiet_unit_test_and_no_test_names_another() -> None:
    assert cases() == {name: {True, False} for name in alerts(rule_groups())}


def test_every_alert_says_how_bad_what_and_why() -> None:
    for name, rule in alerts(rule_groups()).items():
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert set(rule["annotations"]) == {"summary", "description"}, name
    by_severity = {name: rule["labels"]["severity"] for name, rule in alerts(rule_groups()).items()}
    assert by_severity == {
        "IntrospectJobNotCompleting": "critical",
        "IntrospectDeadLetters": "warning",
        "IntrospectNoModelServer": "critical",
        "IntrospectStoreCannotWrite": "critical",
        "IntrospectCacheCannotWrite": "warning",
        "IntrospectConsumerStalled": "critical",
        "IntrospectBackendSaturated": "warning",
    }


def test_every_rule_reads_metrics_and_labels_that_are_exported() -> None:
    """The services' own (services/*/metrics.py) or NATS's exporter's: a renamed metric or
    label would leave a rule that never fires, and promtool cannot know."""
    series = exported()
    for name, rule in alerts(rule_groups()).items():
        for selector in _selectors(promql_parser.parse(rule["expr"])):
            assert selector.name in series, f"{name}: {selector.name} is exported by nobody"
            labels = series[selector.name] | TARGET_LABELS
            assert {m.name for m in selector.matchers.matchers} <= labels, f"{name}: {selector.name}"


def test_thresholds_durations_and_labels_come_from_values() -> None:
    groups = rule_groups(
        "--set", "metrics.prometheusRule.alerts.noModelServer.for=2m",
        "--set", "metrics.prometheusRule.alerts.deadLetters.window=1h",
        "--set", "metrics.prometheusRule.alerts.backendSaturated.waitSeconds=900",
        "--set", "metrics.prometheusRule.alertLabels.team=ml-platform",
    )  # fmt: skip
    rules = alerts(groups)
    assert rules["IntrospectNoModelServer"]["for"] == "2m"
    assert "[1h]" in rules["IntrospectDeadLetters"]["expr"] and "offset 1h" in rules["IntrospectDeadLetters"]["expr"]
    assert "in the last 1h" in rules["IntrospectDeadLetters"]["annotations"]["description"]
    assert "> 900" in rules["IntrospectBackendSaturated"]["expr"]
    assert all(rule["labels"]["team"] == "ml-platform" for rule in rules.values())


def test_the_rules_read_only_their_own_release_s_namespace() -> None:
    (rule,) = of_kind(render(*ENABLED, namespace="lab"), "PrometheusRule")
    for group in rule["spec"]["groups"]:
        for alert in group["rules"]:
            assert 'namespace="lab"' in alert["expr"] and 'namespace="research"' not in alert["expr"], alert["alert"]
