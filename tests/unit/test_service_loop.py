"""The service loop with an in-memory sink and processor: ordering, retries, drain,
readiness."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import weakref
from collections.abc import AsyncIterator, Callable, Sequence, Set

import numpy as np
import pytest

from streamcast.config import Settings, load_settings
from streamcast.core.model import StepModel
from streamcast.core.records import Rejection
from streamcast.errors import BatchRolledBackError, RejectReason, TransientError
from streamcast.kafka.wire import Consumed, InRecord, Offsets, Outputs, OutRecord
from streamcast.service.app import Service, freeze_startup_objects
from streamcast.service.processor import BatchResult, OutputTopics, dead_letter, next_offsets
from streamcast.service.watch import BrokerWatch


class FakeSink:
    """An at-least-once sink in memory; every operation appended to a shared journal."""

    def __init__(self, records: list[InRecord], publish_failures: int = 0) -> None:
        self.pending = list(records)
        self.journal: list[tuple[str, object]] = []
        self.published: list[OutRecord] = []
        self.committed: dict[tuple[str, int], int] = {}
        self.publish_failures = publish_failures
        self.started = False
        self.closed = False

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True

    async def fetch(self, max_records: int, timeout_ms: int) -> list[InRecord]:
        batch, self.pending = self.pending[:max_records], self.pending[max_records:]
        if not batch:
            await asyncio.sleep(timeout_ms / 1000)
        return batch

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[bool]:
        yield True

    def continues(self) -> bool:
        return True

    async def recover(self) -> None:
        self.journal.append(("recover", None))

    async def deliver(self, outputs: Outputs, offsets: Offsets) -> None:
        records = [r for part in outputs.values() for r in part]
        await self.publish(records)
        self.committed.update(offsets)
        self.journal.append(("commit", dict(offsets)))

    async def publish(self, records: Sequence[OutRecord]) -> None:
        if self.publish_failures:
            self.publish_failures -= 1
            self.journal.append(("publish-failed", len(records)))
            raise TransientError("produce: broker away")
        self.published += records
        self.journal.append(("publish", len(records)))

    def assigned(self) -> bool:
        return self.started and not self.closed

    async def probe(self) -> dict[int, int]:
        return {0: 0}


class EchoProcessor:
    """A forecast per record whose value is a number; others are rejected as not_json."""

    model_name = "echo"
    model_version = "1"
    topics = OutputTopics("forecasts", "ticks.dead-letter")

    def process(self, records: Sequence[Consumed], now_s: float) -> BatchResult:
        good = [i for i, r in enumerate(records) if (r.value or b"").isdigit()]
        bad = [i for i in range(len(records)) if i not in good]
        outputs: dict[int, list[OutRecord]] = {}
        for i in good:
            r = records[i]
            outputs.setdefault(r.partition, []).append(OutRecord("forecasts", r.key, r.value))
        rejections = [Rejection(i, RejectReason.NOT_JSON, "not a number") for i in bad]
        for rejection in rejections:
            src = records[rejection.index]
            outputs.setdefault(src.partition, []).append(dead_letter(self.topics, src, rejection))
        return BatchResult(
            outputs=outputs,
            offsets=next_offsets(records),
            forecasts=len(good),
            rejections=rejections,
            trigger_timestamps_ms=np.asarray([records[i].timestamp for i in good], dtype=np.int64),
        )

    def restore(self, partition: int, records: Sequence[tuple[str, bytes]], now_s: float) -> int:
        return 0

    def drop_partitions(self, partitions: Set[int]) -> int:
        return 0

    def swap_problem(self, model: StepModel) -> str | None:
        return None

    def swap_model(self, model: StepModel) -> int:
        self.model_version = model.meta.version
        return 0


def _records(n: int, bad_every: int = 0) -> list[InRecord]:
    out = []
    for i in range(n):
        value = b"oops" if bad_every and i % bad_every == 0 else str(1_700_000_000 + i).encode()
        out.append(InRecord("ticks", i % 2, i // 2, 1_700_000_000_000, b"k%d" % (i % 3), value))
    return out


def _settings(**extra: object) -> Settings:
    base: dict[str, object] = {
        "http_port": 0,
        "http_host": "127.0.0.1",
        "batch_max_records": 4,
        "batch_max_wait_ms": 5,
        "retry_max_backoff_s": 0.02,
        "drain_timeout_s": 2.0,
    }
    base.update(extra)
    return load_settings(base, env_file=None)


async def _no_topics(settings: Settings) -> int:
    return 1


async def _poll(condition: Callable[[], bool]) -> None:
    """Wait (bounded) until ``condition`` holds; the surrounding asyncio.timeout fails it."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)


