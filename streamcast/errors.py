"""The service's exceptions and the reasons a tick can be rejected.

Every exception streamcast raises derives from one root, so callers can catch the whole
family at the edge. ``retriable`` says what the service does with it: transient failures
are retried with backoff (and counted); everything else ends the command or the service
with one line saying what to fix::

    StreamcastError                 root; ``retriable = False``
    ├── ConfigurationError          the settings cannot work: names the setting and what to do
    │   ├── SettingsError           invalid settings; ``problems`` holds one line per field
    │   ├── TopicError              a needed topic is missing or unusable
    │   ├── AuthorizationError      the broker refused our credentials or permissions
    │   └── StateLostError          durable state is gone while the group has committed
    │                               offsets (a deleted changelog): refuse to guess
    ├── ModelError                  artifact missing, unreadable, invalid or incompatible
    ├── FencedError                 another instance took over a partition: stop writing
    ├── BatchRolledBackError        a batch's outputs were rolled back (exactly-once): drop
    │                               it; the sink rewinds state and offsets before the next
    ├── RecordError                 a record on an output topic (forecasts, alerts) does not
    │                               follow its documented format; readers skip and count it
    └── TransientError              ``retriable = True``: broker away, timeouts, leader
                                    changes, rebalances in progress

The Kafka edge maps the client library's errors into this tree
(:func:`streamcast.kafka.errors.map_kafka_errors`): no layer above it sees aiokafka's.

Bad *input* is never an exception: the decoder and the pipeline return a
:class:`Rejection <streamcast.core.records.Rejection>` with a :class:`RejectReason`, which
labels dead letters (header ``streamcast.reason``) and metrics (label ``reason``).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum


class StreamcastError(Exception):
    """Root of every exception raised by streamcast."""

    #: True when the same operation may succeed if retried later
    retriable: bool = False


class ConfigurationError(StreamcastError):
    """A setting is invalid; the message names it and says what to change."""


class SettingsError(ConfigurationError):
    """Settings the service cannot start with; ``problems`` holds one line per field."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


class TopicError(ConfigurationError):
    """A topic the service needs is missing or unusable; the message says what to do."""


class AuthorizationError(ConfigurationError):
    """The broker refused the credentials (authentication) or an operation (ACLs)."""


class StateLostError(ConfigurationError):
    """Durable per-key state is missing although the consumer group has committed offsets."""


class ModelError(StreamcastError):
    """The model artifact is missing, unreadable, invalid or incompatible with serving."""


class FencedError(StreamcastError):
    """Another instance took over a partition and fenced this one: it must not write."""


class BatchRolledBackError(StreamcastError):
    """A batch's outputs were not committed and will not be: the sink rewinds state and
    offsets to the last commit before the next batch, so its records are read again."""


class RecordError(StreamcastError, ValueError):
    """A forecast or alert record that does not follow its documented format (or has a
    newer schema than this reader knows); the message says which field and why."""


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
    #: the series key cannot be encoded as UTF-8 (a lone surrogate escape in the JSON)
    INVALID_KEY = "invalid_key"
    #: the series key is longer than ``max_key_bytes``
    KEY_TOO_LONG = "key_too_long"
    #: a value or feature beyond the model's float32 range
    OUT_OF_RANGE = "out_of_range"
    #: a tick far ahead of its key's last tick (``max_jump_intervals``), not confirmed by
    #: the ticks after it: an outlier clock, not a new timeline
    TIME_JUMP = "time_jump"
    #: processing or encoding this tick raised an error (a bug): isolated from the batch
    #: and dead-lettered with the exception text, so the stream goes on
    INTERNAL_ERROR = "internal_error"
