"""Per-key state as a structure of arrays, with bounded memory, that snapshots and
restores itself.

One *row* per live key; a plain dict maps key -> row. Every per-key quantity is a column
in a preallocated numpy array (first axis = row), so the pipeline gathers and scatters
whole batches of keys at once and never builds per-key Python objects.

:data:`COLUMNS` is the one table of the columns: their shape (``W`` = window, ``F`` =
1 + extras, ``S`` = state size), type, initial value, whether they are durable (part of
the changelog record) and which module writes them. Capacity grows geometrically up to
``max_keys``; beyond that the least recently used keys are evicted, and keys idle for
longer than ``key_ttl_s`` expire, so memory is bounded whatever arrives.

Durable state (Kafka Streams' state stores are the model): :meth:`StateStore.snapshot`
encodes the durable columns of keys as compact binary records for a compacted changelog,
:meth:`StateStore.restore` loads them back under a partition, and every row knows the
input partition its key's ticks arrive on, so :meth:`StateStore.drop_partitions` can hand
a revoked partition's keys to their new owner and :meth:`StateStore.drain_removed` says
which changelog partition each tombstone belongs to.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streamcast.core.grid import Grid

#: "no value yet" for int64 time columns
NONE = np.iinfo(np.int64).min
INITIAL_CAPACITY = 1024
#: first bytes of an encoded state record (format 6: the interval grid's fingerprint in
#: the header; 5: the adaptive band offsets and the number of interval levels in the
#: header; 4: the level/scale that follows the series replaces the fixed loc/scale, and
#: the EWMA error-drift chart's columns the CUSUM's; 3: quality and drift columns; 2: jump
#: and applied-offset columns; 1 was streamcast 0.1's)
RECORD_MAGIC = b"SCS6"
#: the previous format, still read (an upgrade restores its state): the columns it lacks
#: start at their initial value; its header has no grid, so its grid is taken on trust
PREVIOUS_MAGIC, PREVIOUS_LACKS = b"SCS5", frozenset[str]()
#: header bytes per format: the magic, then one little-endian uint32 per dimension
HEADER_BYTES = {RECORD_MAGIC: 32, PREVIOUS_MAGIC: 28}
#: partition of a key whose input partition is not known (tests, tools)
NO_PARTITION = -1
#: standardised one-step residuals each key keeps for alert summaries
RESIDUALS_KEPT = 8

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Column:
    """One per-key column: ``dims`` name the trailing axes (``W``, ``F``, ``S``)."""

    name: str
    dims: tuple[str, ...]
    dtype: type
    fill: object
    #: part of the changelog record (False: wall-clock or placement, not state)
    durable: bool
    #: the module that writes it
    writer: str
    doc: str


#: The column table, in changelog-record order (durable columns only go into records).
COLUMNS: tuple[Column, ...] = (
    Column("window", ("W", "F"), np.float64, 0.0, True, "lifecycle",
           "ring buffer of the last W closed interval rows (raw units)"),
    Column("wlen", (), np.int64, 0, True, "lifecycle", "rows held in the window (<= W)"),
    Column("wpos", (), np.int64, 0, True, "lifecycle",
           "next write position in the window (= oldest row when full)"),
    Column("warm", (), np.bool_, False, True, "lifecycle",
           "warm-up finished: the key steps and forecasts"),
    Column("steps", (), np.int64, 0, True, "lifecycle", "steps since the last reset"),
    Column("h", ("S",), np.float32, 0.0, True, "pipeline", "LSTM state; zero while warming up"),
    Column("c", ("S",), np.float32, 0.0, True, "pipeline", "LSTM cell state"),
    Column("value_level", (), np.float64, 0.0, True, "pipeline",
           "EWMA level l of the key's values (set at warm-up, updated every step)"),
    Column("value_scale", (), np.float64, 1.0, True, "pipeline",
           "EWMA scale s of the key's |values|: the unit is K = kappa * s"),
    Column("open_start", (), np.int64, NONE, True, "intervals",
           "start (epoch s) of the open interval, or NONE"),
    Column("acc", ("F",), np.float64, 0.0, True, "intervals",
           "aggregation accumulator of the open interval"),
    Column("acc_n", (), np.int64, 0, True, "intervals", "ticks in the open interval"),
    Column("last_ts_ms", (), np.int64, NONE, True, "intervals",
           "last accepted tick (epoch ms), or NONE"),
    Column("jump_ts", (), np.int64, NONE, True, "intervals",
           "the last tick rejected as a time jump (epoch ms), or NONE"),
    Column("jump_n", (), np.int64, 0, True, "intervals",
           "consecutive time-jump ticks near each other: a new timeline once confirmed"),
    Column("closed_start", (), np.int64, NONE, True, "lifecycle",
           "start of the last closed interval, or NONE"),
    Column("closed_value", ("F",), np.float64, 0.0, True, "lifecycle",
           "the last closed interval's row (left end of a gap interpolation)"),
    Column("last_seen", (), np.float64, 0.0, False, "state",
           "wall clock (s) of the key's last tick: TTL and LRU order"),
    Column("p1_value", (), np.float64, np.nan, True, "quality",
           "the latest step-1 forecast (original units), for the next interval's residual"),
    Column("p1_target", (), np.int64, NONE, True, "quality",
           "the interval that forecast targets, or NONE"),
    Column("p1_unit", (), np.float64, 1.0, True, "quality", "the unit it was made in"),
    Column("probe", ("H",), np.float32, 0.0, True, "quality",
           "one whole forecast whose every step is scored as its actuals arrive"),
    Column("probe_origin", (), np.int64, NONE, True, "quality",
           "origin of the probe, or NONE (the next forecast becomes the probe)"),
    Column("probe_unit", (), np.float32, 1.0, True, "quality", "the probe's unit"),
    Column("resid", ("Z",), np.float32, np.nan, True, "quality",
           "the last standardised one-step residuals, oldest first (alert summaries)"),
    Column("band_adj", ("L", "E"), np.float32, 0.0, True, "quality",
           "per interval level, the lower and upper band offsets in band widths (bands)"),
    Column("alarm", (), np.int8, 0, True, "drift", "0 normal, 1 alarm up, -1 alarm down"),
    Column("level", (), np.float32, 0.0, True, "drift",
           "error drift: EWMA of the key's clipped residual deviations from its baseline"),
    Column("quiet_n", (), np.int32, 0, True, "drift",
           "in alarm: intervals in a row with the level back near the baseline"),
    Column("n_resid", (), np.int32, 0, True, "drift", "residuals seen since the key started"),
    Column("base_m", (), np.float32, 0.0, True, "drift", "baseline: mean of the residuals"),
    Column("base_v", (), np.float32, 1.0, True, "drift", "baseline: their variance"),
    Column("in_cdf", ("Q",), np.float32, np.nan, True, "drift",
           "input drift: weighted ECDF of the key's scaled values at the reference quantiles"),
    Column("in_n", (), np.int32, 0, True, "drift",
           "input drift: real intervals since the key was last tested"),
    Column("in_alarm", (), np.int8, 0, True, "drift",
           "1 while the key's inputs have drifted from the training distribution"),
    Column("model_id", (), np.int64, 0, True, "pipeline",
           "fingerprint of the model whose h and c these are: another model re-initialises"),
    Column("applied_offset", (), np.int64, -1, True, "state",
           "input offset of the last tick applied: a restored key skips what it applied"),
    Column("partition", (), np.int32, NO_PARTITION, False, "state",
           "input partition of the key's ticks (= its changelog partition)"),
)  # fmt: skip

#: names of the columns, in table order
COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)
#: the columns an encoded record carries
DURABLE: tuple[Column, ...] = tuple(c for c in COLUMNS if c.durable)


class StateStore:
    """Key -> row mapping plus the column arrays of :data:`COLUMNS`."""

    #: the per-row columns, in table order
    COLUMNS: tuple[str, ...] = COLUMN_NAMES

    def __init__(
        self,
        *,
        window: int,
        n_inputs: int,
        state_size: int,
        max_keys: int,
        horizon: int = 1,
        quantiles: int = 0,
        levels: int = 0,
        key_ttl_s: float | None = None,
        initial_capacity: int = INITIAL_CAPACITY,
        grid: Grid | None = None,
    ) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys}")
        self.horizon = horizon
        self.quantiles = quantiles
        self.levels = levels
        #: the interval grid the keys' intervals lie on (records of another are refused)
        self.grid = grid or Grid()
        self.window_size = window
        self.n_inputs = n_inputs
        self.state_size = state_size
        self.max_keys = max_keys
        self.key_ttl_s = key_ttl_s
        self.rows: dict[str, int] = {}
        self.row_key: list[str | None] = []
        self._free: list[int] = []
        self._removed: list[tuple[str, int]] = []
        self.evicted_lru = 0
        self.expired_ttl = 0
        self.capacity = 0
        self._allocate_columns(0)
        self._grow(min(max_keys, max(1, initial_capacity)))

    # -- columns -------------------------------------------------------------------------

    def _tail(self, column: Column) -> tuple[int, ...]:
        sizes = {
            "W": self.window_size,
            "F": self.n_inputs,
            "S": self.state_size,
            "H": self.horizon,
            "Z": RESIDUALS_KEPT,
            "Q": self.quantiles,
            "L": self.levels,
            "E": 2,
        }
        return tuple(sizes[d] for d in column.dims)

    def _allocate_columns(self, capacity: int) -> None:
        for column in COLUMNS:
            empty: npt.NDArray[np.generic] = np.full(
                (capacity, *self._tail(column)), column.fill, dtype=column.dtype
            )
            setattr(self, column.name, empty)
        self.active = np.zeros(capacity, dtype=bool)

    # the columns, typed for mypy (allocated from COLUMNS in _allocate_columns)
    window: npt.NDArray[np.float64]
    wlen: IntArray
    wpos: IntArray
    warm: npt.NDArray[np.bool_]
    steps: IntArray
    h: npt.NDArray[np.float32]
    c: npt.NDArray[np.float32]
    value_level: npt.NDArray[np.float64]
    value_scale: npt.NDArray[np.float64]
    open_start: IntArray
    acc: npt.NDArray[np.float64]
    acc_n: IntArray
    last_ts_ms: IntArray
    jump_ts: IntArray
    jump_n: IntArray
    closed_start: IntArray
    closed_value: npt.NDArray[np.float64]
    last_seen: npt.NDArray[np.float64]
    p1_value: npt.NDArray[np.float64]
    p1_target: IntArray
    p1_unit: npt.NDArray[np.float64]
    probe: npt.NDArray[np.float32]
    probe_origin: IntArray
    probe_unit: npt.NDArray[np.float32]
    resid: npt.NDArray[np.float32]
    band_adj: npt.NDArray[np.float32]
    alarm: npt.NDArray[np.int8]
    quiet_n: npt.NDArray[np.int32]
    level: npt.NDArray[np.float32]
    n_resid: npt.NDArray[np.int32]
    base_m: npt.NDArray[np.float32]
    base_v: npt.NDArray[np.float32]
    in_cdf: npt.NDArray[np.float32]
    in_n: npt.NDArray[np.int32]
    in_alarm: npt.NDArray[np.int8]
    model_id: IntArray
    applied_offset: IntArray
    partition: npt.NDArray[np.int32]
    active: npt.NDArray[np.bool_]

    def _grow(self, capacity: int) -> None:
        old = self.capacity
        if capacity <= old:
            return
        for column in COLUMNS:
            grown: npt.NDArray[np.generic] = np.full(
                (capacity, *self._tail(column)), column.fill, dtype=column.dtype
            )
            grown[:old] = getattr(self, column.name)
            setattr(self, column.name, grown)
        active = np.zeros(capacity, dtype=bool)
        active[:old] = self.active
        self.active = active
        self.row_key.extend([None] * (capacity - old))
        # pop() hands out low rows first, keeping live rows dense
        self._free.extend(range(capacity - 1, old - 1, -1))
        self.capacity = capacity

    def _clear(self, rows: IntArray) -> None:
        """Reset rows to the initial column values."""
        for column in COLUMNS:
            getattr(self, column.name)[rows] = column.fill

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
                    self._removed.append((key, int(self.partition[row])))
        self.active[rows] = False

    def resize_state(self, state_size: int) -> None:
        """Give every row a zero ``h``/``c`` of a new width (after a model swap)."""
        self.state_size = state_size
        self.h = np.zeros((self.capacity, state_size), dtype=np.float32)
        self.c = np.zeros((self.capacity, state_size), dtype=np.float32)

    def resize_horizon(self, horizon: int, quantiles: int, levels: int) -> None:
        """Give every row an empty probe of a new horizon, a fresh input ECDF for a new
        reference and zero band offsets for the new model's calibration (after a model
        swap)."""
        if horizon != self.horizon:
            self.horizon = horizon
            self.probe = np.zeros((self.capacity, horizon), dtype=np.float32)
            self.probe_origin[:] = NONE
        self.levels = levels
        self.band_adj = np.zeros((self.capacity, levels, 2), dtype=np.float32)
        self.quantiles = quantiles
        self.in_cdf = np.full((self.capacity, quantiles), np.nan, dtype=np.float32)
        self.in_n[:] = 0

    def drain_removed(self) -> list[tuple[str, int]]:
        """``(key, partition)`` of the keys removed (evicted or expired) since the last call
        and not held again since: what a changelog must delete (tombstones)."""
        removed, self._removed = self._removed, []
        held = self.rows
        latest = {key: partition for key, partition in removed if key not in held}
        return sorted(latest.items())

    # -- placement -----------------------------------------------------------------------

    def place(self, rows: IntArray, partitions: npt.NDArray[np.integer]) -> None:
        """Record the input partition of each row's key (where its ticks arrive)."""
        self.partition[rows] = partitions

    def arrive(
        self,
        rows: IntArray,
        offsets: IntArray,
        partitions: npt.NDArray[np.integer] | None = None,
    ) -> npt.NDArray[np.bool_]:
        """Which ticks (one row, input offset and partition each) a key applied already:
        on the partition it holds and at or before its ``applied_offset``, restored from
        a changelog that is ahead of the committed offsets (at-least-once). Places each
        key on its ticks' partition (:meth:`place`); the other ticks raise the key's
        ``applied_offset``.

        Offsets of two partitions do not compare: a key whose ticks come from another
        partition now (a producer that keys by the body's ``key`` field alone, without a
        Kafka key) forgets the offset it applied on the old one, and only ticks on the
        partition it ends up on count towards the new one.
        """
        prior = self.partition[rows]
        on = prior if partitions is None else partitions
        done = (on == prior) & (offsets <= self.applied_offset[rows])
        if partitions is not None:
            self.place(rows, partitions)
        held = self.partition[rows]
        self.applied_offset[rows[prior != held]] = -1
        rising = ~done & (on == held)
        np.maximum.at(self.applied_offset, rows[rising], offsets[rising])
        return np.asarray(done, dtype=bool)

    def partitions_of(self, keys: Sequence[str]) -> npt.NDArray[np.int32]:
        """Input partition of each held key (:data:`NO_PARTITION` for others)."""
        rows = self.lookup(keys)
        out = np.full(len(keys), NO_PARTITION, dtype=np.int32)
        held = rows >= 0
        out[held] = self.partition[rows[held]]
        return out

    def drop_partitions(self, partitions: Set[int]) -> int:
        """Forget the keys of ``partitions`` without tombstones (another instance owns
        them and their changelog records now); returns how many were dropped."""
        rows = np.flatnonzero(self.active & np.isin(self.partition, list(partitions)))
        self.remove(rows, record=False)
        return len(rows)

    # -- snapshot and restore ------------------------------------------------------------

    def snapshot(self, keys: Iterable[str]) -> list[tuple[str, bytes]]:
        """``(key, record)`` for each held key among ``keys``: its durable columns as a
        compact binary changelog record (:meth:`encode_rows`)."""
        held = [k for k in keys if k in self.rows]
        return list(zip(held, self.encode_rows(self.lookup(held)), strict=True))

    def restore(
        self, records: Sequence[tuple[str, bytes]], now_s: float, partition: int = NO_PARTITION
    ) -> int:
        """Load ``(key, record)`` pairs written by :meth:`snapshot` (replacing held keys)
        as keys of input ``partition``; returns how many.

        Raises ``ValueError`` when a record belongs to a model of another layout.
        """
        return len(self.restore_rows(records, now_s, partition))

    def restore_rows(
        self, records: Sequence[tuple[str, bytes]], now_s: float, partition: int = NO_PARTITION
    ) -> IntArray:
        """:meth:`restore`, returning the rows the keys now occupy.

        Records of a model with another state size, horizon or input-drift reference (what
        a hot-swap may change: a key with no tick since the swap keeps the old model's
        record) are converted as the swap converts live rows (:meth:`resize_state`,
        :meth:`resize_horizon`); their ``model_id`` still names the model that computed
        them, so the pipeline rebuilds them from their windows.
        """
        if not records:
            return np.zeros(0, dtype=np.int64)
        layouts: dict[bytes, list[tuple[str, bytes]]] = {}
        for key, record in records:
            layouts.setdefault(record[: _header_size(record)], []).append((key, record))
        rows = np.concatenate(
            [self._import_layout(header, group, now_s) for header, group in layouts.items()]
        )
        self.partition[rows] = partition
        return rows

    def _import_layout(
        self, header: bytes, records: Sequence[tuple[str, bytes]], now_s: float
    ) -> IntArray:
        """Import records that share one ``header`` (see :meth:`restore_rows`)."""
        keys, encoded = [k for k, _ in records], [r for _, r in records]
        other = self._swapped_from(header, len(records))
        if other is None:  # this layout, or one no swap produces: decode_records says which
            return self.import_rows(keys, self.decode_records(encoded), now_s)
        rows = other.import_rows(keys, other.decode_records(encoded), now_s)
        other.resize_state(self.state_size)
        other.resize_horizon(self.horizon, self.quantiles, self.levels)
        arrays = {c.name: getattr(other, c.name)[rows] for c in DURABLE}
        return self.import_rows(keys, arrays, now_s)

    def _swapped_from(self, header: bytes, n: int) -> StateStore | None:
        """A store of ``header``'s layout for ``n`` keys when it differs from this one only
        where a hot-swap may differ (state size, horizon, drift quantiles); else None."""
        magic = header[:4]
        if magic not in HEADER_BYTES or len(header) != _header_size(header):
            return None
        dims = [int(d) for d in np.frombuffer(header[4:], dtype="<u4")]
        window, n_inputs, state_size, horizon, quantiles, levels = dims[:6]
        if (
            header == self._record_header(magic)
            or (window, n_inputs) != (self.window_size, self.n_inputs)
            or (magic == RECORD_MAGIC and dims[6] != self.grid.fingerprint())
        ):
            return None
        return StateStore(
            window=window, n_inputs=n_inputs, state_size=state_size, max_keys=n,
            horizon=horizon, quantiles=quantiles, levels=levels, initial_capacity=n,
            grid=self.grid,
        )  # fmt: skip

    def export_rows(self, rows: IntArray) -> dict[str, npt.NDArray[np.generic]]:
        """A compact copy of the given rows: one array per column, first axis = row."""
        index = np.asarray(rows, dtype=np.int64)  # indexing by an array copies already
        return {name: getattr(self, name)[index] for name in COLUMN_NAMES}

    def write_rows(self, rows: IntArray, arrays: dict[str, npt.NDArray[np.generic]]) -> None:
        """Put back every column of ``rows`` as :meth:`export_rows` copied them."""
        for name in COLUMN_NAMES:
            getattr(self, name)[rows] = arrays[name]

    def import_rows(
        self, keys: Sequence[str], arrays: dict[str, npt.NDArray[np.generic]], now_s: float
    ) -> IntArray:
        """Restore the durable columns of rows exported by :meth:`export_rows` or decoded by
        :meth:`decode_records` under ``keys`` (replacing them)."""
        missing = {c.name for c in DURABLE} - set(arrays)
        if missing:
            raise ValueError(f"state record lacks columns {sorted(missing)}")
        rows, _ = self.rows_for(list(keys), now_s)
        for column in DURABLE:
            getattr(self, column.name)[rows] = arrays[column.name]
        return rows

    def _record_header(self, magic: bytes = RECORD_MAGIC) -> bytes:
        dims = [self.window_size, self.n_inputs, self.state_size, self.horizon, self.quantiles]
        dims.append(self.levels)
        if magic == RECORD_MAGIC:
            dims.append(self.grid.fingerprint())
        return magic + np.array(dims, dtype="<u4").tobytes()

    def encode_rows(self, rows: IntArray) -> list[bytes]:
        """One compact binary record per row (for a compacted changelog, keyed by key).

        Layout: a 32-byte header (``RECORD_MAGIC``, window, inputs, state size, horizon,
        input-drift quantiles, interval levels and the interval grid's fingerprint as
        little-endian uint32) then every durable column of :data:`COLUMNS`, raw
        little-endian bytes in table order. About
        ``8*W*F + 8*S + 4*H + 4*Q + 8*L + 150`` bytes.
        """
        n = len(rows)
        if n == 0:
            return []
        header = np.frombuffer(self._record_header(), dtype=np.uint8)
        # each column's bytes written into place in one [n, bytes] block: a record is one
        # row of it (concatenating the columns' blocks copied every byte once more)
        size = len(header) + sum(self._column_bytes(c) for c in DURABLE)
        block = np.empty((n, size), dtype=np.uint8)
        block[:, : len(header)] = header
        offset = len(header)
        for column in DURABLE:
            values = getattr(self, column.name)[rows]
            little = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<"))
            raw = little.reshape(n, -1).view(np.uint8).reshape(n, -1)
            block[:, offset : offset + raw.shape[1]] = raw
            offset += raw.shape[1]
        blob = block.tobytes()
        # slicing one bytes object: a tobytes() per row view costs twice as much
        return [blob[i : i + size] for i in range(0, len(blob), size)]

    def _column_bytes(self, column: Column) -> int:
        """Bytes of one row of ``column`` in a record."""
        return int(np.prod(self._tail(column), dtype=np.int64)) * np.dtype(column.dtype).itemsize

    def decode_records(self, records: Sequence[bytes]) -> dict[str, npt.NDArray[np.generic]]:
        """Arrays for :meth:`import_rows` from records written by :meth:`encode_rows` (of
        this format or the previous one, :data:`PREVIOUS_MAGIC`: the columns it lacks get
        their initial value).

        Raises ``ValueError`` for a record of another layout (window, inputs or state size
        differ: the state belongs to an incompatible model), of keys on another interval
        grid, or a truncated one.
        """
        magic = PREVIOUS_MAGIC if records and records[0][:4] == PREVIOUS_MAGIC else RECORD_MAGIC
        lacks = PREVIOUS_LACKS if magic == PREVIOUS_MAGIC else frozenset()
        columns = [c for c in DURABLE if c.name not in lacks]
        tails = [self._tail(c) for c in columns]
        sizes = [self._column_bytes(c) for c in columns]
        header = self._record_header(magic)
        length = len(header) + sum(sizes)
        for i, record in enumerate(records):
            if record[:3] == RECORD_MAGIC[:3] and record[:4] != magic:
                raise ValueError(
                    f"state record {i} is format {record[3:4].decode(errors='replace')}, "
                    f"written by another streamcast version (this one reads "
                    f"{RECORD_MAGIC[3:4].decode()} and {PREVIOUS_MAGIC[3:4].decode()})"
                )
            if magic == RECORD_MAGIC and _other_grid(record, header):
                raise ValueError(
                    f"state record {i} belongs to keys on another interval grid than this "
                    f"model's ({self.grid.describe()}): their intervals mean nothing to it"
                )
            if record[: len(header)] != header or len(record) != length:
                raise ValueError(
                    f"state record {i} does not match this model's layout (window "
                    f"{self.window_size}, inputs {self.n_inputs}, state {self.state_size}, "
                    f"horizon {self.horizon}, drift quantiles {self.quantiles}, interval "
                    f"levels {self.levels})"
                )
        out: dict[str, npt.NDArray[np.generic]] = {}
        offset = len(header)
        blob = np.frombuffer(b"".join(records), dtype=np.uint8).reshape(len(records), length)
        for column, tail, size in zip(columns, tails, sizes, strict=True):
            raw = np.ascontiguousarray(blob[:, offset : offset + size])
            dtype = np.dtype(column.dtype)
            out[column.name] = (
                raw.view(dtype.newbyteorder("<")).astype(dtype).reshape(len(records), *tail)
            )
            offset += size
        for column in DURABLE:
            if column.name in lacks:
                out[column.name] = np.full(
                    (len(records), *self._tail(column)), column.fill, dtype=column.dtype
                )
        return out

    def nbytes(self) -> int:
        """Bytes held by the column arrays (excluding the key dict)."""
        return int(sum(getattr(self, name).nbytes for name in COLUMN_NAMES))


def _header_size(record: bytes) -> int:
    """Bytes of the header a record starts with: 4 + 4 per dimension of its format."""
    return HEADER_BYTES.get(record[:4], HEADER_BYTES[RECORD_MAGIC])


def _other_grid(record: bytes, header: bytes) -> bool:
    """The record (of this format) names another grid than ``header`` (its last
    dimension), whatever its other dimensions."""
    size = len(header)
    return len(record) >= size and record[size - 4 : size] != header[size - 4 :]
