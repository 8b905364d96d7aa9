"""Export: the ONNX step matches TensorFlow, carries its metadata, and fails loudly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import tf2onnx

from streamcast.core.artifact import FeatureMeta, GraphNames, ModelMeta, ScalingMeta
from streamcast.core.model import lean_graph, open_session
from streamcast.core.onnx_passes import drop_noop_slices
from training.config import TrainConfig
from training.errors import ExportError
from training.export import (
    OPSET,
    PARITY_TOLERANCE,
    _step_function,
    export_step,
    random_inputs,
    reference_step,
)
from training.model import StepModel


def _meta(model: StepModel, horizon: int) -> ModelMeta:
    extras = tuple(f"e{i}" for i in range(model.n_extras))
    return ModelMeta(
        features=FeatureMeta(extra_names=extras),
        scaling=ScalingMeta(extra_loc=(0.0,) * len(extras), extra_scale=(1.0,) * len(extras)),
        name="unit",
        version="0",
        created_at="2026-11-24T00:00:00Z",
        graph=GraphNames() if model.n_calendar else GraphNames(calendar=None),
        state_size=model.state_size,
        layers=model.n_layers,
        units=model.units,
        window=4,
        horizon=horizon,
        interval_s=3600,
    )


@pytest.mark.parametrize(
    ("calendar", "layers", "n_inputs"), [((), 1, 1), (("time_of_day", "day_of_week"), 2, 3)]
)
def test_export_parity_and_signature(
    tmp_path: Path, calendar: tuple[str, ...], layers: int, n_inputs: int
) -> None:
    config = TrainConfig(units=8, layers=layers, horizon=6, calendar=calendar)
    model = StepModel.from_config_values(config, n_inputs=n_inputs)
    path = tmp_path / "m.onnx"
    diff = export_step(model, _meta(model, 6), path)
    assert 0.0 <= diff <= 1e-5
    sess = open_session(path)
    inputs = {i.name: i.shape for i in sess.get_inputs()}
    outputs = {o.name: o.shape for o in sess.get_outputs()}
    s = model.state_size
    assert inputs["x"][1:] == [model.step_width] == [2 + (n_inputs - 1) + 1]
    assert inputs["h"][1:] == [s] and inputs["c"][1:] == [s]
    assert ("calendar" in inputs) == bool(calendar)
    assert outputs["h_out"][1:] == [s] and outputs["forecast"][1:] == [6]
    # dynamic batch: a batch size never seen at export runs and matches TensorFlow
    batch = random_inputs(model, 6, batch=5, seed=9)
    names = _meta(model, 6).graph
    got = sess.run(["h_out", "c_out", "forecast"], batch.feeds(names))
    for a, b in zip(got, reference_step(model, batch, 6), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    meta = ModelMeta.from_metadata_map(sess.get_modelmeta().custom_metadata_map)
    assert meta.state_size == s and meta.horizon == 6


def test_state_out_is_after_one_step_only(tmp_path: Path) -> None:
    """h_out/c_out must not include the rollout: stepping twice equals two single steps."""
    model = StepModel.from_config_values(TrainConfig(units=4, horizon=5), n_inputs=1)
    export_step(model, _meta(model, 5), tmp_path / "m.onnx")
    sess = open_session(tmp_path / "m.onnx")
    names = GraphNames(calendar=None)
    batch = random_inputs(model, 5, batch=3, seed=4)
    h1, c1, _ = sess.run(["h_out", "c_out", "forecast"], batch.feeds(names))
    one_horizon = StepModel.from_config_values(TrainConfig(units=4, horizon=1), n_inputs=1)
    one_horizon.set_weights(model.get_weights())
    h_ref, c_ref, _ = reference_step(one_horizon, batch, 1)
    np.testing.assert_allclose(h1, h_ref, atol=1e-6)
    np.testing.assert_allclose(c1, c_ref, atol=1e-6)


def test_failing_parity_fails_the_export(tmp_path: Path) -> None:
    model = StepModel.from_config_values(TrainConfig(units=4, horizon=3), n_inputs=1)
    path = tmp_path / "m.onnx"
    with pytest.raises(ExportError, match="parity"):
        export_step(model, _meta(model, 3), path, tolerance=-1.0)
    assert not path.exists()


def test_trained_model_metadata_contract(tiny_model: Path) -> None:
    """Every field serving needs is filled in and agrees with the graph's shapes."""
    sess = open_session(tiny_model)
    meta = ModelMeta.from_metadata_map(sess.get_modelmeta().custom_metadata_map)
    inputs = {i.name: i.shape for i in sess.get_inputs()}
    outputs = {o.name: o.shape for o in sess.get_outputs()}
    g = meta.graph
    assert g.calendar is not None
    assert set(inputs) == {g.x, g.h, g.c, g.calendar}
    assert set(outputs) == {g.h_out, g.c_out, g.forecast}
    assert meta.state_size == meta.layers * meta.units
    assert inputs[g.x][1] == meta.step_width == 2 + len(meta.features.extra_names) + 24
    assert inputs[g.h][1] == inputs[g.c][1] == outputs[g.h_out][1] == meta.state_size
    assert inputs[g.calendar][1:] == [meta.horizon, 2 * len(meta.features.calendar)]
    assert outputs[g.forecast][1] == meta.horizon
    assert meta.interval_s == 3600 and meta.window == 24 and meta.horizon == 6
    assert meta.features.calendar == ("time_of_day", "day_of_week")
    assert meta.features.timezone == "Australia/Melbourne"
    assert meta.aggregation == "last" and meta.gap.max_gap == 3
    sc = meta.scaling
    assert sc.scheme == "level_scale" and sc.lags == (24,)
    assert sc.alpha == pytest.approx(1 / 24)
    assert 0.0 < sc.kappa < 10.0
    assert meta.schema_version == 2 and meta.grid.kind == "fixed"
    cal = meta.calibration
    assert cal.levels == (0.8, 0.95)
    for lower, upper in zip(cal.lower, cal.upper, strict=True):
        assert len(lower) == len(upper) == meta.horizon
        assert all(lo < hi for lo, hi in zip(lower, upper, strict=True))
    # the 95% interval contains the 80% one
    assert all(a <= b for a, b in zip(cal.lower[1], cal.lower[0], strict=True))
    assert len(meta.drift.residual_std) == meta.horizon
    t = meta.training
    assert t.data_fingerprint.startswith("sha256:") and t.n_keys == 3 and t.n_rows > 0
    assert set(t.metrics) >= {"lstm", "naive", "seasonal_naive", "parity"}
    assert 0.0 <= t.shrinkage <= 1.0
    assert t.metrics["parity"]["max_abs_diff"] <= 1e-5
    assert TrainConfig.from_dict(dict(t.config)).window == meta.window
    assert meta.version and meta.created_at and meta.name == "tiny"


