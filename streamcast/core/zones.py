"""Time zone names as users give them (flags, settings, model metadata): one check, so
every place that takes a zone refuses the same names with the same line."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

#: characters of a bad name repeated in the message
_SHOWN = 60


def zone_problem(name: str) -> str | None:
    """Why ``name`` is not a time zone the service can load (None when it is one).

    >>> zone_problem("Australia/Melbourne") is None
    True
    >>> zone_problem("America")  # a directory of the zone database, not a zone
    "unknown time zone 'America': give an IANA name such as Australia/Melbourne or UTC"
    """
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a directory such as America
        shown = repr(name)[:_SHOWN]
        return f"unknown time zone {shown}: give an IANA name such as Australia/Melbourne or UTC"
    return None
