"""Shared benchmark plumbing: a broker (given or started locally), a model, the service.

The service always runs as a real subprocess (``python -m streamcast serve``), so the
figures include Kafka, JSON decoding, the pipeline, ONNX Runtime and producing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.kafka import create_topics, kafka_local, unique_topic  # noqa: E402
from tests.support.models import make_tiny_model  # noqa: E402
from tests.support.service import ServiceProcess, service_env  # noqa: E402

__all__ = [
    "ServiceProcess",
    "add_common_args",
    "broker",
    "create_topics",
    "model_path",
    "service_env",
    "unique_topic",
]


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Flags every benchmark takes."""
    parser.add_argument("--bootstrap", help="use this broker (default: start one locally)")
    parser.add_argument("--model", type=Path, help="ONNX model (default: a tiny generated one)")
    parser.add_argument("--partitions", type=int, default=2)


@contextlib.contextmanager
def broker(bootstrap: str | None) -> Iterator[str]:
    """The given bootstrap address, or a fresh local broker on a free port for the run."""
    if bootstrap:
        yield bootstrap
        return
    with tempfile.TemporaryDirectory(prefix="streamcast-bench-kafka-") as data:
        local = kafka_local.LocalBroker(
            kafka_local.BrokerConfig(port=kafka_local.free_port(), data_dir=Path(data))
        )
        address = str(local.start(timeout=90))
        try:
            yield address
        finally:
            local.stop()


def model_path(given: Path | None, workdir: Path, interval_s: int) -> Path:
    """The model to serve: the given one or a tiny generated artifact (state 64, H 24)."""
    if given is not None:
        return given
    return make_tiny_model(
        workdir / "bench-model.onnx",
        window=8,
        horizon=24,
        interval_s=interval_s,
        state_size=64,
        levels=(0.9,),
    )


def run(coro: object) -> None:
    """``asyncio.run`` for a benchmark's main coroutine."""
    asyncio.run(coro)  # type: ignore[arg-type]
