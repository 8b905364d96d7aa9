"""The pipeline against the numpy reference of the tiny model: lifecycle, rounds, output."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamcast.core.artifact import ModelMeta
from streamcast.core.features import Float32Array
from streamcast.core.isolation import Attempt
from streamcast.core.model import OnnxStepModel
from streamcast.core.pipeline import Pipeline, StepResult
from streamcast.core.records import ForecastBatch, TickBatch, encode_forecasts
from streamcast.core.state import NONE
from streamcast.errors import ConfigurationError, RejectReason
from tests.support.models import (
    TinyReference,
    make_tiny_model,
    reference_forecasts,
    rewrite_meta,
)

HOUR = 3600

#: ONNX Runtime's float32 kernels against the float32 numpy reference: a few ulps of the
#: forecasts' magnitude (up to ~20 here: one ulp at 16 is 1.9e-6), and which kernels run
#: depends on the CPU (1.1e-6 apart on one machine where 1e-6 had passed on others)
F32_ATOL = 1e-5

OriginKey = tuple[str, int]


class Offline(NamedTuple):
    """One forecast of training's replay: values ``[H]``, unit, bands ``[L, H]``."""

    values: npt.NDArray[np.float64]
    unit: float
    lower: npt.NDArray[np.float64]
    upper: npt.NDArray[np.float64]


T0 = 1_700_000_000 // HOUR * HOUR


@dataclass
class CountingModel:
    """A StepModel fake: the tiny model's numpy maths, recording every call's batch size."""

    ref: TinyReference
    calls: list[int] = field(default_factory=list)

    @property
    def meta(self) -> ModelMeta:
        return self.ref.meta

    @property
    def identity(self) -> int:
        return self.ref.identity

    def step(
        self, x: Float32Array, h: Float32Array, c: Float32Array, calendar: Float32Array | None
    ) -> tuple[Float32Array, Float32Array, Float32Array]:
        self.calls.append(len(x))
        return self.ref.step(x, h, c, calendar)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("models")
    return {
        "plain": make_tiny_model(base / "plain.onnx", window=3, max_gap=2),
        "rich": make_tiny_model(
            base / "rich.onnx", window=4, horizon=5, extras=("temp",),
            calendar=("time_of_day", "day_of_week"), lags=(2, 4), alpha=0.5,
            max_gap=2, aggregation="mean", levels=(0.5, 0.9),
        ),
        "w2": make_tiny_model(base / "w2.onnx", window=2, max_gap=3),
    }  # fmt: skip


@pytest.fixture(scope="module")
def tiny_w2(models: dict[str, Path]) -> TinyReference:
    return TinyReference(models["w2"])


def ticks(
    key: str, hours: Sequence[float], values: Sequence[float] | Sequence[list[float]]
) -> TickBatch:
    ts = [int((T0 + h * HOUR) * 1000) for h in hours]
    return TickBatch.from_rows([key] * len(hours), ts, np.asarray(values, dtype=np.float64))


def run(pipe: Pipeline, batch: TickBatch, now: float = 0.0) -> StepResult:
    return pipe.process(batch, now)


def test_warm_up_is_withheld_then_first_forecast_at_the_windows_last_interval(
    models: dict[str, Path],
) -> None:
    pipe = Pipeline(OnnxStepModel.load(models["plain"]))  # window 3
    r1 = run(pipe, ticks("a", [0, 1, 2], [1.0, 2.0, 3.0]))  # closes hours 0, 1
    assert len(r1.forecasts) == 0
    assert r1.counters.steps == 0
    assert pipe.warming_keys == 1
    r2 = run(pipe, ticks("a", [3], [4.0]))  # closes hour 2: window full
    assert r2.forecasts.origin_ts.tolist() == [T0 + 2 * HOUR]
    assert r2.counters.steps == 3
    assert r2.counters.model_calls == 3
    assert pipe.warming_keys == 0
    r3 = run(pipe, ticks("a", [4], [5.0]))
    assert r3.forecasts.origin_ts.tolist() == [T0 + 3 * HOUR]
    assert r3.counters.steps == 1


def test_gaps_are_bridged_up_to_max_gap_and_reset_beyond(models: dict[str, Path]) -> None:
    model = OnnxStepModel.load(models["plain"])  # window 3, max_gap 2
    pipe = Pipeline(model)
    hours = [0, 1, 2, 3, 6, 7, 11, 12, 13, 14, 15]
    values = [float(v) for v in range(len(hours))]
    result = run(pipe, ticks("a", hours, values))
    c = result.counters
    assert c.imputed_steps == 2  # hours 4 and 5
    assert c.resets == 1  # 7 -> 11 misses 3 > 2
    # origins: 2, 3, 6 (imputed 4, 5 emit nothing), 7; after the reset 11, 12 warm up, 13, 14
    assert result.forecasts.origin_ts.tolist() == [T0 + h * HOUR for h in (2, 3, 6, 7, 13, 14)]
    ref = TinyReference(models["plain"])
    intervals = [(T0 + h * HOUR, np.array([v])) for h, v in zip(hours[:-1], values, strict=False)]
    expected = reference_forecasts(ref, "a", intervals)
    assert [e.origin for e in expected] == result.forecasts.origin_ts.tolist()
    np.testing.assert_allclose(
        result.forecasts.values, np.stack([e.values for e in expected]), rtol=1e-5, atol=F32_ATOL
    )


