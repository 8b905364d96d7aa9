"""The latest forecast of every key, in compact memory: what ``GET /v1/forecasts`` reads.

A :class:`ForecastView` keeps one *packed entry* per key: a single ``bytes`` object with a
40-byte header (origin, Kafka timestamp, partition, offset, interval, horizon, model id,
level count) followed by float64 arrays (levels, values, lower, upper). Model names and
versions are stored once in a small table and referenced by id; target timestamps are not
stored (origin + k * interval). For a horizon of 24 with two interval levels that is
1,216 bytes of payload per key, about half the forecast's JSON, and one Python object
instead of dozens (measured per key in ``bench/api.py``).

Keys live in an ``OrderedDict`` in update order, so the least recently updated key is
the first one: beyond ``max_keys`` it is evicted. A sorted list of the keys serves
prefix listings with a stable cursor (the last key of a page: later pages never repeat
or skip a key that exists throughout, whatever is updated in between).

>>> view = ForecastView(max_keys=2)
>>> fc = Forecast("a", 3600, 3600, np.array([1.0, 2.0]), "m", "1")
>>> view.put(fc, published_ms=7_200_000, partition=0, offset=5)
True
>>> got = view.get("a")
>>> got.forecast.values.tolist(), got.offset, got.etag
([1.0, 2.0], 5, 'W/"3600-0-5"')
"""

from __future__ import annotations

import bisect
import struct
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from streamcast.core.records import Forecast
from streamcast.errors import RecordError

#: origin_ts, published_ms, offset (int64); partition, interval_s (int32); model id
#: (uint32); horizon (uint16); level count (uint8); padding to 40 bytes
HEADER = struct.Struct("<qqqiiIHB5x")
_F64 = 8
#: the largest interval, horizon and level count a packed entry holds (HEADER's int32,
#: uint16 and uint8): a forecast beyond them is refused by :func:`check_storable`
MAX_INTERVAL_S = 2**31 - 1
MAX_HORIZON = 2**16 - 1
MAX_LEVELS = 2**8 - 1


def check_storable(fc: Forecast) -> None:
    """RecordError unless the view can store ``fc``: a record the decoder reads may still
    carry an interval, horizon or level count beyond any real forecast's (and the packed
    header's fields).

    >>> check_storable(Forecast("k", 3600, 2**31, np.array([1.0]), "m", "1"))
    Traceback (most recent call last):
    ...
    streamcast.errors.RecordError: interval_s: 2147483648 is more than 2147483647
    """
    for field, value, most in (
        ("interval_s", fc.interval_s, MAX_INTERVAL_S),
        ("horizon", fc.horizon, MAX_HORIZON),
        ("levels", len(fc.levels), MAX_LEVELS),
    ):
        if value > most:
            raise RecordError(f"{field}: {value} is more than {most}")


@dataclass(frozen=True, slots=True)
class Latest:
    """A key's latest forecast and where it was read from."""

    forecast: Forecast
    #: Kafka timestamp of the record (when the service published it), epoch ms
    published_ms: int
    partition: int
    offset: int

    @property
    def etag(self) -> str:
        """A weak entity tag: the same on every replica (it names the record, not the
        replica), different for every new forecast."""
        return f'W/"{self.forecast.origin_ts}-{self.partition}-{self.offset}"'


@dataclass(frozen=True, slots=True)
class Summary:
    """What a listing shows of a key: its latest origin and model."""

    key: str
    origin_ts: int
    published_ms: int
    model: str
    model_version: str


