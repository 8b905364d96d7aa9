"""A tiny asyncio HTTP server for ``/metrics``, ``/healthz`` and ``/readyz``.

No web framework: the three endpoints answer GET with ``Connection: close``, which is all
a Prometheus scraper and a Kubernetes probe need.

- ``/healthz``: 200 while the process runs its event loop.
- ``/readyz``: 200 when the readiness callback says so; 503 with its reason otherwise.
- ``/metrics``: the Prometheus text exposition.

A request line or header longer than :data:`MAX_LINE_BYTES`, or more than
:data:`MAX_HEADERS` header lines, is answered ``431`` (one debug line), never a traceback.

An address it cannot listen on (a host that does not resolve or is not this machine's, a
port in use or privileged) is a :class:`~streamcast.errors.ConfigurationError` naming the
address and the setting to change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Self

from prometheus_client import CONTENT_TYPE_LATEST

from streamcast.core.listening import cannot_listen

log = logging.getLogger(__name__)

#: readiness callback: ``(ready, reason)``
Readiness = Callable[[], tuple[bool, str]]

_REASONS = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}
#: longest request or header line read (asyncio's stream limit); longer ones get 431
MAX_LINE_BYTES = 16 * 1024
#: most header lines read; more get 431
MAX_HEADERS = 100


class HealthServer:
    """Serves metrics and probes on ``host:port`` (port 0 picks a free one: see ``port``)."""

    def __init__(
        self, host: str, port: int, metrics: Callable[[], bytes], readiness: Readiness
    ) -> None:
        self._host = host
        self._port = port
        self._metrics = metrics
        self._readiness = readiness
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The port actually bound (differs from the setting when that was 0)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def __aenter__(self) -> Self:
        try:
            self._server = await asyncio.start_server(
                self._handle, self._host, self._port, limit=MAX_LINE_BYTES
            )
        except OSError as exc:
            raise cannot_listen(
                exc,
                self._host,
                self._port,
                what="/metrics, /healthz and /readyz",
                host_setting="STREAMCAST_HTTP_HOST (--http-host)",
                port_setting="STREAMCAST_HTTP_PORT (--http-port)",
            ) from None
        log.info("http endpoints listening", extra={"host": self._host, "port": self.port})
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop listening (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    def respond(self, method: str, path: str) -> tuple[int, str, bytes]:
        """``(status, content type, body)`` for a request: pure, so it is unit-testable."""
        path = path.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"only GET\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, self._metrics()
        if path == "/healthz":
            return 200, "text/plain", b"ok\n"
        if path == "/readyz":
            ready, reason = self._readiness()
            return (200 if ready else 503), "text/plain", (reason + "\n").encode()
        return 404, "text/plain", b"try /metrics, /healthz or /readyz\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        method = "GET"
        try:
            try:
                method, path = await _read_request(reader)
                status, ctype, body = self.respond(method, path)
            except _TooLargeError as exc:
                # A client's mistake (or a probe of ours): answer it, one debug line at most.
                log.debug("http request refused", extra={"reason": str(exc)})
                status, ctype, body = 431, "text/plain", f"{exc}\n".encode()
            head = (
                f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n"
                f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            ).encode()
            writer.write(head + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


class _TooLargeError(Exception):
    """The request line or headers exceed what this server reads."""


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str]:
    """``(method, path)`` of a request whose headers were read and dropped (their content
    does not matter here); :class:`_TooLargeError` past :data:`MAX_LINE_BYTES` per line or
    :data:`MAX_HEADERS` lines, so a client cannot make the server buffer without bound."""
    request = line = await _read_line(reader)
    headers = 0
    while line.endswith(b"\n"):  # a line without one is the client closing early
        line = await _read_line(reader)
        if line in (b"\r\n", b"\n"):
            break
        headers += 1
        if headers > MAX_HEADERS:
            raise _TooLargeError(f"more than {MAX_HEADERS} header lines")
    parts = request.decode("latin-1").split()
    return (parts[0], parts[1]) if len(parts) >= 2 else ("GET", "/")


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    try:
        return await asyncio.wait_for(reader.readuntil(b"\n"), timeout=5)
    except asyncio.LimitOverrunError as exc:
        raise _TooLargeError(f"request line or header longer than {MAX_LINE_BYTES} bytes") from exc
    except asyncio.IncompleteReadError as exc:
        return exc.partial  # the client closed early: answer what it sent
