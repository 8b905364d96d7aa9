"""Array-shaped batches that flow through the pure core, and the forecast wire format.

:class:`TickBatch` is what the decoder produces and the pipeline consumes;
:class:`ForecastBatch` is what the pipeline produces and :func:`encode_forecasts` turns
into Kafka message values. Batches are structures of arrays (one row per tick or per
forecast), never lists of per-tick objects.

Forecast JSON, ``"schema": 1`` (one Kafka message per forecast, Kafka key = series key)::

    {
      "schema": 1,
      "key": "sensor-7",
      "ts": "2024-05-01T10:00:00Z",          # origin: start of the last closed interval
      "model": "pedestrians", "model_version": "3",
      "interval_s": 3600, "interval": "PT1H",   # months: "P1M", interval_s nominal
      "grid": "months",                        # only for calendar grids (months,
                                               # trading_days): targets as written
      "horizon": 3,
      "targets": ["2024-05-01T11:00:00Z", "2024-05-01T12:00:00Z", "2024-05-01T13:00:00Z"],
      "values": [412.5, 398.25, 377.0],      # original units, exact float64 (not rounded)
      "lower": {"0.9": [...]}, "upper": {"0.9": [...]}   # only with a calibrated model
    }

Timestamps are ISO-8601 UTC with a ``Z`` suffix, seconds precision (intervals are
whole seconds). Consumers must ignore fields they do not know; a change that removes or
re-types a field bumps ``schema``. :func:`decode_forecast` is the one reader of this format
in streamcast (the API's view, ``streamcast tail``, the tests): a new schema version is
taught to it, and to nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import orjson

from streamcast.core.grid import Grid
from streamcast.errors import RecordError, RejectReason

FORECAST_SCHEMA = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class TickBatch:
    """Decoded, well-formed ticks in input order (one row per tick).

    ``index[i]`` is the position of tick ``i`` in the message sequence given to the
    decoder, so the Kafka edge can map a tick (or its rejection) back to its offset.
    ``values[:, 0]`` is the target value, ``values[:, 1:]`` the extra features in the
    decoder's ``extra_fields`` order. ``partition`` and ``offset`` are the input partition
    and offset each tick was read from (None when there are none: tools, tests): the
    state store records the partition as the key's changelog partition and the offset as
    the last input applied to the key (a restored key skips what it applied already).
    """

    keys: list[str]
    ts_ms: IntArray
    values: FloatArray
    index: IntArray
    partition: npt.NDArray[np.int32] | None = None
    offset: npt.NDArray[np.int64] | None = None

    def __post_init__(self) -> None:
        n = len(self.keys)
        if self.ts_ms.shape != (n,) or self.index.shape != (n,):
            raise ValueError(f"ts_ms and index must have shape ({n},)")
        for name in ("partition", "offset"):
            column = getattr(self, name)
            if column is not None and column.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},)")
        if self.values.ndim != 2 or self.values.shape[0] != n:
            raise ValueError(f"values must have shape ({n}, 1 + E), got {self.values.shape}")

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def empty(cls, n_inputs: int = 1) -> TickBatch:
        """A batch with no ticks and ``n_inputs`` value columns."""
        return cls(
            keys=[],
            ts_ms=np.zeros(0, dtype=np.int64),
            values=np.zeros((0, n_inputs)),
            index=np.zeros(0, dtype=np.int64),
        )

    @classmethod
    def from_rows(
        cls,
        keys: list[str],
        ts_ms: list[int] | IntArray,
        values: list[list[float]] | list[float] | FloatArray,
        index: list[int] | IntArray | None = None,
    ) -> TickBatch:
        """Build a batch from plain lists (tests, replay tools); 1-D values mean E = 0."""
        vals = np.asarray(values, dtype=np.float64)
        if vals.ndim == 1:
            vals = vals[:, None]
        if len(keys) == 0:
            vals = np.zeros((0, vals.shape[-1] if vals.ndim == 2 else 1))
        idx = np.arange(len(keys)) if index is None else index
        return cls(
            keys=list(keys),
            ts_ms=np.asarray(ts_ms, dtype=np.int64),
            values=vals.reshape(len(keys), -1) if len(keys) else vals,
            index=np.asarray(idx, dtype=np.int64),
        )

    def take(self, rows: npt.NDArray[np.int64]) -> TickBatch:
        """The ticks at positions ``rows`` (keeps their original ``index``)."""
        return TickBatch(
            keys=[self.keys[int(i)] for i in rows],
            ts_ms=self.ts_ms[rows],
            values=self.values[rows],
            index=self.index[rows],
            partition=None if self.partition is None else self.partition[rows],
            offset=None if self.offset is None else self.offset[rows],
        )

    def placed(
        self, partition: npt.NDArray[np.integer], offset: npt.NDArray[np.integer]
    ) -> TickBatch:
        """The same ticks, each with the input partition and offset it was read from."""
        return TickBatch(
            self.keys,
            self.ts_ms,
            self.values,
            self.index,
            np.asarray(partition, dtype=np.int32),
            np.asarray(offset, dtype=np.int64),
        )


@dataclass
class Counters:
    """Event counts (per batch in :class:`StepResult`, cumulative on :class:`Pipeline`)."""

    ticks_in: int = 0
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    closed_intervals: int = 0
    imputed_steps: int = 0
    resets: int = 0
    steps: int = 0
    forecasts: int = 0
    model_calls: int = 0
    evicted_lru: int = 0
    expired_ttl: int = 0
    #: keys whose processing raised and whose ticks were dead-lettered (a bug, isolated)
    internal_errors: int = 0
    #: ticks skipped because their key's restored state had applied them already
    replayed: int = 0
    #: drift alerts raised
    alerts: int = 0

    def add(self, other: Counters) -> None:
        """Accumulate ``other`` into this one."""
        for name in (
            "ticks_in", "accepted", "closed_intervals", "imputed_steps", "resets", "steps",
            "forecasts", "model_calls", "evicted_lru", "expired_ttl", "internal_errors", "replayed",
            "alerts",
        ):  # fmt: skip
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for reason, n in other.rejected.items():
            self.rejected[reason] = self.rejected.get(reason, 0) + n


@dataclass(frozen=True)
class Rejection:
    """One rejected message: its position in the input sequence, why, and a short detail."""

    index: int
    reason: RejectReason
    detail: str


@dataclass(frozen=True)
class ForecastBatch:
    """Forecasts produced by one pipeline call (one row per forecast).

    ``origin_ts[i]`` is the start (epoch seconds) of the closed interval the forecast was
    made at; the targets are ``origin + k * interval_s`` for ``k = 1..horizon``.
    ``lower``/``upper`` are ``[M, L, H]`` for the model's calibration ``levels`` (absent
    when the model is not calibrated). ``trigger_index[i]`` is the input index (see
    :attr:`TickBatch.index`) of the tick whose arrival closed the interval.
    Rows of the same key are in time order.
    """

    keys: list[str]
    origin_ts: IntArray
    values: FloatArray
    model: str
    model_version: str
    interval_s: int
    horizon: int
    trigger_index: IntArray
    levels: tuple[float, ...] = ()
    lower: FloatArray | None = None
    upper: FloatArray | None = None
    extra: dict[str, str] = field(default_factory=dict)
    #: [M] the unit of each forecast (its scale: bands are quantiles in this unit)
    unit: FloatArray | None = None
    #: the model's interval grid (None: fixed ``interval_s``); calendar grids (months,
    #: trading days) say so in the record, which then names its grid
    grid: Grid | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def take(self, rows: npt.NDArray[np.int64]) -> ForecastBatch:
        """The forecasts at positions ``rows``."""
        return replace(
            self,
            keys=[self.keys[int(i)] for i in rows],
            origin_ts=self.origin_ts[rows],
            values=self.values[rows],
            trigger_index=self.trigger_index[rows],
            lower=None if self.lower is None else self.lower[rows],
            upper=None if self.upper is None else self.upper[rows],
            unit=None if self.unit is None else self.unit[rows],
        )

    @staticmethod
    def concat(parts: Sequence[ForecastBatch]) -> ForecastBatch:
        """The forecasts of ``parts`` (batches of one model), in order."""
        first = parts[0]
        if len(parts) == 1:
            return first
        lower = [p.lower for p in parts if p.lower is not None]
        upper = [p.upper for p in parts if p.upper is not None]
        unit = [p.unit for p in parts if p.unit is not None]
        return replace(
            first,
            keys=[k for p in parts for k in p.keys],
            origin_ts=np.concatenate([p.origin_ts for p in parts]),
            values=np.concatenate([p.values for p in parts]),
            trigger_index=np.concatenate([p.trigger_index for p in parts]),
            lower=np.concatenate(lower) if lower else None,
            upper=np.concatenate(upper) if upper else None,
            unit=np.concatenate(unit) if unit else None,
        )

    def target_ts(self) -> IntArray:
        """``[M, H]`` start times (epoch seconds) of the forecast target intervals."""
        if self.grid is not None and not self.grid.is_fixed:
            return self.grid.targets(self.origin_ts, self.horizon)
        steps = np.arange(1, self.horizon + 1, dtype=np.int64) * self.interval_s
        return np.asarray(self.origin_ts[:, None] + steps, dtype=np.int64)


def iso_duration(seconds: int) -> str:
    """ISO-8601 duration of a whole number of seconds.

    >>> iso_duration(3600), iso_duration(1800), iso_duration(86400), iso_duration(90)
    ('PT1H', 'PT30M', 'P1D', 'PT1M30S')
    """
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    date = f"{days}D" if days else ""
    time = "".join(f"{n}{u}" for n, u in ((hours, "H"), (minutes, "M"), (secs, "S")) if n)
    return "P" + date + ("T" + time if time else "") if (date or time) else "PT0S"


def iso_utc(ts_s: IntArray) -> npt.NDArray[np.str_]:
    """Epoch seconds (any shape) as ISO-8601 UTC strings with a ``Z`` suffix (vectorised)."""
    text = np.datetime_as_string(np.asarray(ts_s, dtype="datetime64[s]"), unit="s")
    return np.char.add(text, "Z")


def encode_forecasts(batch: ForecastBatch) -> list[tuple[bytes, bytes]]:
    """``(kafka_key, value)`` per forecast row in the documented schema (module docstring)."""
    if len(batch) == 0:
        return []
    origins = iso_utc(batch.origin_ts).tolist()
    targets = iso_utc(batch.target_ts()).tolist()
    values = batch.values.tolist()
    calendar = batch.grid is not None and not batch.grid.is_fixed
    interval = batch.grid.iso() if batch.grid is not None else iso_duration(batch.interval_s)
    level_names = [repr(float(level)) for level in batch.levels]
    lower = batch.lower.tolist() if batch.lower is not None else None
    upper = batch.upper.tolist() if batch.upper is not None else None
    out: list[tuple[bytes, bytes]] = []
    for i, key in enumerate(batch.keys):
        doc: dict[str, object] = {
            "schema": FORECAST_SCHEMA,
            "key": key,
            "ts": origins[i],
            "model": batch.model,
            "model_version": batch.model_version,
            "interval_s": batch.interval_s,
            "interval": interval,
            "horizon": batch.horizon,
            "targets": targets[i],
            "values": values[i],
        }
        if calendar:
            # targets are not origin + k * interval_s: readers take them as written
            doc["grid"] = batch.grid.kind if batch.grid is not None else "fixed"
        if lower is not None and upper is not None:
            doc["lower"] = dict(zip(level_names, lower[i], strict=True))
            doc["upper"] = dict(zip(level_names, upper[i], strict=True))
        out.append((key.encode("utf-8"), orjson.dumps(doc)))
    return out


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


def decode_forecast(value: bytes | None, kafka_key: bytes | None = None) -> Forecast:
    """Parse one forecast record (module docstring) into a :class:`Forecast`.

    ``kafka_key``, when given, must be the record's series key. Raises
    :class:`~streamcast.errors.RecordError` naming the field and the problem; a record of
    a newer ``schema`` than this reader knows is refused with that said, never misread.

    >>> batch = ForecastBatch(["k"], np.array([3600]), np.array([[1.5, 2.0]]), "m", "1",
    ...                       3600, 2, np.array([0]))
    >>> key, value = encode_forecasts(batch)[0]
    >>> fc = decode_forecast(value, key)
    >>> fc.key, fc.origin_ts, fc.values.tolist(), fc.target_ts().tolist()
    ('k', 3600, [1.5, 2.0], [7200, 10800])
    """
    if not value:
        raise RecordError("empty record: a forecast is a JSON object")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as err:
        raise RecordError(f"not JSON: {err}") from None
    if not isinstance(doc, dict):
        raise RecordError(f"a forecast is a JSON object, got a JSON {type(doc).__name__}")
    _check_schema(doc, FORECAST_SCHEMA, "forecast")
    key = _text(doc, "key")
    if kafka_key is not None and kafka_key != key.encode("utf-8"):
        raise RecordError(f"key: {key!r} differs from the Kafka message key {kafka_key!r}")
    horizon = _whole(doc, "horizon")
    rows = [_numbers(doc.get("values"), horizon, "values")]
    names: list[str] = []
    if "lower" in doc or "upper" in doc:
        names, lower_rows, upper_rows = _bounds(doc.get("lower"), doc.get("upper"), horizon)
        rows += lower_rows + upper_rows
    # one array for every number of the record: one conversion, one finiteness check
    array = np.array(rows, dtype=np.float64)
    if not np.isfinite(array).all():
        raise RecordError("values, lower, upper: every entry must be finite")
    n = len(names)
    levels = tuple(float(name) for name in names)
    return Forecast(
        key=key,
        origin_ts=iso_seconds(doc.get("ts"), "ts"),
        interval_s=_whole(doc, "interval_s"),
        values=array[0],
        model=_text(doc, "model"),
        model_version=_text(doc, "model_version", empty=True),
        levels=levels,
        lower=array[1 : 1 + n] if n else None,
        upper=array[1 + n :] if n else None,
        schema=FORECAST_SCHEMA,
        targets=_targets(doc, horizon) if "grid" in doc else None,
    )


def _targets(doc: Mapping[str, object], horizon: int) -> IntArray:
    """The record's own targets (a calendar grid's are not ``origin + k * interval_s``)."""
    value = doc.get("targets")
    if not isinstance(value, list) or len(value) != horizon:
        raise RecordError(f"targets: expected a list of {horizon} timestamps")
    return np.array([iso_seconds(t, "targets") for t in value], dtype=np.int64)


def _check_schema(doc: Mapping[str, object], known: int, what: str) -> None:
    schema = doc.get("schema")
    if type(schema) is not int:
        raise RecordError(f"schema: expected the integer {known}, got {schema!r}")
    if schema > known:
        raise RecordError(
            f"schema: {what} schema {schema} is newer than this reader understands "
            f"({known}): upgrade streamcast"
        )
    if schema != known:
        raise RecordError(f"schema: {what} schema {schema} is not supported (expected {known})")


def _text(doc: Mapping[str, object], name: str, *, empty: bool = False) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or (not value and not empty):
        raise RecordError(
            f"{name}: expected a {'' if empty else 'non-empty '}string, got {value!r}"
        )
    return value


def _whole(doc: Mapping[str, object], name: str) -> int:
    value = doc.get(name)
    if type(value) is not int or value < 1:
        raise RecordError(f"{name}: expected a positive integer, got {value!r}")
    return value


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


_NUMBER_TYPES = frozenset({float, int})


def _numbers(value: object, length: int, name: str) -> list[float]:
    if not isinstance(value, list) or len(value) != length:
        got = len(value) if isinstance(value, list) else repr(value)[:40]
        raise RecordError(f"{name}: expected a list of {length} numbers, got {got}")
    if not _NUMBER_TYPES.issuperset(map(type, value)):  # a bool is not a number here
        raise RecordError(f"{name}: every entry must be a number")
    return value


def _bounds(
    lower: object, upper: object, horizon: int
) -> tuple[list[str], list[list[float]], list[list[float]]]:
    """Level names in ascending order and the lower and upper rows of each."""
    if not isinstance(lower, dict) or not isinstance(upper, dict) or set(lower) != set(upper):
        raise RecordError("lower, upper: expected two objects with the same level names")
    try:
        names = sorted(lower, key=float)
    except ValueError:
        raise RecordError(f"lower: level names must be numbers, got {sorted(lower)}") from None
    if not all(0.0 < float(n) < 1.0 for n in names):
        raise RecordError(f"lower: levels must lie in (0, 1), got {names}")
    lo = [_numbers(lower[n], horizon, f"lower[{n}]") for n in names]
    hi = [_numbers(upper[n], horizon, f"upper[{n}]") for n in names]
    return names, lo, hi
