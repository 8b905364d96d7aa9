"""The forecast-quality loop of the pipeline: score the forecasts against the actuals
(:mod:`streamcast.core.quality`), run the drift detectors (:mod:`streamcast.core.drift`)
and turn their state changes into an :class:`~streamcast.core.alerts.AlertBatch`.

The pipeline calls :meth:`ForecastMonitor.observe` once per batch (per attempt: a batch
that is rolled back by the isolation guard leaves no trace here), after the batch's
intervals closed and its forecasts were made.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from streamcast.core.alerts import AlertBatch
from streamcast.core.artifact import ModelMeta
from streamcast.core.bands import Bands
from streamcast.core.drift import (
    Alarms,
    DriftSettings,
    ErrorDrift,
    InputDrift,
    InputSteps,
    merge_alarms,
)
from streamcast.core.intervals import ClosedIntervals
from streamcast.core.quality import QualityTotals, QualityTracker
from streamcast.core.records import ForecastBatch
from streamcast.core.state import RESIDUALS_KEPT, StateStore

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def residual_reference(meta: ModelMeta) -> tuple[float, float]:
    """``(mean, std)`` of the step-1 scaled validation residuals the model carries (its
    ``drift`` metadata); ``(0, 1)`` for a model without them."""
    drift = meta.drift
    if drift.residual_mean and drift.residual_std:
        return drift.residual_mean[0], drift.residual_std[0] or 1.0
    return 0.0, 1.0


class ForecastMonitor:
    """Quality tracking and error drift for one model and one state store."""

    def __init__(
        self,
        store: StateStore,
        meta: ModelMeta,
        bands: Bands,
        settings: DriftSettings,
    ) -> None:
        mean, std = residual_reference(meta)
        self.store = store
        self.meta = meta
        self.settings = settings
        self.quality = QualityTracker(
            store,
            interval_s=meta.time_grid(),
            bands=bands,
            residual_mean=mean,
            residual_std=std,
        )
        self.drift = ErrorDrift(store, settings)
        ref = meta.drift
        self.inputs = InputDrift(
            store,
            probs=ref.input_probs,
            quantiles=ref.input_quantiles,
            threshold=ref.input_threshold,
            every=settings.input_every,
            window=meta.window,
        )

    def observe(
        self,
        closed: ClosedIntervals,
        index: IntArray,
        forecasts: ForecastBatch,
        forecast_rows: IntArray,
        inputs: InputSteps,
    ) -> AlertBatch:
        """Score the batch's closed intervals, update the detectors; the alerts raised.

        ``index`` maps the batch's tick positions to the input positions the caller knows;
        ``inputs`` are the real intervals the batch stepped, with their scaled values.
        """
        residuals = self.quality.observe(closed, forecasts, forecast_rows)
        alarms = merge_alarms(
            [
                self.drift.update(residuals),
                self.inputs.update(inputs),
            ]
        )
        return self._alerts(alarms, index)

    def drain(self) -> QualityTotals:
        """Per-step error sums since the last call."""
        return self.quality.totals.drain()

    def _alerts(self, alarms: Alarms, index: IntArray) -> AlertBatch:
        meta = self.meta
        if len(alarms) == 0:
            return AlertBatch.empty(meta.name, meta.version, meta.window, RESIDUALS_KEPT)
        st = self.store
        rows = alarms.row
        window = st.window[rows, :, 0]
        filled = np.arange(st.window_size)[None, :] < st.wlen[rows, None]
        values = np.where(filled, window, np.nan)
        with np.errstate(invalid="ignore"):
            mean, std = np.nanmean(values, axis=1), np.nanstd(values, axis=1)
        return AlertBatch(
            keys=[str(st.row_key[r]) for r in rows.tolist()],
            ts=alarms.start,
            kind=alarms.kind,
            detector=alarms.detector,
            statistic=alarms.statistic,
            threshold=alarms.threshold,
            direction=alarms.direction,
            severity=alarms.severity,
            model=meta.name,
            model_version=meta.version,
            trigger_index=index[alarms.trigger],
            recent=st.resid[rows].copy(),
            window_mean=np.nan_to_num(mean),
            window_std=np.nan_to_num(std),
            window=meta.window,
        )
