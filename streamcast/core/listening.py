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
) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port`` 0: a free one; an IPv6 host gets
    an IPv6 socket), or :func:`cannot_listen`'s error."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise cannot_listen(
            exc, host, port, what=what, host_setting=host_setting, port_setting=port_setting
        ) from None
