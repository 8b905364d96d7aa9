"""``streamcast-train``: every user error is one line on stderr with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from streamcast.core.artifact import SourceColumns
from streamcast.core.model import OnnxStepModel
from tests.support.models import rewrite_meta
from tests.support.tiny import tiny_data
from training.cli import main
from training.history import DataSource


def _csv(path: Path, rows: int = 200, keys: tuple[str, ...] = ("a", "b")) -> Path:
    ts = pd.date_range("2026-01-01", periods=rows, freq="h", tz="UTC")
    frames = [
        pd.DataFrame(
            {
                "sensor": k,
                "time": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "count": np.arange(rows, dtype=float) % 24 + i,
            }
        )
        for i, k in enumerate(keys)
    ]
    pd.concat(frames).to_csv(path, index=False)
    return path


def _fit_args(data: Path | str, out: Path, *extra: str) -> list[str]:
    return [
        "fit",
        "--data",
        str(data),
        "--key-col",
        "sensor",
        "--time-col",
        "time",
        "--value-col",
        "count",
        "--interval",
        "1h",
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]


def _user_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    return lines[0]


def test_unreadable_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    msg = _user_error(capsys, _fit_args(tmp_path / "nope.csv", tmp_path / "out"))
    assert "nope.csv" in msg


def test_missing_column(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = _csv(tmp_path / "d.csv")
    argv = _fit_args(data, tmp_path / "out")
    argv[argv.index("count")] = "temperature"
    assert "temperature" in _user_error(capsys, argv)


def test_non_negative_data_only(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = _csv(tmp_path / "d.csv")
    frame = pd.read_csv(data)
    frame.loc[5, "count"] = -2.0
    frame.to_csv(data, index=False)
    msg = _user_error(capsys, _fit_args(data, tmp_path / "out", "--non-negative"))
    assert msg == (
        "error: --non-negative: 1 of 400 values are below 0 (min -2); drop the flag or the rows"
    )
    assert not (tmp_path / "out" / "model.onnx").exists()


def test_non_numeric_value(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = _csv(tmp_path / "d.csv")
    frame = pd.read_csv(data)
    frame["count"] = frame["count"].astype(object)
    frame.loc[7, "count"] = "lots"
    frame.to_csv(data, index=False)
    msg = _user_error(capsys, _fit_args(data, tmp_path / "out"))
    assert "count" in msg and "lots" in msg


def test_duplicate_timestamps(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = _csv(tmp_path / "d.csv")
    frame = pd.read_csv(data)
    pd.concat([frame, frame.iloc[[3]]]).to_csv(data, index=False)
    assert "duplicate" in _user_error(capsys, _fit_args(data, tmp_path / "out"))


def test_all_nan_series(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = _csv(tmp_path / "d.csv")
    frame = pd.read_csv(data)
    frame.loc[frame["sensor"] == "b", "count"] = np.nan
    frame.to_csv(data, index=False)
    assert "'b'" in _user_error(capsys, _fit_args(data, tmp_path / "out"))


def test_impossible_horizon(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = _csv(tmp_path / "d.csv", rows=60)
    msg = _user_error(
        capsys, _fit_args(data, tmp_path / "out", "--window", "48", "--horizon", "24")
    )
    assert "horizon" in msg


def test_an_interval_the_data_does_not_have_names_the_one_it_has(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = _csv(tmp_path / "d.csv", rows=200)  # hourly
    argv = _fit_args(data, tmp_path / "out")
    argv[argv.index("--interval") + 1] = "5min"
    msg = _user_error(capsys, argv)
    assert "--interval 5min matches only 0% of the steps" in msg
    assert "the data's own interval is 1h: use --interval 1h (or omit --interval" in msg


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--interval", "7parsecs"], "7parsecs"),
        (["--window", "0"], "window"),
        (["--calendar", "phase_of_moon"], "phase_of_moon"),
        (["--dropout", "1.5"], "dropout"),
    ],
)
def test_bad_settings(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], needle: str
) -> None:
    data = _csv(tmp_path / "d.csv")
    assert needle in _user_error(capsys, _fit_args(data, tmp_path / "out", *args))


def test_bad_config_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"units": 8, "colour": "blue"}))
    data = _csv(tmp_path / "d.csv")
    msg = _user_error(capsys, _fit_args(data, tmp_path / "out", "--config", str(config)))
    assert "colour" in msg


def test_unknown_dataset(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    msg = _user_error(capsys, ["fit", "--data", "dataset:nope", "--out", str(tmp_path)])
    assert "nope" in msg and "pedestrian" in msg


def test_file_needs_columns(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = _csv(tmp_path / "d.csv")
    msg = _user_error(capsys, ["fit", "--data", str(data), "--out", str(tmp_path / "o")])
    assert "--time-col" in msg


def test_missing_required_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--out" in _user_error(capsys, ["fit", "--data", "dataset:pedestrian"])


def test_evaluate_missing_or_bad_model(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["evaluate", "--model", str(tmp_path / "m.onnx"), "--data", "dataset:taylor"]
    assert "m.onnx" in _user_error(capsys, argv)
    (tmp_path / "m.onnx").write_text("not a model")
    assert "m.onnx" in _user_error(capsys, argv)


@pytest.mark.parametrize("command", [[], ["fit"], ["evaluate"], ["tune"], ["datasets"]])
def test_help_with_examples(capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    assert exc.value.code == 0
    assert "streamcast-train" in capsys.readouterr().out


def test_datasets_list_and_export(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["datasets", "list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in ("pedestrian", "taylor", "gafa", "vic_elec"))
    out = tmp_path / "taylor.csv"
    assert main(["datasets", "export", "taylor", "--out", str(out)]) == 0
    assert len(pd.read_csv(out)) == 4032
    _user_error(capsys, ["datasets", "export", "nope", "--out", str(out)])


def test_fit_then_evaluate_from_the_command_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = tiny_data(tmp_path / "ped.csv", hours=24 * 14)
    out = tmp_path / "model"
    common = ["--key-col", "Sensor", "--time-col", "Date_Time", "--value-col", "Count"]
    argv = [
        "fit",
        "--data",
        str(data),
        *common,
        "--interval",
        "1h",
        "--window",
        "24",
        "--horizon",
        "4",
        "--units",
        "4",
        "--epochs",
        "1",
        "--seq-len",
        "24",
        "--calendar",
        "time_of_day",
        "--timezone",
        "Australia/Melbourne",
        "--out",
        str(out),
        "--quiet",
        "--forecasts",
        "forecasts.csv",
        "--baselines",
        "naive,seasonal_naive,auto_theta",
        "--until",
        "2015-01-14T00:00:00Z",
        "--publish-to",
        str(tmp_path / "models"),
        "--non-negative",
    ]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    # --until: rows from that time on never reached preparation
    assert report["data"]["source"] == f"{data} until 2015-01-14T00:00:00Z"
    last = pd.read_csv(out / "forecasts.csv")["origin_ts"].max()
    assert pd.Timestamp(last) < pd.Timestamp("2015-01-14T00:00:00Z")
    # --publish-to: the same bytes under the version's name, nothing else left behind
    published = tmp_path / "models" / f"{report['model']['version']}.onnx"
    assert sorted((tmp_path / "models").iterdir()) == [published]
    assert published.read_bytes() == (out / "model.onnx").read_bytes()
    assert f"published {published}" in capsys.readouterr().out
    for level in ("0.8", "0.95"):
        assert 0.0 <= report["coverage"][level]["overall"] <= 1.0
        assert len(report["coverage"][level]["per_step"]) == 4
    # 13 days leave fewer training windows than an input-drift threshold needs
    assert report["drift"]["calibration_tests"] < 20
    assert report["drift"]["input_threshold"] is None
    assert "## Prediction intervals on the test period" in (out / "report.md").read_text()
    for model in ("lstm", "naive", "seasonal_naive", "auto_theta"):
        assert set(report["metrics"][model]) >= {"mae", "rmse", "smape", "mape", "mase"}
        assert len(report["metrics"][model]["per_step"]["mase"]) == 4
    assert report["parity"]["max_abs_diff"] <= 1e-5
    assert report["config"]["interval"] == "1h"
    assert (report["config"]["window"], report["config"]["horizon"]) == (24, 4)
    table_rows = [
        line for line in (out / "report.md").read_text().splitlines() if line.startswith("| lstm |")
    ]
    assert len(table_rows) == 1
    assert (out / "loss.png").stat().st_size > 0
    # a figure per key (preparation drops the sensor whose long gap leaves it too short in
    # these 13 days), and the report says which and why
    files = report["files"]
    assert len(files["figure_keys"]) == 2 and files["figures"][0] == "loss.png"
    assert files["figures"][1:] == [
        "forecast_" + "".join(c if c.isalnum() else "_" for c in k) + ".png"
        for k in files["figure_keys"]
    ]
    assert all((out / name).stat().st_size > 0 for name in files["figures"])
    assert report["data"]["n_keys"] == 2
    note = "every key with a test origin (2)"
    assert files["figures_note"] == f"forecast figures: {note}"
    assert f"Forecast figures: {note}." in (out / "report.md").read_text()
    assert (out / "checkpoints" / "best.weights.h5").is_file()
    meta = OnnxStepModel.load(out / "model.onnx").meta
    assert meta.training.columns == SourceColumns(key="Sensor", time="Date_Time", value="Count")
    # --non-negative: recorded, and the offline forecasts (the service's reference) floored
    assert meta.non_negative and report["config"]["non_negative"] is True
    written = pd.read_csv(out / "forecasts.csv")
    bounds = written[["lower_0.8", "upper_0.8", "lower_0.95", "upper_0.95"]].to_numpy()
    assert written["forecast"].min() >= 0.0 and bounds.min() >= 0.0
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(out / "model.onnx"),
                "--data",
                str(data),
                "--out",
                str(tmp_path / "ev"),
                "--quiet",
                "--until",
                "2015-01-14",
            ]
        )
        == 0
    )
    # evaluate was given no column flags: it read the ones the model recorded at fit
    again = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert again["metrics"]["lstm"]["mase"] == pytest.approx(
        report["metrics"]["lstm"]["mase"], abs=1e-6
    )
    fit_only = ("calibration_tests", "validation_tests")
    assert again["coverage"] == report["coverage"]
    assert again["drift"] == {k: v for k, v in report["drift"].items() if k not in fit_only}
    capsys.readouterr()


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_tune_writes_a_config_fit_accepts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, suffix: str
) -> None:
    from training.config import TrainConfig

    data = tiny_data(tmp_path / "ped.csv", hours=24 * 14)
    best = tmp_path / f"best{suffix}"
    argv = [
        "tune",
        "--data",
        str(data),
        "--key-col",
        "Sensor",
        "--time-col",
        "Date_Time",
        "--value-col",
        "Count",
        "--interval",
        "1h",
        "--horizon",
        "4",
        "--epochs",
        "1",
        "--seq-len",
        "24",
        "--trials",
        "2",
        "--search-budget",
        "60",
        "--out",
        str(best),
        "--quiet",
    ]
    assert main(argv) == 0
    config = TrainConfig.load(best)
    assert config.horizon == 4 and config.epochs == 1
    assert config.units in (16, 32, 64, 96) and config.window in (24, 48, 96)
    capsys.readouterr()


def test_evaluate_with_other_features_than_the_model(
    capsys: pytest.CaptureFixture[str], tiny_model: Path, tmp_path: Path
) -> None:
    frame = pd.read_csv(tiny_model.parent / "data.csv")
    frame["temp"] = 20.0
    data = tmp_path / "with_temp.csv"
    frame.to_csv(data, index=False)
    argv = [
        "evaluate",
        "--model",
        str(tiny_model),
        "--data",
        str(data),
        "--key-col",
        "Sensor",
        "--time-col",
        "Date_Time",
        "--value-col",
        "Count",
        "--features",
        "temp",
        "--out",
        str(tmp_path / "ev"),
    ]
    assert "temp" in _user_error(capsys, argv)


def test_a_source_takes_the_columns_it_does_not_name_from_the_model() -> None:
    # a built-in dataset records the columns of its exported CSV (what the demo replays)
    recorded = DataSource(spec="dataset:pedestrian").columns
    assert recorded == SourceColumns(key="Sensor", time="Date_Time", value="Count")
    filled = DataSource(spec="new.csv", value_col="Total").with_model_columns(recorded)
    assert (filled.key_col, filled.time_col, filled.value_col) == ("Sensor", "Date_Time", "Total")
    assert filled.columns == SourceColumns(key="Sensor", time="Date_Time", value="Total")


def test_evaluate_column_flags_win_over_the_recorded_ones(
    capsys: pytest.CaptureFixture[str], tiny_model: Path, tmp_path: Path
) -> None:
    argv = ["evaluate", "--model", str(tiny_model), "--data", str(tiny_model.parent / "data.csv")]
    error = _user_error(capsys, [*argv, "--value-col", "Counts", "--out", str(tmp_path / "ev")])
    assert "Counts" in error


def test_evaluate_a_model_without_recorded_columns(
    capsys: pytest.CaptureFixture[str], tiny_model: Path, tmp_path: Path
) -> None:
    meta = json.loads(OnnxStepModel.load(tiny_model).meta.to_json())
    del meta["training"]["columns"]  # as exported before the columns were recorded
    old = rewrite_meta(tiny_model, tmp_path / "old.onnx", training=meta["training"])
    argv = ["evaluate", "--model", str(old), "--data", str(tiny_model.parent / "data.csv")]
    error = _user_error(capsys, [*argv, "--out", str(tmp_path / "ev")])
    assert "--time-col and --value-col are required" in error
    assert "predates recorded training columns" in error
    common = ["--key-col", "Sensor", "--time-col", "Date_Time", "--value-col", "Count"]
    assert main([*argv, *common, "--out", str(tmp_path / "ev"), "--quiet"]) == 0
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    fit = json.loads((tiny_model.parent / "report.json").read_text())
    lstm = fit["metrics"]["lstm"]["mase"]
    assert report["metrics"]["lstm"]["mase"] == pytest.approx(lstm, abs=1e-6)
    capsys.readouterr()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--since", "yesterday"], "cannot read time 'yesterday'"),
        (["--since", "2026-02-01", "--until", "2026-01-01"], "is not before --until"),
        (["--since", "2027-01-01"], "no rows in since 2027-01-01T00:00:00Z; the data runs from"),
    ],
)
def test_bad_time_range(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, flags: list[str], message: str
) -> None:
    assert message in _user_error(capsys, _fit_args(_csv(tmp_path / "d.csv"), tmp_path, *flags))


def test_duplicates_first_keeps_what_the_service_keeps(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A ticks topic may hold a producer's retry: --duplicates first reads it as the service
    did (the default is still an error naming the rows)."""
    from training.config import TrainConfig
    from training.history import DataSource, load_and_prepare

    path = _csv(tmp_path / "d.csv")
    frame = pd.read_csv(path)
    pd.concat([frame, frame.iloc[[5]].assign(count=-1.0)]).to_csv(path, index=False)
    assert "duplicate" in _user_error(capsys, _fit_args(path, tmp_path / "m"))
    source = DataSource(
        spec=str(path), key_col="sensor", time_col="time", value_col="count", duplicates="first"
    )
    history = load_and_prepare(source, TrainConfig(window=24, horizon=4))
    assert history.series.values[5, 0] == frame["count"].iloc[5]  # the first, not the retry


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--publish-to", "{blocker}"], "--publish-to {blocker}: not a directory"),
        (["--publish-to", "{tmp}", "--publish-if-better-than", "prophet"], "not a scored"),
        (
            ["--publish-to", "{tmp}", "--publish-if-better-than", "arima", "--baselines", "naive"],
            "arima is not a scored baseline; use naive",
        ),
        (["--baselines", "prophet"], "unknown baseline"),
        (["--publish-keep", "3"], "need --publish-to"),
    ],
)
def test_publish_settings_fail_before_training(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, flags: list[str], message: str
) -> None:
    blocker = tmp_path / "models"
    blocker.write_text("not a directory")
    names = {"blocker": blocker, "tmp": tmp_path / "ok"}
    argv = _fit_args(_csv(tmp_path / "d.csv"), tmp_path / "m", *(f.format(**names) for f in flags))
    assert message.format(**names) in _user_error(capsys, argv)
    assert not (tmp_path / "m").exists()


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """A flag the CLI accepts but cannot use must stop it before any work starts."""
    import training.tune
    import training.workflow

    def started(*args: object, **kwargs: object) -> None:
        raise AssertionError("training started despite a bad flag")

    monkeypatch.setattr(training.workflow, "fit_pipeline", started)
    monkeypatch.setattr(training.workflow, "evaluate_pipeline", started)
    monkeypatch.setattr(training.tune, "tune", started)


