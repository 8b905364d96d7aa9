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
