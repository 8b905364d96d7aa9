"""SIGTERM while the broker is unreachable: a clean, bounded exit, never a traceback.

Two moments: while connecting at start-up (nobody listens on the bootstrap port, or a
host accepts connections and never answers), and mid-run after the (dedicated) broker
was stopped under a connected service, in both processing modes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.support.kafka import create_topics, kafka_local, unique_topic
from tests.support.models import make_tiny_model
from tests.support.service import ServiceProcess, service_env

pytestmark = pytest.mark.kafka

#: the drain bound the tests configure; close gets its own share of it
DRAIN_S = 4.0


async def _stop_and_check(service: ServiceProcess, log_path: Path) -> float:
    """SIGTERM ``service``; assert a clean exit within a hang-detecting bound and return
    how long the service took from the signal to its last line, by its own log clock.

    The product's promise is on the service's clock: the test's wall clock also counts
    signal delivery and interpreter exit, which on a loaded 2-core machine (load 15)
    added 1.6 s to a 4.0 s drain."""
    began = time.monotonic()
    rc = await asyncio.to_thread(service.stop, signal.SIGTERM, 3 * DRAIN_S + 10)
    wall = time.monotonic() - began
    log = await asyncio.to_thread(log_path.read_text)
    assert rc == 0, f"exit status {rc}:\n{log[-3000:]}"
    assert "Traceback" not in log, log[-3000:]
    assert "CancelledError" not in log, log[-3000:]
    assert '"msg":"stop requested' in log, "the stop is logged"
    assert wall < 3 * DRAIN_S, f"the process took {wall:.1f}s to exit after SIGTERM"
    return _since_signal(log)


def _since_signal(log: str) -> float:
    """Seconds from the ``signal received`` line to the service's last line."""
    signalled: float | None = None
    last = 0.0
    for line in log.splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            last = datetime.fromisoformat(entry["ts"]).timestamp()
            if entry.get("msg") == "signal received":
                signalled = last
    assert signalled is not None, f"no 'signal received' line:\n{log[-3000:]}"
    return last - signalled


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
