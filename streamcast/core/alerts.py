"""Drift alerts: the batch the pipeline produces and the alerts topic's JSON.

One Kafka message per alert, Kafka key = series key, ``"schema": 1``::

    {
      "schema": 1,
      "key": "pump-17",
      "ts": "2026-11-30T14:00:00Z",         # the interval whose actual raised it
      "kind": "error_drift",                # error_drift | input_drift | recovered
      "detector": "ewma",                  # ewma (errors) | ks (inputs)
      "statistic": 13.2, "threshold": 12.0,
      "direction": "up",                    # up: actuals above the forecasts; down
      "severity": "critical",               # info (recovered) | warning | critical
      "model": "pedestrians", "model_version": "20261130T...",
      "summary": {"recent_residuals": [...], "residual_mean": 3.1,
                  "window_mean": 412.0, "window_std": 80.2, "window": 48}
    }

``recent_residuals`` are the key's last standardised one-step residuals (oldest first;
in standard deviations of the model's validation residuals); the window summary is of
the key's last ``window`` interval values in original units. Consumers must ignore
fields they do not know; a change that removes or re-types a field bumps ``schema``.
:func:`decode_alert` is the one reader of this format in streamcast (the API's view): it
keeps an unknown ``kind`` as it is (a newer detector may add one) and refuses a newer
``schema`` with that said.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from streamcast.core.records import iso_seconds, iso_utc
from streamcast.errors import RecordError

ALERT_SCHEMA = 1

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class AlertBatch:
    """Alerts raised by one pipeline call (one row per alert)."""

    keys: list[str]
    ts: IntArray
    kind: list[str]
    detector: list[str]
    statistic: FloatArray
    threshold: FloatArray
    direction: list[str]
    severity: list[str]
    model: str
    model_version: str
    #: input index of the tick whose interval raised it (its partition is the alert's)
    trigger_index: IntArray
    #: [A, R] the key's last standardised residuals, oldest first (NaN: none yet)
    recent: npt.NDArray[np.float32]
    window_mean: FloatArray
    window_std: FloatArray
    window: int

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def empty(cls, model: str, model_version: str, window: int, recent: int) -> AlertBatch:
        """No alerts."""
        none = np.zeros(0, dtype=np.int64)
        return cls(
            [], none, [], [], np.zeros(0), np.zeros(0), [], [], model, model_version, none,
            np.zeros((0, recent), dtype=np.float32), np.zeros(0), np.zeros(0), window,
        )  # fmt: skip

    def take(self, rows: IntArray) -> AlertBatch:
        """The alerts at positions ``rows``."""
        pick = rows.tolist()
        return AlertBatch(
            [self.keys[i] for i in pick], self.ts[rows], [self.kind[i] for i in pick],
            [self.detector[i] for i in pick], self.statistic[rows], self.threshold[rows],
            [self.direction[i] for i in pick], [self.severity[i] for i in pick], self.model,
            self.model_version, self.trigger_index[rows], self.recent[rows],
            self.window_mean[rows], self.window_std[rows], self.window,
        )  # fmt: skip

    @staticmethod
    def concat(parts: list[AlertBatch]) -> AlertBatch:
        """The alerts of ``parts`` (batches of one model), in order."""
        first = parts[0]
        if len(parts) == 1:
            return first
        return AlertBatch(
            [k for p in parts for k in p.keys],
            np.concatenate([p.ts for p in parts]),
            [k for p in parts for k in p.kind],
            [d for p in parts for d in p.detector],
            np.concatenate([p.statistic for p in parts]),
            np.concatenate([p.threshold for p in parts]),
            [d for p in parts for d in p.direction],
            [s for p in parts for s in p.severity],
            first.model,
            first.model_version,
            np.concatenate([p.trigger_index for p in parts]),
            np.concatenate([p.recent for p in parts]),
            np.concatenate([p.window_mean for p in parts]),
            np.concatenate([p.window_std for p in parts]),
            first.window,
        )


def encode_alerts(batch: AlertBatch) -> list[tuple[bytes, bytes]]:
    """``(kafka_key, value)`` per alert in the documented schema (module docstring)."""
    if len(batch) == 0:
        return []
    stamps = iso_utc(batch.ts).tolist()
    out: list[tuple[bytes, bytes]] = []
    for i, key in enumerate(batch.keys):
        recent = batch.recent[i]
        seen = recent[np.isfinite(recent)]
        doc = {
            "schema": ALERT_SCHEMA,
            "key": key,
            "ts": stamps[i],
            "kind": batch.kind[i],
            "detector": batch.detector[i],
            "statistic": round(float(batch.statistic[i]), 4),
            "threshold": float(batch.threshold[i]),
            "direction": batch.direction[i],
            "severity": batch.severity[i],
            "model": batch.model,
            "model_version": batch.model_version,
            "summary": {
                "recent_residuals": [round(float(v), 3) for v in seen.tolist()],
                "residual_mean": round(float(seen.mean()), 4) if len(seen) else None,
                "window_mean": float(batch.window_mean[i]),
                "window_std": float(batch.window_std[i]),
                "window": batch.window,
            },
        }
        out.append((key.encode("utf-8"), orjson.dumps(doc)))
    return out


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert record, decoded (:func:`decode_alert`)."""

    key: str
    #: the event time as published, and as epoch seconds
    ts: str
    ts_s: int
    kind: str
    statistic: float
    threshold: float
    direction: str
    severity: str
    model: str
    model_version: str
    detector: str = ""
    #: the record's ``summary`` object as published
    summary: dict[str, Any] = field(default_factory=dict)
    schema: int = ALERT_SCHEMA

    def document(self) -> dict[str, object]:
        """The alert as a JSON object in the wire format."""
        return {
            "schema": self.schema,
            "key": self.key,
            "ts": self.ts,
            "kind": self.kind,
            "detector": self.detector,
            "statistic": self.statistic,
            "threshold": self.threshold,
            "direction": self.direction,
            "severity": self.severity,
            "model": self.model,
            "model_version": self.model_version,
            "summary": self.summary,
        }


