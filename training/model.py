"""The global stateful LSTM: weights in a Keras 3 model, the step maths in plain TensorFlow.

The step semantics are fixed by :mod:`streamcast.core.artifact` (schema 2): the step input
``x = [u, extras, r, lags]`` is in the key's unit ``K``
(:func:`streamcast.core.features.step_inputs`);
the cell at ``t`` consumes ``concat(u, clip(v_L) for each seasonal lag L, extras,
calendar(t+1))``, where ``v_L`` is the value one lag before the target; a linear head on
the top layer's ``h`` *plus a linear skip from the cell input* (so naive and seasonal naive
are one weight away) predicts the next value in the units of the key's *current* state.

The rollout runs in the graph and does exactly what the service would do had each
prediction been observed: it advances the key's level and scale with the same EWMA (in
the origin's units: level ``lam`` and scale ratio ``sig``, starting at 0 and 1), rebuilds
``u`` and each ``v_L`` (from the ring buffer in ``x`` or the rollout's own earlier
predictions), holds the extras and takes the next calendar row. Training sequences and the
rollout therefore see identically defined inputs. The forecast is in the origin's units
(``y = l_t + K_t * forecast``), shrunk toward naive by ``beta`` when training chose to
(:func:`training.fit.fit_beta`).

The gate maths is written out (Keras gate order i, f, g, o, forget bias 1) so the same
functions give the training graph, the export graph and the parity reference.
"""

from __future__ import annotations

import os

# oneDNN's fused kernels reorder float sums between runs and batch sizes; plain kernels keep
# training reproducible for a seed (and silence TensorFlow's banner about it). Must be set
# before TensorFlow is first imported.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import tensorflow as tf

from streamcast.core.features import LevelScale
from training.config import TrainConfig


