"""Prediction-interval bands that keep their coverage: per-key adaptive quantile tracking.

The model carries, per level and horizon step, quantiles ``q_lower``/``q_upper`` of its
scaled validation residuals (``(actual - forecast) / unit``); the band of a forecast is
``forecast + q * unit``. Those quantiles describe the validation period. Errors on later
data are wider (on the pedestrian test period a third to 43 % wider by step, on taylor's
the long steps' more than the first), so static bands cover 69-74 % where 80 % is
promised. So each key tracks its own band, the way adaptive conformal inference does
(Gibbs & Candes 2021; quantile tracking as in Angelopoulos et al. 2023): every side
``j`` of every level keeps an offset ``a_j`` in band widths ``w = q_upper - q_lower``,
and the published band is::

    lower = forecast + (q_lower - a_lo * w) * unit
    upper = forecast + (q_upper + a_hi * w) * unit

Each scored actual -- the key's *probe* forecast at whichever step it reached
(:mod:`streamcast.core.quality`: one whole forecast scored step by step, so the steps
are sampled evenly) -- moves the offsets by ``rate`` towards their target miss rate
``(1 - level) / 2`` on each side::

    a_lo <- a_lo + rate * (1[err < lower] - (1 - level) / 2)
    a_hi <- a_hi + rate * (1[err > upper] - (1 - level) / 2)

A key whose actuals fall outside more often than promised widens its band, one whose
band is too wide narrows it, and each side learns separately, so a biased model's band
shifts rather than only widening. The long-run miss rate of every key converges to the
level's (the ACI guarantee), whatever the data do. Offsets are clipped to
``[MIN_OFFSET, MAX_OFFSET]`` so a band never inverts and one burst cannot blow it up,
and the bands stay nested: a level's band is widened to hold every lower level's (the
misses are counted against the bands as published, so a level held wide by a lower one
learns to widen itself).
The offsets are ``2 L`` floats of the key's durable state (``band_adj``), so a restart
continues them. Training's report replays exactly this recurrence over the history
(:func:`training.backtest.band_offsets`), so offline coverage is the service's.

``rate`` 0.02 (``STREAMCAST_BAND_RATE``; 0 publishes the static bands) was chosen on
the pedestrian and taylor test periods (docs/training.md): from 69.5 / 89.2 % (taylor,
80 / 95 % bands) and 74.0 / 93.8 % (pedestrian) static to 76.0 / 91.6 % and 77.4 /
94.1 %; 0.005-0.05 all bring both within five points, lower adapts more slowly to a new
season, higher makes the bands jitter.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]

#: the default adaptation rate (module docstring)
DEFAULT_RATE = 0.02
#: offsets in band widths: -0.45 on both sides still leaves a tenth of the width
MIN_OFFSET, MAX_OFFSET = -0.45, 4.0


@dataclass(frozen=True)
class Bands:
    """The calibrated quantiles of a model (``[L, H]`` each, in units) and the rate."""

    levels: tuple[float, ...]
    q_lower: FloatArray
    q_upper: FloatArray
    rate: float = DEFAULT_RATE

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"band adaptation rate must be in [0, 1], got {self.rate}")

    @property
    def width(self) -> FloatArray:
        """``[L, H]`` the static band widths, in units."""
        return np.asarray(self.q_upper - self.q_lower, dtype=np.float64)

    def limits(self, offsets: Float32Array) -> tuple[FloatArray, FloatArray]:
        """``([n, L, H], [n, L, H])`` the bands' lower and upper quantiles, in units, for
        rows holding ``offsets`` ``[n, L, 2]``; nested (each level's band holds the lower
        levels', widened where its own offsets would leave it narrower)."""
        w = self.width[None]
        lower = np.multiply(offsets[:, :, 0, None], w, dtype=np.float64)
        np.subtract(self.q_lower[None], lower, out=lower)
        upper = np.multiply(offsets[:, :, 1, None], w, dtype=np.float64)
        np.add(self.q_upper[None], upper, out=upper)
        return self._nest(lower, upper)

    def step_limits(self, offsets: Float32Array, step: IntArray) -> tuple[FloatArray, FloatArray]:
        """``([n, L], [n, L])`` :meth:`limits` at one horizon step (0-based) per row."""
        a = offsets.astype(np.float64)
        w = self.width[:, step].T  # [n, L]
        return self._nest(
            self.q_lower[:, step].T - a[:, :, 0] * w, self.q_upper[:, step].T + a[:, :, 1] * w
        )

    def bounds(
        self, values: FloatArray, unit: FloatArray, offsets: Float32Array
    ) -> tuple[FloatArray, FloatArray]:
        """``(lower, upper)`` ``[n, L, H]`` in original units around forecasts ``values``
        ``[n, H]`` made in ``unit`` ``[n]``."""
        lower, upper = self.limits(offsets)
        spread = unit[:, None, None]
        for band in (lower, upper):
            np.multiply(band, spread, out=band)
            np.add(band, values[:, None, :], out=band)
        return lower, upper

    def update(self, offsets: Float32Array, err: FloatArray, step: IntArray) -> Float32Array:
        """The offsets ``[n, L, 2]`` after scoring errors ``err`` ``[n]`` (in units) at
        horizon steps ``step`` ``[n]`` (0-based): the module docstring's recurrence,
        misses counted against the bands as published."""
        lower, upper = self.step_limits(offsets, step)
        a = offsets.astype(np.float64)
        target = (1.0 - np.asarray(self.levels, dtype=np.float64))[None, :] / 2.0
        e = err[:, None]
        a[:, :, 0] += self.rate * ((e < lower) - target)
        a[:, :, 1] += self.rate * ((e > upper) - target)
        return np.clip(a, MIN_OFFSET, MAX_OFFSET).astype(np.float32)

    def _nest(self, lower: FloatArray, upper: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Widen each level's limits (axis 1) to hold the next lower level's, in place."""
        order = np.argsort(np.asarray(self.levels), kind="stable").tolist()
        for narrow, wide in itertools.pairwise(order):  # a few levels
            np.minimum(lower[:, wide], lower[:, narrow], out=lower[:, wide])
            np.maximum(upper[:, wide], upper[:, narrow], out=upper[:, wide])
        return lower, upper
