"""The per-key state changelog: a compacted topic partitioned like the ticks topic, and
the bookkeeping that restores a partition's state when it arrives and drops it when it
leaves — the same for both processing guarantees.

The state of the keys read from ticks partition ``p`` lives in changelog partition ``p``:
one record per key whose state a micro-batch changed (key = series key, value = the
compact record of :meth:`streamcast.core.state.StateStore.snapshot`), a tombstone for
every key dropped by the LRU cap or the TTL, and a *partition marker* (:data:`MARKER_KEY`,
whose bytes are not valid UTF-8 and so can never be a series key) written with every
batch that commits offsets for ``p``. Exactly-once writes them in the batch's
transaction; at-least-once writes them after the batch's outputs are acknowledged and
before its offsets are committed, so a restored key is never behind the committed
offsets, and a key ahead of them skips the ticks it applied (its ``applied_offset``).

The marker is how a lost changelog is told from an empty one: a partition for which the
group has committed offsets but whose changelog partition has no marker lost its state
(the topic was deleted or recreated). That is :class:`~streamcast.errors.StateLostError`
unless ``allow_state_rebuild`` is set, in which case the keys warm up again.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import time
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass, field
from typing import cast

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from streamcast.config import Settings
from streamcast.core.schemas import MARKER_HEADERS
from streamcast.errors import ModelError, StateLostError
from streamcast.kafka.clients import client_options, start_client, stop_client
from streamcast.kafka.errors import map_kafka_errors
from streamcast.kafka.sink import PartitionedState, SinkObserver
from streamcast.kafka.wire import OutRecord

log = logging.getLogger(__name__)

#: how long one poll of the restore loop waits for data
RESTORE_POLL_MS = 500
#: the key of a changelog partition's marker record (not UTF-8: no series key can be it)
MARKER_KEY = b"\xff\xfestreamcast.partition"


def marker(topic: str, partition: int, next_offset: int) -> OutRecord:
    """The marker record of ``partition``: its state belongs to committed offsets."""
    value = orjson.dumps({"partition": partition, "next_offset": next_offset})
    return OutRecord(topic, MARKER_KEY, value, list(MARKER_HEADERS), partition)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` (looked up in the process's own symbols: no ``ldconfig``
    subprocess), or None where the C library has none (musl, macOS, Windows)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return cast("Callable[[int], int]", trim)


def release_free_memory() -> bool:
    """Return the C heap's free pages to the operating system; False where the C library
    cannot (or another allocator, jemalloc or tcmalloc preloaded, makes it a no-op). A
    restore reads a partition's whole changelog and decodes it into arrays (at 1,000,000
    keys hundreds of MB for a moment); once the store holds the state those pages are
    free, but the allocator kept them: resident memory the service never used again
    (1,000,000 keys restored: 1,714 -> 1,575 B per key, ``bench/micro.py``; 2.2 ms)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


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


@dataclass
class Changelog:
    """What a read of changelog partitions found."""

    #: the latest record of every live key, per partition
    records: dict[int, dict[str, bytes]] = field(default_factory=dict)
    #: partitions whose marker was found
    marked: set[int] = field(default_factory=set)


async def read_changelog(
    consumer: AIOKafkaConsumer, topic: str, partitions: list[int]
) -> Changelog:
    """The latest committed record of every live key in each of ``partitions``.

    Reads from the beginning to the end offset taken at the start (the last stable
    offset, as the consumer is read_committed); later tombstones delete earlier records.
    """
    read = Changelog(records={p: {} for p in partitions})
    if not partitions:
        return read
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer.assign(tps)
    try:
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        pending = {tp for tp in tps if end[tp] > 0}
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=RESTORE_POLL_MS)
            for tp, messages in batches.items():
                keys = read.records[tp.partition]
                for m in messages:
                    if m.key == MARKER_KEY:
                        read.marked.add(tp.partition)
                    elif m.key is None:
                        continue
                    elif m.value is None:
                        keys.pop(m.key.decode(), None)
                    else:
                        keys[m.key.decode()] = m.value
            for tp in list(pending):
                if await consumer.position(tp) >= end[tp]:
                    pending.discard(tp)
    finally:
        consumer.assign([])
    return read


