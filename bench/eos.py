"""What exactly-once costs: throughput and latency against at-least-once, restore speed.

1. ``bench/e2e.py``'s run (ticks -> ``streamcast serve`` -> forecasts consumed with
   read_committed) twice per mode, flat out (capacity) and at a steady offered load
   (latency), with ``processing_guarantee`` at_least_once and exactly_once.
2. Restore: ``--restore-keys`` keys' real state records (the bench model's, produced by
   stepping each key past warm-up) are written to a compacted changelog topic; then
   :func:`streamcast.kafka.changelog.read_changelog` plus :meth:`Core.restore` load them the
   way an instance does on assignment. Prints keys/s.

    .venv/bin/python bench/eos.py --ticks 50000 --keys 500 --rate 5000
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
from aiokafka import AIOKafkaProducer
from common import add_common_args, broker, create_topics, model_path, unique_topic
from e2e import INTERVAL_S
from e2e import bench as e2e_bench

from streamcast.config import Settings
from streamcast.kafka.changelog import make_restore_consumer, read_changelog
from streamcast.kafka.publish import publish_packed
from streamcast.kafka.wire import OutRecord
from streamcast.service.processor import build_processor

MODES = ("at_least_once", "exactly_once")


async def restore_bench(
    args: argparse.Namespace, bootstrap: str, workdir: Path
) -> dict[str, float]:
    """Write ``restore_keys`` state records to a changelog, then time reading them back."""
    model = model_path(args.model, workdir, INTERVAL_S)
    topic = unique_topic("bench-state")
    settings = Settings(
        _env_file=None,
        bootstrap_servers=bootstrap,
        model_path=model,
        max_keys=max(args.restore_keys, 1),
        topics={"state_changelog": topic},
    )
    core = build_processor(settings)
    window = core.pipeline.window
    # a few seed keys step past warm-up (h, c, window and scale all hold state); their
    # records are written under every key's name (stepping 50,000 keys through a
    # window-48 warm-up would take minutes and measure nothing about restoring)
    seeds = [f"seed{i:04d}" for i in range(min(200, args.restore_keys))]
    start = (int(time.time()) // 86_400 - 4) * 86_400
    interval = core.pipeline.interval_s
    rng = np.random.default_rng(0)
    for t in range(window + 2):
        messages = [
            (k.encode(), orjson.dumps({"key": k, "ts": start + t * interval, "value": v}))
            for k, v in zip(seeds, (100 + rng.normal(size=len(seeds))).tolist(), strict=True)
        ]
        core.pipeline.process(core.decoder.decode(messages)[0], time.time())
    seeded = [value for _, value in core.pipeline.store.snapshot(seeds)]
    keys = [f"k{i:06d}" for i in range(args.restore_keys)]
    records = [(k, seeded[i % len(seeded)]) for i, k in enumerate(keys)]
    await create_topics(
        bootstrap, [topic], partitions=args.partitions, config={"cleanup.policy": "compact"}
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        out = [
            OutRecord(topic, k.encode(), v, partition=i % args.partitions)
            for i, (k, v) in enumerate(records)
        ]
        await publish_packed(producer, out)
    finally:
        await producer.stop()
    record_bytes = float(np.mean([len(v) for _, v in records]))

    fresh = build_processor(settings)
    consumer = make_restore_consumer(settings)
    await consumer.start()
    try:
        began = time.perf_counter()
        read = await read_changelog(consumer, topic, list(range(args.partitions)))
        read_s = time.perf_counter() - began
        restored = sum(
            fresh.restore(p, list(kv.items()), time.time()) for p, kv in read.records.items()
        )
        total_s = time.perf_counter() - began
    finally:
        await consumer.stop()
    return {
        "restore_keys": restored,
        "record_bytes": record_bytes,
        "read_seconds": read_s,
        "restore_seconds": total_s,
        "restore_keys_per_s": restored / total_s,
    }


async def main_async(args: argparse.Namespace, bootstrap: str, workdir: Path) -> None:
    """Run every measurement and print a table."""
    rows: dict[str, dict[str, dict[str, float]]] = {}
    for label, rate in (("flat out", None), (f"{args.rate:,.0f} ticks/s", args.rate)):
        rows[label] = {}
        for mode in MODES:
            run_args = argparse.Namespace(**vars(args), guarantee=mode)
            run_args.rate = rate
            rows[label][mode] = await e2e_bench(run_args, bootstrap, workdir)
    print("== bench/eos: exactly_once against at_least_once (bench/e2e.py runs)")
    print(f"{'run':>18} {'mode':>14} {'ticks/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'fc ok':>7}")
    for label, modes in rows.items():
        for mode, f in modes.items():
            ok = f"{f['forecasts'] / f['forecasts_expected']:.0%}"
            print(
                f"{label:>18} {mode:>14} {f['e2e_ticks_per_s']:>9,.0f} "
                f"{f['latency_p50_ms']:>8.0f} {f['latency_p99_ms']:>8.0f} {ok:>7}"
            )
    flat = rows["flat out"]
    paced = rows[f"{args.rate:,.0f} ticks/s"]
    a, e = flat["at_least_once"], flat["exactly_once"]
    print(f"throughput ratio exactly/at-least: {e['e2e_ticks_per_s'] / a['e2e_ticks_per_s']:.2f}")
    for q in ("p50", "p99"):
        added = paced["exactly_once"][f"latency_{q}_ms"] - paced["at_least_once"][f"latency_{q}_ms"]
        print(f"added latency {q} at {args.rate:,.0f} ticks/s: {added:+.0f} ms")
    figures = await restore_bench(args, bootstrap, workdir)
    print("== restore from the changelog (read to the end + load into the store)")
    for name, value in figures.items():
        print(
            f"{name:>24}: {value:,.3f}" if name.endswith("seconds") else f"{name:>24}: {value:,.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(parser)
    parser.add_argument("--ticks", type=int, default=50_000)
    parser.add_argument("--keys", type=int, default=500)
    parser.add_argument("--rate", type=float, default=5_000, help="ticks/s of the latency runs")
    parser.add_argument("--batch", type=int, default=5_000, help="service batch_max_records")
    parser.add_argument("--wait-ms", type=int, default=20, help="service batch_max_wait_ms")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--restore-keys", type=int, default=50_000)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="streamcast-bench-") as tmp,
        broker(args.bootstrap) as bootstrap,
    ):
        asyncio.run(main_async(args, bootstrap, Path(tmp)))


if __name__ == "__main__":
    main()
