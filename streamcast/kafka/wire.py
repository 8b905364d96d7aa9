"""What crosses the Kafka edge: consumed messages, records to produce, and the
:class:`Broker` protocol the service loop talks to (so the loop can be unit-tested with an
in-memory fake, while integration tests use the real broker).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


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
