"""Export the trained step to ONNX, stamp it with its metadata, and prove parity.

The graph is a ``tf.function`` with an explicit input signature (``x = [u, extras, r,
lags]`` in the key's unit, ``h``, ``c`` and,
when the model uses calendar features, ``calendar``) converted with
``tf2onnx.convert.from_function`` (Keras 3's ``from_keras`` path is unreliable). The
H-step rollout is a Python loop inside the function, so it becomes plain graph nodes and
the whole horizon is one ONNX Runtime call. Outputs are renamed to the names in
:class:`streamcast.core.artifact.GraphNames`, and the :class:`~streamcast.core.artifact.ModelMeta`
JSON goes into ``metadata_props["streamcast"]``.

Parity: ONNX Runtime (a session opened as the service opens it,
:func:`streamcast.core.model.open_session`) and TensorFlow run the same random and real
inputs; if any scaled output differs by more than :data:`PARITY_TOLERANCE`, the export
fails with ExportError.

Self-test: :func:`self_test_sample` runs a few real step inputs (scaled validation rows
with the LSTM state the model reaches there, and their calendar rows) through the
*written* file and keeps inputs and outputs as the model's
:class:`~streamcast.core.artifact.SelfTestMeta`; the service reruns them before it swaps to
a new artifact (:func:`streamcast.core.model.self_test_failures`). :data:`SELF_TEST_ATOL`
is 1e-4: the same graph on another CPU or ONNX Runtime build differs in the last bits
(summation order, FMA; TensorFlow and ONNX Runtime differ by ~1e-6 here, see
:data:`PARITY_TOLERANCE`), a hundredfold margin over that, while damaged weights or another
graph move the outputs by far more (weights x 1.05: ~1e-2).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import tensorflow as tf
import tf2onnx

from streamcast.core.artifact import METADATA_KEY, GraphNames, ModelMeta, SelfTestMeta
from streamcast.core.features import FeatureSpec, Float32Array, calendar_features
from streamcast.core.model import open_session
from streamcast.core.onnx_passes import drop_noop_slices, split_gate_products
from training.errors import ExportError
from training.model import StepModel
from training.series import SeriesSet

OPSET = 17
PARITY_TOLERANCE = 1e-5
#: rows of the self-test sample: the sample travels in the model's metadata, so a few
#: rows (4 x (4 S + 1 + E + H + H C) numbers: ~17 KB of JSON at S = 64, H = 24, C = 4)
SELF_TEST_ROWS = 4
#: allowed |difference| of a rerun of the sample (module docstring)
SELF_TEST_ATOL = 1e-4


@dataclass(frozen=True)
class StepInputs:
    """One batch of step inputs (in units): ``calendar`` is None when the model has none."""

    x: Float32Array
    h: Float32Array
    c: Float32Array
    calendar: Float32Array | None

    def feeds(self, names: GraphNames) -> dict[str, Float32Array]:
        """The ONNX Runtime feed dictionary."""
        out = {names.x: self.x, names.h: self.h, names.c: self.c}
        if self.calendar is not None and names.calendar is not None:
            out[names.calendar] = self.calendar
        return out


def random_inputs(model: StepModel, horizon: int, batch: int, seed: int) -> StepInputs:
    """Random inputs of the step's shapes (``r`` within ``1 / kappa``, as a level is),
    states in the LSTM's range (-1, 1)."""
    rng = np.random.default_rng(seed)
    s = model.state_size
    calendar = None
    if model.n_calendar:
        calendar = rng.uniform(-1, 1, (batch, horizon, model.n_calendar)).astype(np.float32)
    x = rng.normal(size=(batch, model.step_width))
    x[:, 1 + model.n_extras] = rng.uniform(0, 1, batch) / model.scheme.kappa
    return StepInputs(
        x=x.astype(np.float32),
        h=rng.uniform(-1, 1, (batch, s)).astype(np.float32),
        c=rng.normal(size=(batch, s)).astype(np.float32),
        calendar=calendar,
    )


