"""Client errors come out of the Kafka edge as streamcast's own, classified by what the
service must do with them."""

from __future__ import annotations

import ssl

import pytest
from aiokafka import errors as kafka

from streamcast.errors import (
    AuthorizationError,
    ConfigurationError,
    FencedError,
    ModelError,
    StreamcastError,
    TransientError,
)
from streamcast.kafka.errors import map_kafka_errors


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (kafka.KafkaConnectionError("refused"), TransientError),
        (kafka.KafkaTimeoutError(), TransientError),
        (kafka.NotLeaderForPartitionError(), TransientError),
        (kafka.GroupCoordinatorNotAvailableError(), TransientError),
        (ConnectionRefusedError(111, "refused"), TransientError),
        (kafka.ProducerFenced(), FencedError),
        (kafka.InvalidProducerEpoch(), FencedError),
        (kafka.SaslAuthenticationFailed(), AuthorizationError),
        (kafka.TopicAuthorizationFailedError(), AuthorizationError),
        (kafka.GroupAuthorizationFailedError(), AuthorizationError),
        (kafka.UnsupportedCodecError("lz4"), ConfigurationError),
        (kafka.UnsupportedVersionError(), ConfigurationError),
        (ssl.SSLCertVerificationError("certificate verify failed"), ConfigurationError),
    ],
)
def test_client_errors_map_into_the_tree(raised: BaseException, expected: type) -> None:
    with pytest.raises(expected) as info, map_kafka_errors("fetch"):
        raise raised
    assert isinstance(info.value, StreamcastError)
    assert str(info.value).startswith("fetch: ")
    assert info.value.__cause__ is raised
    assert info.value.retriable is (expected is TransientError)


def test_authorization_errors_say_what_to_check() -> None:
    with pytest.raises(AuthorizationError, match="STREAMCAST_SASL_"), map_kafka_errors("connect"):
        raise kafka.SaslAuthenticationFailed()


def test_streamcast_errors_and_bugs_pass_through_untouched() -> None:
    own = ModelError("bad model")
    with pytest.raises(ModelError) as info, map_kafka_errors("fetch"):
        raise own
    assert info.value is own
    with pytest.raises(KeyError), map_kafka_errors("fetch"):
        raise KeyError("a bug")


def test_a_missing_codec_says_what_to_install() -> None:
    with pytest.raises(ConfigurationError) as info, map_kafka_errors("fetch"):
        raise kafka.UnsupportedCodecError("Libraries for lz4 compression codec not found")
    text = str(info.value)
    assert text.count("UnsupportedCodecError") == 1
    assert "cramjam" in text


@pytest.mark.parametrize(
    ("raised", "says"),
    [
        (kafka.SaslAuthenticationFailed("Invalid username or password"),
         "rejected the credentials: check STREAMCAST_SASL_USERNAME, STREAMCAST_SASL_PASSWORD"),
        (kafka.IllegalSaslStateError(), "check STREAMCAST_SECURITY_PROTOCOL"),
        (kafka.UnsupportedSaslMechanismError(), "STREAMCAST_SASL_MECHANISM"),
        (kafka.GroupAuthorizationFailedError("g"), "Read on the consumer group"),
        (kafka.TopicAuthorizationFailedError("t"), "Describe and Read on the ticks"),
        (kafka.TransactionalIdAuthorizationFailed(), "STREAMCAST_TRANSACTIONAL_ID_PREFIX"),
    ],
)  # fmt: skip
def test_permanent_failures_say_which_setting_or_acl_to_fix(
    raised: BaseException, says: str
) -> None:
    with pytest.raises(AuthorizationError) as info, map_kafka_errors("connect"):
        raise raised
    assert says in str(info.value)
    assert "\n" not in str(info.value)
