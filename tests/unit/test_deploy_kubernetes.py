"""Static checks of the Kubernetes manifests in ``deploy/kubernetes``.

Strict validation against the API schemas (kubernetes-validate, offline), then what the
schemas cannot know: probes on the metrics port, non-root read-only pods that drain
before SIGKILL, the model volume, secrets kept out of the ConfigMap, selectors that
match, a rollout and a disruption budget that suit a consumer group, and an autoscaler
capped at the ticks topic's partition count. The ConfigMap must parse as ``Settings``.
The retrain CronJob: its export and fit command lines parse with the real CLIs, read and
write the same files and volumes, and publish into the models claim.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest

from streamcast.config import Settings, load_settings
from tests.unit.deploy_files import (
    DEPLOY,
    K8S,
    K8S_API,
    K8S_VERSIONS,
    configmap,
    deployment,
    k8s,
    load_yaml,
    retrain_pod,
)


def test_kubernetes_kinds_api_versions_and_namespaces() -> None:
    objects = k8s()
    kinds = {key.split("/")[0] for key in objects}
    assert kinds == set(K8S_API)
    for key, obj in objects.items():
        assert obj["apiVersion"] == K8S_API[obj["kind"]], key
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "streamcast", key
    kustomization = load_yaml(K8S / "kustomization.yaml")[0]
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk - {"secret.example.yaml"}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_manifests_validate_strictly_against_the_api_schema(version: str) -> None:
    for key, obj in k8s().items():
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{key} is not a valid Kubernetes {version} object: {exc.message}")


def test_deployment_replicas_resources_and_selectors() -> None:
    deploy = k8s()["Deployment/streamcast"]
    assert deploy["spec"]["replicas"] == 2
    selector = deploy["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deploy["spec"]["template"]["metadata"]["labels"].items()
    for kind in ("Service/streamcast-metrics", "PodDisruptionBudget/streamcast"):
        spec = k8s()[kind]["spec"]
        chosen = spec["selector"].get("matchLabels", spec["selector"])
        assert chosen == selector, kind
    # no surge: a pod beyond the partition count never turns ready and stalls a rollout
    assert deploy["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    pdb = k8s()["PodDisruptionBudget/streamcast"]["spec"]
    assert pdb["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    pod = deployment()
    for container in pod["containers"] + pod["initContainers"]:
        resources = container["resources"]
        assert {"cpu", "memory"} <= resources["requests"].keys() & resources["limits"].keys()


def test_probes_hit_healthz_and_readyz_on_the_metrics_port() -> None:
    app = deployment()["containers"][0]
    port = next(p for p in app["ports"] if p["name"] == "metrics")
    assert str(port["containerPort"]) == configmap()["STREAMCAST_HTTP_PORT"]
    assert app["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert app["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert app["startupProbe"]["httpGet"]["path"] == "/healthz"
    annotations = k8s()["Deployment/streamcast"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port["containerPort"])
    assert annotations["prometheus.io/path"] == "/metrics"
    service_port = k8s()["Service/streamcast-metrics"]["spec"]["ports"][0]
    assert service_port["targetPort"] == "metrics"


def test_pods_are_non_root_read_only_and_drain_before_sigkill() -> None:
    pod = deployment()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    for container in pod["containers"] + pod["initContainers"]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]
    drain = float(configmap().get("STREAMCAST_DRAIN_TIMEOUT_S", Settings().drain_timeout_s))
    assert pod["terminationGracePeriodSeconds"] > drain


def test_models_reach_the_container_from_the_models_claim() -> None:
    """The service serves the models directory the retrain job publishes into; an empty
    one is seeded once from the model image, under a name every version sorts after."""
    pod = deployment()
    model_dir = configmap()["STREAMCAST_MODEL_PATH"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == model_dir)
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    retrain = next(v for v in retrain_pod()["volumes"] if v["name"] == "models")
    assert volume["persistentVolumeClaim"] == retrain["persistentVolumeClaim"]
    train = next(c for c in retrain_pod()["containers"] if c["name"] == "train")
    assert str(PurePosixPath(train["args"][train["args"].index("--publish-to") + 1])) == next(
        m["mountPath"] for m in train["volumeMounts"] if m["name"] == "models"
    )
    init = next(c for c in pod["initContainers"] if c["name"] == "model")
    init_mount = next(m for m in init["volumeMounts"] if m["name"] == mount["name"])
    script = init["command"][-1]
    seed = re.search(r"mv \S+ (\S+\.onnx)", script).group(1)  # type: ignore[union-attr]
    assert seed.startswith(init_mount["mountPath"] + "/")
    assert PurePosixPath(seed).name < "20000101T000000Z"  # older than any model version
    assert f"ls {init_mount['mountPath']}/*.onnx" in script  # a seeded directory stays


def test_secrets_stay_out_of_the_configmap_and_the_example_is_a_placeholder() -> None:
    secret_vars = {"STREAMCAST_SASL_PASSWORD", "STREAMCAST_SSL_KEY_PASSWORD"}
    assert not secret_vars & configmap().keys()
    env = {e["name"]: e for e in deployment()["containers"][0]["env"]}
    assert env["STREAMCAST_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "password"
    for key, obj in k8s().items():
        if obj["kind"] == "Secret":
            assert all("REPLACE-ME" in value for value in obj["stringData"].values()), key


def test_autoscaler_stays_within_the_ticks_partition_count() -> None:
    hpa = k8s()["HorizontalPodAutoscaler/streamcast"]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "streamcast",
    }
    script = (DEPLOY / "compose" / "create-topics.sh").read_text()
    partitions = int(re.search(r"TICKS_PARTITIONS:-(\d+)", script).group(1))  # type: ignore[union-attr]
    assert hpa["minReplicas"] == k8s()["Deployment/streamcast"]["spec"]["replicas"]
    assert hpa["maxReplicas"] <= partitions
    assert "sit idle" in (K8S / "hpa.yaml").read_text()


def test_kubernetes_settings_parse(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in [v for v in os.environ if v.startswith("STREAMCAST_")]:
        monkeypatch.delenv(var)
    for var, value in configmap().items():
        monkeypatch.setenv(var, value)
    ca = tmp_path / "ca.crt"
    ca.write_text("placeholder")
    monkeypatch.setenv("STREAMCAST_SSL_CAFILE", str(ca))  # the Secret's mount, stood in
    monkeypatch.setenv("STREAMCAST_SASL_USERNAME", "user")
    monkeypatch.setenv("STREAMCAST_SASL_PASSWORD", "secret")
    settings = load_settings(env_file=None)
    assert settings.security_protocol == configmap()["STREAMCAST_SECURITY_PROTOCOL"]
    assert settings.http_port == int(configmap()["STREAMCAST_HTTP_PORT"])


# -- the retrain CronJob -----------------------------------------------------------------

TRAIN_IMAGE = "registry.example.com/streamcast-train"


def _containers(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pod["initContainers"] + pod["containers"]}


def _mount(container: dict[str, Any], name: str) -> str:
    return str(next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == name))


def _export_argv(container: dict[str, Any]) -> list[str]:
    """The export command line, the shell's ``$(date ...)`` stood in by a time."""
    assert container["command"] == ["/bin/sh", "-c"]
    script = re.sub(r'"\$\(date [^)]*\)"', "2026-11-01T00:00:00Z", container["args"][0])
    argv = shlex.split(script)
    assert argv[:2] == ["exec", "streamcast"]
    return argv[2:]


