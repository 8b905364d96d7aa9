"""Training in the regime the service runs: long sequences from zero state, horizon loss.

The service never resets a key's (h, c) and steps once per interval (DESIGN invariant 2),
so the model is trained on long contiguous chunks of each key's training period: the LSTM
runs from zero state over ``burn_in + seq_len`` steps (one ``tf.scan``), and from every
``origin_stride``-th position after the burn-in the H-step recursive rollout runs from
the state at that position, all origins stacked into the batch dimension. The loss is the
mean absolute error (MASE is an absolute-error metric) over the horizon and origins, on
observed targets only. The burn-in (default: the window) matches serving, where the first
forecast comes after ``window`` steps from zero state; chunk start offsets are re-drawn
every epoch so each origin sees states of many ages.

The chunks are cut by :mod:`training.chunks`. Early stopping watches the same loss on
validation-period origins (the chunks may start in the training period, as the service's
state would) and restores the best weights; the learning rate halves on plateaus; the
best weights are checkpointed; a wall-clock budget stops training in time.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

from streamcast.core.features import FeatureSpec
from training.chunks import (
    ROLE_TRAIN,
    ROLE_VAL,
    ChunkCutter,
    Chunks,
    next_calendar,
)
from training.config import TrainConfig
from training.model import StepModel
from training.series import SeriesSet

MIN_LEARNING_RATE = 1e-4


@dataclass
class FitResult:
    """The trained model and how training went."""

    model: StepModel
    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    stopped: str = "epochs"
    seconds: float = 0.0
    n_train_chunks: int = 0
    n_val_chunks: int = 0

    def report_section(self) -> dict[str, Any]:
        """How training went, as ``report.json``'s ``training`` section."""
        return {
            "epochs_run": len(self.history["loss"]),
            "best_epoch": self.best_epoch,
            "best_val_loss": self.best_val_loss,
            "stopped": self.stopped,
            "train_chunks": self.n_train_chunks,
            "val_chunks": self.n_val_chunks,
            "history": self.history,
        }


class HorizonLoss:
    """The compiled many-to-many horizon loss and train step for one model."""

    def __init__(self, model: StepModel, config: TrainConfig) -> None:
        self.model = model
        self.config = config
        self.origins = tf.constant(
            config.warmup_steps + np.arange(0, config.seq_len, config.origin_stride), dtype=tf.int32
        )
        self.optimizer = keras.optimizers.Adam(
            learning_rate=config.learning_rate, clipnorm=config.clipnorm
        )
        self.optimizer.build(model.trainable_variables)
        f = model.n_inputs + model.n_calendar
        c = max(model.n_calendar, 0)
        e = model.n_inputs - 1
        spec = [
            tf.TensorSpec([None, None, f], tf.float32),
            tf.TensorSpec([None, None, config.horizon, c], tf.float32),
            tf.TensorSpec([None, None, e], tf.float32),
            tf.TensorSpec([None, None, config.horizon], tf.float32),
            tf.TensorSpec([None, None, config.horizon], tf.float32),
        ]
        self.train_step = tf.function(self._train_step, input_signature=spec)
        self.eval_step = tf.function(self._eval_loss, input_signature=spec)

    def _loss(
        self,
        inputs: tf.Tensor,
        calendar: tf.Tensor,
        extras: tf.Tensor,
        targets: tf.Tensor,
        weights: tf.Tensor,
        *,
        training: bool,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        model = self.model
        h_all, c_all = model.sequence_states(inputs, training)
        n_origins = tf.shape(self.origins)[0]
        batch = tf.shape(inputs)[0]
        s = model.state_size
        hs = tf.reshape(tf.transpose(tf.gather(h_all, self.origins), [1, 0, 2]), [-1, s])
        cs = tf.reshape(tf.transpose(tf.gather(c_all, self.origins), [1, 0, 2]), [-1, s])
        flat = batch * n_origins
        cal = tf.reshape(calendar, [flat, self.config.horizon, model.n_calendar])
        ext = tf.reshape(extras, [flat, model.n_inputs - 1])
        first = model.head(hs, training)
        pred = model.rollout(
            hs,
            cs,
            first,
            ext,
            cal if model.n_calendar else None,
            horizon=self.config.horizon,
            training=training,
        )
        w = tf.reshape(weights, [flat, self.config.horizon])
        err = tf.abs(pred - tf.reshape(targets, [flat, self.config.horizon])) * w
        return tf.reduce_sum(err), tf.reduce_sum(w)

    def _train_step(
        self,
        inputs: tf.Tensor,
        calendar: tf.Tensor,
        extras: tf.Tensor,
        targets: tf.Tensor,
        weights: tf.Tensor,
    ) -> tf.Tensor:
        variables = [v.value for v in self.model.trainable_variables]
        with tf.GradientTape() as tape:
            total, count = self._loss(inputs, calendar, extras, targets, weights, training=True)
            loss = total / tf.maximum(count, 1.0)
        grads = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables, strict=True))
        return tf.stack([total, count])

    def _eval_loss(
        self,
        inputs: tf.Tensor,
        calendar: tf.Tensor,
        extras: tf.Tensor,
        targets: tf.Tensor,
        weights: tf.Tensor,
    ) -> tf.Tensor:
        total, count = self._loss(inputs, calendar, extras, targets, weights, training=False)
        return tf.stack([total, count])

    def run(
        self,
        chunks: Chunks,
        batch_size: int,
        train: bool,
        rng: np.random.Generator | None = None,
        progress: keras.utils.Progbar | None = None,
    ) -> float:
        """One pass over ``chunks``; returns the mean absolute scaled error."""
        order = rng.permutation(len(chunks)) if rng is not None else np.arange(len(chunks))
        total = 0.0
        count = 0.0
        step = self.train_step if train else self.eval_step
        for i, start in enumerate(range(0, len(order), batch_size)):
            part = chunks.take(order[start : start + batch_size])
            out = step(part.inputs, part.calendar, part.extras, part.targets, part.weights)
            total += float(out[0])
            count += float(out[1])
            if progress is not None:
                progress.update(i + 1, values=[("loss", total / max(count, 1.0))])
        return total / max(count, 1.0)


