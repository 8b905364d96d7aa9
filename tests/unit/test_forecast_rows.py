"""The row-per-target layout: one flat record per forecast step that follows its schema,
reads back into the same forecast as the compact record, and is what the processor
produces with ``forecast_layout = rows``."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import numpy as np
import orjson
import pytest

from streamcast.config import Settings
from streamcast.core.forecast_rows import (
    ForecastAssembler,
    decode_forecast_row,
    encode_forecast_rows,
    level_name,
)
from streamcast.core.records import ForecastBatch, decode_forecast, encode_forecasts
from streamcast.core.schemas import load_schema
from streamcast.errors import RecordError
from streamcast.kafka.wire import InRecord
from streamcast.service.processor import build_processor, encode_isolated
from tests.support.models import make_tiny_model


def _batch(levels: tuple[float, ...] = (0.8, 0.975)) -> ForecastBatch:
    rng = np.random.default_rng(4)
    n, h = 3, 5
    values = rng.normal(100, 30, size=(n, h))
    spread = rng.uniform(1, 5, size=(n, len(levels), h))
    return ForecastBatch(
        keys=["pump-1", 'odd"key', "zone/ü"], origin_ts=np.array([7200, 3600, 7200]),
        values=values, model="m", model_version="7", interval_s=3600, horizon=h,
        trigger_index=np.arange(n), levels=levels,
        lower=values[:, None, :] - spread if levels else None,
        upper=values[:, None, :] + spread if levels else None,
    )  # fmt: skip


@pytest.mark.parametrize("levels", [(0.8, 0.975), ()])
def test_rows_follow_the_schema_and_read_back_as_the_compact_record(
    levels: tuple[float, ...],
) -> None:
    batch = _batch(levels)
    rows = encode_forecast_rows(batch, generated_at_s=1_790_000_000.0)
    assert len(rows) == len(batch) * batch.horizon
    validator = jsonschema.Draft202012Validator(load_schema("forecast_row"))
    assembler = ForecastAssembler()
    rebuilt = []
    for key, value in rows:
        doc = orjson.loads(value)
        validator.validate(doc)
        assert doc["target_s"] == doc["origin_s"] + doc["step"] * 3600
        assert doc["id"] == f"{doc['key']}@{doc['origin_s']}+{doc['step']}"
        fc = assembler.add(decode_forecast_row(value, key))
        if fc is not None:
            rebuilt.append(fc)
    assert len(assembler) == 0
    compact = [decode_forecast(v, k) for k, v in encode_forecasts(batch)]
    assert [fc.key for fc in rebuilt] == [fc.key for fc in compact]
    for got, want in zip(rebuilt, compact, strict=True):
        assert (got.origin_ts, got.levels, got.model_version) == (
            want.origin_ts, want.levels, want.model_version,
        )  # fmt: skip
        np.testing.assert_array_equal(got.values, want.values)
        if levels:
            assert got.lower is not None and want.lower is not None
            assert got.upper is not None and want.upper is not None
            np.testing.assert_array_equal(got.lower, want.lower)
            np.testing.assert_array_equal(got.upper, want.upper)
    if levels:
        assert set(orjson.loads(rows[0][1])) >= {"lower_80", "upper_80", "lower_97_5"}


def test_a_new_origin_replaces_a_partial_forecast_and_duplicates_are_harmless() -> None:
    rows = [decode_forecast_row(v) for _, v in encode_forecast_rows(_batch())]
    first, later = rows[:5], rows[10:15]  # pump-1 at 7200 and zone/ü at 7200
    assembler = ForecastAssembler(max_keys=1)
    assert assembler.add(first[0]) is None and assembler.add(first[0]) is None
    assert [assembler.add(r) for r in later[:4]] == [None] * 4  # evicts pump-1's part
    assert assembler.add(later[4]) is not None
    assert [assembler.add(r) is None for r in first] == [True] * 4 + [False]


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"schema": 2}, "newer than this reader"),
        ({"step": 9}, "beyond the horizon"),
        ({"value": "1"}, "value: expected a finite number"),
        ({"upper_80": None}, "upper_80: expected a finite number"),
        ({"lower_50": 1.0}, "the same levels"),
        ({"origin": "noon"}, "not an ISO-8601 timestamp"),
    ],
)
def test_a_bad_row_is_refused_with_the_field(change: dict[str, object], says: str) -> None:
    doc = {**orjson.loads(encode_forecast_rows(_batch())[0][1]), **change}
    with pytest.raises(RecordError, match=says):
        decode_forecast_row(orjson.dumps(doc))


def test_level_names_round_trip() -> None:
    assert [level_name(v) for v in (0.5, 0.8, 0.9, 0.95, 0.975, 0.99)] == [
        "50", "80", "90", "95", "97_5", "99",
    ]  # fmt: skip


def test_an_unencodable_forecast_loses_all_its_rows_only() -> None:
    batch = _batch()
    bad = ForecastBatch(**{**batch.__dict__, "keys": ["a", "\ud800", "c"]})
    encoded, failed = encode_isolated(bad, rows=True)
    assert [e is None for e in encoded] == [False] * 5 + [True] * 5 + [False] * 5
    assert [r.index for r in failed] == [1]


def test_the_processor_writes_rows_with_their_schema_header(tmp_path: Path) -> None:
    model = make_tiny_model(tmp_path / "m.onnx", window=4, horizon=3, interval_s=60)
    settings = Settings(_env_file=None, model_path=model, forecast_layout="rows")
    processor = build_processor(settings)
    start = 1_700_000_040
    ticks = [orjson.dumps({"ts": start + 60 * t, "value": t}) for t in range(8)]
    records = [InRecord("ticks", 0, t, start * 1000, b"a", v) for t, v in enumerate(ticks)]
    result = processor.process(records, start + 1e5)
    out = [r for r in result.outputs[0] if r.topic == settings.topics.forecasts]
    assert result.forecasts == len(out) // 3 > 0
    assert {dict(r.headers)["streamcast.schema"] for r in out} == {b"forecast_row/1"}
    assert [orjson.loads(r.value or b"")["step"] for r in out[:3]] == [1, 2, 3]
