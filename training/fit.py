"""Training in the regime the service runs, for short and long series alike.

The LSTM runs from zero state over each sequence (:mod:`training.chunks`) and from every
origin rolls out the whole horizon in the graph (:meth:`training.model.StepModel.rollout`);
the loss is the mean over scored targets of ``|y - y_hat| / q_key`` -- the MASE, in graph
units a weight ``K / q`` on the error.

1. **Early stopping** on the validation origins (patience ``patience``, the learning rate
   halved every ``patience // 2`` epochs without improvement, the best weights restored)
   within 80 % of the time budget (``time_budget_s``, with ``refit``);
2. **shrinkage toward naive** (:func:`fit_beta`): the forecast becomes ``naive + beta
   (lstm - naive)`` with the validation-best ``beta`` -- kept only when the blend beats
   naive on validation by two standard errors; otherwise ``beta = 0`` and the model
   forecasts naive exactly (a random walk's best forecast), and ``fit`` says so;
3. **refit on all fit rows** (``refit``): the early-stopped weights are fine-tuned on the
   training + validation rows for ``ceil(best_epoch / 4)`` epochs at the best epoch's
   learning rate, cut at the budget -- so the model going into production has seen the
   most recent stretch of its data.

:func:`refit_all` fine-tunes the same way on *every* row (test included), after the
backtest measured the model: ``fit --final-refit``.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

from streamcast.core.features import FeatureSpec, LevelScale
from training.chunks import ROLE_TRAIN, ROLE_VAL, Batch, Chunk, TrainingData
from training.config import TrainConfig
from training.errors import ConfigError
from training.evaluate import RowInputs
from training.model import StepModel
from training.series import SeriesSet

MIN_LEARNING_RATE = 1e-4
#: share of the budget early stopping may use when a refit follows
TRAIN_SHARE = 0.8
#: the blend must beat naive on validation by this many standard errors
GUARD_T = 2.0


@dataclass
class FitResult:
    """The trained model and how training went."""

    model: StepModel
    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    best_lr: float = 0.0
    stopped: str = "epochs"
    seconds: float = 0.0
    refit_epochs: int = 0
    refit_seconds: float = 0.0
    n_train_chunks: int = 0
    n_val_origins: int = 0
    beta: float = 1.0
    beta_report: str = ""

    def report_section(self) -> dict[str, Any]:
        """How training went, as ``report.json``'s ``training`` section."""
        return {
            "epochs_run": len(self.history["loss"]),
            "best_epoch": self.best_epoch,
            "best_val_loss": self.best_val_loss,
            "stopped": self.stopped,
            "refit_epochs": self.refit_epochs,
            "refit_seconds": self.refit_seconds,
            "train_chunks": self.n_train_chunks,
            "val_origins": self.n_val_origins,
            "shrinkage": {"beta": self.beta, "report": self.beta_report},
            "history": self.history,
        }


