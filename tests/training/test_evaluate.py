"""The streaming evaluator: lifecycle, batching across keys, scaling, and fit == evaluate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from streamcast.core.artifact import FeatureMeta, GraphNames, ModelMeta, ScalingMeta
from streamcast.core.features import FeatureSpec, LevelScale, calendar_features, target_times
from streamcast.core.model import OnnxStepModel
from tests.support.tiny import TINY_COLUMNS
from training.config import TrainConfig
from training.evaluate import emitting_rows, load_session, row_inputs, stream_forecasts
from training.export import StepInputs, export_step, random_inputs, reference_step
from training.fit import build_model
from training.history import DataSource
from training.model import StepModel
from training.series import SeriesSet
from training.workflow import evaluate_pipeline

WINDOW, HORIZON, HOUR = 3, 4, 3600


def _series() -> SeriesSet:
    """Key a: 8 rows with an imputed row at 5; key b: 4 rows, long gap, 5 rows (reset);
    key c (never trained on): 6 rows. Rows start at different times per key."""
    rng = np.random.default_rng(3)
    ts_a = 10 * HOUR + np.arange(8) * HOUR
    ts_b = np.concatenate([np.arange(4), np.arange(20, 25)]) * HOUR
    ts_c = 12 * HOUR + np.arange(6) * HOUR
    ts = np.concatenate([ts_a, ts_b, ts_c]).astype(np.int64)
    n = len(ts)
    values = rng.normal(50, 10, size=(n, 1))
    observed = np.ones(n, bool)
    observed[5] = False
    reset = np.zeros(n, bool)
    reset[[0, 8, 12, 17]] = True
    return SeriesSet(
        keys=("a", "b", "c"),
        offsets=np.array([0, 8, 17, 23]),
        ts=ts,
        values=values,
        observed=observed,
        reset=reset,
        interval_s=HOUR,
    )


def _spec() -> FeatureSpec:
    return FeatureSpec(interval_s=HOUR, calendar=("time_of_day",))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[StepModel, Path]:
    config = TrainConfig(units=6, horizon=HORIZON, window=WINDOW, calendar=("time_of_day",), seed=5)
    scheme = LevelScale(alpha=0.3, lags=(2, 3), kappa=0.7)
    model = build_model(config, scheme, _spec())
    meta = ModelMeta(
        name="lifecycle",
        version="0",
        created_at="2026-11-24T00:00:00Z",
        graph=GraphNames(),
        state_size=model.state_size,
        units=6,
        window=WINDOW,
        horizon=HORIZON,
        interval_s=HOUR,
        features=FeatureMeta(calendar=("time_of_day",)),
        scaling=ScalingMeta(alpha=0.3, lags=(2, 3), kappa=0.7),
    )
    path = tmp_path_factory.mktemp("lifecycle") / "m.onnx"
    export_step(model, meta, path)
    return model, path


def test_emitting_rows_follow_the_lifecycle() -> None:
    s = _series()
    emit = emitting_rows(s, WINDOW)
    # key a: warm-up rows 0,1; row 5 imputed; row 7 is the key's final row
    assert np.flatnonzero(emit[:8]).tolist() == [2, 3, 4, 6]
    # key b: warm-up again after the reset at row 12; final row 16 has no forecast
    assert np.flatnonzero(emit[8:17]).tolist() == [2, 3, 6, 7]
    # key c: rows 2..4 (row 5 is final)
    assert np.flatnonzero(emit[17:]).tolist() == [2, 3, 4]


def test_replay_equals_sequential_tensorflow_per_key(exported: tuple[StepModel, Path]) -> None:
    """Batched ORT replay == stepping each key alone in TensorFlow from zero at resets,
    each key's level and scale set from its warm-up window and updated at every row (the
    imputed one included), lags from its own rows since the reset."""
    model, path = exported
    sess, meta = load_session(path)
    s = _series()
    fc = stream_forecasts(sess, meta, s)
    assert fc.calls == len(np.unique(s.ts))  # one call per time index, not per key
    got = dict(zip(fc.row.tolist(), fc.scaled, strict=True))
    expected_rows = np.flatnonzero(emitting_rows(s, WINDOW)).tolist()
    assert sorted(got) == expected_rows
    spec = meta.feature_spec()
    scheme = meta.level_scale()
    for k in range(len(s.keys)):
        h = np.zeros((1, model.state_size), np.float32)
        c = np.zeros_like(h)
        for r in range(s.offsets[k], s.offsets[k + 1]):
            if s.reset[r]:
                h, c = np.zeros_like(h), np.zeros_like(c)
                start = r
                end = min(r + WINDOW, s.offsets[k + 1])
                level, scale = scheme.init(s.values[None, start:end, 0])
            level, scale = scheme.update(level, scale, s.values[r : r + 1, 0])
            unit = scheme.kappa * scale
            ring = np.full(3, np.nan)
            tail = s.values[max(start, r - 2) : r + 1, 0]
            ring[3 - len(tail) :] = tail
            lags = np.where(np.isnan(ring), 0.0, (ring - level) / unit)
            u = np.clip((s.values[r, 0] - level) / unit, -20, 20)
            x = np.concatenate([u, level / unit, lags])[None, :].astype(np.float32)
            cal = calendar_features(target_times(s.ts[r : r + 1], HOUR, HORIZON), spec)
            h, c, forecast = reference_step(model, StepInputs(x, h, c, cal), HORIZON)
            if r in got:
                np.testing.assert_allclose(got[r], forecast[0], atol=1e-5)
    inputs = row_inputs(s, scheme, WINDOW, meta.extra_scaling())
    row = fc.row.tolist().index(19)
    np.testing.assert_allclose(
        fc.forecast[row], fc.scaled[row] * inputs.unit[19] + inputs.level[19], rtol=1e-12
    )


def test_batching_across_keys_changes_nothing(exported: tuple[StepModel, Path]) -> None:
    _, path = exported
    sess, meta = load_session(path)
    s = _series()
    together = stream_forecasts(sess, meta, s)
    key_of = s.key_index()
    for k in range(3):
        alone = stream_forecasts(sess, meta, s.select(key_of == k))
        mine = key_of[together.row] == k
        np.testing.assert_allclose(alone.forecast, together.forecast[mine], rtol=1e-6)


def test_the_evaluator_runs_the_model_as_the_service_does(
    exported: tuple[StepModel, Path],
) -> None:
    """One session opener: the evaluator's session has the service's options, and the
    service's step gives the evaluator's outputs to the bit."""
    model, path = exported
    sess, meta = load_session(path)
    options = sess.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    inputs = random_inputs(model, HORIZON, batch=5, seed=9)
    names = meta.graph
    offline = sess.run([names.h_out, names.c_out, names.forecast], inputs.feeds(names))
    online = OnnxStepModel.load(path).step(inputs.x, inputs.h, inputs.c, inputs.calendar)
    for a, b in zip(offline, online, strict=True):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("module", ["training.evaluate", "training.workflow"])
def test_evaluator_module_never_imports_tensorflow(module: str) -> None:
    # training.workflow runs evaluate too: TensorFlow only inside fit's own steps
    code = f"import sys, {module}; sys.exit('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_evaluate_reproduces_fit(tiny_model: Path, tmp_path: Path) -> None:
    """ONNX-only re-evaluation gives fit's LSTM metrics and forecasts file."""
    out = tmp_path / "eval"
    fit_report = json.loads((tiny_model.parent / "report.json").read_text())
    source = DataSource(spec=str(tiny_model.parent / "data.csv"), **TINY_COLUMNS)
    report = evaluate_pipeline(
        tiny_model, source, out, verbose=False, forecasts_file="forecasts.csv"
    )
    for name in ("mae", "rmse", "smape", "mape", "mase"):
        assert abs(report["metrics"]["lstm"][name] - fit_report["metrics"]["lstm"][name]) <= 1e-6
    assert report["metrics"]["seasonal_naive"]["mase"] == pytest.approx(
        fit_report["metrics"]["seasonal_naive"]["mase"], abs=1e-9
    )
    fit_fc = pd.read_csv(tiny_model.parent / "forecasts.csv")
    eval_fc = pd.read_csv(out / "forecasts.csv")
    assert list(fit_fc.columns) == [
        "key", "origin_ts", "step", "target_ts", "forecast",
        "lower_0.8", "upper_0.8", "lower_0.95", "upper_0.95",
    ]  # fmt: skip
    assert (fit_fc["lower_0.95"] <= fit_fc["lower_0.8"]).all()
    assert (fit_fc["lower_0.8"] <= fit_fc["upper_0.8"]).all()
    assert (fit_fc["upper_0.8"] <= fit_fc["upper_0.95"]).all()
    pd.testing.assert_frame_equal(fit_fc, eval_fc)
    assert set(fit_fc["step"]) == set(range(1, 7))
    # every key's final interval is open: no forecast originates there
    data = pd.read_csv(tiny_model.parent / "data.csv")
    last = data.groupby("Sensor")["Date_Time"].max()
    for key, ts in last.items():
        assert not ((fit_fc["key"] == key) & (fit_fc["origin_ts"] == ts)).any()