def decode_alert(value: bytes | None, kafka_key: bytes | None = None) -> Alert:
    """Parse one alert record (module docstring); :class:`~streamcast.errors.RecordError`
    naming the field and the problem otherwise.

    >>> a = decode_alert(b'{"schema": 1, "key": "k", "ts": "2026-01-01T00:00:00Z", '
    ...     b'"kind": "input_drift", "detector": "ks", "statistic": 5, "threshold": 3.0, '
    ...     b'"direction": "up", "severity": "warning", "model": "m", "model_version": "1", '
    ...     b'"summary": {"window": 48}}')
    >>> a.kind, a.ts_s, a.statistic, a.summary
    ('input_drift', 1767225600, 5.0, {'window': 48})
    """
    if not value:
        raise RecordError("empty record: an alert is a JSON object")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as err:
        raise RecordError(f"not JSON: {err}") from None
    if not isinstance(doc, dict):
        raise RecordError(f"an alert is a JSON object, got a JSON {type(doc).__name__}")
    schema = doc.get("schema")
    if type(schema) is not int or schema != ALERT_SCHEMA:
        newer = type(schema) is int and schema > ALERT_SCHEMA
        raise RecordError(
            f"schema: alert schema {schema!r} "
            + (
                f"is newer than this reader understands ({ALERT_SCHEMA}): upgrade streamcast"
                if newer
                else f"is not supported (expected {ALERT_SCHEMA})"
            )
        )
    key = _text(doc, "key")
    if kafka_key is not None and kafka_key != key.encode("utf-8"):
        raise RecordError(f"key: {key!r} differs from the Kafka message key {kafka_key!r}")
    ts = _text(doc, "ts")
    summary = doc.get("summary", {})
    if not isinstance(summary, dict):
        raise RecordError(f"summary: expected a JSON object, got {summary!r:.40}")
    return Alert(
        key=key,
        ts=ts,
        ts_s=iso_seconds(ts, "ts"),
        kind=_text(doc, "kind"),
        statistic=_number(doc, "statistic"),
        threshold=_number(doc, "threshold"),
        direction=_text(doc, "direction", empty=True),
        severity=_text(doc, "severity"),
        model=_text(doc, "model", empty=True),
        model_version=_text(doc, "model_version", empty=True),
        detector=_text(doc, "detector", empty=True) if "detector" in doc else "",
        summary=summary,
    )


def _text(doc: dict[str, object], name: str, *, empty: bool = False) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or (not value and not empty):
        what = "a string" if empty else "a non-empty string"
        raise RecordError(f"{name}: expected {what}, got {value!r}")
    return value


def _number(doc: dict[str, object], name: str) -> float:
    value = doc.get(name)
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise RecordError(f"{name}: expected a finite number, got {value!r}")
    return float(value)
