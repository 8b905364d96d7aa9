"""Session-wide fixtures: one genuine Apache Kafka broker for every test marked ``kafka``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.kafka import kafka_local


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Start a single-node KRaft broker on free ports for the whole session.

    ``STREAMCAST_TEST_BOOTSTRAP`` points the suite at an already-running broker instead.
    """
    config = kafka_local.BrokerConfig(
        port=kafka_local.free_port(), data_dir=Path(tmp_path_factory.mktemp("kafka"))
    )
    broker = kafka_local.LocalBroker(config)
    broker.start(timeout=90)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def bootstrap(request: pytest.FixtureRequest) -> str:
    """Bootstrap address of the session broker."""
    external = os.environ.get("STREAMCAST_TEST_BOOTSTRAP")
    if external:
        return external
    broker = request.getfixturevalue("kafka_broker")
    return str(broker.config.bootstrap)


@pytest.fixture(scope="session")
def broker_data_dir(request: pytest.FixtureRequest) -> Path:
    """The session broker's data dir (its log segments); skips against an external broker."""
    if os.environ.get("STREAMCAST_TEST_BOOTSTRAP"):
        pytest.skip("reads the broker's log segments: needs the session's own broker")
    broker = request.getfixturevalue("kafka_broker")
    return Path(broker.config.data_dir)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``model.onnx`` of the tiny pedestrian model, trained once per session (its directory
    also holds data.csv, report.json and forecasts.csv)."""
    from tests.support.tiny import train_tiny_model  # TensorFlow only when asked for

    return train_tiny_model(tmp_path_factory.mktemp("tiny_model"))
