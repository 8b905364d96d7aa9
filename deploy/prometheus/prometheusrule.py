"""Write the Prometheus Operator's copy of the alert rules: ``alerts.yml`` as a
``PrometheusRule`` for ``deploy/kubernetes/components/monitoring``.

``alerts.yml`` is the one place rules are edited (``alerts.test.yml`` tests it with
promtool); this script turns its groups into the Kubernetes object, and
``tests/unit/test_deploy_alerts.py`` fails when the committed copy differs from what it
writes. Run it after editing the rules::

    .venv/bin/python deploy/prometheus/prometheusrule.py
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
RULES = HERE / "alerts.yml"
TARGET = HERE.parent / "kubernetes" / "components" / "monitoring" / "prometheusrule.yaml"
HEADER = """\
# GENERATED from deploy/prometheus/alerts.yml by deploy/prometheus/prometheusrule.py: edit
# the rules there (with their promtool tests in alerts.test.yml), then run the script.
# Comments on each rule and the runbooks: alerts.yml and docs/operations.md ("Runbooks").
#
# The Prometheus Operator loads PrometheusRules that its Prometheus' ruleSelector matches
# (kube-prometheus-stack: the label release=<its Helm release>); add that label in your
# overlay (`labels:` in kustomization.yaml) if the one below does not match.
"""


def render(rules: Path = RULES) -> str:
    """The PrometheusRule manifest for the groups of ``rules``."""
    groups: list[dict[str, Any]] = yaml.safe_load(rules.read_text())["groups"]
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "streamcast",
            "namespace": "streamcast",
            "labels": {
                "app.kubernetes.io/name": "streamcast",
                "app.kubernetes.io/part-of": "streamcast",
                "role": "alert-rules",
            },
        },
        "spec": {"groups": groups},
    }
    return HEADER + yaml.safe_dump(rule, sort_keys=False, width=1000, allow_unicode=True)


def main() -> int:
    """Write :data:`TARGET`."""
    TARGET.write_text(render())
    print(f"wrote {TARGET.relative_to(HERE.parents[1])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
