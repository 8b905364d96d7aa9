"""A poison record never becomes a crash loop, in either processing guarantee (real broker).

Two kinds are mixed into a clean stream:

- a tick whose key is the JSON escape ``"\\ud800"``: valid JSON, but no UTF-8 encoding
  exists, so every output keyed by it failed to encode and killed ``serve`` on every
  restart; it is now rejected at decode (``invalid_key``);
- ticks of a key that makes the pipeline raise (a bug injected into the pipeline for
  that key only): they are isolated and dead-lettered ``internal_error`` with the
  exception text, and the service goes on.

Every other forecast must equal a clean run's, exactly once (read_committed), and the
service must still be running and ready.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from streamcast.config import load_settings
from streamcast.core.codec import HEADER_DETAIL, HEADER_REASON
from streamcast.core.isolation import Attempt
from streamcast.core.pipeline import Pipeline
from streamcast.core.records import TickBatch
from streamcast.service.app import Service
from tests.support.kafka import create_topics, unique_topic
from tests.support.models import make_tiny_model
from tests.support.service import (
    Message,
    consume,
    expected_forecasts,
    forecasts_by_key,
    produce,
    recent_hour,
    tick,
)

pytestmark = pytest.mark.kafka

INTERVAL_S = 60
INTERVALS = 20
SURROGATE_BODY = b'{"key": "\\ud800", "ts": %d, "value": 1.5}'


def _streams(start: int) -> tuple[list[Message], list[Message]]:
    """(clean ticks, the same with the poison key and a surrogate-key tick mixed in)."""
    clean: list[Message] = []
    mixed: list[Message] = []
    for t in range(INTERVALS):
        ts = start + t * INTERVAL_S + 7
        for k in range(4):
            key = f"pump-{k}"
            good = (key.encode(), tick(key, ts, float(10 * k + t % 5)))
            clean.append(good)
            mixed.append(good)
        mixed.append((b"poison", tick("poison", ts, 1.0)))
        if t == INTERVALS // 2:
            mixed.append((None, SURROGATE_BODY % ts))
    return clean, mixed


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_poison_records_are_dead_lettered_and_the_stream_goes_on(
    bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, guarantee: str
) -> None:
    real_advance = Pipeline._advance

    def buggy(
        self: Pipeline, batch: TickBatch, rows: npt.NDArray[np.int64], now_s: float
    ) -> Attempt:
        attempt = real_advance(self, batch, rows, now_s)
        if "poison" in batch.keys:
            raise ArithmeticError("injected: a bug only the poison key triggers")
        return attempt

    monkeypatch.setattr(Pipeline, "_advance", buggy)
    prefix = unique_topic("poison")
    model = make_tiny_model(tmp_path / "tiny.onnx", window=4, horizon=3, interval_s=INTERVAL_S)
    settings = load_settings(
        {
            "bootstrap_servers": bootstrap,
            "model_path": model,
            "group_id": f"{prefix}-group",
            "processing_guarantee": guarantee,
            "topics": {
                "ticks": f"{prefix}-ticks",
                "forecasts": f"{prefix}-forecasts",
                "alerts": f"{prefix}-alerts",
                "dead_letter": f"{prefix}-dlq",
                "state_changelog": f"{prefix}-state",
            },
            "batch_max_records": 50,
            "batch_max_wait_ms": 20,
            "http_host": "127.0.0.1",
            "http_port": 0,
        },
        env_file=None,
    )
    await create_topics(bootstrap, [settings.topics.ticks], partitions=2)
    clean, mixed = _streams(recent_hour())
    await produce(bootstrap, settings.topics.ticks, mixed)
    by_key: dict[bytes | None, list[Message]] = {}
    for message in clean:
        by_key.setdefault(message[0], []).append(message)
    expected = expected_forecasts(model, list(by_key.values()))

    service = Service(settings)
    async with asyncio.TaskGroup() as tasks:
        running = tasks.create_task(service.run())
        dead = await consume(bootstrap, settings.topics.dead_letter, until=INTERVALS + 1)
        forecasts = await consume(
            bootstrap, settings.topics.forecasts, until=len(expected), idle_s=1.0
        )
        assert not running.done(), "the service must still be running"
        ready, why = service.readiness()
        assert ready, why
        isolated = service.metrics.internal_errors._value.get()
        service.request_stop()

    got = forecasts_by_key(forecasts)
    assert all(len(v) == 1 for v in got.values()), "every forecast exactly once"
    assert set(got) == set(expected)
    for origin, values in expected.items():
        np.testing.assert_allclose(got[origin][0], values, rtol=1e-6, err_msg=str(origin))
    reasons = Counter(dict(r.headers)[HEADER_REASON].decode() for r in dead)
    assert reasons == {"internal_error": INTERVALS, "invalid_key": 1}
    details = {dict(r.headers)[HEADER_DETAIL].decode() for r in dead if r.key == b"poison"}
    assert all("ArithmeticError: injected" in d for d in details)
    assert isolated > 0
