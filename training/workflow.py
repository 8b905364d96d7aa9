"""The ``fit`` and ``evaluate`` pipelines: data -> model -> ONNX -> streaming backtest -> report.

:func:`fit_pipeline` runs these steps, each a function here or in the module named:

1. load, regularise, split by the protocol and choose the unset settings from the data
   (:func:`training.history.load_and_prepare`, the reasons printed), then fit the unit
   and build every row's input (:func:`training.history.scale_history`);
2. the statistical baselines start in a separate process (:class:`BaselineJob`: they need
   the data, not the model), while :func:`train_model` trains;
3. :func:`model_metadata`: the artifact's self-description;
4. :func:`export_model`: ONNX export, with the parity check on random and real inputs,
   and the self-test sample run through the written file;
5. :func:`training.backtest.backtest`: replay the whole history through the *exported*
   model with ONNX Runtime and score it and the baselines on the same test origins;
   :func:`guard`: the same on the validation origins, a loud warning (with
   ``require_beat_baseline``: an error) when the LSTM loses to the best baseline there;
6. :func:`stamp_calibration`: calibrate the prediction intervals and the error-drift
   reference on the validation period, measure the input-drift reference
   (:mod:`training.input_drift`), and write them, the self-test sample and the headline
   metrics into the model, which must then pass its own self-test;
7. ``final_refit``: fine-tune on every row and export that model (its metrics above are
   the last honest ones; the forecasts file is the refit model's; its self-test sample is
   its own);
8. :func:`write_outputs`: the forecasts file and the figures (:mod:`training.figures`:
   bands shaded, the model's zone on the axis, which keys and why); the report
   (:func:`training.report.backtest_report`, :func:`quality_sections`: interval coverage
   and input-drift alarms on the test period, plus fit's own sections), written by
   :func:`publish_report`.

:func:`evaluate_pipeline` does 1 (without scaling: the model carries its scaling), 5, 7
and 8 for an existing ``model.onnx`` (:func:`open_model`, :func:`config_from_model`) with
ONNX Runtime only, so its LSTM metrics equal ``fit``'s.

TensorFlow is imported only inside the steps that train or export, so ``evaluate`` never
loads it.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort

from streamcast.core.artifact import (
    FeatureMeta,
    GapMeta,
    GraphNames,
    GridMeta,
    ModelMeta,
    ScalingMeta,
    SelfTestMeta,
    TrainingMeta,
)
from streamcast.core.features import floor_non_negative
from streamcast.core.model import OnnxStepModel, self_test_failures
from streamcast.errors import ModelError
from training import baselines as baseline_models
from training import plots
from training.backtest import (
    Backtest,
    backtest,
    calibrate,
    coverage,
    forecast_bands,
    test_origins,
    validation_origins,
    validation_ranking,
)
from training.config import TrainConfig
from training.errors import DataError, ExportError, TrainingError
from training.evaluate import load_session, position_since_reset, write_forecasts
from training.figures import Figures, forecast_figures
from training.history import (
    DataSource,
    PreparedHistory,
    ScaledHistory,
    load_and_prepare,
    scale_history,
)
from training.input_drift import InputReference, input_alarms, input_reference
from training.metrics import METRIC_NAMES
from training.report import backtest_report, comparison_table, write_report
from training.series import SeriesSet

if TYPE_CHECKING:  # TensorFlow: imported where a step needs it
    from training.fit import FitResult
    from training.model import StepModel

#: real validation rows the parity check runs through both TensorFlow and ONNX Runtime
PARITY_ROWS = 32
#: the export's parity tolerance (``training.export.PARITY_TOLERANCE``, which would
#: import TensorFlow), as the evaluate report repeats it
EXPORT_PARITY_TOLERANCE = 1e-5


class BaselineLosesError(TrainingError):
    """``--require-beat-baseline``: the LSTM lost to a baseline on validation."""


def _say(message: str) -> None:
    print(message, flush=True)


class BaselineJob:
    """The statistical baselines at the test and validation origins, computed in a
    separate process (statsforecast on arrays, one thread) while the LSTM trains."""

    def __init__(
        self, series: SeriesSet, groups: dict[str, Any], config: TrainConfig, *, verbose: bool
    ) -> None:
        names = tuple(n for n in baseline_models.STATISTICAL if n in config.baselines)
        self._pool: ProcessPoolExecutor | None = None
        self._future: Future[baseline_models.Run] | None = None
        self._run = baseline_models.Run()
        if not names:
            return
        self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        self._future = self._pool.submit(
            baseline_models.statistical, series, groups, config.horizon, config.season_,
            names, budget_s=config.baseline_budget_s, log=_say if verbose else None,
        )  # fmt: skip

    def result(self) -> baseline_models.Run:
        """Wait for the baselines (once)."""
        if self._future is not None:
            self._run = self._future.result()
            self._future = None
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        return self._run


def fit_pipeline(  # noqa: PLR0915 - the steps of the module docstring, in order
    source: DataSource,
    config: TrainConfig,
    out_dir: Path,
    name: str,
    *,
    verbose: bool = True,
    forecasts_file: str = "forecasts.parquet",
) -> dict[str, Any]:
    """Train, export, backtest and write every output into ``out_dir``; returns the report."""
    started = time.monotonic()
    history = load_and_prepare(source, config)
    config = history.config
    if verbose:
        print(history.prep.summary())
        for line in history.reasons:
            print(f"default: {line}")
    check_non_negative(history.series, config, verbose=verbose)
    scaled = scale_history(history)
    series, parts = history.series, history.parts
    groups = {
        "test": test_origins(series, parts, config),
        "val": validation_origins(series, parts, config),
    }
    job = BaselineJob(series, groups, config, verbose=verbose)
    timings = {"load_prepare": time.monotonic() - started}
    out_dir.mkdir(parents=True, exist_ok=True)
    result = train_model(history, scaled, config, verbose=verbose)
    timings["train"] = result.seconds + result.refit_seconds
    checkpoint = out_dir / "checkpoints" / "best.weights.h5"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    result.model.save_weights(checkpoint)
    meta = model_metadata(name, history, scaled, config, result)
    start = time.monotonic()
    model_path = out_dir / "model.onnx"
    if verbose:
        print(f"training done ({result.stopped}); exporting ONNX with the parity check")
    parity, self_test = export_model(
        result.model, meta, model_path, history=history, scaled=scaled, config=config
    )
    timings["export"] = time.monotonic() - start
    sess, meta = load_session(model_path)
    start = time.monotonic()
    stats = job.result()
    timings["baselines_wait"] = time.monotonic() - start
    timings.update({f"baseline {k}": v for k, v in stats.seconds.items()})
    if verbose:
        print("streaming backtest of the exported model and the baselines")
    bt = backtest(sess, meta, series, parts, config, statistical=stats.forecasts)
    timings.update(bt.timings)
    ranking = validation_ranking(bt.fc, series, parts, config, stats.forecasts)
    verdict = guard(ranking, config, verbose=verbose)
    inputs = input_reference(series, parts, meta)
    meta = stamp_calibration(
        model_path, meta, bt, history, config, parity=parity, inputs=inputs, self_test=self_test
    )
    final = None
    if config.final_refit:
        final = final_refit(
            result, meta, model_path, history=history, scaled=scaled, config=config,
            verbose=verbose,
        )  # fmt: skip
        sess, meta = load_session(model_path)
        bt_final = backtest(sess, meta, series, parts, config, statistical=stats.forecasts)
        final["in_sample_test_mase"] = bt_final.metrics["lstm"]["mase"]
        bt.fc = bt_final.fc  # the forecasts file is the exported (refit) model's
    start = time.monotonic()
    loss = plots.loss_curve(result.history, result.best_epoch, out_dir / "loss.png").name
    figures = write_outputs(out_dir, forecasts_file, series, bt, meta=meta, season=config.season_)
    timings["write_outputs"] = time.monotonic() - start
    timings["total"] = time.monotonic() - started
    report = backtest_report(name, history, config, bt)
    report["defaults"] = list(history.reasons)
    report["baselines"] = {"seconds": stats.seconds, "skipped": stats.skipped}
    report["validation"] = {"metrics": ranking, **verdict}
    report.update(quality_sections(history, bt, meta))
    report["drift"]["calibration_tests"] = inputs.calibration_tests
    report["drift"]["validation_tests"] = inputs.validation_tests
    report["parity"] = parity
    report["training"] = result.report_section()
    report["calibration"] = meta.calibration.model_dump()
    report["self_test"] = {"rows": len(meta.self_test.x), "atol": meta.self_test.atol}
    report["model"] = {"version": meta.version, "state_size": meta.state_size}
    if final is not None:
        report["final_refit"] = final
    report["timings"] = timings
    report["files"] = {
        "model": "model.onnx",
        "forecasts": forecasts_file,
        **figure_files(figures, loss),
    }
    out = publish_report(out_dir, report, bt, verbose=verbose)
    if verdict.get("error"):
        raise BaselineLosesError(str(verdict["message"]))
    return out


def check_non_negative(series: SeriesSet, config: TrainConfig, *, verbose: bool) -> None:
    """``non_negative`` needs data that never goes below 0 (DataError otherwise); without
    it, data that never does gets a hint that the model could floor at 0."""
    values = series.values[:, 0]
    below = int(np.count_nonzero(values < 0))
    if config.non_negative and below:
        raise DataError(
            f"--non-negative: {below} of {len(values)} values are below 0 (min "
            f"{float(values.min()):g}); drop the flag or the rows"
        )
    if verbose and not config.non_negative and len(values) and below == 0:
        print(
            "hint: every value is >= 0; --non-negative floors the model's forecasts and "
            "bands at 0 (counts, volumes)",
            flush=True,
        )


def guard(
    ranking: dict[str, dict[str, Any]], config: TrainConfig, *, verbose: bool
) -> dict[str, Any]:
    """Compare the LSTM with the best baseline on validation: a loud warning when it loses,
    an error with ``require_beat_baseline`` (raised after the outputs are written, so the
    report shows why)."""
    if "lstm" not in ranking:
        return {"best_baseline": None, "lstm_loses": False, "message": "no validation origins"}
    others = {k: v["mase"] for k, v in ranking.items() if k != "lstm" and np.isfinite(v["mase"])}
    if not others:
        return {"best_baseline": None, "lstm_loses": False, "message": "no baseline scored"}
    best = min(others, key=lambda k: others[k])
    lstm = float(ranking["lstm"]["mase"])
    loses = lstm > others[best]
    message = f"validation MASE: lstm {lstm:.4f}, best baseline {best} {others[best]:.4f}" + (
        " -- the LSTM LOSES to it" if loses else ""
    )
    out: dict[str, Any] = {
        "best_baseline": best,
        "best_baseline_mase": others[best],
        "lstm_mase": lstm,
        "lstm_loses": bool(loses),
        "message": message,
        "error": bool(loses and config.require_beat_baseline),
    }
    if loses:
        print(
            f"WARNING: {message}: do not deploy it as is (fewer epochs or more data, another "
            f"window/season, or serve the baseline); --require-beat-baseline makes this an error",
            file=sys.stderr,
            flush=True,
        )
    elif verbose:
        print(message, flush=True)
    return out


def final_refit(
    result: FitResult,
    meta: ModelMeta,
    path: Path,
    *,
    history: PreparedHistory,
    scaled: ScaledHistory,
    config: TrainConfig,
    verbose: bool,
) -> dict[str, Any]:
    """Fine-tune on every row (test included) and export that model over ``path`` with the
    metadata the measured model had (its calibration and metrics are the honest ones) and
    a self-test sample of its own, which it must pass as the service checks it."""
    from training.export import rewrite_metadata  # noqa: PLC0415 - TensorFlow, for fit only
    from training.fit import refit_all  # noqa: PLC0415 - TensorFlow, for fit only

    before = result.refit_epochs
    start = time.monotonic()
    if verbose:
        print("final refit on every row (test included); the metrics above are the honest ones")
    refit_all(result, history.series, scaled.inputs, scaled.spec, config, verbose=verbose)
    _, self_test = export_model(
        result.model, meta, path, history=history, scaled=scaled, config=config
    )
    rewrite_metadata(path, meta.model_copy(update={"self_test": self_test}))
    _check_self_test(path)
    return {
        "epochs": result.refit_epochs - before,
        "seconds": time.monotonic() - start,
        "note": "model.onnx was fine-tuned on every row after the backtest; the metrics are "
        "the model's before it (the test period is in-sample for the exported model)",
    }


def evaluate_pipeline(
    model_path: Path,
    source: DataSource,
    out_dir: Path,
    *,
    verbose: bool = True,
    forecasts_file: str = "forecasts.parquet",
    protocol: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Re-run the backtest of an exported model with ONNX Runtime only (``protocol``:
    another protocol than the one it was trained under; ``overrides``: other baselines or
    baseline budget)."""
    started = time.monotonic()
    sess, meta = open_model(model_path)
    source = source.with_model_columns(meta.training.columns)
    config = config_from_model(meta).updated(**(overrides or {}))
    if protocol is not None:
        config = config.updated(protocol=protocol)
    history = load_and_prepare(source, config)
    series, parts = history.series, history.parts
    groups = {"test": test_origins(series, parts, config)}
    names = tuple(n for n in baseline_models.STATISTICAL if n in config.baselines)
    stats = baseline_models.statistical(
        series, groups, config.horizon, config.season_, names,
        budget_s=config.baseline_budget_s, log=_say if verbose else None,
    )  # fmt: skip
    bt = backtest(sess, meta, series, parts, config, statistical=stats.forecasts)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = write_outputs(out_dir, forecasts_file, series, bt, meta=meta, season=config.season_)
    report = backtest_report(meta.name, history, config, bt)
    report["baselines"] = {"seconds": stats.seconds, "skipped": stats.skipped}
    report.update(quality_sections(history, bt, meta))
    report["parity"] = {
        "max_abs_diff": meta.training.metrics.get("parity", {}).get("max_abs_diff"),
        "tolerance": EXPORT_PARITY_TOLERANCE,
        "note": "measured at export (recorded in the model's metadata); evaluate runs ONNX only",
    }
    report["model"] = {
        "path": str(model_path),
        "version": meta.version,
        "trained_on": meta.training.data_fingerprint,
    }
    report["timings"] = {**bt.timings, "total": time.monotonic() - started}
    report["files"] = {"forecasts": forecasts_file, **figure_files(figures)}
    return publish_report(out_dir, report, bt, verbose=verbose)


