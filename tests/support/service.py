"""Helpers for running ``streamcast serve`` against the real broker in tests and benchmarks.

- :class:`ServiceProcess` runs the service as a genuine subprocess (``python -m
  streamcast serve``) configured only through ``STREAMCAST_*`` environment variables,
  waits for ``/readyz`` and stops it with real signals.
- :func:`produce` / :func:`consume` move bytes through the broker with aiokafka.
- :func:`expected_forecasts` runs the same decoder and pipeline in-process over the same
  messages: the reference the service's output is checked against.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from streamcast.core.codec import TickDecoder
from streamcast.core.model import OnnxStepModel
from streamcast.core.pipeline import Pipeline
from tests.support.kafka import REPO, kafka_local

Message = tuple[bytes | None, bytes | None]
ForecastKey = tuple[str, str]  # (series key, origin ISO timestamp)


def tick(key: str, ts_s: float, value: float, **extra: float) -> bytes:
    """A valid tick body (epoch seconds timestamp)."""
    return orjson.dumps({"key": key, "ts": ts_s, "value": value, **extra})


def recent_hour(days_back: int = 2) -> int:
    """An hour boundary ``days_back`` days ago: event times the decoder accepts as sane."""
    return (int(time.time()) // 3600 - 24 * days_back) * 3600


async def produce(
    bootstrap: str, topic: str, messages: Sequence[Message], compression_type: str | None = None
) -> list[tuple[int, int]]:
    """Send ``(key, value)`` messages in order (record batches compressed with
    ``compression_type``); ``(partition, offset)`` of each once acked."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        compression_type=compression_type,
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in messages]
        acks = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [(int(a.partition), int(a.offset)) for a in acks]


def reader(bootstrap: str, topic: str) -> AIOKafkaConsumer:
    """A group-less read_committed consumer of ``topic`` from its beginning."""
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        enable_auto_commit=False,
    )


