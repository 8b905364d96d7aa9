"""End-to-end throughput and latency: ticks produced -> service -> forecasts consumed.

Every key steps through consecutive intervals, one tick per interval, so after its
warm-up every tick closes an interval and yields one forecast. The producer records the
wall time each tick was handed to Kafka; a consumer of the forecasts topic records when
each forecast arrived; latency is the difference (so it includes the producer's linger,
the broker twice, decoding, the pipeline, ONNX Runtime and the acknowledged produce).

    .venv/bin/python bench/e2e.py --ticks 50000 --keys 500
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
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

from streamcast.core.model import OnnxStepModel
from tests.support.kafka import kafka_local

free_port = kafka_local.free_port

INTERVAL_S = 60  # of the generated default model; a given model brings its own


async def bench(args: argparse.Namespace, bootstrap: str, workdir: Path) -> dict[str, float]:
    """One run (module docstring). The benchmark's own collector is off meanwhile: its
    bookkeeping (a tuple key per tick and forecast, 100,000s of them) made each full
    collection a 100-200 ms pause of its consumer, every ~10 s, counted as the service's
    latency (the forecasts had been published in ~40 ms)."""
    gc.collect()
    gc.disable()
    try:
        return await _bench(args, bootstrap, workdir)
    finally:
        gc.enable()


async def _bench(args: argparse.Namespace, bootstrap: str, workdir: Path) -> dict[str, float]:
    model = model_path(args.model, workdir, INTERVAL_S)
    meta = OnnxStepModel.load(model).meta
    interval_s, window = meta.interval_s, meta.window
    prefix = unique_topic("bench")
    env = service_env(
        bootstrap, model, prefix,
        batch_max_records=args.batch, batch_max_wait_ms=args.wait_ms, log_level="WARNING",
        processing_guarantee=args.guarantee, topics__state_changelog=f"{prefix}-state",
        **({"compression_type": args.compression} if args.compression else {}),
        **({"intra_op_threads": args.threads} if getattr(args, "threads", None) else {}),
        **({"zstd_level": args.zstd_level} if getattr(args, "zstd_level", None) else {}),
    )  # fmt: skip
    ticks_topic, forecasts_topic = (
        env["STREAMCAST_TOPICS__TICKS"],
        env["STREAMCAST_TOPICS__FORECASTS"],
    )
    await create_topics(bootstrap, [ticks_topic], partitions=args.partitions)
    services = _start_services(env, workdir, getattr(args, "instances", 1))
    try:
        service = services[0]

        intervals, start, keys, values = _workload(args.ticks, args.keys, interval_s)
        # (key, origin) of the forecast each tick triggers -> wall time the tick was sent
        sent_at: dict[tuple[str, int], float] = {}
        arrived: dict[tuple[str, int], float] = {}
        published: dict[tuple[str, int], float] = {}
        expected = (intervals - window) * args.keys

        consumer = AIOKafkaConsumer(
            forecasts_topic, bootstrap_servers=bootstrap, group_id=None,
            auto_offset_reset="earliest", isolation_level="read_committed",
        )  # fmt: skip
        await consumer.start()

        meters = _cpu_meters(services, bootstrap)
        cpu_first: dict[str, float] = {}

        def first_forecasts() -> None:
            if not cpu_first:  # the CPU meters start at the first forecasts
                cpu_first.update(_cpu_seconds(meters))

        async def collect() -> None:
            await _collect(consumer, expected, args.timeout, arrived, published, first_forecasts)

        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                    max_batch_size=256 * 1024, enable_idempotence=True)  # fmt: skip
        await producer.start()
        collector = asyncio.create_task(collect())
        began = time.time()
        await _offer(producer, ticks_topic, keys, values, start, interval_s, args.rate, sent_at,
                     getattr(args, "spread", 1))  # fmt: skip
        await producer.flush()
        produced = time.time()
        await collector
        cpu_last = _cpu_seconds(meters)
        finished = max(arrived.values()) if arrived else time.time()
        await producer.stop()
        await consumer.stop()
        figures = _service_figures(service)
    finally:
        _stop_all(services)
    n_ticks, first = intervals * args.keys, min(arrived.values(), default=began)
    return {
        "ticks": n_ticks,
        "keys": args.keys,
        "forecasts": len(arrived),
        "forecasts_expected": expected,
        "produce_ticks_per_s": n_ticks / (produced - began),
        "e2e_ticks_per_s": n_ticks / (finished - began),
        # after warm-up every tick yields one forecast: forecasts per second between the
        # first and the last one consumed is the steady-state rate of forecasting ticks
        "forecast_ticks_per_s": (len(arrived) - 1) / max(finished - first, 1e-9),
        **_latencies(sent_at, arrived, published, getattr(args, "trace", None)),
        **figures,
        **_cpu_figures(cpu_first, cpu_last, len(arrived)),
    }


async def _collect(  # noqa: PLR0917 - the run's bookkeeping, once
    consumer: AIOKafkaConsumer,
    expected: int,
    timeout_s: float,
    arrived: dict[tuple[str, int], float],
    published: dict[tuple[str, int], float],
    on_forecasts: Callable[[], None],
) -> None:
    """Consume forecasts until ``expected`` distinct ``(key, origin)`` arrived, stamping
    each with its arrival (``arrived``) and its publish time (``published``).

    Records are stamped as they come and parsed later, in a lull (paced: between
    bursts), once all may be in, or in bounded chunks when forecasts never stop (flat
    out): parsing them as they came delayed the stamp of the other partition's batch of
    the same burst by the ~3 ms the first one took to parse."""
    pending: list[tuple[bytes, float, int]] = []

    def settle() -> None:
        for value, now, created in pending:
            doc = orjson.loads(value)
            origin = int(np.datetime64(doc["ts"].rstrip("Z"), "s").astype(np.int64))
            arrived.setdefault((doc["key"], origin), now)
            published.setdefault((doc["key"], origin), created / 1000)
        pending.clear()

    deadline = time.monotonic() + timeout_s
    while len(arrived) < expected and time.monotonic() < deadline:
        batches = await consumer.getmany(timeout_ms=20)
        now = time.time()
        if batches:
            on_forecasts()
        for part in batches.values():
            pending.extend((m.value or b"", now, m.timestamp) for m in part)
        if not batches or len(arrived) + len(pending) >= expected or len(pending) > 20_000:
            settle()


def _cpu_meters(services: list[ServiceProcess], bootstrap: str) -> dict[str, list[Any]]:
    """The processes whose CPU time a run costs: the services, the broker (the process
    listening on the bootstrap port) and this benchmark (producer and consumer)."""
    import psutil  # noqa: PLC0415 - dev dependency, only the benchmarks need it

    port = int(bootstrap.rsplit(":", 1)[1])
    brokers = []  # kafka.Kafka processes whose properties file listens on the port
    for proc in psutil.process_iter(["cmdline"]):
        args = proc.info.get("cmdline") or []
        if "kafka.Kafka" in args and args[-1].endswith(".properties"):
            try:
                if f":{port}" in Path(args[-1]).read_text():
                    brokers.append(proc)
            except OSError:
                continue
    return {
        "service": [psutil.Process(s.process.pid) for s in services if s.process is not None],
        "broker": brokers[:1],
        "bench": [psutil.Process()],
    }


def _cpu_seconds(meters: dict[str, list[Any]]) -> dict[str, float]:
    """User + system CPU seconds so far of each group of processes."""
    out = {}
    for name, processes in meters.items():
        times = [p.cpu_times() for p in processes]
        out[name] = float(sum(t.user + t.system for t in times))
    return out


def _cpu_figures(
    first: dict[str, float], last: dict[str, float], forecasts: int
) -> dict[str, float]:
    """CPU milliseconds per forecasting tick of each process group between the first and
    the last forecast consumed, and the forecasting rate those costs allow on this
    machine's cores if the benchmark's own producer and consumer cost nothing: the
    physical bound of end to end here (broker co-located)."""
    if not first or forecasts < 2:
        return {}
    per = {name: 1e6 * (last[name] - first[name]) / forecasts for name in first}
    served = per["service"] + per["broker"]
    return {
        **{f"cpu_us_per_tick_{name}": value for name, value in per.items()},
        "cores_bound_ticks_per_s": (os.cpu_count() or 1) * 1e6 / served if served else 0.0,
    }


def _workload(ticks: int, n_keys: int, interval_s: int) -> tuple[int, int, list[str], np.ndarray]:
    """``(intervals, first event time, keys, values [intervals, keys])`` of a run: random
    walks, event time ending a day before now whatever the interval (no tick is "in the
    future")."""
    intervals = ticks // n_keys
    start = (int(time.time()) // 86_400 - 1) * 86_400 - intervals * interval_s
    keys = [f"k{i:05d}" for i in range(n_keys)]
    values = 100 + np.random.default_rng(0).normal(size=(intervals, n_keys)).cumsum(axis=0)
    return intervals, start, keys, values


async def _offer(  # noqa: PLR0917 - the run's parameters, once
    producer: AIOKafkaProducer,
    topic: str,
    keys: list[str],
    values: np.ndarray,
    start: int,
    interval_s: int,
    rate: float | None,
    sent_at: dict[tuple[str, int], float],
    spread: int = 1,
) -> None:
    """Send one interval of ticks per key after the other (paced at ``rate`` ticks/s, or
    flat out), recording when the tick behind each forecast was sent. Paced, each
    interval's ticks go out in ``spread`` equal bursts evenly apart (1: all keys at once,
    as meters aligned on the interval send; more: the keys' clocks apart)."""
    began = time.time()
    parts = max(1, spread) if rate else 1
    bounds = np.linspace(0, len(keys), parts + 1).astype(int)
    pause = len(keys) / rate / parts if rate else 0.0
    burst = 0
    for t in range(len(values)):
        for lo, hi in itertools.pairwise(bounds.tolist()):
            mine = keys[lo:hi]
            ts = start + t * interval_s + 1
            sent = await _send_interval(producer, topic, mine, ts, values[t, lo:hi])
            for key in mine:
                sent_at[(key, start + (t - 1) * interval_s)] = sent
            burst += 1
            if pause:
                await asyncio.sleep(max(0.0, began + burst * pause - time.time()))


async def _send_interval(
    producer: AIOKafkaProducer, topic: str, keys: list[str], ts: int, values: np.ndarray
) -> float:
    """One tick per key at ``ts``, one record batch per partition (the client's
    per-message path is the slowest part of a Python producer, and the service must be
    what is measured); returns the wall time they were handed to the producer."""
    partitions = sorted(await producer.partitions_for(topic))
    partitioner = DefaultPartitioner()
    builders = {p: producer.create_batch() for p in partitions}
    now_ms = int(time.time() * 1000)
    for key, value in zip(keys, values.tolist(), strict=True):
        body = orjson.dumps({"key": key, "ts": ts, "value": float(value)})
        p = partitioner(key.encode(), partitions, partitions)
        builders[p].append(timestamp=now_ms, key=key.encode(), value=body)
    sent = time.time()
    for p, builder in builders.items():
        builder.close()  # complete: an open batch would wait linger_ms in the accumulator
        await producer.send_batch(builder, topic, partition=p)
    return sent


def _start_services(env: dict[str, str], workdir: Path, instances: int) -> list[ServiceProcess]:
    """``instances`` services in one consumer group (each its own HTTP port), started one
    after the other: an instance is ready only once it owns partitions, so when the last
    one is ready the group has rebalanced."""
    services = [
        ServiceProcess(
            {**env, "STREAMCAST_HTTP_PORT": str(free_port())} if i else env,
            workdir / f"service-{i}.log",
        )
        for i in range(instances)
    ]
    try:
        for one in services:
            one.start()
    except BaseException:
        _stop_all(services)
        raise
    return services


def _service_figures(service: ServiceProcess) -> dict[str, float]:
    """The first service's batches, pipeline time per batch and RSS."""
    inference = service.metric("streamcast_inference_seconds_sum")
    batches = service.metric("streamcast_inference_seconds_count")
    delivery = service.metric("streamcast_delivery_seconds_sum")
    delivered = service.metric("streamcast_delivery_seconds_count")
    return {
        "service_batches": batches,
        "pipeline_ms_per_batch": 1000 * inference / batches if batches else float("nan"),
        "delivery_ms_per_batch": 1000 * delivery / delivered if delivered else float("nan"),
        "service_rss_mib": _rss_mib(service),
    }


def _stop_all(services: list[ServiceProcess]) -> None:
    """Stop every service that was launched (also when the run failed)."""
    for one in services:
        if one.process is not None:
            one.stop()


#: seconds after the first forecasting tick was sent that count as the warm-up transient:
#: every key of the run warms up in the same interval, and running its whole window through
#: the model (the state a key starts forecasting from) is a backlog the service then drains
SETTLE_S = 3.0


def _latencies(
    sent_at: dict[tuple[str, int], float],
    arrived: dict[tuple[str, int], float],
    published: dict[tuple[str, int], float],
    trace: Path | None = None,
) -> dict[str, float]:
    """Percentiles of tick sent -> forecast consumed, and -> forecast published; over the
    whole run and in the steady state (ticks sent ``SETTLE_S`` after the first forecasting
    tick, past the warm-up transient). ``trace``: a CSV of the same per burst of ticks
    sent together, in the order sent (where in the run the slow forecasts are)."""
    pairs = [k for k in arrived if k in sent_at]
    sent = np.array([sent_at[k] for k in pairs])
    lat = np.array([arrived[k] - sent_at[k] for k in pairs]) * 1000
    # the forecast's Kafka timestamp is set by the service when it sends: this part
    # excludes the benchmark's own consumer (which shares the CPU with the producer)
    lat_out = np.array([published[k] - sent_at[k] for k in pairs]) * 1000
    steady = sent >= (sent.min() if len(sent) else 0.0) + SETTLE_S
    if trace is not None:
        _write_trace(trace, sent, lat, lat_out)

    def pct(values: np.ndarray, q: int) -> float:
        return float(np.percentile(values, q)) if len(values) else float("nan")

    return {
        "latency_p50_ms": pct(lat, 50),
        "latency_p95_ms": pct(lat, 95),
        "latency_p99_ms": pct(lat, 99),
        "to_published_p50_ms": pct(lat_out, 50),
        "to_published_p99_ms": pct(lat_out, 99),
        "steady_forecasts": int(steady.sum()),
        "steady_p50_ms": pct(lat[steady], 50),
        "steady_p95_ms": pct(lat[steady], 95),
        "steady_p99_ms": pct(lat[steady], 99),
        "steady_to_published_p50_ms": pct(lat_out[steady], 50),
        "steady_to_published_p99_ms": pct(lat_out[steady], 99),
    }


def _write_trace(path: Path, sent: np.ndarray, lat: np.ndarray, lat_out: np.ndarray) -> None:
    """One CSV row per burst (the ticks handed to the producer at one instant): when it
    was sent (s after the first forecasting burst), its forecasts, and the median and
    worst latency to consumed and to published (ms), and when it was sent in Unix time
    (to line a slow burst up with the broker's or the system's logs)."""
    bursts, burst_of = np.unique(sent, return_inverse=True)  # each forecast's burst
    rows = ["sent_s,forecasts,p50_ms,max_ms,to_published_p50_ms,to_published_max_ms,sent_unix"]
    for i, at in enumerate(bursts.tolist()):
        mine = burst_of == i
        rows.append(
            f"{at - bursts[0]:.3f},{int(mine.sum())},{np.median(lat[mine]):.1f},"
            f"{lat[mine].max():.1f},{np.median(lat_out[mine]):.1f},{lat_out[mine].max():.1f},"
            f"{at:.3f}"
        )
    path.write_text("\n".join(rows) + "\n")


def _rss_mib(service: ServiceProcess) -> float:
    import psutil  # noqa: PLC0415 - dev dependency, only the benchmarks need it

    assert service.process is not None
    return float(psutil.Process(service.process.pid).memory_info().rss / 2**20)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(parser)
    parser.add_argument("--ticks", type=int, default=50_000)
    parser.add_argument("--keys", type=int, default=500)
    parser.add_argument("--rate", type=float, help="ticks/s to offer (default: flat out)")
    parser.add_argument(
        "--spread", type=int, default=1,
        help="paced: send each interval's ticks in this many bursts evenly apart (1: at once)",
    )  # fmt: skip
    parser.add_argument("--batch", type=int, default=5_000, help="service batch_max_records")
    parser.add_argument("--wait-ms", type=int, default=20, help="service batch_max_wait_ms")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument(
        "--trace", type=Path, help="write each burst's forecast latencies to this CSV"
    )
    parser.add_argument("--instances", type=int, default=1, help="services in one group")
    parser.add_argument("--threads", type=int, help="service intra_op_threads (default: its own)")
    parser.add_argument(
        "--guarantee", choices=["at_least_once", "exactly_once"], default="at_least_once"
    )
    parser.add_argument(
        "--compression",
        choices=["none", "gzip", "snappy", "lz4", "zstd"],
        help="service compression_type (default: the setting's default)",
    )
    parser.add_argument("--zstd-level", type=int, help="service zstd_level (default: its own)")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="streamcast-bench-") as tmp,
        broker(args.bootstrap) as bootstrap,
    ):
        figures = asyncio.run(bench(args, bootstrap, Path(tmp)))
    print("== bench/e2e: ticks -> Kafka -> streamcast serve -> Kafka -> consumer")
    for name, value in figures.items():
        print(f"{name:>24}: {value:,.1f}" if isinstance(value, float) else f"{name:>24}: {value:,}")


if __name__ == "__main__":
    main()
