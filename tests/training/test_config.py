"""TrainConfig: frozen, no unknown settings, one-line errors, JSON/TOML round trips."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from streamcast.core.features import CALENDAR_NAMES
from streamcast.core.intervals import AGGREGATIONS
from training.config import ConfigFileError, TrainConfig


def _error(**settings: Any) -> str:
    with pytest.raises(ConfigFileError) as info:
        TrainConfig.from_dict(settings)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_and_derived_values() -> None:
    config = TrainConfig()
    assert (config.units, config.window, config.horizon, config.aggregation) == (
        64, None, 24, "last",
    )  # fmt: skip
    # unset choices are made from the data (training.defaults); the interval is inferred
    assert (config.interval, config.season, config.lags, config.origin_stride) == (None,) * 4
    assert config.updated(window=48).warmup_steps == 48
    assert config.updated(burn_in=5).warmup_steps == 5
    assert config.n_calendar == 0
    assert config.updated(calendar=("time_of_day", "day_of_week")).n_calendar == 4


def test_frozen_and_updated_validates_again() -> None:
    config = TrainConfig()
    with pytest.raises(ValueError, match="frozen"):
        config.units = 8  # type: ignore[misc]
    smaller = config.updated(units=8, window=24)
    assert (smaller.units, smaller.window, config.units) == (8, 24, 64)
    assert smaller == TrainConfig(units=8, window=24)
    assert hash(smaller) == hash(TrainConfig(units=8, window=24))
    with pytest.raises(ConfigFileError, match="window must be positive"):
        config.updated(window=0)
    with pytest.raises(ConfigFileError, match="unknown setting"):
        config.updated(colour="blue")


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({"units": 0}, "units must be positive (got 0)"),
        ({"seq_len": -3}, "seq_len must be positive (got -3)"),
        ({"dropout": 1.0}, "dropout must be in [0, 1) (got 1.0)"),
        ({"val_frac": 0.0}, "val_frac and test_frac must be in (0, 1)"),
        ({"val_frac": 0.5, "test_frac": 0.4}, "must leave at least 10% for training"),
        ({"burn_in": -1}, "burn_in must be >= 0"),
        ({"origin_stride": 0}, "origin_stride and batch_size positive"),
        ({"learning_rate": 0.0}, "learning_rate, time_budget_s and epochs must be positive"),
        ({"calendar": ["phase_of_moon"]}, "unknown calendar feature 'phase_of_moon'"),
        ({"aggregation": "median"}, "unknown aggregation 'median'"),
        ({"units": "many"}, "units: input should be a valid integer"),
        ({"window": 2.5}, "window: input should be a valid integer"),
        ({"calendar": "time_of_day"}, "calendar: input should be a valid tuple"),
        ({"timezone": "Mars/Base"}, "unknown time zone 'Mars/Base'"),
        ({"timezone": "America"}, "unknown time zone 'America'"),
        ({"timezone": ""}, "unknown time zone ''"),
        ({"holidays": ["2026-12-25", "2026-13-45"]}, "holiday '2026-13-45' is not a date"),
        ({"holidays": ["2026"]}, "holiday '2026' is not a date (YYYY-MM-DD)"),
        ({"max_gap": -1}, "max_gap must be >= 0 (got -1)"),
        ({"seed": -1}, "seed must be in [0, 2**32 - 1] (got -1)"),
        ({"seed": 2**32}, "seed must be in [0, 2**32 - 1]"),
        ({"learning_rate": float("nan")}, "learning_rate must be a finite number"),
        ({"time_budget_s": float("nan")}, "time_budget_s must be a finite number"),
    ],
)
def test_each_problem_is_named_on_one_line(settings: dict[str, Any], needle: str) -> None:
    assert needle in _error(**settings)


def test_choices_are_the_services() -> None:
    assert str(CALENDAR_NAMES) in _error(calendar=["moon"])
    assert str(AGGREGATIONS) in _error(aggregation="median")
    for name in AGGREGATIONS:
        assert TrainConfig(aggregation=name).aggregation == name
    assert TrainConfig.from_dict({"calendar": list(CALENDAR_NAMES)}).calendar == CALENDAR_NAMES


def test_every_range_problem_is_reported_at_once() -> None:
    message = _error(units=0, horizon=0, dropout=2.0)
    assert message.count(";") == 2
    assert "units" in message and "horizon" in message and "dropout" in message


def test_unknown_settings_are_named_first() -> None:
    message = _error(colour="blue", size=3, units="x")
    assert message.startswith("unknown setting(s) colour, size; ")
    assert "units:" in message


def test_json_round_trip(tmp_path: Path) -> None:
    config = TrainConfig(
        units=8, calendar=("time_of_day",), burn_in=12, interval_levels=(0.5, 0.9), dropout=0.1
    )
    path = tmp_path / "best.json"
    config.save(path)
    raw = json.loads(path.read_text())
    assert raw["calendar"] == ["time_of_day"] and raw["burn_in"] == 12
    assert list(raw) == list(TrainConfig.model_fields)
    assert TrainConfig.load(path) == config
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_toml_is_read(tmp_path: Path) -> None:
    path = tmp_path / "best.toml"
    path.write_text('units = 16\ncalendar = ["day_of_week"]\nlearning_rate = 0.01\ndropout = 0\n')
    config = TrainConfig.load(path)
    assert (config.units, config.calendar, config.learning_rate) == (16, ("day_of_week",), 0.01)
    assert config.dropout == 0.0 and config.burn_in is None


@pytest.mark.parametrize(
    ("name", "text", "needle"),
    [
        ("c.json", "{not json", "is not valid"),
        ("c.toml", "units = = 3", "is not valid"),
        ("c.json", "[1, 2]", "must hold a mapping"),
        ("c.json", '{"units": 8, "colour": "blue"}', "unknown setting(s) colour"),
    ],
)
def test_bad_files(tmp_path: Path, name: str, text: str, needle: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigFileError) as info:
        TrainConfig.load(path)
    assert needle in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="cannot read config"):
        TrainConfig.load(tmp_path / "nope.toml")


def test_valid_zones_and_holidays_are_kept() -> None:
    config = TrainConfig(timezone="Australia/Melbourne", holidays=("2026-12-25",))
    assert (config.timezone, config.holidays) == ("Australia/Melbourne", ("2026-12-25",))
    assert TrainConfig(timezone="Etc/GMT+5").timezone == "Etc/GMT+5"
