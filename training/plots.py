"""PNG figures for the report: the loss curve and forecast-vs-actual (with the LSTM's
prediction intervals) of one key, in the model's zone."""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")  # files only: no display on servers and CI

import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt
import pandas as pd
from matplotlib.figure import Figure

from streamcast.core.grid import Grid

FloatArray = npt.NDArray[np.float64]
#: a line colour per model
COLOURS = {
    "lstm": "tab:red",
    "seasonal_naive": "tab:blue",
    "auto_arima": "tab:green",
    "auto_ets": "tab:purple",
    "auto_theta": "tab:orange",
    "naive": "tab:grey",
}
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
    return save(fig, path)


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` to ``path`` as PNG and release it."""
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def forecast_figure(
    key: str,
    history_ts: npt.NDArray[np.int64],
    history: FloatArray,
    origins: list[Origin],
    *,
    grid: Grid,
    timezone: str = "UTC",
) -> Figure:
    """Actual values and H-step forecasts of each model from a few origins of one key,
    with the LSTM's prediction intervals as shaded bands (wider levels lighter), the time
    axis in ``timezone`` (wall-clock time there, DST included).

    ``origins`` holds ``(origin_ts, actual [H], {model: forecast [H]}, {level: (lower [H],
    upper [H])})``, times in epoch seconds.
    """

    def local(ts: npt.NDArray[np.int64] | int) -> pd.DatetimeIndex:
        return pd.to_datetime(np.atleast_1d(ts), unit="s", utc=True).tz_convert(timezone)

    fig, ax = plt.subplots(figsize=(11, 4))
    ax.plot(local(history_ts), history, color="black", lw=1, label="actual")
    for i, (origin, actual, forecasts, bands) in enumerate(origins):
        steps = local(grid.targets(origin, len(actual)))
        for level in sorted(bands, reverse=True):
            lower, upper = bands[level]
            ax.fill_between(
                steps,
                lower,
                upper,
                color="tab:red",
                alpha=0.12 if level >= 0.9 else 0.25,
                lw=0,
                label=f"LSTM {level:.0%} interval" if i == 0 else None,
            )
        for name, values in forecasts.items():
            ax.plot(
                steps,
                values,
                color=COLOURS.get(name),
                lw=1.5 if name == "lstm" else 1,
                alpha=0.9,
                label=name if i == 0 else None,
            )
        ax.axvline(local(origin)[0], color="grey", lw=0.5, ls=":")  # type: ignore[arg-type]
    ax.set_title(f"{key}: forecasts from {len(origins)} test origins")
    ax.set_xlabel(f"time ({timezone})")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig
