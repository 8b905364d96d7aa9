"""Training configuration: one frozen object parsed at the edge (CLI, tune) and passed down.

:class:`TrainConfig` is a frozen pydantic model that forbids unknown settings. Every way
a config can be wrong (an unknown setting, a value of the wrong type, a choice that does
not exist, a number out of range) is one :class:`ConfigFileError` with a one-line message
naming the setting. The choices (aggregations, calendar features) are the service's own,
from :mod:`streamcast.core.artifact` and :mod:`streamcast.core.features`.

A config round-trips through JSON or TOML (``TrainConfig.load`` / ``TrainConfig.save``):
``streamcast-train tune`` writes the best one and ``streamcast-train fit --config`` reads it.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    ModelWrapValidatorHandler,
    ValidationError,
    model_validator,
)

from streamcast.core.artifact import Aggregation
from streamcast.core.features import CALENDAR_NAMES, CalendarName
from streamcast.core.intervals import AGGREGATIONS
from streamcast.core.zones import zone_problem
from training.errors import ConfigError

Baseline = Literal["naive", "seasonal_naive", "auto_ets", "auto_theta", "auto_arima"]
#: every baseline the backtest can score beside the LSTM (statsforecast's on arrays)
BASELINES: tuple[Baseline, ...] = get_args(Baseline)
Protocol = Literal["rolling", "last-window"]
#: rolling: the streaming backtest (every test-period origin); last-window: the standard
#: one-origin protocol (M3/Monash: the last ``horizon`` rows of each key are the test)
PROTOCOLS: tuple[Protocol, ...] = get_args(Protocol)

#: what a choice setting is called in messages, and what it may be
_CHOICES: dict[str, tuple[str, tuple[str, ...]]] = {
    "calendar": ("calendar feature", CALENDAR_NAMES),
    "aggregation": ("aggregation", AGGREGATIONS),
    "baselines": ("baseline", BASELINES),
    "protocol": ("protocol", PROTOCOLS),
}
#: the widest a setting's bad value is quoted in a message
_SHOWN = 60
#: how a holiday is written (numpy and date.fromisoformat read other spellings differently)
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
#: the seeds numpy and Keras accept
_MAX_SEED = 2**32 - 1


def date_problem(text: str) -> str | None:
    """Why ``text`` is not an ISO date ``YYYY-MM-DD`` (None when it is one)."""
    if _ISO_DATE.fullmatch(text):
        try:
            date.fromisoformat(text)
        except ValueError:
            pass
        else:
            return None
    return f"{repr(text)[:_SHOWN]} is not a date (YYYY-MM-DD)"


class ConfigFileError(ConfigError):
    """A config file that cannot be read or holds unknown or invalid settings."""


class TrainConfig(BaseModel):
    """Everything that shapes a trained model and its evaluation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: model
    units: int = 64
    layers: int = 1
    dropout: float = 0.0
    #: warm-up length; None: chosen from the data (2 seasons, or 1 for short series)
    window: int | None = None
    horizon: int = 24
    calendar: tuple[CalendarName, ...] = ()
    timezone: str = "UTC"
    #: data: the interval ("1h", "5min", "1M" calendar months, "1Q"); None: inferred
    interval: str | None = None
    #: one interval per weekday that is not a holiday (prices): weekends are not gaps
    trading_days: bool = False
    #: ISO dates that are not trading days; empty with trading_days: the weekdays on which
    #: no key of the data has a value
    holidays: tuple[str, ...] = ()
    max_gap: int = 3
    aggregation: Aggregation = "last"
    #: forecasts and bands floored at 0 (counts, volumes); every training value must be >= 0
    non_negative: bool = False
    #: seasonal period in intervals (seasonal naive, MASE, lags); None: from the interval
    season: int | None = None
    val_frac: float = 0.15
    test_frac: float = 0.15
    protocol: Protocol = "rolling"
    #: scaling that follows the series: EWMA weight (None: 1 / season) and seasonal lags
    #: (None: season and 2 seasons when the window holds them)
    alpha: float | None = None
    lags: tuple[int, ...] | None = None
    #: training: segments of at most whole_max rows are one sequence from their first
    #: row; longer ones are cut into ``burn_in + seq_len`` steps at offsets drawn per epoch
    seq_len: int = 96
    whole_max: int = 400
    #: None: the window (the service's first forecast comes after ``window`` steps)
    burn_in: int | None = None
    #: origins every this many steps; None: 1, or 3 above 20,000 candidate origins
    origin_stride: int | None = None
    batch_size: int = 32
    epochs: int = 200
    learning_rate: float = 3e-3
    clipnorm: float = 1.0
    patience: int = 8
    #: wall-clock seconds for training and the fine-tune on train + validation
    time_budget_s: float = 420.0
    #: after early stopping, fine-tune on training + validation rows (within the budget)
    refit: bool = True
    #: shrink the forecast toward naive by the validation-chosen weight (with the guard)
    shrinkage: bool = True
    #: after the backtest, fine-tune on every row (test included) and export that model
    final_refit: bool = False
    #: an LSTM that loses to the best baseline on validation is an error, not a warning
    require_beat_baseline: bool = False
    seed: int = 0
    #: prediction-interval levels calibrated on the validation period
    interval_levels: tuple[float, ...] = (0.8, 0.95)
    #: the baselines scored beside the LSTM
    baselines: tuple[Baseline, ...] = BASELINES
    #: wall-clock seconds the statistical baselines may take in all (validation included);
    #: a baseline projected to exceed it is skipped with the reason
    baseline_budget_s: float = 360.0

    @model_validator(mode="wrap")
    @classmethod
    def _validate(cls, data: Any, handler: ModelWrapValidatorHandler[TrainConfig]) -> TrainConfig:
        """Types and choices (pydantic), then the ranges; any problem is one ConfigFileError."""
        try:
            config = handler(data)
        except ValidationError as exc:
            raise ConfigFileError(_describe(exc.errors())) from None
        problems = config._range_problems()
        if problems:
            raise ConfigFileError("; ".join(problems))
        return config

    def _range_problems(self) -> list[str]:
        """What is out of range, one phrase per rule broken (empty when all is well)."""
        problems = []
        for name in ("units", "layers", "window", "horizon", "season", "seq_len", "whole_max"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                problems.append(f"{name} must be positive (got {value})")
        if self.alpha is not None and not 0.0 < self.alpha <= 1.0:
            problems.append(f"alpha must be in (0, 1] (got {self.alpha})")
        if self.lags is not None and any(lag <= 0 for lag in self.lags):
            problems.append(f"lags must be positive (got {list(self.lags)})")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1) (got {self.dropout})")
        if not 0.0 < self.val_frac < 1.0 or not 0.0 < self.test_frac < 1.0:
            problems.append("val_frac and test_frac must be in (0, 1)")
        elif self.val_frac + self.test_frac >= 0.9:
            problems.append("val_frac + test_frac must leave at least 10% for training")
        if (self.burn_in is not None and self.burn_in < 0) or min(
            1 if self.origin_stride is None else self.origin_stride, self.batch_size
        ) <= 0:
            problems.append("burn_in must be >= 0, origin_stride and batch_size positive")
        if self.learning_rate <= 0 or self.time_budget_s <= 0 or self.epochs <= 0:
            problems.append("learning_rate, time_budget_s and epochs must be positive")
        if self.baseline_budget_s <= 0:
            problems.append("baseline_budget_s must be positive")
        return problems + self._value_problems() + self._time_problems()

    def _value_problems(self) -> list[str]:
        """Numbers no run can use (NaN or inf, levels outside (0, 1), seeds Keras refuses)."""
        problems = []
        for name in ("learning_rate", "clipnorm", "time_budget_s", "baseline_budget_s"):
            if not math.isfinite(getattr(self, name)):
                problems.append(f"{name} must be a finite number (got {getattr(self, name)})")
        if any(not 0.0 < level < 1.0 for level in self.interval_levels):
            problems.append(f"interval_levels must be in (0, 1) (got {list(self.interval_levels)})")
        if self.max_gap < 0:
            problems.append(f"max_gap must be >= 0 (got {self.max_gap})")
        if not 0 <= self.seed <= _MAX_SEED:
            problems.append(f"seed must be in [0, 2**32 - 1] (got {self.seed})")
        return problems

    def _time_problems(self) -> list[str]:
        """A zone the service cannot load, a holiday that is not a date (checked here, so
        a bad one fails before training, not in the plots or the service after it)."""
        problems = []
        zone = zone_problem(self.timezone)
        if zone is not None:
            problems.append(zone)
        bad = [p for p in map(date_problem, self.holidays) if p is not None]
        if bad:
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            problems.append(f"holiday {bad[0]}{more}")
        return problems

    @property
    def warmup_steps(self) -> int:
        """Steps run from zero state before the first training origin."""
        return self.window_ if self.burn_in is None else self.burn_in

    @property
    def window_(self) -> int:
        """The window once chosen (:mod:`training.defaults`); 48 before."""
        return 48 if self.window is None else self.window

    @property
    def season_(self) -> int:
        """The season once chosen (:mod:`training.defaults`); 1 before."""
        return 1 if self.season is None else self.season

    @property
    def n_calendar(self) -> int:
        """Width of a calendar row (sin and cos per calendar feature)."""
        return 2 * len(self.calendar)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (tuples become lists)."""
        out = self.model_dump()
        out["calendar"] = list(self.calendar)
        out["interval_levels"] = list(self.interval_levels)
        out["baselines"] = list(self.baselines)
        out["holidays"] = list(self.holidays)
        if self.lags is not None:
            out["lags"] = list(self.lags)
        return out

    def updated(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (validated again)."""
        return type(self).model_validate({**self.model_dump(), **changes})

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        """Build from a mapping, rejecting unknown keys with a clear message."""
        return cls.model_validate(raw)

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        """Read a JSON (``.json``) or TOML (anything else) config file."""
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigFileError(f"cannot read config {path}: {exc.strerror}") from exc
        try:
            raw = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigFileError(f"config {path} is not valid: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigFileError(f"config {path} must hold a mapping of settings")
        return cls.from_dict(raw)

    def save(self, path: Path) -> None:
        """Write as JSON (the format ``load`` reads back)."""
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def _describe(errors: Sequence[Mapping[str, Any]]) -> str:
    """pydantic's errors as one line: unknown settings first, then each bad value."""
    unknown = [str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden"]
    problems = [f"unknown setting(s) {', '.join(unknown)}"] if unknown else []
    for error in errors:
        if error["type"] == "extra_forbidden":
            continue
        name = str(error["loc"][0]) if error["loc"] else "config"
        shown = repr(error["input"])[:_SHOWN]
        if error["type"] == "literal_error" and name in _CHOICES:
            what, choices = _CHOICES[name]
            problems.append(f"unknown {what} {shown} (choose from {choices})")
        else:
            message = str(error["msg"])
            problems.append(f"{name}: {message[:1].lower()}{message[1:]} (got {shown})")
    return "; ".join(problems)
