"""The issue-10 behaviours through the command line, on tiny data and tiny models: the
interval inferred (5-minute data trains at 5 minutes), calendar months (``--interval 1M``),
short series, the baseline guard, the final refit and the one-origin protocol."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from streamcast.core.model import OnnxStepModel
from training.cli import main

TINY = ["--units", "4", "--epochs", "2", "--quiet", "--forecasts", "forecasts.csv"]


def _csv(path: Path, stamps: pd.DatetimeIndex, values: dict[str, np.ndarray]) -> Path:
    frames = [
        pd.DataFrame({"key": k, "ts": stamps.strftime("%Y-%m-%dT%H:%M:%SZ"), "y": v})
        for k, v in values.items()
    ]
    pd.concat(frames).to_csv(path, index=False)
    return path


def _fit(data: Path, out: Path, *extra: str) -> int:
    cols = ["--key-col", "key", "--time-col", "ts", "--value-col", "y"]
    return main(["fit", "--data", str(data), *cols, "--out", str(out), *TINY, *extra])


def _report(out: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((out / "report.json").read_text())  # type: ignore[no-any-return]


def test_five_minute_data_without_interval_trains_at_five_minutes(tmp_path: Path) -> None:
    stamps = pd.date_range("2026-03-01", periods=600, freq="5min", tz="UTC")
    t = np.arange(600)
    data = _csv(tmp_path / "d.csv", stamps, {"a": np.sin(t / 12.0) + t / 100, "b": np.cos(t / 9.0)})
    out = tmp_path / "m"
    assert _fit(data, out, "--horizon", "6", "--baselines", "naive,seasonal_naive") == 0
    report = _report(out)
    prep = report["data"]["prep"]
    assert prep["interval_inferred"] and prep["interval_s"] == 300 and prep["merged_rows"] == 0
    assert report["config"]["interval"] == "5min"
    assert any("season 288 = a day of 5min intervals" in r for r in report["defaults"])
    meta = OnnxStepModel.load(out / "model.onnx").meta
    assert meta.interval_s == 300 and meta.grid.kind == "fixed"


def test_interval_1m_is_a_calendar_month_with_month_start_origins(tmp_path: Path) -> None:
    """Month-start data of 28-31 day months: one interval per month (nothing merged or
    imputed), origins and targets on the 1st, the service's grid in the metadata; short
    series (60 months) train with the defaults, on the one-origin protocol."""
    stamps = pd.date_range("2000-01-01", periods=60, freq="MS", tz="UTC")
    t = np.arange(60)
    season = 10 * np.sin(2 * np.pi * t / 12)
    data = _csv(
        tmp_path / "m.csv",
        stamps,
        {f"s{k}": 100 + k * 5 + season + t * (k - 2) for k in range(5)},
    )
    out = tmp_path / "monthly"
    code = _fit(
        data, out, "--interval", "1M", "--horizon", "6", "--season", "12",
        "--protocol", "last-window", "--baselines", "naive,seasonal_naive",
    )  # fmt: skip
    assert code == 0
    report = _report(out)
    prep = report["data"]["prep"]
    assert (prep["merged_rows"], prep["imputed_rows"], prep["interval"]) == (0, 0, "1M")
    assert report["data"]["prep"]["dropped_segments"] == []
    assert report["training"]["val_origins"] > 0  # validation laid at each key's end
    assert report["streaming"]["test_origins"] == 5  # one origin per key
    forecasts = pd.read_csv(out / "forecasts.csv")
    assert forecasts["origin_ts"].str.endswith("-01T00:00:00Z").all()
    assert forecasts["target_ts"].str.endswith("-01T00:00:00Z").all()
    meta = OnnxStepModel.load(out / "model.onnx").meta
    assert (meta.grid.kind, meta.grid.months) == ("months", 1)
    # the standard protocol again from the exported model alone
    ev = tmp_path / "ev"
    cols = ["--key-col", "key", "--time-col", "ts", "--value-col", "y"]
    argv = ["evaluate", "--model", str(out / "model.onnx"), "--data", str(data), *cols]
    assert main([*argv, "--out", str(ev), "--quiet", "--protocol", "last-window"]) == 0
    again = _report(ev)["metrics"]["lstm"]["mase"]
    assert again == pytest.approx(report["metrics"]["lstm"]["mase"], abs=1e-9)


def test_losing_to_a_baseline_warns_and_can_be_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pure seasonal series: seasonal naive is exact, a 2-epoch LSTM is not."""
    stamps = pd.date_range("2026-01-01", periods=24 * 20, freq="h", tz="UTC")
    t = np.arange(24 * 20)
    data = _csv(tmp_path / "s.csv", stamps, {"a": 50 + 20 * np.sin(2 * np.pi * t / 24)})
    args = ["--horizon", "6", "--baselines", "naive,seasonal_naive", "--no-shrinkage"]
    assert _fit(data, tmp_path / "warn", *args) == 0
    err = capsys.readouterr().err
    assert "WARNING: validation MASE: lstm" in err and "LOSES to it" in err
    assert _report(tmp_path / "warn")["validation"]["lstm_loses"]
    assert _fit(data, tmp_path / "strict", *args, "--require-beat-baseline") == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: validation MASE: lstm") and "seasonal_naive" in lines[-1]
    assert (tmp_path / "strict" / "report.json").is_file()  # written before failing


def test_final_refit_exports_a_model_fine_tuned_on_every_row(tmp_path: Path) -> None:
    stamps = pd.date_range("2026-01-01", periods=24 * 15, freq="h", tz="UTC")
    t = np.arange(24 * 15)
    data = _csv(tmp_path / "r.csv", stamps, {"a": 10 + np.sin(2 * np.pi * t / 24) + t / 50})
    out = tmp_path / "final"
    # no shrinkage: with the guard's beta 0 any weights forecast naive exactly
    args = ["--horizon", "4", "--baselines", "naive", "--no-shrinkage", "--final-refit"]
    assert _fit(data, out, *args) == 0
    report = _report(out)
    final = report["final_refit"]
    assert final["epochs"] >= 1 and "before it" in final["note"]
    assert report["metrics"]["lstm"]["mase"] != final["in_sample_test_mase"]
    # the forecasts file is the exported (refit) model's: evaluate reproduces it
    cols = ["--key-col", "key", "--time-col", "ts", "--value-col", "y"]
    ev = tmp_path / "ev"
    argv = ["evaluate", "--model", str(out / "model.onnx"), "--data", str(data), *cols]
    assert main([*argv, "--out", str(ev), "--quiet", "--forecasts", "forecasts.csv"]) == 0
    pd.testing.assert_frame_equal(
        pd.read_csv(out / "forecasts.csv"), pd.read_csv(ev / "forecasts.csv")
    )
