"""Chaos runs of the exactly-once service against a real broker, with a verdict.

Scenarios (each replays a generated stream through ``streamcast serve`` subprocesses in
``exactly_once`` mode and checks what a read_committed consumer of the output sees):

- ``crash``: one instance, ``kill -9`` at ``kills`` random moments while the stream is
  being produced, restarted at once each time;
- ``rebalance``: three instances in one group; one is ``kill -9``-ed mid-stream and a
  fourth joins later;
- ``broker-restart``: the broker is stopped and started mid-stream (data kept).

The reference is an uninterrupted run of the same decoder and pipeline in-process over
each partition's messages in order. The verdict: every expected forecast exactly once,
values equal (1e-6), no unexpected ones; every expected dead letter exactly once
(identified by its source partition and offset).

Usage: ``scripts/chaos crash --ticks 50000 --keys 100 --kills 5`` (starts its own broker
unless ``--bootstrap`` is given). Exit status 0 when the verdict is PASS.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streamcast.core.codec import HEADER_OFFSET, HEADER_PARTITION, TickDecoder
from streamcast.core.model import OnnxStepModel
from streamcast.core.pipeline import Pipeline
from tests.support.kafka import create_topics, kafka_local, unique_topic
from tests.support.models import make_tiny_model
from tests.support.service import (
    Message,
    ServiceProcess,
    read_until_idle,
    recent_hour,
    service_env,
    tick,
)

INTERVAL_S = 60
ForecastId = tuple[str, int]  # (series key, origin epoch seconds)


@dataclass(frozen=True)
class Scenario:
    """What to replay and how hard to shake it."""

    ticks: int = 50_000
    keys: int = 100
    partitions: int = 4
    kills: int = 5
    #: one malformed message is inserted after every ``bad_every`` ticks
    bad_every: int = 97
    seed: int = 0
    batch_max_records: int = 500
    session_timeout_ms: int = 6_000
    #: the stream is produced in chunks spread over this many seconds, while the service
    #: runs and is disrupted (0: everything up front)
    pace_s: float = 40.0
    #: broker-restart: seconds the broker stays down
    outage_s: float = 3.0
    #: crash: the signal that stops the instance (SIGKILL; SIGTERM checks the drain)
    stop_signal: int = signal.SIGKILL
    timeout_s: float = 240.0


@dataclass
class Verdict:
    """The outcome of a chaos run; ``ok`` is the verdict."""

    scenario: str
    expected_forecasts: int
    forecasts_seen: int
    lost: int
    duplicated: int
    unexpected: int
    mismatched: int
    max_abs_diff: float
    expected_dead_letters: int
    dead_letters_seen: int
    dead_letters_lost: int
    dead_letters_duplicated: int
    disruptions: int
    seconds: float
    restores: list[dict[str, float]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """PASS: nothing lost, duplicated, unexpected or different."""
        return (
            self.lost == self.duplicated == self.unexpected == self.mismatched == 0
            and self.dead_letters_lost == self.dead_letters_duplicated == 0
            and self.forecasts_seen > 0
        )

    def report(self) -> str:
        """Human-readable verdict and figures."""
        lines = [f"{self.scenario}: {'PASS' if self.ok else 'FAIL'}"]
        lines += [f"  {k}: {v}" for k, v in asdict(self).items() if k not in ("restores",)]
        if self.restores:
            keys = sum(r["keys"] for r in self.restores)
            secs = sum(r["seconds"] for r in self.restores)
            lines.append(f"  restores: {len(self.restores)} ({keys:.0f} keys in {secs:.3f} s)")
        return "\n".join(lines)


# -- the stream and its reference ----------------------------------------------------------


def make_messages(sc: Scenario, start_s: int) -> list[Message]:
    """``ticks`` valid ticks (interval by interval, keys interleaved) plus malformed ones."""
    rng = np.random.default_rng(sc.seed)
    intervals = sc.ticks // sc.keys
    phase = rng.uniform(0, 6.28, sc.keys)
    level = rng.uniform(50, 150, sc.keys)
    out: list[Message] = []
    n = 0
    for t in range(intervals):
        for k in range(sc.keys):
            key = f"sensor-{k:04d}"
            value = float(level[k] + 10 * np.sin(t / 7 + phase[k]) + rng.normal(0, 1))
            out.append((key.encode(), tick(key, start_s + t * INTERVAL_S + 5, round(value, 4))))
            n += 1
            if sc.bad_every and n % sc.bad_every == 0:
                out.append((key.encode(), b'{"key": "' + key.encode() + b'", "ts": oops'))
    return out


def reference(
    model_path: Path, sent: Sequence[tuple[Message, tuple[int, int]]], partitions: int
) -> tuple[dict[ForecastId, list[float]], set[tuple[int, int]]]:
    """An uninterrupted in-process run: forecasts by id and dead-letter coordinates."""
    model = OnnxStepModel.load(model_path)
    meta = model.meta
    decoder = TickDecoder(extra_fields=meta.features.extra_names)
    pipeline = Pipeline(model, aggregation=meta.aggregation, max_gap=meta.gap.max_gap)
    forecasts: dict[ForecastId, list[float]] = {}
    letters: set[tuple[int, int]] = set()
    for part in range(partitions):
        rows = [(m, o) for m, (p, o) in sent if p == part]
        batch, rejections = decoder.decode([m for m, _ in rows])
        result = pipeline.process(batch, time.time())
        for r in [*rejections, *result.rejections]:
            letters.add((part, rows[r.index][1]))
        fc = result.forecasts
        for i, key in enumerate(fc.keys):
            forecasts[(key, int(fc.origin_ts[i]))] = fc.values[i].tolist()
    return forecasts, letters


# -- watching the output -------------------------------------------------------------------


class OutputWatch:
    """A read_committed consumer of the forecasts topic, counting as records commit."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.records: list[tuple[str, int, list[float]]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> OutputWatch:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            enable_auto_commit=False,
            metadata_max_age_ms=2_000,
        )
        while True:
            try:
                await consumer.start()
                break
            except Exception:  # noqa: BLE001 - broker restarting: try again
                await asyncio.sleep(1)
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=300)
                for messages in batches.values():
                    for m in messages:
                        doc = orjson.loads(m.value or b"")
                        origin = int(np.datetime64(doc["ts"].rstrip("Z"), "s").astype(np.int64))
                        self.records.append((doc["key"], origin, doc["values"]))
        finally:
            await consumer.stop()

    async def wait_for(self, count: int, timeout_s: float) -> bool:
        """Wait until ``count`` records were seen; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while len(self.records) < count:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.1)
        return True


async def read_dead_letters(
    bootstrap: str, topic: str, idle_s: float = 2.0
) -> list[tuple[int, int]]:
    """Source coordinates of every committed dead letter."""
    out: list[tuple[int, int]] = []
    for m in await read_until_idle(bootstrap, topic, idle_s):
        h = dict(m.headers)
        out.append((int(h[HEADER_PARTITION]), int(h[HEADER_OFFSET])))
    return out


def judge(
    name: str,
    reference_run: tuple[dict[ForecastId, list[float]], set[tuple[int, int]]],
    output: tuple[Sequence[tuple[str, int, list[float]]], Sequence[tuple[int, int]]],
    *,
    disruptions: int,
    seconds: float,
    logs: Sequence[Path],
) -> Verdict:
    """Compare what a read_committed consumer saw with the uninterrupted reference."""
    expected, letters = reference_run
    seen, dl_seen = output
    got: dict[ForecastId, list[list[float]]] = {}
    for key, origin, values in seen:
        got.setdefault((key, origin), []).append(values)
    lost = sum(1 for fid in expected if fid not in got)
    duplicated = sum(len(v) - 1 for v in got.values())
    unexpected = sum(1 for fid in got if fid not in expected)
    mismatched, max_diff = 0, 0.0
    for fid, values in expected.items():
        if fid in got:
            diff = float(np.max(np.abs(np.asarray(got[fid][0]) - np.asarray(values))))
            max_diff = max(max_diff, diff)
            if not np.allclose(got[fid][0], values, rtol=1e-6, atol=1e-6):
                mismatched += 1
    dl_counts: dict[tuple[int, int], int] = {}
    for coord in dl_seen:
        dl_counts[coord] = dl_counts.get(coord, 0) + 1
    return Verdict(
        scenario=name,
        expected_forecasts=len(expected),
        forecasts_seen=len(seen),
        lost=lost,
        duplicated=duplicated,
        unexpected=unexpected,
        mismatched=mismatched,
        max_abs_diff=max_diff,
        expected_dead_letters=len(letters),
        dead_letters_seen=len(dl_seen),
        dead_letters_lost=sum(1 for c in letters if c not in dl_counts),
        dead_letters_duplicated=sum(n - 1 for n in dl_counts.values())
        + sum(1 for c in dl_counts if c not in letters),
        disruptions=disruptions,
        seconds=seconds,
        restores=restore_lines(logs),
    )


def restore_lines(logs: Sequence[Path]) -> list[dict[str, float]]:
    """``state restored`` log lines of the services (keys, seconds)."""
    out = []
    for path in logs:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            if '"state restored"' in line:
                doc = json.loads(line)
                out.append({"keys": float(doc["keys"]), "seconds": float(doc["seconds"])})
    return out


# -- scenarios -----------------------------------------------------------------------------

Disrupt = Callable[["Run", list[float]], Awaitable[int]]


@dataclass
class Run:
    """One chaos run: topics, stream, service environment, and what was produced."""

    bootstrap: str
    workdir: Path
    sc: Scenario
    env: dict[str, str]
    model: Path
    messages: list[Message]
    #: (partition, offset) of each message, in order, as the stream is acknowledged
    acks: list[tuple[int, int]] = field(default_factory=list)
    services: list[ServiceProcess] = field(default_factory=list)

    def service(self, name: str) -> ServiceProcess:
        """A new service process of this run (own port, log and client id)."""
        env = dict(self.env)
        env["STREAMCAST_HTTP_PORT"] = str(kafka_local.free_port())
        env["STREAMCAST_CLIENT_ID"] = f"chaos-{name}"
        proc = ServiceProcess(env, self.workdir / f"{name}.log")
        self.services.append(proc)
        return proc

    async def at(self, fraction: float) -> None:
        """Sleep until ``fraction`` of the stream's pacing time has passed."""
        await asyncio.sleep(max(0.0, self.started + fraction * self.sc.pace_s - time.monotonic()))

    started: float = 0.0


