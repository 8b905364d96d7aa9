"""Exactly-once through crashes, rebalances and a broker restart (real broker, real kills).

Each scenario streams ticks (with malformed ones mixed in) into a 4-partition topic while
``streamcast serve`` subprocesses in ``exactly_once`` mode are disrupted, then checks what
a read_committed consumer sees against an uninterrupted in-process run of the same
decoder and pipeline: every forecast exactly once with equal values (1e-6), every dead
letter exactly once (by source partition and offset). The scenarios are those of
``scripts/chaos``, which runs them with other parameters.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamcast.config import Settings
from streamcast.errors import TopicError
from streamcast.kafka.clients import client_options
from streamcast.kafka.topics import cleanup_policy, ensure_changelog, ensure_topics, topic_config
from tests.support import chaos
from tests.support.kafka import create_topics, kafka_local, unique_topic

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _check(verdict: object) -> None:
    report = verdict.report()  # type: ignore[attr-defined]
    assert verdict.ok, report  # type: ignore[attr-defined]
    assert verdict.expected_forecasts > 0, report  # type: ignore[attr-defined]
    assert verdict.expected_dead_letters > 0, report  # type: ignore[attr-defined]


async def test_kill_9_five_times_mid_stream_output_exactly_once(
    bootstrap: str, tmp_path: Path
) -> None:
    sc = chaos.Scenario(ticks=50_000, keys=100, partitions=4, kills=5, pace_s=40.0)
    verdict = await chaos.run_scenario("crash", bootstrap, tmp_path, sc)
    _check(verdict)
    assert verdict.disruptions == 5
    # every lifetime restored its partitions from the changelog before processing them
    assert len(verdict.restores) >= 6, verdict.report()
    assert max(r["keys"] for r in verdict.restores) == 100, verdict.restores


async def test_sigterm_drains_and_a_restart_continues_from_the_changelog(
    bootstrap: str, tmp_path: Path
) -> None:
    sc = chaos.Scenario(
        ticks=10_000, keys=50, kills=2, pace_s=12.0, seed=5, stop_signal=signal.SIGTERM
    )
    verdict = await chaos.run_scenario("crash", bootstrap, tmp_path, sc)
    _check(verdict)
    log = (tmp_path / "crash.log").read_text()
    assert log.count('"msg":"stopped"') == 2, "both stops drained and exited cleanly"


async def test_rebalance_member_killed_and_member_added_exactly_once(
    bootstrap: str, tmp_path: Path
) -> None:
    sc = chaos.Scenario(ticks=20_000, keys=60, partitions=4, pace_s=25.0, seed=7)
    verdict = await chaos.run_scenario("rebalance", bootstrap, tmp_path, sc)
    _check(verdict)
    assert sum(r["keys"] for r in verdict.restores) > 0, "partitions moved with their state"


async def test_broker_restart_mid_stream_recovers_by_itself_exactly_once(tmp_path: Path) -> None:
    broker = kafka_local.LocalBroker(
        kafka_local.BrokerConfig(port=kafka_local.free_port(), data_dir=tmp_path / "kafka")
    )
    bootstrap = broker.start(timeout=90)
    try:
        sc = chaos.Scenario(ticks=20_000, keys=60, partitions=4, pace_s=20.0, seed=3)
        verdict = await chaos.run_scenario(
            "broker-restart", bootstrap, tmp_path / "run", sc, broker
        )
    finally:
        broker.stop()
    _check(verdict)


# -- the changelog topic is created right, and checked ----------------------------------------


def _settings(bootstrap: str, ticks: str, changelog: str) -> Settings:
    return Settings(
        _env_file=None,
        bootstrap_servers=bootstrap,
        processing_guarantee="exactly_once",
        topics={
            "ticks": ticks,
            "forecasts": f"{ticks}-fc",
            "alerts": f"{ticks}-al",
            "dead_letter": f"{ticks}-dl",
            "state_changelog": changelog,
        },
    )


async def _changelog_config(bootstrap: str, topic: str) -> tuple[int, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
        policy = await cleanup_policy(admin, topic)
    finally:
        await admin.close()
    return len(described[0]["partitions"]), policy


async def test_changelog_created_compacted_with_the_ticks_partitions(bootstrap: str) -> None:
    ticks = unique_topic("eos-ticks")
    await create_topics(bootstrap, [ticks], partitions=3)
    settings = _settings(bootstrap, ticks, f"{ticks}-state")
    assert await ensure_topics(settings) == 3
    assert await _changelog_config(bootstrap, f"{ticks}-state") == (3, "compact")
    assert await ensure_topics(settings) == 3  # present and right: accepted as it is


async def test_a_correct_changelog_created_a_moment_ago_is_accepted(bootstrap: str) -> None:
    """A second instance starting while the changelog propagates must not refuse it:
    right after CreateTopics, describe and describe-configs may answer "unknown topic"
    (error code 3) with no entries; the check waits instead of reading that as absent
    or as cleanup.policy=delete."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for _ in range(5):  # the window is short: try it several times
            ticks = unique_topic("eos-ticks")
            await create_topics(bootstrap, [ticks], partitions=3)
            settings = _settings(bootstrap, ticks, f"{ticks}-state")
            raw = NewTopic(f"{ticks}-state", 3, 1, topic_configs={"cleanup.policy": "compact"})
            await admin.create_topics([raw])  # no wait: the other instance just did this
            await ensure_changelog(admin, settings, 3, 1)
    finally:
        await admin.close()