def train_model(
    history: PreparedHistory, scaled: ScaledHistory, config: TrainConfig, *, verbose: bool
) -> FitResult:
    """Train on the training rows, early-stopping on the validation rows, then fine-tune
    on both (:mod:`training.fit`)."""
    from training.fit import train  # noqa: PLC0415 - TensorFlow, for fit only

    return train(
        history.series,
        scaled.inputs,
        history.parts.role,
        scaled.spec,
        scaled.scheme,
        config,
        verbose=verbose,
    )


def model_metadata(
    name: str,
    history: PreparedHistory,
    scaled: ScaledHistory,
    config: TrainConfig,
    result: FitResult,
) -> ModelMeta:
    """The artifact's self-description before the backtest (calibration, drift reference
    and metrics are stamped in by :func:`stamp_calibration`)."""
    series, spec, now = history.series, scaled.spec, datetime.now(UTC)
    data_fingerprint = history.fingerprint
    grid, scheme = series.grid, scaled.scheme
    return ModelMeta(
        name=name,
        version=now.strftime("%Y%m%dT%H%M%SZ") + "-" + data_fingerprint[7:15],
        created_at=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        graph=GraphNames() if spec.n_calendar else GraphNames(calendar=None),
        state_size=result.model.state_size,
        layers=config.layers,
        units=config.units,
        window=config.window_,
        horizon=config.horizon,
        interval_s=grid.seconds,
        aggregation=config.aggregation,
        non_negative=config.non_negative,
        grid=GridMeta(kind=grid.kind, months=grid.months, holidays=grid.holidays),
        features=FeatureMeta(
            value_name=series.value_name,
            extra_names=series.extra_names,
            calendar=config.calendar,
            timezone=config.timezone,
        ),
        scaling=ScalingMeta(
            alpha=scheme.alpha,
            lags=scheme.lags,
            kappa=scheme.kappa,
            clip=scheme.clip,
            extra_loc=scaled.extra_scaling.loc,
            extra_scale=scaled.extra_scaling.scale,
        ),
        gap=GapMeta(max_gap=config.max_gap),
        training=TrainingMeta(
            data_fingerprint=data_fingerprint,
            data_source=history.source,
            columns=history.columns,
            n_keys=len(series.keys),
            n_rows=series.n_rows,
            seed=config.seed,
            shrinkage=result.beta,
            config=config.to_dict(),
        ),
    )


