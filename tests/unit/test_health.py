"""The metrics/probe server answers malformed and oversized requests without a traceback."""

from __future__ import annotations

import asyncio
import logging

import pytest

from streamcast.service.health import MAX_HEADERS, MAX_LINE_BYTES, HealthServer


async def _exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * (4 * MAX_LINE_BYTES) + b"\r\n\r\n",
        b"GET /" + b"p" * (4 * MAX_LINE_BYTES) + b" HTTP/1.1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\n" + b"X-A: 1\r\n" * (MAX_HEADERS + 5) + b"\r\n",
    ],
    ids=["long header", "long request line", "too many headers"],
)
async def test_oversized_requests_get_431_and_no_error_log(
    request_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with HealthServer("127.0.0.1", 0, lambda: b"m 1\n", lambda: (True, "ready")) as server:
        answer = await _exchange(server.port, request_bytes)
        ok = await _exchange(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert ok.startswith(b"HTTP/1.1 200 OK\r\n"), "the server keeps serving"
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not loud, [r.getMessage() for r in loud]


async def test_a_client_closing_early_is_answered_quietly(caplog: pytest.LogCaptureFixture) -> None:
    async with HealthServer("127.0.0.1", 0, lambda: b"", lambda: (False, "no partitions")) as s:
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        writer.write(b"GET /readyz HTTP/1.1\r\n")
        writer.write_eof()
        answer = await asyncio.wait_for(reader.read(), timeout=10)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 503 ")
    assert answer.endswith(b"no partitions\n")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_an_address_it_cannot_listen_on_is_a_configuration_error() -> None:
    import socket

    from streamcast.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"'not a host'.*STREAMCAST_HTTP_HOST"):
        async with HealthServer("not a host", 0, lambda: b"", lambda: (True, "")):
            pass
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigurationError, match=rf":{port} for .*: the port is in use.*_PORT"):
            async with HealthServer("127.0.0.1", port, lambda: b"", lambda: (True, "")):
                pass
