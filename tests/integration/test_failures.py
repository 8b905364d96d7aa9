"""What an operator sees when something is wrong, through a real broker and a real
``streamcast serve`` process: the failure is visible (log line, readiness, metric, exit
status) and state is never lost silently.

- The state changelog deleted mid-run: the service ends with one line instead of
  stalling and carrying on from committed offsets with empty state; a restart refuses to
  start until told to rebuild state by warm-up.
- A broker outage: ``/readyz`` turns 503 within ``ready_stale_s`` and probe errors are
  counted (aiokafka's fetcher alone retries silently); it is ready again after.
- ``auto_offset_reset=latest``: a new group forecasts only what arrives after it starts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tests.support.kafka import create_topics, kafka_local, unique_topic
from tests.support.models import make_tiny_model
from tests.support.service import (
    Message,
    ServiceProcess,
    consume,
    produce,
    recent_hour,
    service_env,
    tick,
)

pytestmark = pytest.mark.kafka

KEYS = 4
INTERVAL_S = 60


def _interval(start: int, t: int) -> list[Message]:
    return [
        (f"k{k}".encode(), tick(f"k{k}", start + t * INTERVAL_S + 3, float(10 * k + t % 7)))
        for k in range(KEYS)
    ]


async def _wait_until(condition: Callable[[], bool], timeout_s: float) -> float:
    """Seconds until ``condition()`` held (polled); fails the test after ``timeout_s``."""
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        if condition():
            return time.monotonic() - began
        await asyncio.sleep(0.2)
    raise AssertionError(f"not within {timeout_s:.0f}s")


async def _exit_of(service: ServiceProcess, timeout_s: float) -> tuple[int, float]:
    """Wait for a launched service to exit: ``(exit status, seconds it took)``."""
    process = service.process
    assert process is not None
    seconds = await _wait_until(lambda: process.poll() is not None, timeout_s)
    return int(process.returncode), seconds


async def _delete_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()


async def test_a_deleted_changelog_stops_the_service_and_a_restart_refuses_to_guess(
    bootstrap: str, tmp_path: Path
) -> None:
    prefix = unique_topic("lost")
    model = make_tiny_model(tmp_path / "tiny.onnx", window=3, horizon=2, interval_s=INTERVAL_S)
    env = service_env(bootstrap, model, prefix, request_timeout_ms=3000)
    ticks = env["STREAMCAST_TOPICS__TICKS"]
    await create_topics(bootstrap, [ticks], partitions=2)
    start = recent_hour()
    service = ServiceProcess(env, tmp_path / "first.log")
    try:
        service.start()
        for t in range(8):
            await produce(bootstrap, ticks, _interval(start, t))
        await consume(bootstrap, env["STREAMCAST_TOPICS__FORECASTS"], until=KEYS * 4)
        await _delete_topic(bootstrap, env["STREAMCAST_TOPICS__STATE_CHANGELOG"])
        await asyncio.sleep(1.0)
        for t in range(8, 12):
            await produce(bootstrap, ticks, _interval(start, t))
        status, stopped_s = await _exit_of(service, 90)
    finally:
        service.kill()
    assert status != 0, "it must not carry on with its state gone"
    assert "was deleted while the service ran" in (tmp_path / "first.log").read_text()
    assert stopped_s < 60

    again = ServiceProcess(env, tmp_path / "second.log")
    try:
        again.launch()
        refused, _ = await _exit_of(again, 60)
    finally:
        again.kill()
    lines = [line for line in (tmp_path / "second.log").read_text().splitlines() if line]
    assert refused == 2
    assert lines[-1].startswith("error: state changelog") and "ALLOW_STATE_REBUILD" in lines[-1]

    rebuilt = ServiceProcess(
        {**env, "STREAMCAST_ALLOW_STATE_REBUILD": "true"}, tmp_path / "third.log"
    )
    try:
        rebuilt.start()
        assert rebuilt.probe("/readyz")[0] == 200
        assert rebuilt.stop() == 0
    finally:
        rebuilt.kill()
    assert "keys warm up again" in (tmp_path / "third.log").read_text()


async def test_a_broker_outage_makes_the_instance_not_ready_within_ready_stale_s(
    tmp_path: Path,
) -> None:
    broker = kafka_local.LocalBroker(
        kafka_local.BrokerConfig(port=kafka_local.free_port(), data_dir=tmp_path / "kafka")
    )
    bootstrap = broker.start(timeout=90)
    model = make_tiny_model(tmp_path / "tiny.onnx", window=3, horizon=2, interval_s=INTERVAL_S)
    env = service_env(bootstrap, model, unique_topic("outage"), ready_stale_s=3)
    await create_topics(bootstrap, [env["STREAMCAST_TOPICS__TICKS"]], partitions=2)
    service = ServiceProcess(env, tmp_path / "service.log")
    try:
        service.start()
        await produce(bootstrap, env["STREAMCAST_TOPICS__TICKS"], _interval(recent_hour(), 0))
        assert service.probe("/readyz")[0] == 200
        await asyncio.to_thread(broker.stop)
        seen_s = await _wait_until(lambda: service.probe("/readyz")[0] == 503, 30)
        _, reason = service.probe("/readyz")
        probe_errors = 'streamcast_broker_errors_total{op="probe"}'
        counted_s = await _wait_until(lambda: service.metric(probe_errors) > 0, 10)
        await asyncio.to_thread(broker.start, timeout=90)
        back_s = await _wait_until(lambda: service.probe("/readyz")[0] == 200, 60)
        assert service.stop() == 0
    finally:
        service.kill()
        broker.stop()
    assert seen_s < 3 + 5, f"not ready only after {seen_s:.1f}s (ready_stale_s=3)"
    assert b"broker has not answered" in reason
    assert seen_s + counted_s < 3 + 8, "a failed probe is counted too"
    assert back_s < 60


async def test_auto_offset_reset_latest_forecasts_only_what_arrives_after_start(
    bootstrap: str, tmp_path: Path
) -> None:
    prefix = unique_topic("latest")
    model = make_tiny_model(tmp_path / "tiny.onnx", window=3, horizon=2, interval_s=INTERVAL_S)
    env = service_env(bootstrap, model, prefix, auto_offset_reset="latest")
    ticks = env["STREAMCAST_TOPICS__TICKS"]
    await create_topics(bootstrap, [ticks], partitions=2)
    start = recent_hour()
    for t in range(10):  # history the new group must not forecast
        await produce(bootstrap, ticks, _interval(start, t))
    service = ServiceProcess(env, tmp_path / "service.log")
    try:
        service.start()
        await asyncio.sleep(1.0)
        for t in range(10, 16):
            await produce(bootstrap, ticks, _interval(start, t))
        # window 3: intervals 10-12 warm up, 12-14 are forecast once 13-15 close them
        records = await consume(
            bootstrap, env["STREAMCAST_TOPICS__FORECASTS"], until=3 * KEYS, idle_s=1.0
        )
        assert service.stop() == 0
    finally:
        service.kill()
    origins = {orjson.loads(r.value or b"")["ts"] for r in records}
    first_new = np.datetime64(start + 10 * INTERVAL_S, "s")
    assert origins and all(np.datetime64(o.rstrip("Z")) >= first_new for o in origins)
    assert len(records) == 3 * KEYS
