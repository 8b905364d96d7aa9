"""The benchmark's model, generated once and cached, and the two TensorFlow-side rows.

Every row of ``bench/table.py`` serves the same model shape, the one a user trains on the
pedestrian data: one LSTM layer of 64 units, window 48, horizon 24, hourly, calendar
features (time of day and day of week in Australia/Melbourne: 4 calendar inputs), 80 %
and 95 % bands, the drift reference of 49 input quantiles. The weights are
``training.model.StepModel``'s own initialisation (Glorot/orthogonal, seed 0): a
random-weight model costs exactly what a trained one of that shape costs, and nothing is
downloaded or trained at run time. It is exported by ``training.export.export_step``
(the exporter users run, with its parity check), so it is the very graph the service
serves.

The "tutorial" twin is what a Keras tutorial builds for the same task:
``Sequential([LSTM(64), Dense(24)])`` over the last 48 rows of (value, calendar); rows
(a) Keras ``model.predict`` per tick and (b) ONNX Runtime per tick on the window run it.

    .venv/bin/python bench/model.py --work .bench   # writes model.onnx, prints (a), (b)

Writes ``<work>/model/{model.onnx,tutorial.keras,tutorial.onnx,shape.json}`` (reused
when the shape matches) and ``<work>/rows-tf.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

#: the model every row serves (see the module docstring)
SHAPE = {
    "units": 64,
    "window": 48,
    "horizon": 24,
    "interval_s": 3600,
    "calendar": ["time_of_day", "day_of_week"],
    "timezone": "Australia/Melbourne",
    "levels": [0.8, 0.95],
}


def describe(shape: dict[str, object] = SHAPE) -> str:
    """One line naming the model's shape (printed beside every figure)."""
    cal = "+".join(str(c) for c in shape["calendar"])  # type: ignore[attr-defined]
    return (
        f"LSTM hidden {shape['units']}, window {shape['window']}, horizon {shape['horizon']}, "
        f"calendar {cal}, bands {shape['levels']}"
    )


def ensure_model(work: Path) -> Path:
    """``<work>/model``, with the artifacts generated if missing or of another shape."""
    out = work / "model"
    stamp = out / "shape.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == SHAPE:
        return out
    out.mkdir(parents=True, exist_ok=True)
    _generate(out)
    stamp.write_text(json.dumps(SHAPE))
    return out


def _generate(out: Path) -> None:
    import keras  # noqa: PLC0415 - TensorFlow only where it is needed
    import tensorflow as tf  # noqa: PLC0415
    import tf2onnx  # noqa: PLC0415

    from streamcast.core.artifact import (  # noqa: PLC0415
        FeatureMeta,
        GapMeta,
        GraphNames,
        ModelMeta,
        ScalingMeta,
    )
    from streamcast.core.features import LevelScale  # noqa: PLC0415
    from tests.support.models import normal_bands, normal_reference  # noqa: PLC0415
    from training.export import export_step  # noqa: PLC0415
    from training.model import StepModel  # noqa: PLC0415

    units, window, horizon = int(SHAPE["units"]), int(SHAPE["window"]), int(SHAPE["horizon"])  # type: ignore[call-overload]
    n_cal = 2 * len(SHAPE["calendar"])  # type: ignore[arg-type]
    # the per-key level/scale a pedestrian fit chooses: alpha ~ 1 / season, anchors a day
    # and two days back
    scheme = LevelScale(alpha=1 / 24, lags=(24, 48), kappa=1.0)
    step = StepModel(
        scheme=scheme, n_extras=0, n_calendar=n_cal, horizon=horizon, units=units, layers=1,
        dropout=0.0, seed=0,
    )  # fmt: skip
    meta = ModelMeta(
        name="bench-pedestrian-shape",
        version="1",
        created_at="2026-12-01T00:00:00Z",
        graph=GraphNames(),
        state_size=units,
        units=units,
        window=window,
        horizon=horizon,
        interval_s=int(SHAPE["interval_s"]),  # type: ignore[call-overload]
        features=FeatureMeta(calendar=tuple(SHAPE["calendar"]), timezone=str(SHAPE["timezone"])),  # type: ignore[arg-type]
        gap=GapMeta(max_gap=3),
        scaling=ScalingMeta(alpha=scheme.alpha, lags=scheme.lags, kappa=scheme.kappa),
        calibration=normal_bands(tuple(SHAPE["levels"]), horizon),  # type: ignore[arg-type]
        drift=normal_reference(horizon),
    )
    export_step(step, meta, out / "model.onnx")

    tutorial = keras.Sequential(
        [keras.Input((window, 1 + n_cal)), keras.layers.LSTM(units), keras.layers.Dense(horizon)]
    )
    tutorial.save(out / "tutorial.keras")
    signature = [tf.TensorSpec([None, window, 1 + n_cal], tf.float32, name="window")]

    @tf.function(input_signature=signature)  # type: ignore[untyped-decorator]
    def forward(x: tf.Tensor) -> tf.Tensor:
        return tutorial(x)

    proto, _ = tf2onnx.convert.from_function(forward, input_signature=signature, opset=17)
    (out / "tutorial.onnx").write_bytes(proto.SerializeToString())


def tf_rows(model_dir: Path, ticks: int) -> dict[str, float]:
    """(a) Keras ``predict`` per tick and (b) ORT per tick on the window: ticks/s."""
    import keras  # noqa: PLC0415

    from streamcast.core.model import open_session  # noqa: PLC0415

    window, n_cal = int(SHAPE["window"]), 2 * len(SHAPE["calendar"])  # type: ignore[call-overload,arg-type]
    rng = np.random.default_rng(0)
    windows = rng.normal(size=(ticks, 1, window, 1 + n_cal)).astype(np.float32)
    tutorial = keras.models.load_model(model_dir / "tutorial.keras")
    tutorial.predict(windows[0], verbose=0)  # build the predict function once
    began = time.perf_counter()
    for w in windows:
        tutorial.predict(w, verbose=0)
    keras_s = (time.perf_counter() - began) / ticks
    session = open_session(model_dir / "tutorial.onnx")
    name = session.get_inputs()[0].name
    many = np.repeat(windows, 20, axis=0)
    session.run(None, {name: many[0]})
    began = time.perf_counter()
    for w in many:
        session.run(None, {name: w})
    ort_s = (time.perf_counter() - began) / len(many)
    return {"keras_predict_ticks_per_s": 1 / keras_s, "ort_window_ticks_per_s": 1 / ort_s}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=REPO / ".bench")
    parser.add_argument("--ticks", type=int, default=30, help="Keras predict calls timed")
    parser.add_argument("--no-rows", action="store_true", help="only generate the model")
    args = parser.parse_args()
    model_dir = ensure_model(args.work)
    print(f"model: {model_dir / 'model.onnx'} ({describe()})")
    if args.no_rows:
        return
    rows = tf_rows(model_dir, args.ticks)
    (args.work / "rows-tf.json").write_text(json.dumps(rows, indent=1))
    for name, value in rows.items():
        print(f"{name:>28}: {value:,.1f}")


if __name__ == "__main__":
    main()
