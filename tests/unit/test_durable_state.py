"""Per-partition durable state: the store's key -> input partition column, changelog
records and tombstones, dropping a revoked partition, outputs grouped per transaction."""

from __future__ import annotations

import gc
import subprocess
import sys
import weakref
from collections.abc import Sequence, Set
from pathlib import Path

import numpy as np
import orjson
import pytest

from streamcast.config import Settings
from streamcast.kafka import changelog
from streamcast.kafka.changelog import MARKER_KEY, Changelog, PartitionStates
from streamcast.kafka.exactly_once import transactional_id
from streamcast.kafka.sink import PartitionedState
from streamcast.kafka.wire import InRecord
from streamcast.service.processor import Processor, build_processor
from tests.support.models import make_tiny_model

HOUR = 3600
T0 = 1_700_000_000 // HOUR * HOUR


def _settings(tmp_path: Path, **extra: object) -> Settings:
    model = make_tiny_model(tmp_path / "tiny.onnx", window=3, horizon=2, interval_s=HOUR)
    return Settings(
        _env_file=None,
        model_path=model,
        processing_guarantee="exactly_once",
        min_ts_s=0,
        max_future_s=10**10,
        **extra,  # type: ignore[arg-type]
    )


def _records(rows: list[tuple[int, str, int, float]], start_offset: int = 0) -> list[InRecord]:
    """``(partition, key, hour, value)`` rows as consumed records (offsets in order)."""
    return [
        InRecord(
            "ticks",
            partition,
            start_offset + i,
            0,
            key.encode(),
            orjson.dumps({"key": key, "ts": T0 + hour * HOUR, "value": value}),
        )
        for i, (partition, key, hour, value) in enumerate(rows)
    ]


def _hours(keys: dict[str, int], hours: range) -> list[tuple[int, str, int, float]]:
    return [(p, k, h, float(10 + h + i)) for h in hours for i, (k, p) in enumerate(keys.items())]


KEYS = {"a": 0, "b": 1, "c": 1}


def placement(processor: Processor) -> dict[str, int]:
    """The input partition the store holds for each key."""
    store = processor.pipeline.store
    return {key: int(store.partition[row]) for key, row in store.rows.items()}


def test_processor_is_partitioned_state_and_places_each_key_on_its_input_partition(
    tmp_path: Path,
) -> None:
    processor = build_processor(_settings(tmp_path))
    state: PartitionedState = processor
    assert state is processor
    processor.process(_records(_hours(KEYS, range(2))), now_s=0.0)
    assert placement(processor) == KEYS


def test_state_records_restore_a_fresh_processor_that_continues_identically(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path)
    straight, before, after = (build_processor(settings) for _ in range(3))
    first, second = _records(_hours(KEYS, range(6))), _records(_hours(KEYS, range(6, 10)), 100)
    straight.step(first, 0.0)
    want = straight.step(second, 0.0)[0].forecasts
    step, _ = before.step(first, 0.0)
    changelog = before.state_records(step)
    assert {(r.key, r.partition) for r in changelog} == {(k.encode(), p) for k, p in KEYS.items()}
    for partition in (0, 1):
        mine = [(r.key or b"", r.value) for r in changelog if r.partition == partition]
        pairs = [(k.decode(), v) for k, v in mine if v is not None]
        assert after.restore(partition, pairs, 0.0) > 0
    assert placement(after) == KEYS
    got = after.step(second, 0.0)[0].forecasts
    assert got.keys == want.keys and len(got.keys) > 0
    np.testing.assert_array_equal(got.values, want.values)


def test_a_model_of_another_interval_refuses_the_state_instead_of_adopting_it(
    tmp_path: Path,
) -> None:
    """The same layout (window, inputs, state size) at quarter hours: the hourly keys'
    windows would be read as quarter hours and forecast from silently. The restore
    fails with the reason instead (the service maps it to a one-line ModelError)."""
    hourly = build_processor(_settings(tmp_path))
    step, _ = hourly.step(_records(_hours(KEYS, range(6))), 0.0)
    pairs = [(r.key.decode(), r.value) for r in hourly.state_records(step)
             if r.partition == 0 and r.key and r.value is not None]  # fmt: skip
    quarter = make_tiny_model(tmp_path / "q.onnx", window=3, horizon=2, interval_s=900)
    other = build_processor(_settings(tmp_path).model_copy(update={"model_path": quarter}))
    with pytest.raises(ValueError, match=r"another interval grid than this model's \(15min\)"):
        other.restore(0, pairs, 0.0)
    assert other.pipeline.active_keys == 0
    assert build_processor(_settings(tmp_path)).restore(0, pairs, 0.0) == len(pairs)


