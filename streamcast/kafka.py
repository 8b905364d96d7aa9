"""The Kafka edge: aiokafka clients built from :class:`Settings`, topic checks, and the
small :class:`Broker` protocol the service loop talks to (so the loop can be unit-tested
with an in-memory fake, while integration tests use the real broker).

At-least-once contract of :class:`KafkaBroker`: ``publish`` returns only once every record
is acknowledged by all in-sync replicas (``acks="all"``, idempotent producer); the service
calls ``commit`` only after that, so a crash can repeat output but never lose it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import MessageSizeTooLargeError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import DefaultPartitioner

from streamcast.config import Settings
from streamcast.errors import ConfigurationError

log = logging.getLogger(__name__)

#: error code Kafka answers for a topic that does not exist
UNKNOWN_TOPIC_OR_PARTITION = 3
#: aiokafka's internal reconnect/retry pause (its default, 100 ms, hammers a dead broker)
RETRY_BACKOFF_MS = 300
#: dead letters whose original bytes exceed this are truncated so the DLQ send cannot fail
MAX_DEAD_LETTER_BYTES = 900 * 1024


class TopicError(ConfigurationError):
    """A topic the service needs is missing or unusable; the message says what to do."""


class Consumed(Protocol):
    """A consumed message as the service reads it (aiokafka's ``ConsumerRecord`` is one)."""

    @property
    def topic(self) -> str:
        """Source topic."""
        ...

    @property
    def partition(self) -> int:
        """Source partition."""
        ...

    @property
    def offset(self) -> int:
        """Source offset."""
        ...

    @property
    def timestamp(self) -> int:
        """Kafka timestamp, epoch milliseconds."""
        ...

    @property
    def key(self) -> bytes | None:
        """Kafka message key."""
        ...

    @property
    def value(self) -> bytes | None:
        """Message body."""
        ...


@dataclass(frozen=True, slots=True)
class InRecord:
    """A :class:`Consumed` message built by hand (fakes, tools)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class OutRecord:
    """One message to produce."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)


class Broker(Protocol):
    """What the service loop needs from Kafka."""

    async def fetch(self, max_records: int, timeout_ms: int) -> Sequence[Consumed]:
        """Up to ``max_records`` records, waiting at most ``timeout_ms`` for the first."""
        ...

    async def publish(self, records: Sequence[OutRecord]) -> None:
        """Produce ``records``; return only when every one is acknowledged."""
        ...

    async def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Commit ``{(topic, partition): next offset to read}`` for the consumer group."""
        ...

    def assigned(self) -> bool:
        """True while the consumer owns at least one partition."""
        ...

    def lag(self, positions: Mapping[tuple[str, int], int]) -> dict[int, int]:
        """Records behind the high watermark per partition, given the next offsets to read."""
        ...


def client_options(settings: Settings) -> dict[str, Any]:
    """Connection and security keyword arguments shared by every aiokafka client."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = ssl_context(settings)
    if settings.security_protocol.startswith("SASL"):
        password = settings.sasl_password.get_secret_value() if settings.sasl_password else None
        options.update(
            sasl_mechanism=settings.sasl_mechanism,
            sasl_plain_username=settings.sasl_username,
            sasl_plain_password=password,
        )
    return options


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """TLS context from the configured CA, client certificate and key (system CAs if unset)."""
    password = settings.ssl_key_password.get_secret_value() if settings.ssl_key_password else None
    context: ssl.SSLContext = create_ssl_context(
        cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None,
        certfile=str(settings.ssl_certfile) if settings.ssl_certfile else None,
        keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
        password=password,
    )
    return context


def make_consumer(settings: Settings) -> AIOKafkaConsumer:
    """The ticks consumer: manual commits, earliest reset, read_committed input."""
    return AIOKafkaConsumer(
        settings.topics.ticks,
        group_id=settings.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        fetch_max_wait_ms=max(settings.batch_max_wait_ms, 1),
        retry_backoff_ms=RETRY_BACKOFF_MS,
        max_poll_interval_ms=max(300_000, int(settings.drain_timeout_s * 2_000)),
        **client_options(settings),
    )


def make_producer(settings: Settings) -> AIOKafkaProducer:
    """The output producer: ``acks=all``, idempotent, batched by ``linger_ms``."""
    return AIOKafkaProducer(
        acks="all",
        enable_idempotence=True,
        linger_ms=settings.linger_ms,
        max_batch_size=settings.producer_max_batch_bytes,
        retry_backoff_ms=RETRY_BACKOFF_MS,
        max_request_size=max(settings.producer_max_batch_bytes, 2 * 1024 * 1024),
        **client_options(settings),
    )


async def ensure_topics(settings: Settings) -> int:
    """Check the ticks topic and create the output topics that are missing.

    Forecasts, alerts and dead-letter topics get the ticks topic's partition count and
    replication factor. Returns the partition count. Raises :class:`TopicError` when the
    ticks topic does not exist (the service never creates its input).
    """
    topics = settings.topics
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        described = {d["topic"]: d for d in await admin.describe_topics([topics.ticks])}
        ticks = described.get(topics.ticks)
        if ticks is None or ticks["error_code"] != 0 or not ticks["partitions"]:
            raise TopicError(
                f"ticks topic '{topics.ticks}' does not exist on {settings.bootstrap_servers}: "
                "create it (its partition count sets the service's parallelism) or set "
                "STREAMCAST_TOPICS__TICKS"
            )
        partitions = len(ticks["partitions"])
        replication = len(ticks["partitions"][0]["replicas"])
        existing = set(await admin.list_topics())
        wanted = [topics.forecasts, topics.alerts, topics.dead_letter]
        missing = [name for name in dict.fromkeys(wanted) if name not in existing]
        if missing:
            # Another instance may create them first: that is fine.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [NewTopic(name, partitions, replication) for name in missing]
                )
            log.info("created output topics", extra={"topics": missing, "partitions": partitions})
        return partitions
    finally:
        await admin.close()


