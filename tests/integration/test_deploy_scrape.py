"""Every metric the deployment files query is one the service really exports.

A real ``streamcast serve`` (subprocess, real broker) is scraped after it has forecast,
dead-lettered a tick and hot-swapped its model; every metric name in the alert rules
(``deploy/prometheus/alerts.yml``), the Prometheus Operator's copy of them (the
``PrometheusRule``) and the Grafana dashboard must be in that scrape, except the few that
other exporters provide (``EXTERNAL_METRICS``: Prometheus' ``up``, a Kafka exporter's
consumer-group offsets). The scrape also shows the process metrics and a
``streamcast_build_info`` that follows the swap.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.kafka import create_topics, unique_topic
from tests.support.models import make_tiny_model
from tests.support.service import (
    ServiceProcess,
    consume,
    produce,
    recent_hour,
    service_env,
    tick,
)
from tests.unit.deploy_files import (
    ANY_METRIC,
    DEPLOY,
    EXTERNAL_METRICS,
    K8S,
    load_yaml,
    queries_in,
)

pytestmark = pytest.mark.kafka

#: the sample names each metric type exposes (the text format of prometheus-client)
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}


def _scraped_names(body: bytes) -> set[str]:
    """Every sample name the scrape declares (a family with no labelled child yet, such as
    ``streamcast_broker_errors_total`` before the first error, still declares its type)."""
    return {
        family.name + suffix
        for family in text_string_to_metric_families(body.decode())
        for suffix in SUFFIXES.get(family.type, ("",))
    }


def _queried_names() -> dict[str, set[str]]:
    """Metric names in each file that queries the service, by file."""
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "streamcast.json").read_text())
    templating = [v.get("query", "") for v in dashboard.get("templating", {}).get("list", [])]
    rule = load_yaml(K8S / "components" / "monitoring" / "prometheusrule.yaml")[0]
    sources = {
        "alerts.yml": queries_in(load_yaml(DEPLOY / "prometheus" / "alerts.yml")[0]),
        "prometheusrule.yaml": queries_in(rule["spec"]),
        "streamcast.json": queries_in(dashboard["panels"]) + [str(q) for q in templating],
    }
    return {
        name: {m for q in exprs for m in ANY_METRIC.findall(q)} for name, exprs in sources.items()
    }


def _publish(model: Path, directory: Path, stamp: str) -> None:
    """Into a models directory the way the retrain job does: hidden name, then a rename."""
    tmp = directory / f".{stamp}.onnx.tmp"
    tmp.write_bytes(model.read_bytes())
    tmp.rename(directory / f"{stamp}.onnx")


async def test_every_queried_metric_is_in_a_live_scrape(bootstrap: str, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    first = make_tiny_model(tmp_path / "v1.onnx", window=4, horizon=3, interval_s=60, version="1")
    _publish(first, models, "20261201T000000Z")
    prefix = unique_topic("scrape")
    env = service_env(bootstrap, models, prefix, model_poll_s=0.5)
    await create_topics(bootstrap, [env["STREAMCAST_TOPICS__TICKS"]], partitions=2)
    start = recent_hour()
    messages = [
        (f"k{k}".encode(), tick(f"k{k}", start + t * 60 + 30, float(t + k)))
        for t in range(12)
        for k in range(3)
    ]
    messages.append((b"k0", b"not json"))  # a dead letter: the reason-labelled series
    await produce(bootstrap, env["STREAMCAST_TOPICS__TICKS"], messages)

    service = ServiceProcess(env, tmp_path / "service.log")
    try:
        service.start()
        await consume(bootstrap, env["STREAMCAST_TOPICS__FORECASTS"], until=3 * 7, timeout_s=60)
        await consume(bootstrap, env["STREAMCAST_TOPICS__DEAD_LETTER"], until=1, timeout_s=30)
        assert service.metric("streamcast_build_info", model_version="1") == 1

        second = make_tiny_model(
            tmp_path / "v2.onnx", window=4, horizon=3, interval_s=60, version="2"
        )
        _publish(second, models, "20261202T000000Z")
        service.wait_for_log("model swapped", timeout_s=60)
        body = service.probe("/metrics")[1]
    finally:
        service.kill()

    scraped = _scraped_names(body)
    for source, names in _queried_names().items():
        assert names, source
        missing = names - scraped - EXTERNAL_METRICS.keys()
        assert not missing, f"{source} queries metrics the service does not export: {missing}"
    text = body.decode()
    # the hot swap replaced the one build_info series (a pod's model is always visible)
    build = [line for line in text.splitlines() if line.startswith("streamcast_build_info{")]
    assert len(build) == 1 and 'model_name="tiny"' in build[0], build
    assert 'model_version="2"' in build[0]
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["process_resident_memory_bytes"].samples[0].value > 10e6
    assert families["process_start_time_seconds"].samples[0].value > start
    assert families["process_cpu_seconds"].samples[0].value > 0
    assert families["streamcast_dead_letters"].samples, "the bad tick was dead-lettered"
