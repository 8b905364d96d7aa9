"""The batch processor's own guard: a forecast that cannot be encoded is isolated, its
triggering tick dead-lettered ``internal_error``, and the rest of the batch goes out."""

from __future__ import annotations

import numpy as np

from streamcast.core.records import ForecastBatch
from streamcast.errors import RejectReason
from streamcast.service.processor import encode_isolated


def _forecasts(keys: list[str]) -> ForecastBatch:
    n = len(keys)
    return ForecastBatch(
        keys=keys,
        origin_ts=np.full(n, 1_700_000_000, dtype=np.int64),
        values=np.ones((n, 2)),
        model="m",
        model_version="1",
        interval_s=60,
        horizon=2,
        trigger_index=np.arange(10, 10 + n, dtype=np.int64),
    )


def test_a_forecast_that_cannot_be_encoded_is_isolated() -> None:
    encoded, failed = encode_isolated(_forecasts(["a", "\ud800", "c"]))
    assert [e[0] if e else None for e in encoded] == [b"a", None, b"c"]
    assert [(r.index, r.reason) for r in failed] == [(11, RejectReason.INTERNAL_ERROR)]
    assert "UnicodeEncodeError" in failed[0].detail


def test_a_clean_batch_is_encoded_at_once() -> None:
    encoded, failed = encode_isolated(_forecasts(["a", "b"]))
    assert failed == [] and [e[0] for e in encoded if e] == [b"a", b"b"]
