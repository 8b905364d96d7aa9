"""Adaptive interval bands (streamcast.core.bands): each key's band keeps its coverage
when the errors differ from the calibration's, one side at a time, within bounds."""

from __future__ import annotations

import numpy as np
import pytest

from streamcast.core.bands import MAX_OFFSET, MIN_OFFSET, Bands

LEVELS = (0.8, 0.95)
#: standard normal quantiles of the two levels, the same at each of 3 steps
Z = np.array([1.2815516, 1.9599640])


def _bands(rate: float = 0.02, horizon: int = 3) -> Bands:
    q = np.repeat(Z[:, None], horizon, axis=1)
    return Bands(LEVELS, -q, q, rate)


def _run(bands: Bands, errors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Score ``errors`` ``[T, keys]`` one interval at a time, every key at once, cycling
    through the steps as a probe does; returns per interval the published limits at the
    scored step (``[T, keys, L]`` lower and upper) and the final offsets."""
    t_len, keys = errors.shape
    horizon = bands.q_lower.shape[1]
    offsets = np.zeros((keys, len(LEVELS), 2), dtype=np.float32)
    lows, highs = [], []
    for t in range(t_len):
        step = np.full(keys, t % horizon)
        lower, upper = bands.limits(offsets)
        lows.append(lower[np.arange(keys), :, step])
        highs.append(upper[np.arange(keys), :, step])
        offsets = bands.update(offsets, errors[t], step)
    return np.asarray(lows), np.asarray(highs), offsets


def _coverage(errors: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    e = errors[:, :, None]
    return np.asarray(((e >= lower) & (e <= upper)).mean(axis=(0, 1)))


@pytest.mark.parametrize("spread", [0.6, 1.5])
def test_bands_reach_nominal_coverage_when_errors_are_narrower_or_wider(spread: float) -> None:
    rng = np.random.default_rng(1)
    errors = spread * rng.standard_normal((4000, 50))
    lower, upper, _ = _run(_bands(), errors)
    static = _coverage(errors, -Z[None, None], Z[None, None])
    adaptive = _coverage(errors[1000:], lower[1000:], upper[1000:])
    assert np.all(np.abs(static - LEVELS) > 0.04), static  # the calibration is off
    np.testing.assert_allclose(adaptive, LEVELS, atol=0.015)


def test_a_biased_model_shifts_its_band_each_side_missing_half() -> None:
    rng = np.random.default_rng(2)
    errors = 1.0 + rng.standard_normal((4000, 50))  # actuals above the forecasts
    lower, upper, offsets = _run(_bands(), errors)
    e = errors[1000:, :, None]
    below = (e < lower[1000:]).mean(axis=(0, 1))
    above = (e > upper[1000:]).mean(axis=(0, 1))
    half = (1 - np.asarray(LEVELS)) / 2
    np.testing.assert_allclose(below, half, atol=0.01)
    np.testing.assert_allclose(above, half, atol=0.01)
    assert np.all(offsets[:, :, 1] > 0) and np.all(offsets[:, :, 0] < 0)


def test_rate_zero_keeps_the_static_bands() -> None:
    bands = _bands(rate=0.0)
    errors = 5 * np.random.default_rng(3).standard_normal((200, 4))
    _, _, offsets = _run(bands, errors)
    assert np.all(offsets == 0)


def test_offsets_stay_within_bounds_so_a_band_never_inverts() -> None:
    bands = _bands(rate=0.5)
    _, _, wide = _run(bands, np.full((400, 2), 100.0))
    _, _, narrow = _run(bands, np.zeros((400, 2)))
    assert np.all(wide[:, :, 1] == np.float32(MAX_OFFSET))
    assert np.all(narrow == np.float32(MIN_OFFSET))
    lower, upper = bands.limits(narrow)
    assert np.all(upper - lower > 0)


def test_bounds_in_original_units_scale_with_the_unit() -> None:
    bands = _bands()
    offsets = np.array([[[0.5, -0.25], [0.0, 1.0]]], dtype=np.float32)
    values = np.array([[10.0, 11.0, 12.0]])
    lower, upper = bands.bounds(values, np.array([2.0]), offsets)
    width = 2 * Z
    np.testing.assert_allclose(lower[0, 0], values[0] + (-Z[0] - 0.5 * width[0]) * 2.0)
    np.testing.assert_allclose(upper[0, 0], values[0] + (Z[0] - 0.25 * width[0]) * 2.0)
    np.testing.assert_allclose(upper[0, 1], values[0] + (Z[1] + 1.0 * width[1]) * 2.0)


def test_a_rate_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="rate"):
        _bands(rate=1.5)


def test_bands_stay_nested_whatever_the_offsets() -> None:
    bands = _bands()
    rng = np.random.default_rng(5)
    offsets = rng.uniform(-0.45, 4.0, size=(500, 2, 2)).astype(np.float32)
    lower, upper = bands.limits(offsets)
    assert np.all(lower[:, 1] <= lower[:, 0]) and np.all(upper[:, 1] >= upper[:, 0])
    assert np.all(lower < upper)
