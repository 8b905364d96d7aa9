"""The output contract: versioned JSON Schemas of every record kind, and their headers.

The schemas are files shipped with the package (``streamcast/schemas/<kind>.v<N>.json``,
shown by ``streamcast schema <kind>``); docs/records.md explains each field. Every record
streamcast produces (``streamcast replay``'s ticks included) carries two headers that say
what it is, so a consumer reading several topics (or a sink choosing a converter) need
not guess from the bytes:

* ``content-type``: ``application/json`` (forecasts, alerts, changelog markers),
  ``application/octet-stream`` (dead letters: the original bytes, whatever they were) or
  ``application/vnd.streamcast.state`` (a key's binary state on the changelog);
* ``streamcast.schema``: ``<kind>/<version>``, the schema the record follows, whose
  ``$id`` is ``urn:streamcast:schema:<kind>:<version>``.

>>> schema_header("forecast")
'forecast/2'
>>> load_schema("tick")["$id"]
'urn:streamcast:schema:tick:1'
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any, Final

import numpy as np
import orjson

from streamcast.core.alerts import ALERT_SCHEMA
from streamcast.core.forecast_rows import FORECAST_ROW_SCHEMA
from streamcast.core.records import FORECAST_SCHEMA

#: the version streamcast writes (and reads) of each record kind
CURRENT: Final[dict[str, int]] = {
    "tick": 1,
    "forecast": FORECAST_SCHEMA,
    "forecast_row": FORECAST_ROW_SCHEMA,
    "alert": ALERT_SCHEMA,
    "dead_letter": 1,
    "changelog": 1,
}

JSON = b"application/json"
OCTETS = b"application/octet-stream"
STATE = b"application/vnd.streamcast.state"
#: where the schema files live (package data)
_DIR = resources.files("streamcast") / "schemas"
#: the length of a format-4 state record's header (magic + five little-endian uint32;
#: format 5 adds a sixth, the interval levels)
STATE_HEADER_BYTES = 24


def schema_header(kind: str) -> str:
    """The ``streamcast.schema`` header value of the current version of ``kind``."""
    return f"{kind}/{CURRENT[kind]}"


def headers(kind: str, content_type: bytes = JSON) -> tuple[tuple[str, bytes], ...]:
    """The headers of a record of ``kind`` (module docstring)."""
    return (("content-type", content_type), ("streamcast.schema", schema_header(kind).encode()))


#: what ``streamcast replay`` sends (the service does not require them of producers)
TICK_HEADERS: Final = headers("tick")
FORECAST_HEADERS: Final = headers("forecast")
FORECAST_ROW_HEADERS: Final = headers("forecast_row")
ALERT_HEADERS: Final = headers("alert")
DEAD_LETTER_HEADERS: Final = headers("dead_letter", OCTETS)
STATE_HEADERS: Final = headers("changelog", STATE)
MARKER_HEADERS: Final = headers("changelog")


def versions(kind: str) -> list[int]:
    """The versions of ``kind`` shipped, oldest first (empty for an unknown kind)."""
    found = []
    for entry in _DIR.iterdir():
        stem, _, rest = entry.name.partition(".v")
        if stem == kind and rest.endswith(".json") and rest[:-5].isdigit():
            found.append(int(rest[:-5]))
    return sorted(found)


@functools.cache
def schema_text(kind: str, version: int | None = None) -> bytes:
    """The schema file of ``kind`` (default: the version written now), as shipped.

    Raises ``KeyError`` naming the kinds or versions there are.
    """
    if kind not in CURRENT:
        raise KeyError(f"unknown record kind {kind!r}: one of {', '.join(CURRENT)}")
    wanted = CURRENT[kind] if version is None else version
    if wanted not in versions(kind):
        have = ", ".join(map(str, versions(kind)))
        raise KeyError(f"{kind} has no schema version {wanted} (there are: {have})")
    return (_DIR / f"{kind}.v{wanted}.json").read_bytes()


def load_schema(kind: str, version: int | None = None) -> dict[str, Any]:
    """:func:`schema_text`, parsed."""
    doc: dict[str, Any] = orjson.loads(schema_text(kind, version))
    return doc


def describe_state_record(value: bytes) -> dict[str, object]:
    """The header of a binary state record as the changelog schema's ``state`` object
    (format 5 adds the interval ``levels`` to format 4's dimensions, format 6 the
    interval ``grid``'s fingerprint).

    >>> head = b"SCS6" + np.array([48, 1, 128, 24, 32, 2, 7], dtype="<u4").tobytes()
    >>> describe_state_record(head + bytes(100))["grid"]
    7
    """
    size = {b"SCS6": 32, b"SCS5": 28}.get(value[:4], STATE_HEADER_BYTES)
    if len(value) < size:
        raise ValueError(f"a state record has a {size}-byte header; got {len(value)}")
    dims = np.frombuffer(value[4:size], dtype="<u4").tolist()
    names = ("window", "inputs", "state_size", "horizon", "quantiles", "levels", "grid")
    return {
        "format": value[:4].decode("ascii", "replace"),
        **dict(zip(names, dims, strict=False)),
        "bytes": len(value),
    }
