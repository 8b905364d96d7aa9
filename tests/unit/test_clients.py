"""Client set-up errors a setting causes are named, not retried as broker outages."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from streamcast.config import load_settings
from streamcast.errors import ConfigurationError, TransientError
from streamcast.kafka.clients import handshake_error, ssl_context


def test_a_ca_file_that_is_not_pem_names_the_setting(tmp_path: Path) -> None:
    bad = tmp_path / "ca.crt"
    bad.write_text("-----BEGIN NOTHING-----\n")
    settings = load_settings({"security_protocol": "SSL", "ssl_cafile": bad}, env_file=None)
    with pytest.raises(ConfigurationError) as info:
        ssl_context(settings)
    assert str(info.value).startswith(f"STREAMCAST_SSL_CAFILE (ssl_cafile): {bad} holds no PEM")


def test_a_client_certificate_that_is_not_pem_names_the_settings(tmp_path: Path) -> None:
    bad = tmp_path / "client.crt"
    bad.write_text("garbage\n")
    settings = load_settings({"security_protocol": "SSL", "ssl_certfile": bad}, env_file=None)
    with pytest.raises(ConfigurationError, match="STREAMCAST_SSL_CERTFILE"):
        ssl_context(settings)


async def test_a_refused_connection_is_not_a_setting_problem() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = load_settings({"bootstrap_servers": f"127.0.0.1:{port}"}, env_file=None)
    assert await handshake_error(settings) is None


async def test_a_listener_that_drops_every_connection_is_a_setting_problem() -> None:
    """What a SASL or TLS listener does to a plaintext client: accept, then close on the
    first request. Checked twice (a restarting broker also drops connections)."""
    accepted = 0

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        await reader.read(4)
        writer.close()

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        settings = load_settings({"bootstrap_servers": f"127.0.0.1:{port}"}, env_file=None)
        error = await handshake_error(settings)
    assert isinstance(error, ConfigurationError)
    assert not isinstance(error, TransientError)
    assert "closed the connection during the handshake" in str(error)
    assert "STREAMCAST_SECURITY_PROTOCOL (now PLAINTEXT)" in str(error)
    assert accepted == 2
