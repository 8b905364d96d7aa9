"""Setting the topics up before the first start, and checking them: ``streamcast topics``.

:func:`create_topics` creates the ticks topic (the service never creates its input) with
the partitions and replication asked for, then the output topics and, with durable state,
the compacted changelog, all with the ticks topic's partition count and replication
factor. :func:`check_topics` reports, for each topic the service needs, whether it exists
and is usable: the changelog must have the ticks topic's partition count (the state of
ticks partition p lives in changelog partition p) and ``cleanup.policy=compact``, and
every output topic must take the producer's record batches (``max.message.bytes``).
Each topic gets one :class:`TopicStatus`; nothing is ever deleted or altered.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamcast.config import Settings
from streamcast.kafka.clients import client_options, start_client
from streamcast.kafka.errors import map_kafka_errors
from streamcast.kafka.topics import (
    batch_limit_problem,
    cleanup_policy,
    create,
    describe,
    output_topic_configs,
)

State = Literal["ok", "created", "missing", "wrong"]
#: the replication factor of a new ticks topic when none is asked for, capped by brokers
DEFAULT_REPLICATION = 3


@dataclass(frozen=True)
class TopicStatus:
    """One topic: what it is for, its name, and whether it is usable (``problem``)."""

    role: str
    name: str
    state: State
    detail: str

    @property
    def problem(self) -> bool:
        """True when the service cannot use the topic as it is."""
        return self.state in ("missing", "wrong")

    def line(self) -> str:
        """The status as one line: ``state  role topic 'name': detail``."""
        return f"{self.state:<8} {self.role} topic '{self.name}': {self.detail}"


def _roles(settings: Settings) -> list[tuple[str, str]]:
    topics = settings.topics
    roles = [
        ("forecasts", topics.forecasts),
        ("alerts", topics.alerts),
        ("dead-letter", topics.dead_letter),
    ]
    return roles + ([("state changelog", topics.state_changelog)] if settings.durable_state else [])


def _shape(entry: dict[str, Any]) -> tuple[int, int]:
    """``(partitions, replication factor)`` of a described topic."""
    return len(entry["partitions"]), len(entry["partitions"][0]["replicas"])


@contextlib.asynccontextmanager
async def _admin(settings: Settings, operation: str) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client; its errors come out as streamcast's own."""
    with map_kafka_errors(operation):
        admin = AIOKafkaAdminClient(**client_options(settings))
        await start_client(admin, settings)
        try:
            yield admin
        finally:
            await admin.close()


async def check_topics(settings: Settings) -> list[TopicStatus]:
    """The status of every topic the service reads or writes (ticks first)."""
    async with _admin(settings, "topic check") as admin:
        return await _check(admin, settings)


async def _check(admin: AIOKafkaAdminClient, settings: Settings) -> list[TopicStatus]:
    ticks = settings.topics.ticks
    roles = _roles(settings)
    found = await describe(admin, list(dict.fromkeys([ticks, *(name for _, name in roles)])))
    entry = found[ticks]
    out: list[TopicStatus] = []
    if entry is None:
        out.append(
            TopicStatus(
                "ticks",
                ticks,
                "missing",
                "the service's input must exist before it starts: "
                "streamcast topics create --partitions N creates it",
            )
        )
        partitions = None
    else:
        partitions, replication = _shape(entry)
        out.append(
            TopicStatus("ticks", ticks, "ok", f"{partitions} partitions, replication {replication}")
        )
    for role, name in roles:
        described = found[name]
        if described is None:
            fix = "streamcast topics create makes it (so does the service at start)"
            out.append(TopicStatus(role, name, "missing", fix))
            continue
        have, replication = _shape(described)
        detail = f"{have} partitions, replication {replication}"
        problem = None
        if role == "state changelog":
            problem = await _changelog_problem(admin, name, have, partitions, ticks)
            detail += ", compacted"
        problem = problem or await batch_limit_problem(admin, settings, name)
        if problem is not None:
            out.append(TopicStatus(role, name, "wrong", problem))
            continue
        out.append(TopicStatus(role, name, "ok", detail))
    return out


async def _changelog_problem(
    admin: AIOKafkaAdminClient, name: str, have: int, partitions: int | None, ticks: str
) -> str | None:
    if partitions is not None and have != partitions:
        return (
            f"{have} partitions but ticks topic '{ticks}' has {partitions}: they must match "
            "(the state of ticks partition p lives in changelog partition p); delete it (state "
            "is rebuilt by warm-up) or name a new one in STREAMCAST_TOPICS__STATE_CHANGELOG"
        )
    policy = await cleanup_policy(admin, name)
    if "compact" not in policy.split(","):
        return (
            f"cleanup.policy={policy}, must be compact (retention would delete old state): "
            f"kafka-configs --alter --entity-type topics --entity-name {name} "
            "--add-config cleanup.policy=compact"
        )
    return None


async def create_topics(
    settings: Settings, partitions: int | None, replication: int | None
) -> list[TopicStatus]:
    """Create what is missing: the ticks topic with ``partitions`` (required when it does
    not exist) and ``replication`` (default: 3, or the number of brokers if fewer), then
    the others like it; returns every topic's status afterwards."""
    async with _admin(settings, "topic create") as admin:
        return await _create(admin, settings, partitions, replication)


async def _create(
    admin: AIOKafkaAdminClient, settings: Settings, partitions: int | None, replication: int | None
) -> list[TopicStatus]:
    ticks = settings.topics.ticks
    entry = (await describe(admin, [ticks]))[ticks]
    created: set[str] = set()
    notes: dict[str, str] = {}
    if entry is None:
        if partitions is None:
            return [
                TopicStatus(
                    "ticks",
                    ticks,
                    "missing",
                    "give --partitions N to create it (the partition count is the ceiling of "
                    "the service's parallelism and cannot be changed later without moving keys)",
                )
            ]
        if replication is None:
            brokers = len((await admin.describe_cluster())["brokers"])
            replication = min(DEFAULT_REPLICATION, brokers)
        await create(admin, [NewTopic(ticks, partitions, replication)])
        created.add(ticks)
    else:
        have, have_replication = _shape(entry)
        if partitions is not None and partitions != have:
            notes[ticks] = f" (not {partitions}: an existing topic is left as it is)"
        partitions, replication = have, have_replication
    missing = [
        (role, name)
        for role, name in _roles(settings)
        if (await describe(admin, [name]))[name] is None
    ]
    assert replication is not None
    new = [
        NewTopic(
            name,
            partitions,
            replication,
            topic_configs={
                **output_topic_configs(settings),
                **({"cleanup.policy": "compact"} if role == "state changelog" else {}),
            },
        )
        for role, name in missing
    ]
    if new:
        await create(admin, new)
        created.update(topic.name for topic in new)
    statuses = await _check(admin, settings)
    return [
        TopicStatus(
            s.role,
            s.name,
            "created" if s.name in created and s.state == "ok" else s.state,
            s.detail + notes.get(s.name, ""),
        )
        for s in statuses
    ]
