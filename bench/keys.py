"""Memory per active key: the service's batch processor (decoder, state store, pipeline,
output encoding) and the producer's keyed partitioning, in one process, holding N keys.

Keys are fed past warm-up in batches of ``--batch`` keys (every key steps, so every
per-key column is live), and RSS is sampled after each batch. The figure is the slope of
RSS over held keys in the second half of the run, when the allocator's transient peaks
(a batch's arrays and encoded output) are already part of the baseline: the cost of one
more key, which is what ``max_keys`` multiplies. ``--key-bytes`` sets the length of
every series key (``max_key_bytes``, default 256, is the longest the service accepts),
so ``max_keys x`` this figure is the bound that ``max_keys`` and ``max_key_bytes`` put on
the state's memory.

    .venv/bin/python bench/keys.py --keys 100000 --key-bytes 8
    .venv/bin/python bench/keys.py --keys 100000 --key-bytes 256
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
import psutil
from common import REPO  # noqa: F401  (puts the repository on sys.path)

from streamcast.config import Settings
from streamcast.kafka.partitioner import key_partitions
from streamcast.kafka.wire import InRecord
from streamcast.service.processor import build_processor
from tests.support.models import make_tiny_model

INTERVAL_S = 60


def rss_mib() -> float:
    """Resident set size of this process, MiB."""
    return float(psutil.Process().memory_info().rss / 2**20)


def key_name(i: int, size: int) -> str:
    """A distinct key of exactly ``size`` ASCII bytes."""
    tag = f"{i:08d}"
    return (tag + "x" * max(0, size - len(tag)))[: max(size, len(tag))]


def measure(
    keys: int, key_bytes: int, window: int, state_size: int, batch: int
) -> dict[str, float]:
    """RSS per key once ``keys`` keys are held and stepping."""
    with tempfile.TemporaryDirectory() as tmp:
        model = make_tiny_model(
            Path(tmp) / "m.onnx", window=window, horizon=24, interval_s=INTERVAL_S,
            state_size=state_size, levels=(0.8, 0.95),
        )  # fmt: skip
        settings = Settings(
            _env_file=None, model_path=model, max_keys=keys, max_key_bytes=max(key_bytes, 8),
            min_ts_s=0, max_future_s=10**10,
        )  # fmt: skip
        processor = build_processor(settings)
        gc.collect()
        before = rss_mib()
        samples: list[tuple[int, float]] = []
        began = time.perf_counter()
        start = 1_700_000_000 // INTERVAL_S * INTERVAL_S
        for first in range(0, keys, batch):
            names = [key_name(i, key_bytes) for i in range(first, min(keys, first + batch))]
            for t in range(window + 1):
                records = [
                    InRecord("ticks", 0, t, 0, k.encode(), orjson.dumps(
                        {"key": k, "ts": start + t * INTERVAL_S + 1, "value": float(t % 7)}
                    ))
                    for k in names
                ]  # fmt: skip
                result = processor.process(records, 0.0)
                for part in result.outputs.values():
                    key_partitions([r.key or b"" for r in part if r.partition is None], 4)
            gc.collect()
            samples.append((processor.pipeline.active_keys, rss_mib()))
        after = rss_mib()
        held = processor.pipeline.active_keys
        tail = samples[len(samples) // 2 :]
        slope = np.polyfit([n for n, _ in tail], [r for _, r in tail], 1)[0] if len(tail) > 1 else 0
    return {
        "keys": float(held),
        "key_bytes": float(key_bytes),
        "rss_before_mib": before,
        "rss_after_mib": after,
        "bytes_per_key": float(slope) * 2**20,
        "bytes_per_key_overall": (after - before) * 2**20 / held,
        "store_column_bytes_per_key": processor.pipeline.store.nbytes() / held,
        "seconds": time.perf_counter() - began,
    }


def main() -> None:
    """Parse the flags, measure, print one table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--key-bytes", type=int, default=8)
    parser.add_argument("--window", type=int, default=48)
    parser.add_argument("--state-size", type=int, default=64, help="LSTM units (h and c each)")
    parser.add_argument("--batch", type=int, default=5_000)
    args = parser.parse_args()
    figures = measure(args.keys, args.key_bytes, args.window, args.state_size, args.batch)
    print(f"== bench/keys: memory per active key (window {args.window}, state {args.state_size})")
    for name, value in figures.items():
        print(f"{name:>28}: {value:,.1f}")


if __name__ == "__main__":
    main()
