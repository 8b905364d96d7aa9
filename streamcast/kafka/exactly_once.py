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

Rebalances are the consumer group's (:class:`~streamcast.kafka.group.GroupSink`): on
every assignment this sink first starts a new producer for every assigned partition,
fencing whoever wrote it before (even a partition it kept: had this instance been
expelled during a long pause, the interim owner fenced its old producer), and only then
are the committed offsets and the changelog read.

Any error in a batch marks the sink dirty and :meth:`ExactlyOnceSink.deliver` raises
:class:`~streamcast.errors.BatchRolledBackError`; :meth:`ExactlyOnceSink.recover` then
closes every producer (their open transactions are aborted by the new producers'
fencing), drops all state, restores it from the changelog and seeks to the committed
offsets: the output is as if the failed batch never happened.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence, Set

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from streamcast.config import Settings
from streamcast.errors import BatchRolledBackError, FencedError, TransientError
from streamcast.kafka.clients import producer_options
from streamcast.kafka.errors import describe, map_kafka_errors
from streamcast.kafka.group import GroupSink
from streamcast.kafka.publish import publish_packed
from streamcast.kafka.wire import Offsets, Outputs, OutRecord

log = logging.getLogger(__name__)

#: bound on closing one producer (a dead broker must not stall a rewind)
CLOSE_TIMEOUT_S = 5.0


def transactional_id(settings: Settings, partition: int) -> str:
    """The transactional id of the producer that owns ``partition`` of the ticks topic."""
    s = settings
    return f"{s.transactional_id_prefix}-{s.group_id}-{s.topics.ticks}-{partition}"


class ExactlyOnceSink(GroupSink):
    """The exactly-once :class:`~streamcast.kafka.sink.Sink`; see the module docstring.

    The service holds :meth:`batch` for the whole of each batch.
    """

    #: the transactional producer of each owned partition (started on assignment)
    _producers: dict[int, AIOKafkaProducer]

    def _init_output(self) -> None:
        self._producers = {}

    async def _close_output(self) -> None:
        producers = list(self._producers.values())
        self._producers = {}
        await asyncio.gather(*(_bounded_stop(p) for p in producers))

    async def _fence(self, assigned: Set[int]) -> None:
        """New producers for every assigned partition: InitProducerId fences the previous
        owner's (its open transaction is aborted, or completed if already committing)."""
        await self._close_output()
        producers = {p: self._new_producer(p) for p in sorted(assigned)}
        started = await asyncio.gather(
            *(producer.start() for producer in producers.values()), return_exceptions=True
        )
        failed = [r for r in started if isinstance(r, BaseException)]
        if failed:
            await asyncio.gather(*(_bounded_stop(producer) for producer in producers.values()))
            raise failed[0]
        self._producers = producers

    def _new_producer(self, partition: int) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            transactional_id=transactional_id(self._settings, partition),
            **producer_options(self._settings),
        )

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
            if all(isinstance(e, TransientError) for e in errors):
                await self._check_outputs(self._settings)  # a deleted topic: no retry helps
            raise BatchRolledBackError(
                f"transaction failed ({describe(errors[0])}); rewinding to the committed offsets"
            ) from errors[0]
        self._observer.transactions("committed", len(partitions))
        self._delivered(offsets)

    async def _transaction(
        self, partition: int, records: Sequence[OutRecord], offset: int | None
    ) -> None:
        producer = self._producers.get(partition)
        if producer is None:
            raise TransientError(f"partition {partition} has no producer (not owned)")
        try:
            with map_kafka_errors(f"transaction of partition {partition}"):
                await producer.begin_transaction()
                await publish_packed(producer, records)
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


async def _bounded_stop(producer: AIOKafkaProducer) -> None:
    try:
        await asyncio.wait_for(producer.stop(), timeout=CLOSE_TIMEOUT_S)
    except (TimeoutError, KafkaError, OSError) as exc:
        log.warning("producer did not close cleanly", extra={"error": repr(exc)})
