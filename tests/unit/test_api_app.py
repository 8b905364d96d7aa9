"""The API's routes without a broker (the app on httpx's ASGI transport, or on uvicorn in
process where a real connection matters): auth challenges that stay well-formed whatever
a token says, a feed that survives garbage records, the event-stream limit, error bodies
of the documented shape, and keys that end in ``/events``."""

from __future__ import annotations

import asyncio
import base64
import gzip
import time
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from streamcast.api.app import ApiContext, create_app
from streamcast.api.server import build_context
from streamcast.core.records import Forecast, ForecastBatch, encode_forecasts
from streamcast.kafka.wire import InRecord
from tests.support.api import ListFollower, api_in_process, api_settings

ORIGIN = 1_790_000_000 // 3600 * 3600


def _app(**overrides: Any) -> tuple[ApiContext, ListFollower, Any]:
    follower = ListFollower()
    ctx = build_context(api_settings(**overrides), lambda: follower)
    return ctx, follower, create_app(ctx)


async def _call(app: Any, method: str, url: str, **kw: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.request(method, url, **kw)


def _is_error_body(response: httpx.Response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("error"), str) and "detail" in body


def _put(ctx: ApiContext, key: str) -> None:
    fc = Forecast(key, ORIGIN, 3600, np.array([1.0, 2.0]), "m", "1")
    ctx.view.put(fc, published_ms=ORIGIN * 1000, partition=0, offset=1)


# -- WWW-Authenticate ------------------------------------------------------------------


def _crit_token(crit: str) -> str:
    """An unsigned token whose header names ``crit``: PyJWT quotes it in its error."""
    head = orjson.dumps({"alg": "HS256", "crit": [crit]})
    return base64.urlsafe_b64encode(head).rstrip(b"=").decode() + ".e30.c2ln"


@pytest.mark.parametrize("crit", ["€", "x\u2028y", 'x", error="forged', "x\\", "a" * 5000])
async def test_the_challenge_stays_one_well_formed_ascii_header(crit: str) -> None:
    _, _, app = _app()
    auth = {"Authorization": f"Bearer {_crit_token(crit)}"}
    response = await _call(app, "GET", "/v1/forecasts/a", headers=auth)
    assert response.status_code == 401, response.text[:200]
    assert _is_error_body(response) and response.json()["error"] == "invalid_token"
    challenge = response.headers["www-authenticate"]
    assert challenge.isascii() and len(challenge) < 400, challenge
    assert challenge.count("error=") == 1 and challenge.count('"') % 2 == 0, challenge
    description = challenge.split('error_description="', 1)[1].rsplit('"', 1)[0]
    assert '"' not in description and "\\" not in description, challenge
    assert len(response.json()["detail"]) < 400


async def test_a_crlf_in_a_token_over_real_http_is_a_plain_401() -> None:
    async with api_in_process(api_settings()) as api:
        auth = {"Authorization": "Bearer " + _crit_token("x\r\nSet-Cookie: a=b")}
        response = await api.client.get("/v1/forecasts/a", headers=auth)
    assert response.status_code == 401 and "set-cookie" not in response.headers


# -- the feed --------------------------------------------------------------------------


def _record(**change: Any) -> tuple[bytes, bytes]:
    batch = ForecastBatch(
        ["k"], np.array([ORIGIN]), np.array([[1.0, 2.0]]), "m", "1", 3600, 2, np.array([0])
    )
    key, value = encode_forecasts(batch)[0]
    doc = orjson.loads(value)
    doc.update(change)
    return key, orjson.dumps(doc)


BEYOND_THE_VIEW: dict[str, dict[str, Any]] = {
    "interval_s": {"interval_s": 2**31},
    "horizon": {"horizon": 70_000, "values": [1.0] * 70_000},
    "levels": {
        "levels": [(i + 1) / 300 for i in range(256)],
        "lower": [[0.0, 1.0]] * 256,
        "upper": [[2.0, 3.0]] * 256,
    },
}


def _apply(ctx: ApiContext, records: list[tuple[bytes, bytes]]) -> None:
    """Feed ``(key, value)`` records to the view as forecasts-topic partition 0, offsets
    0, 1, ... (a catch-up, not live)."""
    now = int(time.time() * 1000)
    ctx.feed.apply(
        [InRecord("forecasts", 0, i, now, k, v) for i, (k, v) in enumerate(records)],
        live=False,
    )


@pytest.mark.parametrize("field", sorted(BEYOND_THE_VIEW))
def test_a_forecast_beyond_what_the_view_stores_is_rejected_not_fatal(field: str) -> None:
    ctx, _, _ = _app(api_auth="off")
    good_key, good = _record()
    bad_key, bad = _record(**BEYOND_THE_VIEW[field])
    _apply(ctx, [(bad_key, bad), (good_key, good)])
    got = ctx.view.get("k")
    assert got is not None and got.offset == 1
    exposition = ctx.metrics.exposition().decode()
    assert 'streamcast_api_records_total{result="rejected",topic="forecasts"} 1.0' in exposition


def test_an_unexpected_failure_applying_a_record_is_counted_and_skipped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ctx, _, _ = _app(api_auth="off")
    key, value = _record()
    put = ctx.view.put

    def failing(fc: Forecast, **kw: int) -> bool:
        if kw["offset"] == 0:
            raise ZeroDivisionError("a bug")
        return put(fc, **kw)

    monkeypatch.setattr(ctx.view, "put", failing)
    _apply(ctx, [(key, value), (key, value)])
    got = ctx.view.get("k")
    assert got is not None and got.offset == 1
    assert 'result="rejected",topic="forecasts"} 1.0' in ctx.metrics.exposition().decode()


async def test_the_feed_keeps_running_past_a_garbage_record() -> None:
    ctx, follower, _ = _app(api_auth="off")
    follower.feed("forecasts", [_record(interval_s=2**31), _record()])
    stopping = asyncio.Event()
    task = asyncio.create_task(ctx.feed.run(stopping))
    for _ in range(100):
        if ctx.feed.ready or task.done():
            break
        await asyncio.sleep(0.01)
    assert not task.done() and ctx.feed.ready and ctx.view.get("k") is not None
    stopping.set()
    await asyncio.wait_for(task, 5)


# -- event streams ---------------------------------------------------------------------


async def test_streams_over_the_limit_get_503_with_retry_after_never_an_empty_200() -> None:
    """One stream holds the only slot (it is open until the others have answered, so the
    outcome does not depend on timing): five more at once each get 503 with Retry-After,
    never an empty 200; once it closes, the slot is free for the next."""
    settings = api_settings(api_auth="off", api_max_streams=1, api_heartbeat_s=0.2)
    async with (
        api_in_process(settings) as api,
        httpx.AsyncClient(base_url=api.url, timeout=5) as client,
    ):

        async def refused(i: int) -> tuple[int, bytes, httpx.Headers]:
            async with client.stream("GET", f"/v1/events/k{i}") as response:
                return response.status_code, await response.aread(), response.headers

        async def first_bytes(key: str) -> tuple[int, bytes]:
            async with client.stream("GET", f"/v1/events/{key}") as response:
                return response.status_code, await anext(response.aiter_bytes())

        async with client.stream("GET", "/v1/events/held") as held:
            assert held.status_code == 200
            assert (await anext(held.aiter_bytes())).startswith(b"retry: ")
            results = await asyncio.gather(*(refused(i) for i in range(5)))
            assert api.ctx.hub.open_streams == 1
        for status, body, headers in results:
            assert status == 503, (status, body)
            assert orjson.loads(body)["error"] == "too_many_streams"
            assert headers["retry-after"] == "5"
        for _ in range(100):  # the held stream's slot is freed as its response ends
            if api.ctx.hub.open_streams == 0:
                break
            await asyncio.sleep(0.02)
        status, body = await first_bytes("next")
        assert status == 200 and body.startswith(b"retry: ")


async def test_a_key_ending_in_events_can_be_read_and_streamed() -> None:
    ctx, _, app = _app(api_auth="off")
    _put(ctx, "site/events")
    for path in ("/v1/forecasts/site/events", "/v1/forecasts/site%2Fevents"):
        response = await _call(app, "GET", path)
        assert response.status_code == 200, (path, response.text[:200])
        assert response.json()["key"] == "site/events"
        assert response.headers["etag"]
    ctx.hub.close()  # every stream ends at once: the answers below are whole
    for path in ("/v1/events/site/events", "/v1/events/site%2Fevents", "/v1/events/site",
                 "/v1/forecasts/other/events"):  # fmt: skip
        response = await _call(app, "GET", path)
        assert response.status_code == 200, (path, response.text[:200])
        assert response.headers["content-type"].startswith("text/event-stream"), path
        assert response.content.startswith(b"retry: ")


# -- error bodies ----------------------------------------------------------------------


async def test_alerts_since_a_huge_integer_is_422_on_since() -> None:
    _, _, app = _app(api_auth="off")
    response = await _call(app, "GET", "/v1/alerts", params={"since": "1" + "0" * 400})
    assert response.status_code == 422, response.text[:200]
    assert response.json()["errors"] == [{"field": "since", "reason": "ISO-8601 or epoch seconds"}]


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b'{"key":"k","timestamps":[1],"values":[' + b"9" * 5000 + b"]}", {}),
        (b'{"timestamps": ' + b"[" * 100_000 + b"]" * 100_000 + b', "values": [1.0]}', {}),
        (b'{"key": "\xff\xfe"}', {}),
        (gzip.compress(b'{"timestamps": [1], "values": [1.0]}'), {"content-encoding": "gzip"}),
    ],
    ids=["long-number", "deep", "not-utf8", "gzip"],
)
async def test_a_body_that_does_not_parse_is_400_with_the_error_body(
    body: bytes, headers: dict[str, str]
) -> None:
    _, _, app = _app(api_auth="off")
    headers = {"content-type": "application/json", **headers}
    response = await _call(app, "POST", "/v1/predict", content=body, headers=headers)
    assert response.status_code == 400, response.text[:200]
    assert _is_error_body(response) and response.json()["error"] == "invalid_request"


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v1/nope", 404, "not_found"),
        ("GET", "/v1/predict", 405, "method_not_allowed"),
        ("DELETE", "/v1/forecasts/a", 405, "method_not_allowed"),
    ],
)
async def test_unknown_routes_and_wrong_methods_use_the_error_body(
    method: str, path: str, status: int, code: str
) -> None:
    _, _, app = _app(api_auth="off")
    response = await _call(app, method, path)
    assert response.status_code == status and response.json()["error"] == code, response.text
    assert _is_error_body(response)
    if status == 405:
        assert response.headers["allow"]


async def test_the_404_of_a_very_long_key_does_not_echo_it_whole() -> None:
    _, _, app = _app(api_auth="off")
    response = await _call(app, "GET", "/v1/forecasts/" + "k" * 60_000)
    assert response.status_code == 404 and len(response.content) < 2_000, len(response.content)
    body = response.json()
    assert body["error"] == "not_found" and body["key"].startswith("k" * 200)
    short = (await _call(app, "GET", "/v1/forecasts/pump-1")).json()
    assert short["key"] == "pump-1" and "'pump-1'" in short["detail"]
