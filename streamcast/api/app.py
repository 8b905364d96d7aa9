"""The FastAPI application: routes, auth and rate limits, errors, the page.

``create_app`` wires an :class:`ApiContext` (the view, alert log, event hub, feed,
predictor, authenticator, buckets, metrics: everything built once by
:mod:`streamcast.api.server`) into the routes. Nothing here touches Kafka: the feed fills
the view in the background and the routes only read it.

Every error body is ``{"error": code, "detail": sentence, ...}``; request validation
errors are 422 with ``errors: [{"field", "reason"}]``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from streamcast import __version__
from streamcast.api.alerts import AlertLog
from streamcast.api.auth import (
    SCOPE_PREDICT,
    SCOPE_READ,
    Authenticator,
    AuthError,
    Principal,
    require,
)
from streamcast.api.documents import (
    AlertsOut,
    ErrorOut,
    ForecastOut,
    PageOut,
    alert_document,
    error_document,
    forecast_document,
    latest_json,
    summary_document,
)
from streamcast.api.events import EventHub, TooManyStreamsError
from streamcast.api.feed import ViewFeed
from streamcast.api.limits import TokenBuckets
from streamcast.api.metrics import ApiMetrics, BodyLimitMiddleware, MetricsMiddleware
from streamcast.api.models import ModelFollower
from streamcast.api.predict import PredictError, Predictor, PredictRequest
from streamcast.api.view import ForecastView
from streamcast.config import ApiSettings
from streamcast.core.codec import parse_timestamp_ms


@dataclass
class ApiContext:
    """What the routes read: built once at startup."""

    settings: ApiSettings
    view: ForecastView
    alerts: AlertLog
    hub: EventHub
    feed: ViewFeed
    auth: Authenticator
    buckets: TokenBuckets
    metrics: ApiMetrics
    predictor: Predictor | None
    #: keeps the predictor on the model path's newest good artifact (None: no model)
    models: ModelFollower | None = None


class ApiError(Exception):
    """An answer other than 2xx: status, code, sentence, headers and extra fields."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        headers: dict[str, str] | None = None,
        **extra: object,
    ) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.headers = headers or {}
        self.extra = extra


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "missing, invalid or expired token"},
    403: {"model": ErrorOut, "description": "the token lacks the scope"},
    429: {"model": ErrorOut, "description": "over the client's rate limit (see Retry-After)"},
}
#: how /docs shows the bearer token (checked by :func:`_guard`, not by a FastAPI
#: security dependency: one dependency less to solve per request on the hot path)
_BEARER = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
_SECURED: dict[str, Any] = {"security": [{"bearer": []}]}


