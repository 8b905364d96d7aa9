"""Real-broker helpers shared by the test suite: start one genuine Kafka per session.

The broker is started with exactly the code behind ``scripts/kafka-local`` (imported from
``scripts/kafka_local.py``) on free ports and a temporary data dir.
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from pathlib import Path
from types import ModuleType

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamcast.kafka.topics import create

REPO = Path(__file__).resolve().parents[2]


def load_script(path: Path, name: str | None = None) -> ModuleType:
    """Import a stand-alone script (``scripts/*.py``, ``deploy/**/*.py``) as a module, once."""
    name = name or path.stem
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


kafka_local = load_script(REPO / "scripts" / "kafka_local.py")


def unique_topic(prefix: str = "t") -> str:
    """A topic name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def create_topics(
    bootstrap: str, names: list[str], partitions: int = 1, config: dict[str, str] | None = None
) -> None:
    """Create topics (auto-creation is off on the test broker, as in production)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        # the product's create: checks the answer's error codes and waits until the new
        # topics are visible, so a test never races the broker's metadata propagation
        await create(admin, [NewTopic(n, partitions, 1, topic_configs=config or {}) for n in names])
    finally:
        await admin.close()


#: Kafka's codec ids: the low three bits of a record batch's attributes
CODEC_NAMES = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}
#: attribute bit of a control batch (transaction markers: never compressed)
CONTROL_BATCH = 0x20


def segment_codecs(data_dir: Path, topic: str, partition: int = 0) -> list[str]:
    """The codec of every data record batch of a partition, read from the broker's log
    segments on disk (record batch format v2: offset 8, length 4, leader epoch 4, magic 1,
    crc 4, attributes 2): what the producer really sent, independent of any client."""
    codecs: list[str] = []
    for segment in sorted((data_dir / "kraft" / f"{topic}-{partition}").glob("*.log")):
        raw = segment.read_bytes()
        at = 0
        while at + 23 <= len(raw):
            length = int.from_bytes(raw[at + 8 : at + 12], "big")
            attributes = int.from_bytes(raw[at + 21 : at + 23], "big")
            if not attributes & CONTROL_BATCH:
                codecs.append(CODEC_NAMES[attributes & 0x07])
            at += 12 + length
    return codecs
