"""Row (g)'s per-message peer: a Quix Streams application serving the same ONNX step.

It runs in its own virtual environment (``quixstreams``, ``onnxruntime``, ``numpy`` from
PyPI; ``bench/table.py`` creates it under the bench work dir) and imports nothing from
streamcast. It is written the way the Quix Streams documentation teaches a stateful
per-message model: one ``apply(..., stateful=True)`` that reads the key's LSTM state
``(h, c)`` from the state store (RocksDB, with its changelog topic), calls ONNX Runtime
for this one message (step + the in-graph 24-step rollout, calendar rows computed for
the 24 targets), writes the new state back and emits one forecast per tick as JSON.
Scaling is a fixed location/scale (what a training script would hand it); the step's
other inputs (the level and the seasonal-lag anchors the model also takes) are fed as
zeros, which spares the peer the per-key window a faithful port would keep, so the
comparison errs in the peer's favour.

    python bench/peer_app.py BROKER TICKS_TOPIC FORECASTS_TOPIC MODEL STATE_DIR GROUP
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
import onnxruntime as ort
from quixstreams import Application, State  # type: ignore[import-not-found]

HORIZON, STATE, INTERVAL_S = 24, 64, 3600
LOC, SCALE = 100.0, 10.0


def main() -> None:
    broker, ticks, forecasts, model, state_dir, group = sys.argv[1:7]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    steps = np.arange(1, HORIZON + 1) * INTERVAL_S
    width = int(next(i.shape[1] for i in session.get_inputs() if i.name == "x"))

    def calendar(ts_s: int) -> np.ndarray:
        t = ts_s + steps
        day = (t % 86_400) / 86_400 * 2 * math.pi
        week = (t / 86_400 % 7) / 7 * 2 * math.pi
        return np.stack([np.sin(day), np.cos(day), np.sin(week), np.cos(week)], axis=-1)

    def forecast(value: dict[str, Any], state: State) -> dict[str, Any]:
        h = np.asarray(state.get("h", [0.0] * STATE), dtype=np.float32)[None, :]
        c = np.asarray(state.get("c", [0.0] * STATE), dtype=np.float32)[None, :]
        ts_s = int(value["ts"]) // 1000 if value["ts"] > 10**11 else int(value["ts"])
        x = np.zeros((1, width), dtype=np.float32)
        x[0, 0] = (value["value"] - LOC) / SCALE
        cal = calendar(ts_s)[None].astype(np.float32)
        h_out, c_out, fc = session.run(
            ["h_out", "c_out", "forecast"], {"x": x, "h": h, "c": c, "calendar": cal}
        )
        state.set("h", h_out[0].tolist())
        state.set("c", c_out[0].tolist())
        return {
            "key": value["key"],
            "ts": ts_s,
            "forecast": (fc[0] * SCALE + LOC).tolist(),
        }

    app = Application(
        broker_address=broker,
        consumer_group=group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
    )
    source = app.topic(ticks, value_deserializer="json")
    sink = app.topic(forecasts, value_serializer="json")
    sdf = app.dataframe(source)
    sdf = sdf.apply(forecast, stateful=True)
    sdf.to_topic(sink)
    app.run()


if __name__ == "__main__":
    main()
