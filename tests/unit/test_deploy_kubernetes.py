"""Static checks of the Kubernetes manifests in ``deploy/kubernetes``.

The overlays (dev, prod with KEDA, prod-hpa with the CPU autoscaler) are rendered by
``kubectl kustomize`` and every object is validated strictly: Kubernetes' own kinds
against the API schemas (kubernetes-validate, offline), KEDA's and the Prometheus
Operator's against the schemas in ``tests/unit/crd_schemas`` (unknown fields rejected).
Then what the schemas cannot know: probes on the metrics port, non-root read-only pods
that drain before SIGKILL, the model volume, secrets kept out of the ConfigMap,
selectors that match, a rollout and a disruption budget that suit a consumer group, no
replica count where an autoscaler owns it, autoscalers capped at the ticks topic's
partition count, a settings change that rolls the pods, a network policy that lets in
Prometheus and out to Kafka, a ServiceMonitor that finds the pods under the job the
alerts name. Each overlay's ConfigMap must parse as ``Settings``. The retrain CronJob: its
export and fit command lines parse with the real CLIs, read and write the same files
and volumes, and publish into the models claim.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from streamcast.config import Settings, load_settings
from tests.unit.deploy_files import (
    CUSTOM_KINDS,
    DEPLOY,
    K8S,
    K8S_API,
    K8S_VERSIONS,
    OVERLAYS,
    by_name,
    configmap,
    deployment,
    k8s,
    kustomize,
    load_yaml,
    retrain_pod,
)

SCHEMAS = Path(__file__).parent / "crd_schemas"
#: what each overlay adds to the base
AUTOSCALER = {"dev": None, "prod": "ScaledObject", "prod-hpa": "HorizontalPodAutoscaler"}


def _partitions() -> int:
    """The ticks topic's partitions as deploy/compose/create-topics.sh creates them."""
    script = (DEPLOY / "compose" / "create-topics.sh").read_text()
    return int(re.search(r"TICKS_PARTITIONS:-(\d+)", script).group(1))  # type: ignore[union-attr]


