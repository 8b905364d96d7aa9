"""Array-shaped batches that flow through the pure core, and the forecast wire format.

:class:`TickBatch` is what the decoder produces and the pipeline consumes;
:class:`ForecastBatch` is what the pipeline produces and :func:`encode_forecasts` turns
into Kafka message values (:func:`decode_forecast`, in
:mod:`streamcast.core.forecast_reader`, reads them back). Batches are structures of
arrays (one row per tick or per forecast), never lists of per-tick objects.

Forecast JSON, ``"schema": 2`` (one Kafka message per forecast, Kafka key = series key)::

    {
      "schema": 2,
      "id": "sensor-7@1714557600",           # key@origin_s: the same in every replay
      "key": "sensor-7",
      "ts": "2024-05-01T10:00:00Z",          # origin: start of the last closed interval
      "origin_s": 1714557600,                # the same, epoch seconds
      "interval_s": 3600, "interval": "PT1H",
      "horizon": 3,                          # target k (1..horizon): origin_s + k * interval_s
      "model": "pedestrians", "model_version": "3",
      "levels": [0.8, 0.95],                 # coverage levels, ascending ([] uncalibrated)
      "generated_at": "2024-05-01T10:00:03.120Z",   # the service's wall clock
      "values": [412.5, 398.25, 377.0],      # original units, shortest float32 digits
      "lower": [[...], [...]],               # one row of `horizon` per level
      "upper": [[...], [...]]
    }

A model on a calendar grid (months, quarters, trading days: targets that are not ``origin_s
+ k * interval_s``) adds ``"grid": "months"`` (or ``"trading_days"``) and ``"targets"``, one
ISO string per step; ``interval`` is then ``P1M``, ``P3M`` or ``P1D`` and ``interval_s``
nominal.

Schema 1 (before): no ``id``, ``origin_s``, ``levels``, ``generated_at``; ``targets`` (one
ISO string per step); ``lower``/``upper`` objects keyed by the level's text (``"0.9"``),
present only when calibrated; values as float64 with up to 17 digits. The values the
model computes are float32, so schema 2 writes the shortest digits that read back as the
same float32 (relative difference below 6e-8, far inside the 1e-5 of online = offline):
a third of the bytes, and the origin + interval replace the 24 target strings.
:func:`decode_forecast` reads both.

Timestamps are ISO-8601 UTC with a ``Z`` suffix, seconds precision (intervals are
whole seconds). Consumers must ignore fields they do not know; a change that removes or
re-types a field bumps ``schema``. :func:`decode_forecast` is the one reader of this format
in streamcast (the API's view, ``streamcast tail``, the tests): a new schema version is
taught to it, and to nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt
import orjson

from streamcast.core.forecast_reader import (
    FORECAST_SCHEMA,
    READABLE_SCHEMAS,
    Forecast,
    decode_forecast,
)
from streamcast.core.grid import Grid
from streamcast.core.jsontext import (
    float32_json,
    iso_ms,
    iso_pieces,
    iso_seconds,
    json_keys,
)
from streamcast.errors import RejectReason

# re-exported: the forecast format's reader lives in forecast_reader, and every reader
# of the format imports it from here, next to its writer
__all__ = [
    "FORECAST_SCHEMA", "READABLE_SCHEMAS", "Counters", "Forecast", "ForecastBatch",
    "Rejection", "TickBatch", "decode_forecast", "encode_forecasts", "iso_duration",
    "iso_seconds", "iso_utc",
]  # fmt: skip


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
    #: the model's interval grid (None: fixed ``interval_s``); a calendar grid's targets
    #: (months, trading days) are not ``origin + k * interval_s``, so its records name
    #: the grid and carry their targets
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


def encode_forecasts(
    batch: ForecastBatch, generated_at_s: float | None = None
) -> list[tuple[bytes, bytes]]:
    """``(kafka_key, value)`` per forecast row, schema 2 (module docstring).

    Built from the batch's arrays: the numbers of each of values, lower and upper by one
    orjson call over float32 (:func:`~streamcast.core.jsontext.float32_json`), each
    distinct origin formatted once, and per record one join of the pieces.
    ``generated_at_s`` (the wall clock the batch was processed at) becomes
    ``generated_at`` when given.
    """
    n = len(batch)
    if n == 0:
        return []
    utf8, inner = json_keys(batch.keys)
    calibrated = batch.lower is not None and batch.upper is not None and bool(batch.levels)
    levels = batch.levels if calibrated else ()
    const = _constant_fields(batch, levels, generated_at_s)
    iso, seconds, inverse = iso_pieces(batch.origin_ts)
    # per distinct origin: what follows the id's key, and what follows the key
    after_id = [b'@%b","key":"' % sec for sec in seconds]
    grid = _grid_fields(batch)
    after_key = [
        b'","ts":"%b","origin_s":%b,%b%b,"values":[' % (text, sec, const, targets)
        for text, sec, targets in zip(iso, seconds, grid, strict=True)
    ]
    head = b'{"schema":%d,"id":"' % FORECAST_SCHEMA
    ids = [after_id[i] for i in inverse]
    keys = [after_key[i] for i in inverse]
    values = float32_json(batch.values)
    if not calibrated:
        tail = b'],"lower":[],"upper":[]}'
        return [
            (k, b"".join((head, q, a, q, b, v, tail)))
            for k, q, a, b, v in zip(utf8, inner, ids, keys, values, strict=True)
        ]
    assert batch.lower is not None and batch.upper is not None
    lower, upper = float32_json(batch.lower), float32_json(batch.upper)
    glue = (b'],"lower":[[', b']],"upper":[[', b"]]}")
    return [
        (k, b"".join((head, q, a, q, b, v, glue[0], lo, glue[1], hi, glue[2])))
        for k, q, a, b, v, lo, hi in zip(utf8, inner, ids, keys, values, lower, upper, strict=True)
    ]


def _grid_fields(batch: ForecastBatch) -> list[bytes]:
    """Per distinct origin (in :func:`~streamcast.core.jsontext.iso_pieces` order): for a
    calendar grid, its ``"grid"`` and ``"targets"`` members (targets as written: months
    and trading days are not ``origin + k * interval_s``); nothing for a fixed interval."""
    origins = np.unique(batch.origin_ts)
    if batch.grid is None or batch.grid.is_fixed:
        return [b""] * len(origins)
    targets = iso_utc(batch.grid.targets(origins, batch.horizon)).tolist()
    kind = orjson.dumps(batch.grid.kind)
    return [b',"grid":%b,"targets":%b' % (kind, orjson.dumps(row)) for row in targets]


def _constant_fields(
    batch: ForecastBatch, levels: tuple[float, ...], generated_at_s: float | None
) -> bytes:
    """The fields every record of the batch shares, as JSON members (no braces)."""
    doc: dict[str, object] = {
        "interval_s": batch.interval_s,
        "interval": batch.grid.iso() if batch.grid is not None else iso_duration(batch.interval_s),
        "horizon": batch.horizon,
        "model": batch.model,
        "model_version": batch.model_version,
        "levels": [float(level) for level in levels],
    }
    if generated_at_s is not None:
        doc["generated_at"] = iso_ms(generated_at_s)
    return orjson.dumps(doc)[1:-1]
