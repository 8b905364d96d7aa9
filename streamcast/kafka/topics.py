"""Topic administration: check the ticks topic, create the output topics and the
compacted state changelog (or check them when they exist).

Every admin answer's error codes are checked (aiokafka hands them back without raising):
a topic that does not exist (code 3) is "absent", a topic that already exists (36) is
fine when creating, anything else is raised as streamcast's own error. A topic that was
just created is not visible to every request at once (describe and describe-configs may
answer "unknown topic" for a moment), so creation waits, bounded, until each new topic
is described with all its partitions led; only then is it checked or used.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import for_code

from streamcast.config import ClientSettings, Settings
from streamcast.errors import AuthorizationError, StateLostError, TopicError, TransientError
from streamcast.kafka.clients import client_options, start_client
from streamcast.kafka.errors import map_kafka_errors, translate

log = logging.getLogger(__name__)

#: error code Kafka answers for a topic that does not exist
UNKNOWN_TOPIC_OR_PARTITION = 3
#: error code of a CreateTopics request for a topic that exists already
TOPIC_ALREADY_EXISTS = 36
#: Kafka's default limit of a record batch (``message.max.bytes``: 1 MiB + 12)
KAFKA_DEFAULT_BATCH_LIMIT = 1_048_588
#: how long a new topic may take to become visible to every request
VISIBLE_TIMEOUT_S = 15.0
VISIBLE_POLL_S = 0.1


async def ensure_topics(settings: Settings) -> int:
    """Check the ticks topic and create the output topics that are missing.

    Forecasts, alerts and dead-letter topics get the ticks topic's partition count and
    replication factor; with durable state the state changelog is created (compacted) or
    checked too. Returns the partition count. Raises
    :class:`TopicError` when the ticks topic does not exist (the service never creates
    its input) or a topic it needs is unusable.
    """
    with map_kafka_errors("topic check"):
        admin = AIOKafkaAdminClient(**client_options(settings))
        await start_client(admin, settings)
        try:
            return await _ensure_topics(admin, settings)
        finally:
            await admin.close()


async def _ensure_topics(admin: AIOKafkaAdminClient, settings: Settings) -> int:
    topics = settings.topics
    ticks = (await describe(admin, [topics.ticks]))[topics.ticks]
    if ticks is None:
        raise TopicError(
            f"ticks topic '{topics.ticks}' does not exist on {settings.bootstrap_servers}: "
            "create it (its partition count sets the service's parallelism) or set "
            "STREAMCAST_TOPICS__TICKS"
        )
    partitions = len(ticks["partitions"])
    replication = len(ticks["partitions"][0]["replicas"])
    wanted = list(dict.fromkeys([topics.forecasts, topics.alerts, topics.dead_letter]))
    found = await describe(admin, wanted)
    missing = [name for name in wanted if found[name] is None]
    if missing:
        configs = output_topic_configs(settings)
        await create(
            admin,
            [NewTopic(name, partitions, replication, topic_configs=configs) for name in missing],
        )
        log.info("created output topics", extra={"topics": missing, "partitions": partitions})
    if settings.durable_state:
        await ensure_changelog(admin, settings, partitions, replication)
        wanted.append(topics.state_changelog)
    await check_batch_limits(admin, settings, wanted)
    return partitions


def output_topic_configs(settings: Settings) -> dict[str, str]:
    """The configs an output topic streamcast creates gets: ``max.message.bytes`` to take
    the producer's batches when ``producer_max_batch_bytes`` is above Kafka's default
    (else none: the broker's own default stands)."""
    wanted = settings.producer_max_batch_bytes
    return {"max.message.bytes": str(wanted)} if wanted > KAFKA_DEFAULT_BATCH_LIMIT else {}


async def require_topic(settings: ClientSettings, topic: str) -> int:
    """The partition count of ``topic``; :class:`TopicError` if it does not exist."""
    with map_kafka_errors("topic check"):
        admin = AIOKafkaAdminClient(**client_options(settings))
        await start_client(admin, settings)
        try:
            described = (await describe(admin, [topic]))[topic]
        finally:
            await admin.close()
    if described is None:
        raise TopicError(
            f"topic '{topic}' does not exist on {settings.bootstrap_servers} "
            "(topic auto-creation is off): create it first"
        )
    return len(described["partitions"])


async def ensure_changelog(
    admin: AIOKafkaAdminClient, settings: Settings, partitions: int, replication: int
) -> None:
    """Create the changelog topic when absent; raise :class:`TopicError` when it exists
    with another partition count than the ticks topic or without compaction."""
    name = settings.topics.state_changelog
    found = (await describe(admin, [name]))[name]
    if found is None:
        config = {**output_topic_configs(settings), "cleanup.policy": "compact"}
        await create(admin, [NewTopic(name, partitions, replication, topic_configs=config)])
        log.info("created state changelog", extra={"topic": name, "partitions": partitions})
        found = (await describe(admin, [name]))[name]
        assert found is not None  # create() waited until it is described
    have = len(found["partitions"])
    if have != partitions:
        raise TopicError(
            f"state changelog '{name}' has {have} partitions but ticks topic "
            f"'{settings.topics.ticks}' has {partitions}: they must match (the state of ticks "
            "partition p lives in changelog partition p). Delete the changelog (state is "
            "rebuilt by warm-up) or set STREAMCAST_TOPICS__STATE_CHANGELOG to a new name"
        )
    policy = await cleanup_policy(admin, name)
    if "compact" not in policy.split(","):
        raise TopicError(
            f"state changelog '{name}' has cleanup.policy={policy}: it must be compacted "
            "(otherwise old state is deleted by retention and restores lose keys). Run "
            f"kafka-configs --alter --entity-type topics --entity-name {name} "
            "--add-config cleanup.policy=compact"
        )


async def check_outputs_exist(settings: Settings) -> None:
    """After a failed delivery: raise if an output topic or the changelog was deleted
    while the service ran (no retry brings them back); return quietly when they exist or
    the broker cannot be asked (then the failure was transient)."""
    topics = settings.topics
    names = [topics.forecasts, topics.alerts, topics.dead_letter]
    if settings.durable_state:
        names.append(topics.state_changelog)
    try:
        with map_kafka_errors("topic check"):
            admin = AIOKafkaAdminClient(**client_options(settings))
            await start_client(admin, settings)
            try:
                found = await describe(admin, list(dict.fromkeys(names)))
            finally:
                await admin.close()
    except TransientError:
        return
    if settings.durable_state and found.get(topics.state_changelog) is None:
        raise StateLostError(
            f"state changelog '{topics.state_changelog}' was deleted while the service ran: "
            "every key's durable state is gone. Recreate it by restarting with "
            "STREAMCAST_ALLOW_STATE_REBUILD=true (keys warm up again), or restore the topic"
        )
    missing = sorted(name for name, entry in found.items() if entry is None)
    if missing:
        raise TopicError(
            f"output topics {missing} were deleted while the service ran: restart it (it "
            "creates them again) or recreate them"
        )


async def describe(
    admin: AIOKafkaAdminClient, names: Sequence[str]
) -> dict[str, dict[str, Any] | None]:
    """Each topic's description, or None when it does not exist; other errors raise."""
    out: dict[str, dict[str, Any] | None] = dict.fromkeys(names)
    for entry in await admin.describe_topics(list(names)):
        code = int(entry["error_code"])
        if code == UNKNOWN_TOPIC_OR_PARTITION or (code == 0 and not entry["partitions"]):
            continue
        _raise_for(code, f"describe topic '{entry['topic']}'")
        out[entry["topic"]] = entry
    return out


async def create(
    admin: AIOKafkaAdminClient, topics: Sequence[NewTopic], timeout_s: float = VISIBLE_TIMEOUT_S
) -> None:
    """Create ``topics`` (one that exists already is fine: another instance may have been
    first), then wait until every one is described with all its partitions led."""
    response = await admin.create_topics(list(topics))
    for entry in response.topic_errors:
        name, code = entry[0], int(entry[1])
        if code not in (0, TOPIC_ALREADY_EXISTS):
            message = entry[2] if len(entry) > 2 and entry[2] else ""
            _raise_for(code, f"create topic '{name}'" + (f" ({message})" if message else ""))
    await _until_visible(admin, {t.name: t.num_partitions for t in topics}, timeout_s)


async def _until_visible(
    admin: AIOKafkaAdminClient, partitions: dict[str, int], timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    waiting = dict(partitions)
    while True:
        found = await describe(admin, list(waiting))
        for name, entry in found.items():
            if entry is not None and _led(entry):
                waiting.pop(name)
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise TransientError(
                f"topics {sorted(waiting)} were created but are not visible after "
                f"{timeout_s:.0f}s: the cluster is slow to propagate metadata; retrying"
            )
        await asyncio.sleep(VISIBLE_POLL_S)


def _led(entry: dict[str, Any]) -> bool:
    """True when every partition of a described topic has a leader."""
    return bool(entry["partitions"]) and all(
        int(p.get("leader", -1)) >= 0 for p in entry["partitions"]
    )


async def cleanup_policy(
    admin: AIOKafkaAdminClient, topic: str, timeout_s: float = VISIBLE_TIMEOUT_S
) -> str:
    """The topic's ``cleanup.policy`` (:func:`topic_config`)."""
    return await topic_config(admin, topic, "cleanup.policy", timeout_s)


async def topic_config(
    admin: AIOKafkaAdminClient, topic: str, name: str, timeout_s: float = VISIBLE_TIMEOUT_S
) -> str:
    """The topic's config ``name`` as in effect (the broker's default unless the topic
    sets it); waits (bounded) while the broker does not know the topic yet, raises for
    any other error code."""
    deadline = time.monotonic() + timeout_s
    resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs={name: None})
    while True:
        for response in await admin.describe_configs([resource]):
            for entry in response.resources:
                # (error_code, error_message, resource_type, resource_name, config_entries)
                code = int(entry[0])
                if code == UNKNOWN_TOPIC_OR_PARTITION:
                    break
                _raise_for(code, f"describe the configs of topic '{topic}' ({entry[1]})")
                for key, value, *_ in entry[4]:
                    if key == name:
                        return str(value)
                raise TopicError(f"the broker did not report {name} of topic '{topic}'")
        if time.monotonic() > deadline:
            raise TransientError(f"topic '{topic}' is not visible to describe-configs yet")
        await asyncio.sleep(VISIBLE_POLL_S)


async def check_batch_limits(
    admin: AIOKafkaAdminClient, settings: Settings, topics: Sequence[str]
) -> None:
    """Raise :class:`TopicError` when ``producer_max_batch_bytes`` is more than one of
    ``topics`` takes (:func:`batch_limit_problem`)."""
    for topic in dict.fromkeys(topics):
        problem = await batch_limit_problem(admin, settings, topic)
        if problem is not None:
            raise TopicError(problem)


async def batch_limit_problem(
    admin: AIOKafkaAdminClient, settings: Settings, topic: str
) -> str | None:
    """Why ``producer_max_batch_bytes`` does not fit the topic's ``max.message.bytes``
    (the limit of a whole record batch: the broker would refuse a full batch on every
    retry, and the service would stop on it), or None. A topic whose configs may not be
    described (no DescribeConfigs) is not checked: a warning says so."""
    wanted = settings.producer_max_batch_bytes
    try:
        limit = int(await topic_config(admin, topic, "max.message.bytes"))
    except AuthorizationError:  # the service can still run: only the check is skipped
        log.warning(
            "cannot read the topic's max.message.bytes (DescribeConfigs not granted): "
            "producer_max_batch_bytes is not checked against it",
            extra={"topic": topic, "producer_max_batch_bytes": wanted},
        )
        return None
    if wanted <= limit:
        return None
    return (
        f"STREAMCAST_PRODUCER_MAX_BATCH_BYTES (producer_max_batch_bytes): {wanted} is more "
        f"than topic '{topic}' takes (max.message.bytes={limit}): the broker would refuse "
        f"full record batches and the service would stop on them; set it to {limit} or "
        "less, or raise the topic's max.message.bytes"
    )


def _raise_for(code: int, operation: str) -> None:
    """Raise streamcast's error for a non-zero Kafka error code."""
    if code == 0:
        return
    exc = for_code(code)()
    mapped = translate(exc, operation)
    raise mapped if mapped is not None else TopicError(f"{operation}: {exc}")
