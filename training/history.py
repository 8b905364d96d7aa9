"""A training history from where it comes from to the arrays the model reads.

The first steps of ``fit``, ``evaluate`` and ``tune`` (:mod:`training.workflow`,
:mod:`training.tune`):

1. :class:`DataSource` says where the history is (a file with named columns, or a
   built-in ``dataset:NAME``), which time range of it to use and what to do with
   duplicate timestamps, and :func:`dataset_defaults` what settings suit a dataset;
2. :func:`load_and_prepare` reads it, regularises it onto the model's interval grid
   (inferred unless given), splits it chronologically by the protocol (``rolling``:
   fractions; ``last-window``: the last ``horizon`` rows of each key), chooses the unset
   settings from the data (:mod:`training.defaults`, with reasons) and lays the
   validation rows (a :class:`PreparedHistory`), checking that the window and horizon
   leave something to score;
3. :func:`scale_history` fits the global unit ``kappa`` and the extras' scaling on the
   training rows and builds every row's step input the way the service will (a
   :class:`ScaledHistory`, with the model's :class:`FeatureSpec`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from streamcast.core.artifact import SourceColumns
from streamcast.core.features import ExtraScaling, FeatureSpec, LevelScale
from training import defaults
from training.config import TrainConfig
from training.data import TS, fingerprint, load_table
from training.datasets import dataset_info, load_dataset
from training.errors import ConfigError, DataError
from training.evaluate import RowInputs, actuals, emitting_rows, row_inputs
from training.prep import Split, fit_scaling, lay_validation, split, split_last_window
from training.regular import Duplicates, PrepReport, regularise
from training.series import SeriesSet
from training.timetext import format_interval, iso_ms, parse_grid

DATASET_PREFIX = "dataset:"


@dataclass(frozen=True)
class DataSource:
    """Where the history comes from: a file with named columns, or ``dataset:NAME``.

    ``since_ms``/``until_ms`` (epoch milliseconds, UTC) keep the rows whose event time is
    in ``[since, until)``, before anything else looks at the data; ``duplicates`` is what
    to do with rows of one key at the same time (:func:`training.regular.regularise`:
    ``first`` is what the service does, an exported ticks topic may hold a producer's
    retries).
    """

    spec: str
    key_col: str | None = None
    time_col: str | None = None
    value_col: str | None = None
    feature_cols: tuple[str, ...] = ()
    since_ms: int | None = None
    until_ms: int | None = None
    duplicates: Duplicates = "error"

    @property
    def dataset(self) -> str | None:
        """The built-in dataset's name, or None for a file."""
        return self.spec[len(DATASET_PREFIX) :] if self.spec.startswith(DATASET_PREFIX) else None

    @property
    def description(self) -> str:
        """The source as the report and the model's metadata name it (with its range)."""
        bounds = [
            f"{word} {iso_ms(ms)}"
            for word, ms in (("since", self.since_ms), ("until", self.until_ms))
            if ms is not None
        ]
        return " ".join([self.spec, *bounds])

    @property
    def columns(self) -> SourceColumns:
        """The columns it reads (a built-in dataset: those of its exported CSV), as the
        model records them for ``evaluate`` (:meth:`with_model_columns`)."""
        if self.dataset is not None:
            info = dataset_info(self.dataset)
            return SourceColumns(
                key=info.key_col, time=info.time_col, value=info.value_col,
                features=info.feature_cols,
            )  # fmt: skip
        if self.time_col is None or self.value_col is None:
            raise ConfigError("--time-col and --value-col are required when --data is a file")
        return SourceColumns(
            key=self.key_col, time=self.time_col, value=self.value_col,
            features=self.feature_cols,
        )  # fmt: skip

    def with_model_columns(self, columns: SourceColumns | None) -> DataSource:
        """This source with every column it does not name taken from the model's training
        columns (``evaluate``: the flags given still win; a model exported before the
        columns were recorded, ``None``, needs them given as before)."""
        if self.dataset is not None:
            return self
        if columns is None:
            if self.time_col is None or self.value_col is None:
                raise ConfigError(
                    "--time-col and --value-col are required when --data is a file (the "
                    "model predates recorded training columns; give --key-col and --features "
                    "too if it was trained with them)"
                )
            return self
        return replace(
            self,
            key_col=self.key_col if self.key_col is not None else columns.key,
            time_col=self.time_col if self.time_col is not None else columns.time,
            value_col=self.value_col if self.value_col is not None else columns.value,
            feature_cols=self.feature_cols or columns.features,
        )

    def load(self) -> pd.DataFrame:
        """The canonical long frame (raises DataError/ConfigError with a clear message)."""
        if self.dataset is not None:
            frame = load_dataset(self.dataset)
        elif self.time_col is None or self.value_col is None:
            raise ConfigError("--time-col and --value-col are required when --data is a file")
        else:
            frame = load_table(
                self.spec,
                key_col=self.key_col,
                time_col=self.time_col,
                value_col=self.value_col,
                feature_cols=self.feature_cols,
            )
        return self._in_range(frame)

    def _in_range(self, frame: pd.DataFrame) -> pd.DataFrame:
        if self.since_ms is None and self.until_ms is None:
            return frame
        since, until = self.since_ms, self.until_ms
        if since is not None and until is not None and since >= until:
            raise ConfigError(f"--since {iso_ms(since)} is not before --until {iso_ms(until)}")
        ts = frame[TS].to_numpy()
        keep = np.ones(len(frame), dtype=bool)
        if since is not None:
            keep &= ts >= since
        if until is not None:
            keep &= ts < until
        if not keep.any():
            raise DataError(
                f"{self.spec}: no rows in {self.description.removeprefix(self.spec).strip()}; "
                f"the data runs from {iso_ms(ts.min())} to {iso_ms(ts.max())}"
            )
        kept = frame[keep].reset_index(drop=True)
        kept.attrs.update(frame.attrs)
        return kept


