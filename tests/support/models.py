"""A tiny, valid streamcast artifact built without TensorFlow, and its numpy twin.

:func:`make_tiny_model` writes an ONNX graph with the exact signature of
:mod:`streamcast.core.artifact` and a full :class:`~streamcast.core.artifact.ModelMeta` in its
metadata. Its deterministic recurrence (not an LSTM, but stateful in the same way)::

    h' = tanh(x Wx + h Wh + calendar[:, 0] Wc + b)
    c' = 0.5 c + h'
    forecast = h' Wf + c' Wg + sum_C(calendar * v)       # [B, H]; uses every target row

:class:`TinyReference` reads the same weights back from the file and computes the step
in numpy, and :func:`reference_forecasts` runs the documented key lifecycle for one key
with plain scalar code, so tests can check the pipeline's arrays exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from streamcast.core.artifact import (
    METADATA_KEY,
    Aggregation,
    CalibrationMeta,
    DriftMeta,
    FeatureMeta,
    GapMeta,
    GraphNames,
    ModelMeta,
    ScalingMeta,
    SelfTestMeta,
)
from streamcast.core.features import (
    CalendarName,
    calendar_features,
    interpolate_gap,
    step_inputs,
    target_times,
)
from streamcast.core.model import fingerprint

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


def rewrite_meta(src: Path, dst: Path, **changes: object) -> Path:
    """Copy the artifact ``src`` to ``dst`` with ``changes`` applied to its metadata JSON
    (top-level fields replaced as given, valid or not)."""
    model = onnx.load(str(src))
    props = {p.key: p.value for p in model.metadata_props}
    meta = json.loads(props[METADATA_KEY])
    meta.update(changes)
    del model.metadata_props[:]
    helper.set_model_props(model, {METADATA_KEY: json.dumps(meta)})
    onnx.save(model, str(dst))
    return dst


def scale_weights(src: Path, dst: Path, factor: float) -> Path:
    """Copy the artifact ``src`` to ``dst`` with every float weight multiplied by
    ``factor`` (same graph, same metadata: another model that claims to be the same)."""
    model = onnx.load(str(src))
    for init in model.graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            scaled = numpy_helper.to_array(init) * np.float32(factor)
            init.CopyFrom(numpy_helper.from_array(scaled.astype(np.float32), init.name))
    onnx.save(model, str(dst))
    return dst


def make_tiny_model(
    path: Path,
    *,
    window: int = 4,
    horizon: int = 3,
    interval_s: int = 3600,
    extras: tuple[str, ...] = (),
    calendar: tuple[CalendarName, ...] = (),
    lags: tuple[int, ...] = (),
    alpha: float = 0.25,
    kappa: float = 1.0,
    state_size: int = 5,
    max_gap: int = 3,
    aggregation: Aggregation = "last",
    levels: tuple[float, ...] = (),
    extra_loc: tuple[float, ...] | None = None,
    extra_scale: tuple[float, ...] | None = None,
    seed: int = 0,
    name: str = "tiny",
    version: str = "1",
    self_test: int = 0,
    mean_forecast: bool = False,
    drift: DriftMeta | None = None,
) -> Path:
    """Write the tiny artifact to ``path`` and return it; ``self_test`` rows of random
    inputs with their outputs become its self-test sample.

    ``mean_forecast``: the forecast weights are zero, so every forecast is the key's
    level (the forecast in units is 0): a model whose residuals are the scaled values
    themselves, for tests that control residuals through the values they send. Give it
    ``drift`` (e.g. :func:`normal_reference`) and normal ``levels`` bands come with it.
    ``x`` is the schema-2 step input ``[u, extras, r, lags]`` of width ``2 + E + M``.
    """
    rng = np.random.default_rng(seed)
    f, s, cw = 2 + len(extras) + max(lags, default=1), state_size, 2 * len(calendar)

    def weight(*shape: int) -> F32:
        return (rng.standard_normal(shape) * 0.5).astype(np.float32)

    inits = {
        "Wx": weight(f, s),
        "Wh": weight(s, s),
        "b": weight(s),
        "Wf": weight(s, horizon) * (0.0 if mean_forecast else 1.0),
        "Wg": weight(s, horizon) * (0.0 if mean_forecast else 1.0),
        "half": np.array(0.5, dtype=np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "Wx"], ["xw"]),
        helper.make_node("MatMul", ["h", "Wh"], ["hw"]),
        helper.make_node("Add", ["xw", "hw"], ["pre0"]),
        helper.make_node("Add", ["pre0", "b"], ["pre1"]),
    ]
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", f]),
        helper.make_tensor_value_info("h", TensorProto.FLOAT, ["batch", s]),
        helper.make_tensor_value_info("c", TensorProto.FLOAT, ["batch", s]),
    ]
    pre, extra_fc = "pre1", None
    if cw:
        inits["Wc"] = weight(cw, s)
        inits["v"] = weight(cw)
        inits["zero"] = np.array(0, dtype=np.int64)
        inits["axis2"] = np.array([2], dtype=np.int64)
        inputs.append(
            helper.make_tensor_value_info("calendar", TensorProto.FLOAT, ["batch", horizon, cw])
        )
        nodes += [
            helper.make_node("Gather", ["calendar", "zero"], ["cal0"], axis=1),
            helper.make_node("MatMul", ["cal0", "Wc"], ["cw"]),
            helper.make_node("Add", ["pre1", "cw"], ["pre2"]),
            helper.make_node("Mul", ["calendar", "v"], ["calv"]),
            helper.make_node("ReduceSum", ["calv", "axis2"], ["calsum"], keepdims=0),
        ]
        pre, extra_fc = "pre2", "calsum"
    nodes += [
        helper.make_node("Tanh", [pre], ["h_out"]),
        helper.make_node("Mul", ["c", "half"], ["c_half"]),
        helper.make_node("Add", ["c_half", "h_out"], ["c_out"]),
        helper.make_node("MatMul", ["h_out", "Wf"], ["fh"]),
        helper.make_node("MatMul", ["c_out", "Wg"], ["fc"]),
        helper.make_node("Add", ["fh", "fc"], ["f0" if extra_fc else "forecast"]),
    ]
    if extra_fc:
        nodes.append(helper.make_node("Add", ["f0", extra_fc], ["forecast"]))
    outputs = [
        helper.make_tensor_value_info("h_out", TensorProto.FLOAT, ["batch", s]),
        helper.make_tensor_value_info("c_out", TensorProto.FLOAT, ["batch", s]),
        helper.make_tensor_value_info("forecast", TensorProto.FLOAT, ["batch", horizon]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_step",
        inputs,
        outputs,
        initializer=[numpy_helper.from_array(a, name=k) for k, a in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    grid = np.linspace(0.5, 2.0, horizon)
    meta = ModelMeta(
        name=name,
        version=version,
        created_at="2026-11-24T00:00:00Z",
        graph=GraphNames(calendar="calendar" if cw else None),
        state_size=s,
        units=s,
        window=window,
        horizon=horizon,
        interval_s=interval_s,
        aggregation=aggregation,
        features=FeatureMeta(extra_names=extras, calendar=calendar),
        scaling=ScalingMeta(
            alpha=alpha,
            lags=lags,
            kappa=kappa,
            extra_loc=extra_loc if extra_loc is not None else tuple(1.0 for _ in extras),
            extra_scale=extra_scale if extra_scale is not None else tuple(2.0 for _ in extras),
        ),
        gap=GapMeta(max_gap=max_gap),
        calibration=normal_bands(levels, horizon)
        if mean_forecast
        else CalibrationMeta(
            levels=levels,
            lower=tuple(tuple(float(-q) for q in grid * lv) for lv in levels),
            upper=tuple(tuple(float(q) for q in grid * lv * 1.5) for lv in levels),
        ),
        drift=drift or DriftMeta(),
    )
    helper.set_model_props(model, {METADATA_KEY: meta.to_json()})
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    if self_test:
        sample = tiny_self_test(TinyReference(path), self_test, rng)
        rewrite_meta(path, path, self_test=sample.model_dump())
    return path


def normal_bands(levels: tuple[float, ...], horizon: int) -> CalibrationMeta:
    """Central standard normal bands at every step: a mean model's calibration on
    standard normal scaled values."""
    z = [NormalDist().inv_cdf(0.5 + level / 2) for level in levels]
    return CalibrationMeta(
        levels=levels,
        lower=tuple((-q,) * horizon for q in z),
        upper=tuple((q,) * horizon for q in z),
    )


def normal_reference(horizon: int, input_threshold: float | None = None) -> DriftMeta:
    """The drift reference of standard normal residuals and scaled values."""
    probs = tuple(float(p) for p in np.linspace(0.02, 0.98, 49))
    return DriftMeta(
        residual_mean=(0.0,) * horizon,
        residual_std=(1.0,) * horizon,
        input_probs=probs,
        input_quantiles=tuple(NormalDist().inv_cdf(p) for p in probs),
        input_threshold=input_threshold,
    )


def tiny_self_test(ref: TinyReference, rows: int, rng: np.random.Generator) -> SelfTestMeta:
    """A self-test sample of ``rows`` random inputs and the tiny model's outputs."""
    meta = ref.meta
    f, s = meta.step_width, meta.state_size
    x, h, c = (rng.standard_normal((rows, n)).astype(np.float32) for n in (f, s, s))
    n_cal = meta.feature_spec().n_calendar
    cal = rng.uniform(-1, 1, (rows, meta.horizon, n_cal)).astype(np.float32) if n_cal else None
    h_out, c_out, forecast = ref.step(x, h, c, cal)
    return SelfTestMeta(
        x=x.tolist(), h=h.tolist(), c=c.tolist(), calendar=[] if cal is None else cal.tolist(),
        h_out=h_out.tolist(), c_out=c_out.tolist(), forecast=forecast.tolist(),
    )  # fmt: skip


