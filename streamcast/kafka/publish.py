"""Producing many records fast: packed record batches per partition, keyed partitioning.

The per-message path of the Python client (``send``) costs more than the whole pipeline,
so :func:`publish_packed` builds one record batch per partition and awaits every
delivery; both the at-least-once and the transactional producers use it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.partitioner import DefaultPartitioner

if TYPE_CHECKING:
    from streamcast.kafka.wire import OutRecord

log = logging.getLogger(__name__)

#: dead letters whose original bytes exceed this are truncated so the DLQ send cannot fail
MAX_DEAD_LETTER_BYTES = 900 * 1024


class PartitionPicker:
    """The partition ``send`` would pick for a key, memoised (murmur2 in Python is slow);
    the memo is bounded by ``max_keys`` like the state store, whatever keys arrive."""

    def __init__(self, max_keys: int) -> None:
        self._partitioner = DefaultPartitioner()
        self._cache: dict[tuple[str, bytes], tuple[int, int]] = {}
        self._max_keys = max_keys

    def __call__(self, topic: str, key: bytes | None, parts: list[int]) -> int:
        if key is None:
            return int(self._partitioner(None, parts, parts))
        cache = self._cache
        cached = cache.get((topic, key))
        if cached is not None and cached[1] == len(parts):
            return cached[0]
        if len(cache) >= self._max_keys:
            cache.clear()
        partition = int(self._partitioner(key, parts, parts))
        cache[(topic, key)] = (partition, len(parts))
        return partition


async def publish_packed(
    producer: AIOKafkaProducer, records: Sequence[OutRecord], pick: PartitionPicker
) -> None:
    """Send ``records``, then await every delivery; raises if any delivery failed.

    Records are packed into one record batch per partition (the key picks the partition
    exactly as ``send`` would, unless the record names one): the per-message path of the
    Python client costs more than the whole pipeline. Works inside a transaction too
    (the producer adds each partition to it).
    """
    partitions: dict[str, list[int]] = {}
    builders: dict[tuple[str, int], Any] = {}
    futures: list[asyncio.Future[Any]] = []
    singles: list[OutRecord] = []
    for r in records:
        if r.partition is not None:
            partition = r.partition
        else:
            if r.topic not in partitions:
                partitions[r.topic] = sorted(await producer.partitions_for(r.topic))
            partition = pick(r.topic, r.key, partitions[r.topic])
        tp = (r.topic, partition)
        builder = builders.get(tp)
        if builder is None:
            builder = builders[tp] = producer.create_batch()
        if builder.append(timestamp=None, key=r.key, value=r.value, headers=r.headers):
            continue
        # Full: ship it and start the next batch for this partition.
        futures.append(await producer.send_batch(builder, r.topic, partition=partition))
        builder = builders[tp] = producer.create_batch()
        if not builder.append(timestamp=None, key=r.key, value=r.value, headers=r.headers):
            singles.append(r)  # larger than a whole batch: let send() judge it
    for (topic, partition), builder in builders.items():
        if builder.record_count():
            futures.append(await producer.send_batch(builder, topic, partition=partition))
    # every delivery's outcome is retrieved (a fenced producer fails them all: asyncio
    # would log each unretrieved one as an error), then the first failure is raised
    results = await asyncio.gather(*futures, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise failures[0]
    await _publish_singly(producer, singles)


async def _publish_singly(producer: AIOKafkaProducer, records: Sequence[OutRecord]) -> None:
    """``send`` each record; one too large for the broker is truncated (dead letters)."""
    for record in records:
        try:
            await (await producer.send(
                record.topic, record.value, key=record.key, headers=record.headers,
                partition=record.partition,
            ))  # fmt: skip
        except MessageSizeTooLargeError:
            log.warning("record too large for the broker; sent truncated")
            small = truncated(record)
            await (await producer.send(
                small.topic, small.value, key=small.key, headers=small.headers,
                partition=small.partition,
            ))  # fmt: skip


def truncated(record: OutRecord) -> OutRecord:
    """The record with its value cut to :data:`MAX_DEAD_LETTER_BYTES`, marked in a header."""
    value = record.value or b""
    headers = [*record.headers, ("truncated_from", str(len(value)).encode())]
    return replace(record, value=value[:MAX_DEAD_LETTER_BYTES], headers=headers)
