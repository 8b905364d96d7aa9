"""``streamcast topics create|check`` against the real broker: create makes the ticks topic
and the others like it (the changelog compacted), check says what is missing or wrong,
one line per topic, with exit status 1."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from streamcast.kafka.topics import cleanup_policy, describe
from tests.support.kafka import create_topics, unique_topic
from tests.support.service import run_cli

pytestmark = pytest.mark.kafka


def _env(bootstrap: str, prefix: str) -> dict[str, str]:
    return {
        "STREAMCAST_BOOTSTRAP_SERVERS": bootstrap,
        "STREAMCAST_TOPICS__TICKS": f"{prefix}-ticks",
        "STREAMCAST_TOPICS__FORECASTS": f"{prefix}-forecasts",
        "STREAMCAST_TOPICS__ALERTS": f"{prefix}-alerts",
        "STREAMCAST_TOPICS__DEAD_LETTER": f"{prefix}-dlq",
        "STREAMCAST_TOPICS__STATE_CHANGELOG": f"{prefix}-state",
    }


async def _shapes(bootstrap: str, names: list[str]) -> dict[str, tuple[int, int, str]]:
    """``(partitions, replication, cleanup.policy)`` of each topic."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        found = await describe(admin, names)
        out = {}
        for name, entry in found.items():
            assert entry is not None, name
            parts = entry["partitions"]
            out[name] = (len(parts), len(parts[0]["replicas"]), await cleanup_policy(admin, name))
        return out
    finally:
        await admin.close()


async def test_create_then_check(bootstrap: str, tmp_path: Path) -> None:
    prefix = unique_topic("setup")
    env = _env(bootstrap, prefix)
    before = run_cli("topics", "check", cwd=tmp_path, env=env)
    assert before.returncode == 1, before.stdout + before.stderr
    lines = before.stdout.splitlines()
    assert len(lines) == 5 and all(line.startswith("missing") for line in lines), lines
    assert "streamcast topics create --partitions N" in lines[0]

    refused = run_cli("topics", "create", cwd=tmp_path, env=env)
    assert refused.returncode == 1
    assert refused.stdout.splitlines() == [
        f"missing  ticks topic '{prefix}-ticks': give --partitions N to create it (the "
        "partition count is the ceiling of the service's parallelism and cannot be changed "
        "later without moving keys)"
    ]

    made = run_cli("topics", "create", "--partitions", "3", cwd=tmp_path, env=env)
    assert made.returncode == 0, made.stdout + made.stderr
    lines = made.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["created"] * 5, lines
    assert lines[0] == f"created  ticks topic '{prefix}-ticks': 3 partitions, replication 1"
    names = [f"{prefix}-{t}" for t in ("ticks", "forecasts", "alerts", "dlq", "state")]
    shapes = await _shapes(bootstrap, names)
    assert {name: shape[:2] for name, shape in shapes.items()} == dict.fromkeys(names, (3, 1))
    assert shapes[f"{prefix}-state"][2] == "compact"
    assert shapes[f"{prefix}-forecasts"][2] == "delete"

    after = run_cli("topics", "check", cwd=tmp_path, env=env)
    assert after.returncode == 0, after.stdout
    assert [line.split()[0] for line in after.stdout.splitlines()] == ["ok"] * 5
    again = run_cli("topics", "create", "--partitions", "8", cwd=tmp_path, env=env)
    assert again.returncode == 0
    assert "3 partitions, replication 1 (not 8: an existing topic is left as it is)" in again.stdout


async def test_check_names_a_changelog_that_does_not_fit(bootstrap: str, tmp_path: Path) -> None:
    prefix = unique_topic("wrong")
    env = _env(bootstrap, prefix)
    await create_topics(bootstrap, [f"{prefix}-ticks"], partitions=4)
    await create_topics(bootstrap, [f"{prefix}-state"], partitions=2)
    result = run_cli("topics", "check", cwd=tmp_path, env=env)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"ok       ticks topic '{prefix}-ticks': 4 partitions")
    (changelog,) = [line for line in lines if "changelog" in line]
    assert changelog.startswith(f"wrong    state changelog topic '{prefix}-state': 2 partitions")
    assert "must match" in changelog
    await create_topics(bootstrap, [f"{prefix}-b-state"], partitions=4)
    env["STREAMCAST_TOPICS__STATE_CHANGELOG"] = f"{prefix}-b-state"
    lines = run_cli("topics", "check", cwd=tmp_path, env=env).stdout.splitlines()
    (changelog,) = [line for line in lines if "changelog" in line]
    assert "cleanup.policy=delete, must be compact" in changelog
    # without durable state there is no changelog to check
    env["STREAMCAST_DURABLE_STATE"] = "false"
    lines = run_cli("topics", "check", cwd=tmp_path, env=env).stdout.splitlines()
    assert len(lines) == 4 and not any("changelog" in line for line in lines)


async def test_check_names_an_output_topic_the_producer_batches_do_not_fit(
    bootstrap: str, tmp_path: Path
) -> None:
    prefix = unique_topic("limit")
    env = {**_env(bootstrap, prefix), "STREAMCAST_PRODUCER_MAX_BATCH_BYTES": "300000"}
    assert run_cli("topics", "create", "--partitions", "1", cwd=tmp_path, env=env).returncode == 0
    assert run_cli("topics", "check", cwd=tmp_path, env=env).returncode == 0
    # above Kafka's 1 MiB default, the topics it creates are made to take such batches
    big = {**_env(bootstrap, f"{prefix}-big"), "STREAMCAST_PRODUCER_MAX_BATCH_BYTES": "3000000"}
    assert run_cli("topics", "create", "--partitions", "1", cwd=tmp_path, env=big).returncode == 0
    assert run_cli("topics", "check", cwd=tmp_path, env=big).returncode == 0
    await create_topics(bootstrap, [f"{prefix}-b-fc"], config={"max.message.bytes": "200000"})
    env["STREAMCAST_TOPICS__FORECASTS"] = f"{prefix}-b-fc"
    result = run_cli("topics", "check", cwd=tmp_path, env=env)
    assert result.returncode == 1
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("wrong")]
    assert line.startswith(
        f"wrong    forecasts topic '{prefix}-b-fc': STREAMCAST_PRODUCER_MAX_BATCH_BYTES "
        "(producer_max_batch_bytes): 300000 is more than"
    )