async def read_until_idle(
    bootstrap: str, topic: str, idle_s: float = 2.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every committed record of ``topic``: read until none arrived for ``idle_s``."""
    consumer = reader(bootstrap, topic)
    await consumer.start()
    out: list[ConsumerRecord[bytes, bytes]] = []
    last = time.monotonic()
    try:
        while time.monotonic() - last < idle_s:
            for messages in (await consumer.getmany(timeout_ms=300)).values():
                last = time.monotonic()
                out.extend(messages)
    finally:
        await consumer.stop()
    return out


async def consume(
    bootstrap: str, topic: str, *, until: int, timeout_s: float = 60.0, idle_s: float = 0.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read ``topic`` from the beginning (read_committed, no group) until ``until`` records
    arrived (then keep going for ``idle_s`` to catch extras) or ``timeout_s`` passed."""
    consumer = reader(bootstrap, topic)
    await consumer.start()
    out: list[ConsumerRecord[bytes, bytes]] = []
    deadline = time.monotonic() + timeout_s
    reached: float | None = None
    try:
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            out += [m for part in batches.values() for m in part]
            if len(out) >= until:
                reached = reached or time.monotonic()
                if time.monotonic() - reached >= idle_s:
                    break
    finally:
        await consumer.stop()
    return out


def forecasts_by_key(
    records: Sequence[ConsumerRecord[bytes, bytes]],
) -> dict[ForecastKey, list[list[float]]]:
    """Forecast values grouped by ``(key, origin)``; more than one entry means duplicates."""
    out: dict[ForecastKey, list[list[float]]] = {}
    for record in records:
        doc = orjson.loads(record.value or b"")
        assert record.key == doc["key"].encode(), "Kafka key must be the series key"
        out.setdefault((doc["key"], doc["ts"]), []).append(doc["values"])
    return out


def expected_forecasts(
    model_path: Path,
    partitions: Sequence[Sequence[Message]],
    *,
    max_message_bytes: int = 64 * 1024,
    now_s: float | None = None,
) -> dict[ForecastKey, list[float]]:
    """What a fresh pipeline forecasts for each partition's messages, in order.

    Keys never cross partitions (Kafka key = series key), so each partition's sequence
    can be run on its own; one fresh pipeline per call models one service lifetime.
    """
    return expected_outputs(
        model_path, partitions, max_message_bytes=max_message_bytes, now_s=now_s
    )[0]


#: one alert as the tests compare them: key, interval (ISO), kind, direction
AlertKey = tuple[str, str, str, str]


def expected_outputs(
    model_path: Path,
    partitions: Sequence[Sequence[Message]],
    *,
    max_message_bytes: int = 64 * 1024,
    now_s: float | None = None,
    batch_size: int | None = None,
) -> tuple[dict[ForecastKey, list[float]], list[AlertKey]]:
    """:func:`expected_forecasts` and the drift alerts the same pipeline raises, in order
    (per partition; ``batch_size`` messages per pipeline call, default all at once)."""
    model = OnnxStepModel.load(model_path)
    meta = model.meta
    decoder = TickDecoder(extra_fields=meta.features.extra_names, max_bytes=max_message_bytes)
    pipeline = Pipeline(model, aggregation=meta.aggregation, max_gap=meta.gap.max_gap)
    out: dict[ForecastKey, list[float]] = {}
    alerts: list[AlertKey] = []
    for messages in partitions:
        step = batch_size or max(1, len(messages))
        for first in range(0, len(messages), step):
            batch, _ = decoder.decode(list(messages[first : first + step]))
            result = pipeline.process(batch, time.time() if now_s is None else now_s)
            fc = result.forecasts
            origins = np.datetime_as_string(fc.origin_ts.astype("datetime64[s]"), unit="s")
            for i, key in enumerate(fc.keys):
                out[(key, str(origins[i]) + "Z")] = fc.values[i].tolist()
            if result.alerts is not None:
                a = result.alerts
                stamps = np.datetime_as_string(a.ts.astype("datetime64[s]"), unit="s")
                alerts += [
                    (key, str(stamps[i]) + "Z", a.kind[i], a.direction[i])
                    for i, key in enumerate(a.keys)
                ]
    return out, alerts


def alerts_of(records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[AlertKey]:
    """The alerts topic's records as :data:`AlertKey`, in topic order."""
    out: list[AlertKey] = []
    for record in records:
        doc = orjson.loads(record.value or b"")
        assert record.key == doc["key"].encode(), "Kafka key must be the series key"
        out.append((doc["key"], doc["ts"], doc["kind"], doc["direction"]))
    return out


@dataclass
class ServiceProcess:
    """``python -m streamcast serve`` as a real subprocess, configured by environment."""

    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def http_port(self) -> int:
        return int(self.env["STREAMCAST_HTTP_PORT"])

    def start(self, ready_timeout_s: float = 60.0) -> None:
        """Start and wait until ``/readyz`` answers 200."""
        self.launch()
        assert self.process is not None
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"service exited early:\n{self.log_path.read_text()[-3000:]}")
            if self.probe("/readyz")[0] == 200:
                return
            time.sleep(0.2)
        raise RuntimeError(f"service not ready:\n{self.log_path.read_text()[-3000:]}")

    def wait_for_log(self, needle: str, count: int = 1, timeout_s: float = 60.0) -> str:
        """Wait until the service's log holds ``needle`` ``count`` times; returns the log."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.log_path.read_text() if self.log_path.exists() else ""
            if text.count(needle) >= count:
                return text
            time.sleep(0.1)
        raise RuntimeError(f"{needle!r} not logged {count}x:\n{text[-3000:]}")

    def launch(self) -> None:
        """Start the subprocess without waiting for anything."""
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("STREAMCAST_")}
        env.update(self.env)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamcast", "serve"],
            env=env,
            cwd=self.log_path.parent,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def probe(self, path: str) -> tuple[int, bytes]:
        """GET an HTTP endpoint of the service: ``(status, body)``; 0 if unreachable."""
        url = f"http://127.0.0.1:{self.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as err:
            return int(err.code), err.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0, b""

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples from ``/metrics`` with these label values (0 when
        absent)."""
        _, body = self.probe("/metrics")
        total = 0.0
        wanted = [f'{k}="{v}"' for k, v in labels.items()]
        for line in body.decode().splitlines():
            if line.startswith((name + " ", name + "{")) and all(w in line for w in wanted):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        """Send ``sig`` and wait for the exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def kill(self) -> None:
        """Make sure the process is gone (test teardown)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def run_cli(
    *argv: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m streamcast ARGV`` with no ``STREAMCAST_*`` variable but those in ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("STREAMCAST_")}
    return subprocess.run(
        [sys.executable, "-m", "streamcast", *argv],
        env={**clean, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def service_env(
    bootstrap: str, model: Path, prefix: str, **extra: str | int | float
) -> dict[str, str]:
    """Environment settings for one test's service: its own topics, group and port."""
    env = {
        "STREAMCAST_BOOTSTRAP_SERVERS": bootstrap,
        "STREAMCAST_MODEL_PATH": str(model),
        "STREAMCAST_GROUP_ID": f"{prefix}-group",
        "STREAMCAST_TOPICS__TICKS": f"{prefix}-ticks",
        "STREAMCAST_TOPICS__FORECASTS": f"{prefix}-forecasts",
        "STREAMCAST_TOPICS__ALERTS": f"{prefix}-alerts",
        "STREAMCAST_TOPICS__DEAD_LETTER": f"{prefix}-dlq",
        "STREAMCAST_TOPICS__STATE_CHANGELOG": f"{prefix}-state",
        "STREAMCAST_HTTP_HOST": "127.0.0.1",
        "STREAMCAST_HTTP_PORT": str(kafka_local.free_port()),
        "STREAMCAST_LOG_FORMAT": "json",
        "STREAMCAST_BATCH_MAX_WAIT_MS": "50",
        "STREAMCAST_DRAIN_TIMEOUT_S": "20",
    }
    env.update({f"STREAMCAST_{k.upper()}": str(v) for k, v in extra.items()})
    return env


__all__ = ["REPO"]