def test_the_evaluate_report_states_the_export_tolerance() -> None:
    from training.workflow import EXPORT_PARITY_TOLERANCE

    assert EXPORT_PARITY_TOLERANCE == PARITY_TOLERANCE


def test_trained_model_carries_a_self_test_it_passes(tiny_model: Path, tmp_path: Path) -> None:
    """The sample: a few real validation rows with the non-zero LSTM state the model
    reaches there and their calendar rows, with the exported graph's outputs; the model
    passes it, and the same graph with weights x 1.05 does not."""
    from streamcast.core.model import OnnxStepModel, self_test_failures
    from tests.support.models import scale_weights
    from training.export import SELF_TEST_ATOL, SELF_TEST_ROWS

    model = OnnxStepModel.load(tiny_model)
    meta, sample = model.meta, model.meta.self_test
    assert len(sample.x) == SELF_TEST_ROWS and sample.atol == SELF_TEST_ATOL
    assert np.asarray(sample.h).shape == (SELF_TEST_ROWS, meta.state_size)
    assert np.abs(np.asarray(sample.h)).min(axis=1).max() > 0  # a state, not zeros
    assert np.asarray(sample.calendar).shape == (SELF_TEST_ROWS, meta.horizon, 4)
    assert np.asarray(sample.forecast).shape == (SELF_TEST_ROWS, meta.horizon)
    assert self_test_failures(model) is None
    # stored as the shortest decimals of float32s: on the exporter's machine a rerun sees
    # the very inputs the exporter ran and gives back the very same bits
    rerun = model.step(
        *(np.asarray(v, dtype=np.float32) for v in (sample.x, sample.h, sample.c, sample.calendar))
    )
    for got, want in zip(rerun, (sample.h_out, sample.c_out, sample.forecast), strict=True):
        np.testing.assert_array_equal(got, np.asarray(want, dtype=np.float32))
    scaled = OnnxStepModel.load(scale_weights(tiny_model, tmp_path / "x105.onnx", 1.05))
    failure = self_test_failures(scaled)
    assert failure is not None and "does not reproduce its self-test sample" in failure


