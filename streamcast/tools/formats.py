"""Parquet support is optional: pyarrow (~170 MB) stays out of the service image.

``pip install 'streamcast[parquet]'`` (or the training image, which has it) adds it;
without it, the tools that read or write Parquet say so in one line and CSV still works.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from streamcast.errors import ConfigurationError

PARQUET_SUFFIXES = (".parquet", ".pq")


def parquet_available() -> bool:
    """Whether pyarrow, pandas' Parquet engine, is installed."""
    return importlib.util.find_spec("pyarrow") is not None


def require_parquet(flag: str, path: Path) -> None:
    """Raise a one-line :class:`ConfigurationError` if ``path`` is Parquet and pyarrow is
    not installed; ``flag`` names the option that gave the path."""
    if path.suffix.lower() in PARQUET_SUFFIXES and not parquet_available():
        raise ConfigurationError(
            f"{flag} {path}: Parquet needs pyarrow, which this installation leaves out: "
            "install streamcast[parquet] (the training image has it), or use a .csv file"
        )
