"""Kafka alone: the latency of one hop (producer -> broker -> consumer) for the bursts the
paced end-to-end run moves, with no streamcast in between.

The paced run (bench/e2e.py --rate) sends every interval's ticks at once, and the
service answers each burst with as many forecasts; a forecast's latency is therefore two
hops plus the pipeline. This bench measures the two hops on their own, on the same local
broker and with the same client (aiokafka, packed record batches, acknowledgements from
all replicas): a burst of ``--keys`` tick records, then a burst of as many real forecast
records (encoded by the pipeline for the given model, compressed as the service
compresses them), every ``--every-ms``. Latency is from handing a burst to the producer
to the consumer holding it, so what the two hops cost is the floor under streamcast's
end-to-end figure at that load.

    .venv/bin/python bench/hop.py --model .bench/model/model.onnx
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from pathlib import Path

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from common import broker, create_topics, unique_topic
from micro import key_names, tick_records, warm_processor

from streamcast.config import Settings


async def hop(
    bootstrap: str, bodies: list[bytes], bursts: int, every_s: float, compression: str | None
) -> dict[str, float]:
    """Send ``bodies`` as one burst (2 partitions) ``bursts`` times; percentiles of the
    time from hand-off to the consumer holding each record, past the first 10 bursts."""
    topic = unique_topic("hop")
    await create_topics(bootstrap, [topic], partitions=2)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=1 << 20,
        compression_type=compression, enable_idempotence=True,
    )  # fmt: skip
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await producer.start()
    await consumer.start()
    sent: dict[int, float] = {}
    latencies: list[float] = []

    async def collect() -> None:
        got, deadline = 0, time.monotonic() + 60 + bursts * every_s
        while got < len(bodies) * bursts and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            now = time.time()
            for part in batches.values():
                for message in part:
                    got += 1
                    if int(message.key or b"0") >= 10:
                        latencies.append(now - sent[int(message.key or b"0")])

    try:
        collector = asyncio.create_task(collect())
        began = time.time()
        for burst in range(bursts):
            builders = {p: producer.create_batch() for p in (0, 1)}
            key = str(burst).encode()
            for i, body in enumerate(bodies):
                builders[i % 2].append(key=key, value=body, timestamp=None)
            sent[burst] = time.time()
            for partition, builder in builders.items():
                builder.close()  # complete: sent at once, as streamcast sends its batches
                await producer.send_batch(builder, topic, partition=partition)
            await asyncio.sleep(max(0.0, began + (burst + 1) * every_s - time.time()))
        await collector
    finally:
        await producer.stop()
        await consumer.stop()
    ms = np.array(latencies) * 1000
    return {
        "records": float(len(bodies)),
        "bytes_per_record": float(np.mean([len(b) for b in bodies])),
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def bursts_of(model: Path, keys: int) -> tuple[list[bytes], list[bytes]]:
    """The tick bodies of one interval of ``keys`` keys and the forecasts they yield."""
    processor, t0 = warm_processor(model, keys)
    records = tick_records(key_names(keys), t0, processor.pipeline.interval_s, 10**9)
    result = processor.process(records, time.time())
    forecasts = [
        r.value or b""
        for part in result.outputs.values()
        for r in part
        if r.topic == processor.topics.forecasts
    ]
    return [r.value or b"" for r in records], forecasts


async def run(args: argparse.Namespace, bootstrap: str) -> dict[str, dict[str, float]]:
    """Both hops, ticks (uncompressed, as bench/e2e.py's producer sends them) and then
    forecasts (the service's compression)."""
    ticks, forecasts = bursts_of(args.model, args.keys)
    if len(forecasts) != args.keys:
        raise RuntimeError(f"{len(forecasts)} forecasts for {args.keys} keys")
    compression = Settings(_env_file=None).compression_type
    codec = None if compression == "none" else compression
    every_s = args.every_ms / 1000
    gc.disable()  # as bench/e2e.py: the bench's own collector must not pause its consumer
    try:
        return {
            "ticks": await hop(bootstrap, ticks, args.bursts, every_s, None),
            "forecasts": await hop(bootstrap, forecasts, args.bursts, every_s, codec),
        }
    finally:
        gc.enable()


def main() -> None:
    """Parse the flags, measure both hops, print them."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap", help="use this broker (default: start one locally)")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--keys", type=int, default=500, help="records per burst")
    parser.add_argument("--every-ms", type=float, default=100, help="time between bursts")
    parser.add_argument("--bursts", type=int, default=150)
    args = parser.parse_args()
    with broker(args.bootstrap) as bootstrap:
        figures = asyncio.run(run(args, bootstrap))
    print(f"== bench/hop: Kafka alone, {args.keys} records every {args.every_ms:.0f} ms")
    for name, f in figures.items():
        print(
            f"{name:>10}: {f['bytes_per_record']:,.0f} B/record, p50/p95/p99 "
            f"{f['p50_ms']:.1f}/{f['p95_ms']:.1f}/{f['p99_ms']:.1f} ms"
        )


if __name__ == "__main__":
    main()