def test_level_and_scale_start_from_the_window_and_follow_every_step(
    models: dict[str, Path],
) -> None:
    """Every key (trained on or not) sets its level and scale from its warm-up window and
    updates them with each interval, imputed ones included; a reset starts over."""
    pipe = Pipeline(OnnxStepModel.load(models["rich"]), max_gap=1)
    extras = [[v, 1.0] for v in (10.0, 20.0, 30.0, 40.0, 0.0)]
    run(pipe, ticks("a", [0, 1, 2, 3, 4], extras))
    st, a = pipe.store, pipe.store.rows["a"]
    level, scale = 25.0, 25.0  # mean and mean |.| of the window, then the 4 window rows
    for v in (10.0, 20.0, 30.0, 40.0):
        level, scale = level + 0.5 * (v - level), scale + 0.5 * (abs(v) - scale)
    assert (st.value_level[a], st.value_scale[a]) == pytest.approx((level, scale))
    # a gap of one interval (hour 5 missing): the imputed row moves them too
    run(pipe, ticks("a", [6, 7], [[60.0, 1.0], [0.0, 1.0]]))  # closes 4 (0.0), 5 (30.0), 6
    for v in (0.0, 30.0, 60.0):
        level, scale = level + 0.5 * (v - level), scale + 0.5 * (abs(v) - scale)
    assert (st.value_level[a], st.value_scale[a]) == pytest.approx((level, scale))
    # a long gap resets: the new window sets them afresh
    later = [[v, 1.0] for v in (100.0, 300.0, 100.0, 300.0, 0.0)]
    result = run(pipe, ticks("a", [20, 21, 22, 23, 24], later))
    assert result.counters.resets == 1
    level, scale = 200.0, 200.0
    for v in (100.0, 300.0, 100.0, 300.0):
        level, scale = level + 0.5 * (v - level), scale + 0.5 * (abs(v) - scale)
    assert (st.value_level[a], st.value_scale[a]) == pytest.approx((level, scale))


def test_rounds_cost_max_pending_steps_not_one_call_per_key(models: dict[str, Path]) -> None:
    fake = CountingModel(TinyReference(models["w2"]))  # window 2, max_gap 3
    pipe = Pipeline(fake)
    run(pipe, TickBatch.from_rows(["warm", "warm", "warm"], _ms([0, 1, 2]), [1.0, 2.0, 3.0]))
    run(pipe, TickBatch.from_rows(["gap"] * 3, _ms([0, 1, 2]), [1.0, 2.0, 3.0]))
    fake.calls.clear()
    batch = TickBatch.from_rows(
        ["warm", "new", "gap", "new", "new", "other"],
        _ms([3, 0, 5, 1, 2, 9]),
        [4.0, 1.0, 6.0, 2.0, 3.0, 1.0],
    )
    result = run(pipe, batch)
    # pending steps: warm 1 (closes hour 2); new 2 (its window fills at hour 1);
    # gap 1 (closes hour 2, hour 5 stays open); other 0 (first tick only)
    assert result.counters.model_calls == 2
    assert fake.calls == [3, 1]
    fake.calls.clear()
    result = run(pipe, TickBatch.from_rows(["gap", "warm", "new"], _ms([6, 4, 3]), [7.0] * 3))
    # gap: hours 3, 4 imputed + hour 5 real = 3 steps; warm: 1; new: 1
    assert fake.calls == [3, 1, 1]
    assert result.counters.imputed_steps == 2
    assert sorted(result.forecasts.keys) == ["gap", "new", "warm"]


@dataclass
class AdvancingModel(CountingModel):
    """A :class:`CountingModel` that can also step the state alone (a StateAdvancer),
    recording those calls' batch sizes apart."""

    advanced: list[int] = field(default_factory=list)

    def advance(
        self, x: Float32Array, h: Float32Array, c: Float32Array, calendar: Float32Array | None
    ) -> tuple[Float32Array, Float32Array]:
        self.advanced.append(len(x))
        h_out, c_out, _ = self.ref.step(x, h, c, calendar)
        return h_out, c_out


def test_steps_that_emit_nothing_run_the_state_only_graph(models: dict[str, Path]) -> None:
    """Warm-up and imputed steps need only their state: with a model that can step the
    state alone, only the forecasting steps pay for the rollout, and every forecast and
    every key's state are what the full step gives."""
    ref = TinyReference(models["w2"])  # window 2, max_gap 3
    batches = [
        TickBatch.from_rows(["warm"] * 3, _ms([0, 1, 2]), [1.0, 2.0, 3.0]),
        # new: both window rows in one batch (one warm-up step, then its first forecast);
        # gap: hours 3 and 4 imputed (no forecast) before hour 5's real one
        TickBatch.from_rows(
            ["new", "new", "new", "gap", "gap", "gap", "gap", "warm"],
            _ms([0, 1, 2, 0, 1, 2, 6, 3]),
            [1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 7.0, 4.0],
        ),
    ]
    full, split = CountingModel(ref), AdvancingModel(ref)
    pipes = Pipeline(full), Pipeline(split)
    for batch in batches:
        want, got = (run(pipe, batch) for pipe in pipes)
        assert got.forecasts.keys == want.forecasts.keys
        # float32 matmuls over batches of other sizes: equal to the last bits only (BLAS
        # and ONNX Runtime pick their kernels by batch size)
        np.testing.assert_allclose(got.forecasts.values, want.forecasts.values, rtol=1e-6)
        assert got.counters.steps == want.counters.steps
        # the rollout ran for exactly the forecasts; every other step only advanced
        assert sum(split.calls) == len(got.forecasts)
        assert sum(split.advanced) == got.counters.steps - len(got.forecasts)
        assert split.advanced, "warm-up steps ran the state-only graph"
        split.calls.clear()
        split.advanced.clear()
    for name in ("h", "c", "value_level", "value_scale"):
        np.testing.assert_allclose(
            getattr(pipes[1].store, name), getattr(pipes[0].store, name), rtol=1e-6, atol=1e-7
        )


def _ms(hours: Sequence[float]) -> list[int]:
    return [int((T0 + h * HOUR) * 1000) for h in hours]


def _random_stream(
    rng: np.random.Generator, keys: list[str], n_hours: int
) -> tuple[list[tuple[str, int, list[float]]], dict[str, list[tuple[int, np.ndarray]]]]:
    """Ticks (1-3 per hour, some hours missing, gaps short and long) and the mean per hour."""
    ticks_out: list[tuple[str, int, list[float]]] = []
    intervals: dict[str, list[tuple[int, np.ndarray]]] = {}
    for key in keys:
        hour, rows = 0, []
        while hour < n_hours:
            start = T0 + hour * HOUR
            k = int(rng.integers(1, 4))
            offsets = np.sort(rng.choice(HOUR * 1000, size=k, replace=False))
            vals = rng.normal(40.0, 15.0, size=(k, 2))
            for off, v in zip(offsets.tolist(), vals.tolist(), strict=True):
                ticks_out.append((key, start * 1000 + off, v))
            rows.append((start, vals.mean(axis=0)))
            hour += int(rng.choice([1, 1, 1, 1, 1, 1, 2, 3, 5]))
        intervals[key] = rows[:-1]  # the last interval never closes
    return ticks_out, intervals


