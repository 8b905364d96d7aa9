"""Loading and validating a step artifact, and stepping it (tiny model, no TensorFlow)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnx
import pytest

from streamcast.core import model as model_module
from streamcast.core.model import (
    OnnxStepModel,
    fingerprint,
    lean_graph,
    open_session,
    probe_feeds,
    session_options,
)
from streamcast.errors import ModelError
from tests.support.models import TinyReference, make_tiny_model, rewrite_meta


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(
        tmp_path_factory.mktemp("model") / "tiny.onnx",
        extras=("temp",),
        calendar=("time_of_day", "day_of_week"),
        horizon=4,
        state_size=6,
    )


def test_load_reads_meta_and_steps_like_the_reference(tiny: Path) -> None:
    model = OnnxStepModel.load(tiny)
    assert model.meta.horizon == 4
    assert model.meta.features.extra_names == ("temp",)
    ref = TinyReference(tiny)
    rng = np.random.default_rng(3)
    for batch in (1, 7):
        x = rng.standard_normal((batch, 4)).astype(np.float32)
        h = rng.standard_normal((batch, 6)).astype(np.float32)
        c = rng.standard_normal((batch, 6)).astype(np.float32)
        cal = rng.standard_normal((batch, 4, 4)).astype(np.float32)
        got = model.step(x, h, c, cal)
        want = ref.step(x, h, c, cal)
        for g, w in zip(got, want, strict=True):
            assert g.dtype == np.float32
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
        assert got[2].shape == (batch, 4)


def test_a_batch_bigger_than_one_run_is_cut_into_runs_with_the_same_result(tiny: Path) -> None:
    model = OnnxStepModel.load(tiny)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((10, model.meta.step_width)).astype(np.float32)
    h = rng.standard_normal((10, 6)).astype(np.float32)
    c = rng.standard_normal((10, 6)).astype(np.float32)
    cal = rng.standard_normal((10, 4, 4)).astype(np.float32)
    whole = model.step(x, h, c, cal)
    model.run_keys = 3  # runs of 3, 3, 3 and 1 keys
    runs = model.step(x, h, c, cal)
    for w, r in zip(whole, runs, strict=True):
        assert r.shape == w.shape
        np.testing.assert_array_equal(r, w)


def test_two_threads_run_a_batch_side_by_side_with_the_same_bits(tiny: Path) -> None:
    one, two = OnnxStepModel.load(tiny), OnnxStepModel.load(tiny, threads=2)
    assert two.threads == 2
    rng = np.random.default_rng(5)
    # 3 runs of 1,000 on one thread; on two: the same runs, the first on this thread
    # and the others on the pool; 300 keys: one run on one thread, two runs of 150 on two
    for n in (300, 3_000):
        x = rng.standard_normal((n, one.meta.step_width)).astype(np.float32)
        h = rng.standard_normal((n, 6)).astype(np.float32)
        c = rng.standard_normal((n, 6)).astype(np.float32)
        cal = rng.standard_normal((n, 4, 4)).astype(np.float32)
        for a, b in zip(one.step(x, h, c, cal), two.step(x, h, c, cal), strict=True):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(one.advance(x, h, c, cal), two.advance(x, h, c, cal), strict=True):
            np.testing.assert_array_equal(a, b)


def test_a_failing_run_on_a_pool_thread_raises_in_the_caller(tiny: Path) -> None:
    model = OnnxStepModel.load(tiny, threads=2)
    session = model._session
    x_name = model.meta.graph.x
    ran_on: list[str] = []

    class Failing:
        """The real session, except the run whose first row is marked raises."""

        def run(self, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            ran_on.append(threading.current_thread().name)
            if feeds[x_name][0, 0] == 99.0:
                raise RuntimeError("run failed on purpose")
            return list(session.run(outputs, feeds))

    model._session = Failing()
    x = np.zeros((300, model.meta.step_width), dtype=np.float32)
    x[150, 0] = 99.0  # the first row of the second run of 150: the pool thread's
    state, cal = np.zeros((300, 6), dtype=np.float32), np.zeros((300, 4, 4), dtype=np.float32)
    with pytest.raises(RuntimeError, match="run failed on purpose"):
        model.step(x, state, state, cal)
    # one run on the calling thread, the other on the pool (in either order)
    assert len(ran_on) == 2
    assert threading.current_thread().name in ran_on
    assert any(name.startswith("ort-run") for name in ran_on)


def test_threads_below_one_are_refused(tiny: Path) -> None:
    with pytest.raises(ModelError, match="threads must be >= 1, got 0"):
        OnnxStepModel.load(tiny, threads=0)


def test_session_options_are_tuned() -> None:
    options = session_options(2)
    assert options.intra_op_num_threads == 2
    assert options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_missing_file_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        OnnxStepModel.load(tmp_path / "nope.onnx")


def test_garbage_file_is_a_model_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        OnnxStepModel.load(bad)


def test_model_without_metadata_is_refused(tiny: Path, tmp_path: Path) -> None:
    model = onnx.load(str(tiny))
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    with pytest.raises(ModelError, match="no 'streamcast' metadata"):
        OnnxStepModel.load(bare)


def test_other_schema_version_is_refused(tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="schema 3 is not supported"):
        OnnxStepModel.load(rewrite_meta(tiny, tmp_path / "v3.onnx", schema_version=3))


def test_a_schema_1_artifact_is_refused_with_one_line(tiny: Path, tmp_path: Path) -> None:
    """An artifact of streamcast 0.1 (fixed training loc/scale per key, x of 1 + E) carries
    fields schema 2 does not know: the refusal names the schema, not each field."""
    old = rewrite_meta(
        tiny, tmp_path / "v1.onnx", schema_version=1,
        scaling={"scheme": "standard", "unseen_keys": "warmup_window", "known": {"a": [1, 2]}},
    )  # fmt: skip
    with pytest.raises(ModelError) as info:
        OnnxStepModel.load(old)
    message = str(info.value)
    assert "\n" not in message
    assert "schema 1 is not supported (this streamcast reads schema 2" in message
    assert "known" not in message and "train the model again" in message


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"horizon": 5}, "input 'calendar' has shape .* expected \\[batch, \\*\\[5, 4\\]\\]"),
        ({"state_size": 3}, "input 'h' has shape"),
        ({"features": {"extra_names": [], "calendar": ["time_of_day", "day_of_week"]}},
         "input 'x' has shape"),
        ({"graph": {"x": "inputs"}}, "lack \\['inputs'\\]"),
        ({"features": {"extra_names": ["temp"]}}, "unexpected graph inputs \\['calendar'\\]"),
    ],
)  # fmt: skip
def test_signature_mismatch_names_the_tensor(
    tiny: Path, tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ModelError, match=message):
        OnnxStepModel.load(rewrite_meta(tiny, tmp_path / "m.onnx", **changes))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"window": 0}, "window: must be > 0 (got '0')"),
        ({"horizon": "soon"}, "horizon: input should be a valid integer"),
        ({"gap": {"max_gap": -1}}, "gap.max_gap: must be >= 0 (got '-1')"),
        ({"aggregation": "median"}, "aggregation: must be one of"),
        ({"surprise": 1}, "surprise: not a known field"),
        ({"features": {"timezone": "Mars/Base"}}, "features.timezone: unknown time zone"),
        ({"features": {"timezone": "America"}}, "features.timezone: unknown time zone"),
    ],
)
def test_invalid_metadata_is_one_line_naming_the_field(
    tiny: Path, tmp_path: Path, changes: dict[str, object], field: str
) -> None:
    with pytest.raises(ModelError) as info:
        OnnxStepModel.load(rewrite_meta(tiny, tmp_path / "m.onnx", **changes))
    text = str(info.value)
    assert "\n" not in text
    assert "https://" not in text
    assert f"invalid streamcast metadata: {field}" in text
    assert "streamcast-train" in text


def test_advance_is_the_steps_state_from_a_graph_without_the_rollout(tiny: Path) -> None:
    """The state-only session (a rebuild from windows runs it ``window`` times per key):
    the graph pruned to ``h_out``/``c_out`` gives the full step's state bit for bit."""
    model = OnnxStepModel.load(tiny)
    full = onnx.load(str(tiny)).graph
    assert model._state_session is not None
    pruned = {o.name for o in model._state_session.get_outputs()}
    assert pruned == {"h_out", "c_out"} and "forecast" in {o.name for o in full.output}
    rng = np.random.default_rng(4)
    x = rng.standard_normal((9, model.meta.step_width)).astype(np.float32)
    h, c = (rng.standard_normal((9, 6)).astype(np.float32) for _ in range(2))
    cal = rng.standard_normal((9, 4, 4)).astype(np.float32)
    h_out, c_out, _ = model.step(x, h, c, cal)
    got = model.advance(x, h, c, cal)
    np.testing.assert_array_equal(got[0], h_out)
    np.testing.assert_array_equal(got[1], c_out)