def real_inputs(
    model: StepModel,
    series: SeriesSet,
    x: Float32Array,
    rows: npt.NDArray[np.int64],
    *,
    spec: FeatureSpec,
    window: int,
    horizon: int,
) -> StepInputs:
    """Step inputs ``x`` of real ``rows`` with the state the model reaches over the
    ``window`` rows before each (every row needs ``window`` rows of its segment before it)."""
    history = rows[:, None] - np.arange(window, 0, -1)[None, :]
    cal_next = calendar_features(series.grid.shift(series.ts[history], 1), spec)
    cells = model.cell_input(
        tf.constant(x[history]), tf.constant(cal_next) if spec.n_calendar else None
    )
    h_all, c_all = model.sequence_states(cells)
    calendar = None
    if spec.n_calendar:
        calendar = calendar_features(series.grid.targets(series.ts[rows], horizon), spec)
    return StepInputs(x=x[rows], h=h_all[-1].numpy(), c=c_all[-1].numpy(), calendar=calendar)


def reference_step(
    model: StepModel, inputs: StepInputs, horizon: int
) -> tuple[Float32Array, Float32Array, Float32Array]:
    """The step computed by TensorFlow (the parity reference)."""
    del horizon  # the model's own
    cal = None if inputs.calendar is None else tf.constant(inputs.calendar)
    h, c, f = model.step(tf.constant(inputs.x), tf.constant(inputs.h), tf.constant(inputs.c), cal)
    return h.numpy(), c.numpy(), f.numpy()