def export_model(
    model: StepModel,
    meta: ModelMeta,
    path: Path,
    *,
    history: PreparedHistory,
    scaled: ScaledHistory,
    config: TrainConfig,
) -> tuple[dict[str, float], SelfTestMeta]:
    """Export to ``path`` with the parity check, on random inputs and on up to
    :data:`PARITY_ROWS` real validation rows with the states the model reaches there;
    returns the report's ``parity`` section and the self-test sample: a few of those real
    rows (random ones if there are none) run through the written file."""
    from training.export import (  # noqa: PLC0415 - TensorFlow, for fit only
        PARITY_TOLERANCE,
        SELF_TEST_ROWS,
        export_step,
        random_inputs,
        real_inputs,
        self_test_sample,
    )

    series, window = history.series, meta.window
    warm = np.flatnonzero(history.parts.val & (position_since_reset(series) >= window))
    real = None
    if len(warm):
        picks = np.linspace(0, len(warm) - 1, min(PARITY_ROWS, len(warm))).astype(int)
        real = real_inputs(
            model, series, scaled.inputs.x, warm[picks],
            spec=scaled.spec, window=window, horizon=meta.horizon,
        )  # fmt: skip
    diff = export_step(model, meta, path, real)
    sample = real or random_inputs(model, config.horizon, SELF_TEST_ROWS, seed=config.seed)
    parity = {"max_abs_diff": diff, "tolerance": PARITY_TOLERANCE}
    return parity, self_test_sample(path, sample, meta.graph)


