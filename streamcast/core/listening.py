"""Why an HTTP endpoint cannot listen on its address, as one line naming the settings to
change: the service's /metrics and probes (:mod:`streamcast.service.health`) and the
forecast API (:mod:`streamcast.api.server`) both bind a host and a port an operator set.
"""

from __future__ import annotations

import errno
import socket

from streamcast.errors import ConfigurationError


def cannot_listen(
    exc: OSError, host: str, port: int, *, what: str, host_setting: str, port_setting: str
) -> ConfigurationError:
    """The error for ``exc``, raised binding ``host:port`` for ``what``: why (a host that
    does not resolve or is not this machine's, a port in use or privileged) and which of
    ``host_setting`` and ``port_setting`` to change.

    >>> cannot_listen(OSError(errno.EADDRINUSE, "in use"), "0.0.0.0", 80, what="the API",
    ...               host_setting="H", port_setting="P").args[0]  # doctest: +NORMALIZE_WHITESPACE
    'cannot listen on 0.0.0.0:80 for the API: the port is in use (another process listens
    on it); set P to a free port, or stop the other process'
    """
    if isinstance(exc, socket.gaierror):
        why = f"the host {host!r} does not resolve ({exc.strerror})"
        fix = f"set {host_setting} to an address or name of this machine, e.g. 0.0.0.0"
    elif exc.errno == errno.EADDRINUSE:
        why = "the port is in use (another process listens on it)"
        fix = f"set {port_setting} to a free port, or stop the other process"
    elif exc.errno == errno.EACCES:
        why = "permission denied (ports below 1024 need privileges)"
        fix = f"set {port_setting} to a port from 1024 up"
    elif exc.errno == errno.EADDRNOTAVAIL:
        why = "the address is not one of this machine's"
        fix = f"set {host_setting} to an address of this machine, e.g. 0.0.0.0"
    else:
        why = exc.strerror or str(exc)
        fix = f"check {host_setting} and {port_setting}"
    return ConfigurationError(f"cannot listen on {host}:{port} for {what}: {why}; {fix}")


def listen(
    host: str, port: int, *, what: str, host_setting: str, port_setting: str
) -> list[socket.socket]:
    """Listening TCP sockets on every address ``host`` resolves to, as asyncio's
    ``create_server`` binds them (a name with IPv4 and IPv6 addresses gets both; a blank
    host, every interface; ``port`` 0, a free port each), or :func:`cannot_listen`'s
    error with every socket it opened closed."""
    sockets: list[socket.socket] = []
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # beside the IPv4 wildcard, as asyncio binds it
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(socket.SOMAXCONN)
            sock.setblocking(False)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise cannot_listen(
            exc, host, port, what=what, host_setting=host_setting, port_setting=port_setting
        ) from None
    return sockets
