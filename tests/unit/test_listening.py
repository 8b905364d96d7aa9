"""Binding the HTTP endpoints' addresses (streamcast.core.listening)."""

from __future__ import annotations

import socket

import pytest

from streamcast.core.listening import listen
from streamcast.errors import ConfigurationError

NAMES = {"what": "the test", "host_setting": "H (--h)", "port_setting": "P (--p)"}


def test_a_blank_host_listens_on_every_interface_as_asyncio_would() -> None:
    """Binding the socket itself (so a bind error is one line) must not bind less than
    uvicorn did: a blank host is the wildcard of each family the machine has."""
    sockets = listen("", 0, **NAMES)
    try:
        hosts = {sock.getsockname()[0] for sock in sockets}
        assert "0.0.0.0" in hosts
        assert all(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) for sock in sockets)
    finally:
        for sock in sockets:
            sock.close()


def test_a_port_in_use_is_one_line_naming_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigurationError) as info:
            listen("127.0.0.1", port, **NAMES)
    text = str(info.value)
    assert f"127.0.0.1:{port} for the test: the port is in use" in text
    assert "set P (--p) to a free port" in text and "\n" not in text


def test_a_host_that_does_not_resolve_names_the_host_setting() -> None:
    with pytest.raises(ConfigurationError, match=r"'no such host\.invalid' does not resolve"):
        listen("no such host.invalid", 0, **NAMES)