def stamp_calibration(
    path: Path,
    meta: ModelMeta,
    bt: Backtest,
    history: PreparedHistory,
    config: TrainConfig,
    *,
    parity: dict[str, float],
    inputs: InputReference,
    self_test: SelfTestMeta,
) -> ModelMeta:
    """Calibrate the prediction intervals and the error-drift reference on the validation
    origins and write them, the input-drift reference, the self-test sample and the
    headline metrics into the model's metadata (what only the exported model itself can
    measure); returns the metadata written.

    The written file is then loaded as the service loads it and must pass its own
    self-test (ExportError otherwise): the artifact that leaves ``fit`` is one a
    hot-swapping service accepts.
    """
    from training.export import rewrite_metadata  # noqa: PLC0415 - TensorFlow, for fit only

    calibration, drift = calibrate(bt.fc, history.series, history.parts, config)
    drift = drift.model_copy(
        update={
            "input_probs": inputs.probs,
            "input_quantiles": inputs.quantiles,
            "input_threshold": inputs.threshold,
            "input_false_alarm_rate": inputs.false_alarm_rate,
        }
    )
    headline = {m: {k: float(v[k]) for k in METRIC_NAMES} for m, v in bt.metrics.items()}
    metrics = {**headline, "parity": {"max_abs_diff": parity["max_abs_diff"]}}
    stamped = meta.model_copy(
        update={
            "calibration": calibration,
            "drift": drift,
            "self_test": self_test,
            "training": meta.training.model_copy(update={"metrics": metrics}),
        }
    )
    rewrite_metadata(path, stamped)
    _check_self_test(path)
    return stamped


