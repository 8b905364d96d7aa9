"""JSON text for the output records, built from arrays: the pieces the record encoders glue
together, and the field checks their readers share.

The encoders write many records per call, so each piece here is made for a whole batch at
once: every number of a batch is formatted by one orjson call over a float32 array
(shortest digits that read back as the same float32), keys are escaped only when one of
them needs it, and timestamps are formatted once per distinct value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import orjson

from streamcast.errors import RecordError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: what JSON must escape in a string (orjson escapes exactly these)
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')
_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def json_keys(keys: Sequence[str]) -> tuple[list[bytes], list[bytes]]:
    """``(utf8, inner)`` per key: its UTF-8 bytes (the Kafka key) and its JSON string
    content without the quotes (the same object when nothing needs escaping).

    >>> json_keys(["a", "b"]), json_keys(['x"y'])[1]
    (([b'a', b'b'], [b'a', b'b']), [b'x\\\\"y'])
    """
    utf8 = [key.encode("utf-8") for key in keys]
    if _NEEDS_ESCAPE.search("".join(keys)) is None:
        return utf8, utf8
    return utf8, [orjson.dumps(key)[1:-1] for key in keys]


def float32_json(array: npt.NDArray[np.floating]) -> list[bytes]:
    """The JSON text of each ``array[i]``, without its outer brackets: the shortest
    digits that read back as the same float32 values.

    One orjson call formats the whole array; its text is cut at the first axis (a list
    of numbers holds no bracket). Raises ``ValueError`` for a value that is not finite in
    float32 (a forecast beyond float32 range is a bug upstream).

    >>> float32_json(np.array([[0.1, 2.0], [412.5, -1e20]]))
    [b'0.1,2.0', b'412.5,-1e+20']
    >>> float32_json(np.array([[[1.0], [2.0]], [[3.0], [4.5]]]))
    [b'1.0],[2.0', b'3.0],[4.5']
    >>> float32_json(np.array([[1.5, 2.5]])), float32_json(np.array([[[1.5]]]))
    ([b'1.5,2.5'], [b'1.5'])
    """
    single = np.ascontiguousarray(array, dtype=np.float32)
    if single.ndim < 2 or 0 in single.shape:
        raise ValueError(f"expected a non-empty array of 2 or more axes, got {single.shape}")
    if not np.isfinite(single).all():
        raise ValueError("a forecast value is not finite in float32")
    depth = single.ndim
    text = orjson.dumps(single, option=_NUMPY)
    # split the whole text and trim the two ends (slicing it first copies all of it)
    pieces = text.split(b"]" * (depth - 1) + b",[" + b"[" * (depth - 2))
    pieces[0] = pieces[0][depth:]
    pieces[-1] = pieces[-1][:-depth]  # the same piece as the first when there is one
    return pieces


def iso_pieces(ts_s: npt.NDArray[np.int64]) -> tuple[list[bytes], list[bytes], list[int]]:
    """``(iso, seconds, inverse)``: each distinct timestamp as ISO-8601 UTC (``...Z``) and
    as epoch-seconds text, formatted once (a batch's forecasts share few origins), and
    the position of every timestamp's distinct value.

    >>> iso_pieces(np.array([3600, 0, 3600]))
    ([b'1970-01-01T00:00:00Z', b'1970-01-01T01:00:00Z'], [b'0', b'3600'], [1, 0, 1])
    """
    unique, inverse = np.unique(np.asarray(ts_s, dtype=np.int64), return_inverse=True)
    iso = np.datetime_as_string(unique.astype("datetime64[s]"), unit="s").astype("S")
    return (
        [text + b"Z" for text in iso.tolist()],
        unique.astype("S").tolist(),
        inverse.ravel().tolist(),
    )


def iso_ms(seconds: float) -> str:
    """Epoch seconds as ISO-8601 UTC with milliseconds.

    >>> iso_ms(1_790_000_000.25)
    '2026-09-21T14:13:20.250Z'
    """
    moment = datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")
    return moment.replace("+00:00", "Z")


def iso_seconds(value: object, name: str) -> int:
    """An ISO-8601 timestamp with a zone (``...Z``) as whole epoch seconds (floored);
    :class:`~streamcast.errors.RecordError` naming ``name`` otherwise."""
    if not isinstance(value, str):
        raise RecordError(f"{name}: expected an ISO-8601 timestamp string, got {value!r}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise RecordError(f"{name}: {value!r} is not an ISO-8601 timestamp") from None
    if moment.tzinfo is None:
        raise RecordError(f"{name}: {value!r} has no time zone (expected ...Z)")
    return math.floor((moment - _EPOCH).total_seconds())


def json_object(value: bytes | None, what: str) -> dict[str, object]:
    """The record's JSON object, or a :class:`RecordError` saying what it is instead."""
    if not value:
        raise RecordError(f"empty record: {what} is a JSON object")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as err:
        raise RecordError(f"not JSON: {err}") from None
    if not isinstance(doc, dict):
        raise RecordError(f"{what} is a JSON object, got a JSON {type(doc).__name__}")
    return doc


def series_key(doc: Mapping[str, object], kafka_key: bytes | None) -> str:
    """The record's ``key``, which must be the Kafka message key when one is given."""
    key = text_field(doc, "key")
    if kafka_key is not None and kafka_key != key.encode("utf-8"):
        raise RecordError(f"key: {key!r} differs from the Kafka message key {kafka_key!r}")
    return key


def check_schema(doc: Mapping[str, object], known: Sequence[int], what: str) -> int:
    """The record's ``schema``, one of ``known``; a clear :class:`RecordError` otherwise."""
    schema = doc.get("schema")
    if type(schema) is not int:
        expected = " or ".join(map(str, known))
        raise RecordError(f"schema: expected the integer {expected}, got {schema!r}")
    if schema > max(known):
        raise RecordError(
            f"schema: {what} schema {schema} is newer than this reader understands "
            f"({max(known)}): upgrade streamcast"
        )
    if schema not in known:
        raise RecordError(f"schema: {what} schema {schema} is not supported (expected {known})")
    return schema


def text_field(doc: Mapping[str, object], name: str, *, empty: bool = False) -> str:
    """A string field (non-empty unless ``empty``)."""
    value = doc.get(name)
    if not isinstance(value, str) or (not value and not empty):
        raise RecordError(
            f"{name}: expected a {'' if empty else 'non-empty '}string, got {value!r}"
        )
    return value


def whole_field(doc: Mapping[str, object], name: str, *, minimum: int = 1) -> int:
    """An integer field of at least ``minimum`` (a bool is not one)."""
    value = doc.get(name)
    if type(value) is not int or value < minimum:
        kind = "positive integer" if minimum == 1 else f"integer >= {minimum}"
        raise RecordError(f"{name}: expected a {kind}, got {value!r}")
    return value


_NUMBER_TYPES = frozenset({float, int})


def numbers_field(value: object, length: int, name: str) -> list[float]:
    """A list of exactly ``length`` JSON numbers (booleans are not numbers here)."""
    if not isinstance(value, list) or len(value) != length:
        got = len(value) if isinstance(value, list) else repr(value)[:40]
        raise RecordError(f"{name}: expected a list of {length} numbers, got {got}")
    if not _NUMBER_TYPES.issuperset(map(type, value)):
        raise RecordError(f"{name}: every entry must be a number")
    return value


def finite_rows(rows: list[list[float]], what: str) -> npt.NDArray[np.float64]:
    """The rows as one float64 array (one conversion, one finiteness check)."""
    try:
        array = np.array(rows, dtype=np.float64)
    except OverflowError:  # an integer beyond float64
        raise RecordError(f"{what}: every entry must be finite") from None
    if not np.isfinite(array).all():
        raise RecordError(f"{what}: every entry must be finite")
    return array
