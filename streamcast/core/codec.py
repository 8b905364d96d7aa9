"""Decoding Kafka messages into ticks, and the dead-letter record format.

A tick is a JSON object::

    {"key": "sensor-7", "ts": "2024-05-01T10:15:00Z", "value": 12.5, "temp": 3.0}

* **Key.** The Kafka message key, when present, non-empty and valid UTF-8, is the series
  key; otherwise the body's key field (a non-empty string).
* **Timestamp.** A string is ISO-8601 (``Z``, ``+hh:mm`` offsets and fractions accepted;
  a naive time is taken as UTC) or a decimal epoch number; a JSON number is epoch time
  whose unit follows from its magnitude: ``|t| < 1e11`` seconds (1e11 s is the year 5138),
  ``< 1e14`` milliseconds, ``< 1e17`` microseconds, otherwise nanoseconds. Ticks are kept
  at millisecond precision, floored (two ticks within one millisecond are duplicates).
  Timestamps before ``min_ts_s`` (default 1990-01-01) or more than ``max_future_s`` ahead
  of the wall clock are rejected as ``absurd_timestamp``.
* **Value and extras.** JSON numbers (not booleans, not strings), finite.

Every malformed message becomes a :class:`~streamcast.core.records.Rejection` with a precise
:class:`~streamcast.errors.RejectReason`; :meth:`TickDecoder.decode` never raises on
input. Per-message Python work is constant.

Dead letters keep the original bytes as their value, untouched, so they can be replayed
after a fix; everything else travels in headers (see :func:`dead_letter_record`).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import numpy as np
import orjson

from streamcast.core.records import Rejection, TickBatch
from streamcast.core.schemas import DEAD_LETTER_HEADERS
from streamcast.errors import ConfigurationError, RejectReason

#: 1990-01-01T00:00:00Z
DEFAULT_MIN_TS_S = 631_152_000
DEFAULT_MAX_FUTURE_S = 7 * 86_400
DEFAULT_MAX_BYTES = 64 * 1024
#: longest series key accepted, in UTF-8 bytes (a key is held in memory for every key)
DEFAULT_MAX_KEY_BYTES = 256
#: largest magnitude of a value or feature: the model computes in float32 (max ~3.4e38);
#: a margin keeps scaling and the interval bounds finite
MAX_MAGNITUDE = 1e37
#: dead-letter details are cut to this many characters
MAX_DETAIL = 300

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: epoch units by magnitude, ``(magnitude below, multiplier, divisor)`` to milliseconds:
#: seconds, milliseconds, microseconds, nanoseconds (the module docstring's rule, which
#: ``training/data.py`` applies to whole timestamp columns)
EPOCH_UNITS: tuple[tuple[float, int, int], ...] = (
    (1e11, 1_000, 1),
    (1e14, 1, 1),
    (1e17, 1, 1_000),
    (math.inf, 1, 1_000_000),
)
_ONE_MS = timedelta(milliseconds=1)
#: integer epoch times in [_MS_FROM, _MS_UNTIL) are milliseconds, below seconds (EPOCH_UNITS)
_MS_FROM, _MS_UNTIL = 100_000_000_000, 100_000_000_000_000
#: an epoch number as text: ASCII digits only (``\d`` and ``int`` take any script's)
_NUMERIC = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$", re.ASCII)

#: dead-letter header names (all values UTF-8 text)
HEADER_REASON = "streamcast.reason"
HEADER_DETAIL = "streamcast.detail"
HEADER_TOPIC = "streamcast.source.topic"
HEADER_PARTITION = "streamcast.source.partition"
HEADER_OFFSET = "streamcast.source.offset"
HEADER_TIMESTAMP = "streamcast.source.timestamp_ms"
HEADER_DEAD_LETTERED_AT = "streamcast.dead_lettered_at_ms"
HEADER_VALUE_NULL = "streamcast.value_null"


class _Reject(Exception):  # noqa: N818 - internal control flow, never escapes decode()
    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def epoch_unit(magnitude: float) -> tuple[int, int]:
    """``(multiplier, divisor)`` to milliseconds for a finite epoch time of this magnitude.

    >>> epoch_unit(1.7e9), epoch_unit(1.7e12), epoch_unit(1.7e15), epoch_unit(1.7e18)
    ((1000, 1), (1, 1), (1, 1000), (1, 1000000))
    """
    return next((m, d) for limit, m, d in EPOCH_UNITS if abs(magnitude) < limit)


def epoch_to_ms(value: float) -> int:
    """Epoch time in s, ms, µs or ns (chosen by magnitude, module docstring) to ms, floored.

    Integers are converted exactly; floats as ``floor(value * multiplier / divisor)``, the
    same arithmetic as ``training/data.py`` (which takes its unit from :func:`epoch_unit`
    too), so both halves agree to the millisecond.

    >>> epoch_to_ms(1_700_000_000), epoch_to_ms(1_700_000_000_123), epoch_to_ms(1.5e9)
    (1700000000000, 1700000000123, 1500000000000)
    """
    multiplier, divisor = epoch_unit(value)
    if isinstance(value, int):
        return value * multiplier // divisor
    return math.floor(value * multiplier / divisor)


def parse_timestamp_ms(raw: object) -> int:
    """A tick timestamp (ISO-8601 string, epoch number or decimal string) as epoch ms.

    Raises ``ValueError`` (``TypeError`` for a non-string, non-number) when unparsable.

    >>> parse_timestamp_ms("2024-01-01T00:00:00Z"), parse_timestamp_ms("2024-01-01T01:00+01:00")
    (1704067200000, 1704067200000)
    """
    if isinstance(raw, bool):
        raise TypeError("a boolean is not a timestamp")
    if isinstance(raw, int | float):
        if not math.isfinite(raw):
            raise ValueError("timestamp is not finite")
        return epoch_to_ms(raw)
    if not isinstance(raw, str):
        raise TypeError(f"a JSON {type(raw).__name__} is not a timestamp")
    text = raw.strip()
    if _NUMERIC.match(text):
        number = float(text) if any(ch in text for ch in ".eE") else int(text)
        return parse_timestamp_ms(number)
    if text.endswith("z"):
        text = text[:-1] + "Z"  # RFC 3339 allows a lower-case zone designator
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // _ONE_MS


class TickDecoder:
    """Decode raw Kafka messages into a :class:`TickBatch` plus rejections.

    >>> decoder = TickDecoder(clock=lambda: 1_800_000_000.0)
    >>> batch, rejected = decoder.decode([
    ...     (b"s1", b'{"ts": "2024-01-01T00:00:00Z", "value": 1.5}'),
    ...     (None, b'{"key": "s2", "ts": 1704067200, "value": "x"}'),
    ... ])
    >>> batch.keys, batch.ts_ms.tolist(), batch.values.ravel().tolist(), batch.index.tolist()
    (['s1'], [1704067200000], [1.5], [0])
    >>> [(r.index, r.reason.value) for r in rejected]
    [(1, 'wrong_type')]
    """

    def __init__(
        self,
        *,
        key_field: str = "key",
        ts_field: str = "ts",
        value_field: str = "value",
        extra_fields: Sequence[str] = (),
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_key_bytes: int = DEFAULT_MAX_KEY_BYTES,
        min_ts_s: int = DEFAULT_MIN_TS_S,
        max_future_s: int = DEFAULT_MAX_FUTURE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        names = [key_field, ts_field, value_field, *extra_fields]
        if len(set(names)) != len(names) or not all(names):
            raise ConfigurationError(
                f"tick field names must be distinct and non-empty, got {names}: "
                "check the key/ts/value/extra field settings"
            )
        if max_bytes <= 0 or max_key_bytes <= 0:
            raise ConfigurationError(
                f"max_bytes and max_key_bytes must be positive, got {max_bytes}, {max_key_bytes}"
            )
        if max_future_s < 0:
            raise ConfigurationError(f"max_future_s must be >= 0, got {max_future_s}")
        self.key_field = key_field
        self.ts_field = ts_field
        self.value_field = value_field
        self.extra_fields = tuple(extra_fields)
        self.max_bytes = max_bytes
        self.max_key_bytes = max_key_bytes
        self.min_ts_s = min_ts_s
        self.max_future_s = max_future_s
        self._clock = clock
        # the fast path's typed tick: attributes t, v, k and x0.. renamed to the fields
        self._extra_attrs = tuple(f"x{j}" for j in range(len(self.extra_fields)))
        struct = msgspec.defstruct(
            "Tick",
            [("t", str | int | float), ("v", float)]
            + [(name, float) for name in self._extra_attrs]
            + [("k", str | None, None)],
            rename={
                "t": ts_field, "v": value_field, "k": key_field,
                **dict(zip(self._extra_attrs, self.extra_fields, strict=True)),
            },
        )  # fmt: skip
        self._fast: msgspec.json.Decoder[Any] = msgspec.json.Decoder(struct)

    @property
    def n_inputs(self) -> int:
        """Width of a tick's value row: the value plus the extra features."""
        return 1 + len(self.extra_fields)

    def decode(
        self, messages: Sequence[tuple[bytes | None, bytes | None]]
    ) -> tuple[TickBatch, list[Rejection]]:
        """Decode ``(kafka_key, value)`` pairs; ``index`` refers to positions in ``messages``.

        Two paths, one result. The fast path decodes each body with msgspec into a typed
        struct of the tick's fields (unknown fields skipped), takes the key and parses
        each distinct timestamp string once per call, and checks the ranges of the whole
        batch with numpy. A message it does not take as it is — anything not a plain
        well-typed tick, a non-UTF-8 body, a value or time out of range — is decoded by
        the reference path (:meth:`_decode_one`, orjson and a check per field), which
        finds the precise reason; so the two cannot disagree on what is rejected or why.
        """
        min_ms = self.min_ts_s * 1000
        max_ms = int((self._clock() + self.max_future_s) * 1000)
        keys: list[str] = []
        ts: list[int] = []
        values: list[float] = []
        index: list[int] = []
        slow: list[int] = []
        parsed: dict[str, int] = {}  # timestamp text -> ms: a batch shares few instants
        decode_fast, extras = self._fast.decode, self._extra_attrs
        max_bytes, max_key = self.max_bytes, self.max_key_bytes
        for i, (kafka_key, body) in enumerate(messages):
            if not body or len(body) > max_bytes or not (body.isascii() or _is_utf8(body)):
                slow.append(i)
                continue
            try:
                tick = decode_fast(body)
                raw_ts = tick.t
                kind = type(raw_ts)
                if kind is str:
                    ts_ms = parsed.get(raw_ts)
                    if ts_ms is None:
                        ts_ms = parsed[raw_ts] = parse_timestamp_ms(raw_ts)
                elif kind is int and _MS_FROM <= raw_ts < _MS_UNTIL:  # epoch ms, inlined
                    ts_ms = raw_ts
                elif kind is int and 0 <= raw_ts < _MS_FROM:  # epoch seconds
                    ts_ms = raw_ts * 1000
                else:
                    ts_ms = parse_timestamp_ms(raw_ts)
            except (msgspec.MsgspecError, ValueError, TypeError, OverflowError, RecursionError):
                slow.append(i)
                continue
            key = _fast_key(kafka_key, tick.k, max_key)
            if key is None or not min_ms <= ts_ms <= max_ms:
                slow.append(i)
                continue
            keys.append(key)
            ts.append(ts_ms)
            values.append(tick.v)
            if extras:
                values.extend(getattr(tick, name) for name in extras)
            index.append(i)
        n = len(keys)
        batch = TickBatch(
            keys=keys,
            ts_ms=np.asarray(ts, dtype=np.int64),
            values=np.asarray(values, dtype=np.float64).reshape(n, self.n_inputs),
            index=np.asarray(index, dtype=np.int64),
        )
        return self._with_reference(messages, batch, slow, min_ms, max_ms)

    def _with_reference(
        self,
        messages: Sequence[tuple[bytes | None, bytes | None]],
        batch: TickBatch,
        slow: list[int],
        min_ms: int,
        max_ms: int,
    ) -> tuple[TickBatch, list[Rejection]]:
        """The fast path's ticks whose values are in range, merged in input order with what the
        reference path makes of the rest (``slow`` and the out-of-range ones)."""
        out_of_range = ~(np.abs(batch.values) <= MAX_MAGNITUDE).all(axis=1)  # NaN is too
        if out_of_range.any():
            slow = slow + batch.index[out_of_range].tolist()
            batch = batch.take(np.flatnonzero(~out_of_range))
        if not slow:
            return batch, []
        todo = [(j, *messages[j]) for j in sorted(slow)]
        reference, rejected = self._decode_reference(todo, min_ms, max_ms)
        if len(reference):
            index = np.concatenate([batch.index, reference.index])
            order = np.argsort(index, kind="stable")
            keys = batch.keys + reference.keys
            batch = TickBatch(
                keys=[keys[j] for j in order.tolist()],
                ts_ms=np.concatenate([batch.ts_ms, reference.ts_ms])[order],
                values=np.concatenate([batch.values, reference.values])[order],
                index=index[order],
            )
        return batch, rejected

    def _decode_reference(
        self, messages: Sequence[tuple[int, bytes | None, bytes | None]], min_ms: int, max_ms: int
    ) -> tuple[TickBatch, list[Rejection]]:
        """The reference path: ``(index, kafka_key, value)`` triples, one check per field."""
        keys: list[str] = []
        ts: list[int] = []
        values: list[float] = []
        index: list[int] = []
        rejected: list[Rejection] = []
        for i, kafka_key, body in messages:
            try:
                key, ts_ms, row = self._decode_one(kafka_key, body, min_ms, max_ms)
            except _Reject as err:
                rejected.append(Rejection(i, err.reason, err.detail[:MAX_DETAIL]))
                continue
            keys.append(key)
            ts.append(ts_ms)
            values.extend(row)
            index.append(i)
        batch = TickBatch(
            keys=keys,
            ts_ms=np.asarray(ts, dtype=np.int64),
            values=np.asarray(values, dtype=np.float64).reshape(len(keys), self.n_inputs),
            index=np.asarray(index, dtype=np.int64),
        )
        return batch, rejected

    def _decode_one(
        self, kafka_key: bytes | None, body: bytes | None, min_ms: int, max_ms: int
    ) -> tuple[str, int, list[float]]:
        if not body:
            raise _Reject(RejectReason.EMPTY, "message has no value")
        if len(body) > self.max_bytes:
            raise _Reject(
                RejectReason.OVERSIZED, f"{len(body)} bytes exceeds max_bytes={self.max_bytes}"
            )
        doc = _load_json(body)
        if not isinstance(doc, dict):
            raise _Reject(RejectReason.NOT_AN_OBJECT, f"JSON {type(doc).__name__} is not an object")
        key = self._key(kafka_key, doc)
        raw_ts = doc.get(self.ts_field)
        if raw_ts is None:
            raise _Reject(RejectReason.MISSING_TS, f"field '{self.ts_field}' is missing")
        try:
            ts_ms = parse_timestamp_ms(raw_ts)
        except (ValueError, TypeError, OverflowError) as err:
            reason = (
                RejectReason.NON_FINITE
                if isinstance(raw_ts, float) and not math.isfinite(raw_ts)
                else RejectReason.BAD_TIMESTAMP
            )
            raise _Reject(reason, f"field '{self.ts_field}'={raw_ts!r:.80}: {err}") from None
        if not min_ms <= ts_ms <= max_ms:
            raise _Reject(
                RejectReason.ABSURD_TIMESTAMP,
                f"timestamp {ts_ms} ms is outside the accepted range [{min_ms}, {max_ms}] ms",
            )
        row = [self._number(doc, self.value_field, RejectReason.MISSING_VALUE)]
        row += [self._number(doc, name, RejectReason.MISSING_FEATURE) for name in self.extra_fields]
        return key, ts_ms, row

    def _key(self, kafka_key: bytes | None, doc: dict[str, object]) -> str:
        if kafka_key:
            if len(kafka_key) > self.max_key_bytes:
                raise _Reject(
                    RejectReason.KEY_TOO_LONG,
                    f"the Kafka message key is {len(kafka_key)} bytes; "
                    f"max_key_bytes={self.max_key_bytes}",
                )
            try:
                return kafka_key.decode("utf-8")
            except UnicodeDecodeError:
                pass  # fall back to the body's key field
        key = doc.get(self.key_field)
        if key is None or key == "":
            raise _Reject(
                RejectReason.MISSING_KEY,
                f"no usable Kafka message key and no field '{self.key_field}'",
            )
        if not isinstance(key, str):
            raise _Reject(
                RejectReason.WRONG_TYPE,
                f"field '{self.key_field}' is a {type(key).__name__}, not a string",
            )
        try:
            size = len(key.encode("utf-8"))
        except UnicodeEncodeError:
            # valid JSON (a "\ud800" escape), but no UTF-8 encoding exists: every output
            # keyed by it would fail to encode
            raise _Reject(
                RejectReason.INVALID_KEY,
                f"field '{self.key_field}' holds a lone surrogate escape: not encodable as UTF-8",
            ) from None
        if size > self.max_key_bytes:
            raise _Reject(
                RejectReason.KEY_TOO_LONG,
                f"field '{self.key_field}' is {size} bytes; max_key_bytes={self.max_key_bytes}",
            )
        return key

    @staticmethod
    def _number(doc: dict[str, object], name: str, missing: RejectReason) -> float:
        raw = doc.get(name)
        if raw is None:
            raise _Reject(missing, f"field '{name}' is missing")
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise _Reject(
                RejectReason.WRONG_TYPE, f"field '{name}' is a {type(raw).__name__}, not a number"
            )
        try:
            number = float(raw)
        except OverflowError:
            raise _Reject(RejectReason.NON_FINITE, f"field '{name}' overflows a float") from None
        if not math.isfinite(number):
            raise _Reject(RejectReason.NON_FINITE, f"field '{name}' is {number}")
        if abs(number) > MAX_MAGNITUDE:
            raise _Reject(
                RejectReason.OUT_OF_RANGE,
                f"field '{name}'={number:g} is beyond the model's float32 range "
                f"(|value| <= {MAX_MAGNITUDE:g})",
            )
        return number