class Trainer:
    """The compiled loss, train step and prediction for one model."""

    def __init__(self, model: StepModel, config: TrainConfig) -> None:
        self.model, self.config = model, config
        self.optimizer = keras.optimizers.Adam(
            learning_rate=config.learning_rate, clipnorm=config.clipnorm
        )
        self.optimizer.build(model.trainable_variables)
        h, c = config.horizon, model.n_calendar
        spec = [
            tf.TensorSpec([None, None, model.step_width], tf.float32),
            tf.TensorSpec([None, None, c], tf.float32),
            tf.TensorSpec([None, None], tf.int32),
            tf.TensorSpec([None, None, h, c], tf.float32),
            tf.TensorSpec([None, None, h], tf.float32),
            tf.TensorSpec([None, None, h], tf.float32),
            tf.TensorSpec([None, None, h], tf.float32),
        ]
        self.train_step = tf.function(self._train, input_signature=spec)
        self.eval_step = tf.function(self._eval, input_signature=spec)
        self.predict_step = tf.function(self._predict, input_signature=spec[:4])

    def _rollouts(
        self, seq_x: tf.Tensor, seq_cal: tf.Tensor, pos: tf.Tensor, cal: tf.Tensor, training: bool
    ) -> tf.Tensor:
        model = self.model
        b, o = tf.shape(seq_x)[0], tf.shape(pos)[1]
        flat = b * o
        cells = model.cell_input(seq_x, seq_cal if model.n_calendar else None)
        h_all, c_all = model.sequence_states(cells, training)
        hs = tf.reshape(tf.gather(tf.transpose(h_all, [1, 0, 2]), pos, batch_dims=1), [flat, -1])
        cs = tf.reshape(tf.gather(tf.transpose(c_all, [1, 0, 2]), pos, batch_dims=1), [flat, -1])
        x0 = tf.reshape(tf.gather(seq_x, pos, batch_dims=1), [flat, model.step_width])
        in0 = tf.reshape(tf.gather(cells, pos, batch_dims=1), [flat, model.cell_width])
        cal_f = tf.reshape(cal, [flat, self.config.horizon, model.n_calendar])
        z = model.rollout(hs, cs, x0, in0, cal_f if model.n_calendar else None, training)
        return tf.reshape(z, [b, o, self.config.horizon])

    def _train(self, *args: tf.Tensor) -> tf.Tensor:
        variables = [v.value for v in self.model.trainable_variables]
        with tf.GradientTape() as tape:
            z = self._rollouts(args[0], args[1], args[2], args[3], training=True)
            total = tf.reduce_sum(tf.abs(z - args[4]) * args[5])
            count = tf.reduce_sum(args[6])
            loss = total / tf.maximum(count, 1.0)
        grads = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables, strict=True))
        return tf.stack([total, count])

    def _eval(self, *args: tf.Tensor) -> tf.Tensor:
        z = self._rollouts(args[0], args[1], args[2], args[3], training=False)
        return tf.stack([tf.reduce_sum(tf.abs(z - args[4]) * args[5]), tf.reduce_sum(args[6])])

    def _predict(self, *args: tf.Tensor) -> tf.Tensor:
        return self._rollouts(args[0], args[1], args[2], args[3], training=False)

    @staticmethod
    def _feeds(batch: Batch) -> tuple[npt.NDArray[Any], ...]:
        return (batch.seq_x, batch.seq_cal, batch.pos, batch.cal)

    def run(
        self, data: TrainingData, chunks: list[Chunk], train: bool, rng: np.random.Generator | None
    ) -> float:
        """One pass over ``chunks``; returns the MASE-weighted mean absolute error."""
        if not chunks:
            return math.nan
        step = self.train_step if train else self.eval_step
        total = count = 0.0
        for group in data.batches(chunks, rng):
            bt = data.batch(group)
            out = step(*self._feeds(bt), bt.target, bt.weight, bt.mask)
            total += float(out[0])
            count += float(out[1])
        return total / max(count, 1.0)

    def predictions(
        self, data: TrainingData, chunks: list[Chunk]
    ) -> tuple[npt.NDArray[np.float32], ...]:
        """``(z, target, weight, naive)`` of every origin of ``chunks`` (flattened)."""
        zs, ts, ws, ns = [], [], [], []
        h = self.config.horizon
        last = self.model.step_width - 1
        for group in data.batches(chunks, None):
            bt = data.batch(group)
            z = self.predict_step(*self._feeds(bt)).numpy()
            x0 = np.take_along_axis(bt.seq_x, bt.pos[..., None].astype(np.int64), axis=1)
            zs.append(z.reshape(-1, h))
            ts.append(bt.target.reshape(-1, h))
            ws.append(bt.weight.reshape(-1, h))
            ns.append(x0[..., last].reshape(-1))
        return tuple(np.concatenate(a) for a in (zs, ts, ws, ns))