def test_trained_model_carries_the_input_drift_reference(tiny_model: Path) -> None:
    from training.input_drift import INPUT_PROBS

    ref = ModelMeta.from_metadata_map(
        open_session(tiny_model).get_modelmeta().custom_metadata_map
    ).drift
    assert ref.input_probs == INPUT_PROBS
    assert len(ref.input_quantiles) == len(INPUT_PROBS)
    assert list(ref.input_quantiles) == sorted(ref.input_quantiles)
    assert ref.input_threshold is not None and 0 < ref.input_threshold < 1
    assert ref.input_false_alarm_rate is not None and 0 <= ref.input_false_alarm_rate <= 1


def test_slices_that_keep_all_their_input_become_identities_with_the_same_bits() -> None:
    """tf2onnx writes a Slice for every ``t[:, :]`` and ``h[:, 0:units]``, and ONNX Runtime
    copies each: the export turns them into identities, and the step computes the same
    bits with and without them."""
    config = TrainConfig(units=8, layers=1, horizon=6, calendar=("time_of_day",))
    model = StepModel.from_config_values(config, n_inputs=1)
    function, signature = _step_function(model, 6)
    proto, _ = tf2onnx.convert.from_function(function, input_signature=signature, opset=OPSET)
    original = proto.SerializeToString()
    assert drop_noop_slices(proto) > 0
    assert drop_noop_slices(proto) == 0, "no slice left keeps all of its input"
    assert any(n.op_type == "Slice" for n in proto.graph.node), "the real slices stay"
    feeds = random_inputs(model, 6, batch=7, seed=3).feeds(_meta(model, 6).graph)
    before = open_session(original).run(None, feeds)
    after = open_session(proto.SerializeToString()).run(None, feeds)
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("layers", [1, 2])
def test_the_exported_cell_takes_one_product_per_gate_and_training_keeps_two_per_cell(
    tmp_path: Path, layers: int
) -> None:
    """The graph computes each cell's gates as one product per gate of [input, h] by
    its columns of the stacked kernels (no Split; ONNX Runtime fuses each with its
    activation), not two products and a sum; the model goes back to the training form
    after the export, and the export still matches TensorFlow."""
    model = StepModel.from_config_values(TrainConfig(units=8, layers=layers, horizon=6), n_inputs=1)
    assert export_step(model, _meta(model, 6), tmp_path / "m.onnx") <= PARITY_TOLERANCE
    assert model.one_product is False
    proto = onnx.load(tmp_path / "m.onnx")
    products = sum(n.op_type in {"MatMul", "Gemm"} for n in proto.graph.node)
    # per step of the 6 (the origin's, then 5 of the rollout): four per layer, and the
    # head's two (on h, and the skip on the cell input)
    assert products == 6 * (4 * layers + 2)
    assert not any(n.op_type == "Split" for n in proto.graph.node)


def test_an_artifact_exported_with_split_gates_is_served_with_a_product_per_gate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An artifact written before the exporter split the gate products (one product and
    a Split per cell) loads as the graph with one product per gate, which gives the very
    bits the artifact's own graph gives."""
    import training.export as export_module

    model = StepModel.from_config_values(TrainConfig(units=8, layers=2, horizon=6), n_inputs=2)
    meta = _meta(model, 6)
    monkeypatch.setattr(export_module, "split_gate_products", lambda proto: 0)
    export_step(model, meta, tmp_path / "old.onnx")
    data = (tmp_path / "old.onnx").read_bytes()
    assert sum(n.op_type == "Split" for n in onnx.load_model_from_string(data).graph.node) == 12
    session = open_session(data)
    lean, lean_session = lean_graph(data, session, meta)
    assert not any(n.op_type == "Split" for n in onnx.load_model_from_string(lean).graph.node)
    # the six steps share each gate's weights, as they shared the whole product's
    assert len(lean) < len(data) + 12 * 400  # nodes and names; no copy of a weight
    feeds = random_inputs(model, 6, batch=1500, seed=4).feeds(meta.graph)
    for a, b in zip(session.run(None, feeds), lean_session.run(None, feeds), strict=True):
        np.testing.assert_array_equal(a, b)
