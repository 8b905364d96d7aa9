"""Producer compression on forecast records: what each codec costs and saves.

Builds genuine Kafka record batches with aiokafka's own batch builder (the code path the
producer runs, in the event loop, for every batch it sends) from real forecast records
(:func:`streamcast.core.records.encode_forecasts`, horizon 24, calibrated at 0.9: the
heaviest output the service writes) and prints, per codec, the bytes on the wire per
record and the CPU time to build and compress one batch (the fastest of ``--repeat``).
No broker is needed.

    .venv/bin/python bench/compression.py --records 500 --horizon 24 --repeat 20
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


def main() -> None:
    """Print one row per codec."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=500, help="records per batch")
    parser.add_argument("--horizon", type=int, default=24)
    parser.add_argument("--repeat", type=int, default=20, help="batches timed per codec")
    args = parser.parse_args()
    records = forecast_records(args.records, args.horizon)
    raw = sum(len(k) + len(v) for k, v in records) / len(records)
    print(f"{args.records} forecast records per batch, horizon {args.horizon}, {raw:.0f} B each")
    print(f"{'codec':<8}{'B/record':>10}{'ratio':>8}{'ms/batch':>10}{'us/record':>11}")
    plain = build(records, 0)
    for name, codec in CODECS.items():
        build(records, codec)  # warm-up
        times = []
        for _ in range(args.repeat):
            began = time.perf_counter()
            size = build(records, codec)
            times.append(time.perf_counter() - began)
        seconds = min(times)  # the machine is shared: the fastest run is the codec's cost
        print(
            f"{name:<8}{size / len(records):>10.0f}{plain / size:>8.2f}"
            f"{seconds * 1e3:>10.2f}{seconds * 1e6 / len(records):>11.1f}"
        )


if __name__ == "__main__":
    main()
