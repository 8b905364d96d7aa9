"""A training history from where it comes from to the arrays the model reads.

The first steps of ``fit``, ``evaluate`` and ``tune`` (:mod:`training.workflow`,
:mod:`training.tune`):

1. :class:`DataSource` says where the history is (a file with named columns, or a
   built-in ``dataset:NAME``), which time range of it to use and what to do with
   duplicate timestamps, and :func:`dataset_defaults` what settings suit a dataset;
2. :func:`load_and_prepare` reads it, regularises it onto the model's interval grid and
   splits it chronologically (a :class:`PreparedHistory`), checking that the window and
   horizon leave something to score;
3. :func:`scale_history` fits the scaling on the training rows and scales every row the
   way the service will (a :class:`ScaledHistory`, with the model's :class:`FeatureSpec`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from streamcast.core.features import ExtraScaling, FeatureSpec, Float32Array, ValueScaling
from training.config import TrainConfig
from training.data import TS, fingerprint, load_table
from training.datasets import dataset_info, load_dataset
from training.errors import ConfigError, DataError
from training.evaluate import actuals, emitting_rows
from training.prep import Split, fit_scaling, scale_series, split
from training.regular import Duplicates, PrepReport, regularise
from training.series import SeriesSet
from training.timetext import iso_ms, parse_interval

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
    interval_s = parse_interval(info.interval)
    calendar = ["time_of_day", "day_of_week"] if interval_s < 86_400 else ["day_of_week"]
    return {
        "interval_s": interval_s,
        "timezone": info.timezone,
        "season": info.season,
        "max_gap": info.max_gap,
        "calendar": tuple(calendar),
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

    @property
    def fingerprint(self) -> str:
        """``sha256:...`` of the canonical data (see :func:`training.data.fingerprint`)."""
        return fingerprint(self.frame)


@dataclass(frozen=True)
class ScaledHistory:
    """The scaling fitted on the training rows, every row scaled with it, and the features
    the model reads."""

    value_scaling: ValueScaling
    extra_scaling: ExtraScaling
    #: ``[N, 1 + E]`` every row scaled as the service will scale it
    scaled: Float32Array
    spec: FeatureSpec


def prepare(
    frame: pd.DataFrame, config: TrainConfig, duplicates: Duplicates = "error"
) -> tuple[SeriesSet, PrepReport, Split]:
    """Regularise and split; checks that the data allow the window and horizon."""
    series, prep = regularise(
        frame,
        interval=config.interval_s,
        max_gap=config.max_gap,
        min_length=config.window + 1,
        aggregation=config.aggregation,
        duplicates=duplicates,
    )
    parts = split(series, config.val_frac, config.test_frac)
    emit = emitting_rows(series, config.window) & parts.test
    _, valid = actuals(series, np.flatnonzero(emit), config.horizon)
    if not valid.any():
        longest = int(np.diff(series.offsets).max())
        raise ConfigError(
            f"impossible window/horizon for this data: window {config.window} + horizon "
            f"{config.horizon} leaves no forecast origin with a target in the test period "
            f"(longest series has {longest} intervals, test fraction {config.test_frac}); "
            "use a smaller --window/--horizon or more data"
        )
    return series, prep, parts


def load_and_prepare(source: DataSource, config: TrainConfig) -> PreparedHistory:
    """Read the source, then :func:`prepare` it for ``config``."""
    frame = source.load()
    series, prep, parts = prepare(frame, config, source.duplicates)
    return PreparedHistory(source.description, frame, series, prep, parts)


def scale_history(history: PreparedHistory, config: TrainConfig) -> ScaledHistory:
    """Fit the scaling on the observed training rows and scale every row with it."""
    series = history.series
    value_scaling, extra_scaling = fit_scaling(series, history.parts.train)
    scaled, _, _ = scale_series(series, value_scaling, extra_scaling, window=config.window)
    spec = FeatureSpec(
        interval_s=config.interval_s,
        value_name=series.value_name,
        extra_names=series.extra_names,
        calendar=config.calendar,
        timezone=config.timezone,
    )
    return ScaledHistory(value_scaling, extra_scaling, scaled, spec)
