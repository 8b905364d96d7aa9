"""The at-least-once :class:`~streamcast.kafka.sink.Sink`: a member of the consumer group
(:class:`~streamcast.kafka.group.GroupSink`) and one idempotent producer.

Contract: :meth:`AtLeastOnceSink.deliver` produces every output record and awaits each
acknowledgement by all in-sync replicas (``acks="all"``, idempotent producer), then the
batch's state changelog records the same way, and only then commits the batch's offsets.
So a crash can repeat output but never lose it, and restored state is never behind the
committed offsets (a key that is ahead skips the ticks it applied, see
:mod:`streamcast.kafka.changelog`). A failure raises
:class:`~streamcast.errors.TransientError` and nothing is committed; calling ``deliver``
again with the same outputs retries what is left (a batch already produced is not
produced twice by this instance, only its commit is retried). A topic that vanished
while running is an error that ends the service, not a retry loop.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError

from streamcast.errors import TransientError
from streamcast.kafka.clients import make_producer, start_client, stop_client
from streamcast.kafka.errors import describe, map_kafka_errors
from streamcast.kafka.group import GroupSink
from streamcast.kafka.publish import publish_packed
from streamcast.kafka.wire import Offsets, Outputs, OutRecord

log = logging.getLogger(__name__)


class AtLeastOnceSink(GroupSink):
    """Produce, await every acknowledgement, then commit (see the module docstring)."""

    _producer: AIOKafkaProducer | None
    #: the outputs whose records are all acknowledged but whose offsets are not
    #: committed yet (a retried delivery only commits)
    _produced: Outputs | None

    def _init_output(self) -> None:
        self._producer = None
        self._produced = None

    async def _start_output(self) -> None:
        producer = make_producer(self._settings)
        try:
            await start_client(producer, self._settings)
        except BaseException:
            await stop_client(producer)
            raise
        self._producer = producer

    async def _close_output(self) -> None:
        # a rewind keeps the one producer: only closing the sink stops it
        if self._closed and self._producer is not None:
            producer, self._producer = self._producer, None
            await stop_client(producer)

    @property
    def producer(self) -> AIOKafkaProducer:
        """The started producer."""
        if self._producer is None:
            raise RuntimeError("AtLeastOnceSink is not started")
        return self._producer

    async def deliver(self, outputs: Outputs, offsets: Offsets) -> None:
        """Produce the outputs, then the changelog records (each awaiting every
        acknowledgement), then commit ``offsets`` of the partitions still owned."""
        try:
            if outputs is not self._produced:
                changelog = self._settings.topics.state_changelog
                records = [r for part in outputs.values() for r in part]
                await self._publish([r for r in records if r.topic != changelog])
                await self._publish([r for r in records if r.topic == changelog])
                self._produced = outputs
            await self._commit(offsets)
        except TransientError:
            await self._check_outputs(self._settings)  # a deleted topic is no retry case
            raise
        self._produced = None
        self._delivered(offsets)

    async def _publish(self, records: Sequence[OutRecord]) -> None:
        if records:
            with map_kafka_errors("produce"):
                await publish_packed(self.producer, records)

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
