"""Bounded memory: with ``max_keys = M``, stream ``10 x M`` distinct keys through the
service and print its RSS as they go. Once the store is full, LRU eviction must keep RSS
flat; the script exits non-zero if the second half of the post-cap run peaks more than
``--tolerance`` above the first half.

    .venv/bin/python bench/memory.py --max-keys 5000
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import orjson
import psutil
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from common import (
    ServiceProcess,
    add_common_args,
    broker,
    create_topics,
    model_path,
    service_env,
    unique_topic,
)

INTERVAL_S = 60
TICKS_PER_KEY = 10  # past the bench model's warm-up, so keys reach the stepping state


async def _send_interval(
    producer: AIOKafkaProducer, topic: str, keys: list[str], ts: int, value: float
) -> None:
    """One tick per key at ``ts``, packed into record batches per partition."""
    partitions = sorted(await producer.partitions_for(topic))
    partitioner = DefaultPartitioner()
    builders = {p: producer.create_batch() for p in partitions}
    futures = []
    for key in keys:
        body = orjson.dumps({"key": key, "ts": ts, "value": value})
        p = partitioner(key.encode(), partitions, partitions)
        if not builders[p].append(timestamp=None, key=key.encode(), value=body):
            futures.append(await producer.send_batch(builders[p], topic, partition=p))
            builders[p] = producer.create_batch()
            builders[p].append(timestamp=None, key=key.encode(), value=body)
    for p, builder in builders.items():
        futures.append(await producer.send_batch(builder, topic, partition=p))
    await asyncio.gather(*futures)


async def bench(args: argparse.Namespace, bootstrap: str, workdir: Path) -> int:
    model = model_path(args.model, workdir, INTERVAL_S)
    env = service_env(
        bootstrap, model, unique_topic("mem"),
        max_keys=args.max_keys, batch_max_records=min(5_000, args.max_keys),
        log_level="WARNING",
    )  # fmt: skip
    topic = env["STREAMCAST_TOPICS__TICKS"]
    await create_topics(bootstrap, [topic], partitions=args.partitions)
    service = ServiceProcess(env, workdir / "service.log")
    service.start()
    assert service.process is not None
    proc = psutil.Process(service.process.pid)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    start = (int(time.time()) // 3600 - 48) * 3600
    total = args.factor * args.max_keys
    step = max(1, total // 20)
    sent_ticks = 0
    rows: list[tuple[int, float, float, float]] = []
    print(f"== bench/memory: max_keys={args.max_keys:,}, {total:,} distinct keys, "
          f"{TICKS_PER_KEY} ticks each")  # fmt: skip
    print(f"{'keys sent':>10} {'ticks':>10} {'active':>8} {'evicted':>9} {'RSS MiB':>8}")
    for first in range(0, total, step):
        keys = [f"key-{i:08d}" for i in range(first, min(total, first + step))]
        for t in range(TICKS_PER_KEY):
            await _send_interval(producer, topic, keys, start + t * INTERVAL_S + 1, t)
        sent_ticks += len(keys) * TICKS_PER_KEY
        # let the service catch up before sampling
        for _ in range(600):
            if service.metric("streamcast_ticks_total") >= sent_ticks:
                break
            await asyncio.sleep(0.2)
        rss = proc.memory_info().rss / 2**20
        active = service.metric("streamcast_active_keys")
        evicted = service.metric("streamcast_evictions_total")
        rows.append((first + len(keys), active, evicted, rss))
        sent_keys = first + len(keys)
        print(f"{sent_keys:>10,} {sent_ticks:>10,} {active:>8,.0f} {evicted:>9,.0f} {rss:>8.1f}")
    await producer.stop()
    service.stop()
    # Flat means no trend once the store is full: compare the RSS peak of the second half
    # of the post-cap run with the first half's (allocator noise shows in both halves).
    at_cap = [r[3] for r in rows if r[0] >= 2 * args.max_keys]
    half = len(at_cap) // 2
    early, late = max(at_cap[:half]), max(at_cap[half:])
    growth = (late - early) / early
    print(
        f"RSS after the cap: first-half peak {early:.1f} MiB, second-half peak {late:.1f} MiB "
        f"({100 * growth:+.1f}%); max active keys {max(r[1] for r in rows):,.0f}"
    )
    if max(r[1] for r in rows) > args.max_keys:
        print("FAIL: more active keys than max_keys")
        return 1
    if growth > args.tolerance:
        print(f"FAIL: RSS kept growing (> {100 * args.tolerance:.0f}%) after the cap")
        return 1
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(parser)
    parser.add_argument("--max-keys", type=int, default=5_000)
    parser.add_argument("--factor", type=int, default=10, help="distinct keys = factor x cap")
    parser.add_argument("--tolerance", type=float, default=0.05)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="streamcast-bench-") as tmp,
        broker(args.bootstrap) as bootstrap,
    ):
        status = asyncio.run(bench(args, bootstrap, Path(tmp)))
    raise SystemExit(status)


if __name__ == "__main__":
    main()
