"""The global stateful LSTM: weights in a Keras 3 model, the step maths in plain TensorFlow.

The step semantics are fixed by :mod:`streamcast.core.artifact`: the cell input at a closed
interval ``t`` is ``concat(x_t, calendar(t+1))``; a dense head on the top layer's ``h``
gives the scaled value at ``t+1``; the recursive rollout feeds each prediction back with
the extras held at their last observed value and the next calendar row. Several layers'
states are concatenated layer by layer into one ``[B, S]`` array (``S = layers * units``).

The gate maths is written out here (Keras gate order i, f, g, o, forget bias 1) instead of
using ``keras.layers.LSTM`` because training needs the cell state ``c`` at every step of a
sequence (to start horizon rollouts from every origin at once) and export needs exactly
the same arithmetic as a single ``tf.function`` that tf2onnx converts to plain ONNX ops.
The very same functions serve training, the export graph and the parity reference.
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

from training.config import TrainConfig


class StepModel(keras.Model):  # type: ignore[misc]
    """A stack of LSTM layers plus a linear head predicting the next scaled value."""

    def __init__(
        self,
        *,
        n_inputs: int,
        n_calendar: int,
        units: int,
        layers: int,
        dropout: float,
        seed: int,
    ) -> None:
        super().__init__()
        self.n_inputs = n_inputs
        self.n_calendar = n_calendar
        self.units = units
        self.n_layers = layers
        self.dropout_rate = dropout
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.kernels = []
        self.recurrents = []
        self.biases = []
        width = n_inputs + n_calendar
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
        self.built = True  # every weight exists now; lets Keras save/load them

    @classmethod
    def from_config_values(cls, config: TrainConfig, n_inputs: int) -> StepModel:
        """Build (with initialised weights) from a training config."""
        return cls(
            n_inputs=n_inputs,
            n_calendar=config.n_calendar,
            units=config.units,
            layers=config.layers,
            dropout=config.dropout,
            seed=config.seed,
        )

    @property
    def state_size(self) -> int:
        """Width S of the concatenated state."""
        return self.units * self.n_layers

    def _dropout(self, x: tf.Tensor, training: bool) -> tf.Tensor:
        if not training or self.dropout_rate == 0.0:
            return x
        return keras.random.dropout(x, self.dropout_rate, seed=self.seed_generator)

    def cell(
        self, inputs: tf.Tensor, h: tf.Tensor, c: tf.Tensor, training: bool = False
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """One step of the whole stack: ``[B, F]``, ``[B, S]``, ``[B, S]`` -> ``(h', c')``."""
        u = self.units
        layer_input = inputs
        new_h = []
        new_c = []
        for layer in range(self.n_layers):
            h_l = h[:, layer * u : (layer + 1) * u]
            c_l = c[:, layer * u : (layer + 1) * u]
            z = (
                tf.matmul(layer_input, self.kernels[layer].value)
                + tf.matmul(h_l, self.recurrents[layer].value)
                + self.biases[layer].value
            )
            i, f, g, o = tf.split(z, 4, axis=-1)
            c_next = tf.sigmoid(f) * c_l + tf.sigmoid(i) * tf.tanh(g)
            h_next = tf.sigmoid(o) * tf.tanh(c_next)
            new_h.append(h_next)
            new_c.append(c_next)
            layer_input = self._dropout(h_next, training)
        if self.n_layers == 1:
            return new_h[0], new_c[0]
        return tf.concat(new_h, axis=-1), tf.concat(new_c, axis=-1)

    def head(self, h: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Scaled next-value prediction ``[B]`` from the concatenated state ``[B, S]``."""
        top = h[:, (self.n_layers - 1) * self.units :]
        top = self._dropout(top, training)
        out = tf.matmul(top, self.head_kernel.value) + self.head_bias.value
        return out[:, 0]

    def rollout(
        self,
        h: tf.Tensor,
        c: tf.Tensor,
        first: tf.Tensor,
        extras: tf.Tensor,
        calendar: tf.Tensor | None,
        *,
        horizon: int,
        training: bool = False,
    ) -> tf.Tensor:
        """Continue ``horizon - 1`` recursive steps after the first forecast ``first`` [B].

        ``extras`` ``[B, E]`` are held; ``calendar`` ``[B, H, C]`` holds target rows
        ``t+1 .. t+H`` (row ``k`` is the cell input when predicting ``t+k+1``).
        Returns ``[B, H]``.
        """
        outputs = [first]
        y = first
        for k in range(1, horizon):
            parts = [y[:, None]]
            if self.n_inputs > 1:
                parts.append(extras)
            if calendar is not None:
                parts.append(calendar[:, k])
            h, c = self.cell(tf.concat(parts, axis=-1), h, c, training)
            y = self.head(h, training)
            outputs.append(y)
        return tf.stack(outputs, axis=1)

    def step(
        self, x: tf.Tensor, h: tf.Tensor, c: tf.Tensor, calendar: tf.Tensor | None, horizon: int
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """The exported step: ``(x, h, c[, calendar]) -> (h_out, c_out, forecast [B, H])``."""
        inputs = x if calendar is None else tf.concat([x, calendar[:, 0]], axis=-1)
        h_out, c_out = self.cell(inputs, h, c)
        forecast = self.rollout(h_out, c_out, self.head(h_out), x[:, 1:], calendar, horizon=horizon)
        return h_out, c_out, forecast

    def sequence_states(
        self, inputs: tf.Tensor, training: bool = False
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Run the stack from zero state over ``[B, T, F]``; states each step: ``[T, B, S]``."""
        batch = tf.shape(inputs)[0]
        zeros = tf.zeros([batch, self.state_size], dtype=inputs.dtype)

        def advance(state: tuple[tf.Tensor, tf.Tensor], x_t: tf.Tensor) -> tuple[tf.Tensor, ...]:
            return self.cell(x_t, state[0], state[1], training)

        h_all, c_all = tf.scan(advance, tf.transpose(inputs, [1, 0, 2]), initializer=(zeros, zeros))
        return h_all, c_all
