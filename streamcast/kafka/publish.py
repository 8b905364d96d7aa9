"""Producing many records fast: packed record batches per partition, keyed partitioning.

The per-message path of the Python client (``send``) costs more than the whole pipeline,
so :func:`publish_packed` builds one record batch per partition and awaits every
delivery; both the at-least-once and the transactional producers use it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError

from streamcast.kafka.partitioner import key_partitions

if TYPE_CHECKING:
    from streamcast.kafka.wire import OutRecord

log = logging.getLogger(__name__)

#: a dead letter larger than this (key, value and headers) is cut to it when it is made
#: (:func:`truncated`): a near-limit input's dead letter, its bytes plus ~300 bytes of
#: headers, would be over the broker's limit and refused on every retry, inside a
#: transaction too: a poison pill for its input partition. Any record this large that
#: would open a batch is sent on its own instead (aiokafka's batch builder takes the
#: first record of an empty batch whatever its size), where a refusal is an error of its
#: own (a dead letter is truncated then).
MAX_DEAD_LETTER_BYTES = 900 * 1024
#: the key of a truncated record is cut to this (a dead letter keeps the input's Kafka
#: key, and an input rejected as ``key_too_long`` can carry a key of ~1 MB)
MAX_DEAD_LETTER_KEY_BYTES = 16 * 1024


async def publish_packed(producer: AIOKafkaProducer, records: Sequence[OutRecord]) -> None:
    """Send ``records``, then await every delivery; raises if any delivery failed.

    Records are packed into one record batch per partition (the key picks the partition
    exactly as ``send`` would, unless the record names one; all keys of a topic are hashed
    in one pass, :mod:`streamcast.kafka.partitioner`): the per-message path of the Python
    client costs more than the whole pipeline. Works inside a transaction too
    (the producer adds each partition to it).
    """
    builders: dict[tuple[str, int], Any] = {}
    futures: list[asyncio.Future[Any]] = []
    singles: list[OutRecord] = []
    for r, partition in zip(records, await _partitions(producer, records), strict=True):
        tp = (r.topic, partition)
        builder = builders.get(tp)
        if builder is not None:
            if builder.append(timestamp=None, key=r.key, value=r.value, headers=r.headers):
                continue
            futures.append(await _ship(producer, builder, r.topic, partition))
            del builders[tp]
        # r opens a batch: the one place a record of any size is taken (so its size is
        # checked once per batch, not per record)
        if record_size(r) > MAX_DEAD_LETTER_BYTES:
            singles.append(r)
            continue
        builder = builders[tp] = producer.create_batch()
        if not builder.append(timestamp=None, key=r.key, value=r.value, headers=r.headers):
            del builders[tp]
            singles.append(r)  # larger than a whole batch: let send() judge it
    for (topic, partition), builder in builders.items():
        if builder.record_count():
            futures.append(await _ship(producer, builder, topic, partition))
    # every delivery's outcome is retrieved (a fenced producer fails them all: asyncio
    # would log each unretrieved one as an error), then the first failure is raised
    results = await asyncio.gather(*futures, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise failures[0]
    await _publish_singly(producer, singles)


async def _ship(
    producer: AIOKafkaProducer, builder: Any, topic: str, partition: int
) -> asyncio.Future[Any]:
    """Hand a complete batch to the producer, closed: an open batch waits ``linger_ms``
    in the accumulator for ``send`` to add to it (5 ms per delivery by default, twice
    per micro-batch with the changelog), a closed one goes out at once."""
    builder.close()
    future: asyncio.Future[Any] = await producer.send_batch(builder, topic, partition=partition)
    return future


async def _partitions(producer: AIOKafkaProducer, records: Sequence[OutRecord]) -> list[int]:
    """The partition of each record: the one it names, else its key's (all the keys of a
    topic hashed at once), else (no key) a random one, as ``send`` picks."""
    chosen = [-1 if r.partition is None else r.partition for r in records]
    by_topic: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        if r.partition is None:
            by_topic.setdefault(r.topic, []).append(i)
    for topic, picks in by_topic.items():
        parts = sorted(await producer.partitions_for(topic))
        keyed = [i for i in picks if records[i].key is not None]
        hashed = key_partitions([records[i].key or b"" for i in keyed], len(parts))
        for i, index in zip(keyed, hashed.tolist(), strict=True):
            chosen[i] = parts[index]
        for i in picks:
            if records[i].key is None:
                chosen[i] = random.choice(parts)
    return chosen


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


def record_size(record: OutRecord) -> int:
    """Bytes of the record's key, value and headers (what the broker's limit counts, bar
    a few bytes of framing)."""
    headers = sum(len(name) + len(value) for name, value in record.headers)
    return len(record.key or b"") + len(record.value or b"") + headers


def truncated(record: OutRecord) -> OutRecord:
    """The record with its value cut to :data:`MAX_DEAD_LETTER_BYTES` and its key to
    :data:`MAX_DEAD_LETTER_KEY_BYTES`, each cut marked in a header with the length it had
    (``truncated_from``, ``key_truncated_from``)."""
    value, key = record.value or b"", record.key
    headers = [*record.headers, ("truncated_from", str(len(value)).encode())]
    if key is not None and len(key) > MAX_DEAD_LETTER_KEY_BYTES:
        headers.append(("key_truncated_from", str(len(key)).encode()))
        key = key[:MAX_DEAD_LETTER_KEY_BYTES]
    return replace(record, key=key, value=value[:MAX_DEAD_LETTER_BYTES], headers=headers)
