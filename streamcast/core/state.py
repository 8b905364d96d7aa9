"""Per-key state as a structure of arrays, with bounded memory.

One *row* per live key; a plain dict maps key -> row. Every per-key quantity is a column
in a preallocated numpy array (first axis = row), so the pipeline gathers and scatters
whole batches of keys at once and never builds per-key Python objects.

Columns (R rows, W = window, F = 1 + extras, S = state size):

=============== =========== ==============================================================
column          shape       meaning
=============== =========== ==============================================================
window          [R, W, F]   ring buffer of the last W closed interval rows (raw units)
wlen, wpos      [R]         rows held (<= W), next write position (= oldest when full)
warm            [R]         warm-up finished: the key steps and forecasts
steps           [R]         steps since the last reset
h, c            [R, S]      LSTM state (float32); zero while warming up
loc, scale      [R]         value scaling in use
scale_src       [R]         0 none yet, 1 training statistics, 2 warm-up window
open_start      [R]         start (epoch s) of the open interval, or NONE
acc, acc_n      [R, F], [R] aggregation accumulator of the open interval, tick count
last_ts_ms      [R]         last accepted tick (epoch ms), or NONE
closed_start    [R]         start of the last closed interval, or NONE
closed_value    [R, F]      its aggregated row (left end of a gap interpolation)
last_seen       [R]         wall clock (s) of the key's last tick: TTL and LRU order
=============== =========== ==============================================================

Capacity grows geometrically up to ``max_keys``; beyond that the least recently used
keys are evicted, and keys idle for longer than ``key_ttl_s`` expire, so memory is
bounded whatever arrives. A row can be exported as a compact record of arrays and
imported again (:meth:`StateStore.export_rows` / :meth:`StateStore.import_rows`), the
basis for a compacted state changelog.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from streamcast.core.features import ValueScaling

#: "no value yet" for int64 time columns
NONE = np.iinfo(np.int64).min
SCALE_NONE, SCALE_TRAINING, SCALE_WINDOW = 0, 1, 2
INITIAL_CAPACITY = 1024
#: first bytes of an encoded state record (format version 1)
RECORD_MAGIC = b"SCS1"

IntArray = npt.NDArray[np.int64]


class StateStore:
    """Key -> row mapping plus the column arrays described in the module docstring."""

    #: the per-row columns (shapes and fill values in ``_shapes``), in record order
    COLUMNS: tuple[str, ...] = (
        "window", "wlen", "wpos", "warm", "steps", "h", "c", "loc", "scale", "scale_src",
        "open_start", "acc", "acc_n", "last_ts_ms", "closed_start", "closed_value",
        "last_seen",
    )  # fmt: skip

    def __init__(
        self,
        *,
        window: int,
        n_inputs: int,
        state_size: int,
        max_keys: int,
        key_ttl_s: float | None = None,
        scaling: ValueScaling | None = None,
        initial_capacity: int = INITIAL_CAPACITY,
    ) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys}")
        self.window_size = window
        self.n_inputs = n_inputs
        self.state_size = state_size
        self.max_keys = max_keys
        self.key_ttl_s = key_ttl_s
        self.scaling = scaling or ValueScaling()
        self.rows: dict[str, int] = {}
        self.row_key: list[str | None] = []
        self._free: list[int] = []
        self._removed: list[str] = []
        self.evicted_lru = 0
        self.expired_ttl = 0
        self.capacity = 0
        self._allocate_columns(0)
        self._grow(min(max_keys, max(1, initial_capacity)))

    # -- columns -------------------------------------------------------------------------

    def _shapes(self) -> dict[str, tuple[tuple[int, ...], type, object]]:
        w, f, s = self.window_size, self.n_inputs, self.state_size
        return {
            "window": ((w, f), np.float64, 0.0),
            "wlen": ((), np.int64, 0),
            "wpos": ((), np.int64, 0),
            "warm": ((), np.bool_, False),
            "steps": ((), np.int64, 0),
            "h": ((s,), np.float32, 0.0),
            "c": ((s,), np.float32, 0.0),
            "loc": ((), np.float64, 0.0),
            "scale": ((), np.float64, 1.0),
            "scale_src": ((), np.int8, SCALE_NONE),
            "open_start": ((), np.int64, NONE),
            "acc": ((f,), np.float64, 0.0),
            "acc_n": ((), np.int64, 0),
            "last_ts_ms": ((), np.int64, NONE),
            "closed_start": ((), np.int64, NONE),
            "closed_value": ((f,), np.float64, 0.0),
            "last_seen": ((), np.float64, 0.0),
        }

    def _allocate_columns(self, capacity: int) -> None:
        for name, (tail, dtype, fill) in self._shapes().items():
            setattr(self, name, np.full((capacity, *tail), fill, dtype=dtype))
        self.active = np.zeros(capacity, dtype=bool)

    # the columns, typed for mypy (set in _allocate_columns)
    window: npt.NDArray[np.float64]
    wlen: IntArray
    wpos: IntArray
    warm: npt.NDArray[np.bool_]
    steps: IntArray
    h: npt.NDArray[np.float32]
    c: npt.NDArray[np.float32]
    loc: npt.NDArray[np.float64]
    scale: npt.NDArray[np.float64]
    scale_src: npt.NDArray[np.int8]
    open_start: IntArray
    acc: npt.NDArray[np.float64]
    acc_n: IntArray
    last_ts_ms: IntArray
    closed_start: IntArray
    closed_value: npt.NDArray[np.float64]
    last_seen: npt.NDArray[np.float64]
    active: npt.NDArray[np.bool_]

    def _grow(self, capacity: int) -> None:
        old = self.capacity
        if capacity <= old:
            return
        for name, (tail, dtype, fill) in self._shapes().items():
            column: npt.NDArray[np.generic] = np.full((capacity, *tail), fill, dtype=dtype)
            column[:old] = getattr(self, name)
            setattr(self, name, column)
        active = np.zeros(capacity, dtype=bool)
        active[:old] = self.active
        self.active = active
        self.row_key.extend([None] * (capacity - old))
        # pop() hands out low rows first, keeping live rows dense
        self._free.extend(range(capacity - 1, old - 1, -1))
        self.capacity = capacity

    def _clear(self, rows: IntArray) -> None:
        """Reset rows to the initial column values."""
        for name, (_tail, _dtype, fill) in self._shapes().items():
            getattr(self, name)[rows] = fill

    # -- keys ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, key: object) -> bool:
        return key in self.rows

    def lookup(self, keys: Sequence[str]) -> IntArray:
        """Rows of ``keys``; -1 for keys not in the store."""
        get = self.rows.get
        return np.fromiter((get(k, -1) for k in keys), dtype=np.int64, count=len(keys))

    def rows_for(self, keys: Sequence[str], now_s: float) -> tuple[IntArray, IntArray]:
        """Rows of the distinct ``keys``, allocating (and evicting LRU rows) for new ones.

        Returns ``(rows, new_rows)``; all ``keys`` count as used at ``now_s``. Raises
        ``ValueError`` if more distinct keys are asked for than ``max_keys``.
        """
        if len(keys) > self.max_keys:
            raise ValueError(f"{len(keys)} distinct keys exceed max_keys={self.max_keys}")
        rows = self.lookup(keys)
        known = rows >= 0
        self.last_seen[rows[known]] = now_s
        new_pos = np.flatnonzero(~known)
        if len(new_pos):
            shortfall = len(new_pos) - len(self._free)
            if shortfall > 0:
                target = min(self.max_keys, max(2 * self.capacity, len(self) + len(new_pos)))
                self._grow(target)
                shortfall = len(new_pos) - len(self._free)
            if shortfall > 0:
                self._evict_lru(shortfall, protect=rows[known])
            fresh = np.array([self._free.pop() for _ in new_pos], dtype=np.int64)
            self._clear(fresh)
            for pos, row in zip(new_pos.tolist(), fresh.tolist(), strict=True):
                key = keys[pos]
                self.rows[key] = row
                self.row_key[row] = key
            rows[new_pos] = fresh
            self.active[fresh] = True
            self.last_seen[fresh] = now_s
            loc, scale, found = self.scaling.lookup([keys[p] for p in new_pos.tolist()])
            self.loc[fresh] = loc
            self.scale[fresh] = scale
            self.scale_src[fresh] = np.where(found, SCALE_TRAINING, SCALE_NONE)
        return rows, rows[new_pos]

    def _evict_lru(self, n: int, protect: IntArray) -> None:
        seen = np.where(self.active, self.last_seen, np.inf)
        seen[protect] = np.inf
        candidates = np.flatnonzero(np.isfinite(seen))
        if len(candidates) < n:
            raise ValueError("not enough evictable keys: too many distinct keys in one batch")
        victims = candidates[np.argsort(seen[candidates], kind="stable")[:n]]
        self.remove(victims)
        self.evicted_lru += n

    def expire(self, now_s: float) -> int:
        """Drop keys idle for longer than ``key_ttl_s``; returns how many expired."""
        if self.key_ttl_s is None or not self.rows:
            return 0
        idle = np.flatnonzero(self.active & (self.last_seen < now_s - self.key_ttl_s))
        self.remove(idle)
        self.expired_ttl += len(idle)
        return len(idle)

    def remove(self, rows: IntArray, *, record: bool = True) -> None:
        """Forget the keys held in ``rows`` and free the rows.

        ``record=False`` hands the keys to another owner (a revoked partition): they are
        not reported by :meth:`drain_removed`, so no changelog tombstone deletes them.
        """
        for row in rows.tolist():
            key = self.row_key[row]
            if key is not None:
                del self.rows[key]
                self.row_key[row] = None
                self._free.append(row)
                if record:
                    self._removed.append(key)
        self.active[rows] = False

    def resize_state(self, state_size: int) -> None:
        """Give every row a zero ``h``/``c`` of a new width (after a model swap)."""
        self.state_size = state_size
        self.h = np.zeros((self.capacity, state_size), dtype=np.float32)
        self.c = np.zeros((self.capacity, state_size), dtype=np.float32)

    def drain_removed(self) -> list[str]:
        """Keys removed (evicted or expired) since the last call."""
        removed, self._removed = self._removed, []
        return removed

    # -- snapshot ------------------------------------------------------------------------

    def export_rows(self, rows: IntArray) -> dict[str, npt.NDArray[np.generic]]:
        """A compact copy of the given rows: one array per column, first axis = row."""
        return {name: np.array(getattr(self, name)[rows]) for name in self.COLUMNS}

    def import_rows(
        self, keys: Sequence[str], arrays: dict[str, npt.NDArray[np.generic]], now_s: float
    ) -> IntArray:
        """Restore rows exported by :meth:`export_rows` under ``keys`` (replacing them)."""
        missing = set(self.COLUMNS) - set(arrays)
        if missing:
            raise ValueError(f"state record lacks columns {sorted(missing)}")
        rows, _ = self.rows_for(list(keys), now_s)
        for name in self.COLUMNS:
            if name != "last_seen":
                getattr(self, name)[rows] = arrays[name]
        return rows

    def encode_rows(self, rows: IntArray) -> list[bytes]:
        """One compact binary record per row (for a compacted changelog, keyed by key).

        Layout: a 16-byte header (``RECORD_MAGIC``, window, inputs, state size as
        little-endian uint32) then every column of :attr:`COLUMNS` except ``last_seen``,
        raw little-endian bytes in that order. About ``8*W*F + 8*S + 100`` bytes.
        """
        header = (
            RECORD_MAGIC
            + np.array([self.window_size, self.n_inputs, self.state_size], dtype="<u4").tobytes()
        )
        n = len(rows)
        if n == 0:
            return []
        # one [n, bytes] block per column, side by side: a record is one row of the blob
        blocks = [np.frombuffer(header, dtype=np.uint8)[None, :].repeat(n, axis=0)]
        for name in _RECORD_COLUMNS:
            column = getattr(self, name)[rows]
            little = np.ascontiguousarray(column, dtype=column.dtype.newbyteorder("<"))
            blocks.append(little.reshape(n, -1).view(np.uint8).reshape(n, -1))
        blob = np.ascontiguousarray(np.concatenate(blocks, axis=1))
        return [row.tobytes() for row in blob]

    def decode_records(self, records: Sequence[bytes]) -> dict[str, npt.NDArray[np.generic]]:
        """Arrays for :meth:`import_rows` from records written by :meth:`encode_rows`.

        Raises ``ValueError`` for a record of another layout (window, inputs or state size
        differ: the state belongs to an incompatible model) or a truncated one.
        """
        shapes = self._shapes()
        sizes = [
            int(np.prod(shapes[name][0], dtype=np.int64)) * np.dtype(shapes[name][1]).itemsize
            for name in _RECORD_COLUMNS
        ]
        expected_header = (
            RECORD_MAGIC
            + np.array([self.window_size, self.n_inputs, self.state_size], dtype="<u4").tobytes()
        )
        length = len(expected_header) + sum(sizes)
        for i, record in enumerate(records):
            if record[: len(expected_header)] != expected_header or len(record) != length:
                raise ValueError(
                    f"state record {i} does not match this model's layout (window "
                    f"{self.window_size}, inputs {self.n_inputs}, state {self.state_size})"
                )
        out: dict[str, npt.NDArray[np.generic]] = {}
        offset = len(expected_header)
        blob = np.frombuffer(b"".join(records), dtype=np.uint8).reshape(len(records), length)
        for name, size in zip(_RECORD_COLUMNS, sizes, strict=True):
            tail, dtype, _fill = shapes[name]
            raw = np.ascontiguousarray(blob[:, offset : offset + size])
            out[name] = (
                raw.view(np.dtype(dtype).newbyteorder("<"))
                .astype(dtype)
                .reshape(len(records), *tail)
            )
            offset += size
        out["last_seen"] = np.zeros(len(records))
        return out

    def nbytes(self) -> int:
        """Bytes held by the column arrays (excluding the key dict)."""
        return int(sum(getattr(self, name).nbytes for name in self.COLUMNS))


#: columns carried by an encoded record (the wall-clock ``last_seen`` is not state)
_RECORD_COLUMNS = tuple(name for name in StateStore.COLUMNS if name != "last_seen")
