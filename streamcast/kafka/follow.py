"""Reading whole topics and then following them: what a materialised view needs.

:class:`TopicFollower` assigns itself every partition of its topics (no consumer group:
it never commits, so any number of readers can run and none disturbs anyone's offsets),
reads each from the beginning, ``read_committed`` (aborted transactions never show), and
keeps reading what arrives. It knows, per partition, the end offset at the moment it
started reading it (the last stable offset); :attr:`caught_up` turns true once every
partition's position has reached that mark, which is when a view restored from the topic
is as complete as the topic was at start. Topics that do not exist yet, and partitions
added later, are picked up by :meth:`refresh` (call it every few seconds), which also
measures the lag behind the current end offsets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streamcast.config import ClientSettings
from streamcast.kafka.clients import RETRY_BACKOFF_MS, client_options, stop_client
from streamcast.kafka.errors import map_kafka_errors
from streamcast.kafka.topics import describe
from streamcast.kafka.wire import Consumed

log = logging.getLogger(__name__)

#: how long the broker may hold a fetch for new data: bounds the delay of a new record
FETCH_MAX_WAIT_MS = 50
#: bytes per partition per fetch: large, so a restore reads in few round trips
PARTITION_FETCH_BYTES = 4 * 1024 * 1024


class TopicFollower:
    """Reads ``topics`` from the beginning and keeps following them (module docstring).

    An async context manager: ``async with TopicFollower(settings, ["forecasts"]) as f``,
    then ``await f.refresh()`` and ``await f.read(timeout_ms)`` in a loop.
    """

    def __init__(
        self, settings: ClientSettings, topics: Sequence[str], *, max_records: int = 5_000
    ) -> None:
        self._topics = list(dict.fromkeys(topics))
        self._max_records = max_records
        options = client_options(settings)
        self._consumer = AIOKafkaConsumer(
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            max_partition_fetch_bytes=PARTITION_FETCH_BYTES,
            retry_backoff_ms=RETRY_BACKOFF_MS,
            **options,
        )
        self._admin = AIOKafkaAdminClient(**options)
        #: end offset of each partition when reading it began: the catch-up mark
        self._start_end: dict[TopicPartition, int] = {}
        self._behind: set[TopicPartition] = set()
        self._end: dict[TopicPartition, int] = {}
        self._positions: dict[TopicPartition, int] = {}
        self._found: set[str] = set()
        self._started = False

    async def __aenter__(self) -> Self:
        with map_kafka_errors("connect"):
            await self._admin.start()
            self._started = True
            await self._consumer.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close both clients (idempotent)."""
        if self._started:
            self._started = False
            await stop_client(self._consumer)
            await self._admin.close()

    # -- what the view asks ---------------------------------------------------------------

    @property
    def missing_topics(self) -> list[str]:
        """Topics not found on the broker at the last :meth:`refresh`."""
        return [t for t in self._topics if t not in self._found]

    @property
    def caught_up(self) -> bool:
        """Every topic exists and every partition was read up to its catch-up mark."""
        return not self.missing_topics and not self._behind

    def behind(self) -> int:
        """Records still to read before :attr:`caught_up` (as of the last read)."""
        return sum(self._start_end[tp] - self._positions.get(tp, 0) for tp in self._behind)

    def lag(self) -> dict[str, int]:
        """Records per topic between the position and the end offset measured by the last
        :meth:`refresh` (0 when caught up with it)."""
        out = dict.fromkeys(self._found, 0)
        for tp, end in self._end.items():
            position = self._positions.get(tp, 0)
            out[tp.topic] = out.get(tp.topic, 0) + max(0, end - position)
        return out

    # -- the verbs ------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Find the topics and partitions (new ones are read from the beginning) and
        measure the current end offsets."""
        with map_kafka_errors("describe topics"):
            described = await describe(self._admin, self._topics)
        wanted = {
            TopicPartition(name, int(p["partition"]))
            for name, entry in described.items()
            if entry is not None
            for p in entry["partitions"]
        }
        self._found = {name for name, entry in described.items() if entry is not None}
        assigned = set(self._consumer.assignment())
        with map_kafka_errors("fetch offsets"):
            if wanted - assigned:
                await self._assign(sorted(wanted | assigned), sorted(wanted - assigned))
            if assigned | wanted:
                ends = await self._consumer.end_offsets(sorted(assigned | wanted))
                self._end = {tp: int(o) for tp, o in ends.items()}
                await self._update_positions()

    async def read(self, timeout_ms: int) -> list[Consumed]:
        """The records that arrived, in partition order, waiting at most ``timeout_ms``."""
        if not self._consumer.assignment():
            # nothing to fetch yet (topics missing): wait like a fetch would
            await asyncio.sleep(timeout_ms / 1000)
            return []
        with map_kafka_errors("fetch"):
            batches = await self._consumer.getmany(
                timeout_ms=timeout_ms, max_records=self._max_records
            )
            if self._behind or batches:
                await self._update_positions()
        return [m for part in batches.values() for m in part]

    # -- internals ------------------------------------------------------------------------

    async def _assign(self, every: list[TopicPartition], new: list[TopicPartition]) -> None:
        """Assign ``every`` partition; ``new`` ones from the beginning, the others where
        they were (``assign`` forgets positions, so they are sought back)."""
        kept = {tp: await self._consumer.position(tp) for tp in self._consumer.assignment()}
        self._consumer.assign(every)
        for tp, position in kept.items():
            self._consumer.seek(tp, position)
        await self._consumer.seek_to_beginning(*new)
        ends = await self._consumer.end_offsets(new)
        for tp in new:
            self._start_end[tp] = int(ends[tp])
            self._behind.add(tp)
        log.info(
            "following partitions from the beginning",
            extra={"partitions": [f"{tp.topic}[{tp.partition}]" for tp in new]},
        )

    async def _update_positions(self) -> None:
        consumer = self._consumer
        positions = {tp: int(await consumer.position(tp)) for tp in consumer.assignment()}
        self._positions = positions
        for tp in list(self._behind):
            if positions.get(tp, 0) >= self._start_end[tp]:
                self._behind.discard(tp)
