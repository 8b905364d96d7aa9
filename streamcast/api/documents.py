"""What the API answers, as JSON: the fast renderers and the models that document them.

The hot paths (``GET /v1/forecasts/{key}``, the event streams) build plain dicts and
serialise them with orjson; the pydantic models below describe the same documents for
the OpenAPI schema at ``/docs`` (and tests check the two agree).
"""

from __future__ import annotations

import functools
import time
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, Field

from streamcast.api.view import Latest, Summary
from streamcast.core.alerts import Alert
from streamcast.core.records import Forecast, iso_duration, iso_utc


def iso_s(seconds: float) -> str:
    """Epoch seconds as ISO-8601 UTC, seconds precision."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC with milliseconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


@functools.lru_cache(maxsize=4096)
def _targets(origin_ts: int, interval_s: int, horizon: int) -> list[str]:
    """Target timestamps as text: most keys share their origin, so this is cached."""
    steps = np.arange(1, horizon + 1, dtype=np.int64) * interval_s
    return list(iso_utc(origin_ts + steps).tolist())


def forecast_document(
    fc: Forecast, *, published_ms: int | None = None, now_s: float | None = None
) -> dict[str, object]:
    """A forecast as the API shows it (see :class:`ForecastOut`)."""
    doc: dict[str, object] = {
        "key": fc.key,
        "origin": iso_s(fc.origin_ts),
        "interval": iso_duration(fc.interval_s),
        "interval_s": fc.interval_s,
        "horizon": fc.horizon,
        "targets": _targets(fc.origin_ts, fc.interval_s, fc.horizon),
        "values": fc.values.tolist(),
        "intervals": [
            {"level": level, "lower": fc.lower[i].tolist(), "upper": fc.upper[i].tolist()}
            for i, level in enumerate(fc.levels)
            if fc.lower is not None and fc.upper is not None
        ],
        "model": fc.model,
        "model_version": fc.model_version,
    }
    if published_ms is not None:
        now = time.time() if now_s is None else now_s
        doc["published_at"] = iso_ms(published_ms)
        doc["age_s"] = round(max(0.0, now - published_ms / 1000), 3)
    return doc


def latest_json(latest: Latest, now_s: float | None = None) -> bytes:
    """The body of ``GET /v1/forecasts/{key}``."""
    return orjson.dumps(
        forecast_document(latest.forecast, published_ms=latest.published_ms, now_s=now_s)
    )


def summary_document(summary: Summary, now_s: float) -> dict[str, object]:
    """One item of the key listing."""
    return {
        "key": summary.key,
        "origin": iso_s(summary.origin_ts),
        "model": summary.model,
        "model_version": summary.model_version,
        "age_s": round(max(0.0, now_s - summary.published_ms / 1000), 3),
    }


def alert_document(alert: Alert) -> dict[str, object]:
    """An alert as the API shows it: the record's fields."""
    return alert.document()


def error_document(error: str, detail: str, **extra: object) -> dict[str, object]:
    """Every error body: a machine code, a sentence for people, and specifics."""
    return {"error": error, "detail": detail, **extra}


# -- the documented shapes (OpenAPI) ---------------------------------------------------------


class IntervalOut(BaseModel):
    """A prediction interval: the calibrated bounds at one coverage level."""

    level: float = Field(examples=[0.8])
    lower: list[float]
    upper: list[float]


class ForecastOut(BaseModel):
    """The latest forecast of a key (or a predicted one)."""

    key: str = Field(examples=["pump-17"])
    origin: str = Field(description="start of the last closed interval, ISO-8601 UTC")
    interval: str = Field(examples=["PT1H"])
    interval_s: int
    horizon: int
    targets: list[str] = Field(description="start of each forecast interval")
    values: list[float] = Field(description="point forecasts, original units")
    intervals: list[IntervalOut] = Field(description="empty for an uncalibrated model")
    model: str
    model_version: str
    published_at: str | None = Field(
        default=None, description="when the service published it (absent for /v1/predict)"
    )
    age_s: float | None = Field(default=None, description="seconds since published_at")


class SummaryOut(BaseModel):
    """A key and its latest origin."""

    key: str
    origin: str
    model: str
    model_version: str
    age_s: float


class PageOut(BaseModel):
    """One page of keys; pass ``next_cursor`` as ``cursor`` for the next (null: last)."""

    items: list[SummaryOut]
    next_cursor: str | None


class AlertOut(BaseModel):
    """A drift alert as published on the alerts topic."""

    schema_: int = Field(alias="schema")
    key: str
    ts: str
    kind: str = Field(examples=["error_drift", "input_drift", "recovered"])
    detector: str = Field(examples=["ewma", "ks"])
    statistic: float
    threshold: float
    direction: str
    severity: str
    model: str
    model_version: str
    summary: dict[str, Any] = Field(
        description="recent_residuals (standardised, oldest first), residual_mean, "
        "window_mean, window_std, window: as the detectors publish them"
    )


class AlertsOut(BaseModel):
    """Recent alerts, newest first."""

    items: list[AlertOut]


class FieldError(BaseModel):
    """Which field was wrong and why."""

    field: str = Field(examples=["values[3]"])
    reason: str


class ErrorOut(BaseModel):
    """Every error body."""

    error: str = Field(examples=["not_found"])
    detail: str
    errors: list[FieldError] | None = None
