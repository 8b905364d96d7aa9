"""Plain topic reading and writing for the tools (``replay``, ``tail``): no consumer group,
no transactions; every client error comes out as streamcast's own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streamcast.config import ClientSettings
from streamcast.kafka.clients import client_options, make_producer, start_client, stop_client
from streamcast.kafka.errors import map_kafka_errors
from streamcast.kafka.wire import Consumed


class _Client:
    """An aiokafka client as an async context manager: started on entry, stopped on exit."""

    _client: AIOKafkaConsumer | AIOKafkaProducer
    _settings: ClientSettings

    async def __aenter__(self) -> Self:
        await start_client(self._client, self._settings)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await stop_client(self._client)


class TopicReader(_Client):
    """Reads one topic ``read_committed`` without joining a group (it never commits, so it
    cannot disturb anyone's offsets)."""

    def __init__(self, settings: ClientSettings, topic: str, *, from_beginning: bool) -> None:
        self._settings = settings
        self._client = self._consumer = AIOKafkaConsumer(
            topic,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if from_beginning else "latest",
            isolation_level="read_committed",
            **client_options(settings),
        )

    async def read(self, timeout_ms: int) -> list[Consumed]:
        """The messages that arrived, waiting at most ``timeout_ms`` for the first."""
        with map_kafka_errors("read"):
            batches = await self._consumer.getmany(timeout_ms=timeout_ms)
        return [m for part in batches.values() for m in part]


class TopicSnapshot(_Client):
    """Reads every partition of a topic (read_committed, no group) from a point in time to
    the end offsets it finds at the start: a bounded read of history."""

    def __init__(self, settings: ClientSettings, topic: str, partitions: int) -> None:
        self._settings = settings
        self._topic = topic
        self._partitions = partitions
        self._client = self._consumer = AIOKafkaConsumer(
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            **client_options(settings),
        )

    async def batches(
        self, since_ms: int | None = None, until_ms: int | None = None, timeout_ms: int = 1000
    ) -> AsyncIterator[list[Consumed]]:
        """Records with Kafka timestamps in ``[since_ms, until_ms)`` (either may be None),
        batch by batch, until every partition reached its end offset of the start."""
        consumer = self._consumer
        with map_kafka_errors("read"):
            tps = [TopicPartition(self._topic, p) for p in range(self._partitions)]
            consumer.assign(tps)
            end = await consumer.end_offsets(tps)
            start = await self._start_offsets(tps, since_ms)
            for tp in tps:
                consumer.seek(tp, start[tp])
            pending = {tp for tp in tps if start[tp] < end[tp]}
            while pending:
                fetched = await consumer.getmany(*pending, timeout_ms=timeout_ms)
                out = [
                    m
                    for messages in fetched.values()
                    for m in messages
                    if m.offset < end[TopicPartition(m.topic, m.partition)]
                    and (until_ms is None or m.timestamp < until_ms)
                ]
                for tp in list(pending):
                    if await consumer.position(tp) >= end[tp]:
                        pending.discard(tp)
                if out:
                    yield out

    async def _start_offsets(
        self, tps: list[TopicPartition], since_ms: int | None
    ) -> dict[TopicPartition, int]:
        consumer = self._consumer
        if since_ms is None:
            return dict(await consumer.beginning_offsets(tps))
        found = await consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
        end = await consumer.end_offsets(tps)
        return {tp: (found[tp].offset if found.get(tp) else end[tp]) for tp in tps}


class TopicWriter(_Client):
    """The output producer (:func:`~streamcast.kafka.clients.make_producer`: idempotent,
    ``acks=all``, compressed as configured) sending keyed messages and awaiting them."""

    def __init__(self, settings: ClientSettings) -> None:
        self._settings = settings
        self._client = self._producer = make_producer(settings)

    async def send(
        self,
        topic: str,
        keys: Sequence[bytes],
        values: Sequence[bytes],
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        """Send ``(key, value)`` messages in order, each with ``headers``; return once every
        one is acknowledged."""
        with map_kafka_errors("produce"):
            futures = [
                await self._producer.send(topic, value, key=key, headers=list(headers) or None)
                for key, value in zip(keys, values, strict=True)
            ]
            await asyncio.gather(*futures)

    async def flush(self) -> None:
        """Wait until everything sent so far is acknowledged."""
        with map_kafka_errors("produce"):
            await self._producer.flush()
