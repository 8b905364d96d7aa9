"""Which model the service serves, and switching to a new one without a restart.

``STREAMCAST_MODEL_PATH`` names either one artifact or a *models directory*. In a
directory the service serves the artifact whose name sorts last among ``*.onnx`` files
not starting with ``.``: a retrain job writes ``.<version>.onnx.tmp`` and renames it to
``<version>.onnx`` (a version that sorts chronologically, e.g. ``20261201T120000Z``), so
a file is either whole or invisible. A single file is watched for replacement (a
rename over it, or a copy that changes its size or modification time).

:class:`ModelWatcher` polls every ``model_poll_s`` seconds. A new candidate is loaded and
checked off the event loop (graph signature and metadata as at start, the artifact's own
self-test sample, then compatibility with the running pipeline: interval, window, input
features); the main loop then swaps it in *between* two batches, rebuilding each key's
state from its window (:meth:`streamcast.core.pipeline.Pipeline.swap_model`). A
candidate that fails any check is refused with one log line and
``streamcast_model_swaps_total{result="refused"}``, remembered so it is not retried, and
the old model keeps serving.

At start (:func:`startup_model`) a models directory serves its newest artifact that loads
and reproduces its self-test; newer ones that do not are refused the same way (a replica
that restarts while a broken file lies in the claim keeps serving what the others serve,
instead of failing to start), and the watcher does not look at them again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from streamcast.core.model import OnnxStepModel
from streamcast.core.models_dir import Refusal, Stamp, choose_model, current_stamp, load_checked
from streamcast.errors import ConfigurationError

log = logging.getLogger(__name__)

#: ``check(model)``: why the running pipeline cannot take ``model``, or None
SwapCheck = Callable[[OnnxStepModel], str | None]
#: called once per refused artifact (a metric)
RefusedHook = Callable[[], None]


def required_model_path(path: Path | None) -> Path:
    """The model path setting, which serving cannot do without."""
    if path is None:
        raise ConfigurationError(
            "STREAMCAST_MODEL_PATH (model_path): required: the ONNX file from streamcast-train "
            "(or a models directory)"
        )
    return path


def startup_model(
    path: str | Path, intra_op_threads: int, on_refused: RefusedHook
) -> tuple[Path, set[Stamp]]:
    """The artifact to start with and the stamps of the newer ones refused
    (:func:`~streamcast.core.models_dir.choose_model`), each refusal logged once and
    counted by ``on_refused``; the watcher does not look at those again."""
    refused: set[Stamp] = set()

    def refuse(refusal: Refusal) -> None:
        _refuse(refusal.stamp.path, refusal.problem, "an older one serves if it passes")
        on_refused()
        refused.add(refusal.stamp)

    return choose_model(path, intra_op_threads, refuse), refused


def _refuse(path: Path, problem: str, consequence: str) -> None:
    """The one log line of a refused artifact."""
    log.error(f"model {path} refused: {problem}; {consequence}", extra={"path": str(path)})


class ModelWatcher:
    """Polls the model path; hands validated new models to the main loop (module doc)."""

    def __init__(
        self,
        path: str | Path,
        current: Path,
        *,
        poll_s: float,
        intra_op_threads: int,
        check: SwapCheck,
        on_refused: RefusedHook,
        refused: set[Stamp] | None = None,
    ) -> None:
        self.path = Path(path)
        self.poll_s = poll_s
        self.intra_op_threads = intra_op_threads
        self._check = check
        self._on_refused = on_refused
        #: the version of the file that serves (or was refused): not looked at again
        self._seen = Stamp.of(current)
        self._refused: set[Stamp] = set(refused or ())
        self._ready: OnnxStepModel | None = None

    def take(self) -> OnnxStepModel | None:
        """A validated model waiting to be swapped in (once), or None."""
        ready, self._ready = self._ready, None
        return ready

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await asyncio.sleep(self.poll_s)
            if self._ready is None:
                await self.poll()

    async def poll(self) -> bool:
        """Look once; True when a new model is ready for :meth:`take`."""
        stamp = current_stamp(self.path)
        if stamp is None or stamp == self._seen or stamp in self._refused:
            return False
        # a file still being copied in place changes between two looks: wait for it
        await asyncio.sleep(min(self.poll_s, 0.2))
        if Stamp.of(stamp.path) != stamp:
            return False
        started = time.perf_counter()
        problem, model = await asyncio.to_thread(self._load, stamp.path)
        if model is None or problem is not None:
            self._refused.add(stamp)
            _refuse(stamp.path, str(problem), "the running model keeps serving")
            self._on_refused()
            return False
        self._seen = stamp
        self._ready = model
        log.info(
            "new model validated: swapping it in after the current batch",
            extra={
                "path": str(stamp.path),
                "model": model.meta.name,
                "model_version": model.meta.version,
                "load_s": round(time.perf_counter() - started, 3),
            },
        )
        return True

    def _load(self, path: Path) -> tuple[str | None, OnnxStepModel | None]:
        return load_checked(path, self.intra_op_threads, self._check)
