"""Prometheus metrics of the API, and the two ASGI middlewares that measure and bound
requests. The names are a contract with dashboards and alerts.

=========================================== ========= =====================================
name                                        type      meaning
=========================================== ========= =====================================
streamcast_api_requests_total               counter   requests by route (the template, e.g.
{route,method,status}                                 ``/v1/forecasts/{key}``), method, status
streamcast_api_request_seconds{route}       histogram time to the response's first byte
streamcast_api_view_keys                    gauge     keys in the forecast view
streamcast_api_view_bytes                   gauge     payload bytes of the view's entries
streamcast_api_view_lag{topic}              gauge     records behind the topic's end offset
streamcast_api_view_evictions_total         counter   keys evicted (api_max_keys)
streamcast_api_records_total{topic,result}  counter   records read: applied|rejected
streamcast_api_alerts                       gauge     alerts kept
streamcast_api_event_streams                gauge     open event streams
streamcast_api_rate_limited_total           counter   requests answered 429
streamcast_api_model_swaps_total{result}    counter   new artifacts of the model path:
                                                      swapped|refused (POST /v1/predict)
=========================================== ========= =====================================
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class ApiMetrics:
    """The API's metric families, in a private registry (several apps per process: tests)."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "streamcast_api_requests", "Requests by route, method and status",
            ["route", "method", "status"], registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "streamcast_api_request_seconds", "Time to the response's first byte, by route",
            ["route"], buckets=_SECONDS, registry=r,
        )  # fmt: skip
        self.view_keys = Gauge("streamcast_api_view_keys", "Keys in the forecast view", registry=r)
        self.view_bytes = Gauge(
            "streamcast_api_view_bytes", "Payload bytes of the view's entries", registry=r
        )
        self.view_lag = Gauge(
            "streamcast_api_view_lag", "Records behind the topic's end offset", ["topic"],
            registry=r,
        )  # fmt: skip
        self.evictions = Counter(
            "streamcast_api_view_evictions", "Keys evicted from the view (api_max_keys)", registry=r
        )
        self.records = Counter(
            "streamcast_api_records", "Records read from the topics, by result",
            ["topic", "result"], registry=r,
        )  # fmt: skip
        self.alerts = Gauge("streamcast_api_alerts", "Alerts kept", registry=r)
        self.streams = Gauge("streamcast_api_event_streams", "Open event streams", registry=r)
        self.rate_limited = Counter(
            "streamcast_api_rate_limited", "Requests refused by a rate limit (429)", registry=r
        )
        self.model_swaps = Counter(
            "streamcast_api_model_swaps", "New artifacts of the model path, by result",
            ["result"], registry=r,
        )  # fmt: skip

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)


def route_of(scope: Scope) -> str:
    """The route template a request matched (bounded label values), or ``unmatched``."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class MetricsMiddleware:
    """Counts every HTTP request and times it to its first byte (pure ASGI, so streaming
    responses pass straight through)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Measure one request."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def measured(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
                self.metrics.latency.labels(route=route_of(scope)).observe(
                    time.perf_counter() - started
                )
            await send(message)

        try:
            await self.app(scope, receive, measured)
        finally:
            self.metrics.requests.labels(
                route=route_of(scope), method=scope.get("method", ""), status=str(status[0])
            ).inc()


class BodyLimitMiddleware:
    """Refuses request bodies over ``max_bytes`` with 413: by ``Content-Length`` before
    reading anything, and by counting while reading a body sent without one (bodies are
    read here, at most ``max_bytes``, and handed on whole)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Bound one request's body."""
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._refuse(send)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = bytes(message.get("body", b""))
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = [False]

        async def whole() -> Message:
            if not replayed[0]:
                replayed[0] = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, whole, send)

    async def _refuse(self, send: Send) -> None:
        body = orjson.dumps(
            {
                "error": "body_too_large",
                "detail": f"request bodies are limited to {self.max_bytes} bytes "
                "(api_max_body_bytes): post a shorter history",
            }
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})
