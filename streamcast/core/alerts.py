"""Drift alerts: the batch the pipeline produces and the alerts topic's JSON.

One Kafka message per alert, Kafka key = series key, ``"schema": 1``::

    {
      "schema": 1,
      "key": "pump-17",
      "ts": "2026-11-30T14:00:00Z",         # the interval whose actual raised it
      "kind": "error_drift",                # error_drift | input_drift | recovered
      "detector": "cusum",                  # cusum (errors) | ks (inputs)
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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import orjson

from streamcast.core.records import iso_utc

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
