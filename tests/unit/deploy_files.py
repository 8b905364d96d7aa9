"""Readers of the container and deployment files, shared by the deploy tests.

Small parsers (a Dockerfile's instructions, Docker's ``.dockerignore`` rule, every YAML
document) and the two sides the files must agree with: the environment variables that
``streamcast.config.Settings`` reads and the sample names ``streamcast.service.metrics`` can expose.
"""

from __future__ import annotations

import re
import shlex
import sys
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import promql_parser
import pytest
import yaml
from pydantic import BaseModel

from streamcast.config import ApiSettings, Settings, env_name
from streamcast.service.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "kubernetes"
BIN = Path(sys.executable).parent
ENV_VAR = re.compile(r"\bSTREAMCAST_[A-Z0-9_]+\b")
METRIC = re.compile(r"\bstreamcast_[a-z0-9_]+\b")
#: the metrics the dashboard must show (the issue's list)
DASHBOARD_METRICS = {
    "streamcast_ticks_total",
    "streamcast_forecasts_total",
    "streamcast_dead_letters_total",
    "streamcast_batch_size_bucket",
    "streamcast_inference_seconds_bucket",
    "streamcast_end_to_end_latency_seconds_bucket",
    "streamcast_active_keys",
    "streamcast_evictions_total",
    "streamcast_consumer_lag",
}
#: the oldest Kubernetes the manifests target (the PodDisruptionBudget's
#: unhealthyPodEvictionPolicy is GA from 1.31) and the newest schema on hand
K8S_VERSIONS = ("1.31.0", "1.37.0")
K8S_API = {
    "Namespace": "v1",
    "ServiceAccount": "v1",
    "ConfigMap": "v1",
    "Secret": "v1",
    "Service": "v1",
    "Deployment": "apps/v1",
    "PodDisruptionBudget": "policy/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
    "PersistentVolumeClaim": "v1",
    "CronJob": "batch/v1",
}


def load_yaml(path: Path) -> list[Any]:
    """Every document of a YAML file (safe loader: merge keys yes, tags no)."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@cache
def compose() -> dict[str, Any]:
    """deploy/docker-compose.yml."""
    doc: dict[str, Any] = load_yaml(DEPLOY / "docker-compose.yml")[0]
    return doc


@cache
def k8s() -> dict[str, dict[str, Any]]:
    """Kubernetes objects of deploy/kubernetes by ``Kind/name``."""
    objects: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in load_yaml(path):
            objects[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return objects


def deployment() -> dict[str, Any]:
    """The streamcast Deployment's pod spec."""
    spec: dict[str, Any] = k8s()["Deployment/streamcast"]["spec"]["template"]["spec"]
    return spec


def retrain_pod() -> dict[str, Any]:
    """The retrain CronJob's pod spec."""
    job = k8s()["CronJob/streamcast-retrain"]["spec"]["jobTemplate"]["spec"]
    spec: dict[str, Any] = job["template"]["spec"]
    return spec


def configmap() -> dict[str, str]:
    """The non-secret settings of the Kubernetes deployment."""
    data: dict[str, str] = k8s()["ConfigMap/streamcast-config"]["data"]
    return data


@cache
def dockerfile(path: Path = REPO / "Dockerfile") -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` per instruction, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        word, _, rest = (pending + line).partition(" ")
        instructions.append((word.upper(), rest.strip()))
        pending = ""
    return instructions


def final_stage(path: Path = REPO / "Dockerfile") -> list[tuple[str, str]]:
    """The instructions of a Dockerfile's last stage (the image that ships)."""
    instructions = dockerfile(path)
    start = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[start:]


def image_env() -> dict[str, str]:
    """ENV of the runtime stage, ``KEY=value`` pairs."""
    env: dict[str, str] = {}
    for word, args in final_stage():
        if word == "ENV":
            env.update(part.split("=", 1) for part in shlex.split(args))  # type: ignore[misc]
    return env


@cache
def setting_env_names() -> tuple[frozenset[str], tuple[str, ...]]:
    """Every variable ``Settings`` (serve) or ``ApiSettings`` (api) reads, and prefixes of
    dict-valued (open) groups."""
    names: set[str] = set()
    open_prefixes: list[str] = []
    fields = {**ApiSettings.model_fields, **Settings.model_fields}
    for name, field in fields.items():
        names.add(env_name((name,)))
        group = field.annotation
        if isinstance(group, type) and issubclass(group, BaseModel):
            for sub, subfield in group.model_fields.items():
                names.add(env_name((name, sub)))
                if getattr(subfield.annotation, "__origin__", None) is dict:
                    open_prefixes.append(env_name((name, sub)) + "__")
    return frozenset(names), tuple(open_prefixes)


def is_setting(var: str) -> bool:
    """Whether ``var`` is read by ``streamcast.config.Settings``."""
    names, prefixes = setting_env_names()
    return var in names or var.startswith(prefixes)


@cache
def registered_samples() -> frozenset[str]:
    """Every sample name the service's registry can expose (counters with _total etc.)."""
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
    }
    return frozenset(
        family.name + suffix
        for family in Metrics().registry.collect()
        for suffix in suffixes.get(family.type, ("",))
    )


def dockerignore_included(path: str, ignore_file: Path = REPO / ".dockerignore") -> bool:
    """Docker's rule: the last pattern matching the path or a parent decides."""
    included = True
    for raw in ignore_file.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        parts = PurePosixPath(path).parts
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(re.fullmatch(regex, candidate) for candidate in candidates):
            included = negate
    return included


def queries_in(node: Any) -> list[str]:
    """Every ``expr`` string anywhere in a parsed JSON/YAML tree."""
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [q for value in node.values() for q in queries_in(value)]
    if isinstance(node, list):
        return [q for item in node for q in queries_in(item)]
    return []


def parse_promql(expr: str) -> None:
    """Parse ``expr`` as PromQL, with Grafana's variables replaced by what they expand to."""
    expanded = expr.replace("$__rate_interval", "1m").replace("$instance", ".*")
    try:
        promql_parser.parse(expanded)
    except ValueError as exc:
        pytest.fail(f"invalid PromQL ({exc}): {expr}")
