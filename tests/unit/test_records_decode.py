"""The one reader of each output format: ``decode_forecast`` (forecasts) and
``decode_alert`` (alerts) read what the writers write, and refuse everything else with the
field and the reason."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from streamcast.core.alerts import AlertBatch, decode_alert, encode_alerts
from streamcast.core.records import ForecastBatch, decode_forecast, encode_forecasts
from streamcast.errors import RecordError


def _batch(levels: tuple[float, ...] = (0.8, 0.95)) -> ForecastBatch:
    rng = np.random.default_rng(1)
    n, h = 3, 4
    values = rng.normal(100, 30, size=(n, h))
    spread = rng.uniform(1, 5, size=(n, len(levels), h))
    return ForecastBatch(
        keys=["pump-1", "pump-2", "zone/ü"],
        origin_ts=np.array([1_790_000_000 // 3600 * 3600] * n),
        values=values,
        model="m",
        model_version="7",
        interval_s=3600,
        horizon=h,
        trigger_index=np.arange(n),
        levels=levels,
        lower=values[:, None, :] - spread if levels else None,
        upper=values[:, None, :] + spread if levels else None,
    )


@pytest.mark.parametrize("levels", [(0.8, 0.95), ()])
def test_decode_reads_exactly_what_encode_writes(levels: tuple[float, ...]) -> None:
    batch = _batch(levels)
    for i, (key, value) in enumerate(encode_forecasts(batch)):
        fc = decode_forecast(value, key)
        assert fc.key == batch.keys[i]
        assert fc.origin_ts == int(batch.origin_ts[i])
        assert fc.interval_s == 3600 and fc.horizon == 4
        assert fc.model == "m" and fc.model_version == "7"
        np.testing.assert_array_equal(fc.values, batch.values[i])  # exact: float64 JSON
        assert fc.target_ts().tolist() == batch.target_ts()[i].tolist()
        assert fc.levels == levels
        if levels:
            assert batch.lower is not None and batch.upper is not None
            np.testing.assert_array_equal(fc.lower, batch.lower[i])
            np.testing.assert_array_equal(fc.upper, batch.upper[i])
        else:
            assert fc.lower is None and fc.upper is None


def _doc() -> dict[str, object]:
    return dict(orjson.loads(encode_forecasts(_batch())[0][1]))


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"schema": 2}, "newer than this reader understands"),
        ({"schema": "1"}, "schema: expected the integer 1"),
        ({"key": ""}, "key: expected a non-empty string"),
        ({"ts": "yesterday"}, "ts: 'yesterday' is not an ISO-8601 timestamp"),
        ({"ts": "2026-01-01T00:00:00"}, "has no time zone"),
        ({"horizon": 0}, "horizon: expected a positive integer"),
        ({"values": [1.0, 2.0]}, "values: expected a list of 4 numbers, got 2"),
        ({"values": [1.0, True, 2.0, 3.0]}, "values: every entry must be a number"),
        ({"interval_s": 1.5}, "interval_s: expected a positive integer"),
        ({"upper": {"0.8": [1, 2, 3, 4]}}, "same level names"),
        ({"model": None}, "model: expected a non-empty string"),
    ],
)
def test_decode_names_the_field_and_the_problem(change: dict[str, object], says: str) -> None:
    doc = {**_doc(), **change}
    with pytest.raises(RecordError, match=says):
        decode_forecast(orjson.dumps(doc))


@pytest.mark.parametrize(
    ("value", "says"),
    [(b"", "empty record"), (b"{", "not JSON"), (b"[1]", "a JSON object, got a JSON list")],
)
def test_decode_refuses_what_is_not_a_forecast(value: bytes, says: str) -> None:
    with pytest.raises(RecordError, match=says):
        decode_forecast(value)


def test_decode_checks_the_kafka_key_and_ignores_unknown_fields() -> None:
    key, value = encode_forecasts(_batch())[0]
    doc = {**orjson.loads(value), "something_new": {"a": 1}}
    assert decode_forecast(orjson.dumps(doc), key).key == "pump-1"
    with pytest.raises(RecordError, match="differs from the Kafka message key"):
        decode_forecast(value, b"pump-2")


def test_alerts_read_what_the_detectors_write_and_refuse_bad_records() -> None:
    batch = AlertBatch(
        keys=["pump-1", "pump-2"], ts=np.array([1_790_000_000 // 3600 * 3600] * 2),
        kind=["error_drift", "recovered"], detector=["ewma", "ewma"],
        statistic=np.array([13.25, 2.0]), threshold=np.array([12.0, 12.0]),
        direction=["up", "up"], severity=["critical", "info"], model="m", model_version="7",
        trigger_index=np.arange(2), recent=np.array([[0.5, 2.5], [np.nan, 0.25]], np.float32),
        window_mean=np.array([410.0, 300.0]), window_std=np.array([80.0, 50.0]), window=48,
    )  # fmt: skip
    (key, value), (key2, value2) = encode_alerts(batch)
    alert = decode_alert(value, key)
    assert (alert.key, alert.kind, alert.detector, alert.severity) == (
        "pump-1", "error_drift", "ewma", "critical",
    )  # fmt: skip
    assert (alert.statistic, alert.threshold, alert.ts_s) == (13.25, 12.0, 1_789_999_200)
    assert alert.summary["recent_residuals"] == [0.5, 2.5] and alert.summary["window"] == 48
    assert decode_alert(value2, key2).summary["recent_residuals"] == [0.25]
    assert decode_alert(orjson.dumps(alert.document())) == alert
    doc: dict[str, object] = orjson.loads(value)
    cases: list[tuple[dict[str, object], str]] = [
        ({"schema": 9}, "newer than this reader"),
        ({"statistic": "high"}, "statistic: expected a finite number"),
        ({"statistic": True}, "statistic: expected a finite number"),
        ({"kind": ""}, "kind: expected a non-empty string"),
        ({"ts": 5}, "ts: expected a non-empty string"),
        ({"summary": "text"}, "summary: expected a JSON object"),
    ]
    for change, says in cases:
        with pytest.raises(RecordError, match=says):
            decode_alert(orjson.dumps({**doc, **change}))
    assert decode_alert(orjson.dumps({**doc, "kind": "novel_drift"})).kind == "novel_drift"
    with pytest.raises(RecordError, match="differs from the Kafka message key"):
        decode_alert(value, b"pump-2")
