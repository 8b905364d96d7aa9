"""The output contract against the real broker: the ticks ``streamcast replay`` sends and
every record the service produces from them — forecasts (in both layouts: one record per
forecast, and one per target), alerts, dead letters, changelog states and markers —
follow the JSON Schema their ``streamcast.schema`` header names (the tick schema for
ticks), with the matching ``content-type``.

The data is the quality loop's (tests/integration/test_quality.py): a model that
forecasts each key's location with calibrated bands, six keys, one of them shifted by 3
standard deviations for 48 intervals so drift alerts are raised and recovered; malformed
messages produced after the replay feed the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

import jsonschema
import numpy as np
import orjson
import pytest
from aiokafka.structs import ConsumerRecord

from streamcast.core.forecast_rows import ForecastAssembler, decode_forecast_row
from streamcast.core.records import Forecast, decode_forecast
from streamcast.core.schemas import describe_state_record, load_schema
from streamcast.kafka.changelog import MARKER_KEY
from tests.support.kafka import create_topics, unique_topic
from tests.support.models import make_tiny_model, normal_reference
from tests.support.service import (
    Message,
    ServiceProcess,
    consume,
    expected_outputs,
    produce,
    read_until_idle,
    recent_hour,
    run_cli,
    service_env,
)

pytestmark = pytest.mark.kafka

KEYS = 6
INTERVALS = 400
INTERVAL_S = 60
SHIFTED = "meter-2"
SHIFT = (250, 298)
HORIZON = 4
LEVELS = (0.8, 0.95)
BAD: list[Message] = [
    (b"meter-0", b"not json"),
    (None, b'{"ts": 1, "value": 2}'),
    (b"meter-1", b'{"ts": "2026-01-01T00:00:00Z", "value": NaN}'),
    (b"meter-1", None),
]


def _truth() -> dict[str, tuple[float, float]]:
    return {f"meter-{k}": (100.0 + 50 * k, 5.0 + k) for k in range(KEYS)}


def _write_data(path: Path, start: int) -> Path:
    """The replay's CSV: key, ISO time, value, in time order."""
    rng = np.random.default_rng(3)
    lines = ["key,time,value"]
    values = {}
    for key, (loc, scale) in _truth().items():
        v = loc + scale * rng.standard_normal(INTERVALS)
        if key == SHIFTED:
            v[SHIFT[0] : SHIFT[1]] += 3 * scale
        values[key] = v
    stamps = np.datetime_as_string(
        (start + 7 + INTERVAL_S * np.arange(INTERVALS)).astype("datetime64[s]"), unit="s"
    )
    for t in range(INTERVALS):
        lines += [f"{key},{stamps[t]}Z,{float(v[t])!r}" for key, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _forecasts(records: list[ConsumerRecord[bytes, bytes]]) -> dict[tuple[str, str], Forecast]:
    """The forecasts on the topic by ``(key, origin ISO)``, in either layout."""
    assembler = ForecastAssembler()
    out: dict[tuple[str, str], Forecast] = {}
    for record in records:
        if _headers(record)["streamcast.schema"].startswith("forecast_row/"):
            fc = assembler.add(decode_forecast_row(record.value, record.key))
        else:
            fc = decode_forecast(record.value, record.key)
        if fc is not None:
            origin = str(np.datetime64(fc.origin_ts, "s")) + "Z"
            assert (fc.key, origin) not in out, "no duplicates"
            out[(fc.key, origin)] = fc
    assert len(assembler) == 0, "every forecast's rows arrived"
    return out


@functools.cache
def _validator(kind: str, version: int) -> jsonschema.Draft202012Validator:
    """One checked validator per schema: checking the schema once per record was most of
    this test's time (tens of thousands of records)."""
    schema = load_schema(kind, version)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def _headers(record: ConsumerRecord[bytes, bytes]) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers or ()}


