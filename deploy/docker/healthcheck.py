"""Container health probe: exit 0 when the service's health endpoint answers 2xx.

Used by the image's ``HEALTHCHECK`` (python:3.11-slim has no curl) and usable by hand::

    python /opt/streamcast/healthcheck.py /readyz

The port comes from ``STREAMCAST_HTTP_PORT`` (the image sets 9108), the path from the
first argument (default ``/healthz``). Standard library only: it runs in the image's
interpreter without importing the service, so a wedged service cannot wedge its probe.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_PORT = "9108"
TIMEOUT_S = 3.0


def probe(path: str, port: str, host: str = "127.0.0.1") -> tuple[bool, str]:
    """GET ``http://host:port/path``; ``(healthy, one-line reason)``."""
    url = f"http://{host}:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        return False, f"{url} answered {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return False, f"{url} unreachable: {exc}"
    return 200 <= status < 300, f"{url} answered {status}"


def main(argv: list[str]) -> int:
    """Probe the path in ``argv[1]`` (default ``/healthz``); print why when unhealthy."""
    path = argv[1] if len(argv) > 1 else "/healthz"
    if not path.startswith("/"):
        print(f"healthcheck: path must start with '/', got {path!r}", file=sys.stderr)
        return 2
    port = os.environ.get("STREAMCAST_HTTP_PORT", DEFAULT_PORT)
    healthy, reason = probe(path, port)
    if not healthy:
        print(f"healthcheck: {reason}", file=sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