def _step_function(
    model: StepModel, horizon: int
) -> tuple[tf.types.experimental.GenericFunction, list[tf.TensorSpec]]:
    s = model.state_size
    signature = [
        tf.TensorSpec([None, model.step_width], tf.float32, name="x"),
        tf.TensorSpec([None, s], tf.float32, name="h"),
        tf.TensorSpec([None, s], tf.float32, name="c"),
    ]
    if model.n_calendar:
        signature.append(
            tf.TensorSpec([None, horizon, model.n_calendar], tf.float32, name="calendar")
        )

        @tf.function(input_signature=signature)  # type: ignore[untyped-decorator]
        def step_with_calendar(
            x: tf.Tensor, h: tf.Tensor, c: tf.Tensor, calendar: tf.Tensor
        ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            return model.step(x, h, c, calendar)

        return step_with_calendar, signature

    @tf.function(input_signature=signature)  # type: ignore[untyped-decorator]
    def step(x: tf.Tensor, h: tf.Tensor, c: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        return model.step(x, h, c, None)

    return step, signature


def _rename_outputs(proto: onnx.ModelProto, names: list[str]) -> None:
    """Give the graph outputs their contract names (tf2onnx names them after TF tensors)."""
    graph = proto.graph
    if len(graph.output) != len(names):
        raise ExportError(f"exported graph has {len(graph.output)} outputs, expected {names}")
    for output, new in zip(list(graph.output), names, strict=True):
        old = output.name
        if old == new:
            continue
        for node in graph.node:
            node.output[:] = [new if o == old else o for o in node.output]
            node.input[:] = [new if i == old else i for i in node.input]
        output.name = new


def _check_inputs(proto: onnx.ModelProto, expected: list[str]) -> None:
    got = [i.name for i in proto.graph.input]
    if got != expected:
        raise ExportError(f"exported graph inputs are {got}, expected {expected}")


def parity(
    sess: ort.InferenceSession, model: StepModel, horizon: int, batches: list[StepInputs]
) -> float:
    """Largest absolute difference between ONNX Runtime and TensorFlow over ``batches``."""
    names = GraphNames() if model.n_calendar else GraphNames(calendar=None)
    worst = 0.0
    for inputs in batches:
        onnx_out = sess.run([names.h_out, names.c_out, names.forecast], inputs.feeds(names))
        tf_out = reference_step(model, inputs, horizon)
        for a, b in zip(onnx_out, tf_out, strict=True):
            if a.shape != b.shape:
                raise ExportError(f"ONNX output shape {a.shape} differs from Keras {b.shape}")
            worst = max(worst, float(np.max(np.abs(a - b))))
    return worst


def export_step(
    model: StepModel,
    meta: ModelMeta,
    path: Path,
    real_inputs: StepInputs | None = None,
    tolerance: float = PARITY_TOLERANCE,
) -> float:
    """Convert, stamp metadata, write ``path`` and return the parity max abs difference.

    Raises ExportError if conversion fails or parity exceeds ``tolerance``.
    """
    names = meta.graph
    if (names.calendar is None) != (model.n_calendar == 0):
        raise ExportError("metadata graph names disagree with the model's calendar input")
    if meta.state_size != model.state_size:
        raise ExportError(f"metadata state_size {meta.state_size} != model {model.state_size}")
    function, signature = _step_function(model, meta.horizon)
    model.one_product = True  # the gates as one Gemm in the graph (StepModel.one_product)
    try:
        proto, _ = tf2onnx.convert.from_function(function, input_signature=signature, opset=OPSET)
    except Exception as exc:  # tf2onnx raises assorted internal errors
        raise ExportError(f"tf2onnx could not convert the step function: {exc}") from exc
    finally:
        model.one_product = False
    expected_inputs = [names.x, names.h, names.c]
    if names.calendar is not None:
        expected_inputs.append(names.calendar)
    _check_inputs(proto, expected_inputs)
    _rename_outputs(proto, [names.h_out, names.c_out, names.forecast])
    drop_noop_slices(proto)
    split_gate_products(proto)
    entry = proto.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = meta.to_json()
    proto.producer_name = "streamcast-train"
    proto.model_version = 1
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    batches = [random_inputs(model, meta.horizon, batch, seed) for batch, seed in ((1, 1), (37, 2))]
    if real_inputs is not None:
        batches.append(real_inputs)
    diff = parity(open_session(data), model, meta.horizon, batches)
    if not diff <= tolerance:
        raise ExportError(
            f"ONNX parity check failed: max abs difference {diff:.3g} > {tolerance:g} "
            "between ONNX Runtime and TensorFlow; the model was not written"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".onnx.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return diff


def rewrite_metadata(path: Path, meta: ModelMeta) -> None:
    """Replace the ``streamcast`` metadata of an exported model (the graph is untouched).

    Used after the streaming backtest to add the calibration, drift reference and metrics
    that only the exported model itself can measure.
    """
    proto = onnx.load(str(path))
    kept = [p for p in proto.metadata_props if p.key != METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    entry = proto.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = meta.to_json()
    tmp = path.with_suffix(".onnx.tmp")
    onnx.save(proto, str(tmp))
    tmp.replace(path)


def self_test_sample(
    path: Path,
    inputs: StepInputs,
    names: GraphNames,
    *,
    rows: int = SELF_TEST_ROWS,
    atol: float = SELF_TEST_ATOL,
) -> SelfTestMeta:
    """Run ``rows`` of ``inputs`` (spread over them) through the exported file at ``path``
    with ONNX Runtime, as the service opens it; the inputs and outputs as a sample.

    Numbers are stored as the shortest decimals that read back to the same float32, so
    the sample is small and a rerun sees exactly the inputs the exporter ran.
    """
    pick = np.unique(np.linspace(0, len(inputs.x) - 1, min(rows, len(inputs.x))).astype(int))
    sample = StepInputs(
        x=inputs.x[pick].astype(np.float32),
        h=inputs.h[pick].astype(np.float32),
        c=inputs.c[pick].astype(np.float32),
        calendar=None if inputs.calendar is None else inputs.calendar[pick].astype(np.float32),
    )
    h_out, c_out, forecast = open_session(path).run(
        [names.h_out, names.c_out, names.forecast], sample.feeds(names)
    )
    return SelfTestMeta(
        x=_matrix(sample.x),
        h=_matrix(sample.h),
        c=_matrix(sample.c),
        calendar=() if sample.calendar is None else tuple(_matrix(m) for m in sample.calendar),
        h_out=_matrix(h_out),
        c_out=_matrix(c_out),
        forecast=_matrix(forecast),
        atol=atol,
    )


def _matrix(values: npt.NDArray[np.float32]) -> tuple[tuple[float, ...], ...]:
    # str() of a float32 is its shortest round-tripping decimal (numpy >= 1.14)
    return tuple(tuple(float(str(v)) for v in row) for row in values.astype(np.float32))