def _check(
    records: list[ConsumerRecord[bytes, bytes]], content_type: str
) -> dict[str, list[ConsumerRecord[bytes, bytes]]]:
    """Every record's schema header, grouped; each record validated against it."""
    assert records
    by_schema: dict[str, list[ConsumerRecord[bytes, bytes]]] = {}
    for record in records:
        h = _headers(record)
        name = h["streamcast.schema"]
        kind, _, version = name.partition("/")
        by_schema.setdefault(name, []).append(record)
        validator = _validator(kind, int(version))
        if kind == "dead_letter":
            validator.validate(h)
        elif kind == "changelog" and record.key == MARKER_KEY:
            assert h["content-type"] == "application/json"
            validator.validate(orjson.loads(record.value or b""))
        elif kind == "changelog":
            assert h["content-type"] == content_type
            if record.value is not None:  # a tombstone has no value to describe
                validator.validate(describe_state_record(record.value))
        else:
            assert h["content-type"] == content_type, name
            validator.validate(orjson.loads(record.value or b""))
    return by_schema


@pytest.mark.parametrize("layout", ["record", "rows"])
async def test_every_produced_record_follows_its_schema(
    bootstrap: str, tmp_path: Path, layout: str
) -> None:
    """Both forecast layouts; the forecasts read back (rows put together again) equal the
    in-process pipeline's."""
    model = make_tiny_model(
        tmp_path / "mean.onnx", window=8, horizon=HORIZON, interval_s=INTERVAL_S,
        # a level that stays where the warm-up set it, so the shift raises an alert
        alpha=1e-12, kappa=0.05, mean_forecast=True, drift=normal_reference(HORIZON),
        levels=LEVELS,
    )  # fmt: skip
    prefix = unique_topic("contract")
    env = service_env(bootstrap, model, prefix, batch_max_records=300, forecast_layout=layout)
    ticks = env["STREAMCAST_TOPICS__TICKS"]
    await create_topics(bootstrap, [ticks], partitions=2)
    data = _write_data(tmp_path / "data.csv", recent_hour())
    replay = await asyncio.to_thread(
        run_cli, "replay", "--data", str(data), "--key-col", "key", "--time-col", "time",
        "--value-col", "value", "--topic", ticks, "--bootstrap-servers", bootstrap,
        "--no-progress", cwd=tmp_path,
    )  # fmt: skip
    assert replay.returncode == 0, replay.stderr
    await produce(bootstrap, ticks, BAD)
    sent = await read_until_idle(bootstrap, ticks, 1.0)
    assert len(sent) == KEYS * INTERVALS + len(BAD)
    replayed = [r for r in sent if (r.key, r.value) not in BAD]
    assert len(replayed) == KEYS * INTERVALS
    # the replay's ticks name their schema in their headers like every record streamcast writes
    assert set(_check(replayed, "application/json")) == {"tick/1"}
    parts = [[(r.key, r.value) for r in sent if r.partition == part] for part in (0, 1)]
    forecasts, alerts = expected_outputs(model, parts)
    assert alerts
    per = HORIZON if layout == "rows" else 1  # records per forecast

    service = ServiceProcess(env, tmp_path / "service.log")
    try:
        service.start()
        topics = {
            "FORECASTS": await consume(
                bootstrap, env["STREAMCAST_TOPICS__FORECASTS"], until=len(forecasts) * per
            )
        }
        for name in ("ALERTS", "DEAD_LETTER", "STATE_CHANGELOG"):
            topics[name] = await read_until_idle(bootstrap, env[f"STREAMCAST_TOPICS__{name}"])
    finally:
        service.kill()

    kind = "forecast_row/1" if layout == "rows" else "forecast/2"
    assert set(_check(topics["FORECASTS"], "application/json")) == {kind}
    assert len(topics["FORECASTS"]) == len(forecasts) * per
    got = _forecasts(topics["FORECASTS"])
    assert set(got) == set(forecasts)
    for fkey, values in forecasts.items():
        np.testing.assert_allclose(got[fkey].values, values, rtol=1e-6)
        assert got[fkey].levels == LEVELS and got[fkey].lower is not None
    assert set(_check(topics["ALERTS"], "application/json")) == {"alert/1"}
    dead = _check(topics["DEAD_LETTER"], "application/octet-stream")
    assert len(dead["dead_letter/1"]) == len(BAD)
    changelog = _check(topics["STATE_CHANGELOG"], "application/vnd.streamcast.state")
    kinds = {"marker" if r.key == MARKER_KEY else "state" for r in changelog["changelog/1"]}
    assert kinds == {"marker", "state"}
