"""The record codecs before and after the fast paths: µs per record and records/s.

"Before" is the codec as it was at commit ``--before`` (default: the merge this work
started from), loaded from git into this process, so both run on the same data in the
same run: tick decoding (200,000 ticks, ISO and epoch-millisecond timestamps) and
forecast encoding and decoding (10,000 forecasts, horizon 24, two interval levels). The
best of ``--repeat`` runs is shown; no broker is needed.

    .venv/bin/python bench/codec.py --ticks 200000 --forecasts 10000 --repeat 3
"""

from __future__ import annotations

import argparse
import functools
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from streamcast.core import codec, records  # noqa: E402
from streamcast.core.forecast_rows import encode_forecast_rows  # noqa: E402

#: main when this work started: the codecs "before"
BEFORE = "aa3fc76"
NOW = 1_800_000_000.0


def load_before(commit: str, name: str) -> types.ModuleType:
    """``streamcast/core/<name>.py`` as it was at ``commit``, as a module of its own."""
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{commit}:streamcast/core/{name}.py"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    module = types.ModuleType(f"before_{name}")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{commit}:{name}.py", "exec"), module.__dict__)
    return module


def tick_messages(n: int, keys: int, iso: bool) -> list[tuple[bytes | None, bytes | None]]:
    """``n`` ticks of ``keys`` keys, Kafka key = series key, as the replay tool writes them
    (ISO timestamps) or as a producer sending epoch milliseconds would."""
    rng = np.random.default_rng(0)
    start = 1_790_000_000
    names = [f"sensor-{k:05d}".encode() for k in range(keys)]
    values = rng.normal(400.0, 50.0, n).tolist()
    out: list[tuple[bytes | None, bytes | None]] = []
    stamps = start + (np.arange(n) // keys) * 3600
    text = np.datetime_as_string(stamps.astype("datetime64[s]"), unit="s").tolist()
    for i in range(n):
        key = names[i % keys]
        ts: object = text[i] + "Z" if iso else int(stamps[i]) * 1000
        out.append((key, orjson.dumps({"key": key.decode(), "ts": ts, "value": values[i]})))
    return out


def forecast_batch(n: int, horizon: int) -> records.ForecastBatch:
    """``n`` forecasts of distinct keys with 80 % and 95 % bands."""
    rng = np.random.default_rng(1)
    values = rng.normal(400.0, 50.0, size=(n, horizon))
    spread = np.abs(rng.normal(30.0, 5.0, size=(n, 2, horizon))) * np.array([1.0, 1.5])[:, None]
    return records.ForecastBatch(
        keys=[f"sensor-{i:05d}" for i in range(n)],
        origin_ts=np.full(n, 1_790_000_000 // 3600 * 3600),
        values=values, model="pedestrians", model_version="20261201T120000", interval_s=3600,
        horizon=horizon, trigger_index=np.arange(n), levels=(0.8, 0.95),
        lower=values[:, None, :] - spread, upper=values[:, None, :] + spread,
    )  # fmt: skip


def best(run: Callable[[], Any], repeat: int) -> float:
    """The fastest of ``repeat`` runs, seconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    """Print one table: each codec before and after."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ticks", type=int, default=200_000)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--forecasts", type=int, default=10_000)
    parser.add_argument("--horizon", type=int, default=24)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--before", default=BEFORE, help="git commit of the 'before' codecs")
    args = parser.parse_args()

    old_records = load_before(args.before, "records")
    old_codec = load_before(args.before, "codec")
    new_decoder = codec.TickDecoder(clock=lambda: NOW)
    old_decoder = old_codec.TickDecoder(clock=lambda: NOW)
    batch = forecast_batch(args.forecasts, args.horizon)
    old_out = old_records.encode_forecasts(batch)
    new_out = records.encode_forecasts(batch)
    rows: list[tuple[str, int, float, float]] = []
    for iso in (True, False):
        messages = tick_messages(args.ticks, args.keys, iso)
        got, _ = new_decoder.decode(messages)
        want, _ = old_decoder.decode(messages)
        assert got.keys == want.keys and np.array_equal(got.ts_ms, want.ts_ms)
        assert np.array_equal(got.values, want.values), "both decoders read the same ticks"
        label = "decode ticks, " + ("ISO ts" if iso else "epoch-ms ts")
        before = best(functools.partial(old_decoder.decode, messages), args.repeat)
        after = best(functools.partial(new_decoder.decode, messages), args.repeat)
        rows.append((label, args.ticks, before, after))
    before = best(lambda: old_records.encode_forecasts(batch), args.repeat)
    after = best(lambda: records.encode_forecasts(batch), args.repeat)
    rows.append((f"encode forecasts, H={args.horizon}, 2 levels", args.forecasts, before, after))
    before = best(lambda: [old_records.decode_forecast(v, k) for k, v in old_out], args.repeat)
    after = best(lambda: [records.decode_forecast(v, k) for k, v in new_out], args.repeat)
    rows.append((f"decode forecasts, H={args.horizon}, 2 levels", args.forecasts, before, after))

    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"codecs: before = {args.before}, after = this tree; best of {args.repeat}; load {load}")
    print(f"{'codec':<36} {'records':>8} {'µs/rec before':>14} {'after':>8} "
          f"{'rec/s before':>13} {'after':>11} {'speed-up':>9}")  # fmt: skip
    for label, n, before, after in rows:
        print(
            f"{label:<36} {n:>8} {before / n * 1e6:>14.2f} {after / n * 1e6:>8.2f} "
            f"{n / before:>13,.0f} {n / after:>11,.0f} {before / after:>8.1f}x"
        )
    seconds = best(lambda: encode_forecast_rows(batch), args.repeat)
    per_row = seconds / (args.forecasts * args.horizon) * 1e6
    print(
        f"encode forecast rows (layout rows, new): {seconds / args.forecasts * 1e6:.2f} µs per "
        f"forecast, {per_row:.2f} µs per row, {args.forecasts / seconds:,.0f} forecasts/s"
    )
    old_bytes = sum(len(v) for _, v in old_out) / len(old_out)
    new_bytes = sum(len(v) for _, v in new_out) / len(new_out)
    print(f"forecast record bytes: before {old_bytes:,.0f}, after {new_bytes:,.0f}")


if __name__ == "__main__":
    main()