def _with_a_noop_slice(tiny: Path, out: Path) -> bytes:
    """``tiny`` with ``h`` read through ``h[:, 0:state]`` (as tf2onnx writes it)."""
    proto = onnx.load(tiny)
    size = OnnxStepModel.load(tiny).meta.state_size
    bounds = {"starts": [0, 0], "ends": [2**31 - 1, size], "axes": [0, 1]}
    for name, value in bounds.items():
        array = np.asarray(value, dtype=np.int64)
        proto.graph.initializer.append(onnx.numpy_helper.from_array(array, f"noop_{name}"))
    for node in proto.graph.node:
        node.input[:] = ["h_whole" if i == "h" else i for i in node.input]
    inputs = ["h", *(f"noop_{name}" for name in bounds)]
    proto.graph.node.insert(0, onnx.helper.make_node("Slice", inputs, ["h_whole"]))
    onnx.save(proto, out)
    return out.read_bytes()


def test_an_artifact_with_noop_slices_runs_without_them_and_the_same_bits(
    tiny: Path, tmp_path: Path
) -> None:
    data = _with_a_noop_slice(tiny, tmp_path / "sliced.onnx")
    sliced = OnnxStepModel.load(tmp_path / "sliced.onnx")
    session = open_session(data)
    lean, lean_session = lean_graph(data, session, sliced.meta)
    assert lean != data and lean_session is not session
    assert [n.op_type for n in onnx.load_model_from_string(lean).graph.node].count("Slice") == 0
    feeds = probe_feeds(sliced.meta, 5)
    for a, b in zip(session.run(None, feeds), lean_session.run(None, feeds), strict=True):
        np.testing.assert_array_equal(a, b)
    # the loaded model steps as the original graph does, its identity the file's
    names = sliced.meta.graph
    want = session.run(None, feeds)
    got = sliced.step(
        feeds[names.x], feeds[names.h], feeds[names.c], feeds[names.calendar or "calendar"]
    )
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    assert sliced.identity == fingerprint(data)


def test_a_rewrite_that_changes_a_bit_is_not_used(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _with_a_noop_slice(tiny, tmp_path / "sliced.onnx")
    meta = OnnxStepModel.load(tiny).meta

    def drop_and_damage(proto: onnx.ModelProto) -> int:
        weights = proto.graph.initializer[0]
        array = onnx.numpy_helper.to_array(weights) * np.float32(1.0001)
        weights.CopyFrom(onnx.numpy_helper.from_array(array, weights.name))
        return 1

    monkeypatch.setattr(model_module, "drop_noop_slices", drop_and_damage)
    session = open_session(data)
    assert lean_graph(data, session, meta) == (data, session)
    # and a graph with nothing to drop is left as it is
    plain = tiny.read_bytes()
    monkeypatch.undo()
    plain_session = open_session(plain)
    assert lean_graph(plain, plain_session, meta) == (plain, plain_session)
