"""Bad input never stops the stream (DESIGN invariant 5), through the real broker.

More than 1,000 malformed messages of 17 kinds are interleaved with valid ticks. Each
must land in the dead-letter topic with the right reason, its original key and bytes and
its source coordinates; the valid ticks' forecasts must equal those of a clean run over
the valid ticks alone; the service keeps running. The service runs in-process here.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest

from streamcast.config import load_settings
from streamcast.core.codec import HEADER_OFFSET, HEADER_PARTITION, HEADER_REASON, HEADER_TOPIC
from streamcast.errors import RejectReason
from streamcast.kafka import publish
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

KEYS = 6
INTERVALS = 30
INTERVAL_S = 60
MAX_BYTES = 2048
BAD_PER_VALID = 3

R = RejectReason
#: a malformed-message maker: (series key, event time of the tick it follows) -> message
Maker = Callable[[str, int], Message]


def _kinds() -> list[tuple[str, RejectReason, Maker]]:
    """The malformed kinds and the reason each must be dead-lettered with."""

    def keyed(body: bytes) -> Maker:
        return lambda key, ts: (key.encode(), body)

    return [
        ("not json", R.NOT_JSON, keyed(b"this is {not json")),
        ("not an object", R.NOT_AN_OBJECT, keyed(b"[1, 2, 3]")),
        ("empty", R.EMPTY, keyed(b"")),
        ("tombstone", R.EMPTY, lambda key, ts: (key.encode(), None)),
        (
            "invalid utf-8",
            R.INVALID_UTF8,
            keyed(b'{"key": "k", "ts": 1700000000, "value": "\xff\xfe"}'),
        ),
        (
            "binary garbage",
            R.INVALID_UTF8,
            lambda key, ts: (key.encode(), b"\x80" + os.urandom(40)),
        ),
        (
            "oversized",
            R.OVERSIZED,
            lambda key, ts: (
                key.encode(),
                tick(key, ts, 1.0)[:-1] + b',"pad":"' + b"x" * MAX_BYTES + b'"}',
            ),
        ),
        ("missing key", R.MISSING_KEY, lambda key, ts: (None, b'{"ts": %d, "value": 1.0}' % ts)),
        (
            "key not a string",
            R.WRONG_TYPE,
            lambda key, ts: (None, b'{"key": 42, "ts": %d, "value": 1}' % ts),
        ),
        (
            "value a string",
            R.WRONG_TYPE,
            lambda key, ts: (key.encode(), b'{"ts": %d, "value": "12.5"}' % ts),
        ),
        ("NaN", R.NON_FINITE, lambda key, ts: (key.encode(), b'{"ts": %d, "value": NaN}' % ts)),
        (
            "infinity",
            R.NON_FINITE,
            lambda key, ts: (key.encode(), b'{"ts": %d, "value": 1e999}' % ts),
        ),
        ("unparsable ts", R.BAD_TIMESTAMP, keyed(b'{"ts": "the day after", "value": 1.0}')),
        (
            "absurd future ts",
            R.ABSURD_TIMESTAMP,
            keyed(b'{"ts": "2300-01-01T00:00:00Z", "value": 1}'),
        ),
        ("absurd past ts", R.ABSURD_TIMESTAMP, keyed(b'{"ts": 5, "value": 1.0}')),
        ("missing ts", R.MISSING_TS, keyed(b'{"value": 1.0}')),
        ("missing value", R.MISSING_VALUE, lambda key, ts: (key.encode(), b'{"ts": %d}' % ts)),
        # These two are well-formed but would corrupt the key's intervals if accepted.
        ("late", R.LATE, lambda key, ts: (key.encode(), tick(key, ts - 3 * INTERVAL_S, 1e6))),
        ("duplicate", R.DUPLICATE, lambda key, ts: (key.encode(), tick(key, ts, 1e6))),
    ]


def _streams(start: int) -> tuple[list[Message], list[Message], list[RejectReason | None]]:
    """(valid ticks, everything interleaved, expected reason per interleaved message)."""
    rng = np.random.default_rng(3)
    kinds = _kinds()
    valid: list[Message] = []
    mixed: list[Message] = []
    reasons: list[RejectReason | None] = []
    n = 0
    for t in range(INTERVALS):
        for k in range(KEYS):
            key = f"pump-{k}"
            for offset in (5, 40):
                ts = start + t * INTERVAL_S + offset
                good = (key.encode(), tick(key, ts, float(50 + k + rng.normal())))
                valid.append(good)
                mixed.append(good)
                reasons.append(None)
                for _ in range(BAD_PER_VALID):
                    _, reason, make = kinds[n % len(kinds)]
                    n += 1
                    # late needs an earlier interval to exist; duplicate needs the same ts
                    if reason is R.LATE and t < 3:
                        continue
                    if reason is R.DUPLICATE:
                        mixed.append(good)
                    else:
                        mixed.append(make(key, ts))
                    reasons.append(reason)
    return valid, mixed, reasons


async def test_malformed_messages_are_dead_lettered_and_valid_ticks_unaffected(
    bootstrap: str, tmp_path: Path
) -> None:
    prefix = unique_topic("bad")
    model = make_tiny_model(
        tmp_path / "tiny.onnx", window=4, horizon=3, interval_s=INTERVAL_S, levels=(0.9,)
    )
    settings = load_settings(
        {
            "bootstrap_servers": bootstrap,
            "model_path": model,
            "group_id": f"{prefix}-group",
            "topics": {
                "ticks": f"{prefix}-ticks",
                "forecasts": f"{prefix}-forecasts",
                "alerts": f"{prefix}-alerts",
                "dead_letter": f"{prefix}-dlq",
                "state_changelog": f"{prefix}-state",
            },
            "max_message_bytes": MAX_BYTES,
            "batch_max_records": 200,
            "batch_max_wait_ms": 20,
            "http_host": "127.0.0.1",
            "http_port": 0,
        },
        env_file=None,
    )
    ticks_topic = settings.topics.ticks
    await create_topics(bootstrap, [ticks_topic], partitions=3)
    valid, mixed, reasons = _streams(recent_hour())
    n_bad = sum(r is not None for r in reasons)
    assert n_bad >= 1000
    assert len({r for r in reasons if r is not None}) >= 10
    coordinates = await produce(bootstrap, ticks_topic, mixed)
    by_key: dict[bytes | None, list[Message]] = {}
    for message in valid:
        by_key.setdefault(message[0], []).append(message)
    expected = expected_forecasts(model, list(by_key.values()))

    service = Service(settings)
    async with asyncio.TaskGroup() as tasks:
        running = tasks.create_task(service.run())
        dead = await consume(bootstrap, settings.topics.dead_letter, until=n_bad, idle_s=1.0)
        forecasts = await consume(
            bootstrap, settings.topics.forecasts, until=len(expected), idle_s=0.5
        )
        assert not running.done(), "the service must still be running"
        ready, why = service.readiness()
        assert ready, why
        exposition = service.metrics.exposition().decode()
        service.request_stop()

    # Every malformed message, and nothing else, is in the DLQ with the right reason.
    expected_reason = {
        coordinates[i]: reason for i, reason in enumerate(reasons) if reason is not None
    }
    original = dict(zip(coordinates, mixed, strict=True))
    seen: dict[tuple[int, int], str] = {}
    for record in dead:
        headers = {k: v.decode() for k, v in record.headers}
        assert headers[HEADER_TOPIC] == ticks_topic
        source = (int(headers[HEADER_PARTITION]), int(headers[HEADER_OFFSET]))
        seen[source] = headers[HEADER_REASON]
        key, value = original[source]
        assert record.key == key
        assert record.value == (value or b"")
    assert len(dead) == n_bad, "one dead letter per malformed message"
    wrong = {c: (seen.get(c), str(r)) for c, r in expected_reason.items() if seen.get(c) != str(r)}
    assert not wrong, f"{len(wrong)} wrong reasons, e.g. {list(wrong.items())[:3]}"

    # Valid ticks' forecasts are exactly those of a clean run.
    got = forecasts_by_key(forecasts)
    assert set(got) == set(expected)
    for fkey, values in expected.items():
        assert len(got[fkey]) == 1
        np.testing.assert_allclose(got[fkey][0], values, rtol=1e-6)

    per_reason = Counter(str(r) for r in reasons if r is not None)
    for reason, count in per_reason.items():
        assert f'streamcast_dead_letters_total{{reason="{reason}"}} {float(count)}' in exposition
    assert f'streamcast_ticks_total{{result="rejected"}} {float(n_bad)}' in exposition
    first = orjson.loads(forecasts[0].value or b"")
    assert first["key"].startswith("pump-")


async def test_key_flood_is_bounded_by_max_keys(bootstrap: str, tmp_path: Path) -> None:
    """Ten times ``max_keys`` distinct keys: the store never holds more than the cap, the
    overflow is evicted least-recently-used, and the service keeps serving."""
    cap = 200
    prefix = unique_topic("flood")
    model = make_tiny_model(tmp_path / "tiny.onnx", window=4, horizon=3, interval_s=INTERVAL_S)
    settings = load_settings(
        {
            "bootstrap_servers": bootstrap,
            "model_path": model,
            "group_id": f"{prefix}-group",
            "topics": {"ticks": f"{prefix}-ticks", "forecasts": f"{prefix}-forecasts",
                       "alerts": f"{prefix}-alerts", "dead_letter": f"{prefix}-dlq",
                       "state_changelog": f"{prefix}-state"},
            "max_keys": cap,
            "batch_max_records": 100,
            "http_host": "127.0.0.1",
            "http_port": 0,
        },
        env_file=None,
    )  # fmt: skip
    await create_topics(bootstrap, [settings.topics.ticks], partitions=2)
    start = recent_hour()
    flood = [
        (f"flood-{k}".encode(), tick(f"flood-{k}", start + t * INTERVAL_S + 1, float(t)))
        for k in range(10 * cap)
        for t in range(2)
    ]
    await produce(bootstrap, settings.topics.ticks, flood)
    service = Service(settings)
    active: list[float] = []
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(service.run())
        for _ in range(600):
            active.append(service.metrics.active_keys._value.get())
            if service.consumed >= len(flood):
                break
            await asyncio.sleep(0.05)
        ready, why = service.readiness()
        service.request_stop()
    assert service.consumed == len(flood)
    assert ready, why
    assert max(active) <= cap
    assert service.metrics.active_keys._value.get() == cap
    evicted = service.metrics.evictions.labels(cause="lru")._value.get()
    assert evicted == 10 * cap - cap


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_a_near_limit_tick_is_dead_lettered_truncated_and_its_partition_goes_on(
    bootstrap: str, tmp_path: Path, guarantee: str
) -> None:
    """A tick just under the broker's 1 MB limit (incompressible) is accepted by the broker
    and rejected as oversized; its dead letter (the same bytes plus ~300 bytes of headers)
    is over the limit. It must go out truncated, not be refused on every retry: that held
    the partition's later ticks back for good (a poison pill), in a transaction too."""
    prefix = unique_topic("near-limit")
    model = make_tiny_model(tmp_path / "tiny.onnx", window=4, horizon=3, interval_s=INTERVAL_S)
    settings = load_settings(
        {
            "bootstrap_servers": bootstrap,
            "model_path": model,
            "group_id": f"{prefix}-group",
            "processing_guarantee": guarantee,
            "topics": {"ticks": f"{prefix}-ticks", "forecasts": f"{prefix}-forecasts",
                       "alerts": f"{prefix}-alerts", "dead_letter": f"{prefix}-dlq",
                       "state_changelog": f"{prefix}-state"},
            "batch_max_wait_ms": 20,
            "http_host": "127.0.0.1",
            "http_port": 0,
        },
        env_file=None,
    )  # fmt: skip
    await create_topics(bootstrap, [settings.topics.ticks], partitions=1)
    start = recent_hour()
    huge = (b"pump-big", os.urandom(1_048_400))  # under the broker's 1,048,588 bytes
    after = [(b"pump-0", tick("pump-0", start + t * INTERVAL_S + 1, 10.0 + t)) for t in range(8)]
    await produce(bootstrap, settings.topics.ticks, [huge, *after])
    service = Service(settings)
    async with asyncio.TaskGroup() as tasks:
        running = tasks.create_task(service.run())
        dead = await consume(bootstrap, settings.topics.dead_letter, until=1, timeout_s=30)
        forecasts = await consume(bootstrap, settings.topics.forecasts, until=4, timeout_s=30)
        assert not running.done(), "the service must still be running"
        service.request_stop()
    assert len(dead) == 1
    headers = dict(dead[0].headers)
    assert headers[HEADER_REASON] == str(R.OVERSIZED).encode()
    assert headers["truncated_from"] == b"1048400"
    assert dead[0].key == b"pump-big"
    assert dead[0].value == huge[1][: publish.MAX_DEAD_LETTER_BYTES]
    assert len(forecasts) == 4  # window 4: ticks 1-4 warm up, each later one forecasts