def dataset_defaults(source: DataSource) -> dict[str, Any]:
    """Config defaults that suit a built-in dataset (interval, zone, season, calendar)."""
    if source.dataset is None:
        return {}
    info = dataset_info(source.dataset)
    grid = parse_grid(info.interval, trading_days=info.trading_days)
    calendar: tuple[str, ...] = ()
    if grid.is_fixed:
        calendar = ("time_of_day", "day_of_week") if grid.seconds < 86_400 else ("day_of_week",)
    return {
        "interval": info.interval,
        "trading_days": info.trading_days,
        "timezone": info.timezone,
        "season": info.season,
        "max_gap": info.max_gap,
        "calendar": calendar,
    }


@dataclass(frozen=True)
class PreparedHistory:
    """A history loaded, put on the interval grid and split chronologically."""

    #: where it came from (``DataSource.spec``) and its canonical long frame
    source: str
    frame: pd.DataFrame
    series: SeriesSet
    prep: PrepReport
    parts: Split
    #: the config with every choice made from the data, and why (:mod:`training.defaults`)
    config: TrainConfig
    reasons: tuple[str, ...] = ()
    #: the columns it was read from (:attr:`DataSource.columns`)
    columns: SourceColumns | None = None

    @property
    def fingerprint(self) -> str:
        """``sha256:...`` of the canonical data (see :func:`training.data.fingerprint`)."""
        return fingerprint(self.frame)


@dataclass(frozen=True)
class ScaledHistory:
    """The scaling fitted on the training rows and every row's step input."""

    scheme: LevelScale
    extra_scaling: ExtraScaling
    #: every row's step input, level and unit, as the service builds them
    inputs: RowInputs
    spec: FeatureSpec


def _regularise(
    frame: pd.DataFrame, config: TrainConfig, min_length: int, duplicates: Duplicates
) -> tuple[SeriesSet, PrepReport]:
    return regularise(
        frame,
        interval=config.interval,
        max_gap=config.max_gap,
        min_length=min_length,
        aggregation=config.aggregation,
        duplicates=duplicates,
        timezone=config.timezone,
        trading_days=config.trading_days,
        holidays=config.holidays,
    )


def _split(series: SeriesSet, config: TrainConfig) -> Split:
    if config.protocol == "last-window":
        return split_last_window(series, config.horizon)
    return split(series, config.val_frac, config.test_frac)


def prepare(
    frame: pd.DataFrame, config: TrainConfig, duplicates: Duplicates = "error"
) -> tuple[SeriesSet, PrepReport, Split, TrainConfig, list[str]]:
    """Regularise, split, choose the unset settings, lay validation; checks that the data
    allow the window and horizon. Returns the config with every choice made and why."""
    series, prep = _regularise(frame, config, 2, duplicates)
    parts = _split(series, config)
    chosen, why = defaults.choose(config, series, parts)
    window = chosen.window_
    grid = series.grid
    spelled = f"{grid.months}M" if grid.kind == "months" else format_interval(grid.seconds)
    chosen = chosen.updated(interval=spelled, holidays=grid.holidays)
    if chosen.interval != config.interval:
        why.insert(
            1,
            f"interval {grid.describe()} (inferred from the data)"
            if config.interval is None
            else f"interval {grid.describe()}",
        )
    lengths = np.diff(np.append(np.flatnonzero(series.reset), series.n_rows))
    if (lengths < window + 1).any():
        # segments the window never fills forecast nothing: drop and report them
        series, prep = _regularise(frame, chosen, window + 1, duplicates)
        parts = _split(series, chosen)
    parts = lay_validation(
        series, parts, horizon=chosen.horizon, window=window, val_frac=chosen.val_frac
    )
    emit = emitting_rows(series, window) & parts.test
    _, valid = actuals(series, np.flatnonzero(emit), chosen.horizon)
    if not valid.any():
        longest = int(np.diff(series.offsets).max())
        raise ConfigError(
            f"impossible window/horizon for this data: window {window} + horizon "
            f"{chosen.horizon} leaves no forecast origin with a target in the test period "
            f"(longest series has {longest} intervals, protocol {chosen.protocol}); "
            "use a smaller --window/--horizon or more data"
        )
    return series, prep, parts, chosen, why


def load_and_prepare(source: DataSource, config: TrainConfig) -> PreparedHistory:
    """Read the source, then :func:`prepare` it for ``config``."""
    frame = source.load()
    series, prep, parts, chosen, why = prepare(frame, config, source.duplicates)
    return PreparedHistory(
        source.description, frame, series, prep, parts, chosen, tuple(why), source.columns
    )


def scale_history(history: PreparedHistory) -> ScaledHistory:
    """Fit ``kappa`` and the extras' scaling on the training rows; every row's input."""
    series, config = history.series, history.config
    extra = fit_scaling(series, history.parts.train)
    base = LevelScale(alpha=float(config.alpha or 0.1), lags=tuple(config.lags or ()))
    kappa = defaults.fit_kappa(series, history.parts.train, base, config.window_)
    scheme = LevelScale(alpha=base.alpha, lags=base.lags, kappa=kappa, clip=base.clip)
    spec = FeatureSpec(
        interval_s=series.interval_s,
        value_name=series.value_name,
        extra_names=series.extra_names,
        calendar=config.calendar,
        timezone=config.timezone,
    )
    return ScaledHistory(scheme, extra, row_inputs(series, scheme, config.window_, extra), spec)