@pytest.mark.usefixtures("no_training")
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--calendar", "time_of_day", "--timezone", "Mars/Base"],
            "argument --timezone: unknown time zone 'Mars/Base': give an IANA name",
        ),
        (["--timezone", "Mars/Base"], "unknown time zone 'Mars/Base'"),  # no calendar
        (["--timezone", "America"], "unknown time zone 'America'"),  # a directory
        (["--timezone", "../etc/passwd"], "unknown time zone '../etc/passwd'"),
        (
            ["--trading-days", "--holidays", "2026-12-25,2026-13-45"],
            "argument --holidays: '2026-13-45' is not a date (YYYY-MM-DD)",
        ),
        (["--trading-days", "--holidays", "20260101"], "'20260101' is not a date"),
        (["--holidays", "2026-12-25"], "--holidays needs --trading-days"),
        (["--forecasts", "out.txt"], "argument --forecasts: expected a file name ending"),
        (["--forecasts", "../f.csv"], "argument --forecasts: expected a file name"),
        (["--forecasts", ".csv"], "argument --forecasts: expected a file name"),
        (["--seed", "-1"], "seed must be in [0, 2**32 - 1] (got -1)"),
        (["--max-gap", "-1"], "max_gap must be >= 0 (got -1)"),
        (["--learning-rate", "nan"], "argument --learning-rate: expected a positive number"),
        (["--time-budget", "inf"], "argument --time-budget: expected a positive number"),
    ],
)
def test_bad_flags_fail_before_any_work(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, flags: list[str], message: str
) -> None:
    argv = _fit_args(_csv(tmp_path / "d.csv", rows=48), tmp_path / "m", *flags)
    assert message in _user_error(capsys, argv)
    assert not (tmp_path / "m").exists()


