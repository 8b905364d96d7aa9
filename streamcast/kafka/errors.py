"""aiokafka's errors, mapped to streamcast's own at the edge (httpx's
``map_httpcore_exceptions`` is the model).

:func:`map_kafka_errors` wraps every call into the client library. What comes out is a
:class:`~streamcast.errors.StreamcastError` that says what the service should do:

============================== ========================================================
aiokafka raises                 streamcast raises
============================== ========================================================
``ProducerFenced``,             :class:`~streamcast.errors.FencedError`: another instance
``InvalidProducerEpoch``        owns the partition now; stop writing
authentication and             :class:`~streamcast.errors.AuthorizationError`: wrong
authorization failures          credentials, mechanism or ACLs; exit with one line
other errors no retry heals     :class:`~streamcast.errors.ConfigurationError`: exit with
(unsupported version, codec,    one line naming the operation and the broker's answer
invalid config, policy)
everything else (timeouts,      :class:`~streamcast.errors.TransientError`: retry with
connections, leaders, groups)   backoff
``OSError`` (refused, reset)    :class:`~streamcast.errors.TransientError`
============================== ========================================================

Streamcast's own errors pass through untouched. The wrong-credentials, wrong-protocol and
TLS cases mostly never reach this mapping as themselves: aiokafka's ``start()`` logs them
and raises a bare "Unable to bootstrap" (transient). Clients are therefore started with
:func:`streamcast.kafka.clients.start_client`, which then connects once more the same way
to find the real reason and raises that.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator

from aiokafka import errors as kafka

from streamcast.errors import (
    AuthorizationError,
    ConfigurationError,
    FencedError,
    StreamcastError,
    TransientError,
)

FENCED: tuple[type[BaseException], ...] = (kafka.ProducerFenced, kafka.InvalidProducerEpoch)

AUTHORIZATION: tuple[type[BaseException], ...] = (
    kafka.AuthenticationFailedError,
    kafka.AuthenticationMethodNotSupported,
    kafka.SaslAuthenticationFailed,
    kafka.UnsupportedSaslMechanismError,
    kafka.IllegalSaslStateError,
    kafka.TopicAuthorizationFailedError,
    kafka.GroupAuthorizationFailedError,
    kafka.ClusterAuthorizationFailedError,
    kafka.TransactionalIdAuthorizationFailed,
    kafka.DelegationTokenAuthorizationFailed,
    kafka.SecurityDisabled,
)

#: errors that repeat on every retry: a setting, the broker's version or its policy
PERMANENT: tuple[type[BaseException], ...] = (
    kafka.UnsupportedVersionError,
    kafka.IncompatibleBrokerVersion,
    kafka.UnrecognizedBrokerVersion,
    kafka.KafkaConfigurationError,
    kafka.UnsupportedCodecError,
    kafka.InvalidConfigurationError,
    kafka.InvalidTopicError,
    kafka.PolicyViolationError,
    kafka.InvalidReplicationFactorError,
    kafka.InvalidPartitionsError,
    kafka.InvalidTransactionTimeout,
    kafka.InvalidRequiredAcksError,
    kafka.InvalidGroupIdError,
    kafka.InvalidSessionTimeoutError,
    kafka.IllegalArgumentError,
    ssl.SSLCertVerificationError,
)


def describe(exc: BaseException) -> str:
    """A one-line description of a client error: its name and message, if any (aiokafka's
    messages often start with the name already, ``[Error 29] Name: ...``: not repeated)."""
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    if not text or text == name:
        return name
    return text if name in text.split(":", 1)[0] else f"{name}: {text}"


def translate(exc: BaseException, operation: str) -> StreamcastError | None:
    """The streamcast error for a client error (None for anything else, e.g. a bug)."""
    if isinstance(exc, StreamcastError):
        return exc
    what = f"{operation}: {describe(exc)}"
    if isinstance(exc, FENCED):
        return FencedError(f"{what} (another instance owns the partition now)")
    if isinstance(exc, kafka.SaslAuthenticationFailed | kafka.AuthenticationFailedError):
        return AuthorizationError(
            f"{what}: the broker rejected the credentials: check STREAMCAST_SASL_USERNAME, "
            "STREAMCAST_SASL_PASSWORD and STREAMCAST_SASL_MECHANISM"
        )
    if isinstance(exc, kafka.IllegalSaslStateError | kafka.UnsupportedSaslMechanismError):
        return AuthorizationError(
            f"{what}: the listener does not accept this SASL handshake: check "
            "STREAMCAST_SECURITY_PROTOCOL (is the listener SASL at all?) and "
            "STREAMCAST_SASL_MECHANISM (one the listener enables)"
        )
    grants = {
        kafka.TopicAuthorizationFailedError: "what the operation needs on the topic "
        "(Describe and Read on the ticks, Describe and Write on the outputs, Create to "
        "create them)",
        kafka.GroupAuthorizationFailedError: "Read on the consumer group (STREAMCAST_GROUP_ID)",
        kafka.TransactionalIdAuthorizationFailed: "Describe and Write on the transactional "
        "ids (prefix STREAMCAST_TRANSACTIONAL_ID_PREFIX)",
        kafka.ClusterAuthorizationFailedError: "the cluster operation (or create the topics "
        "beforehand)",
    }
    for kind, needed in grants.items():
        if isinstance(exc, kind):
            return AuthorizationError(
                f"{what}: the broker does not authorize this principal (check the ACLs): "
                f"grant it {needed}"
            )
    if isinstance(exc, AUTHORIZATION):
        return AuthorizationError(
            f"{what}: the broker refused the credentials or the operation; check "
            "STREAMCAST_SECURITY_PROTOCOL, STREAMCAST_SASL_* and the ACLs of this principal"
        )
    if isinstance(exc, kafka.UnsupportedCodecError):
        return ConfigurationError(
            f"{what}: a batch is compressed with a codec this installation cannot read; "
            "install streamcast with its dependencies (cramjam reads snappy, lz4 and zstd)"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ConfigurationError(
            f"{what}: the broker's certificate does not verify: STREAMCAST_SSL_CAFILE must "
            "hold the CA that issued it, and STREAMCAST_BOOTSTRAP_SERVERS name the hosts in it"
        )
    if isinstance(exc, PERMANENT):
        return ConfigurationError(f"{what}: retrying cannot help; check the settings")
    if isinstance(exc, kafka.KafkaError | OSError | TimeoutError):
        return TransientError(what)
    return None


@contextlib.contextmanager
def map_kafka_errors(operation: str) -> Iterator[None]:
    """Re-raise client errors inside the block as streamcast's own (module docstring).

    ``operation`` names what was being done (``"fetch"``, ``"produce"``), for the message.
    Errors that are not the client's (programming errors) propagate unchanged.
    """
    try:
        yield
    except StreamcastError:
        raise
    except (kafka.KafkaError, OSError, TimeoutError) as exc:
        mapped = translate(exc, operation)
        if mapped is None:  # pragma: no cover - translate covers every type caught here
            raise
        raise mapped from exc
