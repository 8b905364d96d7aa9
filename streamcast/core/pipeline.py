"""The pure core of the service: ticks in, forecasts out, state in arrays.

:meth:`Pipeline.process` takes one decoded micro-batch and the wall clock and returns the
forecasts it produced, the ticks it rejected and its counters. No I/O, no awaiting: the
Kafka edge calls it (possibly in a worker thread) and publishes the results.

Key lifecycle (identical to the offline evaluator, see :mod:`streamcast.core.artifact`):

1. Ticks are admitted and aggregated into intervals (:mod:`streamcast.core.intervals`).
2. Each closed interval is appended to the key's window. When the previous closed
   interval lies ``g`` intervals back on the model's grid and ``1 <= g - 1 <= max_gap``,
   the ``g - 1`` missing rows are linear interpolations
   (:func:`~streamcast.core.features.interpolate_gap`) appended before it; a longer gap (or
   no previous interval) *resets* the key: zero state, empty window, warm-up again.
3. **Warm-up forecasts are withheld.** While the window holds fewer than ``window`` rows
   nothing is stepped. When it fills, the key's level and scale are set from the window
   (:meth:`~streamcast.core.features.LevelScale.init`), the whole window is stepped in
   order from zero state, and the step at the window's last row emits the key's first
   forecast.
4. Afterwards each appended row is one step (O(1) per tick): the key's level and scale
   take the value (:meth:`~streamcast.core.features.LevelScale.update`), the step input
   ``x = [u, extras, r, lags]`` is built in the key's unit ``K``
   (:func:`~streamcast.core.features.step_inputs`) and the model steps; real intervals
   emit a forecast ``l + K * forecast``, interpolated ones do not.

Steps are executed in *rounds*: round ``r`` runs, in one model call, the ``r``-th pending
step of every key that has one, so a batch costs ``max pending steps of any key`` model
calls (one in the steady state), never one per key. Keys that finish their warm-up
together step their windows :attr:`Pipeline.rebuild_keys` keys at a time, so that many
keys' steps are in flight at most: each block past the first costs ``window`` more calls.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import numpy.typing as npt

from streamcast.core.alerts import AlertBatch
from streamcast.core.artifact import Aggregation
from streamcast.core.bands import DEFAULT_RATE, Bands
from streamcast.core.codec import MAX_MAGNITUDE
from streamcast.core.drift import DriftSettings, InputSteps
from streamcast.core.features import (
    calendar_features,
    floor_non_negative,
    step_inputs,
    unscale_forecast,
)
from streamcast.core.intervals import (
    REASONS,
    SUM_OUT_OF_RANGE,
    Aggregator,
    JumpRule,
    admit,
    aggregate,
    sums_beyond,
)
from streamcast.core.isolation import Attempt, isolated, merge
from streamcast.core.lifecycle import LifecyclePlanner, Planned, Steps
from streamcast.core.model import StateAdvancer, StepModel
from streamcast.core.monitor import ForecastMonitor
from streamcast.core.quality import QualityTotals
from streamcast.core.records import Counters, ForecastBatch, Rejection, TickBatch
from streamcast.core.state import StateStore
from streamcast.errors import ConfigurationError

Float32Array = npt.NDArray[np.float32]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class StepResult:
    """What one :meth:`Pipeline.process` call produced."""

    forecasts: ForecastBatch
    rejections: list[Rejection]
    counters: Counters
    #: keys whose state this batch changed (accepted ticks) and that are still held:
    #: what a compacted state changelog must rewrite (:meth:`StateStore.snapshot`)
    changed_keys: list[str] = field(default_factory=list)
    #: ``(key, partition)`` of keys dropped by the LRU cap or the TTL and not re-created:
    #: changelog tombstones
    removed: list[tuple[str, int]] = field(default_factory=list)
    #: drift alerts the batch raised (None: the pipeline monitors nothing)
    alerts: AlertBatch | None = None
    #: per-step error sums of the forecasts the batch's actuals scored
    quality: QualityTotals | None = None


class Pipeline:
    """Stateful, I/O-free forecasting core (see the module docstring for the lifecycle).

    ``aggregation`` and ``max_gap`` default to the model's metadata. ``max_keys`` bounds
    the state; ``key_ttl_s`` (None = never) expires idle keys by wall clock (``now_s``).

    Not thread-safe: call :meth:`process`, :meth:`snapshot` and :meth:`restore` from one
    thread at a time (a single worker thread is the intended use). Ticks of one key must
    arrive in partition order; different keys may interleave freely.
    """

    #: keys rebuilt from their windows together (a swap, a restore under another model):
    #: bounds the replay's memory (~36 KB per key in flight, the steps' inputs 9.6 KB of
    #: it, ~70 MB per block with the hidden-64, window-48 model) while each round's runs
    #: stay full (``RUN_KEYS``)
    rebuild_keys: int = 2048

    def __init__(
        self,
        model: StepModel,
        *,
        aggregation: Aggregation | None = None,
        max_gap: int | None = None,
        max_keys: int = 100_000,
        key_ttl_s: float | None = None,
        max_jump_intervals: int | None = None,
        jump_confirmations: int = 3,
        drift: DriftSettings | None = None,
        band_rate: float = DEFAULT_RATE,
        initial_capacity: int = 1024,
    ) -> None:
        meta = model.meta
        if not 0.0 <= band_rate <= 1.0:
            raise ConfigurationError(f"band_rate must be in [0, 1], got {band_rate}")
        self.band_rate = band_rate
        try:
            self.aggregator = Aggregator(aggregation or meta.aggregation)
        except ValueError as err:
            raise ConfigurationError(f"aggregation: {err}") from err
        self.max_gap = meta.gap.max_gap if max_gap is None else max_gap
        if self.max_gap < 0:
            raise ConfigurationError(f"max_gap must be >= 0, got {self.max_gap}")
        if max_keys < 1:
            raise ConfigurationError(f"max_keys must be >= 1, got {max_keys}")
        if key_ttl_s is not None and key_ttl_s <= 0:
            raise ConfigurationError(f"key_ttl_s must be positive or None, got {key_ttl_s}")
        if (max_jump_intervals is not None and max_jump_intervals < 1) or jump_confirmations < 1:
            raise ConfigurationError(
                "max_jump_intervals must be positive or None and jump_confirmations >= 1, got "
                f"{max_jump_intervals} and {jump_confirmations}"
            )
        self.jump = JumpRule(
            None if max_jump_intervals is None else max_jump_intervals * meta.interval_s * 1000,
            jump_confirmations,
            # ahead of the wall clock a key may step, not jump: two intervals, a minute
            # at least (producers' clocks run a little ahead)
            max(2 * meta.interval_s * 1000, 60_000),
        )
        self._use_model(model)
        self.store = StateStore(
            window=meta.window,
            n_inputs=self.spec.n_inputs,
            state_size=meta.state_size,
            max_keys=max_keys,
            horizon=meta.horizon,
            quantiles=len(meta.drift.input_probs),
            levels=len(self.levels),
            key_ttl_s=key_ttl_s,
            initial_capacity=initial_capacity,
            grid=self.grid,
        )
        self.planner = LifecyclePlanner(
            self.store, window=meta.window, interval_s=self.grid, max_gap=self.max_gap,
            scheme=self.scheme,
        )  # fmt: skip
        self.totals = Counters()
        self.drift_settings = drift or DriftSettings()
        self.monitor = ForecastMonitor(self.store, meta, self.bands, self.drift_settings)

    def _use_model(self, model: StepModel) -> None:
        """Take everything that depends on the model from its metadata."""
        meta = model.meta
        calibration = meta.calibration
        shape = (len(calibration.levels), meta.horizon)
        q_lower = np.asarray(calibration.lower, dtype=np.float64)
        q_upper = np.asarray(calibration.upper, dtype=np.float64)
        if calibration.levels and (q_lower.shape != shape or q_upper.shape != shape):
            raise ConfigurationError(
                f"model calibration quantiles have shapes {q_lower.shape} and "
                f"{q_upper.shape}, expected {shape} (levels x horizon): re-export the model"
            )
        self.model = model
        self.meta = meta
        self.spec = meta.feature_spec()
        self.window = meta.window
        self.horizon = meta.horizon
        self.interval_s = meta.interval_s
        self.grid = meta.time_grid()
        self.scheme = meta.level_scale()
        self.extra_scaling = meta.extra_scaling()
        self.levels = calibration.levels
        self.bands = Bands(self.levels, q_lower, q_upper, self.band_rate)

    # -- public verbs --------------------------------------------------------------------

    def process(self, batch: TickBatch, now_s: float) -> StepResult:
        """Admit, aggregate and step one micro-batch; see the module docstring."""
        if batch.values.shape[1] != self.spec.n_inputs:
            raise ValueError(
                f"ticks carry {batch.values.shape[1]} value columns, the model needs "
                f"{self.spec.n_inputs} (value + {list(self.spec.extra_names)})"
            )
        expired = self.store.expire(now_s)
        evicted_before = self.store.evicted_lru
        done = merge(
            [self._process_chunk(batch.take(chunk), now_s) for chunk in self._chunks(batch)]
        )
        quality = self.monitor.drain()
        counters = done.counters
        counters.ticks_in = len(batch)
        counters.expired_ttl = expired
        counters.evicted_lru = self.store.evicted_lru - evicted_before
        self.totals.add(counters)
        held = self.store.rows
        changed_keys = sorted(k for k in done.changed if k in held)
        return StepResult(
            done.forecasts,
            done.rejections,
            counters,
            changed_keys,
            self.store.drain_removed(),
            done.alerts,
            quality,
        )

    def swap_model(self, model: StepModel) -> int:
        """Serve ``model`` from now on, keeping every key's history; returns keys rebuilt.

        The new model must share interval grid, window and inputs (otherwise the held
        windows mean nothing to it: restart with empty state). Each warm key's state --
        level, scale, ``h`` and ``c`` -- is rebuilt by stepping its window from zero state
        (``window`` batched model calls), so forecasts continue without a new warm-up.
        Forecasts after a swap differ from the offline evaluator's for the old model, by
        design.
        """
        problem = self.swap_problem(model)
        if problem is not None:
            raise ConfigurationError(problem)
        new = model.meta
        self._use_model(model)
        st = self.store
        self.planner = LifecyclePlanner(
            st, window=new.window, interval_s=self.grid, max_gap=self.max_gap, scheme=self.scheme
        )
        st.resize_state(new.state_size)
        st.resize_horizon(new.horizon, len(new.drift.input_probs), len(self.levels))
        self.monitor = ForecastMonitor(st, new, self.bands, self.drift_settings)
        return self._rebuild(np.flatnonzero(st.active))

    def swap_problem(self, model: StepModel) -> str | None:
        """Why :meth:`swap_model` cannot take ``model``, or None."""
        new, old = model.meta, self.meta
        differ = [
            f"{what} {a} -> {b}"
            for what, a, b in (
                ("interval_s", old.interval_s, new.interval_s),
                ("grid", old.time_grid().describe(), new.time_grid().describe()),
                ("window", old.window, new.window),
                ("value", old.features.value_name, new.features.value_name),
                ("extras", list(old.features.extra_names), list(new.features.extra_names)),
            )
            if a != b
        ]
        if differ:
            return (
                f"cannot swap {old.name} {old.version} for {new.name} {new.version}: "
                f"{', '.join(differ)}; the keys' windows mean nothing to it (serve it with a "
                "new changelog topic and group instead)"
            )
        return None

    def restore(
        self, records: Sequence[tuple[str, bytes]], now_s: float, partition: int
    ) -> tuple[int, int]:
        """Load changelog records of input ``partition`` into the store; returns ``(keys
        restored, keys re-initialised)``.

        A key whose ``h``/``c`` another model computed (its ``model_id`` is not this
        model's identity: a restart with a new model of the same layout) is never adopted:
        its state is rebuilt from its window with this model, as :meth:`swap_model` does.
        """
        rows = self.store.restore_rows(records, now_s, partition)
        st = self.store
        foreign = rows[(st.model_id[rows] != 0) & (st.model_id[rows] != self.model.identity)]
        return len(rows), self._rebuild(foreign)

    def _rebuild(self, rows: IntArray) -> int:
        """Rebuild the state of ``rows`` with the current model from their windows (zero
        state, level and scale from the window, ``window`` batched calls). Returns how
        many warm keys were rebuilt."""
        st = self.store
        if len(rows) == 0:
            return 0
        # not yet stepped (warming up) keys keep zero state and adopt the model as they warm
        st.h[rows], st.c[rows], st.model_id[rows] = 0.0, 0.0, 0
        for block in self._blocks(len(rows)):
            steps = self.planner.replay_windows(rows[block])
            self._run(steps, np.zeros(0, dtype=np.int64), Counters(), state_only=True)
        return int(np.count_nonzero(st.warm[rows]))

    def _blocks(self, n: int) -> list[IntArray]:
        """Positions ``0..n-1`` in blocks of at most :attr:`rebuild_keys`: the keys whose
        whole windows step together (a replay holds every step of its keys at once, ~26 KB
        per key with the hidden-64, window-48 model: 1,000,000 keys in one piece would
        need ~25 GB). A key's state does not depend on its block (the same bits)."""
        if n == 0:
            return []
        return np.array_split(np.arange(n), -(-n // self.rebuild_keys))

    @property
    def active_keys(self) -> int:
        """Keys currently held in state."""
        return len(self.store)

    @property
    def keys_in_alarm(self) -> tuple[int, int]:
        """``(error drift, input drift)``: keys whose alarm is raised."""
        st, live = self.store, self.store.active
        return int(np.count_nonzero(live & (st.alarm != 0))), int(
            np.count_nonzero(live & (st.in_alarm != 0))
        )

    @property
    def warming_keys(self) -> int:
        """Keys still in warm-up (no forecast yet since their last reset)."""
        return int(np.count_nonzero(self.store.active & ~self.store.warm))

    # -- internals -----------------------------------------------------------------------

    def _chunks(self, batch: TickBatch) -> list[IntArray]:
        """Split a batch whose distinct keys exceed ``max_keys`` (order kept per key)."""
        limit = self.store.max_keys
        if len(batch) <= limit or len(set(batch.keys)) <= limit:
            return [np.arange(len(batch))]
        chunks: list[IntArray] = []
        seen: set[str] = set()
        begin = 0
        for i, key in enumerate(batch.keys):
            if key not in seen and len(seen) == limit:
                chunks.append(np.arange(begin, i))
                seen, begin = set(), i
            seen.add(key)
        chunks.append(np.arange(begin, len(batch)))
        return chunks

    def _process_chunk(self, batch: TickBatch, now_s: float) -> Attempt:
        """Allocate the chunk's keys, then advance them, isolating keys that raise."""
        advance = functools.partial(self._advance, now_s=now_s)
        uniq, inverse = np.unique(np.asarray(batch.keys, dtype=object), return_inverse=True)
        key_rows, _ = self.store.rows_for([str(k) for k in uniq], now_s)
        rows = key_rows[inverse.ravel()]
        if batch.offset is None and batch.partition is not None:
            self.store.place(rows, batch.partition)
        if batch.offset is not None:
            done = self.store.arrive(rows, batch.offset, batch.partition)
            if done.any():
                fresh = np.flatnonzero(~done)
                attempt = isolated(
                    self.store, batch.take(fresh), rows[fresh], advance, self.empty_forecasts
                )
                attempt.counters.replayed += int(np.count_nonzero(done))
                return attempt
        return isolated(self.store, batch, rows, advance, self.empty_forecasts)

    def _advance(self, batch: TickBatch, rows: IntArray, now_s: float) -> Attempt:
        """Admit, aggregate, plan and step the ticks of ``batch`` (their rows allocated)
        at wall clock ``now_s``."""
        counters = Counters()
        codes = admit(
            rows,
            batch.ts_ms,
            self.store.last_ts_ms,
            self.grid,
            jump=self.jump,
            store=self.store,
            now_ms=int(now_s * 1000),
        )
        if self.aggregator.kind == "sum":
            codes[
                sums_beyond(
                    self.store, rows=rows, ts_ms=batch.ts_ms, values=batch.values,
                    accepted=codes == 0, interval_s=self.grid, limit=MAX_MAGNITUDE,
                )
            ] = SUM_OUT_OF_RANGE  # fmt: skip
        rejections = [
            Rejection(int(batch.index[i]), REASONS[int(codes[i])], _reject_detail(int(codes[i])))
            for i in np.flatnonzero(codes).tolist()
        ]
        for rejection in rejections:
            counters.rejected[rejection.reason] = counters.rejected.get(rejection.reason, 0) + 1
        accepted = codes == 0
        counters.accepted += int(np.count_nonzero(accepted))
        changed = {str(self.store.row_key[r]) for r in np.unique(rows[accepted]).tolist()}
        closed = aggregate(
            self.store, rows=rows, ts_ms=batch.ts_ms, values=batch.values, accepted=accepted,
            interval_s=self.grid, aggregator=self.aggregator,
        )  # fmt: skip
        counters.closed_intervals += len(closed)
        planned = self.planner.plan(closed)
        counters.imputed_steps += planned.imputed
        counters.resets += planned.resets
        forecasts, rows_of, inputs = self._run_planned(planned, batch.index, counters)
        alerts = self.monitor.observe(closed, batch.index, forecasts, rows_of, inputs)
        self._finish_bands(forecasts, rows_of)
        counters.alerts += len(alerts)
        return Attempt(forecasts, rejections, counters, changed, alerts)

    def _run_planned(
        self, planned: Planned, index: IntArray, counters: Counters
    ) -> tuple[ForecastBatch, IntArray, InputSteps]:
        """:meth:`_run` on the batch's steps with its keys' window warm-ups, a block of
        keys at a time (:meth:`_blocks`: whatever ``batch_max_records``, the steps in
        flight stay bounded). The first block runs with the rest of the batch, so up to
        :attr:`rebuild_keys` warm-ups a batch still costs its most pending steps in model
        calls; the results as one run gives them, the forecasts in their ticks' order."""
        rows_w, triggers = planned.windows
        blocks = self._blocks(len(rows_w))
        windows = [self.planner.window_steps(rows_w[b], triggers[b]) for b in blocks[:1]]
        parts = [self._run(Steps.concat([planned.steps, *windows]), index, counters)]
        for block in blocks[1:]:
            steps = self.planner.window_steps(rows_w[block], triggers[block])
            parts.append(self._run(steps, index, counters))
        if len(parts) == 1:
            return parts[0]
        forecasts = ForecastBatch.concat([f for f, _, _ in parts if len(f)] or [parts[0][0]])
        order = np.lexsort((forecasts.origin_ts, forecasts.trigger_index))
        rows_of = np.concatenate([r for _, r, _ in parts])[order]
        inputs = InputSteps(
            *(np.concatenate([getattr(i, f.name) for _, _, i in parts]) for f in fields(InputSteps))
        )
        return forecasts.take(order), rows_of, inputs

    def _finish_bands(self, forecasts: ForecastBatch, rows: IntArray) -> None:
        """Bands for the forecasts the monitor did not set (none in practice: every
        forecast's origin is an interval the batch closed) from their keys' current
        offsets; then a non-negative model's bands floored at 0, in place, as published."""
        lower, upper = forecasts.lower, forecasts.upper
        if lower is None or upper is None or len(rows) == 0:
            return
        unset = np.flatnonzero(np.isnan(lower[:, 0, 0]))
        if len(unset):
            assert forecasts.unit is not None
            lower[unset], upper[unset] = self.bands.bounds(
                forecasts.values[unset], forecasts.unit[unset], self.store.band_adj[rows[unset]]
            )
        if self.meta.non_negative:
            lower[...] = floor_non_negative(lower, True)
            upper[...] = floor_non_negative(upper, True)

    def _run(
        self, steps: Steps, index: IntArray, counters: Counters, *, state_only: bool = False
    ) -> tuple[ForecastBatch, IntArray, InputSteps]:
        """Execute the planned steps in rounds: the emitted forecasts, their rows, and the
        real intervals stepped (for input drift).

        Round ``r`` takes the ``r``-th pending step of every key that has one: its level
        and scale take the step's value (from the step's initial ones after a zero state),
        its input is built in its unit, and one model call advances all of them.
        ``state_only``: the steps emit nothing and only their state counts (a rebuild), so
        a model that can skips the rollout.
        """
        st, scheme = self.store, self.scheme
        advance = self.model.advance if isinstance(self.model, StateAdvancer) else None
        n = len(steps)
        rows, rank, zero, ts = steps.row, steps.rank, steps.zero, steps.ts
        calendar, origin_of = None, np.zeros(0, dtype=np.int64)
        if self.spec.n_calendar:
            # keys mostly share their origins: each distinct origin's rows once, gathered
            # per round (all steps' rows at once: 9 MB for 500 keys warming up)
            origins, which = np.unique(ts, return_inverse=True)
            calendar = calendar_features(self.grid.targets(origins, self.horizon), self.spec)
            origin_of = which.ravel()
        forecast = np.zeros((n, self.horizon), dtype=np.float32)
        order = np.argsort(rank, kind="stable")
        bounds = np.searchsorted(rank[order], np.arange(int(rank.max(initial=-1)) + 2))
        rounds = [order[lo:hi] for lo, hi in itertools.pairwise(bounds.tolist())]
        # level and scale first, round by round (a key's r-th step takes what its
        # (r-1)-th left); they need no model, so every step's input is then built at once
        level, scale = np.empty(n), np.empty(n)
        for sel in rounds:
            r_rows, fresh = rows[sel], zero[sel]
            l_prev = np.where(fresh, steps.init_level[sel], st.value_level[r_rows])
            s_prev = np.where(fresh, steps.init_scale[sel], st.value_scale[r_rows])
            level[sel], scale[sel] = scheme.update(l_prev, s_prev, steps.x[sel, 0])
            st.value_level[r_rows], st.value_scale[r_rows] = level[sel], scale[sel]
        x, unit = self._step_inputs(steps, level, scale)
        for sel in rounds:
            r_rows, fresh = rows[sel], zero[sel]
            h, c = st.h[r_rows], st.c[r_rows]  # copies (fancy indexing)
            if fresh.any():
                h[fresh], c[fresh] = 0.0, 0.0
            cal = calendar[origin_of[sel]] if calendar is not None else None
            wanted = np.zeros(len(sel), dtype=bool) if state_only else steps.emit[sel]
            h_out, c_out = self._round(advance, wanted, x[sel], h, c, cal, forecast, sel, counters)
            st.h[r_rows] = h_out
            st.c[r_rows] = c_out
            st.model_id[r_rows] = self.model.identity
        counters.steps += n
        # keys that ended the batch in warm-up hold zero state by definition
        cold = np.flatnonzero(st.active & ~st.warm)
        st.h[cold] = 0.0
        st.c[cold] = 0.0
        trigger = steps.trigger
        out = np.flatnonzero(steps.emit)
        out = out[np.lexsort((ts[out], trigger[out]))]
        counters.forecasts += len(out)
        forecasts = self._forecast_batch(
            rows[out], ts[out], forecast[out], loc=level[out], scale=unit[out],
            trigger=index[trigger[out]],
        )  # fmt: skip
        real = np.flatnonzero(steps.emit)
        inputs = InputSteps(
            rows[real], rank[real], x[real, 0].astype(np.float64), ts[real], trigger[real]
        )
        return forecasts, rows[out], inputs

    #: steps whose inputs are built in one go (:meth:`_step_inputs`): ~10 MB of float64
    #: temporaries with the window-48 model, whatever the warm-ups in flight
    input_chunk_steps: int = 16_384

    def _step_inputs(
        self, steps: Steps, level: FloatArray, scale: FloatArray
    ) -> tuple[Float32Array, FloatArray]:
        """Every step's input ``x [n, step_width]`` and unit ``K [n]`` from its level and
        scale after it (:func:`~streamcast.core.features.step_inputs`, elementwise: the
        same bits as step by step), :attr:`input_chunk_steps` steps at a time."""
        n = len(steps)
        x = np.empty((n, self.scheme.step_width(steps.x.shape[1] - 1)), dtype=np.float32)
        unit = np.empty(n)
        for lo in range(0, n, self.input_chunk_steps):
            part = slice(lo, lo + self.input_chunk_steps)
            x[part], unit[part] = step_inputs(
                steps.x[part], level[part], scale[part], steps.lags[part],
                scheme=self.scheme, extra=self.extra_scaling,
            )  # fmt: skip
        return x, unit

    def _round(  # noqa: PLR0917 - one round's arrays, once
        self,
        advance: Callable[
            [Float32Array, Float32Array, Float32Array, Float32Array | None],
            tuple[Float32Array, Float32Array],
        ]
        | None,
        emitting: npt.NDArray[np.bool_],
        x: Float32Array,
        h: Float32Array,
        c: Float32Array,
        calendar: Float32Array | None,
        forecast: Float32Array,
        sel: IntArray,
        counters: Counters,
    ) -> tuple[Float32Array, Float32Array]:
        """One round's model calls: ``(h_out, c_out)``, ``forecast`` filled at the
        ``emitting`` steps.

        Steps that emit nothing (warm-up, imputed intervals, a rebuild) only need their
        state, and the rollout is most of a step's cost: with a model that can, they run
        the state-only graph (the same h and c bit for bit: ``OnnxStepModel`` checks its
        pruned graph at load). A round of both makes two calls. Through the full step, 500
        keys warming up in one interval (48 steps each) held the service for 0.6 s.
        """
        if advance is None or emitting.all():
            counters.model_calls += 1
            h_out, c_out, forecast[sel] = self.model.step(x, h, c, calendar)
            return h_out, c_out
        if not emitting.any():
            counters.model_calls += 1
            return advance(x, h, c, calendar)
        full, rest = np.flatnonzero(emitting), np.flatnonzero(~emitting)
        h_out, c_out = np.empty_like(h), np.empty_like(c)

        def part(i: IntArray) -> Float32Array | None:
            return calendar[i] if calendar is not None else None

        counters.model_calls += 2
        h_out[full], c_out[full], forecast[sel[full]] = self.model.step(
            x[full], h[full], c[full], part(full)
        )
        h_out[rest], c_out[rest] = advance(x[rest], h[rest], c[rest], part(rest))
        return h_out, c_out

    def _forecast_batch(
        self, rows: IntArray, ts: IntArray, scaled: npt.NDArray[np.float32], *,
        loc: FloatArray, scale: FloatArray, trigger: IntArray,
    ) -> ForecastBatch:  # fmt: skip
        values = unscale_forecast(scaled, loc, scale)
        # a non-negative model's floor: its forecasts here, the bands around them once
        # the monitor has set them (_finish_bands)
        values = floor_non_negative(values, self.meta.non_negative)
        lower = upper = None
        if self.levels:
            # set by the monitor from the key's offsets after the origin's actual was
            # scored (ForecastMonitor.observe), or by _finish_bands
            shape = (len(rows), len(self.levels), self.horizon)
            lower, upper = np.full(shape, np.nan), np.full(shape, np.nan)
        row_key = self.store.row_key
        return ForecastBatch(
            keys=[str(row_key[r]) for r in rows.tolist()],
            origin_ts=ts,
            values=values,
            model=self.meta.name,
            model_version=self.meta.version,
            interval_s=self.interval_s,
            grid=self.grid,
            horizon=self.horizon,
            trigger_index=trigger,
            levels=self.levels,
            lower=lower,
            upper=upper,
            unit=scale,
        )

    def empty_forecasts(self) -> ForecastBatch:
        """A forecast batch with no rows, for this model."""
        return self._forecast_batch(
            np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64),
            np.zeros((0, self.horizon), dtype=np.float32), loc=np.zeros(0), scale=np.zeros(0),
            trigger=np.zeros(0, dtype=np.int64),
        )  # fmt: skip


def _reject_detail(code: int) -> str:
    return {
        1: "same timestamp as the key's last accepted tick",
        2: "older than the key's open interval, which is closed already",
        3: "earlier than the key's last accepted tick within the open interval",
        4: "too far ahead of the key's last accepted tick (max_jump_intervals) and not "
        "confirmed by the ticks after it",
        5: f"the interval's sum would pass +-{MAX_MAGNITUDE:g} with it",
    }[code]
