"""The at-least-once :class:`~streamcast.kafka.sink.Sink`: one consumer in the group and
one idempotent producer.

Contract: :meth:`AtLeastOnceSink.deliver` produces every output record, returns only once
each is acknowledged by all in-sync replicas (``acks="all"``, idempotent producer), and
only then commits the batch's offsets, so a crash can repeat output but never lose it. A
failure raises :class:`~streamcast.errors.TransientError` and nothing is committed;
calling ``deliver`` again with the same outputs retries what is left (a batch already
produced is not produced twice by this instance, only its commit is retried).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError

from streamcast.config import Settings
from streamcast.kafka.clients import make_consumer, make_producer, stop_client
from streamcast.kafka.errors import describe, map_kafka_errors
from streamcast.kafka.publish import PartitionPicker, publish_packed
from streamcast.kafka.wire import Consumed, Offsets, Outputs

log = logging.getLogger(__name__)


class AtLeastOnceSink:
    """Produce, await every acknowledgement, then commit (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._closed = False
        self._pick = PartitionPicker(settings.max_keys)
        #: the outputs whose records are all acknowledged but whose offsets are not
        #: committed yet (a retried delivery only commits)
        self._produced: Outputs | None = None
        self._positions: dict[tuple[str, int], int] = {}

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect both clients; a :class:`~streamcast.errors.TransientError` when the
        broker is away."""
        if self._closed:
            raise RuntimeError("AtLeastOnceSink was closed; create a new one")
        producer = make_producer(self._settings)
        consumer = make_consumer(self._settings)
        try:
            with map_kafka_errors("connect"):
                await producer.start()
                await consumer.start()
        except BaseException:
            await stop_client(producer)
            await stop_client(consumer)
            raise
        self._producer, self._consumer = producer, consumer

    async def close(self) -> None:
        """Flush and stop both clients (idempotent)."""
        self._closed = True
        producer, self._producer = self._producer, None
        consumer, self._consumer = self._consumer, None
        if producer is not None:
            await stop_client(producer)
        if consumer is not None:
            await stop_client(consumer)

    @property
    def consumer(self) -> AIOKafkaConsumer:
        """The started consumer."""
        if self._consumer is None:
            raise RuntimeError("AtLeastOnceSink is not started")
        return self._consumer

    @property
    def producer(self) -> AIOKafkaProducer:
        """The started producer."""
        if self._producer is None:
            raise RuntimeError("AtLeastOnceSink is not started")
        return self._producer

    async def fetch(self, max_records: int, timeout_ms: int) -> Sequence[Consumed]:
        """Up to ``max_records`` records from the assigned partitions (aiokafka's own
        record objects: copying 10^4 of them per batch is measurable)."""
        with map_kafka_errors("fetch"):
            batches = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        if len(batches) == 1:
            return next(iter(batches.values()))
        return [m for messages in batches.values() for m in messages]

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[bool]:
        """Every fetch is current: a record read across a rebalance is at worst repeated."""
        yield True

    async def recover(self) -> None:
        """Nothing to recover: state is in memory and deliveries are retried as they are."""

    async def deliver(self, outputs: Outputs, offsets: Offsets) -> None:
        """Produce every record of ``outputs`` (awaiting every acknowledgement), then commit
        ``offsets`` for the partitions this consumer still owns."""
        if outputs is not self._produced:
            with map_kafka_errors("produce"):
                await publish_packed(
                    self.producer, [r for part in outputs.values() for r in part], self._pick
                )
            self._produced = outputs
        await self._commit(offsets)
        self._produced = None
        self._positions.update(offsets)

    async def _commit(self, offsets: Offsets) -> None:
        owned = self.consumer.assignment()
        todo = {
            TopicPartition(topic, partition): offset
            for (topic, partition), offset in offsets.items()
            if TopicPartition(topic, partition) in owned
        }
        if not todo:
            return
        with map_kafka_errors("commit"):
            try:
                await self.consumer.commit(todo)
            except CommitFailedError as exc:
                # A rebalance took the partitions away: their new owner re-reads from the
                # last commit, which repeats output (at-least-once) but loses nothing.
                log.warning("commit rejected after a rebalance", extra={"error": describe(exc)})

    def assigned(self) -> bool:
        """True while the consumer owns at least one partition."""
        return self._consumer is not None and bool(self._consumer.assignment())

    def lag(self) -> dict[int, int]:
        """High watermark minus the next offset to read, per owned partition."""
        return partition_lag(self.consumer, self._positions)


def partition_lag(consumer: AIOKafkaConsumer, positions: Offsets) -> dict[int, int]:
    """High watermark minus the delivered position, per partition the consumer owns."""
    out: dict[int, int] = {}
    for tp in consumer.assignment():
        high = consumer.highwater(tp)
        position = positions.get((tp.topic, tp.partition))
        if high is None or position is None:
            continue  # nothing consumed from it yet: unknown, not zero
        out[tp.partition] = max(0, high - position)
    return out