class StepModel(keras.Model):  # type: ignore[misc]
    """A stack of LSTM layers, a linear head and skip predicting the next value in units."""

    def __init__(
        self,
        *,
        scheme: LevelScale,
        n_extras: int,
        n_calendar: int,
        horizon: int,
        units: int,
        layers: int,
        dropout: float,
        seed: int,
    ) -> None:
        super().__init__()
        self.scheme = scheme
        self.n_extras = n_extras
        self.n_calendar = n_calendar
        self.horizon = horizon
        self.units = units
        self.n_layers = layers
        self.dropout_rate = dropout
        #: shrinkage toward naive baked into the exported step (1.0: the LSTM as trained)
        self.beta = 1.0
        #: the cell's gates as one product of [input, h] by the stacked kernels, not two and
        #: a sum: what the exporter traces, so ONNX Runtime runs one Gemm per cell (hidden
        #: 64, horizon 24: 21.9 -> 17.8 ms per 1,024 keys; the same function within ~5e-7).
        #: Off for training, which must be bit-reproducible: trained with it, two runs
        #: of the same seed drifted apart in the 8th digit of the loss
        self.one_product = False
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.kernels, self.recurrents, self.biases = [], [], []
        width = self.cell_width
        for layer in range(layers):
            self.kernels.append(
                self.add_weight(
                    shape=(width, 4 * units),
                    initializer=keras.initializers.GlorotUniform(seed=seed + layer),
                    name=f"kernel_{layer}",
                )
            )
            self.recurrents.append(
                self.add_weight(
                    shape=(units, 4 * units),
                    initializer=keras.initializers.Orthogonal(seed=seed + 100 + layer),
                    name=f"recurrent_{layer}",
                )
            )
            # unit forget bias: start by remembering, the usual LSTM initialisation
            bias = [0.0] * units + [1.0] * units + [0.0] * (2 * units)
            self.biases.append(
                self.add_weight(
                    shape=(4 * units,),
                    initializer=keras.initializers.Constant(bias),
                    name=f"bias_{layer}",
                )
            )
            width = units
        self.head_kernel = self.add_weight(
            shape=(units, 1),
            initializer=keras.initializers.GlorotUniform(seed=seed + 200),
            name="head_kernel",
        )
        self.head_bias = self.add_weight(shape=(1,), initializer="zeros", name="head_bias")
        self.skip = self.add_weight(shape=(self.cell_width, 1), initializer="zeros", name="skip")
        self.built = True  # every weight exists now; lets Keras save/load them

    @classmethod
    def from_config_values(
        cls, config: TrainConfig, n_inputs: int, scheme: LevelScale | None = None
    ) -> StepModel:
        """A fresh model for ``config`` with ``n_inputs - 1`` extras (and ``scheme``, by
        default the config's lags and alpha with a unit ``kappa`` of 1)."""
        if scheme is None:
            scheme = LevelScale(alpha=config.alpha or 0.1, lags=tuple(config.lags or ()))
        return cls(
            scheme=scheme,
            n_extras=n_inputs - 1,
            n_calendar=config.n_calendar,
            horizon=config.horizon,
            units=config.units,
            layers=config.layers,
            dropout=config.dropout,
            seed=config.seed,
        )

    @property
    def state_size(self) -> int:
        """Width S of the concatenated state."""
        return self.units * self.n_layers

    @property
    def step_width(self) -> int:
        """Width of the step input ``x``."""
        return self.scheme.step_width(self.n_extras)

    @property
    def cell_width(self) -> int:
        """Width of the cell input: u, one anchor per lag, the extras, the calendar."""
        return 1 + len(self.scheme.lags) + self.n_extras + self.n_calendar

    def _dropout(self, x: tf.Tensor, training: bool) -> tf.Tensor:
        if not training or self.dropout_rate == 0.0:
            return x
        return keras.random.dropout(x, self.dropout_rate, seed=self.seed_generator)

    def _clip(self, v: tf.Tensor) -> tf.Tensor:
        return tf.clip_by_value(v, -self.scheme.clip, self.scheme.clip)

    def cell_input(self, x: tf.Tensor, calendar_row: tf.Tensor | None) -> tf.Tensor:
        """The cell input at an origin from its step input ``x [..., width]``."""
        e, m = self.n_extras, self.scheme.max_lag
        lag0 = 2 + e
        parts = [x[..., 0:1]]
        for lag in self.scheme.lags:
            at = lag0 + m - lag
            parts.append(self._clip(x[..., at : at + 1]))
        if e:
            parts.append(x[..., 1 : 1 + e])
        if calendar_row is not None and self.n_calendar:
            parts.append(calendar_row)
        return tf.concat(parts, axis=-1)

    def cell(
        self, inputs: tf.Tensor, h: tf.Tensor, c: tf.Tensor, training: bool = False
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """One step of the whole stack: ``[B, F]``, ``[B, S]``, ``[B, S]`` -> ``(h', c')``."""
        u = self.units
        layer_input = inputs
        new_h, new_c = [], []
        for layer in range(self.n_layers):
            h_l = h[:, layer * u : (layer + 1) * u]
            c_l = c[:, layer * u : (layer + 1) * u]
            kernel, recurrent = self.kernels[layer].value, self.recurrents[layer].value
            if self.one_product:
                stacked = tf.concat([kernel, recurrent], axis=0)
                z = tf.matmul(tf.concat([layer_input, h_l], axis=-1), stacked)
            else:
                z = tf.matmul(layer_input, kernel) + tf.matmul(h_l, recurrent)
            z = z + self.biases[layer].value
            i, f, g, o = tf.split(z, 4, axis=-1)
            c_next = tf.sigmoid(f) * c_l + tf.sigmoid(i) * tf.tanh(g)
            h_next = tf.sigmoid(o) * tf.tanh(c_next)
            new_h.append(h_next)
            new_c.append(c_next)
            layer_input = self._dropout(h_next, training)
        if self.n_layers == 1:
            return new_h[0], new_c[0]
        return tf.concat(new_h, axis=-1), tf.concat(new_c, axis=-1)

    def head(self, h: tf.Tensor, inputs: tf.Tensor, training: bool = False) -> tf.Tensor:
        """The next value in the current state's units ``[B]``: head on ``h`` + skip."""
        top = self._dropout(h[:, (self.n_layers - 1) * self.units :], training)
        out = (
            tf.matmul(top, self.head_kernel.value)
            + self.head_bias.value
            + tf.matmul(inputs, self.skip.value)
        )
        return out[:, 0]

    def rollout(  # noqa: PLR0917 - the graph's tensors in the order the step takes them
        self,
        h: tf.Tensor,
        c: tf.Tensor,
        x: tf.Tensor,
        inputs: tf.Tensor,
        calendar: tf.Tensor | None,
        training: bool = False,
    ) -> tf.Tensor:
        """``[B, H]`` in the origin's units, from the state after the origin's cell input
        ``inputs`` (its step input ``x`` gives the ring buffer, ``r`` and the extras)."""
        sc, e = self.scheme, self.n_extras
        m, a, kappa = sc.max_lag, sc.alpha, sc.kappa
        ring = x[:, 2 + e :]
        r = x[:, 1 + e]
        extras = x[:, 1 : 1 + e]
        lam = tf.zeros_like(r)
        sig = tf.ones_like(r)
        zs = [self.head(h, inputs, training)]
        for k in range(1, self.horizon):
            z = zs[-1]
            lam = lam + a * (z - lam)
            sig = sig + a * (kappa * tf.abs(r + z) - sig)
            parts = [self._clip((z - lam) / sig)[:, None]]
            for lag in sc.lags:
                d = k + 1 - lag
                anchor = ring[:, m - 1 + d] if d <= 0 else zs[d - 1]
                parts.append(self._clip((anchor - lam) / sig)[:, None])
            if e:
                parts.append(extras)
            if calendar is not None and self.n_calendar:
                parts.append(calendar[:, k])
            step_in = tf.concat(parts, axis=-1)
            h, c = self.cell(step_in, h, c, training)
            zs.append(lam + sig * self.head(h, step_in, training))
        return tf.stack(zs, axis=1)

    def naive(self, x: tf.Tensor) -> tf.Tensor:
        """``[B, 1]`` the last value in the origin's units (the naive forecast)."""
        last = 2 + self.n_extras + self.scheme.max_lag - 1
        return x[:, last : last + 1]

    def step(
        self, x: tf.Tensor, h: tf.Tensor, c: tf.Tensor, calendar: tf.Tensor | None
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """The exported step: ``(x, h, c[, calendar]) -> (h_out, c_out, forecast [B, H])``."""
        inputs = self.cell_input(x, None if calendar is None else calendar[:, 0])
        h_out, c_out = self.cell(inputs, h, c)
        forecast = self.rollout(h_out, c_out, x, inputs, calendar)
        if self.beta != 1.0:
            naive = self.naive(x)
            forecast = naive + self.beta * (forecast - naive)
        return h_out, c_out, forecast

    def sequence_states(
        self, inputs: tf.Tensor, training: bool = False
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Run the stack from zero state over cell inputs ``[B, T, F]``: ``[T, B, S]``."""
        batch = tf.shape(inputs)[0]
        zeros = tf.zeros([batch, self.state_size], dtype=inputs.dtype)

        def advance(state: tuple[tf.Tensor, tf.Tensor], x_t: tf.Tensor) -> tuple[tf.Tensor, ...]:
            return self.cell(x_t, state[0], state[1], training)

        h_all, c_all = tf.scan(advance, tf.transpose(inputs, [1, 0, 2]), initializer=(zeros, zeros))
        return h_all, c_all
