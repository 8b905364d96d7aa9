"""One micro-batch from consumed Kafka records to output records, around the pure core.

:class:`Core` bundles the decoder and the pipeline built from the settings and the model;
it is what the service runs in a worker thread. The helpers turn its results into
:class:`~streamcast.kafka.wire.OutRecord` lists: forecasts keyed by series key, dead letters
with the original bytes and key, reason and source coordinates in headers.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from streamcast.config import Settings
from streamcast.core.codec import TickDecoder, dead_letter_record
from streamcast.core.model import OnnxStepModel
from streamcast.core.pipeline import Pipeline
from streamcast.core.records import ForecastBatch, Rejection, encode_forecasts
from streamcast.kafka.wire import Consumed, OutRecord


@dataclass(frozen=True)
class CoreStep:
    """What one micro-batch produced."""

    forecasts: ForecastBatch
    rejections: list[Rejection]
    #: for each forecast row, the position (in the consumed records) of the tick that
    #: closed its interval: its Kafka timestamp starts the end-to-end latency clock
    trigger_positions: npt.NDArray[np.int64]
    counters: dict[str, int] = field(default_factory=dict)
    #: keys whose state changed (changelog records) and keys dropped (tombstones)
    changed_keys: list[str] = field(default_factory=list)
    removed_keys: list[str] = field(default_factory=list)


class BatchProcessor(Protocol):
    """What the service runs per micro-batch (a fake in unit tests)."""

    model_name: str
    model_version: str

    def process(self, records: Sequence[Consumed], now_s: float) -> CoreStep:
        """Decode and step one micro-batch (CPU only; called from a worker thread)."""
        ...


@runtime_checkable
class DurableProcessor(BatchProcessor, Protocol):
    """A processor whose per-key state is kept per input partition (exactly-once mode)."""

    #: input partition of every held key (the partition its ticks arrive on)
    partition_of: dict[str, int]

    def state_records(self, topic: str, step: CoreStep) -> list[OutRecord]:
        """Changelog records for ``step``: state of changed keys, tombstones of removed."""
        ...

    def restore(self, partition: int, records: Sequence[tuple[str, bytes]], now_s: float) -> int:
        """Load a partition's changelog state; returns the keys restored."""
        ...

    def drop_partitions(self, partitions: Set[int]) -> int:
        """Forget the keys of ``partitions`` (no tombstones); returns how many."""
        ...


class Core:
    """Decoder plus pipeline: ``process(records, now_s) -> CoreStep`` (CPU only, no I/O).

    It also remembers the input partition of every key, because exactly-once mode keeps
    a key's state in the changelog partition of its input partition and drops it when
    that partition moves to another instance. Ticks of a key must all arrive on one
    partition (the Kafka key is the series key, as the producers' contract says).
    """

    def __init__(
        self,
        decoder: TickDecoder,
        pipeline: Pipeline,
        name: str,
        version: str,
        *,
        track_partitions: bool = True,
    ) -> None:
        self.decoder = decoder
        self.pipeline = pipeline
        self.model_name = name
        self.model_version = version
        #: off in at-least-once mode: nothing reads the map there, and only changelog
        #: tombstones remove evicted keys from it
        self.track_partitions = track_partitions
        self.partition_of: dict[str, int] = {}

    def process(self, records: Sequence[Consumed], now_s: float) -> CoreStep:
        """Decode and step one micro-batch."""
        batch, rejections = self.decoder.decode([(r.key, r.value) for r in records])
        result = self.pipeline.process(batch, now_s)
        if self.track_partitions and len(batch.keys):
            parts = np.fromiter((r.partition for r in records), dtype=np.int64, count=len(records))
            self.partition_of.update(zip(batch.keys, parts[batch.index].tolist(), strict=True))
        forecasts = result.forecasts
        c = result.counters
        counters = {
            "evicted_lru": c.evicted_lru,
            "expired_ttl": c.expired_ttl,
            "resets": c.resets,
            "active_keys": self.pipeline.active_keys,
        }
        return CoreStep(
            forecasts=forecasts,
            rejections=[*rejections, *result.rejections],
            trigger_positions=np.asarray(forecasts.trigger_index, dtype=np.int64),
            counters=counters,
            changed_keys=result.changed_keys,
            removed_keys=result.removed_keys,
        )

    def state_records(self, topic: str, step: CoreStep) -> list[OutRecord]:
        """Changelog records, each sent to its key's input partition: the compact state of
        every key the step changed, and a tombstone for every key it dropped."""
        partition_of = self.partition_of
        out = [
            OutRecord(topic, key.encode(), value, partition=partition_of[key])
            for key, value in self.pipeline.snapshot(step.changed_keys)
        ]
        for key in step.removed_keys:
            partition = partition_of.pop(key, None)
            if partition is not None:
                out.append(OutRecord(topic, key.encode(), None, partition=partition))
        return out

    def restore(self, partition: int, records: Sequence[tuple[str, bytes]], now_s: float) -> int:
        """Load a partition's changelog state (``(key, record)``, latest per key)."""
        restored = self.pipeline.restore(records, now_s)
        self.partition_of.update((key, partition) for key, _ in records)
        return restored

    def drop_partitions(self, partitions: Set[int]) -> int:
        """Forget every key of ``partitions``: another instance owns them now."""
        keys = [k for k, p in self.partition_of.items() if p in partitions]
        for key in keys:
            del self.partition_of[key]
        return self.pipeline.drop(keys)


