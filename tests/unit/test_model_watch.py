"""Which artifact serves, and the watcher that swaps in new ones: a models directory's
newest, a replaced file, and the refusals (truncated, self-test, incompatible)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from streamcast.core.model import OnnxStepModel, self_test_failures
from streamcast.core.models_dir import newest_in, resolve_model
from streamcast.core.pipeline import Pipeline
from streamcast.errors import ConfigurationError, ModelError
from streamcast.service.models import ModelWatcher, startup_model
from tests.support.models import make_tiny_model, scale_weights


def publish(src: Path, directory: Path, version: str) -> Path:
    """What a retrain job does: write hidden, then rename into place."""
    tmp = directory / f".{version}.onnx.tmp"
    shutil.copyfile(src, tmp)
    final = directory / f"{version}.onnx"
    tmp.replace(final)
    return final


def test_a_models_directory_serves_its_newest_whole_artifact(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    with pytest.raises(ConfigurationError, match=r"holds no \*\.onnx artifact"):
        resolve_model(models)
    src = make_tiny_model(tmp_path / "m.onnx")
    publish(src, models, "20261130T000000Z")
    newest = publish(src, models, "20261201T000000Z")
    (models / ".20261202T000000Z.onnx.tmp").write_bytes(b"half written")
    (models / "notes.txt").write_text("not a model")
    assert resolve_model(models) == newest == newest_in(models)
    assert resolve_model(src) == src
    with pytest.raises(ConfigurationError, match="file not found"):
        resolve_model(tmp_path / "missing.onnx")


def test_self_test_passes_for_the_artifact_and_fails_for_other_weights(tmp_path: Path) -> None:
    path = make_tiny_model(tmp_path / "m.onnx", self_test=4, calendar=("time_of_day",))
    model = OnnxStepModel.load(path)
    assert len(model.meta.self_test.x) == 4
    assert self_test_failures(model) is None
    # the same metadata stapled to a graph with other weights
    other = onnx.load(str(make_tiny_model(tmp_path / "o.onnx", seed=5, calendar=("time_of_day",))))
    mine = onnx.load(str(path))
    del other.metadata_props[:]
    other.metadata_props.extend(mine.metadata_props)
    onnx.save(other, str(tmp_path / "stapled.onnx"))
    problem = self_test_failures(OnnxStepModel.load(tmp_path / "stapled.onnx"))
    assert problem is not None and "does not reproduce its self-test sample" in problem
    assert "differs by" in problem and "(allowed 0.0001)" in problem
    assert self_test_failures(OnnxStepModel.load(make_tiny_model(tmp_path / "n.onnx"))) is None


class Watch:
    """A watcher over ``path`` whose refusals are counted, checked by a real pipeline."""

    def __init__(self, path: Path, serving: Path) -> None:
        self.refused = 0
        self.pipeline = Pipeline(OnnxStepModel.load(serving))
        self.watcher = ModelWatcher(
            path,
            serving,
            poll_s=0.01,
            intra_op_threads=1,
            check=self.pipeline.swap_problem,
            on_refused=self._refuse,
        )

    def _refuse(self) -> None:
        self.refused += 1


async def test_new_artifacts_are_validated_then_handed_over_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    first = publish(make_tiny_model(tmp_path / "a.onnx", self_test=2), models, "20261201T00Z")
    watch = Watch(models, first)
    assert not await watch.watcher.poll()  # what serves is not new
    good = make_tiny_model(tmp_path / "b.onnx", seed=3, version="2", self_test=2)
    publish(good, models, "20261201T01Z")
    assert await watch.watcher.poll()
    model = watch.watcher.take()
    assert model is not None and model.meta.version == "2"
    assert watch.watcher.take() is None  # handed over once
    assert not await watch.watcher.poll()

    # a truncated artifact, a damaged one that still loads, an incompatible one
    truncated = models / "20261201T02Z.onnx"
    truncated.write_bytes(good.read_bytes()[:500])
    assert not await watch.watcher.poll()
    assert watch.refused == 1
    assert not await watch.watcher.poll()  # refused once, not retried every poll
    assert watch.refused == 1
    truncated.unlink()

    damaged = onnx.load(str(good))
    for init in damaged.graph.initializer:
        if init.name == "Wx":
            values = onnx.numpy_helper.to_array(init) * np.float32(1.05)
            init.CopyFrom(onnx.numpy_helper.from_array(values, "Wx"))
    onnx.save(damaged, str(tmp_path / "damaged.onnx"))
    publish(tmp_path / "damaged.onnx", models, "20261201T03Z")
    assert not await watch.watcher.poll() and watch.refused == 2
    (models / "20261201T03Z.onnx").unlink()

    wide = make_tiny_model(tmp_path / "w.onnx", window=9, version="3")
    publish(wide, models, "20261201T04Z")
    assert not await watch.watcher.poll() and watch.refused == 3
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 3
    assert "is not a loadable ONNX model" in refusals[0]
    assert "does not reproduce its self-test sample" in refusals[1]
    assert "window 4 -> 9" in refusals[2]
    assert all("the running model keeps serving" in line for line in refusals)


async def test_a_watched_file_replaced_in_place_is_picked_up(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    make_tiny_model(path)
    watch = Watch(path, path)
    assert not await watch.watcher.poll()
    replacement = make_tiny_model(tmp_path / "next.onnx", seed=2, version="7")
    replacement.replace(path)
    assert await watch.watcher.poll()
    model = watch.watcher.take()
    assert model is not None and model.meta.version == "7"
    path.write_text(json.dumps({"not": "a model"}))
    assert not await watch.watcher.poll() and watch.refused == 1


async def test_a_start_skips_newer_artifacts_that_do_not_load_or_pass_their_self_test(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A replica restarting while a broken file lies in the models directory serves what
    the running ones serve (the newest good artifact) and refuses the broken ones once."""
    models = tmp_path / "models"
    models.mkdir()
    good = publish(make_tiny_model(tmp_path / "a.onnx", self_test=2), models, "20261201T00Z")
    other = make_tiny_model(tmp_path / "b.onnx", seed=3, version="2", self_test=2)
    (models / "20261201T01Z.onnx").write_bytes(other.read_bytes()[:300])  # truncated
    publish(scale_weights(other, tmp_path / "s.onnx", 1.05), models, "20261201T02Z")
    refusals: list[int] = []
    serving, refused = startup_model(models, 1, lambda: refusals.append(1))
    assert serving == good
    assert {s.path.name for s in refused} == {"20261201T01Z.onnx", "20261201T02Z.onnx"}
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == len(refusals) == 2
    assert "does not reproduce its self-test sample" in lines[0]
    assert "is not a loadable ONNX model" in lines[1]
    # the watcher does not refuse them again
    pipeline = Pipeline(OnnxStepModel.load(serving))
    watcher = ModelWatcher(
        models, serving, poll_s=0.01, intra_op_threads=1, check=pipeline.swap_problem,
        on_refused=lambda: refusals.append(1), refused=refused,
    )  # fmt: skip
    assert not await watcher.poll() and len(refusals) == 2
    # a single file is served as it is; a directory with nothing good fails the start
    assert startup_model(other, 1, lambda: None) == (other, set())
    good.unlink()
    caplog.clear()
    with pytest.raises(ModelError, match="no artifact in the models directory"):
        startup_model(models, 1, lambda: refusals.append(1))
    # as the error says, each refusal was logged (and counted) before it
    assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 2
    assert len(refusals) == 4
