"""The self-test a service runs before it swaps to a new artifact: the sample the exporter
embedded must come out of the loaded graph as the exporter saw it (tiny model, no
TensorFlow; the trained export is checked in ``tests/training/test_export.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamcast.core.model import OnnxStepModel, self_test_failures
from tests.support.models import make_tiny_model, rewrite_meta, scale_weights


def _sample(model: OnnxStepModel, rows: int = 3) -> dict[str, object]:
    """A self-test sample for ``model``: random inputs and the model's own outputs."""
    rng = np.random.default_rng(7)
    s, meta = model.meta.state_size, model.meta
    x = rng.standard_normal((rows, 1)).astype(np.float32)
    h = rng.uniform(-1, 1, (rows, s)).astype(np.float32)
    c = rng.standard_normal((rows, s)).astype(np.float32)
    calendar = rng.uniform(-1, 1, (rows, meta.horizon, 4)).astype(np.float32)
    h_out, c_out, forecast = model.step(x, h, c, calendar)
    return {
        "x": x.tolist(), "h": h.tolist(), "c": c.tolist(), "calendar": calendar.tolist(),
        "h_out": h_out.tolist(), "c_out": c_out.tolist(), "forecast": forecast.tolist(),
        "atol": 1e-4,
    }  # fmt: skip


@pytest.fixture(scope="module")
def tested(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny artifact (calendar features) carrying a self-test sample of its own."""
    folder = tmp_path_factory.mktemp("self_test")
    plain = make_tiny_model(folder / "plain.onnx", calendar=("time_of_day", "day_of_week"))
    sample = _sample(OnnxStepModel.load(plain))
    return rewrite_meta(plain, folder / "tested.onnx", self_test=sample)


def test_a_model_reproduces_its_own_sample(tested: Path) -> None:
    model = OnnxStepModel.load(tested)
    assert len(model.meta.self_test.x) == 3
    assert self_test_failures(model) is None


def test_weights_times_1_05_fail_naming_the_largest_difference(
    tested: Path, tmp_path: Path
) -> None:
    model = OnnxStepModel.load(scale_weights(tested, tmp_path / "scaled.onnx", 1.05))
    failure = self_test_failures(model)
    assert failure is not None and "\n" not in failure
    assert failure.startswith("self-test failed: ")
    assert "> atol 0.0001" in failure and "where the exporter computed" in failure
    # the named output and position is where the difference is largest
    sample = model.meta.self_test
    want = {n: np.asarray(getattr(sample, n)) for n in ("h_out", "c_out", "forecast")}
    got = dict(
        zip(
            want,
            model.step(
                np.asarray(sample.x, np.float32), np.asarray(sample.h, np.float32),
                np.asarray(sample.c, np.float32), np.asarray(sample.calendar, np.float32),
            ),
            strict=True,
        )
    )  # fmt: skip
    diffs = {n: np.abs(got[n] - want[n]) for n in want}
    name = max(diffs, key=lambda n: float(diffs[n].max()))
    at = [int(i) for i in np.unravel_index(int(np.argmax(diffs[name])), diffs[name].shape)]
    assert f"{name}{at}" in failure


def test_a_tiny_difference_within_atol_passes(tested: Path, tmp_path: Path) -> None:
    nudged = scale_weights(tested, tmp_path / "nudged.onnx", 1.0 + 1e-7)
    assert self_test_failures(OnnxStepModel.load(nudged)) is None


def test_another_models_sample_fails(tested: Path, tmp_path: Path) -> None:
    other = make_tiny_model(
        tmp_path / "other.onnx", calendar=("time_of_day", "day_of_week"), seed=3
    )
    sample = OnnxStepModel.load(tested).meta.self_test.model_dump()
    impostor = rewrite_meta(other, tmp_path / "impostor.onnx", self_test=sample)
    assert (self_test_failures(OnnxStepModel.load(impostor)) or "").startswith("self-test failed")


def test_an_artifact_without_a_sample_passes_unchecked(tmp_path: Path) -> None:
    model = OnnxStepModel.load(make_tiny_model(tmp_path / "bare.onnx"))
    assert model.meta.self_test.x == ()
    assert self_test_failures(model) is None


def test_a_sample_of_the_wrong_shape_is_one_line(tested: Path, tmp_path: Path) -> None:
    sample = OnnxStepModel.load(tested).meta.self_test.model_dump()
    sample["x"] = [[0.0, 1.0]] * 3  # two inputs where the graph takes one
    broken = rewrite_meta(tested, tmp_path / "broken.onnx", self_test=sample)
    failure = self_test_failures(OnnxStepModel.load(broken))
    assert failure is not None and "\n" not in failure
    assert failure.startswith("the self-test sample does not run through the graph")
    sample = OnnxStepModel.load(tested).meta.self_test.model_dump()
    sample["forecast"] = [row[:-1] for row in sample["forecast"]]
    short = rewrite_meta(tested, tmp_path / "short.onnx", self_test=sample)
    assert self_test_failures(OnnxStepModel.load(short)) == (
        "self-test output 'forecast' has shape [3, 3], expected [3, 2]"
    )


def test_nan_outputs_fail(tested: Path, tmp_path: Path) -> None:
    poisoned = scale_weights(tested, tmp_path / "nan.onnx", float("nan"))
    failure = self_test_failures(OnnxStepModel.load(poisoned))
    assert failure is not None and "|difference| inf" in failure