class TinyReference:
    """The tiny model's step in numpy, with weights read back from the artifact."""

    def __init__(self, path: Path) -> None:
        model = onnx.load(str(path))
        self.w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        props = {p.key: p.value for p in model.metadata_props}
        self.meta = ModelMeta.from_metadata_map(props)
        self.identity = fingerprint(path.read_bytes())

    def step(self, x: F32, h: F32, c: F32, calendar: F32 | None) -> tuple[F32, F32, F32]:
        """Same maths as the graph, float32."""
        w = self.w
        pre = x @ w["Wx"] + h @ w["Wh"] + w["b"]
        extra = np.float32(0.0)
        if calendar is not None and "Wc" in w:
            pre = pre + calendar[:, 0] @ w["Wc"]
            extra = (calendar * w["v"]).sum(axis=2)
        h_out = np.tanh(pre).astype(np.float32)
        c_out = (c * np.float32(0.5) + h_out).astype(np.float32)
        forecast = (h_out @ w["Wf"] + c_out @ w["Wg"] + extra).astype(np.float32)
        return h_out, c_out, np.asarray(forecast, dtype=np.float32)


@dataclass(frozen=True)
class RefForecast:
    """One expected forecast: origin (interval start, s) and values in original units."""

    origin: int
    values: F64


