"""Data in: read a long-format table, validate it, and regularise it into a :class:`SeriesSet`.

Input is CSV or Parquet in *long* format: one row per (key, timestamp, value) plus optional
extra numeric feature columns. :func:`load_table` reads and validates it into the
canonical frame (columns ``key`` str, ``ts_ms`` int64 epoch milliseconds UTC — the
service's tick resolution —, ``value`` float64,
then the extras under their own names); :func:`regularise` puts that frame on a regular
interval grid the way the service sees a stream (see ``streamcast/core/artifact.py``).

Timestamps (one policy, applied to the whole column):

* ISO-8601 strings, with a zone (``Z``, ``+10:00``) or without one. **A timestamp without
  a zone is taken as UTC.** Offsets may differ from row to row (DST changes).
* Numbers are epoch times; the unit is detected from the largest magnitude in the column:
  below 1e11 seconds (1e11 s is the year 5138), below 1e14 milliseconds, below 1e17
  microseconds, else nanoseconds (the service's rule for a tick,
  :func:`streamcast.core.codec.epoch_unit`). Anything finer than a millisecond is floored.
* Parquet/pandas datetime columns: naive ones are UTC, zoned ones are converted.

A missing value (empty cell, NaN) in the value or an extra column makes that row a
missing observation: it is dropped before regularising, so it becomes part of a gap.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow.parquet as pq

from streamcast.core.codec import epoch_unit
from training.errors import ConfigError, DataError
from training.regular import PrepReport, regularise
from training.timetext import format_interval, iso, iso_ms, parse_interval

__all__ = [
    "KEY",
    "TS",
    "VALUE",
    "PrepReport",
    "fingerprint",
    "format_interval",
    "iso",
    "iso_ms",
    "load_table",
    "normalise_frame",
    "parse_interval",
    "regularise",
]

KEY, TS, VALUE = "key", "ts_ms", "value"
#: the key given to every row of a file without a key column
SINGLE_KEY = "series"

_CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zip", ".csv.xz")
_PARQUET_SUFFIXES = (".parquet", ".pq")

Locate = Callable[[int], str]
_T = TypeVar("_T")


def load_table(
    path: str | Path,
    *,
    key_col: str | None,
    time_col: str,
    value_col: str,
    feature_cols: Sequence[str] = (),
) -> pd.DataFrame:
    """Read a CSV or Parquet file (chosen by extension) into the canonical long frame.

    ``key_col=None`` reads a single-series file: every row gets the key ``"series"``.
    Raises :class:`DataError` for an unreadable, empty or malformed file.
    """
    path = Path(path)
    name = str(path)
    lower = path.name.lower()
    wanted = _wanted_columns(key_col, time_col, value_col, feature_cols)
    if lower.endswith(_CSV_SUFFIXES):
        columns = _read_header(path, name)
        _require_columns(columns, wanted, name)
        raw = _read(
            name,
            lambda: pd.read_csv(
                path, usecols=wanted, dtype={key_col: str} if key_col is not None else None
            ),
        )

        def locate(i: int) -> str:
            return f"row {i + 1} (line {i + 2})"

    elif lower.endswith(_PARQUET_SUFFIXES):
        columns = _read(name, lambda: [str(c) for c in pq.ParquetFile(path).schema_arrow.names])
        _require_columns(columns, wanted, name)
        raw = _read(name, lambda: pd.read_parquet(path, columns=wanted))

        def locate(i: int) -> str:
            return f"row {i + 1}"

    else:
        raise DataError(
            f"{name}: unsupported file type '{path.suffix or path.name}'; "
            "use .csv (optionally compressed, e.g. .csv.gz) or .parquet"
        )
    return normalise_frame(
        raw,
        key_col=key_col,
        time_col=time_col,
        value_col=value_col,
        feature_cols=feature_cols,
        source=name,
        locate=locate,
    )


def normalise_frame(
    raw: pd.DataFrame,
    *,
    key_col: str | None,
    time_col: str,
    value_col: str,
    feature_cols: Sequence[str] = (),
    source: str = "data",
    locate: Locate | None = None,
) -> pd.DataFrame:
    """Validate an in-memory frame and convert it to the canonical long frame.

    The result has columns ``key``, ``ts``, ``value`` and the extras under their own
    names, in the input's row order; ``attrs`` carry ``value_name``, ``extra_names`` and
    ``source``.
    """
    where: Locate = locate or (lambda i: f"row {i + 1}")
    wanted = _wanted_columns(key_col, time_col, value_col, feature_cols)
    _require_columns(list(raw.columns), wanted, source)
    if len(raw) == 0:
        raise DataError(f"{source}: the file has no data rows (only a header, or nothing)")
    raw = raw.reset_index(drop=True)
    if key_col is None:
        keys = np.full(len(raw), SINGLE_KEY, dtype=object)
    else:
        key_raw = raw[key_col]
        missing = key_raw.isna().to_numpy()
        if missing.any():
            i = int(np.argmax(missing))
            raise DataError(
                f"{source}: key column '{key_col}' is empty at {where(i)}; every row needs a key"
            )
        keys = key_raw.astype(str).to_numpy(dtype=object)
    out = pd.DataFrame({KEY: keys, TS: _epoch_millis(raw[time_col], time_col, source, where)})
    out[VALUE] = _numeric(raw[value_col], value_col, source, where)
    for col in feature_cols:
        out[col] = _numeric(raw[col], col, source, where)
    _reject_empty_keys(out, value_col, source)
    out.attrs.update(value_name=value_col, extra_names=tuple(feature_cols), source=source)
    return out


def fingerprint(df: pd.DataFrame) -> str:
    """``sha256:<hex>`` of the canonical data: column names, then rows sorted by key and time.

    Independent of the input's row order and of how the file was formatted (ISO or epoch
    timestamps give the same fingerprint for the same instants).
    """
    order = np.lexsort((df[TS].to_numpy(np.int64), df[KEY].to_numpy(dtype=str)))
    digest = hashlib.sha256()
    digest.update(json.dumps([str(c) for c in df.columns]).encode())
    digest.update("\x00".join(df[KEY].to_numpy(dtype=str)[order]).encode())
    digest.update(df[TS].to_numpy(np.int64)[order].astype("<i8").tobytes())
    for col in df.columns:
        if col not in (KEY, TS):
            digest.update(df[col].to_numpy(np.float64)[order].astype("<f8").tobytes())
    return "sha256:" + digest.hexdigest()


def _wanted_columns(
    key_col: str | None, time_col: str, value_col: str, feature_cols: Sequence[str]
) -> list[str]:
    wanted = [c for c in (key_col, time_col, value_col) if c is not None] + list(feature_cols)
    if len(set(wanted)) != len(wanted):
        raise ConfigError(f"the key, time, value and feature columns must all differ; got {wanted}")
    clash = [c for c in feature_cols if c in (KEY, TS, VALUE)]
    if clash:
        raise ConfigError(
            f"feature column names {clash} are reserved ({KEY}, {TS}, {VALUE}); "
            "rename them in the file"
        )
    return wanted


def _read_header(path: Path, name: str) -> list[str]:
    return _read(name, lambda: [str(c) for c in pd.read_csv(path, nrows=0).columns])


def _read(name: str, reader: Callable[[], _T]) -> _T:
    """Run a pandas reader, turning every way a file can fail into a one-line DataError."""
    try:
        return reader()
    except FileNotFoundError:
        raise DataError(f"{name}: no such file; check the path") from None
    except IsADirectoryError:
        raise DataError(f"{name}: is a directory, not a data file") from None
    except PermissionError:
        raise DataError(f"{name}: permission denied; check the file's permissions") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{name}: the file is empty; it needs a header and data rows") from None
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"{name}: cannot read the file ({first}); check that it is a valid "
            "UTF-8 CSV or Parquet file"
        ) from None


def _require_columns(columns: list[str], wanted: list[str], source: str) -> None:
    missing = [c for c in wanted if c not in columns]
    if missing:
        hint = ""
        if len(columns) == 1 and any(sep in str(columns[0]) for sep in ";\t|"):
            hint = " (the file does not look comma-separated: save it as CSV with commas)"
        raise DataError(
            f"{source}: missing column(s) {', '.join(repr(c) for c in missing)}; "
            f"available: {', '.join(repr(str(c)) for c in columns)}{hint}"
        )


def _numeric(raw: pd.Series, col: str, source: str, where: Locate) -> npt.NDArray[np.float64]:
    """Column as float64; NaN stays (missing), anything else non-numeric is an error."""
    if pd.api.types.is_bool_dtype(raw) or pd.api.types.is_numeric_dtype(raw):
        values = raw.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        parsed = pd.to_numeric(raw, errors="coerce")
        bad = (parsed.isna() & raw.notna()).to_numpy()
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(
                f"{source}: column '{col}' has a non-numeric value {_show(raw.iloc[i])} at "
                f"{where(i)}; fix it or leave the cell empty (a missing value)"
            )
        values = parsed.to_numpy(dtype=np.float64, na_value=np.nan)
    infinite = np.isinf(values)
    if infinite.any():
        i = int(np.argmax(infinite))
        raise DataError(
            f"{source}: column '{col}' has an infinite value at {where(i)}; "
            "fix it or leave the cell empty"
        )
    return values


def _epoch_millis(raw: pd.Series, col: str, source: str, where: Locate) -> npt.NDArray[np.int64]:
    """Parse a timestamp column to int64 epoch milliseconds UTC (see the module docstring)."""
    missing = raw.isna().to_numpy()
    if missing.any():
        i = int(np.argmax(missing))
        raise DataError(
            f"{source}: time column '{col}' is empty at {where(i)}; every row needs a timestamp"
        )
    if pd.api.types.is_datetime64_any_dtype(raw):
        stamps = pd.DatetimeIndex(raw)
        stamps = stamps.tz_localize("UTC") if stamps.tz is None else stamps.tz_convert("UTC")
        return _datetimes_to_millis(stamps)
    if pd.api.types.is_bool_dtype(raw):
        raise DataError(f"{source}: time column '{col}' holds booleans, not timestamps")
    numbers = raw if pd.api.types.is_numeric_dtype(raw) else pd.to_numeric(raw, errors="coerce")
    if numbers.notna().all():
        return _epoch_numbers(numbers.to_numpy(dtype=np.float64), raw, col, source, where)
    parsed = pd.to_datetime(raw.astype(str), utc=True, format="ISO8601", errors="coerce")
    bad = pd.isna(parsed)
    bad_rows = np.asarray(bad)
    if bad_rows.any():
        i = int(np.argmax(bad_rows))
        raise DataError(
            f"{source}: cannot parse timestamp {_show(raw.iloc[i])} in column '{col}' "
            f"at {where(i)}; "
            "use ISO-8601 (e.g. 2015-01-01T13:00:00Z) or epoch seconds/milliseconds"
        )
    return _datetimes_to_millis(pd.DatetimeIndex(parsed))


def _epoch_numbers(
    values: npt.NDArray[np.float64], raw: pd.Series, col: str, source: str, where: Locate
) -> npt.NDArray[np.int64]:
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"{source}: timestamp {_show(raw.iloc[i])} in column '{col}' at {where(i)} is not a "
            "valid epoch time; epoch timestamps must be finite and not negative"
        )
    integers = pd.api.types.is_integer_dtype(raw)
    # the unit from the exact largest value: an integer column's float64 copy rounds
    # 99_999_999_999_999_992 up to 1e17 (ns) where the service reads the integer (µs)
    largest = int(raw.max()) if integers else float(values.max())
    multiplier, divisor = epoch_unit(largest)  # the service's units, one for the column
    if integers:
        # exact integer arithmetic: float64 cannot hold every nanosecond epoch
        exact = raw.to_numpy(dtype=np.int64) * multiplier // divisor
        return np.asarray(exact, dtype=np.int64)
    return np.floor(values * multiplier / divisor).astype(np.int64)


def _datetimes_to_millis(stamps: pd.DatetimeIndex) -> npt.NDArray[np.int64]:
    naive = stamps.tz_convert("UTC").tz_localize(None)
    nanos = naive.as_unit("ns").asi8
    return np.floor_divide(nanos, 1_000_000).astype(np.int64)


def _reject_empty_keys(frame: pd.DataFrame, value_col: str, source: str) -> None:
    has_value = pd.Series(np.isfinite(frame[VALUE].to_numpy())).groupby(frame[KEY].to_numpy())
    any_value = has_value.any()
    empty = [str(k) for k in any_value.index[~any_value.to_numpy()]]
    if empty:
        shown = ", ".join(repr(k) for k in empty[:5]) + (" ..." if len(empty) > 5 else "")
        raise DataError(
            f"{source}: column '{value_col}' has no values at all for key(s) {shown}; "
            "remove those keys or fill in their values"
        )


def _show(cell: object) -> str:
    """A cell as a user wrote it: strings quoted, numbers plain (not ``np.int64(-5)``)."""
    if isinstance(cell, str):
        return repr(cell)
    return str(cell.item()) if isinstance(cell, np.generic) else str(cell)
