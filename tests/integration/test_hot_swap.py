"""Model hot-swap against the real broker.

- A live swap under load: 1,000 keys stream through a service serving a models directory;
  a new version published mid-stream is swapped in between two batches: every tick's
  forecast appears once, each partition (so each key) switches version at one point and
  never back, the forecasts on either side are exactly the offline pipeline's (the old
  model's, then the new one's after a swap at that point), and the pause is under 1 s.
- Refusals: a truncated file, an incompatible model and one that fails its self-test are
  each refused with one log line (not one per poll) and the metric, and the old model
  keeps serving.
- A restart with another model of the same layout (weights x 1.05, its self-test
  recomputed) rebuilds every key's state from its window instead of adopting the old
  model's, as the offline pipeline does.
- The retrain loop: ``streamcast-train fit --publish-to`` on the stream's history, and the
  running service swaps to what it published.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pytest
from aiokafka.structs import ConsumerRecord

from streamcast.core.codec import TickDecoder
from streamcast.core.model import OnnxStepModel, self_test_failures
from streamcast.core.pipeline import Pipeline
from tests.integration.test_retrain import FIT_FLAGS
from tests.support.kafka import create_topics, unique_topic
from tests.support.models import (
    make_tiny_model,
    rewrite_meta,
    scale_weights,
)
from tests.support.service import (
    ForecastKey,
    Message,
    ServiceProcess,
    consume,
    expected_forecasts,
    produce,
    read_until_idle,
    recent_hour,
    run_cli,
    service_env,
    tick,
)
from tests.support.tiny import TINY_COLUMNS, tiny_data
from training.cli import main as train_main
from training.publish import publish_model

pytestmark = pytest.mark.kafka

INTERVAL_S = 60
WINDOW = 4
HORIZON = 3
SWAPPED = "model swapped: "  # the service's line (not "model swapped in", the processor's)
REFUSED = "refused: "


def _model(tmp_path: Path, name: str, *, seed: int, version: str, **changes: Any) -> Path:
    """A tiny model of this module's layout with a self-test sample."""
    shape: dict[str, Any] = {"window": WINDOW, "horizon": HORIZON, "interval_s": INTERVAL_S}
    return make_tiny_model(
        tmp_path / name, seed=seed, version=version, self_test=4, levels=(0.9,),
        **{**shape, **changes},
    )  # fmt: skip


def _reweighted(src: Path, dst: Path, factor: float, version: str) -> Path:
    """``src`` with every weight times ``factor``, a new version and its self-test sample
    recomputed, as an exporter does, by running the sample's inputs through the new graph:
    another model of the same layout that passes every check."""
    scale_weights(src, dst, factor)
    rewrite_meta(dst, dst, version=version)
    sample = OnnxStepModel.load(dst).meta.self_test
    x, h, c = (np.asarray(a, dtype=np.float32) for a in (sample.x, sample.h, sample.c))
    h_out, c_out, forecast = OnnxStepModel.load(dst).step(x, h, c, None)
    outputs = {"h_out": h_out.tolist(), "c_out": c_out.tolist(), "forecast": forecast.tolist()}
    rewrite_meta(dst, dst, self_test={**sample.model_dump(), **outputs})
    assert self_test_failures(OnnxStepModel.load(dst)) is None
    return dst


def _interval(start: int, t: int, keys: Sequence[int]) -> list[Message]:
    """One tick per key for interval ``t`` (7 s into it)."""
    out: list[Message] = []
    for k in keys:
        key = f"meter-{k}"
        value = float(100 + k % 50 + 20 * np.cos(t / 5 + k))
        out.append((key.encode(), tick(key, start + t * INTERVAL_S + 7, value)))
    return out


@dataclass
class Feed:
    """Ticks sent to a topic, remembered with where they landed."""

    bootstrap: str
    topic: str
    start: int
    keys: int
    sent: list[tuple[Message, tuple[int, int]]]

    @classmethod
    def to(cls, bootstrap: str, topic: str, keys: int) -> Feed:
        return cls(bootstrap, topic, recent_hour(), keys, [])

    async def send(self, first: int, last: int, keys: Sequence[int] | None = None) -> None:
        """Send intervals ``first .. last - 1`` of ``keys`` (default all), one produce call
        per interval."""
        keys = range(self.keys) if keys is None else keys
        for t in range(first, last):
            batch = _interval(self.start, t, keys)
            acks = await produce(self.bootstrap, self.topic, batch)
            self.sent += zip(batch, acks, strict=True)

    def partitions(self) -> list[list[tuple[int, Message]]]:
        """``(offset, message)`` of each partition, in offset order."""
        parts: dict[int, list[tuple[int, Message]]] = {}
        for message, (p, offset) in self.sent:
            parts.setdefault(p, []).append((offset, message))
        return [sorted(parts[p]) for p in sorted(parts)]


