"""The API's in-memory structures: the latest-per-key view (exact values, bounded keys,
eviction of the least recently updated, a stable cursor), the alert log (bounded per key
and overall) and the event hub (a slow stream loses its oldest events, never blocks)."""

from __future__ import annotations

import asyncio

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamcast.api.alerts import AlertLog
from streamcast.api.events import HEARTBEAT, EventHub
from streamcast.api.view import ForecastView
from streamcast.core.alerts import Alert
from streamcast.core.records import Forecast


def _forecast(key: str, origin: int = 3600, horizon: int = 4, levels: int = 2) -> Forecast:
    rng = np.random.default_rng(abs(hash((key, origin))) % 2**32)
    values = rng.normal(size=horizon)
    lv = tuple(sorted(rng.uniform(0.5, 0.99, size=levels).tolist()))
    lower = values - rng.uniform(1, 2, size=(levels, horizon)) if levels else None
    upper = values + rng.uniform(1, 2, size=(levels, horizon)) if levels else None
    return Forecast(key, origin, 3600, values, "m", f"v{origin}", lv, lower, upper)


def test_the_view_returns_exactly_what_was_put() -> None:
    view = ForecastView()
    for levels in (0, 1, 2):
        fc = _forecast(f"k{levels}", levels=levels)
        assert view.put(fc, published_ms=123, partition=1, offset=levels)
        got = view.get(fc.key)
        assert got is not None
        assert (got.published_ms, got.partition, got.offset) == (123, 1, levels)
        back = got.forecast
        assert (back.key, back.origin_ts, back.interval_s, back.levels) == (
            fc.key, fc.origin_ts, fc.interval_s, fc.levels,
        )  # fmt: skip
        assert (back.model, back.model_version) == ("m", "v3600")
        np.testing.assert_array_equal(back.values, fc.values)
        if levels:
            np.testing.assert_array_equal(back.lower, fc.lower)
            np.testing.assert_array_equal(back.upper, fc.upper)
    assert view.get("absent") is None


def test_a_newer_record_replaces_the_old_one_and_changes_the_etag() -> None:
    view = ForecastView()
    view.put(_forecast("a", 3600), published_ms=1, partition=0, offset=1)
    first = view.get("a")
    assert not view.put(_forecast("a", 7200), published_ms=2, partition=0, offset=2)
    second = view.get("a")
    assert first is not None and second is not None
    assert second.forecast.origin_ts == 7200 and first.etag != second.etag
    assert len(view) == 1 and view.payload_bytes == len(view._rows["a"])


def test_beyond_max_keys_the_least_recently_updated_key_goes() -> None:
    view = ForecastView(max_keys=3)
    for key in "abc":
        view.put(_forecast(key), published_ms=0, partition=0, offset=0)
    view.put(_forecast("a", 7200), published_ms=0, partition=0, offset=1)  # a is fresh again
    view.put(_forecast("d"), published_ms=0, partition=0, offset=2)
    assert sorted(view.keys()) == ["a", "c", "d"] and view.evicted == 1
    assert view.page() == ["a", "c", "d"]
    assert view.payload_bytes == sum(len(v) for v in view._rows.values())
    assert view.remove("c") and not view.remove("c")
    assert view.page() == ["a", "d"] and view.get("c") is None
    assert view.payload_bytes == sum(len(v) for v in view._rows.values())


@settings(max_examples=50, deadline=None)
@given(
    keys=st.sets(st.text(alphabet="ab/-1", min_size=1, max_size=5), max_size=40),
    prefix=st.text(alphabet="ab/", max_size=2),
    limit=st.integers(1, 7),
)
def test_pages_walk_every_key_with_the_prefix_once_in_order(
    keys: set[str], prefix: str, limit: int
) -> None:
    view = ForecastView()
    for key in keys:
        view.put(_forecast(key, levels=0), published_ms=0, partition=0, offset=0)
    seen: list[str] = []
    after = None
    while True:
        page = view.page(prefix, after, limit)
        seen += page
        if len(page) < limit:
            break
        after = page[-1]
        # updates and new keys between pages never make a page repeat or skip a key
        view.put(_forecast(page[0], 7200, levels=0), published_ms=0, partition=0, offset=1)
    assert seen == sorted(k for k in keys if k.startswith(prefix))


def _alert(key: str, ts: int) -> Alert:
    return Alert(key, str(ts), ts, "error_drift", 1.0, 0.5, "up", "warning", "m", "1", "ewma")


def test_alerts_are_bounded_per_key_and_overall() -> None:
    log = AlertLog(per_key=3, total=5)
    for i in range(6):
        log.add(_alert("a", i))
    log.add(_alert("b", 100))
    assert [a.ts_s for a in log.recent(key="a")] == [5, 4, 3]
    assert [a.ts_s for a in log.recent()] == [100, 5, 4, 3]
    for i in range(5):
        log.add(_alert("c", 200 + i))  # pushes every older alert out of the overall bound
    assert log.recent(key="a") == [] and log.recent(key="b") == []
    assert len(log) == 3 and set(log._by_key) == {"c"}  # per_key bounds c itself
    assert [a.ts_s for a in log.recent(since_s=203)] == [204, 203]
    assert len(log.recent(limit=2)) == 2


async def test_a_slow_stream_loses_its_oldest_events_and_closing_ends_every_stream() -> None:
    hub = EventHub(max_streams=2)
    with hub.subscribe("a") as stream:
        assert hub.wants("a") and not hub.wants("b")
        for i in range(100):
            hub.publish("a", f"{i}".encode())
        first = await stream.next(1.0)
        assert first is not None and int(first) == 100 - stream.queue.maxsize
        assert stream.dropped == 100 - stream.queue.maxsize
        while not stream.queue.empty():
            await stream.next(1.0)
        assert await stream.next(0.01) == HEARTBEAT
        hub.close()
        assert await asyncio.wait_for(stream.next(1.0), 1.0) is None
    assert hub.open_streams == 0 and not hub.wants("a")


def test_the_documented_models_describe_what_the_renderers_write() -> None:
    from streamcast.api.documents import (
        AlertOut,
        ForecastOut,
        SummaryOut,
        alert_document,
        forecast_document,
        summary_document,
    )

    view = ForecastView()
    view.put(_forecast("a"), published_ms=1_790_000_000_000, partition=0, offset=3)
    got = view.get("a")
    assert got is not None
    doc = forecast_document(got.forecast, published_ms=got.published_ms, now_s=1_790_000_001)
    assert ForecastOut.model_validate(doc).model_dump() == doc
    assert doc["age_s"] == 1.0 and doc["published_at"] == "2026-09-21T14:13:20.000Z"
    summary = summary_document(view.summary("a"), now_s=1_790_000_001)
    assert SummaryOut.model_validate(summary).model_dump() == summary
    alert = alert_document(_alert("a", 5))
    assert AlertOut.model_validate(alert).model_dump(by_alias=True) == alert