class _Plateau:
    """Early stopping on the validation loss: keeps the best weights (and checkpoints them),
    halves the learning rate every ``patience // 2`` epochs without improvement, and stops
    after ``patience`` such epochs."""

    def __init__(
        self, model: StepModel, loss: HorizonLoss, config: TrainConfig, checkpoint: Path | None
    ) -> None:
        self.model = model
        self.optimizer = loss.optimizer
        self.patience = config.patience
        self.checkpoint = checkpoint
        self.lr = config.learning_rate
        self.best_weights = model.get_weights()
        self.best_loss = math.inf
        self.best_epoch = 0
        self.since_best = 0

    def update(self, epoch: int, val_loss: float) -> str | None:
        """Take epoch ``epoch``'s validation loss; returns why training stops, or None."""
        if val_loss < self.best_loss - 1e-5:
            self.best_loss, self.best_epoch, self.since_best = val_loss, epoch + 1, 0
            self.best_weights = self.model.get_weights()
            if self.checkpoint is not None:
                self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
                self.model.save_weights(self.checkpoint)
            return None
        self.since_best += 1
        if self.since_best >= self.patience:
            return f"early stopping after {self.patience} epochs without improvement"
        if self.since_best % max(self.patience // 2, 1) == 0 and self.lr > MIN_LEARNING_RATE:
            self.lr = max(self.lr * 0.5, MIN_LEARNING_RATE)
            self.optimizer.learning_rate.assign(self.lr)
        return None


def _run_epoch(
    loss: HorizonLoss,
    cutter: ChunkCutter,
    val: Chunks,
    rng: np.random.Generator,
    *,
    epoch: int,
    verbose: bool,
) -> tuple[float, float, int]:
    """One epoch: chunks cut at a fresh random offset, one shuffled pass over them, then
    the validation loss; returns ``(train_loss, val_loss, n_train_chunks)``."""
    config = cutter.config
    chunks = cutter.cut(ROLE_TRAIN, int(rng.integers(0, config.seq_len)))
    bar = None
    if verbose and sys.stdout.isatty():
        # a live bar only on a terminal: in logs and CI it is a wall of escape codes
        print(f"epoch {epoch + 1}/{config.epochs}")
        bar = keras.utils.Progbar(math.ceil(len(chunks) / config.batch_size))
    train_loss = loss.run(chunks, config.batch_size, True, rng, bar)
    val_loss = loss.run(val, config.batch_size, False) if len(val) else train_loss
    return train_loss, val_loss, len(chunks)


def train(
    series: SeriesSet,
    scaled: npt.NDArray[np.float32],
    roles: npt.NDArray[np.int8],
    spec: FeatureSpec,
    config: TrainConfig,
    *,
    checkpoint_dir: Path | None = None,
    verbose: bool = True,
) -> FitResult:
    """Train a :class:`StepModel` on the training rows, early-stopping on validation rows."""
    keras.utils.set_random_seed(config.seed)
    started = time.monotonic()
    cutter = ChunkCutter(series, scaled, next_calendar(series, spec), roles, config)
    rng = np.random.default_rng(config.seed)
    val = cutter.cut(ROLE_VAL, 0)
    cutter.check_trainable()
    model = StepModel.from_config_values(config, n_inputs=scaled.shape[1])
    loss = HorizonLoss(model, config)
    checkpoint = None if checkpoint_dir is None else checkpoint_dir / "best.weights.h5"
    plateau = _Plateau(model, loss, config, checkpoint)
    result = FitResult(model=model, history={"loss": [], "val_loss": [], "lr": []})
    result.n_val_chunks = len(val)
    epoch_seconds = 0.0
    for epoch in range(config.epochs):
        epoch_start = time.monotonic()
        if epoch > 0 and epoch_start - started + epoch_seconds > config.time_budget_s:
            result.stopped = f"time budget {config.time_budget_s:.0f}s"
            break
        train_loss, val_loss, result.n_train_chunks = _run_epoch(
            loss, cutter, val, rng, epoch=epoch, verbose=verbose
        )
        epoch_seconds = time.monotonic() - epoch_start
        for name, value in (("loss", train_loss), ("val_loss", val_loss), ("lr", plateau.lr)):
            result.history[name].append(value)
        if verbose:
            print(
                f"epoch {epoch + 1}/{config.epochs}  loss {train_loss:.4f}  "
                f"val_loss {val_loss:.4f}  lr {plateau.lr:.2g}  ({epoch_seconds:.1f}s)",
                flush=True,
            )
        stop = plateau.update(epoch, val_loss)
        if stop is not None:
            result.stopped = stop
            break
    model.set_weights(plateau.best_weights)
    result.best_epoch, result.best_val_loss = plateau.best_epoch, plateau.best_loss
    result.seconds = time.monotonic() - started
    return result