@pytest.mark.parametrize("seed", [0, 1])
def test_equals_reference_for_every_key_and_interval(models: dict[str, Path], seed: int) -> None:
    rng = np.random.default_rng(seed)
    keys = ["known", "k1", "k2", "k3", "k4"]
    stream, intervals = _random_stream(rng, keys, n_hours=60)
    # interleave keys by time (per-key order kept), then cut into random-size batches
    shuffle: dict[tuple[int, str], float] = {}
    stream.sort(
        key=lambda t: (
            t[1] // (HOUR * 1000),
            shuffle.setdefault((t[1] // (HOUR * 1000), t[0]), float(rng.random())),
            t[1],
        )
    )
    pipe = Pipeline(OnnxStepModel.load(models["rich"]))
    got: list[ForecastBatch] = []
    pos = 0
    while pos < len(stream):
        size = int(rng.integers(1, 40))
        part = stream[pos : pos + size]
        pos += size
        batch = TickBatch.from_rows(
            [t[0] for t in part], [t[1] for t in part], [t[2] for t in part]
        )
        result = run(pipe, batch)
        assert not result.rejections
        got.append(result.forecasts)
    ref = TinyReference(models["rich"])
    for key in keys:
        expected = reference_forecasts(ref, key, intervals[key])
        origins = [
            int(t) for b in got for k, t in zip(b.keys, b.origin_ts, strict=True) if k == key
        ]
        values = [v for b in got for k, v in zip(b.keys, b.values, strict=True) if k == key]
        assert origins == [e.origin for e in expected]
        assert expected, "every key should produce forecasts"
        np.testing.assert_allclose(
            np.stack(values), np.stack([e.values for e in expected]), rtol=1e-5, atol=1e-5
        )


def test_batch_boundaries_do_not_change_forecasts(models: dict[str, Path]) -> None:
    rng = np.random.default_rng(7)
    stream, _ = _random_stream(rng, ["a", "b", "c"], n_hours=30)
    stream.sort(key=lambda t: t[1])
    batch = TickBatch.from_rows(
        [t[0] for t in stream], [t[1] for t in stream], [t[2] for t in stream]
    )
    whole = run(Pipeline(OnnxStepModel.load(models["rich"])), batch).forecasts
    single = Pipeline(OnnxStepModel.load(models["rich"]))
    parts = [run(single, batch.take(np.array([i]))).forecasts for i in range(len(batch))]
    keys = [k for p in parts for k in p.keys]
    origins = [int(t) for p in parts for t in p.origin_ts]
    assert sorted(zip(keys, origins, strict=True)) == sorted(
        zip(whole.keys, whole.origin_ts.tolist(), strict=True)
    )
    by_key = {
        (k, int(t)): v for p in parts for k, t, v in zip(p.keys, p.origin_ts, p.values, strict=True)
    }
    for k, t, v in zip(whole.keys, whole.origin_ts.tolist(), whole.values, strict=True):
        np.testing.assert_allclose(v, by_key[(k, t)], rtol=1e-6)
    # the adaptive bands too: a forecast's band takes the offsets after its origin was
    # scored, however the intervals were batched
    bands = {
        (k, int(t)): (lo, hi)
        for p in parts
        for k, t, lo, hi in zip(p.keys, p.origin_ts, p.lower, p.upper, strict=True)  # type: ignore[arg-type]
    }
    assert whole.lower is not None and whole.upper is not None
    for i, (k, t) in enumerate(zip(whole.keys, whole.origin_ts.tolist(), strict=True)):
        np.testing.assert_allclose(whole.lower[i], bands[(k, t)][0], rtol=1e-6)
        np.testing.assert_allclose(whole.upper[i], bands[(k, t)][1], rtol=1e-6)
    assert np.any(single.store.band_adj != 0), "the probes moved the offsets"


def test_rejections_carry_input_index_and_leave_state_alone(models: dict[str, Path]) -> None:
    pipe = Pipeline(OnnxStepModel.load(models["plain"]))
    batch = TickBatch.from_rows(
        ["a"] * 6, _ms([0, 1, 1, 0.5, 1.5, 1.2]), [1.0] * 6, index=[10, 11, 12, 13, 14, 15]
    )
    result = run(pipe, batch)
    assert [(r.index, r.reason) for r in result.rejections] == [
        (12, RejectReason.DUPLICATE), (13, RejectReason.LATE), (15, RejectReason.OUT_OF_ORDER),
    ]  # fmt: skip
    assert result.counters.accepted == 3
    assert result.counters.rejected == {"duplicate": 1, "late": 1, "out_of_order": 1}


def test_calibrated_intervals_wrap_the_forecast(models: dict[str, Path]) -> None:
    pipe = Pipeline(OnnxStepModel.load(models["rich"]))
    result = run(pipe, ticks("known", [0, 1, 2, 3, 4], [[float(v), 0.0] for v in range(5)]))
    fc = result.forecasts
    assert fc.lower is not None and fc.upper is not None
    assert fc.lower.shape == (1, 2, 5)
    cal = pipe.meta.calibration
    lower_q = np.asarray(cal.lower)
    assert fc.unit is not None
    # the unit K = kappa * s of the key's level/scale after the origin
    assert fc.unit[0] == pytest.approx(pipe.store.value_scale[pipe.store.rows["known"]])
    np.testing.assert_allclose(fc.lower[0], fc.values[0] + lower_q * fc.unit[0])
    assert np.all(fc.lower < fc.values[:, None, :])
    assert np.all(fc.upper > fc.values[:, None, :])


def test_forecast_json_schema(models: dict[str, Path]) -> None:
    pipe = Pipeline(OnnxStepModel.load(models["rich"]))
    result = run(pipe, ticks("known", [0, 1, 2, 3, 4], [[float(v), 0.0] for v in range(5)]))
    ((key, value),) = encode_forecasts(result.forecasts)
    doc = orjson.loads(value)
    assert key == b"known"
    assert set(doc) == {
        "schema", "id", "key", "ts", "origin_s", "model", "model_version", "interval_s",
        "interval", "horizon", "levels", "values", "lower", "upper",
    }  # fmt: skip
    assert doc["schema"] == 2
    assert doc["ts"] == np.datetime_as_string(np.datetime64(T0 + 3 * HOUR, "s")) + "Z"
    assert doc["origin_s"] == T0 + 3 * HOUR and doc["id"] == f"known@{T0 + 3 * HOUR}"
    assert doc["interval"] == "PT1H"
    assert doc["interval_s"] == HOUR
    assert len(doc["values"]) == doc["horizon"] == 5
    # float32-faithful: the shortest digits that read back as the model's float32 values
    single = result.forecasts.values[0].astype(np.float32)
    assert np.array_equal(np.array(doc["values"], dtype=np.float32), single)
    assert doc["values"] == [float(np.format_float_positional(v, unique=True)) for v in single]
    assert doc["levels"] == [0.5, 0.9]
    assert len(doc["lower"]) == len(doc["upper"]) == 2 and len(doc["lower"][1]) == 5
    assert encode_forecasts(pipe.empty_forecasts()) == []


def test_lru_cap_bounds_keys_and_evicted_keys_start_over(models: dict[str, Path]) -> None:
    pipe = Pipeline(OnnxStepModel.load(models["w2"]), max_keys=3, initial_capacity=2)
    for i in range(10):
        run(pipe, ticks(f"k{i}", [0, 1, 2], [1.0, 2.0, 3.0]), now=float(i))
        assert pipe.active_keys <= 3
    assert pipe.totals.evicted_lru == 7
    assert pipe.store.capacity == 3
    back = run(pipe, ticks("k0", [3, 4], [1.0, 2.0]), now=20.0)
    assert len(back.forecasts) == 0  # k0 forgot its history: warm-up again


def test_ttl_expires_idle_keys(models: dict[str, Path]) -> None:
    pipe = Pipeline(OnnxStepModel.load(models["w2"]), key_ttl_s=60.0)
    run(pipe, ticks("idle", [0], [1.0]), now=0.0)
    run(pipe, ticks("busy", [0], [1.0]), now=50.0)
    result = run(pipe, ticks("busy", [1], [1.0]), now=100.0)
    assert result.counters.expired_ttl == 1
    assert "idle" not in pipe.store
    assert "busy" in pipe.store


def test_batch_with_more_keys_than_the_cap_is_split(models: dict[str, Path]) -> None:
    pipe = Pipeline(OnnxStepModel.load(models["w2"]), max_keys=4)
    keys = [f"k{i}" for i in range(10)]
    batch = TickBatch.from_rows(keys * 2, _ms([0] * 10 + [1] * 10), [1.0] * 20)
    result = run(pipe, batch)
    assert result.counters.accepted == 20
    assert pipe.active_keys == 4
    assert not result.rejections


def test_invalid_settings_are_refused(models: dict[str, Path]) -> None:
    model = OnnxStepModel.load(models["plain"])
    with pytest.raises(ConfigurationError, match="max_gap"):
        Pipeline(model, max_gap=-1)
    with pytest.raises(ConfigurationError, match="aggregation"):
        Pipeline(model, aggregation="median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="value columns"):
        run(Pipeline(model), TickBatch.from_rows(["a"], [0], [[1.0, 2.0]]))


def _offline(stream: list[tuple[str, int, list[float]]], model: Path) -> dict[OriginKey, Offline]:
    """Training's replay of ``stream`` (value and one extra, mean-aggregated hourly):
    ``(key, origin_ts)`` -> its forecast ``[H]``, unit and bands ``[L, H]`` as the forecasts
    file holds them (``training.evaluate.stream_forecasts``,
    ``training.backtest.forecast_bands``, floored for a non-negative model)."""
    import onnxruntime as ort
    import pandas as pd

    from streamcast.core.features import floor_non_negative
    from training.backtest import forecast_bands
    from training.evaluate import stream_forecasts
    from training.regular import regularise

    meta = OnnxStepModel.load(model).meta
    frame = pd.DataFrame(
        {
            "key": [t[0] for t in stream],
            "ts_ms": np.array([t[1] for t in stream], dtype=np.int64),
            "value": [t[2][0] for t in stream],
            "temp": [t[2][1] for t in stream],
        }
    )
    # the stream's gaps and resets are deliberate: no 90 % support check of the interval
    series, _ = regularise(
        frame, interval=HOUR, max_gap=meta.gap.max_gap, min_length=1, aggregation="mean",
        min_support=0,
    )  # fmt: skip
    offline = stream_forecasts(ort.InferenceSession(str(model)), meta, series)
    bands = forecast_bands(series, offline, meta.calibration)
    assert bands is not None
    lower, upper = (floor_non_negative(b, meta.non_negative) for b in bands)
    rows = zip(offline.key.tolist(), offline.origin_ts.tolist(), strict=True)
    return {
        (series.keys[k], t): Offline(
            offline.forecast[i], float(offline.scale[i]), lower[i], upper[i]
        )
        for i, (k, t) in enumerate(rows)
    }


def _online(stream: list[tuple[str, int, list[float]]], model: Path) -> dict[OriginKey, np.ndarray]:
    """The pipeline's forecasts of ``stream`` fed 25 ticks a batch: ``(key, origin_ts)``
    -> its values ``[H]``."""
    pipe = Pipeline(OnnxStepModel.load(model))
    got: dict[OriginKey, np.ndarray] = {}
    for pos in range(0, len(stream), 25):
        part = stream[pos : pos + 25]
        batch = TickBatch.from_rows(
            [t[0] for t in part], [t[1] for t in part], [t[2] for t in part]
        )
        fc = pipe.process(batch, 0.0).forecasts
        got.update(
            {(k, int(t)): v for k, t, v in zip(fc.keys, fc.origin_ts, fc.values, strict=True)}
        )
    return got


def _assert_online_equals_offline(
    stream: list[tuple[str, int, list[float]]],
    model: Path,
    *,
    more_than: int,
    rtol: float,
    atol: float,
) -> None:
    """The pipeline's forecasts of ``stream`` are the offline evaluator's: the same
    (key, origin) pairs, more than ``more_than`` of them, values within the tolerances."""
    expected = {where: fc.values for where, fc in _offline(stream, model).items()}
    got = _online(stream, model)
    assert len(expected) > more_than
    assert sorted(got) == sorted(expected)
    for where, values in expected.items():
        np.testing.assert_allclose(got[where], values, rtol=rtol, atol=atol)


def test_equals_the_offline_evaluator(models: dict[str, Path]) -> None:
    """Invariant 1 without a broker: same ticks, training's regularise + stream_forecasts."""
    rng = np.random.default_rng(11)
    keys = ["known", "k1", "k2"]
    stream, _ = _random_stream(rng, keys, n_hours=50)
    stream.sort(key=lambda t: t[1])
    _assert_online_equals_offline(stream, models["rich"], more_than=30, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("level", "spread"), [(50_000.0, 5.0), (3e6, 1.0), (1e9, 3.0)])
def test_a_large_valued_series_keeps_its_small_moves(
    models: dict[str, Path], level: float, spread: float
) -> None:
    """A meter reading of 3,000,000 that moves by about 1 (a price of 50,000 by 5):
    online equals offline to a millionth of the moves, not just to 1e-5 of the level.
    The window holds the raw values in float64 for this: in float32 (the ulp of 3e6 is
    0.25) the forecasts moved by up to 1.4 times the series' spread."""
    rng = np.random.default_rng(3)
    stream, _ = _random_stream(rng, ["a", "b", "c"], n_hours=80)
    stream = [(k, t, [level + (v[0] - 40.0) / 15.0 * spread, v[1]]) for k, t, v in stream]
    stream.sort(key=lambda t: t[1])
    _assert_online_equals_offline(
        stream, models["rich"], more_than=60, rtol=0.0, atol=1e-6 * spread
    )


def test_a_non_negative_model_floors_forecasts_and_bands_as_the_offline_evaluator(
    models: dict[str, Path], tmp_path: Path
) -> None:
    """``non_negative``: no forecast or band below 0, online as training's replay."""
    # the "rich" model with weights (seed 2) that forecast below many of these values
    plain_model = make_tiny_model(
        tmp_path / "plain.onnx", window=4, horizon=5, extras=("temp",),
        calendar=("time_of_day", "day_of_week"), lags=(2, 4), alpha=0.5,
        max_gap=2, aggregation="mean", levels=(0.5, 0.9), seed=2,
    )  # fmt: skip
    floored = rewrite_meta(plain_model, tmp_path / "floored.onnx", non_negative=True)
    rng = np.random.default_rng(5)
    stream, _ = _random_stream(rng, ["a", "b", "c"], n_hours=50)
    # counts near zero, in time order
    stream = [(k, t, [abs(v[0] - 40.0) / 10.0, v[1]]) for k, t, v in stream]
    stream.sort(key=lambda t: t[1])
    batches = [stream[pos : pos + 25] for pos in range(0, len(stream), 25)]

    def online(path: Path) -> ForecastBatch:
        pipe = Pipeline(OnnxStepModel.load(path))
        parts = [
            pipe.process(
                TickBatch.from_rows([t[0] for t in b], [t[1] for t in b], [t[2] for t in b]), 0.0
            ).forecasts
            for b in batches
        ]
        return ForecastBatch.concat(parts)

    plain, got = online(plain_model), online(floored)
    assert got.lower is not None and got.upper is not None and got.unit is not None
    assert plain.lower is not None
    assert (plain.values < 0).any() and (plain.lower < 0).any()  # there is something to floor
    assert got.values.min() >= 0.0 and got.lower.min() >= 0.0 and got.upper.min() >= 0.0
    assert (got.lower == 0.0).any()
    np.testing.assert_array_equal(got.values, np.maximum(plain.values, 0.0))
    # offline: training's replay of the same ticks floors the same forecasts, and the
    # adaptive bands of its forecasts file are these, floored
    offline = _offline(stream, floored)
    assert sorted(offline) == sorted(zip(got.keys, got.origin_ts.tolist(), strict=True))
    assert len(offline) > 30
    same = [offline[(k, t)] for k, t in zip(got.keys, got.origin_ts.tolist(), strict=True)]
    values = np.array([fc.values for fc in same])
    assert values.min() >= 0.0
    np.testing.assert_allclose(got.values, values, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.unit, [fc.unit for fc in same], rtol=1e-5)
    np.testing.assert_allclose(got.lower, [fc.lower for fc in same], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.upper, [fc.upper for fc in same], rtol=1e-5, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(
            st.tuples(st.integers(0, 9), st.integers(0, 40 * HOUR), st.floats(-1e6, 1e6)),
            max_size=30,
        ),
        min_size=1,
        max_size=5,
    )
)
def test_any_tick_stream_is_accounted_for_and_state_stays_bounded(
    tiny_w2: TinyReference, batches: list[list[tuple[int, int, float]]]
) -> None:
    pipe = Pipeline(CountingModel(tiny_w2), max_keys=4, key_ttl_s=3.0, initial_capacity=2)
    for now, ticks_ in enumerate(batches):
        batch = TickBatch.from_rows(
            [f"k{t[0]}" for t in ticks_],
            [(T0 + t[1]) * 1000 for t in ticks_],
            np.asarray([t[2] for t in ticks_], dtype=np.float64),
        )
        result = pipe.process(batch, float(now))
        c = result.counters
        assert c.accepted + sum(c.rejected.values()) == len(batch)
        assert len(result.rejections) == sum(c.rejected.values())
        assert c.forecasts == len(result.forecasts)
        assert np.all(np.isfinite(result.forecasts.values))
        assert pipe.active_keys <= 4
        assert pipe.store.capacity <= 4
        for key in set(result.forecasts.keys):
            origins = result.forecasts.origin_ts[np.asarray(result.forecasts.keys) == key]
            assert np.all(np.diff(origins) > 0)


def test_snapshot_restore_continues_exactly(models: dict[str, Path]) -> None:
    rng = np.random.default_rng(5)
    stream, _ = _random_stream(rng, ["known", "a", "b"], n_hours=40)
    stream.sort(key=lambda t: t[1])
    batch = TickBatch.from_rows(
        [t[0] for t in stream], [t[1] for t in stream], [t[2] for t in stream]
    )
    half = len(batch) // 2
    first, second = batch.take(np.arange(half)), batch.take(np.arange(half, len(batch)))
    straight = Pipeline(OnnxStepModel.load(models["rich"]))
    run(straight, first)
    want = run(straight, second).forecasts
    before = Pipeline(OnnxStepModel.load(models["rich"]))
    changed = run(before, first).changed_keys
    assert changed == ["a", "b", "known"]
    records = before.store.snapshot([*changed, "never-seen"])
    assert [k for k, _ in records] == changed
    after = Pipeline(OnnxStepModel.load(models["rich"]))
    assert after.store.restore(records, now_s=0.0) == 3
    got = run(after, second).forecasts
    assert got.keys == want.keys
    assert got.origin_ts.tolist() == want.origin_ts.tolist()
    np.testing.assert_array_equal(got.values, want.values)
    other = Pipeline(OnnxStepModel.load(models["plain"]))
    with pytest.raises(ValueError, match="layout"):
        other.store.restore(records, now_s=0.0)


def test_changed_and_removed_keys_drive_a_changelog(models: dict[str, Path]) -> None:
    pipe = Pipeline(OnnxStepModel.load(models["w2"]), max_keys=2)
    first = run(pipe, TickBatch.from_rows(["a", "b"], _ms([0, 0]), [1.0, 1.0]), now=1.0)
    assert (first.changed_keys, first.removed) == (["a", "b"], [])
    late = run(pipe, TickBatch.from_rows(["a"], _ms([-1]), [1.0]), now=2.0)
    assert late.changed_keys == []  # a rejected tick changes nothing
    evict = run(pipe, TickBatch.from_rows(["c"], _ms([0]), [1.0]), now=3.0)
    assert evict.changed_keys == ["c"]
    assert evict.removed == [("b", -1)]  # least recently used (read from no partition)


def test_long_steady_batches_match_the_reference(models: dict[str, Path]) -> None:
    """More intervals per key in one batch than the window holds (replay at full speed)."""
    pipe = Pipeline(OnnxStepModel.load(models["plain"]))  # window 3
    hours = list(range(20))
    series = {k: [float((i * (j + 3)) % 11) for i in hours] for j, k in enumerate("ab")}
    run(pipe, TickBatch.from_rows(["a", "b"] * 5, _ms([h for h in range(5) for _ in "ab"]),
                                  [series[k][h] for h in range(5) for k in "ab"]))  # fmt: skip
    rest = [(k, h) for h in range(5, 20) for k in "ab"]
    result = run(
        pipe,
        TickBatch.from_rows(
            [k for k, _ in rest], _ms([h for _, h in rest]), [series[k][h] for k, h in rest]
        ),
    )
    assert result.counters.model_calls == 15
    ref = TinyReference(models["plain"])
    window_after = pipe.store.window[pipe.store.rows["a"]]
    assert sorted(window_after[:, 0].tolist()) == sorted(series["a"][16:19])
    for key in "ab":
        intervals = [(T0 + h * HOUR, np.array([series[key][h]])) for h in hours[:-1]]
        expected = [
            e for e in reference_forecasts(ref, key, intervals) if e.origin >= T0 + 4 * HOUR
        ]
        mine = np.asarray(result.forecasts.keys) == key
        assert result.forecasts.origin_ts[mine].tolist() == [e.origin for e in expected]
        np.testing.assert_allclose(
            result.forecasts.values[mine],
            np.stack([e.values for e in expected]),
            rtol=1e-5,
            atol=F32_ATOL,
        )


def test_one_interval_per_key_gives_the_bits_of_several_per_key(models: dict[str, Path]) -> None:
    """The steady state's path (each key closes one interval: its lags are the window's
    newest values) against the general one (several per key in one batch), bit for bit,
    with an extra input so the ring holds more than one column."""
    keys = ["a", "b", "c"]
    hours = range(16)
    series = {k: [[float((h * (j + 3)) % 11) + 40.0, float(h % 5)] for h in hours]
              for j, k in enumerate(keys)}  # fmt: skip

    def batch(hs: Sequence[int]) -> TickBatch:
        rows = [(k, h) for h in hs for k in keys]
        return TickBatch.from_rows(
            [k for k, _ in rows], _ms([h for _, h in rows]), [series[k][h] for k, h in rows]
        )

    warm, rest = list(hours[:8]), list(hours[8:])
    together, apart = (Pipeline(OnnxStepModel.load(models["rich"])) for _ in range(2))
    for pipe in (together, apart):
        run(pipe, batch(warm))
    whole = run(together, batch(rest)).forecasts
    parts = ForecastBatch.concat([run(apart, batch([h])).forecasts for h in rest])
    assert len(whole) == len(parts) == 3 * len(rest)  # each tick closes the hour before
    order = np.lexsort((whole.origin_ts, np.asarray(whole.keys)))
    mine = np.lexsort((parts.origin_ts, np.asarray(parts.keys)))
    np.testing.assert_array_equal(whole.origin_ts[order], parts.origin_ts[mine])
    np.testing.assert_array_equal(whole.values[order], parts.values[mine])
    np.testing.assert_array_equal(together.store.window, apart.store.window)
    np.testing.assert_array_equal(together.store.h, apart.store.h)


def test_model_swap_rebuilds_state_from_the_windows(tmp_path: Path) -> None:
    old = make_tiny_model(tmp_path / "old.onnx", window=3, seed=1)
    new = make_tiny_model(tmp_path / "new.onnx", window=3, seed=2, state_size=7, alpha=0.5)
    values = [float((3 * i) % 7) for i in range(12)]
    pipe = Pipeline(OnnxStepModel.load(old))
    run(pipe, ticks("k", range(7), values[:7]))  # closes hours 0..5
    assert pipe.swap_model(OnnxStepModel.load(new)) == 1
    assert pipe.store.h.shape[1] == 7
    after = run(pipe, ticks("k", range(7, 12), values[7:12]))  # closes hours 6..10
    # the new model, started from zero on the last window (hours 3..5), then stepping on
    ref = TinyReference(new)
    intervals = [(T0 + h * HOUR, np.array([values[h]])) for h in range(3, 11)]
    expected = [e for e in reference_forecasts(ref, "k", intervals) if e.origin >= T0 + 6 * HOUR]
    assert after.forecasts.origin_ts.tolist() == [e.origin for e in expected]
    np.testing.assert_allclose(
        after.forecasts.values, np.stack([e.values for e in expected]), rtol=1e-5, atol=F32_ATOL
    )
    other = make_tiny_model(tmp_path / "other.onnx", window=5)
    with pytest.raises(ConfigurationError, match="window 3 -> 5"):
        pipe.swap_model(OnnxStepModel.load(other))


def test_model_swap_sets_level_and_scale_from_the_window_with_the_new_scheme(
    tmp_path: Path,
) -> None:
    old = make_tiny_model(tmp_path / "old.onnx", window=3, alpha=0.25)
    new = make_tiny_model(tmp_path / "new.onnx", window=3, alpha=0.5, seed=3)
    pipe = Pipeline(OnnxStepModel.load(old))
    run(pipe, ticks("k", range(6), [1.0, 2.0, 3.0, 10.0, 20.0, 60.0]))  # closes 0..4
    pipe.swap_model(OnnxStepModel.load(new))
    st, k = pipe.store, pipe.store.rows["k"]
    window = [3.0, 10.0, 20.0]  # the current window, hours 2..4
    level = scale = float(np.mean(window))
    for v in window:
        level, scale = level + 0.5 * (v - level), scale + 0.5 * (abs(v) - scale)
    assert (st.value_level[k], st.value_scale[k]) == pytest.approx((level, scale))


def test_a_key_that_makes_the_pipeline_raise_is_isolated_and_the_rest_goes_on(
    models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug triggered by one key must not become a crash loop: its ticks are rejected
    ``internal_error`` with the exception text, its state stays as before the batch, and
    every other key's forecasts and state equal a run without it."""
    rng = np.random.default_rng(3)
    stream, _ = _random_stream(rng, ["a", "b", "c", "poison"], n_hours=30)
    stream.sort(key=lambda t: t[1])
    clean = [t for t in stream if t[0] != "poison"]

    def batch_of(rows: list[tuple[str, int, list[float]]]) -> TickBatch:
        return TickBatch.from_rows([t[0] for t in rows], [t[1] for t in rows], [t[2] for t in rows])

    want = Pipeline(OnnxStepModel.load(models["rich"]))
    got = Pipeline(OnnxStepModel.load(models["rich"]))
    real_advance = Pipeline._advance

    def buggy(
        self: Pipeline, batch: TickBatch, rows: npt.NDArray[np.int64], now_s: float
    ) -> Attempt:
        attempt = real_advance(self, batch, rows, now_s)  # writes state first, then fails
        if "poison" in batch.keys:
            raise ZeroDivisionError("a bug that only this key triggers")
        return attempt

    monkeypatch.setattr(Pipeline, "_advance", buggy)
    half = len(stream) // 2
    for part_all in (stream[:half], stream[half:]):
        part_clean = [t for t in clean if t in part_all]
        monkeypatch.setattr(Pipeline, "_advance", real_advance)
        expected = run(want, batch_of(part_clean))
        monkeypatch.setattr(Pipeline, "_advance", buggy)
        result = run(got, batch_of(part_all))
        poison_ticks = [i for i, t in enumerate(part_all) if t[0] == "poison"]
        internal = [r for r in result.rejections if r.reason is RejectReason.INTERNAL_ERROR]
        assert [r.index for r in internal] == poison_ticks
        assert "ZeroDivisionError: a bug that only this key triggers" in internal[0].detail
        assert result.counters.internal_errors == 1
        assert result.forecasts.keys == expected.forecasts.keys
        np.testing.assert_array_equal(result.forecasts.values, expected.forecasts.values)
        assert "poison" not in result.changed_keys
    for key in ("a", "b", "c"):
        mine, theirs = got.store.rows[key], want.store.rows[key]
        for name in got.store.COLUMNS:
            if name not in ("last_seen", "partition"):
                np.testing.assert_array_equal(
                    getattr(got.store, name)[mine], getattr(want.store, name)[theirs], err_msg=name
                )
    poisoned = got.store.rows["poison"]
    assert got.store.last_ts_ms[poisoned] == NONE, "its state was put back as it was"


def test_a_rebuild_steps_the_state_alone(tmp_path: Path) -> None:
    """A swap rebuilds every warm key with ``window`` state-only calls (no rollout); the
    forecasts that follow equal those after a rebuild by full steps."""
    path = make_tiny_model(tmp_path / "m.onnx", window=3)
    values = [float((3 * i) % 7) for i in range(10)]

    class StepOnly:
        """The artifact as a bare StepModel (no ``advance``): rebuilds use full steps."""

        def __init__(self) -> None:
            self.inner = OnnxStepModel.load(path)
            self.meta, self.identity = self.inner.meta, self.inner.identity
            self.steps = 0

        def step(self, x: Float32Array, h: Float32Array, c: Float32Array,
                 calendar: Float32Array | None) -> tuple[Float32Array, ...]:  # fmt: skip
            self.steps += 1
            return self.inner.step(x, h, c, calendar)

    class Counting(StepOnly):
        advances = 0

        def advance(self, x: Float32Array, h: Float32Array, c: Float32Array,
                    calendar: Float32Array | None) -> tuple[Float32Array, ...]:  # fmt: skip
            self.advances += 1
            return self.inner.advance(x, h, c, calendar)

    pruned, full = Pipeline(OnnxStepModel.load(path)), Pipeline(OnnxStepModel.load(path))
    for pipe in (pruned, full):
        run(pipe, ticks("k", range(6), values[:6]))
    counting, step_only = Counting(), StepOnly()
    pruned.swap_model(counting)  # type: ignore[arg-type]
    full.swap_model(step_only)  # type: ignore[arg-type]
    assert (counting.steps, counting.advances, step_only.steps) == (0, 3, 3)
    np.testing.assert_array_equal(pruned.store.h, full.store.h)
    after = run(pruned, ticks("k", range(6, 10), values[6:]))
    assert counting.steps == 4  # then one full step per closed interval
    np.testing.assert_array_equal(
        after.forecasts.values, run(full, ticks("k", range(6, 10), values[6:])).forecasts.values
    )


class _CallSizes:
    """An ONNX model recording the keys of every call (full step or state only)."""

    def __init__(self, path: Path) -> None:
        self.inner = OnnxStepModel.load(path)
        self.meta, self.identity = self.inner.meta, self.inner.identity
        self.keys_per_call: list[int] = []

    def step(self, x: Float32Array, h: Float32Array, c: Float32Array,
             calendar: Float32Array | None) -> tuple[Float32Array, ...]:  # fmt: skip
        self.keys_per_call.append(len(x))
        return self.inner.step(x, h, c, calendar)

    def advance(self, x: Float32Array, h: Float32Array, c: Float32Array,
                calendar: Float32Array | None) -> tuple[Float32Array, ...]:  # fmt: skip
        self.keys_per_call.append(len(x))
        return self.inner.advance(x, h, c, calendar)


def test_keys_that_finish_warming_up_together_step_in_blocks_with_the_same_results(
    tmp_path: Path,
) -> None:
    """A batch whose keys all finish their warm-up steps their windows ``rebuild_keys``
    keys at a time (each key's whole window is in flight: ~26 KB per key, so a batch of
    100,000 would need gigabytes), the first block beside the batch's other steps; the
    forecasts, their order and every key's state equal the one-piece run's."""
    path = make_tiny_model(
        tmp_path / "m.onnx", window=3, calendar=("time_of_day",), levels=(0.8, 0.95)
    )
    lone = [f"k{i}" for i in range(7)]  # close one interval per batch: the vectorised path

    def batch(keys_hours: list[tuple[str, Sequence[int]]]) -> TickBatch:
        rows = [(k, h) for k, hs in keys_hours for h in hs]
        return TickBatch.from_rows(
            [k for k, _ in rows],
            [int((T0 + h * HOUR) * 1000) for _, h in rows],
            [[float((5 * h + ord(k[-1])) % 11)] for k, h in rows],
        )

    def batches() -> list[TickBatch]:
        first = batch([(k, [0, 1, 2]) for k in lone] + [("steady", range(5))])
        # the window of each lone key fills at hour 2; "multi" closes hours 0-2 at once
        # (the planner's loop), "steady" is past its warm-up and steps once
        last = batch([(k, [3]) for k in lone] + [("multi", range(4)), ("steady", [5])])
        return [first, last]

    results, models = [], []
    for block in (3, Pipeline.rebuild_keys):
        model = _CallSizes(path)
        pipe = Pipeline(model)  # type: ignore[arg-type]
        pipe.rebuild_keys = block
        first, last = batches()
        run(pipe, first)
        model.keys_per_call.clear()
        results.append((run(pipe, last), pipe.store))
        models.append(model)
    (blocked, blocked_store), (whole, whole_store) = results
    assert len(blocked.forecasts) == len(whole.forecasts) == 9  # 8 warm-ups and "steady"
    # 8 warm-ups of 3 steps in blocks of 3, 3, 2, the first beside "steady" (its round 0
    # is two calls: "steady"'s full step, the block's state-only steps); in one piece, 8
    assert models[0].keys_per_call == [1, 3, 3, 3, 3, 3, 3, 2, 2, 2]
    assert models[1].keys_per_call == [1, 8, 8, 8]
    assert blocked.forecasts.keys == whole.forecasts.keys
    np.testing.assert_array_equal(blocked.forecasts.origin_ts, whole.forecasts.origin_ts)
    np.testing.assert_array_equal(blocked.forecasts.trigger_index, whole.forecasts.trigger_index)
    for name in ("values", "lower", "upper", "unit"):
        np.testing.assert_array_equal(
            getattr(blocked.forecasts, name), getattr(whole.forecasts, name), err_msg=name
        )
    for key in [*lone, "multi", "steady"]:
        mine, theirs = blocked_store.rows[key], whole_store.rows[key]
        for name in blocked_store.COLUMNS:
            np.testing.assert_array_equal(
                getattr(blocked_store, name)[mine], getattr(whole_store, name)[theirs], err_msg=name
            )


def test_a_rebuild_runs_in_blocks_of_keys_with_the_same_bits(tmp_path: Path) -> None:
    """A swap replays its keys' windows ``rebuild_keys`` keys at a time (a replay holds
    every step of its keys: one piece for a whole store would need gigabytes), and the
    state it leaves is the one-piece replay's, bit for bit."""
    path = make_tiny_model(tmp_path / "m.onnx", window=3)
    new = make_tiny_model(tmp_path / "new.onnx", window=3, seed=2)
    keys = [f"k{i}" for i in range(7)]
    pipes = [Pipeline(OnnxStepModel.load(path)) for _ in range(2)]
    for pipe in pipes:
        for i, key in enumerate(keys):
            run(pipe, ticks(key, range(6), [float((3 * j + i) % 7) for j in range(6)]))
    blocked, whole = _CallSizes(new), _CallSizes(new)
    pipes[0].rebuild_keys = 3
    assert pipes[0].swap_model(blocked) == pipes[1].swap_model(whole) == len(keys)  # type: ignore[arg-type]
    assert blocked.keys_per_call == [3] * 3 + [2] * 3 + [2] * 3  # 7 keys: blocks of 3, 2, 2
    assert whole.keys_per_call == [7] * 3
    for name in ("h", "c", "value_level", "value_scale", "model_id"):
        np.testing.assert_array_equal(
            getattr(pipes[0].store, name), getattr(pipes[1].store, name), err_msg=name
        )
