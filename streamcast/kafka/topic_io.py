"""Plain topic reading and writing for the tools (``replay``, ``tail``): no consumer group,
no transactions; every client error comes out as streamcast's own."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streamcast.config import ClientSettings
from streamcast.kafka.clients import client_options, stop_client
from streamcast.kafka.errors import map_kafka_errors
from streamcast.kafka.wire import Consumed


class _Client:
    """An aiokafka client as an async context manager: started on entry, stopped on exit."""

    _client: AIOKafkaConsumer | AIOKafkaProducer

    async def __aenter__(self) -> Self:
        with map_kafka_errors("connect"):
            await self._client.start()
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


class TopicWriter(_Client):
    """An idempotent ``acks=all`` producer that sends keyed messages and awaits them."""

    def __init__(self, settings: ClientSettings) -> None:
        self._client = self._producer = AIOKafkaProducer(
            acks="all",
            enable_idempotence=True,
            linger_ms=settings.linger_ms,
            max_batch_size=settings.producer_max_batch_bytes,
            **client_options(settings),
        )

    async def send(self, topic: str, keys: Sequence[bytes], values: Sequence[bytes]) -> None:
        """Send ``(key, value)`` messages in order; return once every one is acknowledged."""
        with map_kafka_errors("produce"):
            futures = [
                await self._producer.send(topic, value, key=key)
                for key, value in zip(keys, values, strict=True)
            ]
            await asyncio.gather(*futures)

    async def flush(self) -> None:
        """Wait until everything sent so far is acknowledged."""
        with map_kafka_errors("produce"):
            await self._producer.flush()