def create_app(ctx: ApiContext) -> FastAPI:
    """The application serving ``ctx`` (module docstring)."""
    app = FastAPI(
        title="streamcast forecast API",
        version=__version__,
        description="The latest forecast of every key, its alerts and a live event stream, "
        "and stateless predictions from the model the service runs.",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.ctx = ctx
    _errors(app)

    _forecast_routes(app, ctx)
    _alert_and_predict_routes(app, ctx)
    _operations(app, ctx)
    _document_bearer(app)
    return _wrap(app, ctx)


def _document_bearer(app: FastAPI) -> None:
    """Declare the bearer scheme in the OpenAPI document (the routes reference it)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
                **_BEARER,
                "description": "a JWT from the configured issuer, with the scope "
                "forecasts:read (reads, events) or predict",
            }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _forecast_routes(app: FastAPI, ctx: ApiContext) -> None:
    """``/v1/forecasts``: the listing, a key's latest forecast and its event stream."""
    read = [_guard(ctx, SCOPE_READ)]

    stream_responses: dict[int | str, dict[str, Any]] = {
        200: {"content": {"text/event-stream": {}}, "description": "an event stream"},
        503: {"model": ErrorOut, "description": "api_max_streams are open (see Retry-After)"},
        **_ERRORS,
    }

    @app.get(
        "/v1/events/{key:path}",
        dependencies=read,
        openapi_extra=_SECURED,
        tags=["forecasts"],
        responses=stream_responses,
        summary="Server-sent events of a key: each new forecast and alert",
        description="`event: forecast` carries the forecast document of GET "
        "/v1/forecasts/{key}, `event: alert` an alert; a comment line every "
        "api_heartbeat_s keeps idle streams open. Any key, also one ending in `/events`.",
    )
    async def events(key: str) -> StreamingResponse:
        return _event_stream(ctx, key)

    @app.get(
        "/v1/forecasts/{key:path}/events",
        dependencies=read,
        openapi_extra=_SECURED,
        tags=["forecasts"],
        responses=stream_responses,
        summary="The event stream of a key (the older URL of GET /v1/events/{key})",
        description="The event stream of `{key}`, unless the view holds a key that is the "
        "whole path, `{key}/events`: then that key's latest forecast, as GET "
        "/v1/forecasts/{key} answers it. GET /v1/events/{key} is never ambiguous.",
    )
    async def events_of_forecasts(key: str, request: Request) -> Response:
        whole = f"{key}/events"
        if whole in ctx.view:
            return _latest(ctx, whole, request)
        return _event_stream(ctx, key)

    @app.get(
        "/v1/forecasts/{key:path}",
        dependencies=read,
        openapi_extra=_SECURED,
        tags=["forecasts"],
        response_model=ForecastOut,
        responses={
            304: {"description": "not modified (If-None-Match)"},
            404: {"model": ErrorOut},
            **_ERRORS,
        },
        summary="The latest forecast of a key",
    )
    async def latest(key: str, request: Request) -> Response:
        return _latest(ctx, key, request)

    @app.get(
        "/v1/forecasts",
        dependencies=read,
        openapi_extra=_SECURED,
        tags=["forecasts"],
        response_model=PageOut,
        responses={422: {"model": ErrorOut}, **_ERRORS},
        summary="Keys with their latest origin, in key order, a page at a time",
    )
    async def listing(
        prefix: Annotated[
            str, Query(max_length=256, description="only keys starting with this")
        ] = "",
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    ) -> Response:
        after = _decode_cursor(cursor) if cursor else None
        keys = ctx.view.page(prefix, after, limit + 1)
        more = len(keys) > limit
        keys = keys[:limit]
        now = time.time()
        items = [summary_document(ctx.view.summary(k), now) for k in keys]
        next_cursor = _encode_cursor(keys[-1]) if more and keys else None
        return Response(
            orjson.dumps({"items": items, "next_cursor": next_cursor}),
            media_type="application/json",
        )


#: the longest key an error body repeats (the query's ``key`` is refused beyond it)
ECHO_KEY_CHARS = 256


def _latest(ctx: ApiContext, key: str, request: Request) -> Response:
    """The key's latest forecast (ETag, 304 on a matching If-None-Match); 404 if none."""
    got = ctx.view.get(key)
    if got is None:
        shown = key
        if len(key) > ECHO_KEY_CHARS:
            shown = key[:ECHO_KEY_CHARS] + "..."
        raise ApiError(
            404, "not_found",
            f"no forecast for key {shown!r}"
            + (f" ({len(key)} characters)" if shown != key else "")
            + f": the view holds {len(ctx.view)} keys; a key appears after the service "
            "publishes its first forecast (see GET /v1/forecasts)",
            key=shown,
        )  # fmt: skip
    etag = got.etag
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if _matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(latest_json(got), media_type="application/json", headers=headers)


class _EventStreamResponse(StreamingResponse):
    """A streaming response that gives its stream's slot back once it is done with,
    however it ends (sent whole, the client gone, the server stopping)."""

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], None]) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def _event_stream(ctx: ApiContext, key: str) -> StreamingResponse:
    """The event stream of ``key``; 503 ``too_many_streams`` when api_max_streams are open.

    The stream is subscribed before the answer starts, so the limit is checked by the
    subscription itself: two requests racing for the last slot get one stream and one
    503, never a 200 with an empty body."""
    slot = contextlib.ExitStack()
    try:
        stream = slot.enter_context(ctx.hub.subscribe(key))
    except TooManyStreamsError:
        raise ApiError(
            503, "too_many_streams",
            f"{ctx.hub.open_streams} event streams are open (api_max_streams): retry later",
            {"Retry-After": "5"},
        ) from None  # fmt: skip
    ctx.metrics.streams.set(ctx.hub.open_streams)

    def release() -> None:
        slot.close()
        ctx.metrics.streams.set(ctx.hub.open_streams)

    heartbeat = ctx.settings.api_heartbeat_s

    async def frames() -> AsyncIterator[bytes]:
        yield b"retry: 2000\n\n"
        while (frame := await stream.next(heartbeat)) is not None:
            yield frame

    return _EventStreamResponse(frames(), release)