@pytest.mark.parametrize(
    ("partitions", "policy", "message"),
    [
        (2, "compact", "has 2 partitions but ticks topic .* has 3: they must match"),
        (3, "delete", "has cleanup.policy=delete: it must be compacted"),
    ],
)
async def test_changelog_mismatch_is_a_clear_error(
    bootstrap: str, partitions: int, policy: str, message: str
) -> None:
    ticks = unique_topic("eos-ticks")
    await create_topics(bootstrap, [ticks], partitions=3)
    await create_topics(
        bootstrap, [f"{ticks}-state"], partitions=partitions, config={"cleanup.policy": policy}
    )
    settings = _settings(bootstrap, ticks, f"{ticks}-state")
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        with pytest.raises(TopicError, match=message):
            await ensure_changelog(admin, settings, 3, 1)
    finally:
        await admin.close()


async def test_a_producer_batch_larger_than_an_output_topic_takes_is_refused_at_start(
    bootstrap: str,
) -> None:
    """A full batch above the topic's max.message.bytes is refused by the broker on every
    retry (the service stopped on its first large micro-batch, again after each restart):
    the start names the setting, the topic and both sizes instead."""
    ticks = unique_topic("limit-ticks")
    await create_topics(bootstrap, [ticks])
    settings = _settings(bootstrap, ticks, f"{ticks}-state")
    await create_topics(bootstrap, [f"{ticks}-dl"], config={"max.message.bytes": "200000"})
    small = settings.model_copy(update={"producer_max_batch_bytes": 200_000})
    assert await ensure_topics(small) == 1  # at the limit: fine
    large = settings.model_copy(update={"producer_max_batch_bytes": 200_001})
    with pytest.raises(TopicError) as info:
        await ensure_topics(large)
    assert str(info.value).startswith(
        "STREAMCAST_PRODUCER_MAX_BATCH_BYTES (producer_max_batch_bytes): 200001 is more than "
        f"topic '{ticks}-dl' takes (max.message.bytes=200000)"
    )


async def test_output_topics_are_created_to_take_batches_larger_than_kafkas_default(
    bootstrap: str,
) -> None:
    """With producer_max_batch_bytes above Kafka's 1 MiB default, the output topics the
    service creates take such batches (else its own start-up check would refuse them)."""
    ticks = unique_topic("big-ticks")
    await create_topics(bootstrap, [ticks])
    big = _settings(bootstrap, ticks, f"{ticks}-state").model_copy(
        update={"producer_max_batch_bytes": 4 * 1024 * 1024}
    )
    assert await ensure_topics(big) == 1
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for name in (f"{ticks}-fc", f"{ticks}-al", f"{ticks}-dl", f"{ticks}-state"):
            assert await topic_config(admin, name, "max.message.bytes") == str(4 * 1024 * 1024)
        assert await cleanup_policy(admin, f"{ticks}-state") == "compact"
    finally:
        await admin.close()
