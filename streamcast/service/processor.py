"""The batch processor: one micro-batch of consumed records in, the records to produce out.

:class:`Processor` bundles the decoder and the pipeline built from the settings and the
model; the service runs :meth:`Processor.process` in a worker thread. Its
:class:`BatchResult` holds every output of the batch grouped by the *input* partition it
belongs to — a forecast and a changelog record by its key's partition, a dead letter by
its source record's — which is what either sink needs: the at-least-once sink produces
them all, the exactly-once sink commits each group in its partition's transaction.

It also implements the sinks' :class:`~streamcast.kafka.sink.PartitionedState`: the state
store knows the input partition of every key, so a partition's state can be restored
from its changelog partition or handed to another instance. Ticks of a key must all
arrive on one partition (the Kafka key is the series key, as the producers' contract
says).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from streamcast.config import Settings
from streamcast.core.alerts import encode_alerts
from streamcast.core.codec import TickDecoder, dead_letter_record
from streamcast.core.drift import DriftSettings
from streamcast.core.forecast_rows import encode_forecast_rows
from streamcast.core.isolation import MAX_ERROR_TEXT
from streamcast.core.model import OnnxStepModel, StepModel
from streamcast.core.pipeline import Pipeline, StepResult
from streamcast.core.quality import QualityTotals
from streamcast.core.records import ForecastBatch, Rejection, encode_forecasts
from streamcast.core.schemas import (
    ALERT_HEADERS,
    FORECAST_HEADERS,
    FORECAST_ROW_HEADERS,
    STATE_HEADERS,
)
from streamcast.errors import ConfigurationError, RejectReason
from streamcast.kafka.changelog import marker
from streamcast.kafka.publish import MAX_DEAD_LETTER_BYTES, record_size, truncated
from streamcast.kafka.wire import Consumed, Offsets, OutRecord
from streamcast.service.logs import log_model

log = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class BatchResult:
    """What one micro-batch produced, ready for a sink."""

    #: every record to produce, grouped by the input partition it belongs to
    outputs: dict[int, list[OutRecord]]
    #: ``{(topic, partition): next offset}``: what to commit once the outputs are durable
    offsets: Offsets
    forecasts: int
    rejections: list[Rejection]
    #: Kafka timestamps (epoch ms) of the ticks that closed each forecast's interval: the
    #: start of the end-to-end latency clock
    trigger_timestamps_ms: IntArray
    #: worker-thread seconds spent decoding and stepping (output encoding excluded)
    seconds: float = 0.0
    #: ``(kind, detector)`` of every alert in the outputs
    alerts: list[tuple[str, str]] = field(default_factory=list)
    #: per-step error sums of the forecasts the batch's actuals scored
    quality: QualityTotals | None = None
    counters: dict[str, int] = field(default_factory=dict)


class BatchProcessor(Protocol):
    """What the service runs per micro-batch (a fake in unit tests)."""

    model_name: str
    model_version: str

    def process(self, records: Sequence[Consumed], now_s: float) -> BatchResult:
        """Decode, step and encode one micro-batch (CPU only; called from a worker thread)."""
        ...

    def restore(self, partition: int, records: Sequence[tuple[str, bytes]], now_s: float) -> int:
        """Load a partition's changelog state; returns the keys restored."""
        ...

    def drop_partitions(self, partitions: Set[int]) -> int:
        """Forget the keys of ``partitions`` (no tombstones); returns how many."""
        ...

    def swap_problem(self, model: StepModel) -> str | None:
        """Why ``model`` cannot replace the serving one, or None."""
        ...

    def swap_model(self, model: StepModel) -> int:
        """Serve ``model`` from the next batch on; returns keys rebuilt."""
        ...


@dataclass(frozen=True)
class OutputTopics:
    """Where a batch's outputs go; ``changelog=None`` writes no state records."""

    forecasts: str
    dead_letter: str
    changelog: str | None = None
    alerts: str | None = None