async def prepare(bootstrap: str, workdir: Path, sc: Scenario, name: str) -> Run:
    """Create the ticks topic, the model and the service environment of one run."""
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    model = make_tiny_model(
        workdir / "tiny.onnx", window=4, horizon=3, interval_s=INTERVAL_S, levels=(0.9,)
    )
    prefix = unique_topic(f"chaos-{name}")
    env = service_env(
        bootstrap,
        model,
        prefix,
        processing_guarantee="exactly_once",
        batch_max_records=sc.batch_max_records,
        session_timeout_ms=sc.session_timeout_ms,
        topics__state_changelog=f"{prefix}-state",
        retry_max_backoff_s=2,
    )
    await create_topics(bootstrap, [env["STREAMCAST_TOPICS__TICKS"]], partitions=sc.partitions)
    messages = make_messages(sc, recent_hour(days_back=3))
    return Run(bootstrap, workdir, sc, env, model, messages)


async def stream(run: Run, chunks: int = 50) -> None:
    """Produce the run's messages in order, ``chunks`` pieces spread over ``pace_s``."""
    producer = AIOKafkaProducer(
        bootstrap_servers=run.bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        request_timeout_ms=180_000,  # rides out a broker restart
        metadata_max_age_ms=2_000,
    )
    await producer.start()
    topic = run.env["STREAMCAST_TOPICS__TICKS"]
    size = -(-len(run.messages) // chunks)
    began = time.monotonic()
    try:
        for i in range(0, len(run.messages), size):
            piece = run.messages[i : i + size]
            futures = [await producer.send(topic, value, key=key) for key, value in piece]
            acks = await asyncio.gather(*futures)
            run.acks += [(int(a.partition), int(a.offset)) for a in acks]
            due = began + run.sc.pace_s * (i + size) / len(run.messages)
            await asyncio.sleep(max(0.0, due - time.monotonic()))
    finally:
        await producer.stop()


async def execute(run: Run, name: str, disrupt: Disrupt) -> Verdict:
    """Stream, run ``disrupt`` meanwhile, wait for the output and judge it."""
    run.started = began = time.monotonic()
    rng = random.Random(run.sc.seed)
    moments = sorted(rng.uniform(0.05, 0.95) for _ in range(run.sc.kills))
    try:
        async with OutputWatch(run.bootstrap, run.env["STREAMCAST_TOPICS__FORECASTS"]) as watch:
            producing = asyncio.create_task(stream(run))
            disruptions = await disrupt(run, moments)
            await producing
            sent = list(zip(run.messages, run.acks, strict=True))
            expected, letters = await asyncio.to_thread(
                reference, run.model, sent, run.sc.partitions
            )
            remaining = run.sc.timeout_s - (time.monotonic() - began)
            await watch.wait_for(len(expected), max(remaining, 10.0))
            await asyncio.sleep(2.0)  # anything extra (duplicates) would show up now
            seen = list(watch.records)
        dead = await read_dead_letters(run.bootstrap, run.env["STREAMCAST_TOPICS__DEAD_LETTER"])
    finally:
        for proc in run.services:
            proc.kill()
    return judge(
        name,
        (expected, letters),
        (seen, dead),
        disruptions=disruptions,
        seconds=round(time.monotonic() - began, 1),
        logs=[p.log_path for p in run.services],
    )


async def crash(run: Run, moments: list[float]) -> int:
    """One instance, ``kill -9``-ed (or sent ``stop_signal``) ``kills`` times and
    restarted at once.

    Each kill comes a random 0.2-3 s after the instance got its partitions (restored its
    state and started processing), so every kill hits a working instance mid-stream.
    """
    rng = random.Random(run.sc.seed + 1)
    proc = run.service("crash")
    proc.launch()
    for kill in range(len(moments)):
        await asyncio.to_thread(
            proc.wait_for_log, "partitions assigned", kill + 1, run.sc.timeout_s
        )
        await asyncio.sleep(rng.uniform(0.2, 3.0))
        assert proc.process is not None
        proc.process.send_signal(run.sc.stop_signal)
        await asyncio.to_thread(proc.process.wait)
        proc.launch()
    return len(moments)


async def rebalance(run: Run, moments: list[float]) -> int:
    """Three instances share the partitions; one is killed, later a fourth joins."""
    procs = [run.service(f"member-{i}") for i in range(3)]
    for proc in procs:
        proc.launch()
    await run.at(0.3)
    victim = procs[1].process
    assert victim is not None
    victim.send_signal(signal.SIGKILL)
    await asyncio.to_thread(victim.wait)
    await run.at(0.6)
    run.service("member-3").launch()
    return 2


def broker_restart(broker: Any) -> Disrupt:
    """Stop the (dedicated) broker mid-stream and start it again, data kept."""

    async def disrupt(run: Run, moments: list[float]) -> int:
        run.service("service").launch()
        await run.at(0.4)
        await asyncio.to_thread(broker.stop)
        await asyncio.sleep(run.sc.outage_s)
        await asyncio.to_thread(broker.start, timeout=90)
        return 1

    return disrupt


async def run_scenario(
    name: str, bootstrap: str, workdir: Path, sc: Scenario, broker: Any = None
) -> Verdict:
    """Prepare and execute one named scenario."""
    run = await prepare(bootstrap, workdir, sc, name)
    if name == "crash":
        return await execute(run, name, crash)
    if name == "rebalance":
        return await execute(run, name, rebalance)
    if name == "broker-restart":
        if broker is None:
            raise ValueError("broker-restart needs a dedicated broker it may stop")
        return await execute(run, name, broker_restart(broker))
    raise ValueError(f"unknown scenario {name!r}")
