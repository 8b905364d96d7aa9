"""SIGTERM while the broker is unreachable: a clean, bounded exit, never a traceback.

Two moments: while connecting at start-up (nobody listens on the bootstrap port, or a
host accepts connections and never answers), and mid-run after the (dedicated) broker
was stopped under a connected service, in both processing modes.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.support.kafka import create_topics, kafka_local, unique_topic
from tests.support.models import make_tiny_model
from tests.support.service import ServiceProcess, service_env

pytestmark = pytest.mark.kafka

#: the drain bound the tests configure; close gets its own share of it
DRAIN_S = 4.0


async def _stop_and_check(service: ServiceProcess, log_path: Path) -> float:
    """SIGTERM ``service``; assert a clean exit and return how long it took."""
    began = time.monotonic()
    rc = await asyncio.to_thread(service.stop, signal.SIGTERM, 3 * DRAIN_S + 10)
    took = time.monotonic() - began
    log = await asyncio.to_thread(log_path.read_text)
    assert rc == 0, f"exit status {rc}:\n{log[-3000:]}"
    assert "Traceback" not in log, log[-3000:]
    assert "CancelledError" not in log, log[-3000:]
    assert '"msg":"stop requested' in log, "the stop is logged"
    return took


@pytest.mark.parametrize("broker", ["refusing", "silent"])
async def test_sigterm_while_connecting_exits_cleanly(tmp_path: Path, broker: str) -> None:
    """``refusing``: nobody listens, every attempt fails at once and the service sits in
    its backoff. ``silent``: a host accepts TCP connections and never answers (a hung
    broker, a firewall that drops), so one attempt would last aiokafka's 40 s timeout."""
    model = make_tiny_model(tmp_path / "tiny.onnx", levels=(0.9,))
    with socket.socket() as silent:
        if broker == "silent":
            silent.bind(("127.0.0.1", 0))
            silent.listen(64)  # the kernel completes handshakes; nobody ever reads
            address = f"127.0.0.1:{silent.getsockname()[1]}"
        else:
            address = f"127.0.0.1:{kafka_local.free_port()}"
        env = service_env(
            address, model, unique_topic("down"), retry_max_backoff_s=1, drain_timeout_s=DRAIN_S
        )
        log_path = tmp_path / "service.log"
        service = ServiceProcess(env, log_path)
        try:
            service.launch()
            if broker == "silent":
                service.wait_for_log("http endpoints listening")
                await asyncio.sleep(2)  # well inside the first connect attempt
            else:
                service.wait_for_log('"retry_in_s"', count=2)
            took = await _stop_and_check(service, log_path)
        finally:
            service.kill()
    assert took < DRAIN_S, f"stopping while connecting took {took:.1f}s"


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_sigterm_after_the_broker_died_mid_run_exits_cleanly(
    tmp_path: Path, guarantee: str
) -> None:
    local = kafka_local.LocalBroker(
        kafka_local.BrokerConfig(port=kafka_local.free_port(), data_dir=tmp_path / "kafka")
    )
    bootstrap = await asyncio.to_thread(local.start, timeout=90)
    model = make_tiny_model(tmp_path / "tiny.onnx", levels=(0.9,))
    env = service_env(
        bootstrap,
        model,
        unique_topic("died"),
        retry_max_backoff_s=1,
        drain_timeout_s=DRAIN_S,
        processing_guarantee=guarantee,
    )
    log_path = tmp_path / "service.log"
    service = ServiceProcess(env, log_path)
    try:
        await create_topics(bootstrap, [env["STREAMCAST_TOPICS__TICKS"]], partitions=2)
        service.start()
        assert await asyncio.to_thread(local.stop)
        await asyncio.sleep(3)  # the clients notice: fetches and heartbeats now fail
        assert service.process is not None and service.process.poll() is None
        took = await _stop_and_check(service, log_path)
    finally:
        service.kill()
        await asyncio.to_thread(local.stop)
    assert took < DRAIN_S + 1, f"stopping with the broker gone took {took:.1f}s"
