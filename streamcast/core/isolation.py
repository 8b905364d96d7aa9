"""A bug in the pipeline must never become a crash loop: isolate the keys that make a
batch fail, dead-letter their ticks, and step every other key as if nothing happened.

:func:`isolated` runs one attempt at advancing a batch. If it raises — any exception:
a numeric edge case, an ONNX Runtime error, a bug of ours — the rows it may have written
are put back exactly as they were before the attempt (the state store exports the batch's
rows first: about 1 KB per key, copied once per batch), the batch is split in two halves
by key and each half is tried again, recursively. A key that fails on its own has all
its ticks of the batch rejected with :attr:`~streamcast.errors.RejectReason.INTERNAL_ERROR`
and the exception text; its state stays what it was before the batch. Keys are
independent in the pipeline, so the other keys' forecasts are exactly those of a batch
without the failing key. A failure costs ``O(k log n)`` extra attempts for ``k`` failing
keys among ``n``; a batch that does not fail costs one export of its rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from streamcast.core.alerts import AlertBatch
from streamcast.core.records import Counters, ForecastBatch, Rejection, TickBatch
from streamcast.core.state import StateStore
from streamcast.errors import RejectReason

IntArray = npt.NDArray[np.int64]

#: longest exception text carried into a dead letter's detail
MAX_ERROR_TEXT = 240


@dataclass
class Attempt:
    """What advancing (part of) a batch produced."""

    forecasts: ForecastBatch
    rejections: list[Rejection]
    #: event counts of the attempt (``internal_errors``: keys isolated because they raised)
    counters: Counters = field(default_factory=Counters)
    #: keys whose state the attempt changed
    changed: set[str] = field(default_factory=set)
    #: drift alerts the attempt raised
    alerts: AlertBatch | None = None


Advance = Callable[[TickBatch, IntArray], Attempt]


def isolated(
    store: StateStore,
    batch: TickBatch,
    rows: IntArray,
    advance: Advance,
    empty: Callable[[], ForecastBatch],
) -> Attempt:
    """``advance(batch, rows)``, or, if it raises, the same over halves of the batch's keys
    with the failing keys' ticks rejected (see the module docstring). ``rows[i]`` is the
    state row of tick ``i``."""
    key_rows = np.unique(rows)
    before = store.export_rows(key_rows)
    try:
        return advance(batch, rows)
    except Exception as exc:  # noqa: BLE001 - isolating *any* bug is the point
        store.write_rows(key_rows, before)
        if len(key_rows) == 1:
            text = " ".join(f"{type(exc).__name__}: {exc}".split())[:MAX_ERROR_TEXT]
            detail = f"processing raised {text}; the key's state was kept as before the batch"
            rejections = [
                Rejection(int(i), RejectReason.INTERNAL_ERROR, detail) for i in batch.index
            ]
            failure = Counters(internal_errors=1)
            failure.rejected[RejectReason.INTERNAL_ERROR] = len(rejections)
            return Attempt(empty(), rejections, failure)
    first = np.isin(rows, key_rows[: len(key_rows) // 2])
    parts = [
        isolated(store, batch.take(np.flatnonzero(half)), rows[half], advance, empty)
        for half in (first, ~first)
    ]
    return merge(parts)


def merge(parts: list[Attempt]) -> Attempt:
    """One attempt from several over disjoint keys; forecasts in trigger then time order
    (taken in that order only when they are not in it already: a lone part's are, and a
    copy of 10,000 forecasts with their bands costs ~3 ms)."""
    forecasts = ForecastBatch.concat([p.forecasts for p in parts])
    order = np.lexsort((forecasts.origin_ts, forecasts.trigger_index))
    if not np.array_equal(order, np.arange(len(order))):
        forecasts = forecasts.take(order)
    counters = Counters()
    for part in parts:
        counters.add(part.counters)
    return Attempt(
        forecasts=forecasts,
        rejections=sorted((r for p in parts for r in p.rejections), key=lambda r: r.index),
        counters=counters,
        changed=set().union(*(p.changed for p in parts)),
        alerts=_merged_alerts([p.alerts for p in parts]),
    )


def _merged_alerts(parts: list[AlertBatch | None]) -> AlertBatch | None:
    present = [p for p in parts if p is not None and len(p)]
    if not present:
        return next((p for p in parts if p is not None), None)
    alerts = AlertBatch.concat(present)
    return alerts.take(np.lexsort((alerts.ts, alerts.trigger_index)))
