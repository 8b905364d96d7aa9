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

Streamcast's own errors pass through untouched.
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
