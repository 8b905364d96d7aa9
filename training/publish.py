"""Publish a trained model into a models directory that running services watch.

The contract with the service's hot-swap (``STREAMCAST_MODEL_PATH`` set to a directory):
it serves the lexicographically greatest ``*.onnx`` whose name does not start with a dot.
:func:`publish_model` therefore writes ``<dir>/.<version>.onnx.tmp`` (hidden: never
served half-written), flushes it to disk, and renames it to ``<dir>/<version>.onnx`` in
one atomic step on the same file system. A model's version starts with its UTC creation
time (``20261201T120000Z-<data fingerprint>``), so names sort chronologically and the
newest model wins. The directory entry is synced too, so a crash right after publishing
leaves either no new model or the whole one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from training.errors import ConfigError

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
