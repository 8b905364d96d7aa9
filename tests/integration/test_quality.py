"""The quality loop against the real broker: drift alerts published as the pipeline raises
them offline, exactly once through a kill -9 in exactly-once mode, and online interval
coverage computed from the forecasts topic.

The model forecasts each key's level (``mean_forecast``) with a level/scale that does not
move (``alpha`` 1e-12); every key's warm-up window alternates its true mean -/+ its standard
deviation, so its level is its mean and its scale its mean, and with each key's mean 20
standard deviations (``kappa`` 0.05) its unit is its standard deviation: a key's
standardised residuals are exactly its standardised values, and the tests decide the
residuals by the values they send. A level
shift of 3 standard deviations is injected into one key for 48 intervals.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer

from streamcast.core.records import decode_forecast
from tests.support.kafka import create_topics, unique_topic
from tests.support.models import make_tiny_model, normal_reference
from tests.support.service import (
    AlertKey,
    Message,
    ServiceProcess,
    alerts_of,
    consume,
    expected_outputs,
    produce,
    read_until_idle,
    recent_hour,
    service_env,
    tick,
)

pytestmark = pytest.mark.kafka

KEYS = 6
INTERVALS = 560
INTERVAL_S = 60
SHIFTED = "meter-2"
SHIFT = (300, 348)
LEVELS = (0.8, 0.95)


WINDOW = 8


def _truth() -> dict[str, tuple[float, float]]:
    return {f"meter-{k}": (20 * (5.0 + k), 5.0 + k) for k in range(KEYS)}


def _model(tmp_path: Path) -> Path:
    return make_tiny_model(
        tmp_path / "mean.onnx", window=WINDOW, horizon=4, interval_s=INTERVAL_S, alpha=1e-12,
        kappa=0.05, mean_forecast=True, drift=normal_reference(4), levels=LEVELS,
    )  # fmt: skip


def _values(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for key, (loc, scale) in _truth().items():
        v = loc + scale * rng.standard_normal(INTERVALS)
        v[:WINDOW] = loc + scale * np.where(np.arange(WINDOW) % 2 == 0, -1.0, 1.0)
        if key == SHIFTED:
            v[SHIFT[0] : SHIFT[1]] += 3 * scale
        out[key] = v
    return out


def _messages(start: int, values: dict[str, np.ndarray], first: int, last: int) -> list[Message]:
    return [
        (key.encode(), tick(key, start + t * INTERVAL_S + 7, float(v[t])))
        for t in range(first, last)
        for key, v in values.items()
    ]


def _interval(start: int, iso: str) -> int:
    """The interval index of an ISO timestamp of this test's timeline."""
    ts = np.datetime64(iso.rstrip("Z"), "s").astype(np.int64)
    return int((ts - start) // INTERVAL_S)


def _check_reference(alerts: list[AlertKey], start: int) -> int:
    """The offline alerts are the issue's: one error_drift for the shifted key within 24
    intervals of the shift, one recovered after it ended, nothing for the others.
    Returns the alert's delay in intervals."""
    assert [(k, kind, d) for k, _, kind, d in alerts] == [
        (SHIFTED, "error_drift", "up"),
        (SHIFTED, "recovered", "up"),
    ], alerts
    delay = _interval(start, alerts[0][1]) - SHIFT[0] + 1
    assert 1 <= delay <= 24, delay
    assert _interval(start, alerts[1][1]) >= SHIFT[1]
    return delay


async def test_a_shift_gives_one_alert_as_offline_and_coverage_is_nominal_online(
    bootstrap: str, tmp_path: Path
) -> None:
    model = _model(tmp_path)
    prefix = unique_topic("quality")
    env = service_env(bootstrap, model, prefix, batch_max_records=200)
    await create_topics(bootstrap, [env["STREAMCAST_TOPICS__TICKS"]], partitions=2)
    start = recent_hour()
    values = _values()
    messages = _messages(start, values, 0, INTERVALS)
    acks = await produce(bootstrap, env["STREAMCAST_TOPICS__TICKS"], messages)
    parts = [[m for m, (p, _) in zip(messages, acks, strict=True) if p == part] for part in (0, 1)]
    forecasts, expected = expected_outputs(model, parts)
    _check_reference(expected, start)

    service = ServiceProcess(env, tmp_path / "service.log")
    try:
        service.start()
        topic = env["STREAMCAST_TOPICS__FORECASTS"]
        records = await consume(bootstrap, topic, until=len(forecasts))
        alerts = await read_until_idle(bootstrap, env["STREAMCAST_TOPICS__ALERTS"])
        sent = service.metric("streamcast_alerts_total", detector="ewma", kind="error_drift")
        scored = service.metric("streamcast_forecast_scored_total")
        covered = {
            level: service.metric("streamcast_interval_covered_total", level=f"{level:g}")
            for level in LEVELS
        }
    finally:
        service.kill()

    assert sorted(alerts_of(alerts)) == sorted(expected)
    assert all(r.headers and dict(r.headers)["streamcast.schema"] == b"alert/1" for r in alerts)
    assert sent == 1
    # online coverage from the forecasts topic: every step of every forecast whose targets
    # the test knows, for the keys it did not shift
    inside = dict.fromkeys(LEVELS, 0)
    total = 0
    for record in records:
        fc = decode_forecast(record.value, record.key)
        if fc.key == SHIFTED:
            continue
        assert fc.levels == LEVELS and fc.lower is not None and fc.upper is not None
        origin = (fc.origin_ts - start) // INTERVAL_S
        for k, target in enumerate(range(origin + 1, origin + 1 + fc.horizon)):
            if target >= INTERVALS - 1:  # the last interval never closes
                continue
            actual = values[fc.key][target]
            total += 1
            for j, level in enumerate(LEVELS):
                inside[level] += fc.lower[j, k] <= actual <= fc.upper[j, k]
    assert total > 5 * (INTERVALS - 70) * 4
    for level in LEVELS:
        assert abs(inside[level] / total - level) <= 0.02, (level, inside[level] / total)
        # the service's own coverage metrics agree (a sample of every key, shifted included)
        assert abs(covered[level] / scored - level) <= 0.05


@pytest.mark.parametrize("when", ["mid-shift", "alert-in-flight"])
async def test_kill_9_in_exactly_once_mode_publishes_the_alert_exactly_once(
    bootstrap: str, tmp_path: Path, when: str
) -> None:
    """Kill -9 between the shift and its alert: ``mid-shift`` once half the intervals
    between them are committed; ``alert-in-flight`` as soon as the alert record is visible
    to a read_uncommitted reader (its transaction may or may not have committed). Either
    way the committed alerts topic holds exactly the uninterrupted run's alerts."""
    model = _model(tmp_path)
    prefix = unique_topic("quality-eos")
    env = service_env(
        bootstrap, model, prefix, processing_guarantee="exactly_once", batch_max_records=60
    )
    ticks_topic = env["STREAMCAST_TOPICS__TICKS"]
    await create_topics(bootstrap, [ticks_topic], partitions=1)
    start = recent_hour()
    values = _values(seed=2)
    whole = _messages(start, values, 0, INTERVALS)
    forecasts, expected = expected_outputs(model, [whole])
    delay = _check_reference(expected, start)
    cut = SHIFT[0] + max(1, delay // 2)  # intervals sent before the kill (mid-shift)

    service = ServiceProcess(env, tmp_path / "service.log")
    try:
        service.start()
        if when == "mid-shift":
            first = _messages(start, values, 0, cut)
            await produce(bootstrap, ticks_topic, first)
            before, _ = expected_outputs(model, [first])
            await consume(bootstrap, env["STREAMCAST_TOPICS__FORECASTS"], until=len(before))
            assert await read_until_idle(bootstrap, env["STREAMCAST_TOPICS__ALERTS"], 1.0) == []
            service.stop(signal.SIGKILL)
            await produce(bootstrap, ticks_topic, _messages(start, values, cut, INTERVALS))
        else:
            await produce(bootstrap, ticks_topic, whole)
            await _first_uncommitted(bootstrap, env["STREAMCAST_TOPICS__ALERTS"])
            service.stop(signal.SIGKILL)
        service.start()
        await consume(bootstrap, env["STREAMCAST_TOPICS__FORECASTS"], until=len(forecasts))
        alerts = await read_until_idle(bootstrap, env["STREAMCAST_TOPICS__ALERTS"])
    finally:
        service.kill()
    assert alerts_of(alerts) == expected


async def _first_uncommitted(bootstrap: str, topic: str, timeout_s: float = 60.0) -> None:
    """Wait until a record of ``topic`` is visible to a read_uncommitted reader."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        isolation_level="read_uncommitted",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        async with asyncio.timeout(timeout_s):
            while not any((await consumer.getmany(timeout_ms=20)).values()):
                pass
    finally:
        await consumer.stop()
