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
import tomllib
from collections.abc import Mapping, Sequence
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
from training.errors import ConfigError

Baseline = Literal["naive", "seasonal_naive", "arima"]
#: every baseline the backtest can score beside the LSTM
BASELINES: tuple[Baseline, ...] = get_args(Baseline)

#: what a choice setting is called in messages, and what it may be
_CHOICES: dict[str, tuple[str, tuple[str, ...]]] = {
    "calendar": ("calendar feature", CALENDAR_NAMES),
    "aggregation": ("aggregation", AGGREGATIONS),
    "baselines": ("baseline", BASELINES),
}
#: the widest a setting's bad value is quoted in a message
_SHOWN = 60


class ConfigFileError(ConfigError):
    """A config file that cannot be read or holds unknown or invalid settings."""


class TrainConfig(BaseModel):
    """Everything that shapes a trained model and its evaluation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: model
    units: int = 64
    layers: int = 1
    dropout: float = 0.0
    window: int = 48
    horizon: int = 24
    calendar: tuple[CalendarName, ...] = ()
    timezone: str = "UTC"
    #: data
    interval_s: int = 3600
    max_gap: int = 3
    aggregation: Aggregation = "last"
    season: int = 24
    val_frac: float = 0.15
    test_frac: float = 0.15
    #: training: sequences of ``burn_in + seq_len`` consumed steps, losses from origins
    #: every ``origin_stride`` steps after the burn-in, each rolled out ``horizon`` steps
    seq_len: int = 96
    #: None: the window (the service's first forecast comes after ``window`` steps)
    burn_in: int | None = None
    origin_stride: int = 3
    batch_size: int = 32
    epochs: int = 100
    learning_rate: float = 3e-3
    clipnorm: float = 1.0
    patience: int = 8
    time_budget_s: float = 180.0
    seed: int = 0
    #: prediction-interval levels calibrated on the validation period
    interval_levels: tuple[float, ...] = (0.8, 0.95)
    #: the baselines scored beside the LSTM; ARIMA fits a model per key (seconds each),
    #: which a retrain of many keys may not want to pay for
    baselines: tuple[Baseline, ...] = BASELINES

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
        for name in ("units", "layers", "window", "horizon", "interval_s", "season", "seq_len"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be positive (got {getattr(self, name)})")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1) (got {self.dropout})")
        if not 0.0 < self.val_frac < 1.0 or not 0.0 < self.test_frac < 1.0:
            problems.append("val_frac and test_frac must be in (0, 1)")
        elif self.val_frac + self.test_frac >= 0.9:
            problems.append("val_frac + test_frac must leave at least 10% for training")
        if (self.burn_in is not None and self.burn_in < 0) or min(
            self.origin_stride, self.batch_size
        ) <= 0:
            problems.append("burn_in must be >= 0, origin_stride and batch_size positive")
        if self.learning_rate <= 0 or self.time_budget_s <= 0 or self.epochs <= 0:
            problems.append("learning_rate, time_budget_s and epochs must be positive")
        return problems

    @property
    def warmup_steps(self) -> int:
        """Steps run from zero state before the first training origin."""
        return self.window if self.burn_in is None else self.burn_in

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
