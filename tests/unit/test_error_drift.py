"""The error-drift chart on its own: standardised residuals go straight into
:class:`~streamcast.core.drift.ErrorDrift` over a plain store (no model, no intervals),
so shift, burst and noise are exactly what the test writes."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from streamcast.core.drift import ERROR_DRIFT, RECOVERED, DriftSettings, ErrorDrift
from streamcast.core.quality import Residuals
from streamcast.core.state import StateStore

F64 = npt.NDArray[np.float64]
#: the detector's columns: everything it knows about a key
DETECTOR = ("alarm", "level", "quiet_n", "n_resid", "base_m", "base_v")


def store_of(n_keys: int) -> StateStore:
    store = StateStore(window=4, n_inputs=1, state_size=2, max_keys=n_keys, horizon=2)
    store.rows_for([f"k{i}" for i in range(n_keys)], 0.0)
    return store


def run(store: StateStore, z: F64, start: int = 0) -> list[tuple[int, int, str, str]]:
    """Feed ``z[t, k]`` (key k's residual at interval ``start + t``) one batch per
    interval, as the quality tracker would (its last residuals in ``resid``); returns
    ``(interval, key row, kind, direction)`` of every alert."""
    detector = ErrorDrift(store, DriftSettings())
    rows = np.arange(z.shape[1], dtype=np.int64)
    found: list[tuple[int, int, str, str]] = []
    for t in range(len(z)):
        store.resid[rows] = np.roll(store.resid[rows], -1, axis=1)
        store.resid[rows, -1] = z[t]
        zeros = np.zeros(len(rows), dtype=np.int64)
        alarms = detector.update(Residuals(rows, np.full(len(rows), start + t), z[t], zeros, zeros))
        found += zip(
            alarms.start.tolist(), alarms.row.tolist(), alarms.kind, alarms.direction, strict=True
        )
    return found


def test_a_3_sigma_shift_alerts_once_within_24_intervals_and_recovers_after_it() -> None:
    z = np.random.default_rng(0).standard_normal((700, 30))
    z[300:348, 11] += 3.0
    found = run(store_of(30), z)
    assert [(row, kind, d) for _, row, kind, d in found] == [
        (11, ERROR_DRIFT, "up"),
        (11, RECOVERED, "up"),
    ]
    assert 1 <= found[0][0] - 300 + 1 <= 24
    assert found[1][0] >= 348


def test_a_burst_of_extreme_residuals_alone_raises_no_alert() -> None:
    """Hours of errors of 10 standard deviations (an event, a holiday) are clipped, so a
    burst of up to half a span adds too little to the level to alert."""
    z = np.random.default_rng(1).standard_normal((600, 20))
    for key, (at, n) in enumerate([(200, 1), (250, 3), (300, 6), (350, 10)]):
        z[at : at + n, key] += 10.0
        z[at + 100 : at + 100 + n, key + 10] -= 10.0
    assert run(store_of(20), z) == []


def test_rounds_in_one_batch_equal_one_batch_per_interval() -> None:
    """Several intervals of a key in one batch (ranks) step the chart as separate batches."""
    z = np.random.default_rng(2).standard_normal((200, 5))
    z[100:140, 2] -= 3.0
    one_by_one = store_of(5)
    run(one_by_one, z)
    batched = store_of(5)
    batched.resid[:] = 0.0  # alert summaries only; the chart does not read them
    detector = ErrorDrift(batched, DriftSettings())
    rows = np.tile(np.arange(5, dtype=np.int64), 4)
    for t in range(0, 200, 4):
        rank = np.repeat(np.arange(4, dtype=np.int64), 5)
        zeros = np.zeros(len(rows), dtype=np.int64)
        detector.update(Residuals(rows, t + rank, z[t : t + 4].ravel(), rank, zeros))
    for name in DETECTOR:
        np.testing.assert_array_equal(getattr(batched, name)[:5], getattr(one_by_one, name)[:5])


def test_detector_state_through_snapshot_and_restore_continues_identically() -> None:
    """A restart at any point (mid-shift below threshold, in alarm, recovering) restores
    every detector column bit for bit: the continuation raises the same alerts and ends
    in the same state as the run without the restart."""
    z = np.random.default_rng(3).standard_normal((500, 8))
    z[150:220, 5] += 3.0
    straight_store = store_of(8)
    straight = run(straight_store, z)
    assert [kind for _, _, kind, _ in straight] == [ERROR_DRIFT, RECOVERED]
    alert_at = straight[0][0]
    names = [f"k{i}" for i in range(8)]
    for cut in (alert_at - 3, alert_at, alert_at + 30, straight[1][0]):
        first = store_of(8)
        before = run(first, z[:cut])
        second = StateStore(window=4, n_inputs=1, state_size=2, max_keys=8, horizon=2)
        second.restore(first.snapshot(names), 0.0)
        rows = second.lookup(names)
        assert rows.tolist() == list(range(8))
        after = run(second, z[cut:], cut)
        assert before + after == straight, cut
        for name in DETECTOR:
            np.testing.assert_array_equal(getattr(second, name), getattr(straight_store, name))