async def _run_until(service: Service, done: Callable[[], bool]) -> None:
    async def stopper() -> None:
        await _poll(done)
        service.request_stop()

    async with asyncio.timeout(5), asyncio.TaskGroup() as tasks:
        tasks.create_task(service.run())
        tasks.create_task(stopper())


async def test_every_batch_is_published_before_its_offsets_are_committed() -> None:
    broker = FakeSink(_records(10, bad_every=4))
    service = Service(
        _settings(),
        sink_factory=lambda p: broker,
        topic_check=_no_topics,
        processor=EchoProcessor(),
    )
    await _run_until(service, lambda: not broker.pending and service.batches == 3)
    kinds = [kind for kind, _ in broker.journal if kind != "recover"]
    assert kinds == ["publish", "commit"] * 3
    assert broker.committed == {("ticks", 0): 5, ("ticks", 1): 5}
    dead = [r for r in broker.published if r.topic == "ticks.dead-letter"]
    forecasts = [r for r in broker.published if r.topic == "forecasts"]
    assert len(dead) == 3  # records 0, 4, 8
    assert len(forecasts) == 7
    assert all(r.value == b"oops" for r in dead)
    assert dict(dead[0].headers)["streamcast.reason"] == b"not_json"
    assert dict(dead[0].headers)["streamcast.source.offset"] == b"0"
    assert broker.closed
    exposition = service.metrics.exposition().decode()
    assert 'streamcast_ticks_total{result="accepted"} 7.0' in exposition
    assert 'streamcast_dead_letters_total{reason="not_json"} 3.0' in exposition
    assert "streamcast_forecasts_total 7.0" in exposition


async def test_failed_publish_is_retried_and_nothing_is_committed_before_it_succeeds() -> None:
    broker = FakeSink(_records(3), publish_failures=2)
    service = Service(
        _settings(),
        sink_factory=lambda p: broker,
        topic_check=_no_topics,
        processor=EchoProcessor(),
    )
    await _run_until(service, lambda: service.batches == 1)
    kinds = [kind for kind, _ in broker.journal if kind != "recover"]
    assert kinds == ["publish-failed", "publish-failed", "publish", "commit"]
    errors = service.metrics.broker_errors.labels(op="deliver")._value.get()
    assert errors == 2


async def test_broker_unavailable_at_start_is_retried_with_backoff() -> None:
    attempts: list[float] = []

    async def flaky_topics(settings: Settings) -> int:
        attempts.append(asyncio.get_running_loop().time())
        if len(attempts) < 3:
            raise TransientError("topic check: no broker")
        return 1

    broker = FakeSink(_records(2))
    service = Service(
        _settings(),
        sink_factory=lambda p: broker,
        topic_check=flaky_topics,
        processor=EchoProcessor(),
    )
    await _run_until(service, lambda: service.batches == 1)
    assert len(attempts) == 3
    assert attempts[2] - attempts[1] > 0  # it waited between attempts: no spinning
    assert broker.committed == {("ticks", 0): 1, ("ticks", 1): 1}


async def test_stop_before_the_broker_comes_up_returns_promptly() -> None:
    async def never(settings: Settings) -> int:
        raise TransientError("topic check: no broker")

    service = Service(
        _settings(),
        sink_factory=lambda p: FakeSink([]),
        topic_check=never,
        processor=EchoProcessor(),
    )
    async with asyncio.timeout(3), asyncio.TaskGroup() as tasks:
        tasks.create_task(service.run())
        await asyncio.sleep(0.1)
        service.request_stop()
    assert service.batches == 0