def fit_beta(
    z: npt.NDArray[np.float32],
    target: npt.NDArray[np.float32],
    weight: npt.NDArray[np.float32],
    naive: npt.NDArray[np.float32],
    stride: int = 1,
) -> tuple[float, str]:
    """Shrinkage toward naive on validation: ``naive + beta (lstm - naive)``.

    ``beta`` is the 0.05-grid point of [0, 1] minimising the validation MASE (ties: the
    larger). Guard: the blend must beat naive *significantly* on validation -- the mean
    per-origin loss difference at least :data:`GUARD_T` standard errors, counting ``n *
    stride / H`` independent origins (rolling origins overlap by ``H - stride`` steps) --
    otherwise ``beta = 0``: the model forecasts exactly naive.

    >>> z = np.array([[1.0, 1.0]] * 50, dtype=np.float32)
    >>> beta, _ = fit_beta(z, z, np.ones_like(z), np.zeros(50, dtype=np.float32))
    >>> beta
    1.0
    """
    n = naive[:, None]
    count = max(float((weight > 0).sum()), 1.0)
    grid = np.round(np.arange(0.0, 1.0001, 0.05), 2)
    losses = [float(np.sum(np.abs(n + b * (z - n) - target) * weight)) / count for b in grid]
    i = max(j for j in range(len(grid)) if losses[j] <= min(losses) + 1e-12)
    beta = float(grid[i])
    keep = weight.sum(1) > 0
    d = (np.abs(n - target) * weight).sum(1)[keep] - (
        np.abs(n + beta * (z - n) - target) * weight
    ).sum(1)[keep]
    n_eff = max(1.0, len(d) * stride / z.shape[1])
    se = float(np.std(d)) / math.sqrt(n_eff) if len(d) > 1 else math.inf
    mean = float(np.mean(d)) if len(d) else 0.0
    tstat = mean / se if se > 0 else (math.inf if mean > 0 else 0.0)
    report = (
        f"validation MASE-weighted MAE: lstm {losses[-1]:.4f}, naive {losses[0]:.4f}, "
        f"blend beta={beta:.2f} {losses[i]:.4f}; gain over naive t={tstat:.2f} "
        f"(n_eff {n_eff:.0f})"
    )
    if beta > 0 and tstat < GUARD_T:
        report += " -> not significant: beta=0, the model forecasts naive"
        beta = 0.0
    return beta, report


def _one_thread() -> None:
    """One intra-op thread (a fair share of a shared machine); a TensorFlow context that is
    already initialised keeps its setting (TensorFlow cannot change it any more)."""
    with contextlib.suppress(RuntimeError):
        tf.config.threading.set_intra_op_parallelism_threads(1)


def build_model(config: TrainConfig, scheme: LevelScale, spec: FeatureSpec) -> StepModel:
    """A fresh model for ``config`` (initialised from its seed)."""
    return StepModel.from_config_values(
        config.updated(calendar=spec.calendar), 1 + len(spec.extra_names), scheme
    )


