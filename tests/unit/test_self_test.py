"""The self-test a service runs before it swaps to a new artifact, in the cases the
watcher's tests (``test_model_watch.py``) leave out: the issue's weights x 1.05, a
difference within ``atol``, a sample that does not fit the graph, NaN outputs (tiny model,
no TensorFlow; the trained export is checked in ``tests/training/test_export.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamcast.core.model import OnnxStepModel, self_test_failures
from tests.support.models import make_tiny_model, rewrite_meta, scale_weights


@pytest.fixture(scope="module")
def tested(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny artifact (calendar features) carrying a self-test sample of its own."""
    path = tmp_path_factory.mktemp("self_test") / "tested.onnx"
    return make_tiny_model(path, calendar=("time_of_day", "day_of_week"), self_test=3)


def test_weights_times_1_05_fail(tested: Path, tmp_path: Path) -> None:
    model = OnnxStepModel.load(scale_weights(tested, tmp_path / "scaled.onnx", 1.05))
    failure = self_test_failures(model)
    assert failure is not None and "\n" not in failure
    assert "does not reproduce its self-test sample" in failure


def test_a_difference_within_atol_passes(tested: Path, tmp_path: Path) -> None:
    nudged = scale_weights(tested, tmp_path / "nudged.onnx", 1.0 + 1e-7)
    assert self_test_failures(OnnxStepModel.load(nudged)) is None


def test_a_sample_that_does_not_fit_the_graph_is_one_line(tested: Path, tmp_path: Path) -> None:
    sample = OnnxStepModel.load(tested).meta.self_test.model_dump()
    sample["x"] = [[0.0, 1.0]] * 3  # two inputs where the graph takes one
    broken = rewrite_meta(tested, tmp_path / "broken.onnx", self_test=sample)
    failure = self_test_failures(OnnxStepModel.load(broken))
    assert failure is not None and "\n" not in failure
    assert "self-test sample does not run" in failure
    sample = OnnxStepModel.load(tested).meta.self_test.model_dump()
    sample["forecast"] = [row[:-1] for row in sample["forecast"]]
    short = rewrite_meta(tested, tmp_path / "short.onnx", self_test=sample)
    assert self_test_failures(OnnxStepModel.load(short)) == (
        "its self-test forecast has shape [3, 3], expected [3, 2]"
    )


def test_nan_outputs_fail(tested: Path, tmp_path: Path) -> None:
    poisoned = scale_weights(tested, tmp_path / "nan.onnx", float("nan"))
    failure = self_test_failures(OnnxStepModel.load(poisoned))
    assert failure is not None and "differs by nan" in failure
