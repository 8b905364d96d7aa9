"""``streamcast history export``: the ticks topic as a long-format table, for retraining.

Reads every partition of the ticks topic (read_committed, no consumer group, so it
disturbs nobody) from ``--since`` to the end offsets it finds when it starts, decodes
each message with the service's own decoder (the configured field names, the model's
extra features if ``--features`` names them), and writes one row per well-formed tick —
``key, ts`` (ISO-8601 UTC, milliseconds), ``value``, then the extras — as Parquet or CSV
(by the output's suffix). Malformed messages are skipped and counted: they are in the
dead-letter topic already. The result is what ``streamcast-train fit --data FILE
--key-col key --time-col ts --value-col value`` reads, so a retrain needs nothing but the
cluster (``deploy/kubernetes/base/retrain-cronjob.yaml``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from streamcast.config import ClientSettings
from streamcast.core.codec import TickDecoder
from streamcast.errors import ConfigurationError
from streamcast.kafka.topic_io import TopicSnapshot
from streamcast.kafka.topics import require_topic
from streamcast.tools.formats import require_parquet

KEY, TS, VALUE = "key", "ts", "value"


@dataclass(frozen=True)
class ExportOptions:
    """What to export and where."""

    out: Path
    topic: str
    features: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None


@dataclass
class Exported:
    """What an export wrote."""

    rows: int = 0
    skipped: int = 0
    keys: int = 0


async def export_history(settings: ClientSettings, options: ExportOptions) -> Exported:
    """Read the topic and write the table (see the module docstring)."""
    suffix = options.out.suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv"):
        raise ConfigurationError(f"--out {options.out}: use a .parquet or .csv file name")
    require_parquet("--out", options.out)  # before reading the whole topic
    partitions = await require_topic(settings, options.topic)
    fields = settings.fields
    extras = [fields.extras.get(name, name) for name in options.features]
    decoder = TickDecoder(
        key_field=fields.key,
        ts_field=fields.ts,
        value_field=fields.value,
        extra_fields=extras,
        min_ts_s=0,
        max_future_s=10**10,
    )
    keys: list[str] = []
    stamps: list[np.ndarray] = []
    values: list[np.ndarray] = []
    done = Exported()
    since = None if options.since is None else int(options.since.timestamp() * 1000)
    until = None if options.until is None else int(options.until.timestamp() * 1000)
    async with TopicSnapshot(settings, options.topic, partitions) as snapshot:
        async for records in snapshot.batches(since, until):
            batch, rejected = decoder.decode([(r.key, r.value) for r in records])
            keys += batch.keys
            stamps.append(batch.ts_ms)
            values.append(batch.values)
            done.skipped += len(rejected)
    done.rows = len(keys)
    done.keys = len(set(keys))
    await asyncio.to_thread(_write, options, keys, stamps, values)
    return done


def _write(
    options: ExportOptions, keys: list[str], stamps: list[np.ndarray], values: list[np.ndarray]
) -> None:
    import pandas as pd  # noqa: PLC0415 - only this tool needs pandas

    width = 1 + len(options.features)
    ts = np.concatenate(stamps) if stamps else np.zeros(0, dtype=np.int64)
    vals = np.concatenate(values) if values else np.zeros((0, width))
    frame = pd.DataFrame({KEY: keys, TS: pd.to_datetime(ts, unit="ms", utc=True)})
    frame[VALUE] = vals[:, 0]
    for i, name in enumerate(options.features, start=1):
        frame[name] = vals[:, i]
    frame = frame.sort_values([KEY, TS], kind="stable")
    frame[TS] = (
        frame[TS]
        .dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        .str.replace(r"\.(\d{3})\d{3}Z$", r".\1Z", regex=True)
    )
    options.out.parent.mkdir(parents=True, exist_ok=True)
    if options.out.suffix.lower() == ".csv":
        frame.to_csv(options.out, index=False)
    else:
        frame.to_parquet(options.out, index=False)