async def require_topic(settings: Settings, topic: str) -> int:
    """The partition count of ``topic``; :class:`TopicError` if it does not exist."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if not described or described[0]["error_code"] != 0 or not described[0]["partitions"]:
        raise TopicError(
            f"topic '{topic}' does not exist on {settings.bootstrap_servers} "
            "(topic auto-creation is off): create it first"
        )
    return len(described[0]["partitions"])


class KafkaBroker:
    """The real :class:`Broker`: one consumer in the group and one idempotent producer."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._closed = False
        self._partitioner = DefaultPartitioner()
        self._partition_cache: dict[tuple[str, bytes], tuple[int, int]] = {}

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
            await producer.stop()
            await consumer.stop()
            raise
        self._producer, self._consumer = producer, consumer

    async def close(self) -> None:
        """Flush and stop both clients (idempotent)."""
        self._closed = True
        producer, self._producer = self._producer, None
        consumer, self._consumer = self._consumer, None
        if producer is not None:
            await producer.stop()
        if consumer is not None:
            await consumer.stop()

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
        """Send everything, then await every delivery; raises if any delivery failed.

        Records are packed into one record batch per partition (the key picks the
        partition exactly as ``send`` would): the per-message path of the Python client
        costs more than the whole pipeline.
        """
        producer = self.producer
        partitions: dict[str, list[int]] = {}
        builders: dict[tuple[str, int], Any] = {}
        futures: list[asyncio.Future[Any]] = []
        singles: list[OutRecord] = []
        for r in records:
            if r.topic not in partitions:
                partitions[r.topic] = sorted(await producer.partitions_for(r.topic))
            parts = partitions[r.topic]
            partition = self._partition_of(r.topic, r.key, parts)
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
        await asyncio.gather(*futures)
        await self._publish_singly(singles)

    def _partition_of(self, topic: str, key: bytes | None, parts: list[int]) -> int:
        """The partition ``send`` would pick, memoised per key (murmur2 in Python is slow)."""
        if key is None:
            return int(self._partitioner(None, parts, parts))
        cache = self._partition_cache
        cached = cache.get((topic, key))
        if cached is not None and cached[1] == len(parts):
            return cached[0]
        if len(cache) >= self._settings.max_keys:
            cache.clear()  # bounded like the state store, whatever keys arrive
        partition = int(self._partitioner(key, parts, parts))
        cache[(topic, key)] = (partition, len(parts))
        return partition

    async def _publish_singly(self, records: Sequence[OutRecord]) -> None:
        """``send`` each record; one too large for the broker is truncated (dead letters)."""
        producer = self.producer
        for record in records:
            try:
                await (await producer.send(
                    record.topic, record.value, key=record.key, headers=record.headers
                ))  # fmt: skip
            except MessageSizeTooLargeError:
                log.warning("record too large for the broker; sent truncated")
                small = _truncated(record)
                await (await producer.send(
                    small.topic, small.value, key=small.key, headers=small.headers
                ))  # fmt: skip

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


def _truncated(record: OutRecord) -> OutRecord:
    """The record with its value cut to :data:`MAX_DEAD_LETTER_BYTES`, marked in a header."""
    headers = [*record.headers, ("truncated_from", str(len(record.value)).encode())]
    return OutRecord(record.topic, record.key, record.value[:MAX_DEAD_LETTER_BYTES], headers)