def test_evicted_keys_become_tombstones_in_their_partition(tmp_path: Path) -> None:
    processor = build_processor(_settings(tmp_path, max_keys=2))
    processor.step(_records([(0, "a", 0, 1.0), (1, "b", 0, 1.0)]), 0.0)
    step, _ = processor.step(_records([(1, "c", 0, 1.0)], 10), 1.0)
    tombstones = [r for r in processor.state_records(step) if r.value is None]
    assert [(r.key, r.partition) for r in tombstones] == [(b"a", 0)]
    assert "a" not in placement(processor)


def test_dropping_a_partition_forgets_its_keys_without_tombstones(tmp_path: Path) -> None:
    processor = build_processor(_settings(tmp_path))
    processor.step(_records(_hours(KEYS, range(2))), 0.0)
    assert processor.drop_partitions({1}) == 2
    assert set(processor.pipeline.store.rows) == {"a"}
    assert placement(processor) == {"a": 0}
    step, _ = processor.step(_records([(0, "a", 2, 1.0)], 50), 0.0)
    assert [r.value is None for r in processor.state_records(step)] == [False]


def test_outputs_are_grouped_by_the_input_partition_they_belong_to(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    processor = build_processor(settings)
    rows = _hours(KEYS, range(5))
    records = _records(rows)
    bad = InRecord("ticks", 1, len(records), 0, b"b", b"not json")
    result = processor.process([*records, bad], 0.0)
    grouped = result.outputs
    assert result.forecasts > 0
    topics = settings.topics
    for partition, out in grouped.items():
        for r in out:
            if r.topic == topics.dead_letter:
                assert partition == 1
            elif r.key == MARKER_KEY:
                assert r.partition == partition
                assert (
                    orjson.loads(r.value or b"")["next_offset"]
                    == result.offsets[("ticks", partition)]
                )
            else:
                assert r.key is not None
                assert KEYS[r.key.decode()] == partition
    all_topics = {r.topic for out in grouped.values() for r in out}
    assert all_topics == {topics.forecasts, topics.dead_letter, topics.state_changelog}
    last = {p: max(r.offset for r in [*records, bad] if r.partition == p) for p in (0, 1)}
    assert result.offsets == {("ticks", p): offset + 1 for p, offset in last.items()}


def test_transactional_ids_name_group_topic_and_partition(tmp_path: Path) -> None:
    settings = _settings(tmp_path, group_id="g1", transactional_id_prefix="sc")
    assert transactional_id(settings, 3) == "sc-g1-ticks-3"


def test_a_batch_of_only_bad_ticks_writes_no_state(tmp_path: Path) -> None:
    processor = build_processor(_settings(tmp_path))
    assert processor.pipeline.store.snapshot([]) == []
    step, _ = processor.step([InRecord("ticks", 0, 0, 0, b"a", b"not json")], 0.0)
    assert len(step.rejections) == 1
    assert processor.state_records(step) == []


def test_placement_is_a_store_column_bounded_by_max_keys(tmp_path: Path) -> None:
    settings = _settings(tmp_path, max_keys=2).model_copy(
        update={"processing_guarantee": "at_least_once"}
    )
    processor = build_processor(settings)
    processor.step(_records([(p, f"k{i}", 0, 1.0) for i, p in enumerate([0, 1, 0, 1, 0])]), 0.0)
    assert len(placement(processor)) == 2, "evicted keys leave the placement with their row"
    assert processor.state_records(processor.step([], 0.0)[0]) == [], "no changelog configured"


@pytest.mark.skipif(changelog._malloc_trim() is None, reason="a C library without malloc_trim")
def test_the_pages_a_restore_freed_go_back_to_the_operating_system() -> None:
    """A restore's transient (the changelog's records and their decoded arrays) is freed
    with holes the allocator keeps: a process holding 1 in 50 of 150,000 such blocks kept
    ~190 MB resident until the free pages were handed back (0 without)."""
    script = """
import psutil
from streamcast.kafka.changelog import release_free_memory
process = psutil.Process()
blocks = [bytearray(1400) for _ in range(150_000)]  # malloc'd, not pymalloc'd
kept = blocks[::50]  # holes: the heap's top cannot shrink on its own
del blocks
held = process.memory_info().rss
assert release_free_memory()
print(held - process.memory_info().rss)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=60)  # fmt: skip
    assert int(out.stdout) > 100 * 2**20


class Records(dict[str, bytes]):
    """A partition's records as read, weakly referenceable (to see when they are freed)."""


class KeptState:
    def __init__(self) -> None:
        self.restored: list[tuple[int, int]] = []

    def restore(self, partition: int, records: Sequence[tuple[str, bytes]], now_s: float) -> int:
        self.restored.append((partition, len(records)))
        return len(records)

    def drop_partitions(self, partitions: Set[int]) -> int:
        return 0


class Quiet:
    def transactions(self, result: str, count: int) -> None: ...

    def restored(self, keys: int, seconds: float) -> None: ...

    def rewound(self) -> None: ...


async def test_a_restore_frees_every_record_it_read_before_handing_pages_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pages go back only once nothing holds the records read: the last
    partition's too (a loop variable once kept it alive through the trim)."""
    parts = {p: Records({f"k{p}-{i}": b"x" * 100 for i in range(3)}) for p in (0, 1)}
    alive = [weakref.ref(r) for r in parts.values()]
    reads: list[dict[int, dict[str, bytes]]] = [dict(parts)]  # the read hands them over
    del parts

    async def fake_read(consumer: object, topic: str, partitions: list[int]) -> Changelog:
        return Changelog(records=reads.pop(), marked={0, 1})

    seen: list[list[bool]] = []

    def release() -> bool:
        gc.collect()
        seen.append([ref() is not None for ref in alive])
        return True

    monkeypatch.setattr(changelog, "read_changelog", fake_read)
    monkeypatch.setattr(changelog, "release_free_memory", release)
    state = KeptState()
    settings = Settings(_env_file=None, bootstrap_servers="unused:9092", durable_state=True)
    states = PartitionStates(settings, state, Quiet())
    states._restorer = object()  # read_changelog is faked
    assert await states.restore({0, 1}, {0: None, 1: None}) == 6
    assert state.restored == [(0, 3), (1, 3)]
    assert seen == [[False, False]]


def _restored(settings: Settings, records: list[InRecord]) -> Processor:
    """A fresh processor restored from the changelog records of ``records``."""
    before, after = build_processor(settings), build_processor(settings)
    step, _ = before.step(records, 0.0)
    for partition in (0, 1):
        pairs = [
            ((r.key or b"").decode(), r.value)
            for r in before.state_records(step)
            if r.partition == partition and r.value is not None
        ]
        after.restore(partition, pairs, 0.0)
    return after


def test_a_restored_key_skips_the_ticks_its_changelog_applied_and_takes_the_rest(
    tmp_path: Path,
) -> None:
    """At-least-once: the changelog can be ahead of the committed offsets, so after a
    restart the ticks it applied come again; each key skips exactly those."""
    settings = _settings(tmp_path)
    first, second = _records(_hours(KEYS, range(6))), _records(_hours(KEYS, range(6, 9)), 100)
    after = _restored(settings, first)
    again = after.process(first, 0.0)
    assert (again.forecasts, again.rejections) == (0, [])
    assert after.pipeline.totals.replayed == len(first)
    assert after.process(second, 0.0).forecasts == len(second)
    assert after.pipeline.totals.replayed == len(first)


def test_a_key_whose_ticks_move_to_another_partition_loses_none_of_them(
    tmp_path: Path,
) -> None:
    """A producer that keys by the body's ``key`` alone (no Kafka key) spreads a key over
    partitions. Offsets of two partitions do not compare: a key that had applied offset
    1,002 on partition 0 must still take partition 1's ticks at offsets 5-10 (they were
    skipped as replays, silently: no forecast, no dead letter)."""
    settings = _settings(tmp_path)
    processor = build_processor(settings)
    old = [(0, "a", hour, 10.0 + hour) for hour in range(3)]
    new = [(1, "a", hour, 10.0 + hour) for hour in range(3, 9)]
    processor.process(_records(old, 1_000), 0.0)
    moved = processor.process(_records(new, 5), 0.0)
    totals = processor.pipeline.totals
    assert (totals.replayed, totals.accepted, moved.rejections) == (0, 9, [])
    assert moved.forecasts > 0 and placement(processor) == {"a": 1}
    # and back: ticks on partition 0 again count from there, not from partition 1's offsets
    back = processor.process(_records([(0, "a", 9, 19.0)], 1_003), 0.0)
    assert (back.forecasts, processor.pipeline.totals.replayed) == (1, 0)
    # a restored key that moved keeps nothing of the old partition's offsets either
    after = _restored(settings, _records(old, 1_000))
    assert after.process(_records(new, 5), 0.0).rejections == []
    assert after.pipeline.totals.replayed == 0