class ForecastView:
    """The latest forecast per key, bounded by ``max_keys`` (module docstring).

    Not thread-safe: one event loop writes and reads it.
    """

    def __init__(self, max_keys: int = 100_000) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys}")
        self.max_keys = max_keys
        self._rows: OrderedDict[str, bytes] = OrderedDict()
        self._sorted: list[str] = []
        self._models: list[tuple[str, str]] = []
        self._model_ids: dict[tuple[str, str], int] = {}
        self.payload_bytes = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    # -- writing --------------------------------------------------------------------------

    def put(self, forecast: Forecast, *, published_ms: int, partition: int, offset: int) -> bool:
        """Make ``forecast`` the key's latest; True when the key is new to the view."""
        packed = self._pack(forecast, published_ms, partition, offset)
        key = forecast.key
        old = self._rows.get(key)
        self._rows[key] = packed
        self.payload_bytes += len(packed)
        if old is not None:
            self.payload_bytes -= len(old)
            self._rows.move_to_end(key)
            return False
        bisect.insort(self._sorted, key)
        while len(self._rows) > self.max_keys:
            self._evict_oldest()
        return True

    def remove(self, key: str) -> bool:
        """Forget ``key`` (a tombstone on a compacted forecasts topic); True if it was held."""
        packed = self._rows.pop(key, None)
        if packed is None:
            return False
        self.payload_bytes -= len(packed)
        del self._sorted[bisect.bisect_left(self._sorted, key)]
        return True

    def _evict_oldest(self) -> None:
        key, packed = self._rows.popitem(last=False)
        self.payload_bytes -= len(packed)
        del self._sorted[bisect.bisect_left(self._sorted, key)]
        self.evicted += 1

    def _pack(self, fc: Forecast, published_ms: int, partition: int, offset: int) -> bytes:
        model = (fc.model, fc.model_version)
        model_id = self._model_ids.get(model)
        if model_id is None:
            model_id = self._model_ids[model] = len(self._models)
            self._models.append(model)
        header = HEADER.pack(
            fc.origin_ts, published_ms, offset, partition, fc.interval_s, model_id,
            fc.horizon, len(fc.levels),
        )  # fmt: skip
        parts = [np.asarray(fc.levels, dtype=np.float64), fc.values]
        if fc.lower is not None and fc.upper is not None:
            parts += [fc.lower.ravel(), fc.upper.ravel()]
        return header + np.concatenate(parts).astype("<f8", copy=False).tobytes()

    # -- reading --------------------------------------------------------------------------

    def get(self, key: str) -> Latest | None:
        """The key's latest forecast, or None."""
        packed = self._rows.get(key)
        if packed is None:
            return None
        origin, published, offset, partition, interval_s, model_id, horizon, n_levels = (
            HEADER.unpack_from(packed)
        )
        floats = np.frombuffer(packed, dtype="<f8", offset=HEADER.size)
        levels = tuple(floats[:n_levels].tolist())
        values = floats[n_levels : n_levels + horizon]
        lower = upper = None
        if n_levels:
            start = n_levels + horizon
            size = n_levels * horizon
            lower = floats[start : start + size].reshape(n_levels, horizon)
            upper = floats[start + size : start + 2 * size].reshape(n_levels, horizon)
        name, version = self._models[model_id]
        fc = Forecast(key, origin, interval_s, values, name, version, levels, lower, upper)
        return Latest(fc, published, partition, offset)

    def summary(self, key: str) -> Summary:
        """Origin and model of a key in the view (``KeyError`` otherwise)."""
        origin, published, _, _, _, model_id, _, _ = HEADER.unpack_from(self._rows[key])
        name, version = self._models[model_id]
        return Summary(key, origin, published, name, version)

    def page(self, prefix: str = "", after: str | None = None, limit: int = 100) -> list[str]:
        """Up to ``limit`` keys starting with ``prefix``, in order, after key ``after``."""
        keys = self._sorted
        if after is not None and after >= prefix:
            i = bisect.bisect_right(keys, after)
        else:
            i = bisect.bisect_left(keys, prefix)
        out: list[str] = []
        while i < len(keys) and len(out) < limit and keys[i].startswith(prefix):
            out.append(keys[i])
            i += 1
        return out

    def keys(self) -> Iterator[str]:
        """Every key, least recently updated first."""
        return iter(self._rows)
