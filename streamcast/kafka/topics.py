"""Topic administration: check the ticks topic, create the output topics and the
compacted state changelog (or check them when they exist).
"""

from __future__ import annotations

import contextlib
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

from streamcast.config import ClientSettings, Settings
from streamcast.errors import TopicError
from streamcast.kafka.clients import client_options
from streamcast.kafka.errors import map_kafka_errors
from streamcast.kafka.guarantee import keeps_changelog

log = logging.getLogger(__name__)

#: error code Kafka answers for a topic that does not exist
UNKNOWN_TOPIC_OR_PARTITION = 3


async def ensure_topics(settings: Settings) -> int:
    """Check the ticks topic and create the output topics that are missing.

    Forecasts, alerts and dead-letter topics get the ticks topic's partition count and
    replication factor; in exactly-once mode the state changelog is created (compacted)
    or checked too. Returns the partition count. Raises :class:`TopicError` when the
    ticks topic does not exist (the service never creates its input).
    """
    with map_kafka_errors("topic check"):
        return await _ensure_topics(settings)


async def _ensure_topics(settings: Settings) -> int:
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
        if keeps_changelog(settings):
            await ensure_changelog(admin, settings, partitions, replication)
        return partitions
    finally:
        await admin.close()


async def require_topic(settings: ClientSettings, topic: str) -> int:
    """The partition count of ``topic``; :class:`TopicError` if it does not exist."""
    with map_kafka_errors("topic check"):
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


async def ensure_changelog(
    admin: AIOKafkaAdminClient, settings: Settings, partitions: int, replication: int
) -> None:
    """Create the changelog topic when absent; raise :class:`TopicError` when it exists
    with another partition count than the ticks topic or without compaction."""
    name = settings.topics.state_changelog
    described = await admin.describe_topics([name])
    found = described[0] if described else None
    if found is None or found["error_code"] != 0 or not found["partitions"]:
        # Another instance may create it first: that is fine, it is checked next start.
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(
                [
                    NewTopic(
                        name,
                        partitions,
                        replication,
                        topic_configs={"cleanup.policy": "compact"},
                    )
                ]
            )
        log.info("created state changelog", extra={"topic": name, "partitions": partitions})
        return
    have = len(found["partitions"])
    if have != partitions:
        raise TopicError(
            f"state changelog '{name}' has {have} partitions but ticks topic "
            f"'{settings.topics.ticks}' has {partitions}: they must match (the state of ticks "
            "partition p lives in changelog partition p). Delete the changelog (state is "
            "rebuilt by warm-up) or set STREAMCAST_TOPICS__STATE_CHANGELOG to a new name"
        )
    policy = await _cleanup_policy(admin, name)
    if "compact" not in policy.split(","):
        raise TopicError(
            f"state changelog '{name}' has cleanup.policy={policy}: it must be compacted "
            "(otherwise old state is deleted by retention and restores lose keys). Run "
            f"kafka-configs --alter --entity-type topics --entity-name {name} "
            "--add-config cleanup.policy=compact"
        )


async def _cleanup_policy(admin: AIOKafkaAdminClient, topic: str) -> str:
    responses = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic, configs={"cleanup.policy": None})]
    )
    for response in responses:
        for resource in response.resources:
            # (error_code, error_message, resource_type, resource_name, config_entries)
            for entry in resource[4]:
                if entry[0] == "cleanup.policy":
                    return str(entry[1])
    return "delete"