async def test_readiness_reflects_assignment_and_stop() -> None:
    broker = FakeSink([])
    service = Service(
        _settings(),
        sink_factory=lambda p: broker,
        topic_check=_no_topics,
        processor=EchoProcessor(),
    )
    states: list[tuple[bool, str]] = []

    async def probe() -> None:
        await _poll(lambda: broker.started)
        await asyncio.sleep(0.05)
        states.append(service.readiness())
        service.request_stop()
        states.append(service.readiness())

    async with asyncio.timeout(5), asyncio.TaskGroup() as tasks:
        tasks.create_task(service.run())
        tasks.create_task(probe())
    assert states[0] == (True, "ready")
    assert states[1][0] is False
    assert service.readiness() == (False, "no partitions assigned")


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
async def test_http_endpoints_answer(path: str) -> None:
    broker = FakeSink([])
    service = Service(
        _settings(),
        sink_factory=lambda p: broker,
        topic_check=_no_topics,
        processor=EchoProcessor(),
    )
    answers: list[bytes] = []

    async def ask() -> None:
        await _poll(lambda: service.http_port is not None and broker.started)
        await asyncio.sleep(0.05)
        assert service.http_port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", service.http_port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        answers.append(await reader.read())
        writer.close()
        service.request_stop()

    async with asyncio.timeout(5), asyncio.TaskGroup() as tasks:
        tasks.create_task(service.run())
        tasks.create_task(ask())
    assert answers[0].startswith(b"HTTP/1.1 200")
    if path == "/metrics":
        assert b"streamcast_build_info" in answers[0]


def test_first_signal_drains_second_exits_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    exits: list[int] = []
    monkeypatch.setattr("streamcast.service.app.os._exit", exits.append)
    service = Service(_settings(), processor=EchoProcessor())
    service.handle_signal(signal.SIGTERM)
    assert service.stopping
    assert exits == []
    service.handle_signal(signal.SIGINT)
    assert exits == [130]


async def test_a_service_runs_once() -> None:
    broker = FakeSink(_records(1))
    service = Service(
        _settings(),
        sink_factory=lambda p: broker,
        topic_check=_no_topics,
        processor=EchoProcessor(),
    )
    await _run_until(service, lambda: service.batches == 1)
    with pytest.raises(RuntimeError, match="runs once"):
        await service.run()


async def test_drain_is_bounded_and_commits_nothing_unpublished() -> None:
    class StuckSink(FakeSink):
        async def publish(self, records: Sequence[OutRecord]) -> None:
            self.journal.append(("publish-started", len(records)))
            await asyncio.Event().wait()  # a broker that never acknowledges

    broker = StuckSink(_records(3))
    service = Service(
        _settings(drain_timeout_s=0.3),
        sink_factory=lambda p: broker,
        topic_check=_no_topics,
        processor=EchoProcessor(),
    )
    await _run_until(service, lambda: ("publish-started", 3) in broker.journal)
    assert [j for j in broker.journal if j[0] != "recover"] == [("publish-started", 3)]
    assert broker.committed == {}, "nothing committed that was not acknowledged"
    assert broker.closed


