"""Which artifact a model path names: one file, or the newest good one in a *models
directory*. Shared by the service (which also hot-swaps, :mod:`streamcast.service.models`)
and the API (whose ``POST /v1/predict`` must serve what the service serves from the same
``STREAMCAST_MODEL_PATH``).

In a directory the artifact is the ``*.onnx`` file whose name sorts last, ignoring names
that start with ``.``: a retrain job writes ``.<version>.onnx.tmp`` and renames it to
``<version>.onnx`` (a version that sorts chronologically, e.g. ``20261201T120000Z``), so
a file is either whole or invisible. Here nothing is logged: callers report refusals in
their own words and metrics.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from streamcast.core.model import OnnxStepModel, self_test_failures
from streamcast.errors import ConfigurationError, ModelError

#: how a models directory names its artifacts
SUFFIX = ".onnx"


@dataclass(frozen=True)
class Stamp:
    """What identifies one version of a file without reading it."""

    path: Path
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> Stamp | None:
        """The file's stamp, or None when it is gone."""
        try:
            st = path.stat()
        except OSError:
            return None
        return cls(path, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class Refusal:
    """A newer artifact of a models directory that was passed over at start, and why."""

    stamp: Stamp
    problem: str


def resolve_model(path: str | Path) -> Path:
    """The artifact ``path`` names: itself, or the newest in a models directory.

    Raises :class:`ConfigurationError` naming the setting when there is none.
    """
    where = Path(path)
    if where.is_dir():
        newest = newest_in(where)
        if newest is None:
            raise ConfigurationError(
                f"STREAMCAST_MODEL_PATH (model_path): the models directory {where} holds no "
                f"*{SUFFIX} artifact: put one there (streamcast-train fit --publish-to)"
            )
        return newest
    if not where.is_file():
        raise ConfigurationError(f"STREAMCAST_MODEL_PATH (model_path): file not found: {where}")
    return where


def newest_in(directory: Path) -> Path | None:
    """The artifact of ``directory`` whose name sorts last (hidden and partial files are
    not artifacts)."""
    artifacts = artifacts_in(directory)
    return artifacts[0] if artifacts else None


def artifacts_in(directory: Path) -> list[Path]:
    """The artifacts of ``directory``, newest (name sorting last) first."""
    try:
        names = [
            entry.name
            for entry in os.scandir(directory)
            if entry.name.endswith(SUFFIX) and not entry.name.startswith(".") and entry.is_file()
        ]
    except OSError:
        return []
    return [directory / name for name in sorted(names, reverse=True)]


def choose_model(
    path: str | Path, intra_op_threads: int, on_refused: Callable[[Refusal], None]
) -> Path:
    """The artifact to start with; ``on_refused`` hears of each newer one passed over, as
    it is (newest first), before a :class:`ModelError` when none passes.

    ``path`` a file: itself (loading it is the caller's; a broken one fails the start).
    A directory: its newest artifact that loads and reproduces its self-test sample; a
    replica that starts while a broken file lies there serves what the others serve.
    """
    where = Path(path)
    newest = resolve_model(where)
    if not where.is_dir():
        return newest
    for candidate in artifacts_in(where):
        stamp = Stamp.of(candidate)
        if stamp is None:
            continue  # removed meanwhile
        problem = startup_problem(candidate, intra_op_threads)
        if problem is None:
            return candidate
        on_refused(Refusal(stamp, problem))
    raise ModelError(
        f"STREAMCAST_MODEL_PATH (model_path): no artifact in the models directory {where} "
        "loads and passes its self-test (each refusal is logged above): publish a good one"
    )


def startup_problem(path: Path, intra_op_threads: int) -> str | None:
    """Why the artifact at ``path`` cannot serve (it does not load, or does not reproduce
    its self-test sample), or None."""
    return load_checked(path, intra_op_threads)[0]


def load_checked(
    path: Path,
    intra_op_threads: int,
    check: Callable[[OnnxStepModel], str | None] | None = None,
) -> tuple[str | None, OnnxStepModel | None]:
    """``(problem, model)``: the artifact at ``path`` loaded, its self-test rerun, then
    ``check`` (what the caller's running state needs of it); ``problem`` is None when it
    passed all three."""
    try:
        model = OnnxStepModel.load(path, threads=intra_op_threads)
    except ModelError as err:
        return str(err), None
    return self_test_failures(model) or (check(model) if check else None), model


def current_stamp(path: Path) -> Stamp | None:
    """The stamp of the artifact ``path`` names now (the newest of a models directory),
    or None when there is none: what a watcher compares with the one that serves."""
    if path.is_dir():
        newest = newest_in(path)
        return None if newest is None else Stamp.of(newest)
    return Stamp.of(path)