def build_core(settings: Settings) -> Core:
    """Load the model named in ``settings`` and build the decoder and pipeline around it."""
    assert settings.model_path is not None  # checked by the caller with a clear message
    model = OnnxStepModel.load(settings.model_path, intra_op_threads=settings.intra_op_threads)
    meta = model.meta
    fields = settings.fields
    extra_fields = [fields.extras.get(name, name) for name in meta.features.extra_names]
    decoder = TickDecoder(
        key_field=fields.key,
        ts_field=fields.ts,
        value_field=fields.value,
        extra_fields=extra_fields,
        max_bytes=settings.max_message_bytes,
        min_ts_s=settings.min_ts_s,
        max_future_s=settings.max_future_s,
    )
    pipeline = Pipeline(
        model,
        aggregation=settings.aggregation or meta.aggregation,
        max_gap=meta.gap.max_gap if settings.max_gap is None else settings.max_gap,
        max_keys=settings.max_keys,
        key_ttl_s=settings.key_ttl_s,
    )
    durable = settings.processing_guarantee == "exactly_once"
    return Core(decoder, pipeline, meta.name, meta.version, track_partitions=durable)


def forecast_records(topic: str, forecasts: ForecastBatch) -> list[OutRecord]:
    """Forecast messages, Kafka key = series key."""
    return [OutRecord(topic, key, value) for key, value in encode_forecasts(forecasts)]


def dead_letters(
    topic: str, records: Sequence[Consumed], rejections: Sequence[Rejection]
) -> list[OutRecord]:
    """Dead-letter messages: original key and bytes, reason and coordinates in headers."""
    out = []
    for rejection in rejections:
        src = records[rejection.index]
        value, headers = dead_letter_record(
            src.value,
            src.key,
            rejection.reason,
            rejection.detail,
            src.topic,
            src.partition,
            src.offset,
            src.timestamp,
        )
        out.append(OutRecord(topic, src.key, value, headers))
    return out


def partitioned_outputs(
    settings: Settings, core: DurableProcessor, records: Sequence[Consumed], step: CoreStep
) -> tuple[dict[int, list[OutRecord]], int]:
    """Every output of ``step`` grouped by the input partition it belongs to (its
    transaction): forecasts and changelog records by their key's partition, dead letters
    by their source record's. Returns ``(by_partition, number of forecasts)``."""
    topics = settings.topics
    by_partition: dict[int, list[OutRecord]] = {}
    partition_of = core.partition_of
    forecasts = forecast_records(topics.forecasts, step.forecasts)
    for record, key in zip(forecasts, step.forecasts.keys, strict=True):
        by_partition.setdefault(partition_of[key], []).append(record)
    letters = dead_letters(topics.dead_letter, records, step.rejections)
    for record, rejection in zip(letters, step.rejections, strict=True):
        by_partition.setdefault(records[rejection.index].partition, []).append(record)
    for record in core.state_records(topics.state_changelog, step):
        assert record.partition is not None
        by_partition.setdefault(record.partition, []).append(record)
    return by_partition, len(forecasts)