class Processor:
    """Decoder plus pipeline: ``process(records, now_s) -> BatchResult`` (CPU only, no I/O)."""

    def __init__(
        self,
        decoder: TickDecoder,
        pipeline: Pipeline,
        topics: OutputTopics,
        *,
        name: str,
        version: str,
        layout: Literal["record", "rows"] = "record",
    ) -> None:
        self.decoder = decoder
        self.pipeline = pipeline
        self.topics = topics
        self.model_name = name
        self.model_version = version
        self.layout = layout

    def process(self, records: Sequence[Consumed], now_s: float) -> BatchResult:
        """Decode and step one micro-batch, then encode every output it produced.

        A forecast that cannot be encoded (a bug) is isolated: its triggering tick is
        dead-lettered with reason ``internal_error`` and the rest of the batch goes out.
        """
        started = time.perf_counter()
        partitions, at = coordinates(records)
        step = self._step(records, now_s, partitions, at)
        seconds = time.perf_counter() - started
        rows = self.layout == "rows"
        encoded, failed = encode_isolated(step.forecasts, now_s, rows=rows)
        rejections = sorted([*step.rejections, *failed], key=lambda r: r.index)
        outputs: dict[int, list[OutRecord]] = {}
        per = step.forecasts.horizon if rows else 1  # messages per forecast
        triggers = np.repeat(np.asarray(step.forecasts.trigger_index, dtype=np.int64), per)
        topic = self.topics.forecasts
        # one headers list shared by the batch's forecasts (nobody mutates it)
        headers = list(FORECAST_ROW_HEADERS if rows else FORECAST_HEADERS)
        # per message only what must be: its record, appended to its partition's list
        for message, part in zip(encoded, partitions[triggers].tolist(), strict=True):
            if message is not None:
                record = OutRecord(topic, message[0], message[1], headers)
                bucket = outputs.get(part)
                if bucket is None:
                    outputs[part] = [record]
                else:
                    bucket.append(record)
        firsts = triggers[::per]
        if failed:
            firsts = firsts[np.array([m is not None for m in encoded[::per]], dtype=bool)]
        delivered: list[int] = firsts.tolist()
        alerts = 0
        if step.alerts is not None and self.topics.alerts is not None:
            alert_topic = self.topics.alerts
            alert_headers = list(ALERT_HEADERS)
            triggers_a = step.alerts.trigger_index.tolist()
            for (key, value), trigger in zip(encode_alerts(step.alerts), triggers_a, strict=True):
                alert = OutRecord(alert_topic, key, value, alert_headers)
                outputs.setdefault(int(partitions[trigger]), []).append(alert)
                alerts += 1
        for rejection in rejections:
            src = records[rejection.index]
            outputs.setdefault(src.partition, []).append(dead_letter(self.topics, src, rejection))
        offsets = next_offsets(records, partitions, at)
        for record in self.state_records(step, offsets):
            assert record.partition is not None
            outputs.setdefault(record.partition, []).append(record)
        stamps = np.fromiter(
            (records[i].timestamp for i in delivered), dtype=np.int64, count=len(delivered)
        )
        c = step.counters
        alarms = self.pipeline.keys_in_alarm
        return BatchResult(
            outputs=outputs,
            offsets=offsets,
            forecasts=len(delivered),
            rejections=rejections,
            alerts=[]
            if step.alerts is None
            else list(zip(step.alerts.kind, step.alerts.detector, strict=True)),
            quality=step.quality,
            trigger_timestamps_ms=stamps,
            seconds=seconds,
            counters={
                "evicted_lru": c.evicted_lru,
                "expired_ttl": c.expired_ttl,
                "resets": c.resets,
                "internal_errors": c.internal_errors + len(failed),
                "active_keys": self.pipeline.active_keys,
                "alarm_ewma": alarms[0],
                "alarm_ks": alarms[1],
            },
        )

    def step(self, records: Sequence[Consumed], now_s: float) -> tuple[StepResult, IntArray]:
        """Decode and step (no encoding): the pipeline's result and every record's input
        partition (the reference runs of tests and benchmarks use this half alone)."""
        partitions, offsets = coordinates(records)
        return self._step(records, now_s, partitions, offsets), partitions

    def _step(
        self, records: Sequence[Consumed], now_s: float, partitions: IntArray, offsets: IntArray
    ) -> StepResult:
        batch, rejections = self.decoder.decode([(r.key, r.value) for r in records])
        placed = batch.placed(partitions[batch.index], offsets[batch.index])
        result = self.pipeline.process(placed, now_s)
        rejected = sorted([*rejections, *result.rejections], key=lambda r: r.index)
        return replace(result, rejections=rejected)

    def state_records(self, step: StepResult, offsets: Offsets | None = None) -> list[OutRecord]:
        """Changelog records, each sent to its key's input partition: the compact state of
        every key the step changed, a tombstone for every key it dropped, and the marker
        of every partition whose offsets the batch commits."""
        topic = self.topics.changelog
        if topic is None:
            return []
        markers = [marker(topic, p, o) for (_, p), o in sorted((offsets or {}).items())]
        store = self.pipeline.store
        # one lookup for the records and their partitions (each pass over 10,000 keys in
        # Python costs as much as encoding their records)
        keys, rows = step.changed_keys, store.lookup(step.changed_keys)
        held = rows >= 0
        if not held.all():
            keys = [k for k, h in zip(keys, held.tolist(), strict=True) if h]
            rows = rows[held]
        values = store.encode_rows(rows)
        partitions = store.partition[rows].tolist()
        headers = list(STATE_HEADERS)
        out = [
            OutRecord(topic, key.encode(), value, headers, partition)
            for key, value, partition in zip(keys, values, partitions, strict=True)
        ]
        out += [
            OutRecord(topic, key.encode(), None, headers, partition)
            for key, partition in step.removed
            if partition >= 0
        ]
        return out + markers

    def restore(self, partition: int, records: Sequence[tuple[str, bytes]], now_s: float) -> int:
        """Load a partition's changelog state (``(key, record)``, latest per key)."""
        restored, rebuilt = self.pipeline.restore(records, now_s, partition)
        if rebuilt:
            log.warning(
                "restored keys whose state another model computed: rebuilt from their "
                "windows with this model, not adopted",
                extra={"partition": partition, "keys": rebuilt, "model": self.model_version},
            )
        return restored

    def drop_partitions(self, partitions: Set[int]) -> int:
        """Forget every key of ``partitions``: another instance owns them now."""
        return self.pipeline.store.drop_partitions(partitions)

    def swap_problem(self, model: StepModel) -> str | None:
        """Why ``model`` cannot replace the one serving, or None."""
        return self.pipeline.swap_problem(model)

    def swap_model(self, model: StepModel) -> int:
        """Serve ``model`` from the next batch on (between batches only); returns keys
        whose state was rebuilt from their windows."""
        rebuilt = self.pipeline.swap_model(model)
        self.model_name, self.model_version = model.meta.name, model.meta.version
        log_model(log, model.meta, "swapped in")
        return rebuilt