def _alert_and_predict_routes(app: FastAPI, ctx: ApiContext) -> None:
    """``/v1/alerts`` and ``/v1/predict``."""

    @app.get(
        "/v1/alerts",
        dependencies=[_guard(ctx, SCOPE_READ)],
        openapi_extra=_SECURED,
        tags=["alerts"],
        response_model=AlertsOut,
        responses={422: {"model": ErrorOut}, **_ERRORS},
        summary="Recent alerts, newest first",
    )
    async def alerts(
        key: Annotated[str | None, Query(max_length=256)] = None,
        since: Annotated[str | None, Query(description="ISO-8601 or epoch seconds")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> Response:
        since_s = None
        if since is not None:
            try:
                since_s = parse_timestamp_ms(since) / 1000
            except (ValueError, TypeError, OverflowError):  # a 400-digit epoch overflows
                raise ApiError(
                    422, "invalid_request", f"since: {since[:64]!r} is not a timestamp",
                    errors=[{"field": "since", "reason": "ISO-8601 or epoch seconds"}],
                ) from None  # fmt: skip
        found = ctx.alerts.recent(key=key, since_s=since_s, limit=limit)
        body = {"items": [alert_document(a) for a in found]}
        return Response(orjson.dumps(body), media_type="application/json")

    @app.post(
        "/v1/predict",
        dependencies=[_guard(ctx, SCOPE_PREDICT)],
        openapi_extra=_SECURED,
        tags=["predict"],
        response_model=ForecastOut,
        responses={
            413: {"model": ErrorOut},
            422: {"model": ErrorOut},
            503: {"model": ErrorOut},
            **_ERRORS,
        },
        summary="Forecast a posted history with the service's model (stateless)",
    )
    async def predict(history: PredictRequest) -> Response:
        if ctx.predictor is None:
            raise ApiError(
                503, "predict_unavailable",
                "no model configured: set STREAMCAST_MODEL_PATH to the model the service serves",
            )  # fmt: skip
        try:
            fc = await ctx.predictor.predict_async(history)
        except PredictError as err:
            raise ApiError(
                422, "invalid_history", f"{err.field}: {err.reason}",
                errors=[{"field": err.field, "reason": err.reason}],
            ) from None  # fmt: skip
        return Response(orjson.dumps(forecast_document(fc)), media_type="application/json")


def _guard(ctx: ApiContext, scope: str) -> Any:
    """The dependency that lets a request through: a valid token with ``scope`` (any
    request when auth is off) and a token left in the client's bucket. The bucket is
    charged first, so a client guessing tokens is limited like any other."""

    async def check(request: Request) -> Principal:
        principal: Principal | None = None
        failure: AuthError | None = None
        try:
            principal = ctx.auth.authenticate(request.headers.get("authorization"))
            require(principal, scope)
        except AuthError as err:
            failure = err
        if principal is not None and principal.subject:
            client = f"sub:{principal.subject}"
        else:
            client = f"ip:{request.client.host if request.client else 'unknown'}"
        wait = ctx.buckets.take(client)
        if wait > 0:
            ctx.metrics.rate_limited.inc()
            raise ApiError(
                429, "rate_limited",
                f"over the rate limit of {ctx.settings.api_rate_per_s:g} requests/s "
                f"(burst {ctx.settings.api_rate_burst}); retry after Retry-After seconds",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )  # fmt: skip
        if failure is not None:
            raise ApiError(
                failure.status, failure.code, failure.detail,
                {"WWW-Authenticate": failure.challenge},
            )  # fmt: skip
        assert principal is not None
        return principal

    return Depends(check)


#: the page talks to its own origin only, is never framed, and runs only its own script
_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _operations(app: FastAPI, ctx: ApiContext) -> None:
    """Probes, metrics and the page: no auth, no rate limit."""
    page = resources.files("streamcast.api").joinpath("static/index.html").read_bytes()

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers=_PAGE_HEADERS)

    @app.get("/healthz", tags=["operations"], summary="200 while the process serves")
    async def healthz() -> Response:
        return Response(b"ok\n", media_type="text/plain")

    @app.get("/readyz", tags=["operations"], summary="200 once the view caught up with the topics")
    async def readyz() -> Response:
        ready, reason = ctx.feed.readiness()
        return Response(
            (reason + "\n").encode(), status_code=200 if ready else 503, media_type="text/plain"
        )

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(ctx.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def _wrap(app: FastAPI, ctx: ApiContext) -> FastAPI:
    if ctx.settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=ctx.settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "If-None-Match"],
            expose_headers=["ETag", "Retry-After"],
            max_age=600,
        )
    app.add_middleware(BodyLimitMiddleware, max_bytes=ctx.settings.api_max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=ctx.metrics)
    return app


