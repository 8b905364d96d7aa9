"""Static checks of the image, compose stack and monitoring files (no Docker engine needed).

Every file under ``deploy/`` must parse, and what the files say must agree with the code:
environment variables are real ``STREAMCAST_*`` settings (``streamcast.config``), the
dashboard and alert rules query only metrics the service registers
(``streamcast.service.metrics``) in valid PromQL, ports and paths match across the Dockerfile and
compose, the image never installs the ``train`` extra, and docs/operations.md lists every
setting with its real default. The health probe script runs against the service's real
health server, and the console script the image's ENTRYPOINT names runs from the venv.
Kubernetes: ``test_deploy_kubernetes.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path, PurePosixPath

import pytest

from streamcast.config import Settings, env_name, flatten
from streamcast.service.health import HealthServer
from tests.support.kafka import load_script
from tests.unit.deploy_files import (
    BIN,
    DASHBOARD_METRICS,
    DEPLOY,
    ENV_VAR,
    METRIC,
    REPO,
    compose,
    configmap,
    deployment,
    dockerfile,
    dockerignore_included,
    final_stage,
    image_env,
    is_setting,
    load_yaml,
    parse_promql,
    queries_in,
    registered_samples,
    retrain_pod,
)

# -- every file parses ------------------------------------------------------------------


def test_every_deploy_yaml_parses_to_mappings() -> None:
    paths = sorted([*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")])
    assert len(paths) >= 12
    for path in paths:
        docs = load_yaml(path)
        assert docs, f"{path} is empty"
        assert all(isinstance(doc, dict) for doc in docs), path


def test_every_env_var_in_deploy_files_is_a_real_setting() -> None:
    files = [REPO / "Dockerfile", REPO / "docs" / "operations.md", *DEPLOY.rglob("*")]
    used: dict[str, set[str]] = {}
    for path in files:
        if path.is_file():
            for var in ENV_VAR.findall(path.read_text()):
                used.setdefault(var, set()).add(str(path.relative_to(REPO)))
    assert len(used) >= 20
    unknown = {var: sorted(where) for var, where in used.items() if not is_setting(var)}
    assert not unknown, f"not streamcast settings: {unknown}"


# -- Dockerfile -------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_with_a_slim_python_runtime() -> None:
    froms = [args for word, args in dockerfile() if word == "FROM"]
    args = dict(a.split("=", 1) for w, a in dockerfile() if w == "ARG" and "=" in a)
    assert len(froms) >= 2
    base = froms[-1].split()[0]
    base = args.get(base.strip("${}"), base)
    assert base.startswith("python:3.11-slim")
    assert froms[-1].split()[-1] == "runtime"


def test_runtime_image_runs_as_a_numeric_non_root_user() -> None:
    users = [args for word, args in final_stage() if word == "USER"]
    assert users, "the runtime stage must switch to a non-root USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) > 0
    pod = deployment()["securityContext"]
    assert pod["runAsUser"] == int(uid) and pod["runAsNonRoot"] is True


def test_image_installs_no_training_extra_and_no_training_code() -> None:
    text = (REPO / "Dockerfile").read_text()
    runs = [args for word, args in dockerfile() if word == "RUN"]
    installs = [cmd for run in runs for cmd in run.split("&&") if "pip install" in cmd]
    assert len(installs) == 2
    assert not any(re.search(r"\.\[|\[train|tensorflow|tf2onnx", cmd) for cmd in installs)
    assert "['project']['dependencies']" in text  # runtime deps only, read from pyproject
    assert not dockerignore_included("training/fit.py")


def test_entrypoint_cmd_port_signal_and_labels() -> None:
    stage = dict(final_stage())
    assert json.loads(stage["ENTRYPOINT"]) == ["streamcast"]
    assert json.loads(stage["CMD"]) == ["serve"]
    assert stage["STOPSIGNAL"] == "SIGTERM"
    env = image_env()
    assert stage["EXPOSE"] == env["STREAMCAST_HTTP_PORT"] == configmap()["STREAMCAST_HTTP_PORT"]
    assert env["STREAMCAST_MODEL_PATH"] == "/models/model.onnx"
    labels = " ".join(args for word, args in final_stage() if word == "LABEL")
    for key in ("title", "description", "version", "revision", "created", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels


def test_healthcheck_probes_healthz_with_the_image_python() -> None:
    check = dict(final_stage())["HEALTHCHECK"]
    command = json.loads(check.split("CMD", 1)[1])
    assert command[0] == "/opt/streamcast/bin/python" and command[-1] == "/healthz"
    copied = [a for w, a in final_stage() if w == "COPY" and command[1] in a]
    assert copied and dockerignore_included(copied[0].split()[0])


def test_dockerignore_keeps_heavy_and_private_paths_out() -> None:
    for kept_out in (
        ".venv/bin/python",
        ".kafka/libs/kafka.jar",
        "models/pedestrian/model.onnx",
        ".git/HEAD",
        ".env",
        "streamcast/__pycache__/cli.cpython-311.pyc",
        ".mypy_cache/3.11/x.json",
        "tests/unit/test_deploy.py",
    ):
        assert not dockerignore_included(kept_out), kept_out
    for word, args in dockerfile():
        if word == "COPY" and "--from=" not in args:
            for source in shlex.split(args)[:-1]:
                assert dockerignore_included(
                    source.rstrip("/") + "/x.py" if source.endswith("/") else source
                ), source


@pytest.mark.parametrize(
    "name", ["Dockerfile", "deploy/docker/model.Dockerfile", "deploy/docker/train.Dockerfile"]
)
def test_hadolint_finds_nothing(name: str) -> None:
    result = subprocess.run(
        [str(BIN / "hadolint"), "--no-color", str(REPO / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_training_image_installs_the_train_extra_and_runs_streamcast_train() -> None:
    path = DEPLOY / "docker" / "train.Dockerfile"
    assert "['optional-dependencies']['train']" in path.read_text()
    stage = final_stage(path)
    assert json.loads(dict(stage)["ENTRYPOINT"]) == ["streamcast-train"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["streamcast-train"] == "training.cli:main"
    uid = [args for word, args in stage if word == "USER"][-1].split(":")[0]
    assert int(uid) == retrain_pod()["securityContext"]["runAsUser"]
    # the root file system is read-only in the CronJob: every cache lives under its /tmp
    env = dict(
        part.split("=", 1) for word, args in stage if word == "ENV" for part in shlex.split(args)
    )
    train = next(c for c in retrain_pod()["containers"] if c["name"] == "train")
    tmp = next(m["mountPath"] for m in train["volumeMounts"] if m["name"] == "tmp")
    for var in ("HOME", "KERAS_HOME", "MPLCONFIGDIR"):
        assert env[var] == tmp or env[var].startswith(tmp + "/"), var
    # its own ignore file (BuildKit: <Dockerfile>.dockerignore) lets training/ in
    ignore = path.with_name(path.name + ".dockerignore")
    for word, args in dockerfile(path):
        if word == "COPY" and "--from=" not in args:
            for source in shlex.split(args)[:-1]:
                probe = source.rstrip("/") + "/x.py" if source.endswith("/") else source
                assert dockerignore_included(probe, ignore), source
    assert dockerignore_included("training/fit.py", ignore)
    for kept_out in (
        ".venv/bin/python",
        "models/m/model.onnx",
        ".git/HEAD",
        ".env",
        "training/__pycache__/fit.cpython-311.pyc",
        "tests/unit/test_deploy.py",
    ):
        assert not dockerignore_included(kept_out, ignore), kept_out  # fmt: skip


def test_streamcast_console_script_runs_outside_a_container() -> None:
    result = subprocess.run(
        [str(BIN / "streamcast"), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "serve" in result.stdout


async def test_container_healthcheck_script_against_the_real_health_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    healthcheck = load_script(DEPLOY / "docker" / "healthcheck.py", "streamcast_healthcheck")
    ready = [False]
    server = HealthServer("127.0.0.1", 0, lambda: b"", lambda: (ready[0], "restoring state"))
    async with server:
        monkeypatch.setenv("STREAMCAST_HTTP_PORT", str(server.port))
        assert await asyncio.to_thread(healthcheck.main, ["hc", "/healthz"]) == 0
        assert await asyncio.to_thread(healthcheck.main, ["hc", "/readyz"]) == 1
        ready[0] = True
        assert await asyncio.to_thread(healthcheck.main, ["hc", "/readyz"]) == 0
        assert await asyncio.to_thread(healthcheck.main, ["hc", "healthz"]) == 2
    # nothing listens any more: unhealthy, not a crash
    assert await asyncio.to_thread(healthcheck.main, ["hc", "/healthz"]) == 1


# -- docker compose ---------------------------------------------------------------------


def test_compose_services_images_and_healthchecks() -> None:
    services = compose()["services"]
    assert set(services) == {"kafka", "topics", "streamcast", "prometheus", "grafana"}
    assert services["kafka"]["image"] == "apache/kafka:4.1.2"
    for name in ("kafka", "streamcast", "prometheus", "grafana"):
        test = services[name]["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL") and len(test) >= 2, name
    assert "/healthz" in services["streamcast"]["healthcheck"]["test"]
    for name, service in services.items():
        for image in [service.get("image", "")]:
            assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image tag"


def test_compose_broker_is_single_node_kraft_without_auto_creation() -> None:
    env = compose()["services"]["kafka"]["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@kafka:")
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    # transactions (exactly-once mode) need the transaction log to fit one broker
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == 1
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == 1
    assert "INTERNAL://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]


def test_compose_streamcast_starts_after_broker_and_topics_and_drains_on_stop() -> None:
    services = compose()["services"]
    app = services["streamcast"]
    assert app["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert app["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert (DEPLOY / app["build"]["context"] / app["build"]["dockerfile"]).is_file()
    env = {k: str(v) for k, v in app["environment"].items()}
    assert all(is_setting(var) for var in env)
    grace = float(app["stop_grace_period"].rstrip("s"))
    assert grace > float(env.get("STREAMCAST_DRAIN_TIMEOUT_S", Settings().drain_timeout_s))
    model_mount = next(v for v in app["volumes"] if v.endswith(":/models:ro"))
    assert "model" in model_mount.removesuffix(":/models:ro")
    assert str(PurePosixPath(env["STREAMCAST_MODEL_PATH"]).parent) == "/models"
    assert app["init"] is True and app["read_only"] is True
    assert app["ports"] == [
        f"127.0.0.1:{env['STREAMCAST_HTTP_PORT']}:{env['STREAMCAST_HTTP_PORT']}"
    ]


def test_compose_bind_mounts_exist() -> None:
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), f"{name}: {source} is missing"


def test_topic_job_creates_the_settings_topics_with_a_compacted_changelog() -> None:
    script = DEPLOY / "compose" / "create-topics.sh"
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
    text = script.read_text()
    defaults = dict(re.findall(r"\$\{(STREAMCAST_TOPICS__[A-Z_]+):-([^}]+)\}", text))
    topics = Settings().topics
    expected = {env_name(("topics", f)): getattr(topics, f) for f in type(topics).model_fields}
    assert defaults == expected
    assert compose()["services"]["topics"]["environment"].items() >= expected.items()
    assert {k: v for k, v in configmap().items() if k in expected} == expected
    state_call = text[text.index('create "$state"') :]
    assert "cleanup.policy=compact" in state_call.split("\n\n")[0]
    assert '--partitions "$partitions"' in state_call


# -- Prometheus, alerts, Grafana --------------------------------------------------------


def test_dashboard_shows_the_required_metrics_and_only_registered_ones() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "streamcast.json").read_text())
    exprs = queries_in(dashboard["panels"])
    for expr in exprs:
        parse_promql(expr)
    used = {m for expr in exprs for m in METRIC.findall(expr)}
    assert used <= registered_samples(), used - registered_samples()
    assert used >= DASHBOARD_METRICS, DASHBOARD_METRICS - used
    assert any("streamcast_inference_seconds_bucket" in e and "0.99" in e for e in exprs)
    for q in ("0.5", "0.95", "0.99"):
        assert any(f"({q}," in e and "end_to_end_latency_seconds_bucket" in e for e in exprs)
    assert any("by (result)" in e and "streamcast_ticks_total" in e for e in exprs)
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    datasource = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    uid = datasource[0]["datasources"][0]["uid"]
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == uid and panel["targets"], panel["title"]


def test_alert_rules_query_registered_metrics() -> None:
    rules = [
        r for g in load_yaml(DEPLOY / "prometheus" / "alerts.yml")[0]["groups"] for r in g["rules"]
    ]
    assert len(rules) >= 5
    for rule in rules:
        assert rule["alert"] and rule["labels"]["severity"] in ("warning", "critical")
        parse_promql(rule["expr"])
        assert set(METRIC.findall(rule["expr"])) <= registered_samples(), rule["alert"]


def test_prometheus_scrapes_the_metrics_port_and_grafana_loads_the_dashboards() -> None:
    config = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")[0]
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "streamcast")
    assert job["metrics_path"] == "/metrics"
    assert str(job["dns_sd_configs"][0]["port"]) == image_env()["STREAMCAST_HTTP_PORT"]
    provider = load_yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "streamcast.yml")
    path = provider[0]["providers"][0]["options"]["path"]
    mounts = compose()["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{path}:ro" in mounts


# -- the settings the deployments give are valid, and documented -------------------------


def test_operations_doc_lists_every_setting_with_its_default() -> None:
    text = (REPO / "docs" / "operations.md").read_text()
    rows = dict(re.findall(r"^\| `(STREAMCAST_[A-Z0-9_]+)` \| `([^`]*)` \|", text, re.MULTILINE))
    actual = {
        env_name(tuple(dotted.split("."))): shown
        for dotted, shown in flatten(Settings(_env_file=None))
    }
    assert rows.keys() == actual.keys(), rows.keys() ^ actual.keys()
    wrong = {var: (rows[var], actual[var]) for var in actual if rows[var] != actual[var]}
    assert not wrong, (
        f"docs/operations.md defaults differ from streamcast.config (doc, code): {wrong}"
    )


def test_streamcast_config_accepts_the_compose_environment(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMCAST_")}
    env.update({k: str(v) for k, v in compose()["services"]["streamcast"]["environment"].items()})
    result = subprocess.run(
        [str(BIN / "streamcast"), "config"],  # cwd has no .env: only the compose environment
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "kafka:9092" in result.stdout and "/models/model.onnx" in result.stdout
