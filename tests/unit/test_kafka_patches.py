"""The aiokafka fixes streamcast applies: a group-level error in an OffsetFetch answer
(KIP-88, v2+) is an error, not "no committed offset"; a fetch that raised is over."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import errors as kafka
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.consumer.subscription_state import SubscriptionState
from aiokafka.structs import TopicPartition

import streamcast.kafka.clients  # noqa: F401  (importing the edge applies the fix)
from streamcast.kafka import patches

TP = TopicPartition("ticks", 0)


@dataclass
class Answer:
    """An OffsetFetch v2+ response: a top-level error code and per-partition entries."""

    error_code: int
    topics: list[tuple[str, list[tuple[int, int, str, int]]]]


@dataclass
class FakeCoordinator:
    answer: Answer
    group_id: str = "g"
    dead: list[bool] = field(default_factory=list)

    async def _send_req(self, request: Any) -> Answer:
        return self.answer

    def coordinator_dead(self) -> None:
        self.dead.append(True)


LOADING = Answer(kafka.GroupLoadInProgressError.errno, [("ticks", [(0, -1, "", 0)])])


async def test_aiokafka_reads_a_loading_coordinator_as_no_committed_offset() -> None:
    """The bug, reproduced against the method as aiokafka ships it."""
    assert await patches.UNPATCHED(FakeCoordinator(LOADING), [TP]) == {}


async def test_the_fixed_method_is_installed_and_raises_the_retriable_error() -> None:
    assert GroupCoordinator._do_fetch_commit_offsets is patches._do_fetch_commit_offsets
    with pytest.raises(kafka.GroupLoadInProgressError) as info:
        await GroupCoordinator._do_fetch_commit_offsets(FakeCoordinator(LOADING), [TP])
    assert info.value.retriable


async def test_not_coordinator_at_group_level_marks_the_coordinator_dead() -> None:
    moved = FakeCoordinator(Answer(kafka.NotCoordinatorForGroupError.errno, []))
    with pytest.raises(kafka.NotCoordinatorForGroupError):
        await GroupCoordinator._do_fetch_commit_offsets(moved, [TP])
    assert moved.dead == [True]


async def test_a_clean_answer_gives_the_committed_offsets() -> None:
    clean = FakeCoordinator(Answer(0, [("ticks", [(0, 42, "m", 0), (1, -1, "", 0)])]))
    offsets = await GroupCoordinator._do_fetch_commit_offsets(clean, [TP])
    assert {tp: o.offset for tp, o in offsets.items()} == {TP: 42}


def _after_a_fetch_that_raised(context: Any) -> SubscriptionState:
    """A subscription whose only fetch ended by an exception, a while ago."""
    state = SubscriptionState()
    with pytest.raises(asyncio.CancelledError), context(state):
        raise asyncio.CancelledError  # as a cancelled getmany ends
    time.sleep(0.02)
    return state


async def test_aiokafka_counts_a_fetch_that_raised_as_under_way_for_good() -> None:
    """The bug: idle time stays 0, so ``max_poll_interval_ms`` never trips."""
    assert _after_a_fetch_that_raised(patches.UNPATCHED_FETCH_CONTEXT).fetcher_idle_time == 0


async def test_the_fixed_fetch_context_is_installed_and_ends_a_fetch_that_raised() -> None:
    assert SubscriptionState.fetch_context is patches.fetch_context
    assert _after_a_fetch_that_raised(SubscriptionState.fetch_context).fetcher_idle_time >= 0.02
