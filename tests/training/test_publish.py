"""Publishing into a watched models directory: atomic, hidden while written, never
replacing a version, names that sort chronologically."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.errors import ConfigError
from training.publish import (
    NotPublishedError,
    prune_published,
    publish_model,
    published_name,
    quality_gate,
    visible_models,
)


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


def test_prune_keeps_the_newest_and_ignores_hidden_files(tmp_path: Path) -> None:
    for name in ("20261101T000000Z-a.onnx", "20261108T000000Z-b.onnx", "20261115T000000Z-c.onnx",
                 ".20261122T000000Z-d.onnx.tmp", "notes.txt"):  # fmt: skip
        (tmp_path / name).write_bytes(b"x")
    removed = prune_published(tmp_path, keep=2)
    assert [p.name for p in removed] == ["20261101T000000Z-a.onnx"]
    assert [p.name for p in visible_models(tmp_path)] == [
        "20261108T000000Z-b.onnx",
        "20261115T000000Z-c.onnx",
    ]
    assert (tmp_path / ".20261122T000000Z-d.onnx.tmp").exists()
    assert (tmp_path / "notes.txt").exists()


def test_the_quality_gate_needs_the_lstm_to_beat_the_named_baselines() -> None:
    metrics = {"lstm": {"mase": 0.9}, "seasonal_naive": {"mase": 1.0}, "arima": {"mase": 0.8}}
    quality_gate(metrics, ["seasonal_naive"])
    quality_gate(metrics, [])
    with pytest.raises(NotPublishedError, match=r"0\.900 does not beat arima 0\.800"):
        quality_gate(metrics, ["seasonal_naive", "arima"])
    with pytest.raises(ConfigError, match="prophet is not a scored baseline"):
        quality_gate(metrics, ["prophet"])
