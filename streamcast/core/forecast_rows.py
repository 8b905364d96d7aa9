"""The row-per-target forecast layout (``forecast_layout = rows``): one flat record per
forecast step, for Kafka Connect sinks (JDBC, Elasticsearch) and time-series databases,
which want one row per (key, target) and no arrays to explode.

Forecast row JSON, ``"schema": 1``, schema ``forecast_row`` (Kafka key = series key; the
rows of one forecast are consecutive on the key's partition, steps 1..horizon)::

    {
      "schema": 1,
      "id": "sensor-7@1714557600+1",         # key@origin_s+step: an upsert key
      "key": "sensor-7",
      "origin": "2024-05-01T10:00:00Z", "origin_s": 1714557600,
      "target": "2024-05-01T11:00:00Z", "target_s": 1714561200,
      "step": 1, "horizon": 24, "interval_s": 3600,
      "model": "pedestrians", "model_version": "3",
      "generated_at": "2024-05-01T10:00:03.120Z",
      "value": 412.5,
      "lower_80": 380.25, "upper_80": 441.0,   # per level, named by its percentage
      "lower_95": 361.5, "upper_95": 470.75    # (97.5 % would be lower_97_5)
    }

:class:`ForecastAssembler` puts the rows of a forecast back together (the API's view
reads either layout).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import orjson

from streamcast.core.jsontext import (
    check_schema,
    float32_json,
    iso_ms,
    iso_pieces,
    iso_seconds,
    json_keys,
    json_object,
    series_key,
    text_field,
    whole_field,
)
from streamcast.core.records import FloatArray, Forecast, ForecastBatch
from streamcast.errors import RecordError

FORECAST_ROW_SCHEMA = 1
#: a bound's field name: lower_80, upper_97_5
_BOUND = re.compile(r"^(lower|upper)_([0-9]+)(?:_([0-9]+))?$")


def level_name(level: float) -> str:
    """The suffix of a level's bound fields: its percentage, ``_`` for the point.

    >>> level_name(0.8), level_name(0.95), level_name(0.975), level_name(0.9)
    ('80', '95', '97_5', '90')
    """
    return f"{level * 100:g}".replace(".", "_")


def encode_forecast_rows(
    batch: ForecastBatch, generated_at_s: float | None = None
) -> list[tuple[bytes, bytes]]:
    """``(kafka_key, value)`` per forecast step (module docstring): ``horizon`` records
    per forecast row, forecast after forecast, steps in order."""
    n, h = len(batch), batch.horizon
    if n == 0:
        return []
    utf8, inner = json_keys(batch.keys)
    calibrated = batch.lower is not None and batch.upper is not None and bool(batch.levels)
    names = [level_name(level) for level in batch.levels] if calibrated else []
    columns = [batch.values.reshape(n * h)]
    if calibrated:
        assert batch.lower is not None and batch.upper is not None
        # [M, L, H] -> per level a column of M * H bounds, forecast-major like the values
        columns += [
            bound[:, j].reshape(n * h)
            for bound in (batch.lower, batch.upper)
            for j in range(len(names))
        ]
    # one orjson call per column: the number of every row
    numbers = [float32_json(column[:, None]) for column in columns]
    fields = [b',"value":'] + [b',"lower_%b":' % s.encode() for s in names]
    fields += [b',"upper_%b":' % s.encode() for s in names]
    doc: dict[str, object] = {
        "horizon": h, "interval_s": batch.interval_s, "model": batch.model,
        "model_version": batch.model_version,
    }  # fmt: skip
    if generated_at_s is not None:
        doc["generated_at"] = iso_ms(generated_at_s)
    const = orjson.dumps(doc)[1:-1]
    o_iso, o_sec, o_inv = iso_pieces(batch.origin_ts)
    t_iso, t_sec, t_inv = iso_pieces(batch.target_ts().ravel())
    steps = [b"%d" % k for k in range(1, h + 1)]
    # what each row shares with its forecast: before the step, and from the step on
    heads, middles = [], []
    for i in range(n):
        q, sec = inner[i], o_sec[o_inv[i]]
        heads.append(b'{"schema":%d,"id":"%b@%b+' % (FORECAST_ROW_SCHEMA, q, sec))
        middles.append(
            b'","key":"%b","origin":"%b","origin_s":%b,%b,"target":"'
            % (q, o_iso[o_inv[i]], sec, const)
        )
    targets = [b'%b","target_s":%b,"step":' % (t_iso[j], t_sec[j]) for j in range(len(t_iso))]
    out: list[tuple[bytes, bytes]] = []
    for r, row_numbers in enumerate(zip(*numbers, strict=True)):
        i, k = divmod(r, h)
        parts = [heads[i], steps[k], middles[i], targets[t_inv[r]], steps[k]]
        for name, number in zip(fields, row_numbers, strict=True):
            parts += (name, number)
        parts.append(b"}")
        out.append((utf8[i], b"".join(parts)))
    return out


@dataclass(frozen=True, slots=True)
class ForecastRow:
    """One decoded forecast row (:func:`decode_forecast_row`)."""

    key: str
    origin_ts: int
    step: int
    horizon: int
    interval_s: int
    model: str
    model_version: str
    value: float
    levels: tuple[float, ...] = ()
    #: ``[L]`` the bounds at ``levels``
    lower: tuple[float, ...] = ()
    upper: tuple[float, ...] = ()


def decode_forecast_row(value: bytes | None, kafka_key: bytes | None = None) -> ForecastRow:
    """Parse one forecast row (module docstring); :class:`RecordError` naming the field
    and the problem otherwise."""
    doc = json_object(value, "a forecast row")
    check_schema(doc, (FORECAST_ROW_SCHEMA,), "forecast row")
    key = series_key(doc, kafka_key)
    horizon = whole_field(doc, "horizon")
    step = whole_field(doc, "step")
    if step > horizon:
        raise RecordError(f"step: {step} is beyond the horizon {horizon}")
    bounds: dict[str, dict[float, float]] = {"lower": {}, "upper": {}}
    for name, number in doc.items():
        match = _BOUND.match(name)
        if match is None:
            continue
        level = float(f"{match[2]}.{match[3] or 0}") / 100
        bounds[match[1]][level] = _finite(number, name)
    levels = tuple(sorted(bounds["lower"]))
    if set(bounds["upper"]) != set(levels) or not all(0 < v < 1 for v in levels):
        raise RecordError("lower_*, upper_*: expected the same levels in (0, 100) for both")
    return ForecastRow(
        key=key,
        origin_ts=iso_seconds(doc.get("origin"), "origin"),
        step=step,
        horizon=horizon,
        interval_s=whole_field(doc, "interval_s"),
        model=text_field(doc, "model"),
        model_version=text_field(doc, "model_version", empty=True),
        value=_finite(doc.get("value"), "value"),
        levels=levels,
        lower=tuple(bounds["lower"][v] for v in levels),
        upper=tuple(bounds["upper"][v] for v in levels),
    )


def _finite(value: object, name: str) -> float:
    if (type(value) is not int and type(value) is not float) or not math.isfinite(value):
        raise RecordError(f"{name}: expected a finite number, got {value!r}")
    return float(value)


@dataclass
class _Pending:
    origin_ts: int
    first: ForecastRow
    numbers: FloatArray  # [1 + 2L, H]
    seen: npt.NDArray[np.bool_] = field(repr=False)


class ForecastAssembler:
    """Forecast rows back into :class:`Forecast` s: :meth:`add` returns the forecast when
    its last missing step arrives. Holds one partial forecast per key (a new origin
    replaces the old one), at most ``max_keys`` of them (beyond, the oldest go).

    >>> batch = ForecastBatch(["k"], np.array([3600]), np.array([[1.5, 2.0]]), "m", "1",
    ...                       3600, 2, np.array([0]))
    >>> rows = [decode_forecast_row(v) for _, v in encode_forecast_rows(batch)]
    >>> assembler = ForecastAssembler()
    >>> assembler.add(rows[0]) is None, assembler.add(rows[1]).values.tolist()
    (True, [1.5, 2.0])
    """

    def __init__(self, max_keys: int = 100_000) -> None:
        self._pending: dict[str, _Pending] = {}
        self._max_keys = max_keys

    def add(self, row: ForecastRow) -> Forecast | None:
        """Take one row; the whole forecast once every step of it arrived."""
        pending = self._pending.get(row.key)
        shape = (1 + 2 * len(row.levels), row.horizon)
        if pending is None or pending.origin_ts != row.origin_ts or pending.numbers.shape != shape:
            if len(self._pending) >= self._max_keys:
                del self._pending[next(iter(self._pending))]
            pending = _Pending(row.origin_ts, row, np.zeros(shape), np.zeros(row.horizon, bool))
            self._pending.pop(row.key, None)
            self._pending[row.key] = pending
        k = row.step - 1
        pending.numbers[:, k] = (row.value, *row.lower, *row.upper)
        pending.seen[k] = True
        if not pending.seen.all():
            return None
        del self._pending[row.key]
        n = len(row.levels)
        first = pending.first
        return Forecast(
            key=row.key,
            origin_ts=row.origin_ts,
            interval_s=first.interval_s,
            values=pending.numbers[0],
            model=first.model,
            model_version=first.model_version,
            levels=first.levels,
            lower=pending.numbers[1 : 1 + n] if n else None,
            upper=pending.numbers[1 + n :] if n else None,
            schema=2,
        )

    def __len__(self) -> int:
        return len(self._pending)
