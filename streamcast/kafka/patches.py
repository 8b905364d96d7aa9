"""Fixes of aiokafka 0.14 that streamcast's correctness depends on, applied once when the
Kafka edge is imported (:mod:`streamcast.kafka.clients` imports this module).

**Committed offsets read as "none" while the group coordinator loads.** Since
OffsetFetch v2 (KIP-88) the broker reports group-level errors in the response's
top-level ``error_code`` — ``COORDINATOR_LOAD_IN_PROGRESS`` right after a broker restart,
``NOT_COORDINATOR`` after a coordinator move — with no per-partition error. aiokafka's
``GroupCoordinator._do_fetch_commit_offsets`` only looks at the per-partition codes, so
it reads such an answer as "no committed offset": a consumer then starts from
``auto_offset_reset`` (re-reading or skipping everything), and the exactly-once sink
seeks to the beginning. The same bug was fixed in other clients (pykafka #958, sarama
#3574). The replacement below is aiokafka's method with the top-level check added: a
retriable group error is raised, so aiokafka's own callers retry it, and
``NOT_COORDINATOR`` also marks the coordinator dead, exactly as the per-partition path
does. ``tests/unit/test_kafka_patches.py`` reproduces the bug against the unpatched
method.

**A fetch that raises or is cancelled switches off ``max_poll_interval_ms`` for good.**
``SubscriptionState.fetch_context`` counts the ``getone``/``getmany`` calls under way
and stamps when the last one ended; the heartbeat task leaves the group once no fetch
has been under way for ``max_poll_interval_ms``, so a consumer that stopped polling
hands its partitions to the rest of the group. The context manager has no ``finally``:
a fetch ended by an exception (a cancelled ``getmany``, an offset out of range, a
corrupt record) leaves the count raised, the consumer then looks busy fetching forever,
and a consumer that stops polling keeps its partitions until its process exits. The
replacement is the same context manager with the count restored in a ``finally``;
``tests/unit/test_kafka_patches.py`` reproduces the bug, and
``tests/integration/test_broker.py`` shows the partitions moving on a real broker.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

import aiokafka.errors as kafka_errors
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.consumer.subscription_state import SubscriptionState
from aiokafka.protocol.commit import OffsetFetchRequest
from aiokafka.structs import OffsetAndMetadata, TopicPartition

log = logging.getLogger(__name__)

UNKNOWN_OFFSET = -1

#: the methods as aiokafka ships them (kept for the tests that reproduce the bugs)
UNPATCHED = GroupCoordinator._do_fetch_commit_offsets
UNPATCHED_FETCH_CONTEXT = SubscriptionState.fetch_context


def _raise_for(coordinator: Any, code: int, where: str) -> None:
    """aiokafka's per-partition error handling, for an error code from ``where``."""
    error_type = kafka_errors.for_code(code)
    if error_type is kafka_errors.NoError:
        return
    log.debug("error fetching committed offsets (%s): %s", where, error_type.__name__)
    if error_type is kafka_errors.GroupLoadInProgressError:
        raise error_type()
    if error_type is kafka_errors.NotCoordinatorForGroupError:
        coordinator.coordinator_dead()
        raise error_type()
    if error_type is kafka_errors.GroupAuthorizationFailedError:
        raise error_type(coordinator.group_id)
    raise kafka_errors.KafkaError(repr(error_type()))


async def _do_fetch_commit_offsets(
    self: Any, partitions: list[TopicPartition]
) -> dict[TopicPartition, OffsetAndMetadata]:
    by_topic: dict[str, list[int]] = collections.defaultdict(list)
    for tp in partitions:
        by_topic[tp.topic].append(tp.partition)
    response = await self._send_req(OffsetFetchRequest(self.group_id, list(by_topic.items())))
    _raise_for(self, int(getattr(response, "error_code", 0)), "group")
    offsets: dict[TopicPartition, OffsetAndMetadata] = {}
    for topic, topic_partitions in response.topics:
        for partition, offset, metadata, error_code in topic_partitions:
            tp = TopicPartition(topic, partition)
            if error_code == kafka_errors.UnknownTopicOrPartitionError.errno:
                log.warning("OffsetFetchRequest -- unknown topic %s", topic)
                continue
            _raise_for(self, error_code, str(tp))
            if offset != UNKNOWN_OFFSET:
                offsets[tp] = OffsetAndMetadata(offset, metadata)
    return offsets


@contextlib.contextmanager
def fetch_context(self: Any) -> Iterator[None]:
    """aiokafka's ``SubscriptionState.fetch_context``, exception-safe."""
    self._fetch_count += 1
    try:
        yield
    finally:
        self._fetch_count -= 1
        if self._fetch_count == 0:
            self._last_fetch_ended = time.monotonic()


def apply() -> None:
    """Install the fixes (idempotent)."""
    GroupCoordinator._do_fetch_commit_offsets = _do_fetch_commit_offsets
    SubscriptionState.fetch_context = fetch_context