def reference_forecasts(  # noqa: PLR0915 - one key's service lifecycle, written out
    ref: TinyReference,
    key: str,
    intervals: list[tuple[int, F64]],
    *,
    max_gap: int | None = None,
) -> list[RefForecast]:
    """The documented lifecycle for one key's closed intervals, in plain scalar code
    (``key`` names the key; every key is treated alike)."""
    del key
    meta = ref.meta
    spec = meta.feature_spec()
    scheme = meta.level_scale()
    gap_limit = meta.gap.max_gap if max_gap is None else max_gap
    s, w, iv, m = meta.state_size, meta.window, meta.interval_s, scheme.max_lag
    extra = meta.extra_scaling()
    out: list[RefForecast] = []
    h = np.zeros((1, s), np.float32)
    c = np.zeros((1, s), np.float32)
    window: list[tuple[int, F64, bool]] = []
    warm = False
    level, scale = 0.0, 1.0
    prev: tuple[int, F64] | None = None

    def step(ts: int, row: F64, held: list[float]) -> tuple[F32, float, float]:
        nonlocal h, c, level, scale
        lv, sc = scheme.update(np.array([level]), np.array([scale]), np.array([row[0]]))
        level, scale = float(lv[0]), float(sc[0])
        last = np.full(m, np.nan)
        tail = held[-m:]
        last[m - len(tail) :] = tail
        x, unit = step_inputs(row[None, :], lv, sc, last[None, :], scheme=scheme, extra=extra)
        cal = None
        if spec.n_calendar:
            cal = calendar_features(target_times(np.array([ts]), iv, meta.horizon), spec)
        h, c, fc = ref.step(x, h, c, cal)
        return np.asarray(fc[0], dtype=np.float32), level, float(unit[0])

    for start, value in intervals:
        rows: list[tuple[int, F64, bool]] = []
        if prev is not None and 1 <= (start - prev[0]) // iv - 1 <= gap_limit:
            missing = (start - prev[0]) // iv - 1
            fill = interpolate_gap(prev[1], value, missing)
            rows += [(prev[0] + (k + 1) * iv, fill[k], False) for k in range(missing)]
        elif prev is None or start - prev[0] != iv:
            window, warm = [], False
            h = np.zeros((1, s), np.float32)
            c = np.zeros((1, s), np.float32)
        rows.append((start, value, True))
        prev = (start, value)
        for ts, row, real in rows:
            window = [*window, (ts, row, real)][-w:]
            values = [float(r[1][0]) for r in window]
            if warm:
                fc, lv, unit = step(ts, row, values)
                if real:
                    out.append(RefForecast(ts, _unscale(fc, lv, unit)))
            elif len(window) == w:
                lv0, sc0 = scheme.init(np.array([values]))
                level, scale = float(lv0[0]), float(sc0[0])
                warm = True
                h = np.zeros((1, s), np.float32)
                c = np.zeros((1, s), np.float32)
                for k, (wts, wrow, _) in enumerate(window):
                    fc, lv, unit = step(wts, wrow, values[: k + 1])
                    if k == w - 1 and real:
                        out.append(RefForecast(wts, _unscale(fc, lv, unit)))
    return out


