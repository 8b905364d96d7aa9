"""Shared benchmark plumbing: a broker (given or started locally), a model, the service.

The service always runs as a real subprocess (``python -m streamcast serve``), so the
figures include Kafka, JSON decoding, the pipeline, ONNX Runtime and producing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
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
    "broker_data_note",
    "broker_data_parent",
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


#: the local broker's data goes to this tmpfs when it has room (see broker_data_parent)
SHM = Path("/dev/shm")
#: room a whole ``make bench`` run's topics need on it, with margin (a run writes ~3.9 GB;
#: tmpfs pages are RAM, so a machine without it spare keeps the broker on disk)
SHM_NEEDS_BYTES = 8 << 30


def broker_data_parent() -> Path | None:
    """Where the bench's own broker keeps its log directories: ``$BENCH_BROKER_DIR`` if
    set, else the RAM-backed ``/dev/shm`` when it is writable with room, else the system's
    temporary directory (None).

    Why RAM: every run creates fresh topics, and on this VM's ext4 (a virtual disk) the
    broker's first index entry in a fresh log segment costs ~100 ms in the request handler
    (a read fault on the 10 MB sparse index file; the kernel zero-fills its readahead:
    ``perf`` put those samples in ``zero_user_segments`` under ``filemap_fault``). A
    long-running topic pays it once per segment (1 GB); a bench run of fresh topics paid
    it once per topic (ticks, changelog, forecasts), early in the run, which put ~100 ms on
    the paced run's first bursts. The benchmark measures streamcast, not that transient.
    """
    given = os.environ.get("BENCH_BROKER_DIR")
    if given:
        return Path(given)
    try:
        if os.access(SHM, os.W_OK) and shutil.disk_usage(SHM).free >= SHM_NEEDS_BYTES:
            return SHM
    except OSError:
        pass
    return None


@contextlib.contextmanager
def broker(bootstrap: str | None) -> Iterator[str]:
    """The given bootstrap address, or a fresh local broker on a free port for the run
    (its data under :func:`broker_data_parent`)."""
    if bootstrap:
        yield bootstrap
        return
    parent = broker_data_parent()
    with tempfile.TemporaryDirectory(prefix="streamcast-bench-kafka-", dir=parent) as data:
        local = kafka_local.LocalBroker(
            kafka_local.BrokerConfig(port=kafka_local.free_port(), data_dir=Path(data))
        )
        address = str(local.start(timeout=90))
        try:
            yield address
        finally:
            local.stop()
            with contextlib.suppress(OSError):  # a report, never the run's failure
                held = sum(f.stat().st_size for f in Path(data).rglob("*") if f.is_file())
                print(f"bench broker: {held / 1e6:,.0f} MB of data in {data}", file=sys.stderr)


def broker_data_note(bootstrap: str | None) -> str:
    """Where the run's broker kept its data, for the table's heading."""
    if bootstrap:
        return f"the given broker {bootstrap}"
    parent = broker_data_parent()
    where = (parent if parent is not None else Path(tempfile.gettempdir())).resolve()
    return f"broker data on {filesystem(where)} ({where})"


def filesystem(path: Path) -> str:
    """The type of the filesystem ``path`` is on (its longest mount point in /proc/mounts)."""
    best, kind = "", "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) < 3:
                continue
            mount = fields[1]
            inside = str(path) == mount or str(path).startswith(mount.rstrip("/") + "/")
            if inside and len(mount) > len(best):
                best, kind = mount, fields[2]
    return kind


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
