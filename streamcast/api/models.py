"""``POST /v1/predict`` follows the model path as the service does, without a restart.

Every ``model_poll_s`` seconds the follower looks at ``STREAMCAST_MODEL_PATH`` by the
rules of :mod:`streamcast.core.models_dir` (the file itself, or the newest artifact of a
models directory). A new version that stays the same between two looks is loaded off the
event loop and its self-test rerun; one that passes becomes the predictor's model for the
next request (a request under way finishes with the model it started with), one that
fails is refused with one log line and ``streamcast_api_model_swaps_total{result=
"refused"}``, remembered, and the serving model stays. The API needs nothing of a new
model beyond that: each request builds its own state, so unlike the service it can take
a model of another window or interval.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from streamcast.api.metrics import ApiMetrics
from streamcast.api.predict import Predictor
from streamcast.core.models_dir import Stamp, current_stamp, load_checked

log = logging.getLogger(__name__)

#: a new version must look the same this long apart before it is loaded (a copy in place)
SETTLE_S = 0.2


class ModelFollower:
    """Swaps the predictor's model for each new good artifact of ``path`` (module doc)."""

    def __init__(
        self,
        predictor: Predictor,
        path: Path,
        serving: Path,
        *,
        poll_s: float,
        intra_op_threads: int,
        metrics: ApiMetrics,
        refused: set[Stamp] | None = None,
    ) -> None:
        self.predictor = predictor
        self.path = path
        self.poll_s = poll_s
        self.intra_op_threads = intra_op_threads
        self._metrics = metrics
        self._seen = Stamp.of(serving)
        self._refused: set[Stamp] = set(refused or ())

    async def run(self, stopping: asyncio.Event) -> None:
        """Poll until ``stopping`` is set (``poll_s`` 0: never)."""
        if self.poll_s <= 0:
            return
        while not stopping.is_set():
            try:
                await asyncio.wait_for(stopping.wait(), self.poll_s)
            except TimeoutError:
                await self.poll()

    async def poll(self) -> bool:
        """Look once; True when the predictor now serves a new model."""
        stamp = current_stamp(self.path)
        if stamp is None or stamp == self._seen or stamp in self._refused:
            return False
        await asyncio.sleep(min(self.poll_s, SETTLE_S))
        if Stamp.of(stamp.path) != stamp:
            return False  # still being written: the next look decides
        problem, model = await asyncio.to_thread(load_checked, stamp.path, self.intra_op_threads)
        if model is None or problem is not None:
            self._refused.add(stamp)
            self._metrics.model_swaps.labels("refused").inc()
            log.error(
                f"model {stamp.path} refused: {problem}; POST /v1/predict keeps its model",
                extra={"path": str(stamp.path)},
            )
            return False
        self._seen = stamp
        old = self.predictor.meta
        self.predictor.use(model)
        self._metrics.model_swaps.labels("swapped").inc()
        log.info(
            "POST /v1/predict serves a new model",
            extra={
                "path": str(stamp.path),
                "model": model.meta.name,
                "model_version": model.meta.version,
                "previous_version": old.version,
            },
        )
        return True
