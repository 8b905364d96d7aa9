"""Session-wide fixtures: one genuine Apache Kafka broker for every test marked ``kafka``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.kafka import SaslBroker, kafka_local


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
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaslBroker]:
    """A second broker, started only for the tests that ask for it: a SASL_PLAINTEXT
    listener (PLAIN, the users of :class:`SaslBroker`) with ACLs enforced, and a PLAINTEXT
    listener whose anonymous principal is the super user (for setting the tests up)."""
    config = kafka_local.BrokerConfig(
        port=kafka_local.free_port(),
        sasl_port=kafka_local.free_port(),
        sasl_users=tuple(SaslBroker.USERS.items()),
        data_dir=Path(tmp_path_factory.mktemp("kafka-sasl")),
    )
    broker = kafka_local.LocalBroker(config)
    broker.start(timeout=90)
    try:
        yield SaslBroker(admin=config.bootstrap, sasl=str(config.sasl_bootstrap))
    finally:
        broker.stop()


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