@cache
def _custom_validator(kind: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{kind.lower()}.json").read_text())
    return jsonschema.Draft202012Validator(schema)


def test_every_file_of_a_kustomization_is_listed_and_every_overlay_renders() -> None:
    for kustomization in K8S.rglob("kustomization.yaml"):
        spec = load_yaml(kustomization)[0]
        listed = set(spec.get("resources", [])) | {
            f for gen in spec.get("configMapGenerator", []) for f in gen.get("envs", [])
        }
        listed |= {f for gen in spec.get("configMapGenerator", []) for f in gen.get("files", [])}
        on_disk = {p.name for p in kustomization.parent.iterdir() if p.is_file()}
        unlisted = on_disk - listed - {"kustomization.yaml", "secret.example.yaml"}
        assert not unlisted, f"{kustomization.parent}: not in its kustomization: {unlisted}"
    assert {p.name for p in (K8S / "overlays").iterdir()} == set(OVERLAYS)
    for overlay in OVERLAYS:
        assert k8s(overlay), overlay


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_kinds_api_versions_and_namespaces(overlay: str) -> None:
    objects = k8s(overlay)
    namespace = k8s(overlay)["Deployment/streamcast"]["metadata"]["namespace"]
    assert f"Namespace/{namespace}" in objects
    for key, obj in objects.items():
        assert obj["apiVersion"] == K8S_API[obj["kind"]], key
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == namespace, key
    kinds = {key.split("/")[0] for key in objects}
    expected = set(K8S_API) - set(CUSTOM_KINDS) - {"HorizontalPodAutoscaler", "Secret"}
    assert kinds >= expected, expected - kinds
    if overlay != "dev":
        assert {"ServiceMonitor", "PrometheusRule"} <= kinds


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_manifests_validate_strictly_against_the_api_schema(
    overlay: str, version: str
) -> None:
    for key, obj in k8s(overlay).items():
        if obj["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{key} is not a valid Kubernetes {version} object: {exc.message}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_resources_validate_strictly_against_their_crd_schemas(overlay: str) -> None:
    for key, obj in k8s(overlay).items():
        if obj["kind"] in CUSTOM_KINDS:
            errors = list(_custom_validator(obj["kind"]).iter_errors(obj))
            assert not errors, f"{key}: " + "; ".join(
                f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
            )


def test_custom_resource_schemas_reject_unknown_fields_and_wrong_types() -> None:
    """The strictness is real: a misspelt field or a string count fails validation."""
    scaled = k8s("prod")["ScaledObject/streamcast"]
    validator = _custom_validator("ScaledObject")
    assert validator.is_valid(scaled)
    misspelt = {**scaled, "spec": {**scaled["spec"], "maxReplicas": 6}}
    assert not validator.is_valid(misspelt)
    wrong_type = {**scaled, "spec": {**scaled["spec"], "maxReplicaCount": "6"}}
    assert not validator.is_valid(wrong_type)
    monitor = k8s("prod")["ServiceMonitor/streamcast"]
    endpoint = {**monitor["spec"]["endpoints"][0], "intervall": "15s"}
    bad = {**monitor, "spec": {**monitor["spec"], "endpoints": [endpoint]}}
    assert _custom_validator("ServiceMonitor").is_valid(monitor)
    assert not _custom_validator("ServiceMonitor").is_valid(bad)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployment_replicas_resources_and_selectors(overlay: str) -> None:
    objects = k8s(overlay)
    deploy = objects["Deployment/streamcast"]
    autoscaler = AUTOSCALER[overlay]
    scalers = {key.split("/")[0] for key in objects} & {"ScaledObject", "HorizontalPodAutoscaler"}
    assert scalers == ({autoscaler} if autoscaler else set())
    if autoscaler:
        # the autoscaler owns the count: one in the manifest would be reapplied on every
        # `kubectl apply`, each swing a rebalance
        assert "replicas" not in deploy["spec"], overlay
    else:
        assert deploy["spec"]["replicas"] == 1
        # dev retrains only by hand
        assert objects["CronJob/streamcast-retrain"]["spec"]["suspend"] is True
    selector = deploy["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deploy["spec"]["template"]["metadata"]["labels"].items()
    for kind in ("Service/streamcast-metrics", "PodDisruptionBudget/streamcast"):
        spec = objects[kind]["spec"]
        chosen = spec["selector"].get("matchLabels", spec["selector"])
        assert chosen == selector, kind
    # no surge: a pod beyond the partition count never turns ready and stalls a rollout
    assert deploy["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    pdb = objects["PodDisruptionBudget/streamcast"]["spec"]
    assert pdb["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    pod = deployment(overlay)
    for container in pod["containers"] + pod["initContainers"]:
        resources = container["resources"]
        assert {"cpu", "memory"} <= resources["requests"].keys() & resources["limits"].keys()
    assert "replicas" not in load_yaml(K8S / "base" / "deployment.yaml")[0]["spec"]


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
    secrets = load_yaml(K8S / "base" / "secret.example.yaml")
    for obj in secrets:
        assert all("REPLACE-ME" in value for value in obj["stringData"].values())
    # never rendered: real credentials are created out of band
    for overlay in OVERLAYS:
        assert not any(obj["kind"] == "Secret" for obj in k8s(overlay).values()), overlay
    names = {s["metadata"]["name"] for s in secrets}
    referenced = {v["secret"]["secretName"] for v in deployment()["volumes"] if "secret" in v}
    referenced |= {
        e["valueFrom"]["secretKeyRef"]["name"]
        for e in deployment()["containers"][0]["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert referenced == names


def test_autoscalers_stay_within_the_ticks_partition_count() -> None:
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "streamcast"}
    hpa = k8s("prod-hpa")["HorizontalPodAutoscaler/streamcast"]["spec"]
    assert hpa["scaleTargetRef"] == target
    assert hpa["maxReplicas"] <= _partitions()
    scaled = k8s("prod")["ScaledObject/streamcast"]["spec"]
    assert scaled["scaleTargetRef"] == target
    assert scaled["maxReplicaCount"] <= _partitions()
    assert scaled["minReplicaCount"] == hpa["minReplicas"] >= 2  # one pod's loss leaves one
    # KEDA's own cap: the scaler never asks for more replicas than partitions
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "kafka" and trigger["metadata"]["allowIdleConsumers"] == "false"
    # KEDA names its HPA; the same behaviour (slow, a pod at a time) as the CPU one
    keda_hpa = scaled["advanced"]["horizontalPodAutoscalerConfig"]
    assert keda_hpa["behavior"] == hpa["behavior"]
    assert "sit idle" in (K8S / "components" / "keda" / "scaledobject.yaml").read_text()
    assert "sit idle" in (K8S / "components" / "hpa" / "hpa.yaml").read_text()


def test_keda_reads_the_lag_of_the_services_group_and_topic_with_its_credentials() -> None:
    """KEDA's Kafka scaler takes brokers, group and topic from the Deployment's own
    environment, and the same Secrets the service uses, so they cannot disagree."""
    (trigger,) = k8s("prod")["ScaledObject/streamcast"]["spec"]["triggers"]
    meta = trigger["metadata"]
    config = configmap("prod")
    assert meta["bootstrapServersFromEnv"] == "STREAMCAST_BOOTSTRAP_SERVERS"
    assert meta["consumerGroupFromEnv"] == "STREAMCAST_GROUP_ID"
    assert meta["topicFromEnv"] == "STREAMCAST_TOPICS__TICKS"
    for key in ("bootstrapServersFromEnv", "consumerGroupFromEnv", "topicFromEnv"):
        assert meta[key] in config, key
    assert meta["offsetResetPolicy"] == Settings().auto_offset_reset
    assert int(meta["lagThreshold"]) > 0
    assert config["STREAMCAST_SECURITY_PROTOCOL"] == "SASL_SSL" and meta["tls"] == "enable"
    keda_sasl = {"SCRAM-SHA-512": "scram_sha512", "SCRAM-SHA-256": "scram_sha256"}
    assert meta["sasl"] == keda_sasl[config["STREAMCAST_SASL_MECHANISM"]]
    auth_name = trigger["authenticationRef"]["name"]
    refs = k8s("prod")[f"TriggerAuthentication/{auth_name}"]["spec"]["secretTargetRef"]
    by_parameter = {ref["parameter"]: (ref["name"], ref["key"]) for ref in refs}
    env = {e["name"]: e for e in deployment("prod")["containers"][0]["env"]}
    for parameter, var in (("username", "USERNAME"), ("password", "PASSWORD")):
        secret = env[f"STREAMCAST_SASL_{var}"]["valueFrom"]["secretKeyRef"]
        assert by_parameter[parameter] == (secret["name"], secret["key"])
    tls = next(v for v in deployment("prod")["volumes"] if v["name"] == "kafka-tls")
    cafile = PurePosixPath(config["STREAMCAST_SSL_CAFILE"])
    assert by_parameter["ca"] == (tls["secret"]["secretName"], cafile.name)


def _render_with(tmp_path: Path, var: str, value: str) -> dict[str, dict[str, Any]]:
    """The prod overlay rendered from a copy of deploy/kubernetes with one setting changed."""
    copy = tmp_path / "kubernetes"
    shutil.copytree(K8S, copy)
    env = copy / "base" / "streamcast.env"
    text, count = re.subn(rf"^{var}=.*$", f"{var}={value}", env.read_text(), flags=re.M)
    assert count == 1, var
    env.write_text(text)
    return by_name(kustomize(copy / "overlays" / "prod"))


def test_a_settings_change_rolls_the_pods(tmp_path: Path) -> None:
    """The ConfigMap is generated with a hash of its content in its name, and the pod
    templates refer to that name: a changed value is a changed template, so a rollout."""
    before = k8s("prod")
    after = _render_with(tmp_path, "STREAMCAST_BATCH_MAX_RECORDS", "2500")
    assert after["ConfigMap/streamcast-config"]["data"]["STREAMCAST_BATCH_MAX_RECORDS"] == "2500"
    old_name = before["ConfigMap/streamcast-config"]["metadata"]["name"]
    new_name = after["ConfigMap/streamcast-config"]["metadata"]["name"]
    assert old_name != new_name
    for key in ("Deployment/streamcast", "CronJob/streamcast-retrain"):
        old, new = json.dumps(before[key]), json.dumps(after[key])
        assert old_name in old and new_name in new, key
        assert old.replace(old_name, new_name) == new, key  # nothing else changed
    same = _render_with(tmp_path / "again", "STREAMCAST_BATCH_MAX_RECORDS", "5000")
    assert same["Deployment/streamcast"] == before["Deployment/streamcast"]  # no spurious roll


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy_admits_prometheus_and_reaches_kafka_and_dns(overlay: str) -> None:
    policy = k8s(overlay)["NetworkPolicy/streamcast"]["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}  # everything else denied
    selector = policy["podSelector"]["matchLabels"].items()
    forecaster = k8s(overlay)["Deployment/streamcast"]["spec"]["template"]["metadata"]
    retrain = k8s(overlay)["CronJob/streamcast-retrain"]["spec"]["jobTemplate"]["spec"]
    assert selector <= forecaster["labels"].items()
    assert selector <= retrain["template"]["metadata"]["labels"].items()
    (ingress,) = policy["ingress"]
    port_names = {p["name"] for p in deployment(overlay)["containers"][0]["ports"]}
    assert [p["port"] for p in ingress["ports"]] == ["metrics"] and "metrics" in port_names
    assert ingress["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }
    egress_ports = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
    assert {(53, "UDP"), (53, "TCP")} <= egress_ports
    for server in configmap(overlay)["STREAMCAST_BOOTSTRAP_SERVERS"].split(","):
        assert (int(server.rsplit(":", 1)[1]), "TCP") in egress_ports, server


def test_service_monitor_scrapes_the_pods_under_the_job_the_alerts_name() -> None:
    for overlay in ("prod", "prod-hpa"):
        objects = k8s(overlay)
        monitor = objects["ServiceMonitor/streamcast"]["spec"]
        service = objects["Service/streamcast-metrics"]
        assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        (endpoint,) = monitor["endpoints"]
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
        assert endpoint["path"] == "/metrics"
        job = service["metadata"]["labels"][monitor["jobLabel"]]
        rules = objects["PrometheusRule/streamcast"]["spec"]["groups"]
        exprs = [rule["expr"] for group in rules for rule in group["rules"]]
        assert f'up{{job="{job}"}}' in " ".join(exprs)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_settings_parse(
    overlay: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for var in [v for v in os.environ if v.startswith("STREAMCAST_")]:
        monkeypatch.delenv(var)
    for var, value in configmap(overlay).items():
        monkeypatch.setenv(var, value)
    if "STREAMCAST_SSL_CAFILE" in configmap(overlay):
        ca = tmp_path / "ca.crt"
        ca.write_text("placeholder")
        monkeypatch.setenv("STREAMCAST_SSL_CAFILE", str(ca))  # the Secret's mount, stood in
    monkeypatch.setenv("STREAMCAST_SASL_USERNAME", "user")
    monkeypatch.setenv("STREAMCAST_SASL_PASSWORD", "secret")
    settings = load_settings(env_file=None)
    expected = configmap(overlay).get("STREAMCAST_SECURITY_PROTOCOL", "PLAINTEXT")
    assert settings.security_protocol == expected
    assert settings.http_port == int(configmap(overlay)["STREAMCAST_HTTP_PORT"])


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
    # the training image exports (it has the streamcast CLI and pyarrow, which the
    # service image leaves out) and trains
    assert export["image"] == train["image"]
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
    generated = k8s()["ConfigMap/streamcast-train-config"]["metadata"]["name"]
    assert config == generated


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
    assert export["envFrom"] == deployment()["containers"][0]["envFrom"]
    env = {e["name"]: e for e in export["env"]}
    service_env = {e["name"]: e for e in deployment()["containers"][0]["env"]}
    for var in ("STREAMCAST_SASL_USERNAME", "STREAMCAST_SASL_PASSWORD"):
        assert env[var] == service_env[var]
    tls = _mount(export, "kafka-tls")
    assert configmap()["STREAMCAST_SSL_CAFILE"].startswith(tls + "/")