def _fast_key(kafka_key: bytes | None, body_key: str | None, max_key: int) -> str | None:
    """The series key when it is plainly valid (module docstring's rule); None leaves the
    message to the reference path, which says what is wrong (or takes the body's key
    when the Kafka key is not UTF-8)."""
    if kafka_key:
        if len(kafka_key) > max_key:
            return None
        try:
            return kafka_key.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if not body_key:
        return None
    # msgspec refuses lone surrogates, so every key it gives has a UTF-8 form
    if len(body_key) * 4 <= max_key or len(body_key.encode("utf-8")) <= max_key:
        return body_key
    return None


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _json_int(digits: str) -> int | float:
    """A JSON integer as Python reads it, but one too long for ``int`` (past Python's
    4,300-digit limit, far past float64) as the infinity it is (``non_finite``), not a
    JSON error."""
    return int(digits) if len(digits) <= 400 else float(digits)


def _load_json(body: bytes) -> object:
    """orjson on the fast path; on failure, find out why (strict UTF-8, NaN literals)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as fast_err:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as err:
            raise _Reject(RejectReason.INVALID_UTF8, f"body is not valid UTF-8: {err}") from None
        # orjson refuses NaN/Infinity literals and out-of-range numbers; the standard
        # library reads them, so such ticks get the precise reason ``non_finite``.
        try:
            return json.loads(text, parse_int=_json_int)
        except (ValueError, RecursionError):
            raise _Reject(RejectReason.NOT_JSON, f"body is not JSON: {fast_err}") from None


def dead_letter_record(  # noqa: PLR0917 - positional order agreed with the Kafka edge
    raw: bytes | None,
    key: bytes | None,
    reason: RejectReason,
    detail: str,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int,
    now_ms: int | None = None,
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The dead-letter ``(value, headers)`` for a rejected message.

    The value is the original message value, byte for byte (a null value becomes ``b""``
    with header ``streamcast.value_null = "1"``); produce it with the original Kafka
    ``key`` unchanged. Headers (UTF-8 text): ``streamcast.reason`` (a
    :class:`RejectReason` value), ``streamcast.detail``, ``streamcast.source.topic``,
    ``streamcast.source.partition``, ``streamcast.source.offset``,
    ``streamcast.source.timestamp_ms`` (the source record's timestamp) and
    ``streamcast.dead_lettered_at_ms`` (wall clock now).
    """
    del key  # the Kafka key travels as the dead letter's own key; see the docstring
    when = int(time.time() * 1000) if now_ms is None else now_ms
    headers = [
        *DEAD_LETTER_HEADERS,
        (HEADER_REASON, str(reason).encode()),
        (HEADER_DETAIL, detail[:MAX_DETAIL].encode("utf-8", "replace")),
        (HEADER_TOPIC, topic.encode("utf-8")),
        (HEADER_PARTITION, str(partition).encode()),
        (HEADER_OFFSET, str(offset).encode()),
        (HEADER_TIMESTAMP, str(timestamp_ms).encode()),
        (HEADER_DEAD_LETTERED_AT, str(when).encode()),
    ]
    if raw is None:
        headers.append((HEADER_VALUE_NULL, b"1"))
    return (raw if raw is not None else b""), headers
