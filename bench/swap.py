"""The pause a hot-swap costs: the main loop's wait while every key is rebuilt.

A swap rebuilds each warm key's state from its window (``window`` batched model calls;
:meth:`streamcast.core.pipeline.Pipeline.swap_model`), between two batches: no tick is
processed meanwhile. This runs the service's own pipeline (no broker) with ``--keys``
warm keys and times :meth:`~streamcast.core.pipeline.Pipeline.swap_model` to a second
load of the same artifact, twice per row:

- **state only**: what the service does, the graph pruned to ``h_out``/``c_out``
  (:meth:`streamcast.core.model.OnnxStepModel.advance`);
- **full step**: the same rebuild through the full step, rollout included (what it cost
  before), for comparison;

and, for scale, one steady-state batch (one tick per key). Pass a trained LSTM with
``--model`` (the default generated artifact has no in-graph rollout, so both rebuilds
cost about the same for it).

    .venv/bin/python bench/swap.py --model models/pedestrian/model.onnx --keys 1000 10000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from common import REPO, model_path  # noqa: F401  (REPO puts the repository on sys.path)

from streamcast.core.artifact import ModelMeta
from streamcast.core.features import Float32Array
from streamcast.core.model import OnnxStepModel
from streamcast.core.pipeline import Pipeline
from streamcast.core.records import TickBatch

T0 = 1_700_000_000 // 3600 * 3600


class FullStep:
    """The artifact as a bare StepModel: a rebuild through the full step."""

    def __init__(self, model: OnnxStepModel) -> None:
        self.model = model

    @property
    def meta(self) -> ModelMeta:
        return self.model.meta

    @property
    def identity(self) -> int:
        return self.model.identity

    def step(
        self, x: Float32Array, h: Float32Array, c: Float32Array, calendar: Float32Array | None
    ) -> tuple[Float32Array, Float32Array, Float32Array]:
        return self.model.step(x, h, c, calendar)


def warm_pipeline(path: Path, keys: int) -> tuple[Pipeline, float]:
    """A pipeline holding ``keys`` warm keys; and the seconds of one steady batch."""
    model = OnnxStepModel.load(path)
    meta = model.meta
    pipe = Pipeline(model, max_keys=keys)
    names = [f"key-{k}" for k in range(keys)]
    phase = np.arange(keys)
    for t in range(meta.window + 2):
        stamps = [int((T0 + t * meta.interval_s) * 1000)] * keys
        values = (100.0 + 10.0 * np.sin(phase + t))[:, None]
        started = time.perf_counter()
        pipe.process(TickBatch.from_rows(names, stamps, values), 0.0)
        steady = time.perf_counter() - started
    return pipe, steady


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="an exported artifact")
    parser.add_argument("--keys", type=int, nargs="+", default=[1000, 10000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = model_path(args.model, Path(tmp), 3600)
        meta = OnnxStepModel.load(path).meta
        print(
            f"model {path.name}: window {meta.window}, horizon {meta.horizon}, "
            f"state {meta.state_size}; one ONNX Runtime thread"
        )
        print(f"{'keys':>7} {'state only s':>13} {'full step s':>12} {'steady batch s':>15}")
        for keys in args.keys:
            pipe, steady = warm_pipeline(path, keys)
            timings = []
            for model in (OnnxStepModel.load(path), FullStep(OnnxStepModel.load(path))):
                started = time.perf_counter()
                rebuilt = pipe.swap_model(model)
                timings.append(time.perf_counter() - started)
                assert rebuilt == keys, rebuilt
            print(f"{keys:>7} {timings[0]:>13.3f} {timings[1]:>12.3f} {steady:>15.3f}")


if __name__ == "__main__":
    main()
