"""The forecast API against the real broker: ``streamcast serve`` forecasts a replay,
two ``streamcast api`` replicas (subprocesses) restore their views from the beginning of
the topics, and every key's ``GET /v1/forecasts/{key}`` equals the last record of that
key on the forecasts topic, on both replicas (same body, same ETag). Event streams carry
a committed forecast within 1 s, and alerts (produced here with the detectors' own
encoder, so their kinds and times are known) are listed and streamed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streamcast.core.records import Forecast, ForecastBatch, decode_forecast, encode_forecasts
from tests.support.api import ApiProcess, alert_records, api_env
from tests.support.kafka import create_topics, unique_topic
from tests.support.models import make_tiny_model
from tests.support.service import (
    ServiceProcess,
    consume,
    expected_forecasts,
    produce,
    recent_hour,
    service_env,
    tick,
)

pytestmark = pytest.mark.kafka

KEYS, HOURS = 20, 10
Events = asyncio.Queue[tuple[str, dict[str, object], float]]


async def _events(
    client: httpx.AsyncClient, key: str, out: asyncio.Queue[tuple[str, dict[str, object], float]]
) -> None:
    """Read ``key``'s event stream into ``out`` as ``(event, data, arrival time)``."""
    async with client.stream("GET", f"/v1/forecasts/{key}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                await out.put((event, orjson.loads(line[6:]), time.monotonic()))


async def _transactional_send(
    bootstrap: str, topic: str, pairs: list[tuple[bytes, bytes]]
) -> float:
    """Send in one committed transaction; the monotonic time the commit returned."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=unique_topic("tx"))
    await producer.start()
    try:
        async with producer.transaction():
            for key, value in pairs:
                await producer.send(topic, value, key=key)
        return time.monotonic()
    finally:
        await producer.stop()


@pytest.fixture
async def replayed(
    bootstrap: str, tmp_path: Path
) -> AsyncIterator[tuple[dict[str, str], list[bytes]]]:
    """A replay through the service: its environment and the forecast records it wrote."""
    model = make_tiny_model(tmp_path / "model.onnx", window=4, horizon=3, levels=(0.8, 0.95))
    env = service_env(bootstrap, model, unique_topic("api"))
    await create_topics(bootstrap, [env["STREAMCAST_TOPICS__TICKS"]], partitions=2)
    start = recent_hour()
    messages = [
        (f"k-{k}".encode(), tick(f"k-{k}", start + h * 3600 + 60, float(10 * k + h + np.sin(h))))
        for h in range(HOURS)
        for k in range(KEYS)
    ]
    expected = len(expected_forecasts(model, [messages]))
    service = ServiceProcess(env, tmp_path / "service.log")
    try:
        service.start()
        await produce(bootstrap, env["STREAMCAST_TOPICS__TICKS"], messages)
        records = await consume(bootstrap, env["STREAMCAST_TOPICS__FORECASTS"], until=expected)
        assert len(records) == expected
        yield env, [r.value or b"" for r in records]
    finally:
        service.kill()


def _iso(ts_s: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts_s))


async def _every_key_equals_its_last_record(
    client: httpx.AsyncClient, last: dict[str, Forecast]
) -> dict[str, tuple[str, dict[str, object]]]:
    """Check every key's GET against its last record; ``key -> (etag, body less age)``."""
    bodies = {}
    for key, fc in last.items():
        response = await client.get(f"/v1/forecasts/{key}")
        assert response.status_code == 200, response.text
        doc = response.json()
        assert doc["origin"] == _iso(fc.origin_ts)
        assert doc["values"] == fc.values.tolist()  # exact
        assert [iv["level"] for iv in doc["intervals"]] == list(fc.levels) == [0.8, 0.95]
        assert fc.lower is not None and fc.upper is not None
        for j, interval in enumerate(doc["intervals"]):
            assert interval["lower"] == fc.lower[j].tolist()
            assert interval["upper"] == fc.upper[j].tolist()
        assert (doc["model"], doc["model_version"]) == (fc.model, fc.model_version)
        assert doc["targets"] == [_iso(int(t)) for t in fc.target_ts()]
        assert 0 <= float(doc.pop("age_s")) < 300
        bodies[key] = (response.headers["etag"], doc)
    listing = (await client.get("/v1/forecasts", params={"limit": 1000})).json()
    assert sorted(item["key"] for item in listing["items"]) == sorted(last)
    assert f"streamcast_api_view_keys {len(last)}.0" in (await client.get("/metrics")).text
    return bodies


async def _alerts_are_listed_and_streamed(
    bootstrap: str, topic: str, clients: list[httpx.AsyncClient], events: Events, base: int
) -> None:
    kinds = ["input_drift", "error_drift", "recovered"]
    alerts = [("k-4", base + i * 60, kind, 3.5 + i, "warning") for i, kind in enumerate(kinds)]
    await produce(bootstrap, topic, alert_records(alerts))
    seen = [await asyncio.wait_for(events.get(), 5) for _ in alerts]
    assert [(e, d["kind"]) for e, d, _ in seen] == [("alert", kind) for kind in kinds]
    assert seen[0][1]["detector"] == "ks"
    assert seen[1][1]["summary"] == {
        "recent_residuals": [0.5, 1.5, 2.5], "residual_mean": 1.5, "window_mean": 410.0,
        "window_std": 80.0, "window": 48,
    }  # fmt: skip
    for client in clients:
        for _ in range(50):
            listed = (await client.get("/v1/alerts", params={"key": "k-4"})).json()["items"]
            if len(listed) == 3:
                break
            await asyncio.sleep(0.1)
        assert [a["kind"] for a in listed] == kinds[::-1]
        assert [a["statistic"] for a in listed] == [5.5, 4.5, 3.5]
        since = (await client.get("/v1/alerts", params={"since": _iso(alerts[1][1])})).json()[
            "items"
        ]
        assert [a["kind"] for a in since] == ["recovered", "error_drift"]
        assert (await client.get("/v1/alerts", params={"key": "k-3"})).json()["items"] == []


async def test_replicas_answer_every_key_with_its_last_record_and_stream_new_ones(
    bootstrap: str, tmp_path: Path, replayed: tuple[dict[str, str], list[bytes]]
) -> None:
    env, records = replayed
    topics = env["STREAMCAST_TOPICS__FORECASTS"], env["STREAMCAST_TOPICS__ALERTS"]
    last = {}
    for value in records:  # the topic's order per key is its partition's order
        fc = decode_forecast(value)
        last[fc.key] = fc
    assert len(last) == KEYS
    api_envs = [
        api_env(
            bootstrap, topics[0].removesuffix("-forecasts"), model_path=env["STREAMCAST_MODEL_PATH"]
        )
        for _ in range(2)
    ]
    replicas = [ApiProcess(e, tmp_path / f"api-{i}.log").start() for i, e in enumerate(api_envs)]
    try:
        await asyncio.gather(*(r.wait_ready() for r in replicas))
        clients = [httpx.AsyncClient(base_url=r.url, timeout=10) for r in replicas]
        bodies = [await _every_key_equals_its_last_record(c, last) for c in clients]
        assert bodies[0] == bodies[1], "replicas answer the same, ETags included"

        # a forecast committed now reaches an open event stream within 1 s
        events: Events = asyncio.Queue()
        streams = [asyncio.create_task(_events(clients[0], key, events)) for key in ("k-3", "k-4")]
        await asyncio.sleep(0.5)  # let the streams open
        fresh = ForecastBatch(
            ["k-3"], np.array([last["k-3"].origin_ts + 3600]), np.array([[1.0, 2.0, 3.0]]),
            "tiny", "2", 3600, 3, np.array([0]),
        )  # fmt: skip
        committed = await _transactional_send(bootstrap, topics[0], encode_forecasts(fresh))
        event, data, arrived = await asyncio.wait_for(events.get(), 5)
        assert event == "forecast" and data["key"] == "k-3" and data["values"] == [1.0, 2.0, 3.0]
        assert arrived - committed < 1.0, f"event after {arrived - committed:.3f}s"
        # the other replica follows on its own: it has the new forecast moments later
        for _ in range(100):
            got = await clients[1].get("/v1/forecasts/k-3")
            if got.json()["model_version"] == "2":
                break
            await asyncio.sleep(0.02)
        assert got.json()["model_version"] == "2" and got.headers["etag"] != bodies[1]["k-3"][0]

        await _alerts_are_listed_and_streamed(
            bootstrap, topics[1], clients, events, last["k-4"].origin_ts
        )

        # SIGTERM with streams open: the replica ends them and exits promptly
        began = time.monotonic()
        assert replicas[0].stop() == 0
        assert time.monotonic() - began < 5
        await asyncio.wait_for(asyncio.gather(*streams, return_exceptions=True), 5)
        for client in clients:
            await client.aclose()
    finally:
        for replica in replicas:
            replica.kill()


async def test_readyz_waits_for_the_topics_and_the_restore(bootstrap: str, tmp_path: Path) -> None:
    prefix = unique_topic("apiready")
    api = ApiProcess(api_env(bootstrap, prefix), tmp_path / "api.log").start()
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=5) as client:
            for _ in range(100):
                try:
                    response = await client.get("/readyz")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            assert response.status_code == 503
            await asyncio.sleep(0.5)
            assert "waiting for topics" in (await client.get("/readyz")).text
            topics = [f"{prefix}-forecasts", f"{prefix}-alerts"]
            await create_topics(bootstrap, topics)
            n = 3000
            batch = ForecastBatch(
                [f"s-{i}" for i in range(n)], np.full(n, 1_790_000_000 // 3600 * 3600),
                np.ones((n, 3)), "m", "1", 3600, 3, np.zeros(n, np.int64),
            )  # fmt: skip
            await produce(bootstrap, topics[0], encode_forecasts(batch))
            await api.wait_ready(timeout_s=30)
            assert "streamcast_api_view_keys 3000.0" in (await client.get("/metrics")).text
            assert (await client.get("/v1/forecasts/s-2999")).status_code == 200
    finally:
        assert api.stop() == 0