def test_retrain_job_runs_one_at_a_time_and_never_retries_blindly() -> None:
    cron = k8s()["CronJob/streamcast-retrain"]["spec"]
    assert cron["concurrencyPolicy"] == "Forbid"
    assert len(cron["schedule"].split()) == 5 and cron["timeZone"] == "Etc/UTC"
    job = cron["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0 and job["activeDeadlineSeconds"] > 0
    pod = retrain_pod()
    assert pod["restartPolicy"] == "Never"
    # the retrain pods are no forecasters: the Service and the disruption budget skip them
    labels = job["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "retrain"
    forecaster = k8s()["Deployment/streamcast"]["spec"]["selector"]["matchLabels"]
    assert not forecaster.items() <= labels.items()


def test_retrain_export_then_fit_read_the_same_file_with_the_export_columns() -> None:
    from streamcast.tools.cli import build_parser as streamcast_parser
    from streamcast.tools.history import KEY, TS, VALUE
    from training.cli import build_parser as train_parser

    pod = retrain_pod()
    containers = _containers(pod)
    export, train = containers["export"], containers["train"]
    assert [c["name"] for c in pod["initContainers"]] == ["export"]
    # the runtime image exports (no TensorFlow needed), the training image trains
    assert export["image"] == deployment()["containers"][0]["image"]
    assert train["image"].rsplit(":", 1)[0] == TRAIN_IMAGE
    exported = streamcast_parser().parse_args(_export_argv(export))
    assert (exported.command, exported.action) == ("history", "export")
    fit = train_parser().parse_args(train["args"])
    assert fit.command == "fit"
    assert str(exported.out) == str(fit.data)
    assert str(PurePosixPath(fit.data).parent) == _mount(export, "history")
    assert _mount(train, "history") == _mount(export, "history")
    assert (fit.key_col, fit.time_col, fit.value_col) == (KEY, TS, VALUE)
    assert fit.duplicates == "first"
    # published atomically into the models volume, gated and pruned
    assert str(fit.publish_to) == _mount(train, "models")
    assert fit.publish_if_better_than == ("seasonal_naive",) and fit.publish_keep >= 2
    assert str(fit.out).startswith(_mount(train, "work") + "/")


def test_retrain_volumes_are_declared_mounted_and_the_claim_exists() -> None:
    pod = retrain_pod()
    declared = {v["name"]: v for v in pod["volumes"]}
    for container in _containers(pod).values():
        for mount in container["volumeMounts"]:
            assert mount["name"] in declared, (container["name"], mount["name"])
    mounted = {m["name"] for c in _containers(pod).values() for m in c["volumeMounts"]}
    assert mounted == set(declared)
    claim = declared["models"]["persistentVolumeClaim"]["claimName"]
    pvc = k8s()[f"PersistentVolumeClaim/{claim}"]["spec"]
    assert pvc["accessModes"] == ["ReadWriteMany"]  # the services read what the job writes
    config = declared["train-config"]["configMap"]["name"]
    assert f"ConfigMap/{config}" in k8s()


def test_retrain_config_is_a_train_config_of_the_served_shape(tmp_path: Path) -> None:
    from training.cli import build_parser as train_parser
    from training.config import TrainConfig

    train = _containers(retrain_pod())["train"]
    fit = train_parser().parse_args(train["args"])
    mount = _mount(train, "train-config")
    assert str(fit.config.parent) == mount
    data = k8s()["ConfigMap/streamcast-train-config"]["data"]
    path = tmp_path / fit.config.name
    path.write_text(data[fit.config.name])
    config = TrainConfig.load(path)
    assert config.interval == "1h" and config.horizon == 24 and config.window == 48
    assert set(fit.publish_if_better_than) <= set(config.baselines)
    assert (
        config.time_budget_s * 1.5
        < k8s()["CronJob/streamcast-retrain"]["spec"]["jobTemplate"]["spec"][
            "activeDeadlineSeconds"
        ]
    )


def test_retrain_pods_are_non_root_read_only_with_resources() -> None:
    pod = retrain_pod()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == deployment()["securityContext"]["runAsUser"]
    assert pod["automountServiceAccountToken"] is False
    for container in _containers(pod).values():
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]
        resources = container["resources"]
        assert {"cpu", "memory"} <= resources["requests"].keys() & resources["limits"].keys()
    # the export reaches Kafka as the service does: its settings and its credentials
    export = _containers(pod)["export"]
    assert export["envFrom"] == [{"configMapRef": {"name": "streamcast-config"}}]
    env = {e["name"]: e for e in export["env"]}
    service_env = {e["name"]: e for e in deployment()["containers"][0]["env"]}
    for var in ("STREAMCAST_SASL_USERNAME", "STREAMCAST_SASL_PASSWORD"):
        assert env[var] == service_env[var]
    tls = _mount(export, "kafka-tls")
    assert configmap()["STREAMCAST_SSL_CAFILE"].startswith(tls + "/")