def _errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            error_document(exc.code, exc.detail, **exc.extra), exc.status, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": _field(err.get("loc", ())), "reason": str(err.get("msg", "invalid"))}
            for err in exc.errors()
        ]
        first = errors[0] if errors else {"field": "body", "reason": "invalid"}
        detail = f"{first['field']}: {first['reason']}"
        return JSONResponse(error_document("invalid_request", detail, errors=errors), 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # Starlette's and FastAPI's own answers (no route, a method the route does not
        # take, a body that does not parse) in the documented shape
        status, headers = exc.status_code, dict(exc.headers or {})
        if status < 400:  # pragma: no cover - not raised by the routes here
            return Response(status_code=status, headers=headers)
        code, detail = _HTTP_ERRORS.get(status, ("http_error", str(exc.detail)))
        allow = next((v for h, v in headers.items() if h.lower() == "allow"), None)
        if status == 405 and allow:
            detail = f"{request.method} is not allowed here: use {allow}"
        return JSONResponse(error_document(code, detail), status, headers=headers)


#: what the app says for Starlette's own errors: (code, sentence)
_HTTP_ERRORS: dict[int, tuple[str, str]] = {
    400: (
        "invalid_request",
        "body: not JSON this API can read: send uncompressed UTF-8 JSON (no "
        "Content-Encoding), without numbers thousands of digits long or nesting that deep",
    ),
    404: ("not_found", "no such endpoint: see /docs for the API's endpoints"),
    405: ("method_not_allowed", "the endpoint does not take this method (see Allow)"),
}


def _field(loc: tuple[object, ...] | list[object]) -> str:
    """``("body", "values", 3)`` -> ``values[3]``."""
    parts = [p for p in loc if p not in ("body", "query", "path")]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def _matches(if_none_match: str | None, etag: str) -> bool:
    """Weak comparison (RFC 9110) of ``If-None-Match`` against ``etag``."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == bare for tag in if_none_match.split(","))


def _encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    key = ""
    padded = cursor + "=" * (-len(cursor) % 4)
    with contextlib.suppress(binascii.Error, UnicodeDecodeError, ValueError):
        key = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    if not key:
        raise ApiError(
            422, "invalid_request", "cursor: not a cursor this API returned (use next_cursor)",
            errors=[{"field": "cursor", "reason": "not a cursor this API returned"}],
        )  # fmt: skip
    return key
