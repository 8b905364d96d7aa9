"""The per-batch cost of forecast-quality tracking and drift detection.

Two pipelines step the same stream: one interval of every key per batch (``--keys``),
with the model shape a user trains (window 48, horizon 24, hidden 64, calendar
features, 80 % and 95 % bands, an input-drift reference). One pipeline runs as the
service does, with its monitor (residuals against the ring of past forecasts, coverage,
the error-drift chart, the input-drift ECDF every ``input_every`` intervals); the other
with a monitor that does nothing. Batches alternate between the two so machine load
hits both alike. Printed: the median batch time of each, the difference, and the
monitor's own time measured inside the monitored run.

    .venv/bin/python bench/quality_cost.py --keys 10000 --intervals 120
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from common import REPO  # noqa: F401  (puts the repository on sys.path)

from streamcast.core.alerts import AlertBatch
from streamcast.core.drift import DriftSettings
from streamcast.core.model import OnnxStepModel
from streamcast.core.monitor import ForecastMonitor
from streamcast.core.pipeline import Pipeline
from streamcast.core.quality import QualityTotals
from streamcast.core.records import TickBatch
from tests.support.models import make_tiny_model, normal_reference

WINDOW, HORIZON, HIDDEN = 48, 24, 64
LEVELS = (0.8, 0.95)


class NullMonitor:
    """A monitor that tracks nothing: the pipeline without quality and drift."""

    def __init__(self, real: ForecastMonitor) -> None:
        self.meta = real.meta

    def observe(self, *_: object) -> AlertBatch:
        return AlertBatch.empty(self.meta.name, self.meta.version, self.meta.window, 0)

    def drain(self) -> QualityTotals:
        return QualityTotals(HORIZON, LEVELS)


class TimedMonitor:
    """The real monitor, with the time its ``observe`` calls take."""

    def __init__(self, real: ForecastMonitor) -> None:
        self.real = real
        self.seconds: list[float] = []

    def observe(self, *args: object) -> AlertBatch:
        start = time.perf_counter()
        out = self.real.observe(*args)  # type: ignore[arg-type]
        self.seconds.append(time.perf_counter() - start)
        return out

    def drain(self) -> QualityTotals:
        return self.real.drain()


def batch_at(keys: list[str], t: int, rng: np.random.Generator) -> TickBatch:
    """One tick per key in interval ``t`` (hourly): a daily cycle plus noise."""
    n = len(keys)
    phase = np.arange(n) % 24
    values = 10 + 3 * np.sin(2 * np.pi * (t + phase) / 24) + rng.normal(0, 0.5, n)
    return TickBatch(
        keys=keys,
        ts_ms=np.full(n, t * 3_600_000, dtype=np.int64),
        values=values[:, None],
        index=np.arange(n, dtype=np.int64),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--intervals", type=int, default=120, help="batches per pipeline")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = make_tiny_model(
            Path(tmp) / "model.onnx",
            window=WINDOW,
            horizon=HORIZON,
            state_size=HIDDEN,
            calendar=("time_of_day", "day_of_week"),
            levels=LEVELS,
            drift=normal_reference(HORIZON, input_threshold=0.5),
        )
        model = OnnxStepModel.load(path)
        keys = [f"sensor-{i:05d}" for i in range(args.keys)]
        with_q = Pipeline(model, max_keys=args.keys, drift=DriftSettings())
        without = Pipeline(model, max_keys=args.keys)
        timed = TimedMonitor(with_q.monitor)
        with_q.monitor = timed  # type: ignore[assignment]
        without.monitor = NullMonitor(without.monitor)  # type: ignore[assignment]

        rng = np.random.default_rng(0)
        times: dict[str, list[float]] = {"with": [], "without": []}
        alerts = 0
        for t in range(args.intervals):
            batch = batch_at(keys, t, rng)
            for name, pipeline in (("with", with_q), ("without", without)):
                start = time.perf_counter()
                result = pipeline.process(batch, now_s=float(t))
                times[name].append(time.perf_counter() - start)
                if name == "with":
                    alerts += len(result.alerts) if result.alerts is not None else 0

    # the first window of intervals fills the windows and the forecast rings; the
    # detectors run from then on (min_residuals later the error chart can alarm)
    skip = WINDOW + HORIZON
    w = statistics.median(times["with"][skip:]) * 1e3
    wo = statistics.median(times["without"][skip:]) * 1e3
    mon = statistics.median(timed.seconds[skip:]) * 1e3
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"model: window {WINDOW}, horizon {HORIZON}, hidden {HIDDEN}, calendar features, "
        f"levels {LEVELS}; {args.keys:,} keys, one interval each per batch, "
        f"{args.intervals - skip} batches measured; load {load}"
    )
    print(f"  pipeline batch, with quality and drift:    {w:8.1f} ms")
    print(f"  pipeline batch, without:                   {wo:8.1f} ms")
    print(
        f"  difference:                                {w - wo:8.1f} ms "
        f"({100 * (w - wo) / wo:.1f} %, {1e3 * (w - wo) / args.keys:.2f} us per key)"
    )
    print(f"  monitor.observe inside the monitored run:  {mon:8.1f} ms")
    print(f"  alerts raised on the synthetic stream: {alerts}")


if __name__ == "__main__":
    main()
