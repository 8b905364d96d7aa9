"""The zstd level streamcast's producers compress at (:mod:`streamcast.kafka.zstd_level`).

aiokafka's batch builders, compiled and pure-Python, take their encoder from module
globals; these tests build genuine record batches with both and check the level reaches
the codec, that what they build reads back, and that the settings drive it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka.record import default_records

from streamcast.config import Settings
from streamcast.kafka import zstd_level
from streamcast.kafka.clients import producer_options

ZSTD = 4  # Kafka's attribute code
BUILDERS = {
    "compiled": default_records.DefaultRecordBatchBuilder,
    "python": default_records._DefaultRecordBatchBuilderPy,
}
READERS = {
    "compiled": default_records.DefaultRecordBatch,
    "python": default_records._DefaultRecordBatchPy,
}


@pytest.fixture(autouse=True)
def _level_restored() -> Iterator[None]:
    before = zstd_level.current()
    yield
    zstd_level.use(before)


def build(kind: str, values: list[bytes]) -> bytes:
    builder = BUILDERS[kind](
        magic=2, compression_type=ZSTD, is_transactional=False, producer_id=-1,
        producer_epoch=-1, base_sequence=-1, batch_size=16 * 1024 * 1024,
    )  # fmt: skip
    for offset, value in enumerate(values):
        builder.append(offset, timestamp=1_767_000_000_000, key=b"k%d" % offset, value=value,
                       headers=[])  # fmt: skip
    return bytes(builder.build())


@pytest.mark.parametrize("kind", ["compiled", "python"])
def test_both_builders_compress_at_the_level_set(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert BUILDERS["compiled"] is not BUILDERS["python"], "aiokafka's compiled builder is in"
    levels: list[Any] = []
    real = zstd_level.UNPATCHED

    def recording(payload: bytes, level: int | None = None) -> bytes:
        levels.append(level)
        return bytes(real(payload, level))

    monkeypatch.setattr(zstd_level, "UNPATCHED", recording)
    for level in (1, -5, 19):
        zstd_level.use(level)
        build(kind, [b'{"value": 1.5}'] * 50)
    assert levels == [1, -5, 19]


@pytest.mark.parametrize("kind", ["compiled", "python"])
@pytest.mark.parametrize("level", [-7, 1, 3, 22])
def test_a_batch_built_at_any_level_reads_back(kind: str, level: int) -> None:
    values = [b'{"key": "sensor-%05d", "value": %d.25}' % (i, i * 7 % 113) for i in range(300)]
    zstd_level.use(level)
    batch = READERS[kind](build(kind, values))
    assert batch.compression_type == ZSTD
    assert [record.value for record in batch] == values


def test_a_lower_level_costs_bytes_and_a_higher_one_saves_them() -> None:
    values = [b'{"key": "sensor-%05d", "value": %d.25}' % (i, i * 7 % 113) for i in range(3000)]
    sizes = {}
    for level in (-50, 1, 19):
        zstd_level.use(level)
        sizes[level] = len(build("compiled", values))
    assert sizes[-50] > sizes[1] > sizes[19]


def test_the_settings_set_the_level_for_every_producer_and_refuse_what_zstd_does_not_take() -> None:
    assert Settings(_env_file=None).zstd_level == 1
    producer_options(Settings(_env_file=None, zstd_level=7))
    assert zstd_level.current() == 7
    with pytest.raises(ValueError, match="zstd_level"):
        Settings(_env_file=None, zstd_level=23)
    with pytest.raises(ValueError, match="outside"):
        zstd_level.use(-200_000)
