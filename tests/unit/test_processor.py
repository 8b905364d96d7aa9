"""The batch processor: a forecast that cannot be encoded is isolated (its triggering
tick dead-lettered ``internal_error``, the rest of the batch goes out), and the alerts
the pipeline raises become records of the alerts topic."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from streamcast.config import Settings
from streamcast.core.records import ForecastBatch
from streamcast.errors import RejectReason
from streamcast.kafka.publish import MAX_DEAD_LETTER_BYTES, MAX_DEAD_LETTER_KEY_BYTES
from streamcast.kafka.wire import InRecord
from streamcast.service.processor import build_processor, encode_isolated, next_offsets
from tests.support.models import make_tiny_model, normal_reference


def _forecasts(keys: list[str]) -> ForecastBatch:
    n = len(keys)
    return ForecastBatch(
        keys=keys,
        origin_ts=np.full(n, 1_700_000_000, dtype=np.int64),
        values=np.ones((n, 2)),
        model="m",
        model_version="1",
        interval_s=60,
        horizon=2,
        trigger_index=np.arange(10, 10 + n, dtype=np.int64),
    )


def test_a_forecast_that_cannot_be_encoded_is_isolated() -> None:
    encoded, failed = encode_isolated(_forecasts(["a", "\ud800", "c"]))
    assert [e[0] if e else None for e in encoded] == [b"a", None, b"c"]
    assert [(r.index, r.reason) for r in failed] == [(11, RejectReason.INTERNAL_ERROR)]
    assert "UnicodeEncodeError" in failed[0].detail


def test_a_clean_batch_is_encoded_at_once() -> None:
    encoded, failed = encode_isolated(_forecasts(["a", "b"]))
    assert failed == [] and [e[0] for e in encoded if e] == [b"a", b"b"]


def test_the_alerts_a_batch_raises_go_to_the_alerts_topic_of_their_partition(
    tmp_path: Path,
) -> None:
    """A key shifted by 4 standard deviations raises an error-drift alert in the pipeline;
    the processor must turn it into an alerts-topic record (a regression: its step once
    dropped the pipeline's alerts and quality sums)."""
    model = make_tiny_model(
        tmp_path / "mean.onnx", window=8, horizon=3, interval_s=60, alpha=1e-12,
        mean_forecast=True, drift=normal_reference(3),
    )  # fmt: skip
    processor = build_processor(Settings(_env_file=None, model_path=model))
    rng = np.random.default_rng(0)
    values = rng.standard_normal(200)
    values[:8] = np.where(np.arange(8) % 2 == 0, -1.0, 1.0)  # level 0, unit 1 (alpha ~ 0)
    values[120:] += 4.0
    start = 1_700_000_040
    records = [
        InRecord(
            "ticks", 3, t, start * 1000, b"a", orjson.dumps({"ts": start + 60 * t, "value": v})
        )
        for t, v in enumerate(values.tolist())
    ]
    results = [processor.process(records[i : i + 50], start + 1e5) for i in range(0, 200, 50)]
    alerts = [r for result in results for r in result.outputs.get(3, []) if r.topic == "alerts"]
    assert [orjson.loads(r.value or b"")["kind"] for r in alerts] == ["error_drift"]
    assert dict(alerts[0].headers)["streamcast.schema"] == b"alert/1"
    assert sum(len(result.alerts) for result in results) == 1
    assert sum(int(r.quality.count.sum()) for r in results if r.quality is not None) > 0


def test_next_offsets_are_each_partitions_last_offset_plus_one() -> None:
    def rec(topic: str, partition: int, offset: int) -> InRecord:
        return InRecord(topic, partition, offset, 0, b"k", b"{}")

    # partitions interleaved, offsets not in order within the batch (a retried fetch)
    records = [rec("ticks", 1, 7), rec("ticks", 0, 3), rec("ticks", 1, 9), rec("ticks", 0, 2)]
    assert next_offsets(records) == {("ticks", 0): 4, ("ticks", 1): 10}
    partitions = np.array([r.partition for r in records])
    assert next_offsets(records, partitions) == {("ticks", 0): 4, ("ticks", 1): 10}
    # records of two topics take the per-record path, with the same rule
    mixed = [*records, rec("other", 0, 41)]
    assert next_offsets(mixed) == {("ticks", 0): 4, ("ticks", 1): 10, ("other", 0): 42}
    assert next_offsets([]) == {}


def test_one_tick_dated_days_ahead_takes_down_neither_its_key_nor_its_forecasts(
    tmp_path: Path,
) -> None:
    """Default settings, an hourly model: the jump bound (1,000 intervals, 41 days) is
    longer than the decoder's future (7 days), so a tick dated 3 days ahead (a typo, a
    bad clock) was accepted as a gap, and the key's real ticks of the next 3 days were all
    dead-lettered late. Only that tick is dead-lettered now, and the key forecasts on."""
    model = make_tiny_model(tmp_path / "m.onnx", window=4, horizon=2, interval_s=3600)
    settings = Settings(_env_file=None, model_path=model)
    assert settings.max_jump_intervals == 1000 and settings.max_future_s == 7 * 86_400
    processor = build_processor(settings)
    now = int(time.time())  # the decoder bounds the future by the wall clock
    t0 = now - now % 3600 - 24 * 3600
    ticks = [{"ts": t0 + 3600 * i, "value": float(i % 5)} for i in range(12)]
    ticks.append({"ts": now + 3 * 86_400, "value": 2.0})
    ticks += [{"ts": t0 + 3600 * i, "value": float(i % 5)} for i in range(12, 20)]
    records = [InRecord("ticks", 0, i, 0, b"a", orjson.dumps(tick)) for i, tick in enumerate(ticks)]
    result = processor.process(records, float(now))
    assert [(r.index, r.reason) for r in result.rejections] == [(12, RejectReason.TIME_JUMP)]
    assert result.forecasts == 19 - 4 + 1  # 19 intervals closed, the 4th fills the window


def test_a_key_ttl_within_one_interval_is_warned_of_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An hourly model with STREAMCAST_KEY_TTL_S=1: live, every key expires between its
    ticks and none ever forecasts. Warned, not refused (a replay of history sends many
    intervals per second of wall clock); a TTL of several intervals says nothing."""
    model = make_tiny_model(tmp_path / "m.onnx", window=4, horizon=2, interval_s=3600)
    with caplog.at_level(logging.WARNING, logger="streamcast"):
        build_processor(Settings(_env_file=None, model_path=model, key_ttl_s=1.0))
    (warning,) = [r for r in caplog.records if "key_ttl_s" in r.getMessage()]
    assert "never forecasts" in warning.getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="streamcast"):
        build_processor(Settings(_env_file=None, model_path=model, key_ttl_s=6 * 3600.0))
    assert not [r for r in caplog.records if "key_ttl_s" in r.getMessage()]


def test_the_default_ttl_outlasts_three_intervals_of_a_weekly_or_monthly_model(
    tmp_path: Path,
) -> None:
    """The 7-day default expired a weekly model's keys exactly between their ticks (and a
    monthly one's long before): the default is 7 days or 3 intervals, whichever is longer;
    a TTL set by the operator is kept as set."""
    for interval_s, want in ((3600, 7 * 86_400.0), (7 * 86_400, 21 * 86_400.0)):
        model = make_tiny_model(tmp_path / f"m{interval_s}.onnx", window=4, horizon=2,
                                interval_s=interval_s)  # fmt: skip
        default = build_processor(Settings(_env_file=None, model_path=model))
        assert default.pipeline.store.key_ttl_s == want
        chosen = build_processor(Settings(_env_file=None, model_path=model, key_ttl_s=7200.0))
        assert chosen.pipeline.store.key_ttl_s == 7200.0


def test_ticks_that_would_overflow_a_summed_interval_are_dead_lettered_not_the_key(
    tmp_path: Path,
) -> None:
    """aggregation=sum: 400 ticks of 1e37 in one interval, each within the decoder's
    range. The sum reached 4e39 and the key's every later forecast failed to encode: its
    good ticks were dead-lettered internal_error. Now the ticks that would carry the sum
    past the range are dead-lettered out_of_range, and the key forecasts on."""
    model = make_tiny_model(tmp_path / "m.onnx", window=4, horizon=2, interval_s=60,
                            aggregation="sum")  # fmt: skip
    processor = build_processor(Settings(_env_file=None, model_path=model))
    t0 = 1_700_000_000 - 1_700_000_000 % 60
    ticks = [{"ts": t0 + 60 * i, "value": 1.0} for i in range(6)]
    ticks += [{"ts": (t0 + 360) * 1000 + j, "value": 1e37} for j in range(400)]
    ticks += [{"ts": t0 + 60 * i, "value": 1.0} for i in range(7, 12)]
    records = [InRecord("ticks", 0, i, 0, b"a", orjson.dumps(tick)) for i, tick in enumerate(ticks)]
    result = processor.process(records, float(t0 + 100_000))
    reasons = {(r.reason, r.index) for r in result.rejections}
    assert reasons == {(RejectReason.OUT_OF_RANGE, 6 + j) for j in range(1, 400)}
    assert result.counters["internal_errors"] == 0
    assert result.forecasts == 11 - 4 + 1  # 11 intervals closed, the 4th fills the window


def test_the_dead_letter_of_a_near_limit_input_is_cut_to_fit_the_broker(tmp_path: Path) -> None:
    """A tick just under the broker's 1 MB limit is oversized; its dead letter (the same
    bytes plus ~300 bytes of headers) would be over it, refused on every retry. It is
    cut when it is made, value and key, each cut marked; a small one is kept whole."""
    model = make_tiny_model(tmp_path / "m.onnx", window=4, horizon=2, interval_s=60)
    processor = build_processor(Settings(_env_file=None, model_path=model))
    huge = InRecord("ticks", 0, 7, 0, b"k" * 20_000, b"x" * 1_048_400)
    small = InRecord("ticks", 0, 8, 0, b"k", b"not json")
    result = processor.process([huge, small], time.time())
    cut, whole = [r for part in result.outputs.values() for r in part
                  if r.topic == processor.topics.dead_letter]  # fmt: skip
    assert cut.value == (huge.value or b"")[:MAX_DEAD_LETTER_BYTES]
    assert cut.key == (huge.key or b"")[:MAX_DEAD_LETTER_KEY_BYTES]
    headers = dict(cut.headers)
    assert (headers["truncated_from"], headers["key_truncated_from"]) == (b"1048400", b"20000")
    assert headers["streamcast.reason"] == b"oversized"
    assert (whole.key, whole.value) == (small.key, small.value)
