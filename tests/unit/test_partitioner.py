"""The batch partitioner puts every key where the Kafka client's default partitioner does:
the Java client's murmur2, which aiokafka copies in pure Python, is the reference."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner, murmur2
from aiokafka.producer.message_accumulator import MessageBatch
from aiokafka.structs import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from streamcast.kafka import partitioner
from streamcast.kafka.publish import (
    MAX_DEAD_LETTER_BYTES,
    MAX_DEAD_LETTER_KEY_BYTES,
    publish_packed,
    truncated,
)
from streamcast.kafka.wire import OutRecord


@given(st.lists(st.binary(max_size=70), max_size=40))
@settings(max_examples=300, deadline=None)
def test_murmur2_equals_the_clients_for_any_keys(keys: list[bytes]) -> None:
    expected = np.array([murmur2(k) for k in keys], dtype=np.uint32)
    np.testing.assert_array_equal(partitioner.murmur2(keys), expected)


@pytest.mark.parametrize("length", [0, 1, 2, 3, 4, 5, 8, 255, 256])
def test_keys_of_one_length_take_the_same_path_as_mixed_ones(length: int) -> None:
    rng = np.random.default_rng(length)
    keys = [rng.bytes(length) for _ in range(50)]
    expected = [DefaultPartitioner()(k, list(range(7)), list(range(7))) for k in keys]
    assert partitioner.key_partitions(keys, 7).tolist() == expected
    mixed = [*keys, b"\xff" * (length + 1)]
    assert partitioner.key_partitions(mixed, 7).tolist()[:50] == expected


#: the Java client's own vectors (UtilsTest.testMurmur2): key -> murmur2 as a signed int
JAVA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def test_murmur2_matches_the_java_clients_vectors() -> None:
    hashed = partitioner.murmur2(list(JAVA_VECTORS)).view(np.int32)
    assert hashed.tolist() == list(JAVA_VECTORS.values())


def test_a_topic_without_partitions_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one partition"):
        partitioner.key_partitions([b"k"], 0)


class Builder:
    """A record batch builder that keeps the keys appended to it; as aiokafka's, it takes
    records up to 1 MiB in all (the producer's ``max_batch_size``), and the first whatever
    its size."""

    def __init__(self) -> None:
        self.keys: list[bytes | None] = []
        self.closed = False
        self.size = 0

    def append(self, **fields: Any) -> bool:
        size = len(fields["key"] or b"") + len(fields["value"] or b"")
        if self.keys and self.size + size > 1024 * 1024:
            return False
        self.keys.append(fields["key"])
        self.size += size
        return True

    def record_count(self) -> int:
        return len(self.keys)

    def close(self) -> None:
        self.closed = True


class RecordingProducer:
    """What publish_packed asks of a producer, recording where each record went."""

    def __init__(self, partitions: dict[str, set[int]]) -> None:
        self.partitions = partitions
        self.placed: list[tuple[str, int, bytes | None]] = []
        self.sent: list[OutRecord] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return self.partitions[topic]

    def create_batch(self) -> Builder:
        return Builder()

    async def send_batch(self, builder: Builder, topic: str, *, partition: int) -> Any:
        assert builder.closed, "an open batch lingers in the accumulator"
        self.placed += [(topic, partition, key) for key in builder.keys]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def send(self, topic: str, value: bytes | None, **fields: Any) -> Any:
        self.sent.append(OutRecord(topic, fields["key"], value, fields["headers"]))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def test_publish_packed_places_records_as_send_would() -> None:
    """Keyed records go to their key's partition of their own topic (topics of different
    partition counts in one call), a named partition wins, and a keyless record lands
    on one of its topic's partitions."""
    keys = [f"sensor-{i}".encode() for i in range(200)]
    records = [OutRecord("forecasts", k, b"v") for k in keys]
    records += [OutRecord("alerts", k, b"a") for k in keys[:50]]
    records += [OutRecord("dead", b"k", b"d", partition=2), OutRecord("dead", None, b"d")]
    producer = RecordingProducer({"forecasts": {0, 1, 2}, "alerts": {3, 5}, "dead": {0, 1, 2}})
    asyncio.run(publish_packed(producer, records))
    pick = DefaultPartitioner()
    expected = {("forecasts", pick(k, [0, 1, 2], [0, 1, 2]), k) for k in keys}
    expected |= {("alerts", pick(k, [3, 5], [3, 5]), k) for k in keys[:50]}
    placed = set(producer.placed)
    assert expected | {("dead", 2, b"k")} <= placed
    keyless = [(t, p) for t, p, k in producer.placed if k is None]
    assert len(producer.placed) == len(records) and len(keyless) == 1
    assert keyless[0][0] == "dead" and keyless[0][1] in {0, 1, 2}


def test_a_closed_batch_does_not_linger() -> None:
    """Why publish_packed closes each batch it ships: aiokafka's sender holds an open one
    for ``linger_ms`` (``send`` may still add to it) and sends a closed one at once."""

    async def lingers() -> tuple[float | None, float | None]:
        producer = AIOKafkaProducer(bootstrap_servers="localhost:9", linger_ms=1000)
        builder = producer.create_batch()
        builder.append(key=b"k", value=b"v", timestamp=None)
        batch = MessageBatch(TopicPartition("t", 0), builder, 30, 1.0)
        open_linger = batch.remaining_linger()
        builder.close()
        return open_linger, batch.remaining_linger()

    open_linger, closed_linger = asyncio.run(lingers())
    assert open_linger is not None and open_linger > 0.9
    assert closed_linger is None


def test_a_record_too_large_for_any_batch_goes_out_alone() -> None:
    """aiokafka's builder takes the first record of an empty batch whatever its size, and
    a broker that refuses the batch refuses it on every retry: a record above
    MAX_DEAD_LETTER_BYTES is sent on its own (a refusal then is its own error, and a dead
    letter is cut to fit: test_processor), the records around it packed as before."""
    big = OutRecord("dead", b"k" * 1_000, b"v" * 1_048_000, [("streamcast.reason", b"oversized")])
    records = [OutRecord("dead", b"a", b"small"), big, OutRecord("dead", b"b", b"small")]
    producer = RecordingProducer({"dead": {0}})
    asyncio.run(publish_packed(producer, records))
    assert sorted(key or b"" for _, _, key in producer.placed) == [b"a", b"b"]
    assert producer.sent == [big]


def test_truncated_cuts_value_and_key_and_says_what_they_were() -> None:
    record = OutRecord("dead", b"k" * 1_048_000, b"v" * 1_048_000, [("streamcast.reason", b"x")])
    small = truncated(record)
    assert small.key == (record.key or b"")[:MAX_DEAD_LETTER_KEY_BYTES]
    assert small.value == (record.value or b"")[:MAX_DEAD_LETTER_BYTES]
    assert dict(small.headers) == {
        "streamcast.reason": b"x",
        "truncated_from": b"1048000",
        "key_truncated_from": b"1048000",
    }
