"""Publishing into a watched models directory: atomic, hidden while written, never
replacing a version, names that sort chronologically."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.errors import ConfigError
from training.publish import publish_model, published_name


def test_published_atomically_under_the_version_name(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"onnx bytes")
    models = tmp_path / "models"
    first = publish_model(model, models, "20261201T120000Z-1a2b3c4d")
    assert first == models / "20261201T120000Z-1a2b3c4d.onnx"
    assert first.read_bytes() == b"onnx bytes"
    later = publish_model(model, models, "20261208T120000Z-0f0f0f0f")
    # what the service serves from a directory: the greatest name not starting with '.'
    served = max(p.name for p in models.glob("*.onnx") if not p.name.startswith("."))
    assert served == later.name
    assert sorted(p.name for p in models.iterdir()) == [first.name, later.name]


def test_a_version_is_never_replaced(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"new")
    (tmp_path / "v1.onnx").write_bytes(b"old")
    with pytest.raises(ConfigError, match="never replaced"):
        publish_model(model, tmp_path, "v1")
    assert (tmp_path / "v1.onnx").read_bytes() == b"old"


def test_a_failed_copy_leaves_nothing_behind(tmp_path: Path) -> None:
    models = tmp_path / "models"
    with pytest.raises(IsADirectoryError):
        publish_model(tmp_path, models, "v2")  # a directory is not a model file
    assert list(models.iterdir()) == []


@pytest.mark.parametrize("version", ["", ".hidden", "a/b", "v 1"])
def test_versions_that_are_no_file_names(version: str) -> None:
    with pytest.raises(ConfigError, match="cannot be a file name"):
        published_name(version)


def test_not_a_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        publish_model(blocker, blocker, "v1")
