"""The at-least-once sink without a broker: outputs acknowledged before offsets commit,
a retried delivery does not produce twice, a commit lost to a rebalance is not an error,
client errors come out as streamcast's own."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence, Set
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, KafkaTimeoutError, TopicAuthorizationFailedError

from streamcast.config import Settings
from streamcast.errors import AuthorizationError, TransientError
from streamcast.kafka.at_least_once import AtLeastOnceSink
from streamcast.kafka.wire import OutRecord
from streamcast.service.metrics import Metrics


class FakeBuilder:
    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes | None]] = []

    def append(
        self, *, timestamp: Any, key: bytes | None, value: bytes | None, headers: Any
    ) -> bool:
        self.records.append((key, value))
        return True

    def record_count(self) -> int:
        return len(self.records)

    def close(self) -> None:
        pass


class FakeProducer:
    def __init__(self, journal: list[str], failures: int = 0) -> None:
        self.journal = journal
        self.failures = failures

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1}

    def create_batch(self) -> FakeBuilder:
        return FakeBuilder()

    async def send_batch(self, builder: FakeBuilder, topic: str, partition: int) -> Any:
        if self.failures:
            self.failures -= 1
            raise KafkaTimeoutError("no acknowledgement")
        self.journal.append(f"produce {topic}[{partition}] x{builder.record_count()}")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


class FakeConsumer:
    def __init__(self, journal: list[str], commit_error: BaseException | None = None) -> None:
        self.journal = journal
        self.commit_error = commit_error

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition("ticks", 0)}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.commit_error is not None:
            error, self.commit_error = self.commit_error, None
            raise error
        self.journal.append(f"commit {sorted((tp.partition, o) for tp, o in offsets.items())}")

    def highwater(self, tp: TopicPartition) -> int:
        return 50


def _sink(producer_failures: int = 0, commit_error: BaseException | None = None) -> tuple[
    AtLeastOnceSink, list[str]
]:  # fmt: skip
    journal: list[str] = []
    sink = AtLeastOnceSink(Settings(_env_file=None), NoState(), Metrics())
    sink._producer = FakeProducer(journal, producer_failures)
    sink._consumer = FakeConsumer(journal, commit_error)

    async def outputs_exist(settings: Settings) -> None:
        journal.append("checked topics")

    sink._check_outputs = outputs_exist
    return sink, journal


class NoState:
    def restore(self, partition: int, records: Sequence[tuple[str, bytes]], now_s: float) -> int:
        return 0

    def drop_partitions(self, partitions: Set[int]) -> int:
        return 0


OUTPUTS = {0: [OutRecord("forecasts", b"k", b"v", partition=0)]}
OFFSETS = {("ticks", 0): 7, ("ticks", 1): 3}  # partition 1 is not owned (any more)


async def test_outputs_are_acknowledged_before_the_offsets_of_owned_partitions_commit() -> None:
    sink, journal = _sink()
    await sink.deliver(OUTPUTS, OFFSETS)
    assert journal == ["produce forecasts[0] x1", "commit [(0, 7)]"]


async def test_a_failed_produce_is_transient_and_commits_nothing() -> None:
    sink, journal = _sink(producer_failures=1)
    with pytest.raises(TransientError, match="produce"):
        await sink.deliver(OUTPUTS, OFFSETS)
    assert journal == ["checked topics"], "a deleted topic would have been an error"
    journal.clear()
    await sink.deliver(OUTPUTS, OFFSETS)
    assert journal == ["produce forecasts[0] x1", "commit [(0, 7)]"]


async def test_state_records_go_out_after_the_outputs_and_before_the_commit() -> None:
    """Restored state is then never behind the committed offsets, and a key ahead of
    them skips what it applied (at-least-once with durable state)."""
    sink, journal = _sink()
    changelog = Settings(_env_file=None).topics.state_changelog
    outputs = {
        0: [
            OutRecord(changelog, b"k", b"state", partition=0),
            OutRecord("forecasts", b"k", b"v", partition=0),
        ]
    }
    await sink.deliver(outputs, OFFSETS)
    assert journal == [
        "produce forecasts[0] x1",
        f"produce {changelog}[0] x1",
        "commit [(0, 7)]",
    ]


async def test_a_retried_delivery_after_a_failed_commit_only_commits() -> None:
    sink, journal = _sink(commit_error=KafkaTimeoutError("coordinator away"))
    with pytest.raises(TransientError, match="commit"):
        await sink.deliver(OUTPUTS, OFFSETS)
    await sink.deliver(OUTPUTS, OFFSETS)
    assert journal == ["produce forecasts[0] x1", "checked topics", "commit [(0, 7)]"]


async def test_a_commit_lost_to_a_rebalance_is_a_warning_not_an_error() -> None:
    sink, journal = _sink(commit_error=CommitFailedError("rebalanced"))
    await sink.deliver(OUTPUTS, OFFSETS)
    assert journal == ["produce forecasts[0] x1"]


async def test_an_authorization_failure_is_not_retried() -> None:
    sink, _ = _sink(commit_error=TopicAuthorizationFailedError())
    with pytest.raises(AuthorizationError, match="ACLs"):
        await sink.deliver(OUTPUTS, OFFSETS)