def train(  # noqa: PLR0915, PLR0917 - the regime's steps in order; the history's parts
    series: SeriesSet,
    inputs: RowInputs,
    roles: npt.NDArray[np.int8],
    spec: FeatureSpec,
    scheme: LevelScale,
    config: TrainConfig,
    *,
    verbose: bool = True,
) -> FitResult:
    """Early stopping, shrinkage and the refit (module docstring)."""
    keras.utils.set_random_seed(config.seed)
    _one_thread()
    started = time.monotonic()
    data = TrainingData(series, inputs, roles, spec, config)
    model = build_model(config, scheme, spec)
    trainer = Trainer(model, config)
    rng = np.random.default_rng(config.seed)
    if not data.chunks(ROLE_TRAIN, 0):
        raise ConfigError(
            f"no training origin: a forecast needs --window {config.window_} rows before it "
            f"and a target among a key's training rows, and no key has more than "
            f"{config.window_} training rows before its validation and test ones "
            f"(horizon {config.horizon}); use a shorter --window or --horizon, or more data"
        )
    val = data.chunks(ROLE_VAL, 0)
    result = FitResult(model=model, history={"loss": [], "val_loss": [], "lr": []})
    result.n_val_origins = sum(len(c.pos) for c in val)
    budget = config.time_budget_s * (TRAIN_SHARE if config.refit else 1.0)
    best, lr, since, epoch_s = model.get_weights(), config.learning_rate, 0, 0.0
    result.best_lr = lr
    if verbose and not val:
        print("no validation origins: early stopping watches the training loss", flush=True)
    for epoch in range(config.epochs):
        t0 = time.monotonic()
        if epoch > 0 and t0 - started + epoch_s > budget:
            result.stopped = f"time budget {budget:.0f}s"
            break
        chunks = data.chunks(ROLE_TRAIN, int(rng.integers(0, 1 << 30)))
        result.n_train_chunks = len(chunks)
        loss = trainer.run(data, chunks, True, rng)
        val_loss = trainer.run(data, val, False, None) if val else loss
        epoch_s = time.monotonic() - t0
        for name, value in (("loss", loss), ("val_loss", val_loss), ("lr", lr)):
            result.history[name].append(value)
        if verbose:
            print(
                f"epoch {epoch + 1}/{config.epochs}  loss {loss:.4f}  val_loss {val_loss:.4f}  "
                f"lr {lr:.2g}  ({epoch_s:.1f}s)",
                flush=True,
            )
        if val_loss < result.best_val_loss - 1e-5:
            result.best_val_loss, result.best_epoch, result.best_lr = val_loss, epoch + 1, lr
            best, since = model.get_weights(), 0
            continue
        since += 1
        if since >= config.patience:
            result.stopped = f"early stopping after {config.patience} epochs without improvement"
            break
        if since % max(config.patience // 2, 1) == 0 and lr > MIN_LEARNING_RATE:
            lr = max(lr * 0.5, MIN_LEARNING_RATE)
            trainer.optimizer.learning_rate.assign(lr)
    model.set_weights(best)
    if val and config.shrinkage:
        z, t, w, naive = trainer.predictions(data, val)
        result.beta, result.beta_report = fit_beta(z, t, w, naive, config.origin_stride or 1)
        if verbose:
            print(result.beta_report, flush=True)
    result.seconds = time.monotonic() - started
    if config.refit and val:
        fit_roles = np.where(roles == ROLE_VAL, ROLE_TRAIN, roles).astype(np.int8)
        _fine_tune(result, data, fit_roles, config, started, verbose=verbose, what="refit")
    model.beta = result.beta
    return result


def refit_all(
    result: FitResult,
    series: SeriesSet,
    inputs: RowInputs,
    spec: FeatureSpec,
    config: TrainConfig,
    *,
    verbose: bool = True,
) -> None:
    """Fine-tune ``result.model`` on every row, test included (``fit --final-refit``)."""
    data = TrainingData(series, inputs, np.zeros(series.n_rows, dtype=np.int8), spec, config)
    roles = np.zeros(series.n_rows, dtype=np.int8)
    beta = result.model.beta
    result.model.beta = 1.0
    _fine_tune(result, data, roles, config, time.monotonic(), verbose=verbose, what="final refit")
    result.model.beta = beta


def _fine_tune(
    result: FitResult,
    data: TrainingData,
    roles: npt.NDArray[np.int8],
    config: TrainConfig,
    started: float,
    *,
    verbose: bool,
    what: str,
) -> None:
    """``ceil(best_epoch / 4)`` epochs on ``roles``' training rows at the best epoch's
    learning rate (a fresh Adam), cut at the time budget."""
    t0 = time.monotonic()
    data.set_roles(roles)
    epochs = math.ceil(max(result.best_epoch, 1) / 4)
    trainer = Trainer(result.model, config)
    trainer.optimizer.learning_rate.assign(result.best_lr or config.learning_rate)
    rng = np.random.default_rng(config.seed + 1)
    epoch_s = result.seconds / max(len(result.history["loss"]), 1)
    done = 0
    for epoch in range(epochs):
        if time.monotonic() - started + epoch_s > config.time_budget_s:
            result.stopped += f"; {what} cut at {epoch} of {epochs} epochs (time budget)"
            break
        loss = trainer.run(data, data.chunks(ROLE_TRAIN, int(rng.integers(0, 1 << 30))), True, rng)
        done += 1
        if verbose:
            print(f"{what} epoch {epoch + 1}/{epochs}  loss {loss:.4f}", flush=True)
    result.refit_epochs += done
    result.refit_seconds += time.monotonic() - t0
