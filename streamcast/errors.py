"""The service's exceptions and the reasons a tick can be rejected.

Every exception streamcast raises derives from one root, so callers can catch the whole
family at the edge. Transient failures (worth retrying with backoff) carry
``retriable = True``; everything else is a bug in the input, the settings or the artifact
and will not heal by itself::

    StreamcastError                 root; ``retriable = False``
    ├── ConfigurationError          invalid settings: names the setting and what to do
    │   └── TopicError              a needed topic is missing or unusable
    ├── ModelError                  artifact missing, unreadable, invalid or incompatible
    └── TransientError              ``retriable = True``: broker away, timeouts (the Kafka
                                    edge adds its own subclasses here)

Bad *input* is never an exception: the decoder and the pipeline return a
:class:`Rejection <streamcast.core.records.Rejection>` with a :class:`RejectReason`, which
labels dead letters (header ``streamcast.reason``) and metrics (label ``reason``).
"""

from __future__ import annotations

from enum import StrEnum


class StreamcastError(Exception):
    """Root of every exception raised by streamcast."""

    #: True when the same operation may succeed if retried later
    retriable: bool = False


class ConfigurationError(StreamcastError):
    """A setting is invalid; the message names it and says what to change."""


class TopicError(ConfigurationError):
    """A topic the service needs is missing or unusable; the message says what to do."""


class ModelError(StreamcastError):
    """The model artifact is missing, unreadable, invalid or incompatible with serving."""


class TransientError(StreamcastError):
    """A failure that may heal by itself (broker unavailable, timeout): retry with backoff."""

    retriable = True


class RejectReason(StrEnum):
    """Why a message or tick was rejected (dead-letter header and metric label)."""

    #: the body is not JSON
    NOT_JSON = "not_json"
    #: the body is not valid UTF-8
    INVALID_UTF8 = "invalid_utf8"
    #: the JSON document is not an object
    NOT_AN_OBJECT = "not_an_object"
    #: no body at all (tombstone or zero bytes)
    EMPTY = "empty"
    #: the body exceeds the configured maximum size
    OVERSIZED = "oversized"
    #: neither the Kafka message key nor the key field gives a series key
    MISSING_KEY = "missing_key"
    #: no timestamp field
    MISSING_TS = "missing_ts"
    #: no value field
    MISSING_VALUE = "missing_value"
    #: value or feature not a number, or key not a string
    WRONG_TYPE = "wrong_type"
    #: NaN or infinity
    NON_FINITE = "non_finite"
    #: a timestamp that cannot be parsed
    BAD_TIMESTAMP = "bad_timestamp"
    #: a timestamp outside the sane range (settings ``min_ts`` / ``max_future_s``)
    ABSURD_TIMESTAMP = "absurd_timestamp"
    #: older than the key's open interval: that interval was already closed
    LATE = "late"
    #: the same timestamp as the key's last accepted tick
    DUPLICATE = "duplicate"
    #: earlier than the key's last accepted tick, inside the still-open interval
    OUT_OF_ORDER = "out_of_order"
    #: a configured extra feature field is absent
    MISSING_FEATURE = "missing_feature"
