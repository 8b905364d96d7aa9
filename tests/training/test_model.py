"""The model and its training regime: chunk alignment, learning, reproducibility."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import numpy.typing as npt
import tensorflow as tf

from streamcast.core.features import FeatureSpec, calendar_features
from training.chunks import ROLE_TRAIN, ROLE_VAL, build_chunks, next_calendar
from training.config import TrainConfig
from training.fit import train
from training.model import StepModel
from training.series import SeriesSet

HOUR = 3600
CONFIG = TrainConfig(
    units=8,
    window=6,
    horizon=3,
    seq_len=12,
    origin_stride=2,
    batch_size=8,
    epochs=4,
    calendar=("time_of_day",),
    learning_rate=1e-2,
    seed=7,
)


def _daily(n_keys: int = 2, hours: int = 24 * 12) -> SeriesSet:
    t = np.arange(hours)
    values = np.concatenate([10 * (k + 1) + 5 * np.sin(2 * np.pi * t / 24) for k in range(n_keys)])[
        :, None
    ]
    reset = np.zeros(n_keys * hours, bool)
    reset[::hours] = True
    return SeriesSet(
        keys=tuple(f"k{k}" for k in range(n_keys)),
        offsets=np.arange(n_keys + 1) * hours,
        ts=np.tile(t * HOUR, n_keys),
        values=values,
        observed=np.ones(n_keys * hours, bool),
        reset=reset,
        interval_s=HOUR,
    )


def _scaled(s: SeriesSet) -> npt.NDArray[np.float32]:
    v = s.values.reshape(len(s.keys), -1)
    scaled = (v - v.mean(1, keepdims=True)) / v.std(1, keepdims=True)
    return np.asarray(scaled.reshape(-1, 1), dtype=np.float32)


def _roles(s: SeriesSet) -> np.ndarray:
    pos = np.arange(s.n_rows) - np.repeat(s.offsets[:-1], np.diff(s.offsets))
    per_key = np.diff(s.offsets)[0]
    return np.where(
        pos < 0.7 * per_key, ROLE_TRAIN, np.where(pos < 0.85 * per_key, ROLE_VAL, 2)
    ).astype(np.int8)


def test_chunks_align_origins_targets_and_calendar() -> None:
    s = _daily()
    scaled = _scaled(s)
    spec = FeatureSpec(interval_s=HOUR, calendar=CONFIG.calendar)
    nxt = next_calendar(s, spec)
    chunks = build_chunks(s, scaled, nxt, _roles(s), CONFIG, target_role=ROLE_TRAIN, offset=0)
    assert len(chunks) > 0
    consumed = CONFIG.warmup_steps + CONFIG.seq_len
    assert chunks.inputs.shape[1:] == (consumed, 1 + 2)
    # chunk 0 starts at row 0: its origin o sits at row warmup + stride*o
    for o in range(chunks.targets.shape[1]):
        row = CONFIG.warmup_steps + CONFIG.origin_stride * o
        np.testing.assert_array_equal(chunks.targets[0, o], scaled[row + 1 : row + 4, 0])
        expected_cal = calendar_features(s.ts[row + 1 : row + 4], spec)
        np.testing.assert_allclose(chunks.calendar[0, o], expected_cal, atol=1e-6)
    # the cell input at position p carries the calendar of p + 1
    np.testing.assert_allclose(
        chunks.inputs[0, 5, 1:], calendar_features(s.ts[6:7], spec)[0], atol=1e-6
    )
    assert chunks.weights.min() == 1.0


def test_validation_chunks_score_validation_origins_only() -> None:
    s = _daily()
    roles = _roles(s)
    spec = FeatureSpec(interval_s=HOUR, calendar=CONFIG.calendar)
    val = build_chunks(
        s, _scaled(s), next_calendar(s, spec), roles, CONFIG, target_role=ROLE_VAL, offset=0
    )
    assert len(val) > 0 and val.weights.sum() > 0
    train_only = build_chunks(
        s, _scaled(s), next_calendar(s, spec), roles, CONFIG, target_role=ROLE_TRAIN, offset=0
    )
    # no training chunk can see a validation row as a target
    assert train_only.weights.sum() == train_only.weights.size


def test_training_learns_and_is_reproducible() -> None:
    s = _daily()
    spec = FeatureSpec(interval_s=HOUR, calendar=CONFIG.calendar)
    first = train(s, _scaled(s), _roles(s), spec, CONFIG, verbose=False)
    assert first.history["val_loss"][-1] < first.history["val_loss"][0]
    again = train(s, _scaled(s), _roles(s), spec, CONFIG, verbose=False)
    for a, b in zip(first.model.get_weights(), again.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_sequence_states_equal_repeated_cell_steps() -> None:
    model = StepModel.from_config_values(TrainConfig(units=5, layers=2), n_inputs=2)
    x = np.random.default_rng(0).normal(size=(3, 7, 2)).astype(np.float32)
    h_all, c_all = model.sequence_states(tf.constant(x))
    h = tf.zeros((3, 10))
    c = tf.zeros((3, 10))
    for t in range(7):
        h, c = model.cell(tf.constant(x[:, t]), h, c)
    np.testing.assert_allclose(h_all[-1].numpy(), h.numpy(), atol=1e-6)
    np.testing.assert_allclose(c_all[-1].numpy(), c.numpy(), atol=1e-6)


def test_time_budget_stops_training() -> None:
    s = _daily()
    spec = FeatureSpec(interval_s=HOUR, calendar=CONFIG.calendar)
    config = CONFIG.updated(epochs=1000, time_budget_s=1.0, patience=1000)
    result = train(s, _scaled(s), _roles(s), spec, config, verbose=False)
    assert result.stopped.startswith("time budget")
    assert 1 <= len(result.history["loss"]) < 1000


def test_early_stopping_keeps_the_best_epoch_and_halves_the_rate(tmp_path: Path) -> None:
    s = _daily()
    spec = FeatureSpec(interval_s=HOUR, calendar=CONFIG.calendar)
    config = CONFIG.updated(epochs=30, patience=3, learning_rate=0.05, time_budget_s=600.0)
    result = train(s, _scaled(s), _roles(s), spec, config, verbose=False, checkpoint_dir=tmp_path)
    val_loss, lr = result.history["val_loss"], result.history["lr"]
    assert result.stopped == "early stopping after 3 epochs without improvement"
    assert len(val_loss) < config.epochs
    assert result.best_epoch == int(np.argmin(val_loss)) + 1
    assert result.best_val_loss == min(val_loss)
    # three epochs without improvement after the best one, then the stop
    assert len(val_loss) == result.best_epoch + config.patience
    assert lr[0] == config.learning_rate
    assert all(b in (a, a / 2) for a, b in itertools.pairwise(lr))
    assert lr[-1] < lr[0]
    assert (tmp_path / "best.weights.h5").is_file()