def _check_self_test(path: Path) -> None:
    """Load ``path`` as the service does; ExportError unless it passes its self-test."""
    try:
        failure = self_test_failures(OnnxStepModel.load(path))
    except ModelError as exc:
        failure = str(exc)
    if failure is not None:
        raise ExportError(f"{path}: the exported model fails its own check: {failure}")


def quality_sections(history: PreparedHistory, bt: Backtest, meta: ModelMeta) -> dict[str, Any]:
    """The report's ``coverage`` (the model's calibrated bands on the test period) and
    ``drift`` (its input-drift test run over the test period) sections."""
    return {
        "coverage": coverage(bt, meta.calibration, history.series),
        "drift": input_alarms(history.series, history.parts, meta),
    }


def write_outputs(
    out_dir: Path,
    forecasts_file: str,
    series: SeriesSet,
    bt: Backtest,
    *,
    meta: ModelMeta,
    season: int,
) -> Figures:
    """Write every forecast of the replay (the offline reference of the service's output)
    and the forecast figures (with the model's interval bands, in the model's zone) into
    ``out_dir``; returns the figures written. A non-negative model's bands are floored at
    0 here, as the service floors what it publishes."""
    both = forecast_bands(series, bt.fc, meta.calibration)
    bands = {}
    if both is not None:
        lower, upper = (floor_non_negative(b, meta.non_negative) for b in both)
        bands = {
            level: (lower[:, i], upper[:, i]) for i, level in enumerate(meta.calibration.levels)
        }
    write_forecasts(out_dir / forecasts_file, series, bt.fc, meta.horizon, bands)
    on_test = {level: (lo[bt.test], hi[bt.test]) for level, (lo, hi) in bands.items()}
    return forecast_figures(series, bt, out_dir, season, on_test, timezone=meta.features.timezone)


