"""The per-key state changelog: a compacted topic partitioned like the ticks topic.

The state of the keys read from ticks partition ``p`` lives in changelog partition ``p``:
one record per key whose state a micro-batch changed (key = series key, value = the
compact record of :meth:`streamcast.core.pipeline.Pipeline.snapshot`), a tombstone for every
key dropped by the LRU cap or the TTL. In exactly-once mode these records are written in
the same transaction as the forecasts and the consumed offsets, so the latest committed
record of each key is exactly the state after the committed offset, and compaction keeps
the topic as small as the live key set.

- :func:`streamcast.kafka.topics.ensure_changelog` creates the topic when absent
  (``cleanup.policy=compact``, the ticks topic's partition count and replication) and
  checks it when present.
- :func:`read_changelog` reads partitions to their end (read_committed) into
  ``{partition: {key: record}}``: what an instance restores before it processes a
  partition it was just assigned.
"""

from __future__ import annotations

import logging

from aiokafka import AIOKafkaConsumer, TopicPartition

from streamcast.config import Settings
from streamcast.kafka.clients import client_options

log = logging.getLogger(__name__)

#: how long one poll of the restore loop waits for data
RESTORE_POLL_MS = 500


def make_restore_consumer(settings: Settings) -> AIOKafkaConsumer:
    """A group-less read_committed consumer for reading changelog partitions."""
    return AIOKafkaConsumer(
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        **client_options(settings),
    )


async def read_changelog(
    consumer: AIOKafkaConsumer, topic: str, partitions: list[int]
) -> dict[int, dict[str, bytes]]:
    """The latest committed record of every live key in each of ``partitions``.

    Reads from the beginning to the end offset taken at the start (the last stable
    offset, as the consumer is read_committed); later tombstones delete earlier records.
    """
    state: dict[int, dict[str, bytes]] = {p: {} for p in partitions}
    if not partitions:
        return state
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer.assign(tps)
    try:
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        pending = {tp for tp in tps if end[tp] > 0}
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=RESTORE_POLL_MS)
            for tp, messages in batches.items():
                keys = state[tp.partition]
                for m in messages:
                    if m.key is None:
                        continue
                    if m.value is None:
                        keys.pop(m.key.decode(), None)
                    else:
                        keys[m.key.decode()] = m.value
            for tp in list(pending):
                if await consumer.position(tp) >= end[tp]:
                    pending.discard(tp)
    finally:
        consumer.assign([])
    return state
