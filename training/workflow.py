"""The ``fit`` and ``evaluate`` pipelines: data -> model -> ONNX -> streaming backtest -> report.

``fit_pipeline`` prepares the data, trains, exports with a parity check, replays the
whole history through the *exported* model (the streaming evaluator), calibrates the
prediction intervals on the validation period, scores every model on the same
test-period origins and writes ``model.onnx``, ``report.json``, ``report.md``, the
forecasts file and PNGs. ``evaluate_pipeline`` does the same from an existing
``model.onnx`` with ONNX Runtime only, so its LSTM metrics equal ``fit``'s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from streamcast.core.artifact import (
    FeatureMeta,
    GapMeta,
    GraphNames,
    ModelMeta,
    ScalingMeta,
    TrainingMeta,
)
from streamcast.core.features import FeatureSpec, calendar_features, target_times
from training import plots
from training.backtest import Backtest, backtest, calibrate, forecast_figures
from training.config import TrainConfig
from training.data import fingerprint, load_table
from training.datasets import dataset_info, load_dataset
from training.errors import ConfigError, DataError
from training.evaluate import (
    actuals,
    emitting_rows,
    load_session,
    position_since_reset,
    write_forecasts,
)
from training.metrics import METRIC_NAMES
from training.prep import Split, fit_scaling, scale_series, split
from training.regular import PrepReport, regularise
from training.report import comparison_table, write_report
from training.series import SeriesSet
from training.timetext import format_interval, parse_interval

DATASET_PREFIX = "dataset:"


@dataclass(frozen=True)
class DataSource:
    """Where the history comes from: a file with named columns, or ``dataset:NAME``."""

    spec: str
    key_col: str | None = None
    time_col: str | None = None
    value_col: str | None = None
    feature_cols: tuple[str, ...] = ()

    @property
    def dataset(self) -> str | None:
        """The built-in dataset's name, or None for a file."""
        return self.spec[len(DATASET_PREFIX) :] if self.spec.startswith(DATASET_PREFIX) else None

    def load(self) -> pd.DataFrame:
        """The canonical long frame (raises DataError/ConfigError with a clear message)."""
        if self.dataset is not None:
            return load_dataset(self.dataset)
        if self.time_col is None or self.value_col is None:
            raise ConfigError("--time-col and --value-col are required when --data is a file")
        return load_table(
            self.spec,
            key_col=self.key_col,
            time_col=self.time_col,
            value_col=self.value_col,
            feature_cols=self.feature_cols,
        )


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


