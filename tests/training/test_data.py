"""Loading and regularising long-format tables: timestamps, errors, gaps, duplicates."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamcast.core.features import interpolate_gap
from training.data import (
    fingerprint,
    format_interval,
    load_table,
    normalise_frame,
    parse_interval,
    regularise,
)
from training.errors import ConfigError, DataError

HOUR = 3600
T0 = 1_420_070_400  # 2015-01-01T00:00:00Z


def frame(
    keys: list[str], ts: list[int], values: list[float], **extras: list[float]
) -> pd.DataFrame:
    """A canonical frame built through the public normaliser (``ts`` in epoch seconds)."""
    raw = pd.DataFrame({"k": keys, "t": [t * 1000 for t in ts], "v": values, **extras})
    return normalise_frame(
        raw, key_col="k", time_col="t", value_col="v", feature_cols=tuple(extras)
    )


def write_csv(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- timestamps -------------------------------------------------------------------------


def test_iso_offsets_zulu_and_naive_give_the_same_utc_instants(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        "t,v\n"
        "2015-01-01T10:00:00+10:00,1\n"  # 00:00Z
        "2015-01-01T01:00:00Z,2\n"
        "2015-01-01 02:00:00,3\n"  # naive = UTC
        "2015-01-01T01:00:00-02:00,4\n",  # 03:00Z
    )
    df = load_table(path, key_col=None, time_col="t", value_col="v")
    assert df["ts_ms"].tolist() == [1000 * (T0 + h * HOUR) for h in range(4)]
    assert set(df["key"]) == {"series"}


def test_melbourne_dst_end_keeps_an_hourly_grid(tmp_path: Path) -> None:
    # DST in Melbourne ended 2015-04-05 03:00 AEDT: local 02:00-03:00 happens twice
    instants = pd.date_range("2015-04-04T12:00:00Z", periods=8, freq="1h")
    local = instants.tz_convert("Australia/Melbourne")
    text = "t,v\n" + "".join(f"{s.isoformat()},{i}\n" for i, s in enumerate(local))
    df = load_table(write_csv(tmp_path, text), key_col=None, time_col="t", value_col="v")
    assert df["ts_ms"].tolist() == list(instants.as_unit("ms").asi8)
    series, report = regularise(df)
    assert report.interval_s == HOUR
    assert report.duplicate_rows == 0
    assert report.imputed_rows == 0
    assert not series.reset[1:].any()


def test_epoch_seconds_and_milliseconds_are_detected_by_magnitude(tmp_path: Path) -> None:
    t1 = T0 + 5400
    cases = {
        "s.csv": (f"{T0}\n{t1}", [T0 * 1000, t1 * 1000]),
        "frac.csv": (f"{T0}.25\n{t1}.5", [T0 * 1000 + 250, t1 * 1000 + 500]),
        "ms.csv": (f"{T0 * 1000}\n{t1 * 1000 + 999}", [T0 * 1000, t1 * 1000 + 999]),
        "us.csv": (f"{T0 * 10**6 + 1999}\n{t1 * 10**6}", [T0 * 1000 + 1, t1 * 1000]),
        "ns.csv": (f"{T0 * 10**9}\n{t1 * 10**9 + 7 * 10**6}", [T0 * 1000, t1 * 1000 + 7]),
    }
    for name, (stamps, expected) in cases.items():
        rows = "".join(f"{stamp},1\n" for stamp in stamps.split("\n"))
        path = write_csv(tmp_path, "t,v\n" + rows, name)
        df = load_table(path, key_col=None, time_col="t", value_col="v")
        assert df["ts_ms"].tolist() == expected, name


def test_negative_epoch_is_rejected(tmp_path: Path) -> None:
    path = write_csv(tmp_path, f"t,v\n{T0},1\n-5,2\n")
    with pytest.raises(DataError, match=r"timestamp -5 in column 't' at row 2 \(line 3\)"):
        load_table(path, key_col=None, time_col="t", value_col="v")


def test_parquet_datetimes_naive_and_zoned(tmp_path: Path) -> None:
    naive = pd.date_range("2015-01-01", periods=3, freq="1h")
    zoned = naive.tz_localize("UTC").tz_convert("Australia/Melbourne")
    for name, stamps in (("naive.parquet", naive), ("zoned.parquet", zoned)):
        path = tmp_path / name
        pd.DataFrame({"k": ["a"] * 3, "t": stamps, "v": [1.0, 2.0, 3.0]}).to_parquet(path)
        df = load_table(path, key_col="k", time_col="t", value_col="v")
        assert df["ts_ms"].tolist() == [1000 * (T0 + h * HOUR) for h in range(3)]


# --- every DataError names the problem and the place ------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.csv: no such file"):
        load_table(tmp_path / "nope.csv", key_col="k", time_col="t", value_col="v")


def test_directory_and_unsupported_extension(tmp_path: Path) -> None:
    folder = tmp_path / "dir.csv"
    folder.mkdir()
    with pytest.raises(DataError, match="is a directory"):
        load_table(folder, key_col="k", time_col="t", value_col="v")
    with pytest.raises(DataError, match=r"unsupported file type '\.xlsx'.*\.csv.*\.parquet"):
        load_table(tmp_path / "x.xlsx", key_col="k", time_col="t", value_col="v")


def test_corrupt_parquet_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"this is not parquet")
    with pytest.raises(DataError, match=r"bad\.parquet: cannot read the file"):
        load_table(path, key_col="k", time_col="t", value_col="v")


def test_empty_and_header_only_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="the file is empty"):
        load_table(write_csv(tmp_path, "", "e.csv"), key_col="k", time_col="t", value_col="v")
    with pytest.raises(DataError, match="no data rows"):
        load_table(write_csv(tmp_path, "k,t,v\n"), key_col="k", time_col="t", value_col="v")


def test_missing_column_lists_the_available_ones(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "sensor,time,count\na,0,1\n")
    with pytest.raises(DataError) as info:
        load_table(path, key_col="sensor", time_col="time", value_col="value")
    message = str(info.value)
    assert "missing column(s) 'value'" in message
    assert "available: 'sensor', 'time', 'count'" in message
    assert "\n" not in message


def test_non_numeric_value_names_column_row_and_value(tmp_path: Path) -> None:
    path = write_csv(tmp_path, f"k,t,v,temp\na,{T0},1,20\na,{T0 + HOUR},2,warm\n")
    with pytest.raises(
        DataError, match=r"column 'temp' has a non-numeric value 'warm' at row 2 \(line 3\)"
    ):
        load_table(path, key_col="k", time_col="t", value_col="v", feature_cols=["temp"])


def test_all_nan_key_is_named(tmp_path: Path) -> None:
    path = write_csv(tmp_path, f"k,t,v\na,{T0},1\nb,{T0},\nb,{T0 + HOUR},\n")
    with pytest.raises(DataError, match=r"column 'v' has no values at all for key\(s\) 'b'"):
        load_table(path, key_col="k", time_col="t", value_col="v")


def test_unparsable_and_missing_timestamps_name_the_row(tmp_path: Path) -> None:
    bad = write_csv(tmp_path, "k,t,v\na,2015-01-01T00:00Z,1\na,yesterday,2\n", "bad.csv")
    with pytest.raises(
        DataError, match=r"cannot parse timestamp 'yesterday' in column 't' at row 2"
    ):
        load_table(bad, key_col="k", time_col="t", value_col="v")
    empty = write_csv(tmp_path, "k,t,v\na,2015-01-01T00:00Z,1\na,,2\n", "empty.csv")
    with pytest.raises(DataError, match=r"time column 't' is empty at row 2 \(line 3\)"):
        load_table(empty, key_col="k", time_col="t", value_col="v")


def test_missing_key_and_bad_column_choice(tmp_path: Path) -> None:
    path = write_csv(tmp_path, f"k,t,v\na,{T0},1\n,{T0},2\n")
    with pytest.raises(DataError, match=r"key column 'k' is empty at row 2"):
        load_table(path, key_col="k", time_col="t", value_col="v")
    with pytest.raises(ConfigError, match="must all differ"):
        load_table(path, key_col="k", time_col="t", value_col="t")


# --- regularise ---------------------------------------------------------------------------


def test_short_gap_is_bridged_with_the_shared_interpolation() -> None:
    ts = [T0, T0 + HOUR, T0 + 4 * HOUR, T0 + 5 * HOUR]  # 2 missing intervals
    df = frame(["a"] * 4, ts, [1.0, 2.0, 11.0, 12.0], temp=[10.0, 10.0, 40.0, 40.0])
    series, report = regularise(df, max_gap=2)
    assert series.ts.tolist() == [T0 + i * HOUR for i in range(6)]
    assert series.observed.tolist() == [True, True, False, False, True, True]
    expected = interpolate_gap(np.array([2.0, 10.0]), np.array([11.0, 40.0]), 2)
    np.testing.assert_array_equal(series.values[2:4], expected)
    assert series.reset.tolist() == [True] + [False] * 5
    assert (report.bridged_gaps, report.imputed_rows, report.long_gaps) == (1, 2, [])


def test_long_gap_resets_and_is_reported() -> None:
    ts = [T0, T0 + HOUR, T0 + 6 * HOUR, T0 + 7 * HOUR]  # 4 missing intervals
    series, report = regularise(frame(["a"] * 4, ts, [1, 2, 3, 4]), max_gap=3)
    assert series.n_rows == 4
    assert series.reset.tolist() == [True, False, True, False]
    assert series.observed.all()
    (gap,) = report.long_gaps
    assert (gap.key, gap.missing) == ("a", 4)
    assert (gap.last_before, gap.first_after) == ("2015-01-01T01:00:00Z", "2015-01-01T06:00:00Z")
    assert "long gap  a: 2015-01-01T01:00:00Z -> 2015-01-01T06:00:00Z" in report.summary()


def test_duplicates_error_names_key_timestamp_and_count() -> None:
    df = frame(["a", "b", "b", "b", "a"], [T0, T0, T0, T0, T0 + HOUR], [1, 2, 3, 4, 5])
    with pytest.raises(DataError) as info:
        regularise(df)
    message = str(info.value)
    assert "key 'b' has 3 rows at 2015-01-01T00:00:00Z" in message
    assert "(2 duplicate rows in all)" in message
    assert "set duplicates to 'first' (keep the first, as the service does) or 'aggregate'" in (
        message
    )


def test_duplicates_first_mode_keeps_what_the_service_keeps() -> None:
    # the service dead-letters a tick whose timestamp equals the last accepted one
    df = frame(["b"] * 4, [T0, T0, T0, T0 + HOUR], [np.nan, 3, 7, 5])
    series, report = regularise(df, duplicates="first")
    assert report.duplicate_rows == 2
    assert series.values[:, 0].tolist() == [3.0, 5.0]


def test_sub_second_ticks_are_not_duplicates() -> None:
    raw = pd.DataFrame({"t": [T0 * 1000 + 100, T0 * 1000 + 900, (T0 + 60) * 1000], "v": [1, 2, 3]})
    df = normalise_frame(raw, key_col=None, time_col="t", value_col="v")
    series, report = regularise(df, interval="1min")
    assert report.duplicate_rows == 0
    assert series.values[:, 0].tolist() == [2.0, 3.0]
    assert report.merged_rows == 1


def test_irregular_data_reports_low_interval_support() -> None:
    ts = [T0, T0 + HOUR, T0 + 2 * HOUR, T0 + 2 * HOUR + 600, T0 + 3 * HOUR]
    df = frame(["a"] * 5, ts, [1, 2, 3, 4, 5])
    _, report = regularise(df, interval="1h", min_support=0.0)
    assert report.interval_support == pytest.approx(0.75)  # 2h -> 2h10 stays in one hour
    assert "75% of steps match it" in report.summary()
    with pytest.raises(ConfigError, match="--interval 1h matches only 75% of the steps"):
        regularise(df, interval="1h")


def test_duplicates_aggregate_mode_uses_the_aggregation() -> None:
    df = frame(["b", "b", "b", "b"], [T0, T0, T0, T0 + HOUR], [2, 3, 7, 5])
    series, report = regularise(df, duplicates="aggregate", aggregation="mean")
    assert report.duplicate_rows == 2
    assert series.values[:, 0].tolist() == [4.0, 5.0]
    series, _ = regularise(df, duplicates="aggregate", aggregation="last")
    assert series.values[:, 0].tolist() == [7.0, 5.0]  # last in file order


@pytest.mark.parametrize("how", ["last", "mean", "sum", "min", "max"])
def test_rows_in_one_interval_are_aggregated_at_the_interval_start(how: str) -> None:
    within = [T0 + 600, T0 + 1200, T0 + 3000]
    values = [4.0, 9.0, 1.0]
    df = frame(["a"] * 4, [*within, T0 + HOUR + 60], [*values, 6.0])
    series, report = regularise(df, interval="1h", aggregation=how)  # type: ignore[arg-type]
    reference = {
        "last": values[-1],
        "mean": np.mean(values),
        "sum": np.sum(values),
        "min": np.min(values),
        "max": np.max(values),
    }[how]
    assert series.ts.tolist() == [T0, T0 + HOUR]
    assert series.values[0, 0] == pytest.approx(reference)
    assert report.merged_rows == 2
    assert not report.interval_inferred


def test_short_series_and_segments_are_dropped_and_reported() -> None:
    keys = ["long"] * 6 + ["short"] * 2 + ["split"] * 5
    ts = [T0 + i * HOUR for i in range(6)] + [T0, T0 + HOUR]
    ts += [T0, T0 + HOUR, T0 + 10 * HOUR, T0 + 11 * HOUR, T0 + 12 * HOUR]
    series, report = regularise(frame(keys, ts, list(range(13))), min_length=3)
    assert series.keys == ("long", "split")
    assert report.dropped_keys == ["short"]
    assert [(s.key, s.length) for s in report.dropped_segments] == [("short", 2), ("split", 2)]
    split_rows = series.key_slice(1)
    assert series.ts[split_rows].tolist() == [T0 + h * HOUR for h in (10, 11, 12)]
    assert series.reset[split_rows].tolist() == [True, False, False]
    assert report.rows_out == series.n_rows == 9


def test_missing_values_become_gaps() -> None:
    df = frame(["a"] * 4, [T0 + i * HOUR for i in range(4)], [1.0, np.nan, 3.0, 4.0])
    series, report = regularise(df)
    assert report.rows_missing_value == 1
    assert series.observed.tolist() == [True, False, True, True]
    assert series.values[1, 0] == 2.0


def test_impossible_settings_are_config_errors() -> None:
    df = frame(["a", "b"], [T0, T0], [1.0, 2.0])
    with pytest.raises(ConfigError, match="cannot infer the interval"):
        regularise(df)
    with pytest.raises(ConfigError, match="cannot read interval 'hourly'"):
        regularise(df, interval="hourly")
    with pytest.raises(ConfigError, match="unknown aggregation 'median'"):
        regularise(df, interval="1h", aggregation="median")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="no series left"):
        regularise(df, interval="1h", min_length=2)


def test_fingerprint_ignores_row_order_and_timestamp_format(tmp_path: Path) -> None:
    iso = write_csv(
        tmp_path, "k,t,v\na,2015-01-01T00:00:00Z,1\nb,2015-01-01T01:00:00Z,2\n", "i.csv"
    )
    epoch = write_csv(tmp_path, f"k,t,v\nb,{(T0 + HOUR) * 1000},2\na,{T0 * 1000},1\n", "e.csv")
    changed = write_csv(tmp_path, f"k,t,v\nb,{T0 + HOUR},2.5\na,{T0},1\n", "c.csv")
    prints = [
        fingerprint(load_table(p, key_col="k", time_col="t", value_col="v"))
        for p in (iso, epoch, changed)
    ]
    assert prints[0] == prints[1] != prints[2]
    assert prints[0].startswith("sha256:")


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=30),
        min_size=1,
        max_size=4,
    ),
    max_gap=st.integers(min_value=0, max_value=4),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_regularise_invariants(steps: list[list[int]], max_gap: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    keys, ts = [], []
    for k, key_steps in enumerate(steps):
        grid = np.cumsum([0, *key_steps]) * HOUR + T0
        keys += [f"k{k}"] * len(grid)
        ts += grid.tolist()
    values = rng.normal(size=len(ts)).tolist()
    order = rng.permutation(len(ts))  # input order must not matter
    df = frame([keys[i] for i in order], [ts[i] for i in order], [values[i] for i in order])
    series, report = regularise(df, interval="1h", max_gap=max_gap, min_length=1, min_support=0)

    # every input row comes back observed, unchanged, at its own time
    obs = series.observed
    assert obs.sum() == len(ts)
    got = {
        (series.keys[k], t): v
        for k, t, v in zip(
            series.key_index()[obs], series.ts[obs], series.values[obs, 0], strict=True
        )
    }
    assert got == {(k, t): v for k, t, v in zip(keys, ts, values, strict=True)}
    # within a segment the grid is regular; resets exactly at key starts and long gaps
    step = np.diff(series.ts)
    same_key = np.diff(series.key_index()) == 0
    inside = same_key & ~series.reset[1:]
    assert (step[inside] == HOUR).all()
    assert (step[same_key & series.reset[1:]] > (max_gap + 1) * HOUR).all()
    assert series.reset.sum() == len(series.keys) + len(report.long_gaps)
    assert (~obs).sum() == report.imputed_rows
    assert report.imputed_rows == sum(s - 1 for ks in steps for s in ks if 1 < s <= max_gap + 1)


@pytest.mark.parametrize(
    ("text", "seconds", "spelled"),
    [
        ("1h", 3600, "1h"),
        ("30min", 1800, "30min"),
        ("1d", 86_400, "1d"),
        ("15s", 15, "15s"),
        ("3600", 3600, "1h"),
        (900, 900, "15min"),
        ("00:30:00", 1800, "30min"),
    ],
)
def test_interval_spellings(text: str | int, seconds: int, spelled: str) -> None:
    assert parse_interval(text) == seconds
    assert format_interval(seconds) == spelled


def test_interval_must_be_whole_positive_seconds() -> None:
    with pytest.raises(ConfigError, match="positive whole number of seconds"):
        parse_interval("0.5s")
    with pytest.raises(ConfigError, match="positive whole number of seconds"):
        parse_interval("0h")


@settings(max_examples=40, deadline=None)
@given(
    offsets_ms=st.lists(
        st.tuples(st.sampled_from(["a", "b"]), st.integers(min_value=0, max_value=4 * 3_600_000)),
        min_size=1,
        max_size=40,
        unique=True,
    ),
    how=st.sampled_from(["last", "mean", "sum", "min", "max"]),
)
def test_aggregation_matches_a_pandas_reference(
    offsets_ms: list[tuple[str, int]], how: str
) -> None:
    keys = [k for k, _ in offsets_ms]
    ts_ms = [T0 * 1000 + off for _, off in offsets_ms]
    values = [float(i) for i in range(len(ts_ms))]
    raw = pd.DataFrame({"k": keys, "t": ts_ms, "v": values})
    df = normalise_frame(raw, key_col="k", time_col="t", value_col="v")
    series, _ = regularise(
        df, interval="30min", max_gap=100, min_length=1, aggregation=how,  # type: ignore[arg-type]
        min_support=0,
    )  # fmt: skip

    ordered = raw.sort_values(["k", "t"], kind="stable")
    start = (ordered["t"] // 1000) // 1800 * 1800
    reference = ordered.groupby([ordered["k"], start])["v"].agg(how)
    obs = series.observed
    got = pd.Series(
        series.values[obs, 0],
        index=pd.MultiIndex.from_arrays(
            [np.asarray(series.keys)[series.key_index()[obs]], series.ts[obs]]
        ),
    )
    assert got.index.tolist() == reference.index.tolist()
    np.testing.assert_allclose(got.to_numpy(), reference.to_numpy())


def test_every_data_error_is_one_line_naming_the_file(tmp_path: Path) -> None:
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"k,t,v\n\xff\xfe\x00garbage\n")
    cases = {
        "binary.csv": binary,
        "nan.csv": write_csv(tmp_path, f"k,t,v\na,{T0},\n", "nan.csv"),
        "text.csv": write_csv(tmp_path, f"k,t,v\na,{T0},1 234\n", "text.csv"),
        "cols.csv": write_csv(tmp_path, "a,b\n1,2\n", "cols.csv"),
        "semi.csv": write_csv(tmp_path, f"k;t;v\na;{T0};1\n", "semi.csv"),
    }
    for name, path in cases.items():
        with pytest.raises(DataError) as info:
            load_table(path, key_col="k", time_col="t", value_col="v")
        message = str(info.value)
        assert "\n" not in message, name
        assert message.startswith(str(path)), name
        if name == "semi.csv":
            assert "does not look comma-separated" in message
        if name == "binary.csv":
            assert "cannot read the file" in message


def test_compressed_csv_and_report_as_json(tmp_path: Path) -> None:
    path = tmp_path / "data.csv.gz"
    pd.DataFrame({"k": ["a"] * 3, "t": [T0, T0 + HOUR, T0 + 5 * HOUR], "v": [1, 2, 3]}).to_csv(
        path, index=False
    )
    df = load_table(path, key_col="k", time_col="t", value_col="v")
    _, report = regularise(df, max_gap=1, min_length=1)
    as_json = json.loads(json.dumps(report.to_dict()))
    assert as_json["interval"] == "1h"
    assert as_json["long_gaps"] == [
        {
            "key": "a",
            "last_before": "2015-01-01T01:00:00Z",
            "first_after": "2015-01-01T05:00:00Z",
            "missing": 3,
        }
    ]
