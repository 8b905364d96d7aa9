"""No broker: the ONNX Runtime rows and streamcast's pipeline, in this process.

(c) ORT per tick with the stateful step (one key per call), (d) the batched ORT ceiling
(the step alone on ready arrays) at 1,024 and 10,000 keys with 1 and 2 intra-op threads,
and 10,000 keys on 2 threads side by side (runs of 1,024, each single-threaded: how
streamcast uses a second thread), (e) streamcast's pipeline at ``--keys`` keys per
micro-batch from encoded tick bytes to encoded forecast bytes, with 1 and 2 threads:
:meth:`Processor.process` on consumed records (JSON ticks), which decodes, admits,
aggregates, steps, scores, encodes the forecasts and the changelog records, exactly what
the service's worker thread runs per batch. Also one paced burst's batch (500 keys)
back to back and 100 ms apart: the paced latency rows' processing, caches cold.

    .venv/bin/python bench/micro.py --model .bench/model/model.onnx
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import orjson  # noqa: E402

from streamcast.config import Settings  # noqa: E402
from streamcast.core.features import calendar_features, target_times  # noqa: E402
from streamcast.core.model import OnnxStepModel, open_session  # noqa: E402
from streamcast.kafka.changelog import release_free_memory  # noqa: E402
from streamcast.kafka.wire import InRecord  # noqa: E402
from streamcast.service.app import GC_THRESHOLDS  # noqa: E402
from streamcast.service.heap import keep_freed_heap  # noqa: E402
from streamcast.service.processor import Processor, build_processor  # noqa: E402

#: one burst of the paced runs (bench/table.py: 500 keys at 5,000 ticks/s, 100 ms apart)
PACED_KEYS, PACED_GAP_S = 500, 0.1

#: event time of the first interval: a fixed day well in the past (no tick is "future")
EPOCH_S = 1_764_547_200  # 2025-12-01T00:00:00Z


def step_inputs(
    model: OnnxStepModel, n: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Random scaled step inputs for ``n`` keys (states in the LSTM's range)."""
    meta, rng = model.meta, np.random.default_rng(seed)
    spec = meta.feature_spec()
    x = rng.normal(size=(n, meta.step_width)).astype(np.float32)
    h = rng.uniform(-1, 1, (n, meta.state_size)).astype(np.float32)
    c = rng.normal(size=(n, meta.state_size)).astype(np.float32)
    cal = None
    if spec.n_calendar:
        origins = EPOCH_S + meta.interval_s * rng.integers(0, 1000, n)
        cal = calendar_features(target_times(origins, meta.interval_s, meta.horizon), spec)
    return x, h, c, cal


def per_tick(path: Path, seconds: float) -> float:
    """(c) one ``step`` call per tick: ticks/s."""
    model = OnnxStepModel.load(path)
    x, h, c, cal = step_inputs(model, 1)
    model.step(x, h, c, cal)
    calls, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        h, c, _ = model.step(x, h, c, cal)
        calls += 1
    return calls / (time.perf_counter() - began)


def ceiling(
    path: Path, keys: int, threads: int, repeats: int, *, side_by_side: bool = False
) -> float:
    """(d) the step alone on ``keys`` ready rows: ticks/s of the fastest of ``repeats``.
    One ONNX Runtime run on ``threads`` intra-op threads (ORT's own split of every node),
    or ``side_by_side``: the model's runs of up to 1,024 keys on ``threads`` threads, each
    run single-threaded (how streamcast uses more than one thread)."""
    model = OnnxStepModel.load(path, threads=threads if side_by_side else 1)
    if not side_by_side:
        model = OnnxStepModel(open_session(path, threads), model.meta, path)
        model.run_keys = keys  # one run, however many keys
    x, h, c, cal = step_inputs(model, keys)
    model.step(x, h, c, cal)
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        model.step(x, h, c, cal)
        best = min(best, time.perf_counter() - began)
    return keys / best


def tick_records(keys: list[str], interval: int, interval_s: int, offset: int) -> list[InRecord]:
    """One JSON tick per key in ``interval``, as the consumer hands them over."""
    rng = np.random.default_rng(interval)
    ts = (EPOCH_S + interval * interval_s + 1) * 1000
    values = (100 + rng.normal(size=len(keys))).tolist()
    return [
        InRecord("ticks", i % 2, offset + i, ts, k.encode(),
                 orjson.dumps({"key": k, "ts": ts, "value": v}))
        for i, (k, v) in enumerate(zip(keys, values, strict=True))
    ]  # fmt: skip


def warm_processor(
    path: Path, keys: int, seed_keys: int = 200, threads: int = 1
) -> tuple[Processor, int]:
    """A processor whose ``keys`` keys are past warm-up (stepping and forecasting); returns
    it with the next interval index.

    ``seed_keys`` keys are warmed through the pipeline (every interval of the window);
    their changelog records are then restored under all ``keys`` names, as a restart
    restores a store (warming 10,000 keys tick by tick would take most of a minute).
    """
    settings = Settings(_env_file=None, bootstrap_servers="unused:9092", model_path=path,
                        max_keys=keys, intra_op_threads=threads)  # fmt: skip
    processor = build_processor(settings)
    pipeline = processor.pipeline
    seeds = [f"seed{i:05d}" for i in range(min(seed_keys, keys))]
    offset = 0
    for t in range(pipeline.window + 1):
        records = tick_records(seeds, t, pipeline.interval_s, offset)
        offset += len(records)
        processor.step(records, time.time())  # warm-up: no forecasts to encode yet
    snapshot = [value for _, value in pipeline.store.snapshot(seeds)]
    pipeline.store.drop_partitions({0, 1})
    names = key_names(keys)
    replicated = [(k, snapshot[i % len(snapshot)]) for i, k in enumerate(names)]
    for p in (0, 1):
        processor.restore(p, replicated[p::2], time.time())
    return processor, pipeline.window + 1


