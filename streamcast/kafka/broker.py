"""The at-least-once :class:`~streamcast.kafka.wire.Broker`: one consumer in the group and
one idempotent producer.

Contract: ``publish`` returns only once every record is acknowledged by all in-sync
replicas (``acks="all"``, idempotent producer); the service calls ``commit`` only after
that, so a crash can repeat output but never lose it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streamcast.config import Settings
from streamcast.kafka.clients import make_consumer, make_producer, stop_client
from streamcast.kafka.publish import PartitionPicker, publish_packed
from streamcast.kafka.wire import Consumed, OutRecord


class KafkaBroker:
    """The real :class:`Broker`: one consumer in the group and one idempotent producer."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._closed = False
        self._pick = PartitionPicker(settings.max_keys)

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
        """Connect both clients; raises aiokafka's connection errors when the broker is down."""
        if self._closed:
            raise RuntimeError("KafkaBroker was closed; create a new one")
        producer = make_producer(self._settings)
        consumer = make_consumer(self._settings)
        try:
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
            raise RuntimeError("KafkaBroker is not started")
        return self._consumer

    @property
    def producer(self) -> AIOKafkaProducer:
        """The started producer."""
        if self._producer is None:
            raise RuntimeError("KafkaBroker is not started")
        return self._producer

    async def fetch(self, max_records: int, timeout_ms: int) -> Sequence[Consumed]:
        """Up to ``max_records`` records from the assigned partitions (aiokafka's own
        record objects: copying 10^4 of them per batch is measurable)."""
        batches = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        if len(batches) == 1:
            return next(iter(batches.values()))
        return [m for messages in batches.values() for m in messages]

    async def publish(self, records: Sequence[OutRecord]) -> None:
        """Send everything, then await every delivery; raises if any delivery failed."""
        await publish_packed(self.producer, records, self._pick)

    async def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Commit the given next-offsets for partitions this consumer still owns."""
        owned = self.consumer.assignment()
        todo = {
            TopicPartition(topic, partition): offset
            for (topic, partition), offset in offsets.items()
            if TopicPartition(topic, partition) in owned
        }
        if todo:
            await self.consumer.commit(todo)

    def assigned(self) -> bool:
        """True while the consumer owns at least one partition."""
        return self._consumer is not None and bool(self._consumer.assignment())

    def lag(self, positions: Mapping[tuple[str, int], int]) -> dict[int, int]:
        """High watermark minus the next offset to read, per owned partition."""
        consumer = self.consumer
        out: dict[int, int] = {}
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None:
                continue
            position = positions.get((tp.topic, tp.partition))
            if position is None:
                continue  # nothing consumed from it yet: unknown, not zero
            out[tp.partition] = max(0, high - position)
        return out
