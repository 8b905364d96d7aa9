"""The forecast API under load: ``GET /v1/forecasts/{key}`` over 100,000 keys,
``POST /v1/predict``, and the view's memory per key.

``streamcast api`` runs as a real subprocess (auth off, rate limits off) against a real
broker. The bench writes ``--keys`` forecast records (horizon 24, 80 % and 95 % bands)
to the forecasts topic, measures the API's RSS before and after its view holds them,
then drives it with ``--connections`` keep-alive HTTP/1.1 connections from a lean asyncio
client (so the client, on the other core, costs little) for ``--seconds`` each:

    .venv/bin/python bench/api.py --keys 100000 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
import psutil
from common import add_common_args, broker, create_topics, model_path, unique_topic

from streamcast.core.records import ForecastBatch, encode_forecasts
from tests.support.api import ApiProcess, api_env
from tests.support.kafka import kafka_local
from tests.support.models import TinyReference
from tests.support.service import produce

HORIZON, LEVELS, INTERVAL_S = 24, (0.8, 0.95), 3600


def _records(n: int, origin: int) -> list[tuple[bytes, bytes]]:
    rng = np.random.default_rng(0)
    values = rng.normal(300, 50, size=(n, HORIZON))
    width = rng.uniform(5, 20, size=(n, 2, HORIZON))
    batch = ForecastBatch(
        [f"key-{i:07d}" for i in range(n)], np.full(n, origin), values, "bench", "1",
        INTERVAL_S, HORIZON, np.zeros(n, np.int64), levels=LEVELS,
        lower=values[:, None, :] - width, upper=values[:, None, :] + width,
    )  # fmt: skip
    return encode_forecasts(batch)


class Connection:
    """One keep-alive HTTP/1.1 connection: request, read the whole response."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def request(self, head: bytes, body: bytes = b"") -> int:
        """Send one request; the response status once its body is read."""
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        return int(status_line.split()[1])

    def close(self) -> None:
        self.writer.close()


async def _load(
    host: str, port: int, connections: int, seconds: float, request: object
) -> tuple[float, np.ndarray, dict[int, int]]:
    """``connections`` loops sending ``request()``'s ``(head, body)`` for ``seconds``:
    requests/s, latencies (s) and status counts."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + seconds

    async def loop() -> None:
        conn = await Connection.open(host, port)
        try:
            while time.perf_counter() < deadline:
                head, body = request()  # type: ignore[operator]
                began = time.perf_counter()
                status = await conn.request(head, body)
                latencies.append(time.perf_counter() - began)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            conn.close()

    began = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(connections)))
    elapsed = time.perf_counter() - began
    return len(latencies) / elapsed, np.asarray(latencies), statuses


def _predict_request(start: int, interval_s: int, ticks: int) -> tuple[bytes, bytes]:
    """``(head, body)`` of a POST /v1/predict with an hourly history of ``ticks`` ticks."""
    body = orjson.dumps(
        {
            "key": "key-0000001",
            "timestamps": [start + i * interval_s for i in range(ticks)],
            "values": [100 + 10 * math.sin(i / 4) for i in range(ticks)],
        }
    )
    head = (
        "POST /v1/predict HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head, body


def _row(what: str, rate: float, lat: np.ndarray, statuses: dict[int, int]) -> str:
    p50, p99 = np.percentile(lat, [50, 99]) * 1000
    ok = statuses.get(200, 0) / max(1, sum(statuses.values()))
    return f"| {what} | {rate:,.0f} | {p50:.1f} ms | {p99:.1f} ms | {100 * ok:.1f} % |"


async def _rss_when(api: ApiProcess, proc: psutil.Process, keys: int, timeout_s: float) -> float:
    """The API's RSS (MiB) once its view holds ``keys`` keys (sampled after a pause)."""
    import httpx  # noqa: PLC0415 - only for the metrics poll

    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=api.url, timeout=5) as client:
        while time.monotonic() < deadline:
            text = (await client.get("/metrics")).text
            line = next(x for x in text.splitlines() if x.startswith("streamcast_api_view_keys "))
            if float(line.split()[1]) >= keys:
                break
            await asyncio.sleep(0.2)
        else:
            raise RuntimeError(f"the view did not reach {keys} keys")
        await asyncio.sleep(1.0)
    return float(proc.memory_info().rss / 2**20)


