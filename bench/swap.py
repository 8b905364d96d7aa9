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

and, for scale, one steady-state batch (one tick per key). The state-only swap's peak
memory above the process's resident set before it is printed too (sampled every 5 ms):
the replay runs ``Pipeline.rebuild_keys`` keys at a time, so it stays flat in the keys.
Pass a trained LSTM with
``--model`` (the default generated artifact has no in-graph rollout, so both rebuilds
cost about the same for it).

    .venv/bin/python bench/swap.py --model models/pedestrian/model.onnx --keys 1000 10000
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import psutil
from common import REPO, model_path  # noqa: F401  (REPO puts the repository on sys.path)

from streamcast.core.artifact import ModelMeta
from streamcast.core.features import Float32Array
from streamcast.core.model import OnnxStepModel
from streamcast.core.pipeline import Pipeline
from streamcast.core.records import TickBatch
from streamcast.kafka.changelog import release_free_memory

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


@contextmanager
def peak_rss_above() -> Iterator[Callable[[], float]]:
    """Samples the process's RSS every 5 ms while the block runs; yields a function giving
    the peak above the RSS at entry (MiB), once the block is done. Freed heap is handed
    back to the system first, so the baseline is what the process holds."""
    release_free_memory()
    proc, stop = psutil.Process(), threading.Event()
    base = peak = proc.memory_info().rss

    def sample() -> None:
        nonlocal peak
        while not stop.wait(0.005):
            peak = max(peak, proc.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield lambda: (peak - base) / 2**20
    finally:
        stop.set()
        sampler.join()


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
        print(
            f"{'keys':>7} {'state only s':>13} {'its peak MiB':>13} {'full step s':>12} "
            f"{'steady batch s':>15}"
        )
        for keys in args.keys:
            pipe, steady = warm_pipeline(path, keys)
            with peak_rss_above() as peak_mib:
                started = time.perf_counter()
                rebuilt = pipe.swap_model(OnnxStepModel.load(path))
                state_only = time.perf_counter() - started
            assert rebuilt == keys, rebuilt
            started = time.perf_counter()
            assert pipe.swap_model(FullStep(OnnxStepModel.load(path))) == keys
            full = time.perf_counter() - started
            print(
                f"{keys:>7} {state_only:>13.3f} {peak_mib():>13.0f} {full:>12.3f} {steady:>15.3f}"
            )


if __name__ == "__main__":
    main()