def key_names(n: int) -> list[str]:
    """The benchmark's key names (short keys, as a meter or sensor id)."""
    return [f"k{i:07d}" for i in range(n)]


def pipeline_rate(
    path: Path, keys: int, batches: int, threads: int = 1, gap_s: float = 0.0
) -> dict[str, float]:
    """(e) :meth:`Processor.process` per micro-batch of ``keys`` ticks (one per key), with
    the collector and the C heap tuned as ``serve`` tunes them and ``intra_op_threads =
    threads``; the batches back to back, or ``gap_s`` apart as a paced stream's bursts
    come (the process sleeps between them, and its caches go cold meanwhile)."""
    gc.set_threshold(*GC_THRESHOLDS)
    keep_freed_heap(Settings.model_fields["heap_keep_mb"].default)
    processor, t0 = warm_processor(path, keys, threads=threads)
    names = key_names(keys)
    interval_s = processor.pipeline.interval_s
    times, cpu, sizes = [], [], []
    for b in range(batches):
        records = tick_records(names, t0 + b, interval_s, 10**9 + b * keys)
        if gap_s:
            time.sleep(gap_s)
        began, began_cpu = time.perf_counter(), time.process_time()
        result = processor.process(records, time.time())
        times.append(time.perf_counter() - began)
        cpu.append(time.process_time() - began_cpu)
        out = [r for part in result.outputs.values() for r in part]
        sizes.append(sum(len(r.value or b"") for r in out if r.topic == processor.topics.forecasts))
        assert result.forecasts == keys, (result.forecasts, keys)
    best = statistics.median(times)
    return {
        "pipeline_ticks_per_s": keys / best,
        "pipeline_ms_per_batch": 1000 * best,
        # CPU time of this process (one thread: ORT runs in it): what the pipeline moves
        # per core whatever share of the machine other jobs leave it
        "pipeline_cpu_ticks_per_s": keys / statistics.median(cpu),
        "forecast_bytes": statistics.mean(sizes) / keys,
    }


def rss_per_key(path: Path, keys: int, chunk: int = 50_000) -> dict[str, float]:
    """(h) RSS per active key: a processor with ``max_keys = keys`` (as an operator sizes
    it), then ``keys`` warm keys restored into it in chunks; the RSS growth per key. The
    process's RSS is read after the model and the seed keys are loaded, so the model,
    ONNX Runtime and the interpreter are not counted; the store's arrays, the key index
    and allocator slack are (after the free pages are returned, as a restore ends)."""
    import psutil  # noqa: PLC0415 - dev dependency, only the benchmarks need it

    process = psutil.Process()
    processor, _ = warm_processor(path, 1, seed_keys=200)
    store = processor.pipeline.store
    seeds = [value for _, value in store.snapshot(list(store.rows))]
    settings = Settings(_env_file=None, bootstrap_servers="unused:9092", model_path=path,
                        max_keys=keys)  # fmt: skip
    fresh = build_processor(settings)
    gc.collect()
    before = process.memory_info().rss
    names = key_names(keys)
    for first in range(0, keys, chunk):
        part = [(k, seeds[i % len(seeds)]) for i, k in enumerate(names[first : first + chunk])]
        fresh.restore(first // chunk % 2, part, time.time())
    del names, part
    gc.collect()
    release_free_memory()  # as the service's restore ends (streamcast.kafka.changelog)
    after = process.memory_info().rss
    active = fresh.pipeline.active_keys
    return {
        "keys": active,
        "rss_bytes_per_key": (after - before) / active,
        "store_array_bytes_per_key": fresh.pipeline.store.nbytes() / active,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--keys", type=int, default=10_000, help="keys per pipeline batch")
    parser.add_argument("--batches", type=int, default=7)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--only", choices=["ort", "pipeline", "none"], help="run one half")
    parser.add_argument("--rss-keys", type=int, help="only measure RSS per key at this many")
    args = parser.parse_args()
    rows: dict[str, float] = {}
    if args.rss_keys:
        rows = rss_per_key(args.model, args.rss_keys)
        args.only = "none"
    if args.only not in ("pipeline", "none"):
        rows["ort_step_per_tick_ticks_per_s"] = per_tick(args.model, 2.0)
        for keys in (1_024, 10_000):
            for threads in (1, 2):
                rows[f"ceiling_{keys}_t{threads}"] = ceiling(args.model, keys, threads, 7)
        rows["ceiling_10000_side_by_side_t2"] = ceiling(args.model, 10_000, 2, 7, side_by_side=True)
    if args.only not in ("ort", "none"):
        rows.update(pipeline_rate(args.model, args.keys, args.batches))
        two = pipeline_rate(args.model, args.keys, args.batches, threads=2)
        rows.update({f"{name}_t2": value for name, value in two.items()})
        for gap_s in (0.0, PACED_GAP_S):  # one paced burst's batch (the p99 row's)
            burst = pipeline_rate(args.model, PACED_KEYS, 60, gap_s=gap_s)
            rows[f"burst_ms_gap_{gap_s * 1000:.0f}"] = burst["pipeline_ms_per_batch"]
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    for name, value in rows.items():
        print(f"{name:>32}: {value:,.1f}")


if __name__ == "__main__":
    main()