@pytest.mark.usefixtures("no_training")
def test_a_bad_zone_in_a_config_file_fails_before_any_work(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"timezone": "Mars/Base", "holidays": ["2026-02-30"]}))
    argv = _fit_args(_csv(tmp_path / "d.csv", rows=48), tmp_path / "m", "--config", str(config))
    msg = _user_error(capsys, argv)
    assert "unknown time zone 'Mars/Base'" in msg and "'2026-02-30' is not a date" in msg
    assert not (tmp_path / "m").exists()


@pytest.mark.usefixtures("no_training")
def test_bad_outputs_of_evaluate_and_tune_fail_before_any_work(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    model = tmp_path / "m.onnx"
    model.write_text("never read")
    data = str(_csv(tmp_path / "d.csv", rows=48))
    argv = ["evaluate", "--model", str(model), "--data", data, "--forecasts", "a/b.csv"]
    assert "argument --forecasts" in _user_error(capsys, argv)
    tune = ["tune", "--data", data, "--key-col", "sensor", "--time-col", "time"]
    tune += ["--value-col", "count", "--quiet"]
    (tmp_path / "d.json").mkdir()
    assert "is a directory" in _user_error(capsys, [*tune, "--out", str(tmp_path / "d.json")])
    assert "give a .json or .toml" in _user_error(capsys, [*tune, "--out", "best.yaml"])
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    msg = _user_error(capsys, [*tune, "--out", str(blocker / "best.json")])
    assert f"{blocker}: not a directory" in msg
    assert "--timezone" in _user_error(capsys, [*tune, "--out", "b.json", "--timezone", "x"])


def test_out_is_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = tiny_data(tmp_path / "ped.csv", hours=24 * 14)
    blocker = tmp_path / "taken"
    blocker.write_text("not a directory")
    argv = [
        "fit",
        "--data",
        str(data),
        "--key-col",
        "Sensor",
        "--time-col",
        "Date_Time",
        "--value-col",
        "Count",
        "--window",
        "24",
        "--horizon",
        "4",
        "--seq-len",
        "24",
        "--out",
        str(blocker),
        "--quiet",
    ]
    assert "taken" in _user_error(capsys, argv)
