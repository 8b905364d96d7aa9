"""The API's model follower (streamcast.api.models) on a single model file: a file
replaced in place serves from the next poll, a broken replacement is refused once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from streamcast.api.metrics import ApiMetrics
from streamcast.api.models import ModelFollower
from streamcast.api.predict import Predictor
from tests.support.models import make_tiny_model


def test_a_model_file_replaced_in_place_serves_and_a_broken_one_is_refused(
    tmp_path: Path,
) -> None:
    path = make_tiny_model(tmp_path / "model.onnx", version="1")
    predictor = Predictor.load(path)
    metrics = ApiMetrics()
    follower = ModelFollower(
        predictor, path, path, poll_s=0.01, intra_op_threads=1, metrics=metrics
    )

    async def polls() -> list[bool]:
        seen = [await follower.poll()]  # nothing new yet
        make_tiny_model(tmp_path / "v2.onnx", version="2", seed=5).replace(path)
        seen.append(await follower.poll())
        broken = tmp_path / "broken.onnx"
        broken.write_bytes(path.read_bytes()[:300])
        broken.replace(path)
        seen += [await follower.poll(), await follower.poll()]  # refused once, not retried
        return seen

    try:
        assert asyncio.run(polls()) == [False, True, False, False]
        assert predictor.meta.version == "2"
        text = metrics.exposition().decode()
        assert 'streamcast_api_model_swaps_total{result="swapped"} 1.0' in text
        assert 'streamcast_api_model_swaps_total{result="refused"} 1.0' in text
    finally:
        predictor.close()