async def test_progress_is_logged_periodically(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("streamcast.service.app.PROGRESS_LOG_S", 0.05)
    broker = FakeSink(_records(8, bad_every=4))
    service = Service(
        _settings(),
        sink_factory=lambda p: broker,
        topic_check=_no_topics,
        processor=EchoProcessor(),
    )
    with caplog.at_level(logging.INFO, logger="streamcast.service"):
        await _run_until(
            service,
            lambda: service.consumed == 8 and any(r.msg == "progress" for r in caplog.records),
        )
    lines = [r for r in caplog.records if r.msg == "progress"]
    assert sum(r.__dict__["ticks"] for r in lines) <= 8
    stopped = next(r for r in caplog.records if r.msg == "stopped")
    assert stopped.__dict__["forecasts"] == 6
    assert stopped.__dict__["dead_letters"] == 2


async def test_not_ready_names_the_silent_broker_even_when_the_loop_stalled_first() -> None:
    """With the broker gone the main loop stalls as well; the reason must name the cause
    whichever of the two crossed ``ready_stale_s`` first (a race seen under load)."""
    now = [1_000.0]
    service = Service(
        _settings(ready_stale_s=3),
        sink_factory=lambda p: FakeSink([]),
        topic_check=_no_topics,
        processor=EchoProcessor(),
        clock=lambda: now[0],
    )
    broker = FakeSink([])
    broker.started = True
    service._sink = broker
    service._last_tick = now[0]
    service._watch = BrokerWatch(service.metrics, 3, clock=lambda: now[0])
    assert service.readiness() == (True, "ready")
    now[0] += 3.5  # both the loop and the broker have been silent past ready_stale_s
    ready, why = service.readiness()
    assert not ready
    assert why == "broker has not answered for 4s; main loop stalled for 4s"


class SlowDeliverySink(FakeSink):
    """Deliveries that take a while (acknowledgements in flight), journalled."""

    def __init__(self, records: list[InRecord], fail_first: bool = False) -> None:
        super().__init__(records)
        self.fail_first = fail_first

    async def deliver(self, outputs: Outputs, offsets: Offsets) -> None:
        self.journal.append(("deliver-start", dict(offsets)))
        await asyncio.sleep(0.05)
        if self.fail_first:
            self.fail_first = False
            self.journal.append(("rolled-back", dict(offsets)))
            raise BatchRolledBackError("transaction failed; rewinding")
        await super().deliver(outputs, offsets)


class JournalledProcessor(EchoProcessor):
    def __init__(self, journal: list[tuple[str, object]]) -> None:
        self.journal = journal

    def process(self, records: Sequence[Consumed], now_s: float) -> BatchResult:
        self.journal.append(("process", next_offsets(records)))
        return super().process(records, now_s)


async def test_the_next_batch_is_processed_while_the_last_is_delivered_in_order() -> None:
    broker = SlowDeliverySink(_records(12))
    service = Service(
        _settings(),
        sink_factory=lambda p: broker,
        topic_check=_no_topics,
        processor=JournalledProcessor(broker.journal),
    )
    await _run_until(service, lambda: service.batches == 3)
    kinds = [kind for kind, _ in broker.journal if kind != "recover"]
    # batch 2 is processed before batch 1's delivery has committed (it is under way)
    assert kinds.index("process", 1) < kinds.index("commit")
    # each delivery starts only after the previous one committed, in fetch order
    deliveries = [kind for kind in kinds if kind != "process"]
    assert deliveries == ["deliver-start", "publish", "commit"] * 3
    commits = [offsets for kind, offsets in broker.journal if kind == "commit"]
    assert commits == [
        {("ticks", 0): 2, ("ticks", 1): 2},
        {("ticks", 0): 4, ("ticks", 1): 4},
        {("ticks", 0): 6, ("ticks", 1): 6},
    ]


async def test_a_batch_processed_behind_a_rolled_back_delivery_is_never_sent() -> None:
    broker = SlowDeliverySink(_records(8), fail_first=True)
    service = Service(
        _settings(),
        sink_factory=lambda p: broker,
        topic_check=_no_topics,
        processor=JournalledProcessor(broker.journal),
    )
    await _run_until(service, lambda: ("rolled-back", {("ticks", 0): 2, ("ticks", 1): 2})
                     in broker.journal and not broker.pending)  # fmt: skip
    kinds = [kind for kind, _ in broker.journal if kind != "recover"]
    # the second batch was processed while the first was being delivered
    assert kinds.count("process") == 2
    assert kinds.index("process", 1) < kinds.index("rolled-back")
    assert not broker.published  # the second batch's outputs were dropped with the first's
    assert not broker.committed


class LateArrivalSink(SlowDeliverySink):
    """Ticks that land while the first delivery's acknowledgements are in flight: a fetch
    waits for them as a consumer's long poll does (woken by their arrival)."""

    def __init__(self, now: list[InRecord], later: list[InRecord], delivery_s: float) -> None:
        super().__init__(now)
        self.later = later
        self.delivery_s = delivery_s
        self.arrived = asyncio.Event()

    async def fetch(self, max_records: int, timeout_ms: int) -> list[InRecord]:
        try:
            if not self.pending:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.arrived.wait(), timeout_ms / 1000)
        except asyncio.CancelledError:
            self.journal.append(("fetch-cancelled", None))
            raise
        self.journal.append(("fetch", len(self.pending[:max_records])))
        batch, self.pending = self.pending[:max_records], self.pending[max_records:]
        if not self.pending:
            self.arrived.clear()
        return batch

    async def deliver(self, outputs: Outputs, offsets: Offsets) -> None:
        self.journal.append(("deliver-start", dict(offsets)))
        if self.later:
            asyncio.get_running_loop().call_later(0.02, self._land)
        await asyncio.sleep(self.delivery_s)
        await FakeSink.deliver(self, outputs, offsets)

    def _land(self) -> None:
        self.pending += self.later
        self.later = []
        self.arrived.set()