def figure_files(figures: Figures, *extra: str) -> dict[str, Any]:
    """The report's ``files`` entries of the figures: ``figures`` (``extra`` first, then
    one per key plotted), ``figure_keys`` and ``figures_note`` (which keys and why)."""
    return {
        "figures": [*extra, *figures.files],
        "figure_keys": figures.keys,
        "figures_note": f"forecast figures: {figures.note}",
    }


def open_model(path: Path) -> tuple[ort.InferenceSession, ModelMeta]:
    """The exported model's session and metadata; a file that is not one is a DataError."""
    try:
        return load_session(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a streamcast model: {exc}".splitlines()[0]) from exc
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise DataError(f"{path}: cannot load the ONNX model: {exc}".splitlines()[0]) from exc


def config_from_model(meta: ModelMeta) -> TrainConfig:
    """The config an exported model was trained with, its own description winning over the
    recorded training config (and filling in for models whose metadata carries none)."""
    grid = meta.time_grid()
    interval = f"{grid.months}M" if grid.kind == "months" else f"{meta.interval_s}s"
    recorded = dict(meta.training.config)
    return TrainConfig.from_dict(
        {
            **recorded,
            "interval": "1d" if grid.kind == "trading_days" else interval,
            "trading_days": grid.kind == "trading_days",
            "holidays": grid.holidays,
            "window": meta.window,
            "horizon": meta.horizon,
            "max_gap": meta.gap.max_gap,
            "aggregation": meta.aggregation,
            "non_negative": meta.non_negative,
            "calendar": meta.features.calendar,
            "timezone": meta.features.timezone,
            "lags": meta.scaling.lags,
            "alpha": meta.scaling.alpha,
        }
    )


def publish_report(
    out_dir: Path, report: dict[str, Any], bt: Backtest, *, verbose: bool
) -> dict[str, Any]:
    """Write ``report.json`` and ``report.md``, show the comparison table; returns ``report``."""
    write_report(out_dir, report)
    if verbose:
        print(comparison_table(bt.metrics))
    return report
