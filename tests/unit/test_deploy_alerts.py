"""The alert rules, run: promtool checks ``deploy/prometheus/alerts.yml`` and runs its unit
tests (``alerts.test.yml``: synthetic series in, the alerts that must fire or stay quiet
out); the Prometheus Operator's copy (``PrometheusRule``) is the same rules; every alert
links a runbook that exists in docs/operations.md and is tested to fire at least once.

promtool is Debian's ``prometheus`` package (.ci/run installs it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.kafka import load_script
from tests.unit.deploy_files import DEPLOY, K8S, REPO, load_yaml

PROMETHEUS = DEPLOY / "prometheus"
RUNBOOK = re.compile(r"^https://docs\.example\.com/streamcast/operations\.md#([a-z0-9-]+)$")


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is needed: apt-get install prometheus (.ci/run does)")
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=120, check=False, cwd=PROMETHEUS
    )


def _rules() -> list[dict[str, Any]]:
    groups = load_yaml(PROMETHEUS / "alerts.yml")[0]["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_accepts_the_rules() -> None:
    result = _promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_alert_unit_tests_pass() -> None:
    result = _promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_quiet() -> None:
    tests = load_yaml(PROMETHEUS / "alerts.test.yml")[0]["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    fired = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    names = {rule["alert"] for rule in _rules()}
    assert names <= fired, f"never tested firing: {names - fired}"
    assert names <= quiet, f"never tested staying quiet: {names - quiet}"


def _anchors(markdown: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+)$", markdown.read_text(), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_every_alert_links_a_runbook_that_exists() -> None:
    anchors = _anchors(REPO / "docs" / "operations.md")
    for rule in _rules():
        url = rule["annotations"].get("runbook_url", "")
        match = RUNBOOK.match(url)
        assert match, f"{rule['alert']}: runbook_url {url!r}"
        assert match.group(1) == rule["alert"].lower(), rule["alert"]
        assert match.group(1) in anchors, f"docs/operations.md has no section {match.group(1)}"
        assert rule["annotations"]["summary"], rule["alert"]


def test_the_prometheus_rule_is_alerts_yml() -> None:
    script = load_script(PROMETHEUS / "prometheusrule.py", "streamcast_prometheusrule")
    committed = (K8S / "components" / "monitoring" / "prometheusrule.yaml").read_text()
    assert committed == script.render(), (
        "the PrometheusRule is stale: run .venv/bin/python deploy/prometheus/prometheusrule.py"
    )
    rule = load_yaml(K8S / "components" / "monitoring" / "prometheusrule.yaml")[0]
    assert rule["spec"]["groups"] == load_yaml(PROMETHEUS / "alerts.yml")[0]["groups"]