def build_processor(settings: Settings, path: Path | None = None) -> Processor:
    """Load the model at ``path`` (default: ``settings.model_path``, a file) and build the
    decoder and pipeline around it."""
    path = path or settings.model_path
    assert path is not None  # checked by the caller with a clear message
    model = OnnxStepModel.load(path, threads=settings.intra_op_threads)
    meta = model.meta
    fields = settings.fields
    check_extras(fields.extras, meta.features.extra_names, f"{meta.name}@{meta.version}")
    extra_fields = [fields.extras.get(name, name) for name in meta.features.extra_names]
    decoder = TickDecoder(
        key_field=fields.key,
        ts_field=fields.ts,
        value_field=fields.value,
        extra_fields=extra_fields,
        max_bytes=settings.max_message_bytes,
        max_key_bytes=settings.max_key_bytes,
        min_ts_s=settings.min_ts_s,
        max_future_s=settings.max_future_s,
    )
    pipeline = Pipeline(
        model,
        aggregation=settings.aggregation or meta.aggregation,
        max_gap=meta.gap.max_gap if settings.max_gap is None else settings.max_gap,
        max_keys=settings.max_keys,
        key_ttl_s=settings.effective_key_ttl_s(meta.interval_s),
        max_jump_intervals=settings.max_jump_intervals,
        jump_confirmations=settings.jump_confirmations,
        drift=DriftSettings(**settings.drift.model_dump()),
        band_rate=settings.band_rate,
    )
    topics = settings.topics
    changelog = topics.state_changelog if settings.durable_state else None
    output = OutputTopics(topics.forecasts, topics.dead_letter, changelog, topics.alerts)
    log_model(log, meta)  # only once the settings fit the model
    ttl = settings.key_ttl_s
    if "key_ttl_s" in settings.model_fields_set and ttl is not None and ttl <= meta.interval_s:
        # not refused: a replay of history sends many intervals per second of wall clock
        log.warning(
            "key_ttl_s is not longer than the model's interval: a key that sends a tick per "
            "interval in real time expires between its ticks and never forecasts; set "
            "STREAMCAST_KEY_TTL_S to several intervals (or unset it) for a live stream",
            extra={"key_ttl_s": ttl, "interval_s": meta.interval_s},
        )
    return Processor(
        decoder, pipeline, output, name=meta.name, version=meta.version,
        layout=settings.forecast_layout,
    )  # fmt: skip


