"""PNG figures for the report: the loss curve and forecast-vs-actual (with the LSTM's
prediction intervals) for a few keys."""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")  # files only: no display on servers and CI

import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt
import pandas as pd

from streamcast.core.grid import Grid

FloatArray = npt.NDArray[np.float64]
#: one forecast origin: its time, the actuals, each model's forecast, the LSTM's bands
Origin = tuple[int, FloatArray, dict[str, FloatArray], dict[float, tuple[FloatArray, FloatArray]]]


def loss_curve(history: dict[str, list[float]], best_epoch: int, path: Path) -> Path:
    """Training and validation loss per epoch, the restored epoch marked."""
    fig, ax = plt.subplots(figsize=(7, 4))
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    ax.plot(epochs, history.get("loss", []), label="train (horizon MAE, scaled)")
    ax.plot(epochs, history.get("val_loss", []), label="validation")
    if best_epoch:
        ax.axvline(best_epoch, color="grey", linestyle="--", label=f"best epoch {best_epoch}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def forecast_vs_actual(
    key: str,
    history_ts: npt.NDArray[np.int64],
    history: FloatArray,
    origins: list[Origin],
    *,
    grid: Grid,
    path: Path,
) -> Path:
    """Actual values and H-step forecasts of each model from a few origins of one key,
    with the LSTM's prediction intervals as shaded bands (wider levels lighter).

    ``origins`` holds ``(origin_ts, actual [H], {model: forecast [H]}, {level: (lower [H],
    upper [H])})``.
    """
    fig, ax = plt.subplots(figsize=(11, 4))
    ax.plot(pd.to_datetime(history_ts, unit="s"), history, color="black", lw=1, label="actual")
    colours = {
        "lstm": "tab:red",
        "seasonal_naive": "tab:blue",
        "auto_arima": "tab:green",
        "auto_ets": "tab:purple",
        "auto_theta": "tab:orange",
        "naive": "tab:grey",
    }
    for i, (origin, _actual, forecasts, bands) in enumerate(origins):
        steps = grid.targets(origin, len(_actual))
        for level in sorted(bands, reverse=True):
            lower, upper = bands[level]
            ax.fill_between(
                pd.to_datetime(steps, unit="s"),
                lower,
                upper,
                color="tab:red",
                alpha=0.12 if level >= 0.9 else 0.25,
                lw=0,
                label=f"LSTM {level:.0%} interval" if i == 0 else None,
            )
        for name, values in forecasts.items():
            ax.plot(
                pd.to_datetime(steps, unit="s"),
                values,
                color=colours.get(name),
                lw=1.5 if name == "lstm" else 1,
                alpha=0.9,
                label=name if i == 0 else None,
            )
        ax.axvline(
            pd.to_datetime(origin, unit="s"),  # type: ignore[arg-type]
            color="grey",
            lw=0.5,
            ls=":",
        )
    ax.set_title(f"{key}: forecasts from {len(origins)} test origins (UTC)")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