@dataclass(frozen=True)
class Published:
    """One forecast record as these tests look at it."""

    key: str
    origin: str
    version: str
    values: list[float]


def _published(records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[Published]:
    docs = [orjson.loads(r.value or b"") for r in records]
    return [Published(d["key"], d["ts"], d["model_version"], d["values"]) for d in docs]


def _once(forecasts: Sequence[Published]) -> dict[ForecastKey, Published]:
    """Forecasts by ``(key, origin)``; fails on a duplicate."""
    out: dict[ForecastKey, Published] = {}
    for f in forecasts:
        assert (f.key, f.origin) not in out, f"duplicate forecast {f.key} {f.origin}"
        out[(f.key, f.origin)] = f
    return out


def _switch_points(
    forecasts: dict[ForecastKey, Published],
    partitions: Sequence[Sequence[tuple[int, Message]]],
    new: str,
    interval_s: int,
) -> list[int]:
    """Per partition, the offset of the first tick whose forecast is of version ``new``;
    fails unless every forecast triggered before it is of another version and every one
    after it of ``new`` (a forecast is triggered by its key's next tick, one per
    interval)."""
    ticks: dict[str, list[tuple[float, int, int]]] = {}
    for p, messages in enumerate(partitions):
        for offset, (_, value) in messages:
            doc = orjson.loads(value or b"")
            start = _epoch_s(doc["ts"]) // interval_s * interval_s
            ticks.setdefault(doc["key"], []).append((start, p, offset))
    trigger = {}
    for key, seen in ticks.items():
        seen.sort()
        for (ts, _, _), (_, p, offset) in itertools.pairwise(seen):
            trigger[(key, ts)] = (p, offset)
    placed = [(*trigger[(f.key, _epoch_s(f.origin))], f.version) for f in forecasts.values()]
    split = []
    for p in range(len(partitions)):
        in_p = [(offset, version) for q, offset, version in placed if q == p]
        first = min(offset for offset, version in in_p if version == new)
        assert all((v != new) == (o < first) for o, v in in_p), f"partition {p}: {in_p}"
        split.append(first)
    return split


def _f32(values: Sequence[float] | npt.NDArray[np.float64]) -> list[float]:
    """Forecast values as the record carries them: the float32 each one is (schema 2
    writes the shortest digits that read back as the model's float32 output)."""
    return np.asarray(values, dtype=np.float32).tolist()  # type: ignore[no-any-return]


def _f32_each(forecasts: dict[ForecastKey, list[float]]) -> dict[ForecastKey, list[float]]:
    return {key: _f32(values) for key, values in forecasts.items()}


def _reference(
    model: Path,
    partitions: Sequence[Sequence[tuple[int, Message]]],
    *,
    then: Path,
    split: Sequence[int],
    via: str,
) -> dict[ForecastKey, list[float]]:
    """The offline pipeline over each partition's messages: ``model`` for those before
    offset ``split[p]``, then ``then``, reached by ``via``: ``swap`` (an in-process
    :meth:`Pipeline.swap_model`, as a hot-swap) or ``restore`` (a snapshot of every key,
    restored into a new pipeline of ``then``, as a restart)."""
    out: dict[ForecastKey, list[float]] = {}
    old, new = OnnxStepModel.load(model), OnnxStepModel.load(then)
    decoder = TickDecoder()
    for p, messages in enumerate(partitions):
        pipeline = Pipeline(old)
        halves = (
            [m for o, m in messages if o < split[p]],
            [m for o, m in messages if o >= split[p]],
        )
        for n, half in enumerate(halves):
            if n == 1 and via == "swap":
                pipeline.swap_model(new)
            elif n == 1:
                state = pipeline.store.snapshot(list(pipeline.store.rows))
                pipeline = Pipeline(new)
                pipeline.restore(state, time.time(), p)
            batch, _ = decoder.decode(half)
            fc = pipeline.process(batch, time.time()).forecasts
            origins = np.datetime_as_string(fc.origin_ts.astype("datetime64[s]"), unit="s")
            for i, key in enumerate(fc.keys):
                out[(key, str(origins[i]) + "Z")] = _f32(fc.values[i])
    return out


@dataclass
class Rig:
    """One test's models directory serving model ``a``, its topics, feed and service."""

    models: Path
    a: Path
    feed: Feed
    forecasts: str
    service: ServiceProcess


async def _rig(
    bootstrap: str, tmp_path: Path, name: str, keys: int, **settings: str | int | float
) -> Rig:
    """Publish model A (version 1) into a models directory and configure a service of
    it on a 2-partition ticks topic of its own (not started)."""
    models = tmp_path / "models"
    a = publish_model(_model(tmp_path, "a.onnx", seed=0, version="1"), models, "20261201T00Z")
    env = service_env(bootstrap, models, unique_topic(name), **settings)
    await create_topics(bootstrap, [env["STREAMCAST_TOPICS__TICKS"]], partitions=2)
    feed = Feed.to(bootstrap, env["STREAMCAST_TOPICS__TICKS"], keys)
    service = ServiceProcess(env, tmp_path / "service.log")
    return Rig(models, a, feed, env["STREAMCAST_TOPICS__FORECASTS"], service)


def _log_lines(text: str, needle: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if needle in line]


async def test_a_model_published_mid_stream_is_swapped_in_at_one_point_per_key(
    bootstrap: str, tmp_path: Path
) -> None:
    keys = 1000
    rig = await _rig(bootstrap, tmp_path, "hot-swap", keys, model_poll_s=0.5)
    models, a, feed, service = rig.models, rig.a, rig.feed, rig.service
    b = _model(tmp_path, "b.onnx", seed=1, version="2")
    try:
        service.start()
        await feed.send(0, 10)
        publish_model(b, models, "20261201T01Z")
        # ticks keep flowing until the swap is logged, and for a while after it. The wait
        # is bounded in time, not in intervals sent: the swap takes a poll, a load and a
        # self-test, which a loaded machine slows while the feed keeps its pace (50
        # intervals went by before the swap once, with both cores busy elsewhere)
        t, deadline = 10, time.monotonic() + 60
        while SWAPPED not in service.log_path.read_text():
            assert time.monotonic() < deadline, f"no swap within 60 s ({t - 10} intervals)"
            await feed.send(t, t + 1)
            t += 1
            await asyncio.sleep(0.1)
        await feed.send(t, t + 8)
        every = _f32_each(
            expected_forecasts(a, [[m for _, m in part] for part in feed.partitions()])
        )
        records = await consume(bootstrap, rig.forecasts, until=len(every), idle_s=1.5)
        swapped = service.metric("streamcast_model_swaps_total", result="swapped")
        serving = service.metric("streamcast_build_info", model_version="2")
        text = service.log_path.read_text()
    finally:
        service.kill()

    # no tick lost or duplicated: every forecast the ticks call for, once
    forecasts = _once(_published(records))
    assert forecasts.keys() == every.keys()
    # one switch per partition (so per key), never back: old before an offset, new after
    split = _switch_points(forecasts, feed.partitions(), "2", INTERVAL_S)
    by_key: dict[str, list[tuple[str, str]]] = {}
    for f in forecasts.values():
        by_key.setdefault(f.key, []).append((f.origin, f.version))
    for key, seen in by_key.items():
        versions = [v for _, v in sorted(seen)]
        assert versions[0] == "1" and versions[-1] == "2", key
        assert versions == sorted(versions), key  # one switch, never back
    # both sides are exactly what the offline pipeline computes for a swap at that point
    reference = _reference(a, feed.partitions(), then=b, split=split, via="swap")
    assert {k: _f32(f.values) for k, f in forecasts.items()} == reference
    (line,) = _log_lines(text, SWAPPED)
    assert (line["from_version"], line["to_version"]) == ("1", "2")
    assert line["keys_rebuilt"] == keys
    assert line["pause_s"] < 1.0, line
    assert swapped == 1 and serving == 1


async def test_bad_artifacts_are_refused_once_and_the_old_model_keeps_serving(
    bootstrap: str, tmp_path: Path
) -> None:
    keys, poll_s = 20, 0.5
    rig = await _rig(bootstrap, tmp_path, "hot-swap-refused", keys, model_poll_s=poll_s)
    models, a, feed, service = rig.models, rig.a, rig.feed, rig.service
    good = _model(tmp_path, "b.onnx", seed=1, version="2")
    bad: dict[str, Callable[[Path], object]] = {
        # half a file copied in place, not published atomically
        "truncated": lambda path: path.write_bytes(good.read_bytes()[: good.stat().st_size // 2]),
        # a window the keys' windows do not fit
        "incompatible": lambda path: publish_model(
            _model(tmp_path, "w.onnx", seed=1, version="3", window=WINDOW + 2),
            models,
            path.stem,
        ),
        # other weights under the sample of the good model
        "self-test": lambda path: publish_model(
            scale_weights(good, tmp_path / "s.onnx", 1.05), models, path.stem
        ),
    }
    try:
        service.start()
        await feed.send(0, 10)
        for n, drop in enumerate(bad.values(), start=1):
            drop(models / f"20261201T0{n}Z.onnx")
            service.wait_for_log(REFUSED, count=n, timeout_s=20)
            await feed.send(10 * n, 10 * n + 10)
        await asyncio.sleep(4 * poll_s)  # polls that must not refuse (or log) again
        refused = service.metric("streamcast_model_swaps_total", result="refused")
        swapped = service.metric("streamcast_model_swaps_total", result="swapped")
        text = service.log_path.read_text()

        # a replica that restarts meanwhile serves what the others serve: the truncated
        # and the self-test files are refused again, once (the incompatible one is
        # removed, as the refusal asks: it would serve and fail at state restore)
        assert service.stop() == 0
        (models / "20261201T02Z.onnx").unlink()
        service.start()
        await feed.send(40, 50)
        every = _f32_each(
            expected_forecasts(a, [[m for _, m in part] for part in feed.partitions()])
        )
        records = await consume(bootstrap, rig.forecasts, until=len(every), idle_s=1.0)
        refused_at_start = service.metric("streamcast_model_swaps_total", result="refused")
        serving = service.metric("streamcast_build_info", model_version="1")
        restarted = service.log_path.read_text()[len(text) :]
    finally:
        service.kill()

    lines = _log_lines(text, REFUSED)
    assert [line["path"] for line in lines] == [
        str(models / f"20261201T0{n}Z.onnx") for n in (1, 2, 3)
    ]
    assert "is not a loadable ONNX model" in lines[0]["msg"]
    assert f"window {WINDOW} -> {WINDOW + 2}" in lines[1]["msg"]
    assert "does not reproduce its self-test sample" in lines[2]["msg"]
    assert all(line["level"] == "error" for line in lines)
    assert all("the running model keeps serving" in line["msg"] for line in lines)
    assert refused == 3 and swapped == 0
    again = _log_lines(restarted, REFUSED)
    assert [line["path"] for line in again] == [
        str(models / f"20261201T0{n}Z.onnx") for n in (3, 1)
    ]
    assert all("an older one serves if it passes" in line["msg"] for line in again)
    assert refused_at_start == 2 and serving == 1
    # the old model served throughout, across the restart: its own forecasts, each once
    forecasts = _once(_published(records))
    assert {f.version for f in forecasts.values()} == {"1"}
    assert {k: _f32(f.values) for k, f in forecasts.items()} == every


async def test_a_restart_with_another_model_rebuilds_state_from_windows(
    bootstrap: str, tmp_path: Path
) -> None:
    keys, half = 50, 20
    rig = await _rig(bootstrap, tmp_path, "hot-swap-restart", keys, batch_max_records=200)
    models, a, feed, service, topic = rig.models, rig.a, rig.feed, rig.service, rig.forecasts
    c = _reweighted(a, tmp_path / "c.onnx", 1.05, version="2")
    try:
        service.start()
        await feed.send(0, half)
        before = _f32_each(
            expected_forecasts(a, [[m for _, m in part] for part in feed.partitions()])
        )
        await consume(bootstrap, topic, until=len(before), idle_s=0.5)
        assert service.stop() == 0
        split = [len(part) for part in feed.partitions()]  # offsets start at 0
        publish_model(c, models, "20261201T01Z")
        service.start()
        await feed.send(half, 2 * half)
        after = _reference(a, feed.partitions(), then=c, split=split, via="restore")
        records = await consume(bootstrap, topic, until=len(after), idle_s=1.0)
        text = service.log_path.read_text()
    finally:
        service.kill()

    rebuilt = _log_lines(text, "rebuilt from their windows")
    assert sum(line["keys"] for line in rebuilt) == keys
    assert {line["model"] for line in rebuilt} == {"2"}
    # the reference: a restore under the new model is a swap at the same point
    swapped = _reference(a, feed.partitions(), then=c, split=split, via="swap")
    assert after == swapped
    uninterrupted = _f32_each(
        expected_forecasts(a, [[m for _, m in part] for part in feed.partitions()])
    )
    forecasts = _once(_published(records))
    assert forecasts.keys() == after.keys()
    new = {k: _f32(f.values) for k, f in forecasts.items() if f.version == "2"}
    assert len(new) == len(after) - len(before)
    assert new == {k: v for k, v in after.items() if k not in before}
    assert all(uninterrupted[k] != v for k, v in new.items())  # nothing adopted
    assert {k: _f32(f.values) for k, f in forecasts.items() if f.version == "1"} == before


async def test_a_restart_after_a_swap_to_another_state_size_restores_every_key(
    bootstrap: str, tmp_path: Path
) -> None:
    """A swap may change the state size and horizon; the changelog then holds records of
    both layouts (keys that had no tick since the swap keep the old model's). A restart
    must use them all: the old model's rebuilt from their windows, as the swap did."""
    keys = 20
    quiet, busy = range(keys // 2, keys), range(keys // 2)
    rig = await _rig(bootstrap, tmp_path, "hot-swap-layout", keys, model_poll_s=0.5)
    models, a, feed, service, topic = rig.models, rig.a, rig.feed, rig.service, rig.forecasts
    b = _model(tmp_path, "b.onnx", seed=1, version="2", state_size=7, horizon=HORIZON + 1)
    try:
        service.start()
        await feed.send(0, 10)
        await feed.send(10, 14, busy)
        before = _f32_each(
            expected_forecasts(a, [[m for _, m in part] for part in feed.partitions()])
        )
        await consume(bootstrap, topic, until=len(before), idle_s=0.5)
        split = [len(part) for part in feed.partitions()]
        publish_model(b, models, "20261201T01Z")
        service.wait_for_log(SWAPPED, timeout_s=20)
        await feed.send(14, 18, busy)  # the busy keys' state is written in the new layout
        assert service.stop() == 0
        service.start()
        await feed.send(18, 24, busy)
        await feed.send(10, 16, quiet)  # the quiet keys' state is still the old model's
        expected = _reference(a, feed.partitions(), then=b, split=split, via="swap")
        records = await consume(bootstrap, topic, until=len(expected), idle_s=1.0)
        text = service.log_path.read_text()
    finally:
        service.kill()

    forecasts = _once(_published(records))
    assert {k: _f32(f.values) for k, f in forecasts.items()} == expected
    assert {f.key for f in forecasts.values() if f.version == "2"} == {
        f"meter-{k}" for k in range(keys)
    }
    rebuilt = _log_lines(text, "rebuilt from their windows")
    assert sum(line["keys"] for line in rebuilt) == len(quiet)


async def test_the_service_swaps_to_what_a_retrain_from_its_ticks_topic_publishes(
    bootstrap: str, tmp_path: Path
) -> None:
    """The retrain loop of the CronJob: the ticks the service consumes are exported with
    ``streamcast history export``, ``streamcast-train fit --publish-to`` publishes the
    model into the models directory the service serves, and the service swaps to it
    without a restart: the forecasts that follow are the new model's, as offline."""
    models = tmp_path / "models"
    # the seed model of the Deployment's initContainer: the layout the retrain gives
    seed = make_tiny_model(tmp_path / "seed.onnx", window=24, horizon=4, interval_s=3600,
                           calendar=("time_of_day",), self_test=4, version="seed")  # fmt: skip
    a = publish_model(seed, models, "00000000T000000Z-seed")
    prefix = unique_topic("hot-swap-retrain")
    env = service_env(bootstrap, models, prefix, model_poll_s=0.5)
    ticks_topic, topic = env["STREAMCAST_TOPICS__TICKS"], env["STREAMCAST_TOPICS__FORECASTS"]
    await create_topics(bootstrap, [ticks_topic], partitions=2)
    rows = tiny_data(tmp_path / "rows.csv", hours=24 * 14)
    csv_flags = [part for k, v in TINY_COLUMNS.items() for part in (f"--{k.replace('_', '-')}", v)]
    common = ("--bootstrap-servers", bootstrap, "--topic", ticks_topic)
    replayed = run_cli("replay", "--data", str(rows), *csv_flags, "--no-progress", *common,
                       cwd=tmp_path)  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr
    exported = run_cli("history", "export", "--out", "history.parquet", *common, cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    history = _partitions(await read_until_idle(bootstrap, ticks_topic, 1.0))
    served = expected_forecasts(a, [[m for _, m in part] for part in history])
    argv = ["fit", "--data", str(tmp_path / "history.parquet"), "--key-col", "key",
            "--time-col", "ts", "--value-col", "value", *FIT_FLAGS,
            "--out", str(tmp_path / "retrained"), "--publish-to", str(models)]  # fmt: skip
    service = ServiceProcess(env, tmp_path / "service.log")
    try:
        # the retrain job runs while the service consumes the stream it was trained on
        fit = asyncio.create_task(asyncio.to_thread(train_main, argv))
        await asyncio.to_thread(service.start)
        await consume(bootstrap, topic, until=len(served))
        assert await fit == 0
        report = json.loads((tmp_path / "retrained" / "report.json").read_text())
        version = report["model"]["version"]
        (b,) = set(models.glob("*.onnx")) - {a}
        assert b.name == f"{version}.onnx"
        await asyncio.to_thread(service.wait_for_log, SWAPPED, 1, 20.0)

        # the stream goes on: six more hours of every key
        await produce(bootstrap, ticks_topic, _hours_after(history, 6))
        every = _partitions(await read_until_idle(bootstrap, ticks_topic, 1.0))
        every_forecast = expected_forecasts(a, [[m for _, m in part] for part in every])
        records = await consume(bootstrap, topic, until=len(every_forecast), idle_s=1.0)
        serving = service.metric("streamcast_build_info", model_version=version)
        text = service.log_path.read_text()
    finally:
        service.kill()

    (line,) = _log_lines(text, SWAPPED)
    assert (line["from_version"], line["to_version"]) == ("seed", version)
    assert serving == 1
    # every forecast once; the swap at one point per partition, the offline pipeline's
    forecasts = _once(_published(records))
    assert forecasts.keys() == every_forecast.keys()
    split = _switch_points(forecasts, every, version, 3600)
    expected = _reference(a, every, then=b, split=split, via="swap")
    assert {k: _f32(f.values) for k, f in forecasts.items()} == expected
    # ... and what the stream brought after the swap is all the new model's
    new = {k for k, f in forecasts.items() if f.version == version}
    assert new >= every_forecast.keys() - served.keys()
    assert len(every_forecast) - len(served) == 3 * 6


def _partitions(records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[list[tuple[int, Message]]]:
    """``(offset, (key, value))`` of each partition of a topic's records, in offset order."""
    parts: dict[int, list[tuple[int, Message]]] = {}
    for r in records:
        parts.setdefault(r.partition, []).append((r.offset, (r.key, r.value)))
    return [sorted(parts[p]) for p in sorted(parts)]


def _hours_after(partitions: Sequence[Sequence[tuple[int, Message]]], hours: int) -> list[Message]:
    """``hours`` more hourly ticks of every key of ``partitions``, after its last one."""
    last: dict[str, float] = {}
    for messages in partitions:
        for _, (_, value) in messages:
            doc = orjson.loads(value or b"")
            last[doc["key"]] = _epoch_s(doc["ts"])
    return [
        (key.encode(), tick(key, ts + 3600 * h, 100.0 + 10 * h))
        for h in range(1, hours + 1)
        for key, ts in sorted(last.items())
    ]


def _epoch_s(ts: str | float) -> float:
    """A tick's timestamp (ISO-8601 UTC or epoch seconds) in epoch seconds."""
    if isinstance(ts, str):
        return float(np.datetime64(ts.rstrip("Z"), "s").astype(np.int64))
    return float(ts)
