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
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context

from streamcast.config import Settings
from streamcast.errors import ConfigurationError
from streamcast.publish import PartitionPicker, publish_packed

log = logging.getLogger(__name__)

#: error code Kafka answers for a topic that does not exist
UNKNOWN_TOPIC_OR_PARTITION = 3
#: aiokafka's internal reconnect/retry pause (its default, 100 ms, hammers a dead broker)
RETRY_BACKOFF_MS = 300


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
    """One message to produce; ``value=None`` is a tombstone (compacted topics).

    ``partition=None`` lets the key choose (as ``send`` would); changelog records name
    their partition: the input partition whose state they hold.
    """

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    partition: int | None = None


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


def make_consumer(settings: Settings, *, subscribe: bool = True) -> AIOKafkaConsumer:
    """The ticks consumer: manual commits, earliest reset, read_committed input.

    ``subscribe=False`` leaves subscribing (with a rebalance listener) to the caller.
    """
    session = settings.session_timeout_ms
    return AIOKafkaConsumer(
        *([settings.topics.ticks] if subscribe else []),
        group_id=settings.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        fetch_max_wait_ms=max(settings.batch_max_wait_ms, 1),
        retry_backoff_ms=RETRY_BACKOFF_MS,
        max_poll_interval_ms=max(300_000, int(settings.drain_timeout_s * 2_000)),
        session_timeout_ms=session,
        heartbeat_interval_ms=min(3_000, session // 3),
        # members finish their in-flight batch before rejoining: give them time
        rebalance_timeout_ms=max(session, 30_000),
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
    replication factor; in exactly-once mode the state changelog is created (compacted)
    or checked too. Returns the partition count. Raises :class:`TopicError` when the
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
        if settings.processing_guarantee == "exactly_once":
            from streamcast.changelog import ensure_changelog  # noqa: PLC0415 (imports us)

            await ensure_changelog(admin, settings, partitions, replication)
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


async def stop_client(client: AIOKafkaConsumer | AIOKafkaProducer) -> None:
    """``client.stop()``, surviving the client's own stray cancellation.

    aiokafka (0.14) ``Fetcher.close()`` cancels its in-flight fetch tasks and then awaits
    them; one that was sleeping in its retry backoff because the broker is unreachable
    re-raises that ``CancelledError`` out of ``consumer.stop()``, although nobody
    cancelled the caller. Such an error is logged and the network client that
    ``stop()`` skipped is closed; a real cancellation of the caller still propagates.
    """
    try:
        await client.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the caller is being cancelled (e.g. a close timeout): not ours to eat
        log.warning(
            "Kafka client stopped with a stray cancellation (broker unreachable)",
            extra={"client": type(client).__name__},
        )
        # stop() returned before closing its connections; stop() again is a no-op
        inner = getattr(client, "_client", None)
        if inner is not None:
            with contextlib.suppress(Exception):
                await inner.close()


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