async def bench(args: argparse.Namespace, bootstrap: str, workdir: Path) -> None:
    model = model_path(args.model, workdir, INTERVAL_S)
    meta = TinyReference(model).meta
    prefix = unique_topic("apibench")
    await create_topics(bootstrap, [f"{prefix}-forecasts", f"{prefix}-alerts"], args.partitions)
    env = api_env(
        bootstrap,
        prefix,
        model_path=str(model),
        api_max_keys=max(args.keys, 1),
        log_level="WARNING",
    )
    api = ApiProcess(env, workdir / "api.log").start()
    try:
        await api.wait_ready()
        assert api.process is not None
        proc = psutil.Process(api.process.pid)
        empty = await _rss_when(api, proc, 0, 10)
        origin = (int(time.time()) // 3600 - 1) * 3600
        records = _records(args.keys, origin)
        payload = sum(len(v) for _, v in records) / len(records)
        await produce(bootstrap, f"{prefix}-forecasts", records)
        full = await _rss_when(api, proc, args.keys, 300)
        # a replica started now restores the whole view from the beginning of the topic
        began = time.monotonic()
        replica_env = {**env, "STREAMCAST_API_PORT": str(kafka_local.free_port())}
        replica = ApiProcess(replica_env, workdir / "replica.log").start()
        try:
            await replica.wait_ready(timeout_s=300)
            restored = time.monotonic() - began
        finally:
            replica.stop()
        per_key = (full - empty) * 2**20 / args.keys
        host, port = "127.0.0.1", int(env["STREAMCAST_API_PORT"])

        def get() -> tuple[bytes, bytes]:
            key = f"key-{random.randrange(args.keys):07d}"
            return f"GET /v1/forecasts/{key} HTTP/1.1\r\nHost: b\r\n\r\n".encode(), b""

        ticks = meta.window + args.history
        post = _predict_request(origin - ticks * meta.interval_s, meta.interval_s, ticks)

        def predict() -> tuple[bytes, bytes]:
            return post

        await _load(host, port, 4, 1.0, get)  # warm up
        get_rate, get_lat, get_status = await _load(host, port, args.connections, args.seconds, get)
        post_rate, post_lat, post_status = await _load(host, port, 4, args.seconds, predict)
        print(
            f"== bench/api: {args.keys:,} keys (horizon {HORIZON}, levels {LEVELS}), model "
            f"state {meta.state_size} window {meta.window} horizon {meta.horizon}; "
            f"{psutil.cpu_count()} cores, load {' '.join(f'{x:.1f}' for x in psutil.getloadavg())}"
        )
        print("| request | requests/s | p50 | p99 | 200 |")
        print("|---|---|---|---|---|")
        print(
            _row(
                f"GET /v1/forecasts/{{key}} ({args.connections} connections)",
                get_rate,
                get_lat,
                get_status,
            )
        )
        print(
            _row(
                f"POST /v1/predict, {ticks} ticks (4 connections)", post_rate, post_lat, post_status
            )
        )
        print()
        print("| view | figure |")
        print("|---|---|")
        print(f"| RSS, empty view / {args.keys:,} keys | {empty:.0f} MiB / {full:.0f} MiB |")
        print(f"| RSS per key | {per_key:,.0f} bytes |")
        print(f"| forecast record on the topic (JSON) | {payload:,.0f} bytes |")
        print(f"| a new replica: start to ready (restore {args.keys:,} keys) | {restored:.1f} s |")
    finally:
        api.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(parser)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--history", type=int, default=48, help="predict: ticks beyond window")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="streamcast-bench-") as tmp,
        broker(args.bootstrap) as bootstrap,
    ):
        asyncio.run(bench(args, bootstrap, Path(tmp)))


if __name__ == "__main__":
    main()
