"""Drift detection on real test periods: false alarms, detection delay, recovery.

Replays a dataset's whole history (prepared exactly as training prepared it) through the
service's own pipeline (``streamcast.core.pipeline.Pipeline`` with the exported model:
residuals, the error-drift EWMA chart, input drift and alerts as online), one batch per
interval, and counts the alerts whose interval lies in the test period:

- **false alarms**: ``error_drift`` and ``input_drift`` alerts on the unshifted stream,
  per 10,000 test key-intervals (the target is <= 1);
- **detection**: for every key and each of ``--shifts`` start times spread over its test
  period, a replay with a level shift of ``--sigma`` times the key's own one-step
  residual standard deviation (its error baseline at the start of the test period, in
  the key's units) added to ``--length`` intervals of its values: the delay (intervals
  from the shift's first interval to the alert), whether exactly one ``error_drift``
  alert came, and whether ``recovered`` followed after the shift ended. A start whose
  first 24 intervals hold no actual of the key (a sensor gap) is not a trial: it is
  counted in ``shift_trials_no_data`` instead, as no detector can see it. Each shifted
  replay starts from the state at the test period's start (restored, as after a
  restart), so it costs only the test period.

``--threshold`` lists error-drift thresholds to compare (each is one more set of
replays).

    .venv/bin/python bench/drift.py --model models/pedestrian/model.onnx \\
        --data dataset:pedestrian --threshold 1.5 1.75 2.0
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from common import REPO  # noqa: F401  (puts the repository on sys.path)

from streamcast.core.drift import ERROR_DRIFT, INPUT_DRIFT, RECOVERED, DriftSettings
from streamcast.core.model import OnnxStepModel
from streamcast.core.pipeline import Pipeline
from streamcast.core.records import TickBatch
from training.history import DataSource, load_and_prepare
from training.prep import Role
from training.workflow import config_from_model

IntArray = npt.NDArray[np.int64]


@dataclass
class Replay:
    """The alerts of one replay: ``(key, interval start, kind)``."""

    alerts: list[tuple[str, int, str]] = field(default_factory=list)
    seconds: float = 0.0
    #: ``(ts, state of every key)`` taken before the batch of interval ``ts``
    snapshot: tuple[int, list[tuple[str, bytes]]] | None = None


def replay(
    model: OnnxStepModel,
    stream: Stream,
    values: npt.NDArray[np.float64],
    settings: DriftSettings,
    *,
    start: tuple[int, list[tuple[str, bytes]]] | None = None,
    snapshot_at: int | None = None,
) -> Replay:
    """Feed rows (sorted by time) one interval per batch; collect every alert. ``start``:
    ``(ts, state)`` to restore and replay from; ``snapshot_at``: keep the state there."""
    pipe = Pipeline(model, drift=settings, max_keys=max(1024, 2 * len(stream.test_start)))
    out = Replay()
    first = 0
    if start is not None:
        pipe.restore(start[1], 0.0, 0)
        first = int(np.searchsorted(stream.ts, start[0]))
    ts = stream.ts[first:]
    names = np.asarray(stream.keys, dtype=object)[first:]
    values = values[first:]
    bounds = np.flatnonzero(np.diff(ts)) + 1
    started = time.perf_counter()
    for rows in np.split(np.arange(len(ts)), bounds):
        if snapshot_at is not None and ts[rows[0]] == snapshot_at:
            out.snapshot = (snapshot_at, pipe.store.snapshot(list(stream.test_start)))
        batch = TickBatch.from_rows(names[rows].tolist(), (ts[rows] * 1000).tolist(),
                                    values[rows])  # fmt: skip
        alerts = pipe.process(batch, 0.0).alerts
        if alerts is not None:
            out.alerts += zip(alerts.keys, alerts.ts.tolist(), alerts.kind, strict=True)
    out.seconds = time.perf_counter() - started
    return out


@dataclass
class Stream:
    """A prepared history as ticks in time order, with what the figures need."""

    model: OnnxStepModel
    keys: list[str]
    ts: IntArray
    values: npt.NDArray[np.float64]
    test_key_intervals: int
    test_start: dict[str, int]
    test_len: dict[str, int]
    #: the model's pooled one-step residual standard deviation, in units of scale
    resid_ref: float


def load_stream(model_path: Path, data: str) -> Stream:
    """The dataset prepared as the model was trained on it."""
    model = OnnxStepModel.load(model_path)
    meta = model.meta
    history = load_and_prepare(DataSource(data), config_from_model(meta))
    series, role = history.series, history.parts.role
    key_index = series.key_index()
    order = np.lexsort((key_index, series.ts))
    test = role == Role.TEST
    sd = meta.drift.residual_std[0] if meta.drift.residual_std else 1.0
    starts, lens = {}, {}
    for i, k in enumerate(series.keys):
        mine = test[series.key_slice(i)]
        starts[k] = int(series.ts[series.key_slice(i)][mine].min())
        lens[k] = int(np.count_nonzero(mine))
    return Stream(
        model=model,
        keys=np.asarray(series.keys, dtype=object)[key_index][order].tolist(),
        ts=series.ts[order],
        values=series.values[order],
        test_key_intervals=int(np.count_nonzero(test & series.observed)),
        test_start=starts,
        test_len=lens,
        resid_ref=sd,
    )


def shift_trials(
    stream: Stream, base: Replay, settings: DriftSettings, args: argparse.Namespace
) -> dict[str, object]:
    """Replays with one key shifted at a time: detection delay, one alert, recovery."""
    iv = stream.model.meta.interval_s
    keys = np.asarray(stream.keys, dtype=object)
    before = set(base.alerts)
    assert base.snapshot is not None
    at_start = Pipeline(stream.model, drift=settings)
    at_start.restore(base.snapshot[1], 0.0, 0)
    st = at_start.store
    # the key's own one-step residual sd: its error baseline, in the key's units
    # the key's unit where the test period starts (its level/scale follows the series)
    unit = stream.model.meta.level_scale().unit(st.value_scale)
    sigma = {k: float(np.sqrt(st.base_v[st.rows[k]])) * stream.resid_ref * unit[st.rows[k]]
             for k in stream.test_start}  # fmt: skip
    delays: list[int] = []
    exactly_one = recovered = trials = no_data = 0
    for key, start_ts in stream.test_start.items():
        span = stream.test_len[key] - args.length - 2 * settings.quiet
        for j in range(args.shifts):
            start = start_ts + int((j + 0.5) * span / args.shifts) * iv
            end = start + args.length * iv
            shifted = stream.values.copy()
            mine = (keys == key) & (stream.ts >= start) & (stream.ts < end)
            early = mine & (stream.ts < start + 24 * iv)
            if not np.any(np.isfinite(stream.values[early, 0])):
                no_data += 1  # the key has no actuals there: a shift nobody can see
                continue
            shifted[mine, 0] += args.sigma * sigma[key]
            run = replay(stream.model, stream, shifted, settings, start=base.snapshot)
            new = [(t, kind) for k, t, kind in run.alerts
                   if k == key and t >= start and (k, t, kind) not in before]  # fmt: skip
            errs = [t for t, kind in new if kind == ERROR_DRIFT and t < end + 24 * iv]
            trials += 1
            if errs:
                delays.append((errs[0] - start) // iv + 1)
            if len(errs) == 1:
                exactly_one += 1
                recovered += any(kind == RECOVERED and t >= end for t, kind in new)
    return {
        "shift_trials": trials,
        "shift_trials_no_data": no_data,
        "detected": len(delays),
        "detected_within_24": sum(d <= 24 for d in delays),
        "exactly_one": exactly_one,
        "recovered_after": recovered,
        "delay_median": float(np.median(delays)) if delays else None,
        "delay_max": int(max(delays)) if delays else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", required=True, help="dataset:NAME (as trained)")
    default = DriftSettings().threshold
    parser.add_argument("--threshold", type=float, nargs="+", default=[default])
    parser.add_argument("--sigma", type=float, default=3.0)
    parser.add_argument("--length", type=int, default=48, help="intervals the shift lasts")
    parser.add_argument("--shifts", type=int, default=4, help="shift start times per key")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    stream = load_stream(args.model, args.data)
    meta = stream.model.meta
    print(f"{meta.name} {meta.version}: {len(stream.test_start)} keys, "
          f"{stream.test_key_intervals:,} test key-intervals, window {meta.window}, "
          f"horizon {meta.horizon}, state {meta.state_size}")  # fmt: skip
    results = []
    for threshold in args.threshold:
        settings = DriftSettings(threshold=threshold)
        # each shifted replay starts from the state at the test period's start
        origin = min(stream.test_start.values())
        base = replay(stream.model, stream, stream.values, settings, snapshot_at=origin)
        in_test = [kind for k, t, kind in base.alerts if t >= stream.test_start[k]]
        false_err, false_in = in_test.count(ERROR_DRIFT), in_test.count(INPUT_DRIFT)
        row = {
            "threshold": threshold,
            "test_key_intervals": stream.test_key_intervals,
            "false_error_drift": false_err,
            "false_input_drift": false_in,
            "false_per_10k": round(1e4 * (false_err + false_in) / stream.test_key_intervals, 3),
            **shift_trials(stream, base, settings, args),
            "replay_s": round(base.seconds, 1),
        }
        results.append(row)
        print(json.dumps(row))
    if args.json:
        args.json.write_text(json.dumps({"model": meta.name, "rows": results}, indent=2))


if __name__ == "__main__":
    main()
