"""The model and its training regime: sequences for short and long series, validation
origins, learning, the refit, the shrinkage guard, the time budget, reproducibility."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import tensorflow as tf

from streamcast.core.features import ExtraScaling, FeatureSpec, LevelScale
from training.chunks import ROLE_TRAIN, ROLE_VAL, TrainingData
from training.config import TrainConfig
from training.evaluate import row_inputs
from training.fit import fit_beta, train
from training.model import StepModel
from training.series import SeriesSet

HOUR = 3600
SCHEME = LevelScale(alpha=1 / 24, lags=(24,), kappa=0.5)
CONFIG = TrainConfig(
    units=8,
    window=24,
    horizon=3,
    season=24,
    lags=(24,),
    seq_len=24,
    whole_max=200,
    origin_stride=2,
    batch_size=8,
    epochs=3,
    calendar=("time_of_day",),
    learning_rate=1e-2,
    seed=7,
)
SPEC = FeatureSpec(interval_s=HOUR, calendar=("time_of_day",))


def _daily(lengths: tuple[int, ...] = (24 * 12, 24 * 12)) -> SeriesSet:
    values = []
    for k, n in enumerate(lengths):
        t = np.arange(n)
        values.append(10 * (k + 1) + 5 * np.sin(2 * np.pi * t / 24) + 0.05 * t)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    reset = np.zeros(int(offsets[-1]), bool)
    reset[offsets[:-1]] = True
    return SeriesSet(
        keys=tuple(f"k{k}" for k in range(len(lengths))),
        offsets=offsets,
        ts=np.concatenate([np.arange(n) * HOUR for n in lengths]),
        values=np.concatenate(values)[:, None],
        observed=np.ones(int(offsets[-1]), bool),
        reset=reset,
        interval_s=HOUR,
    )


def _roles(s: SeriesSet, val: int = 24) -> np.ndarray:
    """The last ``val`` rows of each key are validation, the rest training."""
    pos = np.arange(s.n_rows) - np.repeat(s.offsets[:-1], np.diff(s.offsets))
    n = np.repeat(np.diff(s.offsets), np.diff(s.offsets))
    return np.where(pos >= n - val, ROLE_VAL, ROLE_TRAIN).astype(np.int8)


def _data(s: SeriesSet, config: TrainConfig = CONFIG, val: int = 24) -> TrainingData:
    inputs = row_inputs(s, SCHEME, config.window_, ExtraScaling())
    return TrainingData(s, inputs, _roles(s, val), SPEC, config)


def test_a_short_series_is_one_sequence_from_its_first_row() -> None:
    """A series of 40 rows (window 24, horizon 3) is never refused: one sequence from its
    first row, origins from the service's first forecast (position window - 1)."""
    s = _daily((40,))
    data = _data(s, val=8)
    chunks = data.chunks(ROLE_TRAIN, offset=0)
    assert len(chunks) == 1
    chunk = chunks[0]
    assert chunk.first == 0 and chunk.pos[0] == CONFIG.window_ - 1
    assert (np.diff(chunk.pos) == 2).all()  # origin stride
    # every training origin has a training target, none reaches the validation rows
    roles = data.roles
    targets = chunk.rows[:, None] + np.arange(1, 4)
    assert (roles[chunk.rows] == ROLE_TRAIN).all()
    assert not (chunk.weight & (roles[np.minimum(targets, s.n_rows - 1)] != ROLE_TRAIN)).any()


def test_long_series_are_cut_after_a_burn_in_at_drawn_offsets() -> None:
    s = _daily((500,))
    data = _data(s)
    first = data.chunks(ROLE_TRAIN, offset=0)
    moved = data.chunks(ROLE_TRAIN, offset=5)
    assert all(c.pos[0] >= CONFIG.warmup_steps for c in first)
    assert all(c.length <= CONFIG.warmup_steps + CONFIG.seq_len for c in first)
    assert [c.first for c in moved[:3]] == [c.first + 5 for c in first[:3]]


def test_validation_origins_are_those_whose_first_target_is_validation() -> None:
    s = _daily((40, 200))
    data = _data(s)
    val = data.chunks(ROLE_VAL, offset=0)
    assert len(val) == 2  # both keys, the short one too
    for chunk in val:
        assert (data.roles[chunk.rows + 1] == ROLE_VAL).all()
        assert chunk.first == s.offsets[s.key_index()[chunk.first]]  # warms up on training
    # every origin (stride 2, from position 23) whose first target is in the last 24 rows:
    # key 0 rows 23..37, key 1 rows 175..197
    assert [len(c.pos) for c in val] == [8, 12]


def test_batch_weights_are_the_mase_scale_and_padding_weighs_nothing() -> None:
    s = _daily((40, 200))
    data = _data(s, val=8)
    chunks = data.chunks(ROLE_TRAIN, offset=0)
    bt = data.batch(chunks)
    assert bt.seq_x.shape[0] == len(chunks) and bt.seq_x.shape[1] == max(c.length for c in chunks)
    short = [i for i, c in enumerate(chunks) if len(c.pos) < bt.pos.shape[1]]
    assert short and (bt.weight[short[0], len(chunks[short[0]].pos) :] == 0).all()
    scored = bt.mask > 0
    assert (bt.weight[scored] > 0).all() and (bt.weight[~scored] == 0).all()
    first = chunks[0]
    expected = data.inputs.unit[first.rows[0]] / data.q[first.rows[0]]
    assert bt.weight[0, 0, 0] == np.float32(expected)


