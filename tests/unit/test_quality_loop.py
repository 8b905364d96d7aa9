"""The forecast-quality loop in the pipeline: realised errors, online coverage, error and
input drift with hysteresis, detector state through snapshot and restore, model identity.

Most tests use :class:`~tests.support.models.MeanModel`, whose forecast is always the
key's level, with a level/scale that does not move (``alpha`` 1e-12): :func:`feed` makes
every key's warm-up window alternate -1, +1, so its level is 0 and its unit 1, and its
standardised residuals are exactly the values the test sends afterwards: shifts and noise
are under the test's control.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pytest

from streamcast.core.alerts import ALERT_SCHEMA, encode_alerts
from streamcast.core.drift import (
    ERROR_DRIFT,
    INPUT_DRIFT,
    RECOVERED,
    DriftSettings,
    ecdf_weight,
    input_distances,
    ks_distance,
)
from streamcast.core.model import OnnxStepModel
from streamcast.core.pipeline import Pipeline, StepResult
from streamcast.core.records import TickBatch
from tests.support.models import MeanModel, TinyReference, make_tiny_model

HOUR = 3600
T0 = 1_700_000_000 // HOUR * HOUR
F64 = npt.NDArray[np.float64]


def keys_of(n: int) -> list[str]:
    return [f"k{i}" for i in range(n)]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("m") / "base.onnx", window=8, horizon=6)


def pipeline(base: Path, *, input_threshold: float | None = None, **drift: Any) -> Pipeline:
    settings = DriftSettings(**drift)
    return Pipeline(MeanModel(base, input_threshold), drift=settings, max_keys=1000)


def feed(pipe: Pipeline, values: F64, start: int = 0) -> list[StepResult]:
    """One batch per interval: ``values[t, k]`` is key k's tick at hour ``start + t``; from
    the start, the first window of every key is -1, +1, ... (level 0, unit 1)."""
    if start == 0:
        values = values.copy()
        w = pipe.meta.window
        values[:w] = np.where(np.arange(w) % 2 == 0, -1.0, 1.0)[:, None]
    n_t, n_k = values.shape
    names = keys_of(n_k)
    out = []
    for t in range(n_t):
        ts = [int((T0 + (start + t) * HOUR) * 1000)] * n_k
        out.append(pipe.process(TickBatch.from_rows(names, ts, values[t][:, None]), 0.0))
    return out


def alerts_of(results: list[StepResult]) -> list[tuple[int, str, str, str]]:
    """``(batch, key, kind, direction)`` of every alert, in order."""
    found = []
    for t, r in enumerate(results):
        if r.alerts is not None:
            for i, key in enumerate(r.alerts.keys):
                found.append((t, key, r.alerts.kind[i], r.alerts.direction[i]))
    return found


def test_residuals_are_the_standardised_one_step_errors_of_the_forecasts_made(
    tmp_path: Path,
) -> None:
    path = make_tiny_model(tmp_path / "m.onnx", window=3, horizon=4)
    pipe = Pipeline(OnnxStepModel.load(path))
    values = [5.0, 7.0, 3.0, 6.0, 9.0, 4.0, 8.0]
    ts = [int((T0 + h * HOUR) * 1000) for h in range(len(values))]
    made: dict[int, tuple[float, float]] = {}
    for t, v in zip(ts, values, strict=True):
        step = pipe.process(TickBatch.from_rows(["a"], [t], np.array([[v]])), 0.0)
        fcs = step.forecasts
        assert fcs.unit is not None
        for origin, fc, unit in zip(fcs.origin_ts, fcs.values, fcs.unit, strict=True):
            made[int(origin) + HOUR] = (float(fc[0]), float(unit))
    resid = pipe.store.resid[pipe.store.rows["a"]]
    # intervals close one tick late; the model carries no drift reference: mean 0, std 1;
    # each residual is in the unit K of the forecast's origin
    expected = [
        (values[h] - made[T0 + h * HOUR][0]) / made[T0 + h * HOUR][1]
        for h in range(3, len(values) - 1)
    ]
    np.testing.assert_allclose(resid[~np.isnan(resid)], expected, rtol=1e-6)
    assert TinyReference(path).identity == pipe.store.model_id[pipe.store.rows["a"]]


def test_every_step_is_scored_and_online_coverage_is_nominal(base: Path) -> None:
    rng = np.random.default_rng(0)
    pipe = pipeline(base)
    results = feed(pipe, rng.standard_normal((400, 100)))
    total = results[0].quality
    assert total is not None
    for r in results[1:]:
        assert r.quality is not None
        total.count += r.quality.count
        total.abs_error += r.quality.abs_error
        total.covered += r.quality.covered
    # one whole forecast per key per horizon + 1 intervals, every step alike
    assert total.count.min() > 0.95 * total.count.max() > 5000
    np.testing.assert_allclose(total.abs_error / total.count, np.sqrt(2 / np.pi), atol=0.02)
    coverage = total.covered / total.count[None, :]
    np.testing.assert_allclose(coverage[0], 0.80, atol=0.015)
    np.testing.assert_allclose(coverage[1], 0.95, atol=0.01)


def test_a_3_sigma_shift_raises_one_alert_for_its_key_then_recovered(base: Path) -> None:
    rng = np.random.default_rng(1)
    values = rng.standard_normal((600, 10))
    values[200:300, 7] += 3.0
    results = feed(pipeline(base), values)
    found = alerts_of(results)
    assert [(key, kind, d) for _, key, kind, d in found] == [
        ("k7", ERROR_DRIFT, "up"),
        ("k7", RECOVERED, "up"),
    ]
    # batch t closes hour t - 1: the shift's first residual is in batch 201
    delay = found[0][0] - 201 + 1
    assert 1 <= delay <= 24
    assert found[1][0] > 301


def test_a_shift_down_that_ends_recovers_and_a_second_shift_alerts_again(base: Path) -> None:
    rng = np.random.default_rng(2)
    values = rng.standard_normal((900, 20))
    values[100:160, 3] -= 3.0
    values[500:560, 3] -= 3.0
    found = alerts_of(feed(pipeline(base), values))
    assert [(key, kind, d) for _, key, kind, d in found] == [
        ("k3", ERROR_DRIFT, "down"),
        ("k3", RECOVERED, "down"),
        ("k3", ERROR_DRIFT, "down"),
        ("k3", RECOVERED, "down"),
    ]


def test_unshifted_noise_keeps_false_alarms_below_one_per_10000_key_intervals(
    base: Path,
) -> None:
    """Independent and autocorrelated (AR(1), rho 0.8) standard normal residuals, 200
    keys x 1,700 intervals: no false alarm for independent ones, fewer than 1 per 10,000
    key-intervals for autocorrelated ones once the keys' baselines are learnt (the rates
    measured on real test periods, and for rho 0.9, are in docs/training.md)."""
    rng = np.random.default_rng(3)
    white = rng.standard_normal((1700, 200))
    ar = np.zeros_like(white)
    for t in range(1, len(ar)):
        ar[t] = 0.8 * ar[t - 1] + np.sqrt(1 - 0.8**2) * white[t]
    assert [a for a in alerts_of(feed(pipeline(base), white)) if a[2] == ERROR_DRIFT] == []
    learnt = [a for a in alerts_of(feed(pipeline(base), ar)) if a[2] == ERROR_DRIFT and a[0] >= 200]
    assert len(learnt) <= 1500 * 200 / 10_000, len(learnt)


def test_detector_state_survives_restore_so_an_alert_is_neither_lost_nor_repeated(
    base: Path,
) -> None:
    rng = np.random.default_rng(4)
    values = rng.standard_normal((400, 10))
    values[100:200, 2] += 3.0
    straight = alerts_of(feed(pipeline(base), values))
    assert [kind for _, _, kind, _ in straight] == [ERROR_DRIFT, RECOVERED]
    alert_at = straight[0][0]
    for cut in (alert_at - 1, alert_at + 1):  # mid-shift below threshold; after the alert
        first = pipeline(base)
        before = alerts_of(feed(first, values[:cut]))
        second = pipeline(base)
        names = keys_of(10)
        second.restore(first.store.snapshot(names), 0.0, 0)
        after = [(t + cut, *rest) for t, *rest in alerts_of(feed(second, values[cut:], cut))]
        assert before + after == straight, cut


def test_input_drift_alerts_once_per_episode_and_recovers(tmp_path: Path) -> None:
    """A key whose values leave the training distribution (another shape, not a level)
    for 120 intervals; the others stay. Threshold 0.3: the weighted ECDF (an effective
    window of 48) of standard normal values exceeds it about once in 10^4 tests."""
    path = make_tiny_model(tmp_path / "w48.onnx", window=48, horizon=6)
    rng = np.random.default_rng(5)
    values = rng.standard_normal((700, 30))
    values[200:320, 11] = rng.uniform(2.0, 4.0, 120)
    pipe = Pipeline(
        MeanModel(path, input_threshold=0.3),
        drift=DriftSettings(input_every=4, threshold=1e9),
    )
    found = alerts_of(feed(pipe, values))
    assert [(key, kind, d) for _, key, kind, d in found] == [
        ("k11", INPUT_DRIFT, "up"),
        ("k11", RECOVERED, "up"),
    ]
    # in: a weight of 2/49 per value moves the ECDF by 0.3 in ~10 values (+ the test
    # cadence of 4); out: back below 0.15 within ~70 values of the old distribution
    assert 200 + 5 <= found[0][0] <= 200 + 20
    assert 320 + 20 <= found[1][0] <= 320 + 90
    assert pipe.store.in_alarm[pipe.store.rows["k11"]] == 0


def test_input_drift_does_not_depend_on_how_the_stream_is_batched(tmp_path: Path) -> None:
    path = make_tiny_model(tmp_path / "w16.onnx", window=16, horizon=3)
    rng = np.random.default_rng(8)
    values = rng.standard_normal((300, 6))
    values[:16] = np.where(np.arange(16) % 2 == 0, -1.0, 1.0)[:, None]  # level 0, unit 1
    values[100:200, 2] = rng.uniform(1.5, 3.5, 100)
    settings = DriftSettings(input_every=5)

    def run(cuts: list[int]) -> list[tuple[str, int, str]]:
        pipe = Pipeline(MeanModel(path, input_threshold=0.6), drift=settings)
        out: list[tuple[str, int, str]] = []
        for first, last in itertools.pairwise(cuts):
            hours = np.repeat(np.arange(first, last), 6)
            names = keys_of(6) * (last - first)
            ts = [int((T0 + h * HOUR) * 1000) for h in hours.tolist()]
            step = pipe.process(
                TickBatch.from_rows(names, ts, values[first:last].reshape(-1, 1)), 0.0
            )
            if step.alerts is not None:
                out += zip(step.alerts.keys, step.alerts.ts.tolist(), step.alerts.kind, strict=True)
        return out

    one_by_one = run(list(range(301)))  # error drift and input drift for k2, in order
    assert {key for key, _, _ in one_by_one} == {"k2"}
    assert [kind for _, _, kind in one_by_one].count(INPUT_DRIFT) == 1
    assert run([0, 37, 38, 150, 151, 152, 299, 300]) == one_by_one
    assert run([0, 300]) == one_by_one


def test_input_distances_follow_the_online_recurrence(tmp_path: Path) -> None:
    """Training calibrates the threshold on ``input_distances``; they must be the online
    statistic at the same intervals."""
    rng = np.random.default_rng(6)
    probs = np.linspace(0.05, 0.95, 19)
    q = np.quantile(rng.standard_normal(100_000), probs)
    scaled = rng.standard_normal((3, 60))
    scaled[1, 30:] += 2.0
    scaled[2, :10] = np.nan  # starts later
    got = input_distances(scaled, q, probs, window=16, every=6)
    weight = ecdf_weight(16)
    for k in range(3):
        cdf = probs.copy()
        seen = [v for v in scaled[k] if not np.isnan(v)]
        expected = []
        for i, v in enumerate(seen, start=1):
            cdf = cdf + weight * ((v <= q).astype(float) - cdf)
            if i % 6 == 0:
                expected.append(float(np.abs(cdf - probs).max()))
        np.testing.assert_allclose(got[k, : len(expected)], expected, rtol=1e-12)
        assert np.isnan(got[k, len(expected) :]).all()
    assert got[1, -1] > 0.5 > got[0].max()
    assert ks_distance(probs[None, :], probs).tolist() == [0.0]


def test_alert_records_follow_the_documented_schema(base: Path) -> None:
    rng = np.random.default_rng(7)
    values = rng.standard_normal((260, 5))
    values[200:, 0] += 4.0
    results = feed(pipeline(base), values)
    batch = next(r.alerts for r in results if r.alerts is not None and len(r.alerts))
    key, value = encode_alerts(batch)[0]
    doc = orjson.loads(value)
    assert key == b"k0"
    assert doc["schema"] == ALERT_SCHEMA and doc["kind"] == ERROR_DRIFT
    assert doc["detector"] == "ewma" and doc["direction"] == "up"
    assert doc["statistic"] >= doc["threshold"] > 1.0
    assert doc["severity"] == "critical"  # recent residuals average >= 3 sd
    assert doc["model"] == "tiny" and doc["model_version"] == "1"
    assert doc["ts"].endswith("Z")
    summary = doc["summary"]
    recent = summary["recent_residuals"]
    assert len(recent) == 8 and np.mean(recent[-3:]) > 2.0  # the shift, newest last
    assert summary["window"] == 8 and summary["window_mean"] > 1.0


def test_a_restore_under_another_model_rebuilds_state_from_windows(tmp_path: Path) -> None:
    """The weights x 1.05 case: a restart with a model of the same layout must not adopt
    the other model's LSTM state; each key is rebuilt from its window, exactly as an
    in-process swap would."""
    old = make_tiny_model(tmp_path / "old.onnx", window=3, seed=1)
    new = make_tiny_model(tmp_path / "new.onnx", window=3, seed=1, version="2")
    scaled = TinyReference(new)
    scaled.w = {k: v * np.float32(1.05) for k, v in scaled.w.items()}  # weights x 1.05
    values = np.sin(np.arange(30.0))[:, None] * np.array([[2.0, 5.0]]) + 3.0

    def run(pipe: Pipeline, rows: slice) -> list[float]:
        out: list[float] = []
        for h in range(rows.start, rows.stop):
            ts = [int((T0 + h * HOUR) * 1000)] * 2
            step = pipe.process(TickBatch.from_rows(["a", "b"], ts, values[h][:, None]), 0.0)
            out += step.forecasts.values.ravel().tolist()
        return out

    first = Pipeline(OnnxStepModel.load(old))
    run(first, slice(0, 15))
    state = first.store.snapshot(["a", "b"])
    swapped = Pipeline(OnnxStepModel.load(old))
    run(swapped, slice(0, 15))
    swapped.swap_model(_Scaled(scaled))
    restarted = Pipeline(_Scaled(scaled))
    assert restarted.restore(state, 0.0, 0) == (2, 2)
    expected = run(swapped, slice(15, 30))
    assert run(restarted, slice(15, 30)) == expected
    adopted = Pipeline(_Scaled(scaled, identity=TinyReference(old).identity))
    assert adopted.restore(state, 0.0, 0) == (2, 0)  # same identity: state adopted as is
    assert run(adopted, slice(15, 30)) != expected


class _Scaled:
    """A StepModel over a TinyReference whose weights a test changed."""

    def __init__(self, ref: TinyReference, identity: int = 99) -> None:
        self.ref, self.identity = ref, identity

    @property
    def meta(self):  # type: ignore[no-untyped-def]
        return self.ref.meta

    def step(self, x, h, c, calendar):  # type: ignore[no-untyped-def]
        return self.ref.step(x, h, c, calendar)


def test_swap_problem_names_what_differs(tmp_path: Path) -> None:
    pipe = Pipeline(OnnxStepModel.load(make_tiny_model(tmp_path / "a.onnx", window=3)))
    other = OnnxStepModel.load(
        make_tiny_model(tmp_path / "b.onnx", window=5, extras=("temp",), version="9")
    )
    problem = pipe.swap_problem(other)
    assert problem is not None
    assert "tiny 1 for tiny 9" in problem and "window 3 -> 5" in problem
    assert "extras [] -> ['temp']" in problem
    same = OnnxStepModel.load(make_tiny_model(tmp_path / "c.onnx", window=3, horizon=5))
    assert pipe.swap_problem(same) is None
