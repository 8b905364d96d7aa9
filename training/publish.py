"""Publish a trained model into a models directory that running services watch.

The contract with the service's hot-swap (``STREAMCAST_MODEL_PATH`` set to a directory):
it serves the lexicographically greatest ``*.onnx`` whose name does not start with a dot.
:func:`publish_model` therefore writes ``<dir>/.<version>.onnx.tmp`` (hidden: never
served half-written), flushes it to disk, and renames it to ``<dir>/<version>.onnx`` in
one atomic step on the same file system. A model's version starts with its UTC creation
time (``20261201T120000Z-<data fingerprint>``), so names sort chronologically and the
newest model wins. The directory entry is synced too, so a crash right after publishing
leaves either no new model or the whole one.

:func:`quality_gate` is what a retrain job checks before it publishes (the LSTM must beat
the named baselines on the test period), and :func:`prune_published` keeps a directory to
its newest versions (the older ones are the rollback: remove the newest file and the
service goes back to the one before it).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from training.errors import ConfigError, TrainingError


class NotPublishedError(TrainingError):
    """The retrained model did not pass the quality gate; it was written, not published."""


#: what a version may be made of to be a file name as it is
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.+")


def published_name(version: str) -> str:
    """The file name of a model version in a models directory."""
    if not version or version.startswith(".") or not set(version) <= _SAFE:
        raise ConfigError(
            f"model version {version!r} cannot be a file name in a models directory; "
            "use letters, digits and - _ . + (not starting with a dot)"
        )
    return f"{version}.onnx"


def check_models_dir(models_dir: Path) -> None:
    """ConfigError unless ``models_dir`` is a directory or does not exist yet (checked
    before training, so a wrong path does not cost a training run)."""
    if models_dir.exists() and not models_dir.is_dir():
        raise ConfigError(f"--publish-to {models_dir}: not a directory")


def publish_model(model: Path, models_dir: Path, version: str) -> Path:
    """Copy ``model`` into ``models_dir`` as ``<version>.onnx`` atomically (module
    docstring); returns the published path. An existing version is never replaced."""
    check_models_dir(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    final = models_dir / published_name(version)
    if final.exists():
        raise ConfigError(
            f"{final} exists already: a published version is never replaced (retrain to get "
            "a new version)"
        )
    tmp = models_dir / f".{final.name}.tmp"
    try:
        with model.open("rb") as src, tmp.open("wb") as dst:
            shutil.copyfileobj(src, dst)
            dst.flush()
            os.fsync(dst.fileno())
        tmp.replace(final)
    finally:
        tmp.unlink(missing_ok=True)
    _sync_directory(models_dir)
    return final


def _sync_directory(path: Path) -> None:
    """Persist a rename: fsync the directory (POSIX; a no-op where it cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def visible_models(models_dir: Path) -> list[Path]:
    """The models a watching service chooses from, oldest first (by name)."""
    return sorted(p for p in models_dir.glob("*.onnx") if not p.name.startswith("."))


def prune_published(models_dir: Path, keep: int) -> list[Path]:
    """Remove all but the newest ``keep`` published models; returns those removed."""
    if keep < 1:
        raise ConfigError(f"--publish-keep must be at least 1 (got {keep})")
    old = visible_models(models_dir)[:-keep]
    for path in old:
        path.unlink(missing_ok=True)
    return old


def check_baselines(gate: Sequence[str], scored: Sequence[str]) -> None:
    """ConfigError for gate names that are not among the ``scored`` baselines (checked
    before training)."""
    unknown = [b for b in gate if b not in scored]
    if unknown:
        raise ConfigError(
            f"--publish-if-better-than: {', '.join(unknown)} is not a scored baseline; "
            f"use {', '.join(scored) or 'none (see --baselines)'}"
        )


def quality_gate(metrics: Mapping[str, Mapping[str, Any]], baselines: Sequence[str]) -> None:
    """NotPublishedError unless the LSTM's test-period MASE is below each baseline's."""
    check_baselines(baselines, [m for m in metrics if m != "lstm"])
    lstm = float(metrics["lstm"]["mase"])
    worse = [f"{b} {float(metrics[b]['mase']):.3f}" for b in baselines
             if not lstm < float(metrics[b]["mase"])]  # fmt: skip
    if worse:
        raise NotPublishedError(
            f"not published: the LSTM's test MASE {lstm:.3f} does not beat {', '.join(worse)} "
            "(the model is in --out; look at its report)"
        )