def _unscale(fc: F32, loc: float, scale: float) -> F64:
    return np.asarray(fc.astype(np.float64) * scale + loc, dtype=np.float64)


class MeanModel:
    """A :class:`~streamcast.core.model.StepModel` double that always forecasts a key's
    level (forecast 0 in units), a level and unit that stay as the warm-up window set
    them (``alpha`` 1e-12, ``kappa`` 1): its scaled residuals are the scaled values
    themselves,
    so a test controls the residuals exactly by the values it sends.

    The metadata is the tiny artifact's with a drift reference of standard normal
    residuals, calibrated 80 % and 95 % normal bands and, given ``input_threshold``, a
    standard normal input reference.
    """

    def __init__(self, path: Path, input_threshold: float | None = None) -> None:
        base = TinyReference(path).meta
        h = base.horizon
        self._meta = base.model_copy(
            update={
                "state_size": 1,
                "units": 1,
                # a level/scale that stays where the warm-up window put it
                "scaling": base.scaling.model_copy(update={"alpha": 1e-12, "kappa": 1.0}),
                "calibration": normal_bands((0.8, 0.95), h),
                "drift": normal_reference(h, input_threshold),
            }
        )
        self.identity = 7

    @property
    def meta(self) -> ModelMeta:
        return self._meta

    def step(self, x: F32, h: F32, c: F32, calendar: F32 | None) -> tuple[F32, F32, F32]:
        """Forecast 0 (the key's level) for every step; the state is untouched."""
        return h, c, np.zeros((len(x), self._meta.horizon), dtype=np.float32)
