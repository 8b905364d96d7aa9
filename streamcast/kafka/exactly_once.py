"""Exactly-once Kafka edge: one transactional producer per owned input partition.

Why one producer per partition: aiokafka 0.14 cannot pass the consumer's group metadata
(generation, member id) to ``send_offsets_to_transaction`` (KIP-447), so the broker
cannot reject a transactional offset commit from an instance that lost its partitions
(aiokafka issue #844). The classic scheme fences such zombies instead: the transactional
id of the producer that writes partition ``p``'s outputs, changelog and offsets is
``<prefix>-<group>-<ticks topic>-<p>``. Whoever takes ``p`` starts a producer with that id,
which bumps its epoch: the previous owner's open transaction is aborted (or, if it was
already committing, completed) before the new owner reads the committed offset and the
changelog, and any later write of the previous owner fails with ``ProducerFenced``.

A micro-batch is one transaction per input partition it touches: forecasts, dead
letters, changelog records and the consumed offset of that partition commit together.

Rebalances (eager, so every rebalance revokes everything first):

- **revoke** waits for the in-flight batch (a lock held for the whole batch), so no
  transaction is open when the partitions move and no offsets of revoked partitions are
  committed afterwards; records fetched before the rebalance are discarded (a generation
  counter), because positions are rewound to the committed offsets on assignment.
- **assign** starts a new producer for every assigned partition (fencing whoever wrote
  it before), then reads the committed offsets. It keeps the state of partitions whose
  committed offset is the one this instance committed last; for the others it drops
  their rows and reads their changelog partitions to the end into the store. Finally it
  seeks every partition to its committed offset.

Any error in a batch marks the sink dirty and :meth:`ExactlyOnceSink.deliver` raises
:class:`~streamcast.errors.BatchRolledBackError`; :meth:`ExactlyOnceSink.recover` then
closes every producer (their open transactions are aborted by the new producers'
fencing), drops all state, restores it from the changelog and seeks to the committed
offsets: the output is as if the failed batch never happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from streamcast.config import Settings
from streamcast.errors import (
    BatchRolledBackError,
    FencedError,
    ModelError,
    StreamcastError,
    TransientError,
)
from streamcast.kafka.at_least_once import partition_lag
from streamcast.kafka.changelog import make_restore_consumer, read_changelog
from streamcast.kafka.clients import RETRY_BACKOFF_MS, client_options, make_consumer, stop_client
from streamcast.kafka.errors import describe, map_kafka_errors
from streamcast.kafka.publish import PartitionPicker, publish_packed
from streamcast.kafka.sink import PartitionedState, SinkObserver
from streamcast.kafka.wire import Consumed, Offsets, Outputs, OutRecord

log = logging.getLogger(__name__)

#: bound on closing one producer (a dead broker must not stall a rewind)
CLOSE_TIMEOUT_S = 5.0


def transactional_id(settings: Settings, partition: int) -> str:
    """The transactional id of the producer that owns ``partition`` of the ticks topic."""
    s = settings
    return f"{s.transactional_id_prefix}-{s.group_id}-{s.topics.ticks}-{partition}"


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, sink: ExactlyOnceSink) -> None:
        self._sink = sink

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._sink._on_revoked()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._sink._on_assigned({tp.partition for tp in assigned})


class ExactlyOnceSink:
    """The exactly-once :class:`~streamcast.kafka.sink.Sink`; see the module docstring.

    ``state`` is the per-key state restored and dropped here as partitions move. The
    service holds :meth:`batch` for the whole of each batch.
    """

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
        self._clock = clock
        self._topic = settings.topics.ticks
        self._consumer: AIOKafkaConsumer | None = None
        self._restorer: AIOKafkaConsumer | None = None
        self._producers: dict[int, AIOKafkaProducer] = {}
        #: the offset this instance last committed (or found) per owned partition
        self._committed: dict[int, int | None] = {}
        self._owned: set[int] = set()
        self._lock = asyncio.Lock()
        self._generation = 0
        self._fetched_generation = -1
        self._dirty = False
        #: an error no retry heals (state of another model layout), raised by recover()
        self._fatal: StreamcastError | None = None
        self._closed = False
        self._pick = PartitionPicker(settings.max_keys)
        self._positions: dict[tuple[str, int], int] = {}

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect the consumer (subscribed with the rebalance listener) and the restorer."""
        if self._closed:
            raise RuntimeError("ExactlyOnceSink was closed; create a new one")
        consumer = make_consumer(self._settings, subscribe=False)
        consumer.subscribe([self._topic], listener=_Listener(self))
        restorer = make_restore_consumer(self._settings)
        try:
            with map_kafka_errors("connect"):
                await restorer.start()
                await consumer.start()
        except BaseException:
            await stop_client(consumer)
            await stop_client(restorer)
            raise
        self._consumer, self._restorer = consumer, restorer

    async def close(self) -> None:
        """Stop the producers and consumers (idempotent)."""
        self._closed = True
        await self._close_producers(set(self._producers))
        consumer, self._consumer = self._consumer, None
        restorer, self._restorer = self._restorer, None
        for client in (consumer, restorer):
            if client is not None:
                await stop_client(client)

    @property
    def consumer(self) -> AIOKafkaConsumer:
        """The started ticks consumer."""
        if self._consumer is None:
            raise RuntimeError("ExactlyOnceSink is not started")
        return self._consumer

    # -- the Sink protocol -----------------------------------------------------------------

    async def fetch(self, max_records: int, timeout_ms: int) -> Sequence[Consumed]:
        """Up to ``max_records`` records; :meth:`batch` tells whether they are current."""
        generation = self._generation
        with map_kafka_errors("fetch"):
            batches = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        self._fetched_generation = generation
        return [m for messages in batches.values() for m in messages]

    def assigned(self) -> bool:
        """True while the consumer owns at least one partition and its state is ready."""
        return bool(self._owned) and not self._dirty and self._consumer is not None

    def lag(self) -> dict[int, int]:
        """High watermark minus the next offset to read, per owned partition."""
        return partition_lag(self.consumer, self._positions)

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

    async def deliver(self, outputs: Outputs, offsets: Offsets) -> None:
        """One transaction per input partition: its outputs plus its next offset.

        Call within :meth:`batch`. Raises :class:`~streamcast.errors.FencedError` when
        another instance owns a partition now, and
        :class:`~streamcast.errors.BatchRolledBackError` for any other failure (the sink
        is then dirty: :meth:`recover` rewinds before the next batch).
        """
        next_offset = {p: o for (topic, p), o in offsets.items() if topic == self._topic}
        partitions = sorted(set(next_offset) | set(outputs))
        results = await asyncio.gather(
            *(self._transaction(p, outputs.get(p, ()), next_offset.get(p)) for p in partitions),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            self._dirty = True
            self._observer.transactions("failed", len(errors))
            fenced = [e for e in errors if isinstance(e, FencedError)]
            if fenced:
                raise fenced[0]
            raise BatchRolledBackError(
                f"transaction failed ({describe(errors[0])}); rewinding to the committed offsets"
            ) from errors[0]
        self._observer.transactions("committed", len(partitions))
        self._positions.update(offsets)

    async def _transaction(
        self, partition: int, records: Sequence[OutRecord], offset: int | None
    ) -> None:
        producer = self._producers.get(partition)
        if producer is None:
            raise TransientError(f"partition {partition} has no producer (not owned)")
        try:
            with map_kafka_errors(f"transaction of partition {partition}"):
                await producer.begin_transaction()
                await publish_packed(producer, records, self._pick)
                if offset is not None:
                    tp = TopicPartition(self._topic, partition)
                    await producer.send_offsets_to_transaction(
                        {tp: offset}, self._settings.group_id
                    )
                await producer.commit_transaction()
        except FencedError as exc:
            # the broker says the same for both causes: a newer producer with this
            # transactional id, or a transaction it aborted after transaction_timeout_ms
            raise FencedError(
                f"the producer of partition {partition} (transactional id "
                f"{transactional_id(self._settings, partition)}) was fenced: another "
                "instance took the partition over, or a transaction outlived the broker's "
                "transaction timeout (a long pause of this process); restart it and it "
                "continues from the committed state"
            ) from exc
        if offset is not None:
            self._committed[partition] = offset

    # -- rebalances and rewinds ------------------------------------------------------------

    async def rewind(self) -> None:
        """Forget every uncommitted effect: new producers, state from the changelog,
        positions at the committed offsets. Call within :meth:`batch`'s lock; raises a
        Kafka/OS error when the broker is still away (call again after a backoff)."""
        self._generation += 1
        self._dirty = True
        await self._close_producers(set(self._producers))
        self._committed.clear()
        owned = {tp.partition for tp in self.consumer.assignment()}
        await self._take(owned)
        self._generation += 1  # records fetched during the rewind predate its seeks
        self._dirty = False
        log.info("rewound to the committed offsets", extra={"partitions": sorted(owned)})

    async def _on_revoked(self) -> None:
        async with self._lock:  # the in-flight batch commits (or fails) first
            self._generation += 1

    async def _on_assigned(self, assigned: set[int]) -> None:
        if self._closed:
            return  # a rebalance that completes while the sink closes: nothing to take
        async with self._lock:
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
        """Own exactly ``assigned``: fence, restore what is not current, seek.

        Every assignment starts new producers for all its partitions, even those this
        instance kept: had it been expelled from the group meanwhile (a long pause), the
        partition's interim owner fenced the old producer, whose next commit would fail.
        State is kept only where the committed offset, read after fencing, is the one
        this instance committed last.
        """
        await self._close_producers(set(self._producers))
        lost_state = self._owned - assigned
        if lost_state:
            dropped = self._state.drop_partitions(lost_state)
            log.info(
                "partitions revoked", extra={"partitions": sorted(lost_state), "keys": dropped}
            )
        for p in lost_state:
            self._committed.pop(p, None)
        self._owned = set(assigned)
        producers = {p: self._new_producer(p) for p in sorted(assigned)}
        started = await asyncio.gather(
            *(producer.start() for producer in producers.values()), return_exceptions=True
        )
        failed = [r for r in started if isinstance(r, BaseException)]
        if failed:
            await asyncio.gather(*(_bounded_stop(producer) for producer in producers.values()))
            raise failed[0]
        self._producers = producers  # InitProducerId done: previous owners are fenced
        consumer = self.consumer
        committed: dict[int, int | None] = {}
        for p in sorted(assigned):
            committed[p] = await consumer.committed(TopicPartition(self._topic, p))
        stale = {p for p in assigned if self._committed.get(p, -1) != committed[p]}
        if stale:
            await self._restore(stale)
        log.info(
            "partitions assigned",
            extra={
                "committed": {str(p): committed[p] for p in sorted(assigned)},
                "restored": sorted(stale),
            },
        )
        self._committed.update(committed)
        await self._seek_committed()

    def _new_producer(self, partition: int) -> AIOKafkaProducer:
        s = self._settings
        return AIOKafkaProducer(
            transactional_id=transactional_id(s, partition),
            linger_ms=s.linger_ms,
            max_batch_size=s.producer_max_batch_bytes,
            max_request_size=max(s.producer_max_batch_bytes, 2 * 1024 * 1024),
            retry_backoff_ms=RETRY_BACKOFF_MS,
            **client_options(s),
        )

    async def _restore(self, partitions: set[int]) -> None:
        assert self._restorer is not None
        began = time.perf_counter()
        self._state.drop_partitions(partitions)
        topic = self._settings.topics.state_changelog
        read = await read_changelog(self._restorer, topic, sorted(partitions))
        now = self._clock()
        restored = 0
        for p, keys in read.items():
            try:
                restored += await asyncio.to_thread(self._state.restore, p, list(keys.items()), now)
            except ValueError as exc:
                raise ModelError(
                    f"state changelog '{topic}' partition {p} holds state this model cannot "
                    f"use ({exc}): a model with another window, inputs or state size needs "
                    "a new changelog topic (STREAMCAST_TOPICS__STATE_CHANGELOG) and group"
                ) from exc
        seconds = time.perf_counter() - began
        self._observer.restored(restored, seconds)
        log.info(
            "state restored",
            extra={
                "partitions": sorted(partitions),
                "keys": restored,
                "seconds": round(seconds, 3),
                "keys_per_s": round(restored / seconds) if seconds > 0 else None,
            },
        )

    async def _close_producers(self, partitions: set[int]) -> None:
        producers = [self._producers.pop(p) for p in sorted(partitions) if p in self._producers]
        await asyncio.gather(*(_bounded_stop(p) for p in producers))


async def _bounded_stop(producer: AIOKafkaProducer) -> None:
    try:
        await asyncio.wait_for(producer.stop(), timeout=CLOSE_TIMEOUT_S)
    except (TimeoutError, KafkaError, OSError) as exc:
        log.warning("producer did not close cleanly", extra={"error": repr(exc)})
