"""Producer compression on forecast records: what each codec costs and saves.

Builds genuine Kafka record batches with aiokafka's own batch builder (the code path the
producer runs, in the event loop, for every batch it sends) from real forecast records
(:func:`streamcast.core.records.encode_forecasts`, horizon 24, calibrated at 0.9: the
heaviest output the service writes) and prints, per codec, the bytes on the wire per
record and the CPU time to build and compress one batch (the fastest of ``--repeat``);
zstd once per level of ``--zstd-levels`` (set as the service sets it,
:mod:`streamcast.kafka.zstd_level`). With ``--model`` the records are what the service's
pipeline writes for one batch of ``--records`` keys with that model: its forecasts and
its state changelog records, each kind in its own batches. No broker is needed.

    .venv/bin/python bench/compression.py --records 500 --horizon 24 --repeat 20
    .venv/bin/python bench/compression.py --model .bench/model/model.onnx
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from aiokafka.record.default_records import DefaultRecordBatchBuilder  # noqa: E402

from streamcast.core.records import ForecastBatch, encode_forecasts  # noqa: E402
from streamcast.kafka import zstd_level  # noqa: E402

#: Kafka's attribute codes (the low three bits of a record batch's attributes)
CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def forecast_records(n: int, horizon: int, seed: int = 1) -> list[tuple[bytes, bytes]]:
    """``n`` forecast records of distinct keys, like one busy micro-batch's output."""
    rng = np.random.default_rng(seed)
    values = rng.normal(400.0, 50.0, size=(n, horizon))
    spread = np.abs(rng.normal(30.0, 5.0, size=(n, 1, horizon)))
    batch = ForecastBatch(
        keys=[f"sensor-{i:05d}" for i in range(n)],
        origin_ts=np.full(n, 1_767_000_000 // 3600 * 3600, dtype=np.int64),
        values=values,
        model="pedestrians",
        model_version="3",
        interval_s=3600,
        horizon=horizon,
        trigger_index=np.arange(n, dtype=np.int64),
        levels=(0.9,),
        lower=values[:, None, :] - spread,
        upper=values[:, None, :] + spread,
    )
    return encode_forecasts(batch)


def build(records: list[tuple[bytes, bytes]], codec: int) -> int:
    """Bytes of one record batch holding ``records`` compressed with ``codec``."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=codec,
        is_transactional=False,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=64 * 1024 * 1024,
    )
    for offset, (key, value) in enumerate(records):
        builder.append(offset, timestamp=1_767_000_000_000, key=key, value=value, headers=[])
    return len(builder.build())


def pipeline_records(model: Path, keys: int) -> dict[str, list[tuple[bytes, bytes]]]:
    """One batch's output of the service's pipeline with ``model``, ``keys`` keys past
    warm-up: ``{"forecasts": [...], "state": [...]}`` as (key, value) records."""
    sys.path.insert(0, str(REPO / "bench"))
    from micro import key_names, tick_records, warm_processor  # noqa: PLC0415 - the model's rows only

    processor, interval = warm_processor(model.resolve(), keys)
    ticks = tick_records(key_names(keys), interval, processor.pipeline.interval_s, 10**9)
    outputs = [r for part in processor.process(ticks, time.time()).outputs.values() for r in part]
    kinds: dict[str, list[tuple[bytes, bytes]]] = {"forecasts": [], "state": []}
    for r in outputs:
        if r.value is not None:
            kind = "forecasts" if r.topic == processor.topics.forecasts else "state"
            kinds[kind].append((r.key or b"", r.value))
    return kinds


def codec_rows(records: list[tuple[bytes, bytes]], repeat: int, levels: list[int]) -> None:
    """One row per codec (zstd once per level) for batches of ``records``."""
    print(f"{'codec':<8}{'B/record':>10}{'ratio':>8}{'ms/batch':>10}{'us/record':>11}")
    plain = build(records, 0)
    runs: list[tuple[str, int, int | None]] = [
        (name, code, None) for name, code in CODECS.items() if name != "zstd"
    ]
    runs += [(f"zstd {level}", CODECS["zstd"], level) for level in levels]
    for name, code, level in runs:
        if level is not None:
            zstd_level.use(level)
        build(records, code)  # warm-up
        times = []
        for _ in range(repeat):
            began = time.perf_counter()
            size = build(records, code)
            times.append(time.perf_counter() - began)
        seconds = min(times)  # the machine is shared: the fastest run is the codec's cost
        print(
            f"{name:<8}{size / len(records):>10.0f}{plain / size:>8.2f}"
            f"{seconds * 1e3:>10.2f}{seconds * 1e6 / len(records):>11.1f}"
        )


def main() -> None:
    """Print one row per codec."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=500, help="records per batch")
    parser.add_argument("--horizon", type=int, default=24)
    parser.add_argument("--repeat", type=int, default=20, help="batches timed per codec")
    parser.add_argument("--zstd-levels", default="1,3", help="zstd levels, comma-separated")
    parser.add_argument("--model", type=Path, help="the pipeline's records with this model")
    args = parser.parse_args()
    levels = [int(level) for level in args.zstd_levels.split(",")]
    if args.model is None:
        kinds = {"forecast": forecast_records(args.records, args.horizon)}
    else:
        kinds = pipeline_records(args.model, args.records)
    for kind, records in kinds.items():
        raw = sum(len(k) + len(v) for k, v in records) / len(records)
        print(f"\n{len(records)} {kind} records per batch, {raw:.0f} B each")
        codec_rows(records, args.repeat, levels)


if __name__ == "__main__":
    main()
