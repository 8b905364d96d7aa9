"""One micro-batch from consumed Kafka records to output records, around the pure core.

:class:`Core` bundles the decoder and the pipeline built from the settings and the model;
it is what the service runs in a worker thread. The helpers turn its results into
:class:`~streamcast.kafka.OutRecord` lists: forecasts keyed by series key, dead letters
with the original bytes and key, reason and source coordinates in headers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from streamcast.codec import TickDecoder, dead_letter_record
from streamcast.config import Settings
from streamcast.kafka import Consumed, OutRecord
from streamcast.model import OnnxStepModel
from streamcast.pipeline import Pipeline
from streamcast.records import ForecastBatch, Rejection, encode_forecasts


@dataclass(frozen=True)
class CoreStep:
    """What one micro-batch produced."""

    forecasts: ForecastBatch
    rejections: list[Rejection]
    #: for each forecast row, the position (in the consumed records) of the tick that
    #: closed its interval: its Kafka timestamp starts the end-to-end latency clock
    trigger_positions: npt.NDArray[np.int64]
    counters: dict[str, int] = field(default_factory=dict)


class BatchProcessor(Protocol):
    """What the service runs per micro-batch (a fake in unit tests)."""

    model_name: str
    model_version: str

    def process(self, records: Sequence[Consumed], now_s: float) -> CoreStep:
        """Decode and step one micro-batch (CPU only; called from a worker thread)."""
        ...


class Core:
    """Decoder plus pipeline: ``process(records, now_s) -> CoreStep`` (CPU only, no I/O)."""

    def __init__(self, decoder: TickDecoder, pipeline: Pipeline, name: str, version: str) -> None:
        self.decoder = decoder
        self.pipeline = pipeline
        self.model_name = name
        self.model_version = version

    def process(self, records: Sequence[Consumed], now_s: float) -> CoreStep:
        """Decode and step one micro-batch."""
        batch, rejections = self.decoder.decode([(r.key, r.value) for r in records])
        result = self.pipeline.process(batch, now_s)
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
        )


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
    return Core(decoder, pipeline, meta.name, meta.version)


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
