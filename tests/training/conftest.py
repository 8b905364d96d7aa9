"""Shared training fixtures: one tiny trained model per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.tiny import train_tiny_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``model.onnx`` of the tiny pedestrian model (its directory also holds data.csv,
    report.json and forecasts.csv)."""
    return train_tiny_model(tmp_path_factory.mktemp("tiny_model"))