def _journalled(broker: LateArrivalSink, **settings: object) -> Service:
    """A service over ``broker`` whose processing is journalled beside its deliveries."""
    return Service(
        _settings(**settings),
        sink_factory=lambda p: broker,
        topic_check=_no_topics,
        processor=JournalledProcessor(broker.journal),
    )


async def test_a_burst_that_lands_mid_delivery_is_processed_beside_it_not_after() -> None:
    """The first burst's delivery takes 0.3 s (a slow acknowledgement); the second lands
    20 ms into it, while the run's short fetches wait for records: the second is
    processed while the first is still being delivered, then delivered after it."""
    records = _records(8)
    broker = LateArrivalSink(records[:4], records[4:], delivery_s=0.3)
    service = _journalled(broker, batch_max_wait_ms=100)
    await _run_until(service, lambda: service.batches == 2)
    kinds = [kind for kind, _ in broker.journal if kind not in ("recover", "fetch")]
    assert kinds == ["process", "deliver-start", "process", "publish", "commit",
                     "deliver-start", "publish", "commit"]  # fmt: skip
    commits = [offsets for kind, offsets in broker.journal if kind == "commit"]
    assert commits == [{("ticks", 0): 2, ("ticks", 1): 2}, {("ticks", 0): 4, ("ticks", 1): 4}]


async def test_the_wait_during_a_delivery_never_cancels_a_fetch() -> None:
    """Nothing lands during the deliveries: the run's short fetches end on their own
    when a delivery is done (a ``getmany`` cancelled mid-wait would leave aiokafka's
    fetch count raised and its ``max_poll_interval_ms`` check off for good), and the
    records that come later are fetched, processed and committed by the loop."""
    records = _records(8)
    broker = LateArrivalSink(records[:4], [], delivery_s=0.05)
    service = _journalled(broker, batch_max_wait_ms=1000)

    async def later() -> None:
        await _poll(lambda: service.batches == 1)
        broker.pending += records[4:]
        broker.arrived.set()

    async with asyncio.timeout(5), asyncio.TaskGroup() as tasks:
        tasks.create_task(later())
        await _run_until(service, lambda: service.batches == 2)
    # (the stop may cancel the loop's own fetch, after the last commit)
    last = broker.journal.index(("commit", {("ticks", 0): 4, ("ticks", 1): 4}))
    assert ("fetch-cancelled", None) not in broker.journal[:last]
    sent = sorted(r.value or b"" for r in broker.published)
    assert sent == sorted(r.value or b"" for r in records)
    assert broker.committed == {("ticks", 0): 4, ("ticks", 1): 4}


async def test_without_a_wait_a_run_fetches_once_per_delivery() -> None:
    """``batch_max_wait_ms = 0``: the run takes what the consumer holds, once per
    delivery, instead of spinning on empty fetches until the delivery is done."""
    broker = LateArrivalSink(_records(4), [], delivery_s=0.2)
    service = _journalled(broker, batch_max_wait_ms=0)
    await _run_until(service, lambda: service.batches == 1)
    start = broker.journal.index(("deliver-start", {("ticks", 0): 2, ("ticks", 1): 2}))
    end = broker.journal.index(("commit", {("ticks", 0): 2, ("ticks", 1): 2}))
    assert [k for k, _ in broker.journal[start:end]].count("fetch") == 1


def test_a_started_service_moves_its_startup_objects_out_of_the_collectors_reach() -> None:
    """``serve`` freezes what is alive once connected (modules, model, clients: ~100,000
    tracked objects whose every full collection cost ~70 ms of a stalled loop): they are
    no longer what a collection walks, and new garbage is still collected."""
    gc.unfreeze()
    try:
        tracked = len(gc.get_objects())
        freeze_startup_objects()
        assert gc.get_freeze_count() >= tracked // 2
        assert len(gc.get_objects()) < tracked // 10

        class Node:
            ref: object = None

        cycle = Node()
        cycle.ref = cycle
        gone = weakref.ref(cycle)
        del cycle
        gc.collect()
        assert gone() is None, "a cycle made after the freeze is still collected"
    finally:
        gc.unfreeze()
