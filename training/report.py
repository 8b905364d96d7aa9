"""``report.json`` and ``report.md``: the backtest comparison and how the model was made.

:func:`backtest_report` is what ``fit`` and ``evaluate`` both report (config, data,
metrics, the streaming replay); each pipeline adds its own sections (parity, training,
calibration, model, timings, files) and :func:`write_report` writes both files.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.metrics import METRIC_NAMES

if TYPE_CHECKING:  # at run time these would make the report depend on the whole pipeline
    from training.backtest import Backtest
    from training.config import TrainConfig
    from training.history import PreparedHistory

MODELS = ("lstm", "naive", "seasonal_naive", "auto_ets", "auto_theta", "auto_arima")


def backtest_report(
    name: str, history: PreparedHistory, config: TrainConfig, bt: Backtest
) -> dict[str, Any]:
    """The report sections ``fit`` and ``evaluate`` share: what was run on which data, and
    how every model scored."""
    cfg = config.to_dict()
    cfg["interval"] = history.series.grid.describe()
    parts = history.parts
    return {
        "name": name,
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "config": cfg,
        "data": {
            "source": history.source,
            "fingerprint": history.fingerprint,
            "n_keys": len(history.series.keys),
            "n_rows": history.series.n_rows,
            "rows": {
                "train": int(parts.train.sum()),
                "val": int(parts.val.sum()),
                "test": int(parts.test.sum()),
            },
            "prep": history.prep.to_dict(),
        },
        "metrics": bt.metrics,
        "streaming": {
            "ort_calls": bt.fc.calls,
            "forecast_origins": len(bt.fc.row),
            "test_origins": len(bt.test),
            "scored_forecasts": int(bt.mask.sum()),
        },
    }


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def comparison_table(metrics: dict[str, Any]) -> str:
    """Markdown table: one row per model, one column per metric, best MASE first."""
    names = [m for m in MODELS if m in metrics] + [m for m in metrics if m not in MODELS]
    names.sort(key=lambda m: metrics[m].get("mase", math.inf))
    header = "| model | " + " | ".join(METRIC_NAMES) + " | forecasts |"
    rule = "|---|" + "---:|" * (len(METRIC_NAMES) + 1)
    rows = [
        f"| {name} | "
        + " | ".join(_fmt(metrics[name].get(metric, math.nan)) for metric in METRIC_NAMES)
        + f" | {metrics[name].get('n_forecasts', 0):,} |"
        for name in names
    ]
    return "\n".join([header, rule, *rows])


def per_step_table(metrics: dict[str, Any], metric: str = "mase") -> str:
    """Markdown table of one metric per horizon step, one column per model."""
    names = [m for m in MODELS if m in metrics]
    steps = len(metrics[names[0]]["per_step"][metric]) if names else 0
    lines = ["| step | " + " | ".join(names) + " |", "|---:|" + "---:|" * len(names)]
    for k in range(steps):
        cells = " | ".join(_fmt(metrics[m]["per_step"][metric][k]) for m in names)
        lines.append(f"| {k + 1} | {cells} |")
    return "\n".join(lines)


def markdown(report: dict[str, Any]) -> str:
    """The human-readable report."""
    cfg = report["config"]
    data = report["data"]
    lines = [
        f"# {report['name']}: streaming backtest",
        "",
        f"Data: `{data['source']}` ({data['n_keys']} keys, {data['n_rows']:,} regular rows, "
        f"fingerprint `{data['fingerprint'][:19]}`). Interval {cfg['interval']}, window "
        f"{cfg['window']}, horizon {cfg['horizon']}, season {cfg['season']}.",
        "",
        "The LSTM is measured the way the service runs it: the exported ONNX step, one step "
        "per interval from zero state at each reset, never re-run over a window. Every model "
        "forecasts from the same test-period origins; MASE is scaled by each key's in-sample "
        f"seasonal-naive MAE (season {cfg['season']}) on the training period. MAPE skips "
        "zero actuals; sMAPE counts 0/0 as 0.",
        "",
        comparison_table(report["metrics"]),
        "",
        f"Export parity (ONNX Runtime vs TensorFlow, scaled): max abs diff "
        f"{report['parity']['max_abs_diff']:.2e} (tolerance {report['parity']['tolerance']:g}).",
        "",
        "## MASE per horizon step",
        "",
        per_step_table(report["metrics"]),
        "",
        "## Timings (s)",
        "",
        "| phase | seconds |",
        "|---|---:|",
        *[f"| {k} | {v:.1f} |" for k, v in report.get("timings", {}).items()],
    ]
    lines += quality_lines(report)
    training = report.get("training")
    if training:
        lines += [
            "",
            "## Training",
            "",
            f"{training['epochs_run']} epochs ({training['stopped']}); best epoch "
            f"{training['best_epoch']} (validation horizon MAE, scaled "
            f"{training['best_val_loss']:.4f}) restored.",
        ]
    files = report.get("files", {})
    figures = files.get("figures", [])
    if figures:
        lines += ["", "## Figures", ""]
        if files.get("figures_note"):
            lines += [f"{files['figures_note'][0].upper()}{files['figures_note'][1:]}.", ""]
        lines += [f"![{f}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


def quality_lines(report: dict[str, Any]) -> list[str]:
    """The report's interval coverage and input-drift sections, as Markdown lines."""
    lines: list[str] = []
    cover = report.get("coverage")
    if cover:
        lines += [
            "",
            "## Prediction intervals on the test period",
            "",
            "Share of observed targets inside the band the service publishes: forecast + "
            "(validation quantile -/+ the key's adaptive offset) x the key's scale, the "
            "offsets following each key's misses (streamcast/core/bands.py); the static "
            "column is the validation quantiles alone.",
            "",
            "| level | coverage | step 1 | last step | static bands |",
            "|---:|---:|---:|---:|---:|",
            *[
                f"| {float(level):.0%} | {c['overall']:.1%} | {c['per_step'][0]:.1%} "
                f"| {c['per_step'][-1]:.1%} | {c.get('static_overall', c['overall']):.1%} |"
                for level, c in cover.items()
            ],
        ]
    drift = report.get("drift")
    if drift and drift.get("input_alarms") is not None:
        rate = drift.get("input_false_alarm_rate")
        lines += [
            "",
            "## Input drift on the test period",
            "",
            f"KS threshold {drift['input_threshold']:.3f} (validation tests above it: "
            f"{'n/a' if rate is None else f'{rate:.2%}'}); the test period's "
            f"{drift['tests']:,} tests (one per key every {drift['test_every']} forecast "
            f"intervals) raise {drift['input_alarms']} alarm(s): "
            f"{drift['input_alarms_per_10k']:.2f} per 10,000 key-intervals.",
        ]
    return lines


def write_report(out_dir: Path, report: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "report.json"
    md_path = out_dir / "report.md"
    json_path.write_text(json.dumps(report, indent=2, default=_jsonable) + "\n")
    md_path.write_text(markdown(report))
    return json_path, md_path


def _jsonable(value: object) -> object:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, tuple | set):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to report.json")
