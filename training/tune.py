"""Hyperparameter search with keras-tuner (random search) within a wall-clock budget.

Searched: hidden size, layers, window (also the training burn-in), dropout and learning
rate. Each trial trains with the normal loop (early stopping, its share of the budget) and
is scored by its best validation horizon loss; the best trial's settings are returned as
a :class:`TrainConfig` that ``streamcast-train fit --config`` accepts.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import keras_tuner

from training.config import TrainConfig
from training.fit import train
from training.history import DataSource, load_and_prepare, scale_history

UNITS = (16, 32, 64, 96)
LAYERS = (1, 2)
WINDOWS = (24, 48, 96)
DROPOUTS = (0.0, 0.1, 0.2)
#: what a trial that could not run (budget spent) reports: worse than any real loss
SKIPPED_LOSS = 1e9


class _BudgetedSearch(keras_tuner.RandomSearch):  # type: ignore[misc]
    """Random search whose trials are our own training runs."""

    def __init__(self, run: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._run = run

    def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> float:
        hp = trial.hyperparameters
        return float(
            self._run(
                units=hp.Choice("units", list(UNITS)),
                layers=hp.Choice("layers", list(LAYERS)),
                window=hp.Choice("window", list(WINDOWS)),
                dropout=hp.Choice("dropout", list(DROPOUTS)),
                learning_rate=hp.Float("learning_rate", 1e-3, 1e-2, sampling="log"),
            )
        )


def tune(
    source: DataSource,
    base: TrainConfig,
    *,
    trials: int,
    budget_s: float,
    verbose: bool = True,
    workdir: Path | None = None,
) -> tuple[TrainConfig, float]:
    """Search around ``base``; returns the best config and its validation loss."""
    started = time.monotonic()
    # prepared for the longest window searched, so every trial sees the same rows
    history = load_and_prepare(source, base.updated(window=max((*WINDOWS, base.window_))))
    base = history.config.updated(window=base.window)
    scaled = scale_history(history)
    state = {"done": 0, "loss": math.inf}
    best_config = [base]

    def run(**changes: Any) -> float:
        remaining = budget_s - (time.monotonic() - started)
        if remaining < 5:
            return SKIPPED_LOSS
        left = max(trials - int(state["done"]), 1)
        config = base.updated(**changes, time_budget_s=max(remaining / left, 5.0))
        state["done"] += 1
        if config.window is None:
            config = config.updated(window=history.config.window_)
        result = train(
            history.series,
            scaled.inputs,
            history.parts.role,
            scaled.spec,
            scaled.scheme,
            config.updated(
                refit=False, lags=tuple(g for g in scaled.scheme.lags if g <= config.window_)
            ),
            verbose=False,
        )
        if verbose:
            print(f"trial {state['done']}: {changes} -> val_loss {result.best_val_loss:.4f}")
        if result.best_val_loss < state["loss"]:
            state["loss"] = result.best_val_loss
            best_config[0] = config.updated(time_budget_s=base.time_budget_s)
        return float(result.best_val_loss)

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        search = _BudgetedSearch(
            run,
            max_trials=trials,
            seed=base.seed,
            directory=tmp,
            project_name="streamcast",
            overwrite=True,
        )
        search.search(verbose=1 if verbose else 0)
    return best_config[0], float(state["loss"])