def test_training_learns_and_is_reproducible() -> None:
    s = _daily()
    inputs = row_inputs(s, SCHEME, CONFIG.window_, ExtraScaling())
    first = train(s, inputs, _roles(s), SPEC, SCHEME, CONFIG, verbose=False)
    again = train(s, inputs, _roles(s), SPEC, SCHEME, CONFIG, verbose=False)
    assert first.history["loss"][-1] < first.history["loss"][0]
    assert first.history == again.history
    for a, b in zip(first.model.get_weights(), again.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert first.n_val_origins > 0 and first.history["val_loss"] != first.history["loss"]


def test_the_refit_trains_on_validation_rows_after_early_stopping() -> None:
    """With ``refit``, the early-stopped weights are fine-tuned on training + validation
    rows (``ceil(best_epoch / 4)`` epochs): the model differs from the selected one."""
    s = _daily()
    inputs = row_inputs(s, SCHEME, CONFIG.window_, ExtraScaling())
    plain = train(s, inputs, _roles(s), SPEC, SCHEME, CONFIG.updated(refit=False), verbose=False)
    refit = train(s, inputs, _roles(s), SPEC, SCHEME, CONFIG, verbose=False)
    assert plain.refit_epochs == 0
    assert refit.refit_epochs == int(np.ceil(refit.best_epoch / 4)) >= 1
    changed = [
        not np.array_equal(a, b)
        for a, b in zip(plain.model.get_weights(), refit.model.get_weights(), strict=True)
    ]
    assert any(changed)


def test_time_budget_stops_training() -> None:
    s = _daily()
    inputs = row_inputs(s, SCHEME, CONFIG.window_, ExtraScaling())
    result = train(
        s, inputs, _roles(s), SPEC, SCHEME, CONFIG.updated(epochs=50, time_budget_s=0.01),
        verbose=False,
    )  # fmt: skip
    assert result.stopped.startswith("time budget")
    assert len(result.history["loss"]) == 1


def test_the_shrinkage_guard_falls_back_to_naive_without_a_significant_gain() -> None:
    rng = np.random.default_rng(0)
    target = rng.normal(size=(200, 5)).astype(np.float32)
    naive = np.zeros(200, dtype=np.float32)
    weight = np.ones_like(target)
    # an "LSTM" that is naive plus noise: no gain, beta 0 (the model forecasts naive)
    noise = rng.normal(scale=0.5, size=target.shape).astype(np.float32)
    beta, report = fit_beta(noise, target, weight, naive)
    assert beta == 0.0 and "not significant" in report
    # one that knows the target: beta 1 and a large t
    beta, report = fit_beta(target, target, weight, naive)
    assert beta == 1.0 and "not significant" not in report


def test_sequence_states_equal_repeated_cell_steps() -> None:
    model = StepModel.from_config_values(TrainConfig(units=5, layers=2, horizon=3), n_inputs=2)
    seq = tf.random.stateless_normal([3, 7, model.cell_width], seed=[1, 2])
    h_all, c_all = model.sequence_states(seq)
    h = tf.zeros([3, model.state_size])
    c = tf.zeros([3, model.state_size])
    for t in range(7):
        h, c = model.cell(seq[:, t], h, c)
        np.testing.assert_allclose(h_all[t].numpy(), h.numpy(), atol=1e-6)
        np.testing.assert_allclose(c_all[t].numpy(), c.numpy(), atol=1e-6)


def test_the_rollout_advances_level_and_scale_like_the_service() -> None:
    """A model whose skip makes it forecast the value it was given (``u``): the rollout's
    inputs follow the EWMA of its own predictions, so with alpha 0 the forecast is flat."""
    scheme = LevelScale(alpha=0.5, lags=(), kappa=1.0)
    model = StepModel(
        scheme=scheme, n_extras=0, n_calendar=0, horizon=4, units=3, layers=1, dropout=0.0,
        seed=1,
    )  # fmt: skip
    model.head_kernel.assign(np.zeros((3, 1), np.float32))
    skip = np.zeros((model.cell_width, 1), np.float32)
    skip[0] = 1.0  # forecast = u
    model.skip.assign(skip)
    x = np.array([[1.0, 0.0, 1.0]], np.float32)  # u = 1, r = 0, naive lag = 1
    _, _, forecast = model.step(tf.constant(x), tf.zeros([1, 3]), tf.zeros([1, 3]), None)
    z, lam, sig, out = 1.0, 0.0, 1.0, [1.0]
    for _ in range(3):
        lam, sig = lam + 0.5 * (z - lam), sig + 0.5 * (abs(z) - sig)
        z = lam + sig * ((z - lam) / sig)
        out.append(z)
    np.testing.assert_allclose(forecast.numpy()[0], out, atol=1e-6)


def test_training_runs_in_a_process_where_tensorflow_already_ran() -> None:
    """``train`` asks for one intra-op thread, which TensorFlow cannot change once its
    context is initialised: a process that built a model first (the export tests, a
    notebook) must still train (it raised RuntimeError)."""
    code = (
        "import tensorflow as tf; tf.constant(1.0) + 1.0\n"
        "from tests.training.test_model import CONFIG, SCHEME, SPEC, _daily, _roles\n"
        "from streamcast.core.features import ExtraScaling\n"
        "from training.evaluate import row_inputs\n"
        "from training.fit import train\n"
        "s = _daily()\n"
        "inputs = row_inputs(s, SCHEME, CONFIG.window_, ExtraScaling())\n"
        "r = train(s, inputs, _roles(s), SPEC, SCHEME, CONFIG.updated(epochs=1, refit=False),"
        " verbose=False)\n"
        "print('epochs', len(r.history['loss']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "epochs 1"
