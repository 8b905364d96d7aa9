"""What the ``streamcast`` and ``streamcast-train`` command lines share: a usage error is
one line ``error: <command>: <what>`` on stderr and exit status 2 (never the whole usage
text), and the number types that refuse what no flag means (zero, negative, NaN, inf).

Here, in the core, because the training package may share the core only.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any, NoReturn

#: the exit status of every user error of the command lines
USAGE_ERROR = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit status 2; its subcommands'
    parsers are of this class too (argparse's default for ``add_subparsers``).

    Flags are taken as spelled only, not as unique prefixes (``--durable-st``): a flag
    names its setting in errors, and a prefix would be named as the environment
    variable the user never set (and would change meaning when a flag is added)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {' '.join(message.split())}", file=sys.stderr)
        raise SystemExit(USAGE_ERROR)


def positive_int(text: str) -> int:
    """An argparse type: a whole number > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value