def prepare(frame: pd.DataFrame, config: TrainConfig) -> tuple[SeriesSet, PrepReport, Split]:
    """Regularise and split; checks that the data allow the window and horizon."""
    series, prep = regularise(
        frame,
        interval=config.interval_s,
        max_gap=config.max_gap,
        min_length=config.window + 1,
        aggregation=config.aggregation,
        duplicates="error",
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


def _row_inputs(
    series: SeriesSet,
    scaled: npt.NDArray[np.float32],
    spec: FeatureSpec,
    rows: npt.NDArray[np.int64],
) -> npt.NDArray[np.float32]:
    """Cell inputs ``[..., F]`` of rows: x then the next interval's calendar."""
    cal = calendar_features(series.ts[rows] + series.interval_s, spec)
    return np.concatenate([scaled[rows], cal], axis=-1).astype(np.float32)


def _real_parity_inputs(
    model: Any,
    series: SeriesSet,
    scaled: npt.NDArray[np.float32],
    spec: FeatureSpec,
    *,
    parts: Split,
    config: TrainConfig,
) -> Any:
    """Real validation rows with the states the model reaches after ``window`` steps."""
    import tensorflow as tf  # noqa: PLC0415 - this module is imported by evaluate too

    from training.export import StepInputs  # noqa: PLC0415

    pos = position_since_reset(series)
    candidates = np.flatnonzero(parts.val & (pos >= config.window))
    if len(candidates) == 0:
        return None
    rows = candidates[np.linspace(0, len(candidates) - 1, min(32, len(candidates))).astype(int)]
    history = rows[:, None] - np.arange(config.window, 0, -1)[None, :]
    h_all, c_all = model.sequence_states(tf.constant(_row_inputs(series, scaled, spec, history)))
    calendar = None
    if spec.n_calendar:
        calendar = calendar_features(
            target_times(series.ts[rows], series.interval_s, config.horizon), spec
        )
    return StepInputs(x=scaled[rows], h=h_all[-1].numpy(), c=c_all[-1].numpy(), calendar=calendar)


def _headline(metrics: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    return {m: {k: float(v[k]) for k in METRIC_NAMES} for m, v in metrics.items()}


def _base_report(
    name: str,
    source: str,
    frame: pd.DataFrame,
    series: SeriesSet,
    *,
    prep: PrepReport,
    parts: Split,
    config: TrainConfig,
    bt: Backtest,
) -> dict[str, Any]:
    cfg = config.to_dict()
    cfg["interval"] = format_interval(config.interval_s)
    return {
        "name": name,
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "config": cfg,
        "data": {
            "source": source,
            "fingerprint": fingerprint(frame),
            "n_keys": len(series.keys),
            "n_rows": series.n_rows,
            "rows": {
                "train": int(parts.train.sum()),
                "val": int(parts.val.sum()),
                "test": int(parts.test.sum()),
            },
            "prep": prep.to_dict(),
        },
        "metrics": bt.metrics,
        "streaming": {
            "ort_calls": bt.fc.calls,
            "forecast_origins": len(bt.fc.row),
            "test_origins": len(bt.test),
            "scored_forecasts": int(bt.mask.sum()),
        },
    }


def fit_pipeline(
    source: DataSource,
    config: TrainConfig,
    out_dir: Path,
    name: str,
    *,
    verbose: bool = True,
    forecasts_file: str = "forecasts.parquet",
) -> dict[str, Any]:
    """Train, export, backtest and write every output into ``out_dir``; returns the report."""
    from training.export import export_step, rewrite_metadata  # noqa: PLC0415 - TensorFlow
    from training.fit import train  # noqa: PLC0415

    started = time.monotonic()
    timings: dict[str, float] = {}
    frame = source.load()
    series, prep, parts = prepare(frame, config)
    if verbose:
        print(prep.summary())
    value_scaling, extra_scaling = fit_scaling(series, parts.train)
    scaled, _, _ = scale_series(series, value_scaling, extra_scaling, window=config.window)
    spec = FeatureSpec(
        interval_s=config.interval_s,
        value_name=series.value_name,
        extra_names=series.extra_names,
        calendar=config.calendar,
        timezone=config.timezone,
    )
    timings["load_prepare"] = time.monotonic() - started
    out_dir.mkdir(parents=True, exist_ok=True)
    result = train(
        series,
        scaled,
        parts.role,
        spec,
        config,
        checkpoint_dir=out_dir / "checkpoints",
        verbose=verbose,
    )
    timings["train"] = result.seconds
    data_fingerprint = fingerprint(frame)
    meta = ModelMeta(
        name=name,
        version=datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + data_fingerprint[7:15],
        created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        graph=GraphNames() if spec.n_calendar else GraphNames(calendar=None),
        state_size=result.model.state_size,
        layers=config.layers,
        units=config.units,
        window=config.window,
        horizon=config.horizon,
        interval_s=config.interval_s,
        aggregation=config.aggregation,
        features=FeatureMeta(
            value_name=series.value_name,
            extra_names=series.extra_names,
            calendar=config.calendar,
            timezone=config.timezone,
        ),
        scaling=ScalingMeta(
            known=value_scaling.known, extra_loc=extra_scaling.loc, extra_scale=extra_scaling.scale
        ),
        gap=GapMeta(max_gap=config.max_gap),
        training=TrainingMeta(
            data_fingerprint=data_fingerprint,
            data_source=source.spec,
            n_keys=len(series.keys),
            n_rows=series.n_rows,
            seed=config.seed,
            config=config.to_dict(),
        ),
    )
    start = time.monotonic()
    model_path = out_dir / "model.onnx"
    if verbose:
        print(f"training done ({result.stopped}); exporting ONNX with the parity check")
    real = _real_parity_inputs(result.model, series, scaled, spec, parts=parts, config=config)
    diff = export_step(result.model, meta, model_path, real)
    timings["export"] = time.monotonic() - start
    sess, meta = load_session(model_path)
    if verbose:
        print("streaming backtest of the exported model and the baselines")
    bt = backtest(sess, meta, series, parts, config)
    timings.update(bt.timings)
    calibration, drift = calibrate(bt.fc, series, parts, config)
    meta = meta.model_copy(
        update={
            "calibration": calibration,
            "drift": drift,
            "training": meta.training.model_copy(
                update={"metrics": {**_headline(bt.metrics), "parity": {"max_abs_diff": diff}}}
            ),
        }
    )
    rewrite_metadata(model_path, meta)
    start = time.monotonic()
    write_forecasts(out_dir / forecasts_file, series, bt.fc, meta.horizon)
    figures = [plots.loss_curve(result.history, result.best_epoch, out_dir / "loss.png").name]
    figures += forecast_figures(series, bt, out_dir, config.season)
    timings["write_outputs"] = time.monotonic() - start
    timings["total"] = time.monotonic() - started
    report = _base_report(
        name, source.spec, frame, series, prep=prep, parts=parts, config=config, bt=bt
    )
    report["parity"] = {"max_abs_diff": diff, "tolerance": 1e-5}
    report["training"] = {
        "epochs_run": len(result.history["loss"]),
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "stopped": result.stopped,
        "train_chunks": result.n_train_chunks,
        "val_chunks": result.n_val_chunks,
        "history": result.history,
    }
    report["calibration"] = calibration.model_dump()
    report["model"] = {"version": meta.version, "state_size": meta.state_size}
    report["timings"] = timings
    report["files"] = {"model": "model.onnx", "forecasts": forecasts_file, "figures": figures}
    write_report(out_dir, report)
    if verbose:
        print(comparison_table(bt.metrics))
    return report


def evaluate_pipeline(
    model_path: Path,
    source: DataSource,
    out_dir: Path,
    *,
    verbose: bool = True,
    forecasts_file: str = "forecasts.parquet",
) -> dict[str, Any]:
    """Re-run the streaming backtest of an exported model with ONNX Runtime only."""
    started = time.monotonic()
    try:
        sess, meta = load_session(model_path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{model_path}: not a streamcast model: {exc}".splitlines()[0]) from exc
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise DataError(f"{model_path}: cannot load the ONNX model: {exc}".splitlines()[0]) from exc
    # the model's own description wins over the recorded training config (and fills in
    # for models whose metadata carries none)
    config = TrainConfig.from_dict(
        {
            **dict(meta.training.config),
            "interval_s": meta.interval_s,
            "window": meta.window,
            "horizon": meta.horizon,
            "max_gap": meta.gap.max_gap,
            "aggregation": meta.aggregation,
            "calendar": meta.features.calendar,
            "timezone": meta.features.timezone,
        }
    )
    frame = source.load()
    series, prep, parts = prepare(frame, config)
    bt = backtest(sess, meta, series, parts, config)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_forecasts(out_dir / forecasts_file, series, bt.fc, meta.horizon)
    figures = forecast_figures(series, bt, out_dir, config.season)
    timings = {**bt.timings, "total": time.monotonic() - started}
    report = _base_report(
        meta.name, source.spec, frame, series, prep=prep, parts=parts, config=config, bt=bt
    )
    report["parity"] = {
        "max_abs_diff": meta.training.metrics.get("parity", {}).get("max_abs_diff"),
        "tolerance": 1e-5,
        "note": "measured at export (recorded in the model's metadata); evaluate runs ONNX only",
    }
    report["model"] = {
        "path": str(model_path),
        "version": meta.version,
        "trained_on": meta.training.data_fingerprint,
    }
    report["timings"] = timings
    report["files"] = {"forecasts": forecasts_file, "figures": figures}
    write_report(out_dir, report)
    if verbose:
        print(comparison_table(bt.metrics))
    return report
