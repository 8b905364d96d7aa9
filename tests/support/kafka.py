"""Real-broker helpers shared by the test suite: start one genuine Kafka per session.

The broker is started with exactly the code behind ``scripts/kafka-local`` (imported from
``scripts/kafka_local.py``) on free ports and a temporary data dir.
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import ClassVar

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


@dataclass(frozen=True)
class SaslBroker:
    """Addresses of the ACL-enforcing test broker (``sasl_broker`` fixture)."""

    #: users of its SASL_PLAINTEXT listener (PLAIN): name -> password
    USERS: ClassVar[dict[str, str]] = {"streamcast": "right-password", "stranger": "s3cret"}

    #: PLAINTEXT listener: the anonymous super user, for creating topics and ACLs
    admin: str
    #: SASL_PLAINTEXT listener
    sasl: str

    def env(self, user: str, password: str | None = None) -> dict[str, str]:
        """``STREAMCAST_*`` settings that connect as ``user`` (with its password unless
        another is given)."""
        return {
            "STREAMCAST_BOOTSTRAP_SERVERS": self.sasl,
            "STREAMCAST_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "STREAMCAST_SASL_MECHANISM": "PLAIN",
            "STREAMCAST_SASL_USERNAME": user,
            "STREAMCAST_SASL_PASSWORD": self.USERS[user] if password is None else password,
        }


#: ACL codes of the Kafka protocol (CreateAcls)
RESOURCE_TYPES = {"topic": 2, "group": 3, "cluster": 4, "transactional_id": 5}
PATTERN_TYPES = {"literal": 3, "prefixed": 4}
OPERATIONS = {"all": 2, "read": 3, "write": 4, "create": 5, "describe": 8, "describe_configs": 10}
ALLOW = 3


async def allow(
    admin_bootstrap: str,
    principal: str,
    resource: str,
    name: str,
    operations: list[str],
    *,
    pattern: str = "literal",
) -> None:
    """Create ALLOW ACLs (aiokafka has the request, not an admin method for it); raises
    if the broker refuses any."""
    from aiokafka.protocol.admin import CreateAclsRequest

    admin = AIOKafkaAdminClient(bootstrap_servers=admin_bootstrap)
    await admin.start()
    try:
        for operation in operations:
            request = CreateAclsRequest(
                RESOURCE_TYPES[resource],
                name,
                PATTERN_TYPES[pattern],
                principal,
                "*",
                OPERATIONS[operation],
                ALLOW,
            )
            response = await admin._send_request(request)
            codes = [entry[0] for entry in response.creation_responses]
            assert codes == [0], f"CreateAcls {resource} {name} {operation}: {response}"
    finally:
        await admin.close()


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
