"""The shipped JSON Schemas: valid, complete, printed by ``streamcast schema``, and in step
with the records the code writes (the broker-side check is tests/integration/test_contract.py)."""

from __future__ import annotations

import jsonschema
import numpy as np
import orjson
import pytest

from streamcast.core.codec import dead_letter_record
from streamcast.core.grid import Grid
from streamcast.core.records import ForecastBatch, decode_forecast, encode_forecasts
from streamcast.core.schemas import CURRENT, load_schema, schema_text, versions
from streamcast.errors import RejectReason
from streamcast.tools.cli import run


@pytest.mark.parametrize("kind", sorted(CURRENT))
def test_every_kind_ships_a_valid_schema_of_its_current_version(kind: str) -> None:
    assert CURRENT[kind] in versions(kind)
    for version in versions(kind):
        schema = load_schema(kind, version)
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$id"] == f"urn:streamcast:schema:{kind}:{version}"


def test_the_dead_letter_schema_names_every_reject_reason() -> None:
    reasons = load_schema("dead_letter")["properties"]["streamcast.reason"]["enum"]
    assert reasons == [r.value for r in RejectReason]


def test_dead_letter_headers_follow_the_schema() -> None:
    for raw in (b"garbage", None):
        _, headers = dead_letter_record(raw, b"k", RejectReason.NOT_JSON, "x", "t", 0, 5, 7, 9)
        doc = {name: value.decode() for name, value in headers}
        jsonschema.validate(doc, load_schema("dead_letter"))


def test_unknown_kind_or_version_names_what_there_is() -> None:
    with pytest.raises(KeyError, match="one of tick, forecast"):
        schema_text("forecasts")
    with pytest.raises(KeyError, match="no schema version 99"):
        schema_text("alert", 99)


def test_schema_command_prints_the_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["schema", "alert"]) == 0
    assert orjson.loads(capsys.readouterr().out) == load_schema("alert")


def test_a_calendar_grid_forecast_carries_its_targets_and_follows_the_schema() -> None:
    """Months are not ``origin + k * interval_s``: the record names the grid and writes
    its targets, the reader takes them as written, and the record is schema-valid."""

    grid = Grid.calendar_months(1)
    jan, feb = 1_704_067_200, 1_706_745_600  # 2024-01-01, 2024-02-01 UTC
    batch = ForecastBatch(
        ["a", "b"], np.array([jan, feb]), np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]),
        "m", "1", 2_629_746, 3, np.array([0, 1]), grid=grid,
    )  # fmt: skip
    schema = load_schema("forecast", CURRENT["forecast"])
    for (key, value), origin in zip(encode_forecasts(batch), (jan, feb), strict=True):
        doc = orjson.loads(value)
        jsonschema.validate(doc, schema, format_checker=jsonschema.FormatChecker())
        assert doc["grid"] == "months" and doc["interval"] == "P1M"
        got = decode_forecast(value, key).target_ts().tolist()
        assert got == grid.targets(np.array([origin]), 3)[0].tolist()
    first = decode_forecast(encode_forecasts(batch)[0][1]).target_ts().tolist()
    assert first == [1_706_745_600, 1_709_251_200, 1_711_929_600]  # Feb, Mar, Apr 1st