def encode_isolated(
    forecasts: ForecastBatch, generated_at_s: float | None = None, *, rows: bool = False
) -> tuple[list[tuple[bytes, bytes] | None], list[Rejection]]:
    """The forecasts' messages (``encode_forecasts``, or ``encode_forecast_rows`` with
    ``rows``: ``horizon`` messages per forecast); if encoding the batch raises, forecasts
    are encoded one by one and the messages of each that fails become ``None`` plus a
    rejection (``internal_error``) of the tick that triggered it."""
    encode = encode_forecast_rows if rows else encode_forecasts
    try:
        return list(encode(forecasts, generated_at_s)), []
    except Exception:  # noqa: BLE001 - isolate any bug; the rows below say which
        pass
    encoded: list[tuple[bytes, bytes] | None] = []
    failed: list[Rejection] = []
    for row in range(len(forecasts)):
        try:
            encoded += encode(forecasts.take(np.array([row])), generated_at_s)
        except Exception as exc:  # noqa: BLE001
            text = " ".join(f"{type(exc).__name__}: {exc}".split())[:MAX_ERROR_TEXT]
            detail = f"encoding the forecast it triggered raised {text}"
            trigger = int(forecasts.trigger_index[row])
            failed.append(Rejection(trigger, RejectReason.INTERNAL_ERROR, detail))
            encoded += [None] * (forecasts.horizon if rows else 1)
    return encoded, failed


def check_extras(extras: Mapping[str, str], features: Sequence[str], model: str) -> None:
    """Refuse a ``fields.extras`` mapping that names a feature the model does not have: it
    would be ignored in silence while the operator believes the model reads that field."""
    unknown = sorted(set(extras) - set(features))
    if unknown:
        have = ", ".join(features) if features else "none"
        raise ConfigurationError(
            f"STREAMCAST_FIELDS__EXTRAS (fields.extras): {', '.join(unknown)} "
            f"{'is not an extra feature' if len(unknown) == 1 else 'are not extra features'} "
            f"of model {model} (its extra features: {have}): map only the model's features "
            "to tick fields, or serve the model that has them"
        )


def dead_letter(topics: OutputTopics, src: Consumed, rejection: Rejection) -> OutRecord:
    """A dead letter: the original key and bytes, reason and coordinates in headers."""
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
    record = OutRecord(topics.dead_letter, src.key, value, headers)
    # a near-limit input's dead letter (its bytes plus the headers) would be over the
    # broker's limit, refused on every retry: it goes out cut, marked (publish.truncated)
    return truncated(record) if record_size(record) > MAX_DEAD_LETTER_BYTES else record


def coordinates(records: Sequence[Consumed]) -> tuple[IntArray, IntArray]:
    """``(partitions, offsets)`` of ``records`` as arrays."""
    n = len(records)
    partitions = np.fromiter((r.partition for r in records), dtype=np.int64, count=n)
    offsets = np.fromiter((r.offset for r in records), dtype=np.int64, count=n)
    return partitions, offsets


def next_offsets(
    records: Sequence[Consumed],
    partitions: IntArray | None = None,
    offsets: IntArray | None = None,
) -> dict[tuple[str, int], int]:
    """``{(topic, partition): last offset + 1}``: what to commit after ``records``
    (``partitions`` and ``offsets``: :func:`coordinates` of them, when the caller has
    them already)."""
    if not records:
        return {}
    topic = records[0].topic
    if any(r.topic != topic for r in records):
        commit: dict[tuple[str, int], int] = {}
        for r in records:
            tp = (r.topic, r.partition)
            commit[tp] = max(commit.get(tp, 0), r.offset + 1)
        return commit
    if partitions is None or offsets is None:
        partitions, offsets = coordinates(records)
    owners, which = np.unique(partitions, return_inverse=True)
    last = np.full(len(owners), -1, dtype=np.int64)
    np.maximum.at(last, which.ravel(), offsets)
    return {(topic, p): o + 1 for p, o in zip(owners.tolist(), last.tolist(), strict=True)}
