"""``POST /v1/predict``: a posted history in, the forecast the service would make out.

Stateless: every request runs the core :class:`~streamcast.core.pipeline.Pipeline` with
a fresh state store over the posted ticks, with the model the service serves. So the
answer is what the offline evaluator (``streamcast-train evaluate``) computes for the same
history: the forecast made at the last *closed* interval (the interval of the last tick
stays open, exactly as online and offline). Ticks within one interval are aggregated,
short gaps bridged and long gaps reset the key, all by the model's own rules; a key the
model was trained on keeps its training scale, so the key is part of the request.

Every problem with a request is a :class:`PredictError` naming the field and the reason
(the app answers 422). Model calls are CPU bound: they run in a small thread pool of
their own, so predictions never stall the event loop that serves reads and streams.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from streamcast.core.artifact import ModelMeta
from streamcast.core.codec import MAX_MAGNITUDE, parse_timestamp_ms
from streamcast.core.model import OnnxStepModel, StepModel
from streamcast.core.pipeline import Pipeline
from streamcast.core.records import Forecast, TickBatch, decode_forecast, encode_forecasts

#: a JSON number (not a boolean, not a numeric string)
Number = Annotated[float, Field(strict=True)]


class PredictRequest(BaseModel):
    """A history of one series."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "key": "pump-17",
                    "timestamps": ["2026-11-24T00:00:00Z", "2026-11-24T01:00:00Z", "..."],
                    "values": [12.5, 13.0, "..."],
                    "extras": {"temp": [3.0, 3.5, "..."]},
                }
            ]
        },
    )

    key: str = Field(
        default="predict",
        min_length=1,
        max_length=256,
        description="series key: a key the model was trained on is scaled as in training",
    )
    # checked one by one by the predictor (the core's timestamp rule), so an epoch in
    # nanoseconds stays an exact integer and every bad entry is named by its index
    timestamps: list[Any] = Field(
        min_length=1,
        description="event times, strictly increasing: ISO-8601 or epoch s/ms/us/ns",
        json_schema_extra={"items": {"anyOf": [{"type": "string"}, {"type": "number"}]}},
    )
    values: list[Number] = Field(min_length=1, description="the value at each timestamp")
    extras: dict[str, list[Number]] = Field(
        default_factory=dict, description="the model's extra features, one list each"
    )


class PredictError(Exception):
    """A request the model cannot forecast: ``field`` (``values[3]``) and ``reason``."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class Predictor:
    """Forecasts posted histories with one model (module docstring)."""

    def __init__(self, model: StepModel, *, max_history: int = 10_000, workers: int = 1) -> None:
        self.model = model
        self.max_history = max_history
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="predict")

    @property
    def meta(self) -> ModelMeta:
        """The serving model's metadata."""
        return self.model.meta

    def use(self, model: StepModel) -> None:
        """Predict with ``model`` from now on (a request under way finishes with the model
        it started with: each reads :attr:`model` once)."""
        self.model = model

    @classmethod
    def load(
        cls, path: Path, *, intra_op_threads: int = 1, max_history: int = 10_000, workers: int = 1
    ) -> Predictor:
        """Open the model (:class:`~streamcast.errors.ModelError` when it cannot be)."""
        model = OnnxStepModel.load(path, intra_op_threads)
        return cls(model, max_history=max_history, workers=workers)

    def close(self) -> None:
        """Stop the worker threads (idempotent)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def predict_async(self, request: PredictRequest) -> Forecast:
        """:meth:`predict` in the predictor's own threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.predict, request)

    def predict(self, request: PredictRequest, now_s: float | None = None) -> Forecast:
        """The forecast at the last closed interval of ``request``'s history."""
        model = self.model
        batch = self.ticks(request, model.meta)
        pipeline = Pipeline(
            model, max_keys=1, key_ttl_s=None, max_jump_intervals=None, initial_capacity=1
        )
        result = pipeline.process(batch, time.time() if now_s is None else now_s)
        if result.rejections:  # pragma: no cover - ticks() admits only what the core accepts
            first = result.rejections[0]
            raise PredictError(f"timestamps[{first.index}]", f"{first.reason}: {first.detail}")
        fc = result.forecasts
        if len(fc) == 0:
            closed = result.counters.closed_intervals
            meta = model.meta
            raise PredictError(
                "timestamps",
                f"no forecast: the history closes {closed} interval(s) of "
                f"{meta.interval_s}s; the model needs {meta.window} consecutive "
                f"closed intervals (gaps of at most {meta.gap.max_gap} bridged) before a "
                "forecast, and the interval of the last tick stays open: post a longer history",
            )
        ((_, value),) = encode_forecasts(fc.take(np.array([len(fc) - 1])))
        return decode_forecast(value)

    def ticks(self, request: PredictRequest, meta: ModelMeta | None = None) -> TickBatch:
        """The history as a tick batch for ``meta``'s model (the serving one by default);
        :class:`PredictError` for the first problem."""
        meta = meta or self.meta
        n = len(request.timestamps)
        if n > self.max_history:
            raise PredictError(
                "timestamps", f"{n} ticks; at most {self.max_history} (api_max_history)"
            )
        if len(request.values) != n:
            raise PredictError(
                "values", f"has {len(request.values)} entries, timestamps has {n}: one each"
            )
        names = meta.features.extra_names
        for name in request.extras:
            if name not in names:
                raise PredictError(
                    f"extras.{name}",
                    f"not a feature of model {meta.name} (it takes {list(names)})",
                )
        columns = [request.values]
        for name in names:
            column = request.extras.get(name)
            if column is None:
                raise PredictError(f"extras.{name}", "required by the model: one value per tick")
            if len(column) != n:
                raise PredictError(
                    f"extras.{name}", f"has {len(column)} entries, timestamps has {n}"
                )
            columns.append(column)
        values = np.asarray(columns, dtype=np.float64).T
        bad = np.flatnonzero(
            ~np.isfinite(values).all(axis=1) | (np.abs(values) > MAX_MAGNITUDE).any(axis=1)
        )
        if len(bad):
            row = int(bad[0])
            col = int(
                np.flatnonzero(~np.isfinite(values[row]) | (np.abs(values[row]) > MAX_MAGNITUDE))[0]
            )
            field = "values" if col == 0 else f"extras.{names[col - 1]}"
            raise PredictError(
                f"{field}[{row}]", f"{values[row, col]} is not a finite number within ±1e37"
            )
        ts_ms = np.asarray(
            [_timestamp(raw, i) for i, raw in enumerate(request.timestamps)], dtype=np.int64
        )
        backwards = np.flatnonzero(np.diff(ts_ms) <= 0)
        if len(backwards):
            i = int(backwards[0]) + 1
            raise PredictError(
                f"timestamps[{i}]",
                f"not after timestamps[{i - 1}]: a history is strictly increasing in time",
            )
        return TickBatch.from_rows([request.key] * n, ts_ms, values)


def _timestamp(raw: object, index: int) -> int:
    try:
        ms = parse_timestamp_ms(raw)
    except (ValueError, TypeError, OverflowError) as err:
        raise PredictError(f"timestamps[{index}]", f"{raw!r} is not a timestamp: {err}") from None
    if not -(2**62) < ms < 2**62:
        raise PredictError(f"timestamps[{index}]", f"{raw!r} is out of range")
    return ms
