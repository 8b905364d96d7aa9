"""The one contract between the service loop and Kafka: a :class:`Sink`
(:func:`streamcast.kafka.guarantee.make_sink` picks its implementation).

A sink reads micro-batches of ticks and delivers each batch's outputs and offsets under
its guarantee. The service loop is the same for both (fetch, process, deliver):

- :class:`~streamcast.kafka.at_least_once.AtLeastOnceSink` produces the outputs, awaits
  every acknowledgement, then commits the offsets; a failed delivery raises
  :class:`~streamcast.errors.TransientError` and may simply be retried (output can
  repeat, never be lost).
- :class:`~streamcast.kafka.exactly_once.ExactlyOnceSink` commits each input partition's
  outputs, state changelog and offset in one transaction; a failed delivery raises
  :class:`~streamcast.errors.BatchRolledBackError` and :meth:`Sink.recover` rewinds the
  state and the offsets to the last commit before the next batch.

The sinks restore and hand over per-partition state through :class:`PartitionedState`
and report what they did through :class:`SinkObserver`; both are implemented above
this layer (the processor, the metrics), so nothing here imports upwards.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from contextlib import AbstractAsyncContextManager
from typing import Literal, Protocol

from streamcast.kafka.wire import Consumed, Offsets, Outputs

TransactionResult = Literal["committed", "failed"]


class PartitionedState(Protocol):
    """Per-key state kept per input partition (what a sink restores and hands over)."""

    def restore(self, partition: int, records: Sequence[tuple[str, bytes]], now_s: float) -> int:
        """Load a partition's changelog records (``(key, record)``); returns how many.

        Raises ``ValueError`` when the records belong to a model of another layout.
        """
        ...

    def drop_partitions(self, partitions: Set[int]) -> int:
        """Forget the keys of ``partitions`` without tombstones; returns how many."""
        ...


class SinkObserver(Protocol):
    """What a sink reports (the service's metrics implement it)."""

    def transactions(self, result: TransactionResult, count: int) -> None:
        """``count`` per-partition transactions ended with ``result``."""
        ...

    def restored(self, keys: int, seconds: float) -> None:
        """``keys`` were restored from the changelog in ``seconds``."""
        ...

    def rewound(self) -> None:
        """State and offsets were rewound to the last commit after a failure."""
        ...


class Sink(Protocol):
    """What the service loop needs from Kafka: records in, outputs and offsets out."""

    async def start(self) -> None:
        """Connect (and join the consumer group); raises a streamcast error on failure."""
        ...

    async def close(self) -> None:
        """Disconnect (idempotent)."""
        ...

    async def fetch(self, max_records: int, timeout_ms: int) -> Sequence[Consumed]:
        """Up to ``max_records`` records, waiting at most ``timeout_ms`` for the first."""
        ...

    def batch(self) -> AbstractAsyncContextManager[bool]:
        """Hold for the whole of a batch (process and deliver); yields False when the last
        fetch is stale (a rebalance or rewind came in between): drop its records."""
        ...

    def continues(self) -> bool:
        """Within :meth:`batch`, after a delivery has started: True when records fetched
        now may be processed under the same hold (no rebalance waits for it, nothing
        failed, the last fetch is current), so fetching and processing the next batch
        can overlap the delivery of this one."""
        ...

    async def recover(self) -> None:
        """Make the sink consistent before the next fetch (a no-op when nothing failed).

        Raises :class:`~streamcast.errors.TransientError` while the broker is away (call
        again after a backoff) and a non-retriable error when recovery cannot succeed.
        """
        ...

    async def deliver(self, outputs: Outputs, offsets: Offsets) -> None:
        """Make a batch's outputs durable, then its offsets (see the module docstring for
        what each failure means)."""
        ...

    def assigned(self) -> bool:
        """True while the sink owns at least one partition and is ready to process."""
        ...

    async def probe(self) -> dict[int, int]:
        """Ask the broker now: records waiting per owned partition (its end offset minus
        the delivered position). Raises :class:`~streamcast.errors.TransientError` when
        the broker does not answer."""
        ...
