"""Pydantic validation errors as short, operator-facing lines (no URLs, no multi-line text).

Shared by the settings (:mod:`streamcast.config`) and the model metadata
(:mod:`streamcast.core.artifact`): both must fail with one line per problem that names the
field and says what it must be.

>>> from pydantic import BaseModel, Field, ValidationError
>>> class Meta(BaseModel):
...     window: int = Field(gt=0)
>>> try:
...     Meta(window=0)
... except ValidationError as exc:
...     print(problems(exc))
["window: must be > 0 (got '0')"]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError


def describe(error: Mapping[str, Any]) -> str:
    """What one pydantic error says, briefly and in lower case (``must be > 0``)."""
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    if kind == "greater_than":
        return f"must be > {ctx.get('gt')}"
    if kind == "greater_than_equal":
        return f"must be >= {ctx.get('ge')}"
    if kind == "less_than_equal":
        return f"must be <= {ctx.get('le')}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "value_error":
        return str(ctx.get("error", error.get("msg", "invalid")))
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "not a known field"
    msg = " ".join(str(error.get("msg", "invalid")).split())
    return msg[:1].lower() + msg[1:]


def shown_input(error: Mapping[str, Any]) -> str:
    """`` (got 'value')`` for a scalar input, shortened; nothing for objects and None."""
    got = error.get("input")
    if isinstance(got, dict | list | type(None)):
        return ""
    return f" (got {str(got)[:60]!r})"


def problems(exc: ValidationError) -> list[str]:
    """One line per error: ``dotted.field: problem (got 'value')``."""
    lines = []
    for error in exc.errors():
        dotted = ".".join(str(part) for part in error["loc"]) or "document"
        lines.append(f"{dotted}: {describe(error)}{shown_input(error)}")
    return lines
