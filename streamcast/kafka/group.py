"""The consumer-group half both sinks share: fetching, rebalances, per-partition state,
rewinds, lag.

Rebalances are eager (aiokafka's assignors revoke everything first) and handled the same
way whatever the guarantee:

- **revoke** waits for the in-flight batch (a lock held for the whole batch), so no
  delivery is under way when the partitions move; records fetched before the rebalance
  are discarded (a generation counter), because positions are rewound to the committed
  offsets on assignment.
- **assign** first lets the guarantee fence the partitions (exactly-once starts a
  producer per partition, which fences their previous owner), then reads the committed
  offsets. It keeps the state of partitions whose committed offset is the one this
  instance committed last; the others' state is restored from the changelog
  (:class:`~streamcast.kafka.changelog.PartitionStates`), or dropped when state is not
  durable. Finally every partition is sought to its committed offset.

A failed assignment (aiokafka swallows errors raised in rebalance listeners) marks the
sink dirty: :meth:`GroupSink.recover` redoes it before the next batch, or raises the
error when no retry can heal it (state of another model, state lost). A subclass says
what fencing, delivery and resetting its output mean.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence, Set
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from streamcast.config import Settings
from streamcast.errors import StreamcastError
from streamcast.kafka.changelog import PartitionStates
from streamcast.kafka.clients import make_consumer, start_client, stop_client
from streamcast.kafka.errors import map_kafka_errors
from streamcast.kafka.sink import PartitionedState, SinkObserver
from streamcast.kafka.topics import check_outputs_exist
from streamcast.kafka.wire import Consumed, Offsets

log = logging.getLogger(__name__)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, sink: GroupSink) -> None:
        self._sink = sink

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._sink._on_revoked()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._sink._on_assigned({tp.partition for tp in assigned})


class GroupSink:
    """A member of the consumer group reading the ticks topic (see the module docstring);
    subclasses implement ``deliver`` and the output hooks."""

    def __init__(
        self,
        settings: Settings,
        state: PartitionedState,
        observer: SinkObserver,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._state = state
        self._observer = observer
        self._topic = settings.topics.ticks
        self._states = (
            PartitionStates(settings, state, observer, clock) if settings.durable_state else None
        )
        self._consumer: AIOKafkaConsumer | None = None
        #: the offset this instance last committed (or found) per owned partition
        self._committed: dict[int, int | None] = {}
        self._owned: set[int] = set()
        self._lock = asyncio.Lock()
        #: rebalance callbacks waiting for the batch hold (a run of batches yields to them)
        self._waiting = 0
        self._generation = 0
        self._fetched_generation = -1
        self._dirty = False
        #: an error no retry heals (state of another model, lost state), raised by recover()
        self._fatal: StreamcastError | None = None
        self._closed = False
        self._positions: dict[tuple[str, int], int] = {}
        #: after a failed delivery: raises if an output topic or the changelog is gone
        self._check_outputs: Callable[[Settings], Awaitable[None]] = check_outputs_exist
        self._init_output()

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Connect: the consumer (subscribed with the rebalance listener), the changelog
        reader and whatever the guarantee needs (:meth:`_start_output`)."""
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} was closed; create a new one")
        consumer = make_consumer(self._settings, subscribe=False)
        consumer.subscribe([self._topic], listener=_Listener(self))
        try:
            await self._start_output()
            if self._states is not None:
                await self._states.start()
            # set before start(): the group's first assignment may run the listener
            # before start() returns
            self._consumer = consumer
            await start_client(consumer, self._settings)
        except BaseException:
            self._consumer = None
            await stop_client(consumer)
            await self._close_output()
            if self._states is not None:
                await self._states.close()
            raise

    async def close(self) -> None:
        """Stop every client (idempotent)."""
        self._closed = True
        await self._close_output()
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await stop_client(consumer)
        if self._states is not None:
            await self._states.close()

    @property
    def consumer(self) -> AIOKafkaConsumer:
        """The started ticks consumer."""
        if self._consumer is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._consumer

    # -- what the service loop calls ---------------------------------------------------

    async def fetch(self, max_records: int, timeout_ms: int) -> Sequence[Consumed]:
        """Up to ``max_records`` records; :meth:`batch` tells whether they are current."""
        generation = self._generation
        with map_kafka_errors("fetch"):
            batches = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        self._fetched_generation = generation
        if len(batches) == 1:
            return next(iter(batches.values()))  # aiokafka's own records: no copy
        return [m for messages in batches.values() for m in messages]

    def assigned(self) -> bool:
        """True while the consumer owns at least one partition and its state is ready."""
        return bool(self._owned) and not self._dirty and self._consumer is not None

    def owned(self) -> set[int]:
        """The ticks partitions this member owns now."""
        return set(self._owned)

    async def probe(self) -> dict[int, int]:
        """Ask the broker now for every owned partition's end offset: records waiting per
        partition (the end minus the delivered position, or minus the committed offset
        before anything was delivered). Raises streamcast's error when the broker does
        not answer: how an outage becomes visible (aiokafka's fetcher retries silently)."""
        consumer = self.consumer
        tps = [TopicPartition(self._topic, p) for p in sorted(self._owned)]
        if not tps:
            return {}
        with map_kafka_errors("probe"):
            ends = await consumer.end_offsets(tps)
        out: dict[int, int] = {}
        for tp, end in ends.items():
            position = self._positions.get((tp.topic, tp.partition))
            if position is None:
                position = self._committed.get(tp.partition) or 0
            out[tp.partition] = max(0, int(end) - position)
        return out

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[bool]:
        """Hold off rebalances for a batch; yields False when the last fetch is stale (a
        rebalance or rewind came in between): its records are dropped and every owned
        partition is sought back to its committed offset, so they are read again."""
        async with self._lock:
            current = self._fetched_generation == self._generation and not self._dirty
            if not current and not self._dirty:
                # The stale fetch may have run after the rebalance's seeks and advanced
                # the positions past records nobody processed: back to the committed
                # offsets, which is exactly where the held state stands.
                await self._seek_committed()
            yield current

    def continues(self) -> bool:
        """Within :meth:`batch`: may the records of the next :meth:`fetch` be processed
        under the same hold? Not when a rebalance waits for it, a delivery or assignment
        failed, or the fetch is stale."""
        return (
            self._waiting == 0
            and not self._dirty
            and self._fatal is None
            and self._fetched_generation == self._generation
        )

    @property
    def needs_rewind(self) -> bool:
        """True after a failed batch or assignment, until a rewind succeeded.

        Raises the error of an assignment that cannot succeed (aiokafka swallows errors
        of rebalance listeners, so they are kept to be raised here).
        """
        if self._fatal is not None:
            raise self._fatal
        return self._dirty

    async def recover(self) -> None:
        """Rewind if a batch or an assignment failed (see :meth:`rewind`)."""
        if not self.needs_rewind:
            return
        async with self._lock:
            with map_kafka_errors("rewind"):
                await self.rewind()
        self._observer.rewound()

    async def rewind(self) -> None:
        """Forget every uncommitted effect: state of the owned partitions from the
        changelog (or warm-up), positions at the committed offsets, fresh output clients.
        Call within :meth:`batch`'s lock; raises when the broker is still away."""
        self._generation += 1
        self._dirty = True
        await self._close_output()
        self._committed.clear()
        owned = {tp.partition for tp in self.consumer.assignment()}
        await self._take(owned)
        self._generation += 1  # records fetched during the rewind predate its seeks
        self._dirty = False
        log.info("rewound to the committed offsets", extra={"partitions": sorted(owned)})

    # -- the guarantee's part ----------------------------------------------------------

    async def deliver(self, outputs: Any, offsets: Offsets) -> None:
        """Make a batch's outputs durable, then its offsets (the subclass's guarantee)."""
        raise NotImplementedError

    def _init_output(self) -> None:
        """Set up the output's own attributes (called at the end of ``__init__``)."""

    async def _start_output(self) -> None:
        """Start the output clients that live as long as the sink (none by default)."""

    async def _close_output(self) -> None:
        """Stop the output clients (idempotent; none by default)."""

    async def _fence(self, assigned: Set[int]) -> None:
        """Take ``assigned`` over before their committed offsets are read (none by
        default; exactly-once starts their transactional producers here)."""

    def _delivered(self, offsets: Offsets) -> None:
        """Record offsets committed by a delivery (positions for lag, owned commits)."""
        self._positions.update(offsets)
        for (topic, partition), offset in offsets.items():
            if topic == self._topic and partition in self._owned:
                self._committed[partition] = offset

    # -- rebalances --------------------------------------------------------------------

    async def _seek_committed(self) -> None:
        consumer = self.consumer
        for p in sorted(self._owned):
            tp = TopicPartition(self._topic, p)
            offset = self._committed.get(p)
            if offset is None and self._settings.auto_offset_reset == "latest":
                await consumer.seek_to_end(tp)
            elif offset is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, offset)

    @contextlib.asynccontextmanager
    async def _rebalance_hold(self) -> AsyncIterator[None]:
        """The batch hold, for a rebalance callback: counted while it waits, so a run of
        batches under the hold ends (:meth:`continues`) and lets it in."""
        self._waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self._lock.release()

    async def _on_revoked(self) -> None:
        async with self._rebalance_hold():  # the in-flight batch delivers (or fails) first
            self._generation += 1

    async def _on_assigned(self, assigned: set[int]) -> None:
        if self._closed:
            return  # a rebalance that completes while the sink closes: nothing to take
        async with self._rebalance_hold():
            try:
                with map_kafka_errors("assignment"):
                    await self._take(assigned)
            except StreamcastError as exc:
                # aiokafka swallows listener errors: remember to rewind (or to fail)
                self._dirty = True
                if exc.retriable:
                    log.warning("assignment not ready; will rewind", extra={"error": str(exc)})
                else:
                    self._fatal = exc
            finally:
                # after the seeks: a fetch that ran while we restored read from positions
                # aiokafka chose before ours, so its records must not count
                self._generation += 1

    async def _take(self, assigned: set[int]) -> None:
        """Own exactly ``assigned``: fence, restore (or drop) what is not current, seek."""
        lost = self._owned - assigned
        if lost:
            dropped = self._drop(lost)
            log.info("partitions revoked", extra={"partitions": sorted(lost), "keys": dropped})
        for p in lost:
            self._committed.pop(p, None)
            self._positions.pop((self._topic, p), None)
        self._owned = set(assigned)
        await self._fence(assigned)
        consumer = self.consumer
        committed: dict[int, int | None] = {}
        for p in sorted(assigned):
            committed[p] = await consumer.committed(TopicPartition(self._topic, p))
        stale = {p for p in assigned if self._committed.get(p, -1) != committed[p]}
        if stale and self._states is not None:
            await self._states.restore(stale, committed)
        elif stale:
            self._drop(stale)  # memory-only state of a partition that was elsewhere
        log.info(
            "partitions assigned",
            extra={
                "committed": {str(p): committed[p] for p in sorted(assigned)},
                "restored": sorted(stale) if self._states is not None else [],
            },
        )
        self._committed.update(committed)
        await self._seek_committed()

    def _drop(self, partitions: Set[int]) -> int:
        if self._states is not None:
            return self._states.drop(partitions)
        return self._state.drop_partitions(partitions)
