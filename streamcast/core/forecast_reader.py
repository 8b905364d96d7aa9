"""The one reader of forecast records: :func:`decode_forecast` (schema 2 and 1, see
:mod:`streamcast.core.records` for the format) into a :class:`Forecast`.

Every reader of the forecasts topic in streamcast uses it (the API's view, ``streamcast
tail``, the tests); a new schema version is taught to it, and to nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import msgspec
import numpy as np
import numpy.typing as npt

from streamcast.core.jsontext import (
    check_schema,
    finite_rows,
    iso_seconds,
    json_object,
    numbers_field,
    series_key,
    text_field,
    whole_field,
)
from streamcast.errors import RecordError

FORECAST_SCHEMA = 2
#: the forecast schemas :func:`decode_forecast` reads (1: before the compact record)
READABLE_SCHEMAS = (1, 2)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Forecast:
    """One forecast record, decoded (:func:`decode_forecast`): what a reader of the forecasts
    topic needs, in arrays. ``lower``/``upper`` are ``[L, H]`` for ``levels`` (ascending)."""

    key: str
    #: start (epoch seconds) of the closed interval the forecast was made at
    origin_ts: int
    interval_s: int
    #: ``[H]`` forecasts of the intervals ``origin + k * interval_s``, ``k = 1..H``
    values: FloatArray
    model: str
    model_version: str
    levels: tuple[float, ...] = ()
    lower: FloatArray | None = None
    upper: FloatArray | None = None
    schema: int = FORECAST_SCHEMA
    #: ``[H]`` the targets as written, for a calendar grid (months, trading days); None:
    #: ``origin + k * interval_s``
    targets: IntArray | None = None

    @property
    def horizon(self) -> int:
        """Number of forecast steps."""
        return len(self.values)

    def target_ts(self) -> IntArray:
        """``[H]`` start times (epoch seconds) of the target intervals."""
        if self.targets is not None:
            return self.targets
        steps = np.arange(1, self.horizon + 1, dtype=np.int64) * self.interval_s
        return np.asarray(self.origin_ts + steps, dtype=np.int64)


class _RecordV2(msgspec.Struct):
    """The fields of a schema-2 record :func:`decode_forecast` reads (typed decode)."""

    schema: int
    key: str
    ts: str
    origin_s: int
    interval_s: int
    horizon: int
    model: str
    model_version: str
    values: list[float]
    levels: list[float]
    lower: list[list[float]]
    upper: list[list[float]]
    #: a calendar grid's records name it and carry their targets (the checking path
    #: reads those)
    grid: str | None = None


_DECODE_V2 = msgspec.json.Decoder(_RecordV2)


def _decode_plain_v2(value: bytes | None, kafka_key: bytes | None) -> Forecast | None:
    """A well-formed schema-2 record, decoded typed (msgspec), or None: then the checking
    path reads it and says what is wrong (or reads another schema)."""
    try:
        doc = _DECODE_V2.decode(value or b"")
    except (msgspec.MsgspecError, RecursionError):
        return None
    h, levels = doc.horizon, doc.levels
    n = len(levels)
    plain = (
        doc.grid is None and doc.schema == FORECAST_SCHEMA and doc.key and doc.model and h >= 1
        and doc.interval_s >= 1 and doc.origin_s >= 0 and len(doc.values) == h
        and len(doc.lower) == n and len(doc.upper) == n
        and all(len(row) == h for row in doc.lower) and all(len(row) == h for row in doc.upper)
        and all(0.0 < v < 1.0 for v in levels) and levels == sorted(set(levels))
        and (kafka_key is None or kafka_key == doc.key.encode("utf-8"))
    )  # fmt: skip
    if not plain:
        return None
    try:
        origin = iso_seconds(doc.ts, "ts")
    except RecordError:
        return None
    array = np.array([doc.values, *doc.lower, *doc.upper], dtype=np.float64)
    if origin != doc.origin_s or not np.isfinite(array).all():
        return None
    return Forecast(
        key=doc.key,
        origin_ts=origin,
        interval_s=doc.interval_s,
        values=array[0],
        model=doc.model,
        model_version=doc.model_version,
        levels=tuple(levels),
        lower=array[1 : 1 + n] if n else None,
        upper=array[1 + n :] if n else None,
        schema=FORECAST_SCHEMA,
    )


def decode_forecast(value: bytes | None, kafka_key: bytes | None = None) -> Forecast:
    """Parse one forecast record, schema 2 or 1 (module docstring), into a :class:`Forecast`.

    A well-formed schema-2 record is decoded typed (msgspec); anything else by the
    checking path, which names the field and the problem.

    ``kafka_key``, when given, must be the record's series key. Raises
    :class:`~streamcast.errors.RecordError` naming the field and the problem; a record of
    a newer ``schema`` than this reader knows is refused with that said, never misread.

    >>> from streamcast.core.records import ForecastBatch, encode_forecasts
    >>> batch = ForecastBatch(["k"], np.array([3600]), np.array([[1.5, 2.0]]), "m", "1",
    ...                       3600, 2, np.array([0]))
    >>> key, value = encode_forecasts(batch)[0]
    >>> fc = decode_forecast(value, key)
    >>> fc.key, fc.origin_ts, fc.values.tolist(), fc.target_ts().tolist()
    ('k', 3600, [1.5, 2.0], [7200, 10800])
    """
    plain = _decode_plain_v2(value, kafka_key)
    return plain if plain is not None else _decode_checked(value, kafka_key)


def _decode_checked(value: bytes | None, kafka_key: bytes | None) -> Forecast:
    """:func:`decode_forecast` with a check per field: any schema, a precise error."""
    doc = json_object(value, "a forecast")
    schema = check_schema(doc, READABLE_SCHEMAS, "forecast")
    key = series_key(doc, kafka_key)
    horizon = whole_field(doc, "horizon")
    rows = [numbers_field(doc.get("values"), horizon, "values")]
    if schema == 1:
        names, lower, upper = _bounds_v1(doc, horizon)
        levels = tuple(float(name) for name in names)
    else:
        levels, lower, upper = _bounds_v2(doc, horizon)
    array = finite_rows(rows + lower + upper, "values, lower, upper")
    n = len(levels)
    origin = iso_seconds(doc.get("ts"), "ts")
    if schema == 2 and whole_field(doc, "origin_s", minimum=0) != origin:
        raise RecordError(f"origin_s: {doc.get('origin_s')} is not ts {doc.get('ts')!r}")
    return Forecast(
        key=key,
        origin_ts=origin,
        interval_s=whole_field(doc, "interval_s"),
        values=array[0],
        model=text_field(doc, "model"),
        model_version=text_field(doc, "model_version", empty=True),
        levels=levels,
        lower=array[1 : 1 + n] if n else None,
        upper=array[1 + n :] if n else None,
        schema=schema,
        targets=_targets(doc, horizon) if schema == 2 and "grid" in doc else None,
    )


def _targets(doc: Mapping[str, object], horizon: int) -> IntArray:
    """The record's own targets (a calendar grid's are not ``origin + k * interval_s``)."""
    value = doc.get("targets")
    if not isinstance(value, list) or len(value) != horizon:
        raise RecordError(f"targets: expected a list of {horizon} timestamps")
    return np.array([iso_seconds(t, "targets") for t in value], dtype=np.int64)


def _levels(value: object) -> tuple[float, ...]:
    """Coverage levels: ascending numbers in (0, 1)."""
    if not isinstance(value, list) or not all(type(v) in (int, float) for v in value):
        raise RecordError(f"levels: expected a list of numbers, got {repr(value)[:40]}")
    levels = tuple(float(v) for v in value)
    if not all(0.0 < v < 1.0 for v in levels) or list(levels) != sorted(set(levels)):
        raise RecordError(f"levels: expected distinct ascending levels in (0, 1), got {value}")
    return levels


def _bounds_v2(
    doc: Mapping[str, object], horizon: int
) -> tuple[tuple[float, ...], list[list[float]], list[list[float]]]:
    """Schema 2: ``levels`` and one ``lower``/``upper`` row per level."""
    levels = _levels(doc.get("levels", []))
    out: list[list[list[float]]] = []
    for name in ("lower", "upper"):
        rows = doc.get(name, [])
        if not isinstance(rows, list) or len(rows) != len(levels):
            got = len(rows) if isinstance(rows, list) else repr(rows)[:40]
            raise RecordError(f"{name}: expected one row per level ({len(levels)}), got {got}")
        out.append([numbers_field(row, horizon, f"{name}[{i}]") for i, row in enumerate(rows)])
    return levels, out[0], out[1]


def _bounds_v1(
    doc: Mapping[str, object], horizon: int
) -> tuple[list[str], list[list[float]], list[list[float]]]:
    """Schema 1: level names in ascending order and the lower and upper rows of each."""
    if "lower" not in doc and "upper" not in doc:
        return [], [], []
    lower, upper = doc.get("lower"), doc.get("upper")
    if not isinstance(lower, dict) or not isinstance(upper, dict) or set(lower) != set(upper):
        raise RecordError("lower, upper: expected two objects with the same level names")
    try:
        names = sorted(lower, key=float)
    except ValueError:
        raise RecordError(f"lower: level names must be numbers, got {sorted(lower)}") from None
    if not all(0.0 < float(n) < 1.0 for n in names):
        raise RecordError(f"lower: levels must lie in (0, 1), got {names}")
    lo = [numbers_field(lower[n], horizon, f"lower[{n}]") for n in names]
    hi = [numbers_field(upper[n], horizon, f"upper[{n}]") for n in names]
    return names, lo, hi