class PartitionStates:
    """The per-partition state a sink holds: restored from the changelog when a partition
    arrives, dropped without tombstones when it leaves (its new owner restores it)."""

    def __init__(
        self,
        settings: Settings,
        state: PartitionedState,
        observer: SinkObserver,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._state = state
        self._observer = observer
        self._clock = clock
        self._restorer: AIOKafkaConsumer | None = None
        #: partitions whose state is held in memory
        self.held: set[int] = set()

    async def start(self) -> None:
        """Connect the restore consumer."""
        restorer = make_restore_consumer(self._settings)
        try:
            await start_client(restorer, self._settings)
        except BaseException:
            await stop_client(restorer)
            raise
        self._restorer = restorer

    async def close(self) -> None:
        """Stop the restore consumer (idempotent)."""
        restorer, self._restorer = self._restorer, None
        if restorer is not None:
            await stop_client(restorer)

    def drop(self, partitions: Set[int]) -> int:
        """Forget the keys of ``partitions`` (another instance owns them now)."""
        gone = set(partitions) & self.held
        self.held -= gone
        return self._state.drop_partitions(gone) if gone else 0

    async def restore(self, partitions: Set[int], committed: Mapping[int, int | None]) -> int:
        """Replace the state of ``partitions`` by what their changelog holds; returns keys.

        Raises :class:`~streamcast.errors.StateLostError` for a partition with committed
        offsets whose changelog has no marker (unless ``allow_state_rebuild``), and
        :class:`~streamcast.errors.ModelError` for state of another model layout.
        """
        assert self._restorer is not None, "PartitionStates.start() first"
        began = time.perf_counter()
        self.drop(partitions)
        topic = self._settings.topics.state_changelog
        with map_kafka_errors("state restore"):
            read = await read_changelog(self._restorer, topic, sorted(partitions))
        self._check_not_lost(partitions, committed, read)
        restored = await self._load(read)
        self.held |= set(partitions)
        del read  # the records read, now in the store: their pages go back to the system
        await asyncio.to_thread(release_free_memory)
        seconds = time.perf_counter() - began
        self._observer.restored(restored, seconds)
        log.info(
            "state restored",
            extra={
                "partitions": sorted(partitions),
                "keys": restored,
                "seconds": round(seconds, 3),
                "keys_per_s": round(restored / seconds) if seconds > 0 else None,
            },
        )
        return restored

    async def _load(self, read: Changelog) -> int:
        """Restore what ``read`` holds into the state, partition by partition; the keys."""
        topic = self._settings.topics.state_changelog
        now = self._clock()
        restored = 0
        for p, keys in read.records.items():
            try:
                restored += await asyncio.to_thread(self._state.restore, p, list(keys.items()), now)
            except ValueError as exc:
                raise ModelError(
                    f"state changelog '{topic}' partition {p} holds state this model cannot "
                    f"use ({exc}): a model with another window, inputs, state size or "
                    "interval grid needs a new changelog topic "
                    "(STREAMCAST_TOPICS__STATE_CHANGELOG) and group"
                ) from exc
        return restored

    def _check_not_lost(
        self, partitions: Set[int], committed: Mapping[int, int | None], read: Changelog
    ) -> None:
        lost = sorted(
            p for p in partitions if committed.get(p) is not None and p not in read.marked
        )
        if not lost:
            return
        topic = self._settings.topics.state_changelog
        if self._settings.allow_state_rebuild:
            log.warning(
                "state changelog has no state for partitions with committed offsets: their "
                "keys warm up again (allow_state_rebuild)",
                extra={"topic": topic, "partitions": lost},
            )
            return
        raise StateLostError(
            f"state changelog '{topic}' has no state for ticks partitions {lost}, although "
            f"group '{self._settings.group_id}' has committed offsets for them: the "
            "changelog was deleted or recreated. Restore it, or start once with "
            "STREAMCAST_ALLOW_STATE_REBUILD=true to warm every key up again (forecasts "
            "pause for one window of intervals)"
        )
