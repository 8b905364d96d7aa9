"""Compare forecasts the service published with the offline evaluator's reference file.

    python scripts/compare_forecasts.py --offline forecasts.csv --online online.jsonl

``online.jsonl`` is what ``streamcast tail --json`` prints (one forecast document per
line). Prints matched/missing/extra counts and the worst relative difference; exits 1
when the two disagree beyond ``--rtol`` or the (key, origin) sets differ.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import orjson
import pandas as pd


def load_offline(path: Path) -> dict[tuple[str, str], np.ndarray]:
    """``(key, origin ISO) -> [H]`` from the evaluator's per-interval forecasts file."""
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    frame = frame.sort_values(["key", "origin_ts", "step"])
    values = frame["forecast"].to_numpy(dtype=np.float64)
    horizon = int(frame["step"].max())
    keys = frame["key"].astype(str).to_numpy()[::horizon]
    origins = frame["origin_ts"].astype(str).to_numpy()[::horizon]
    rows = values.reshape(-1, horizon)
    return {(k, o): rows[i] for i, (k, o) in enumerate(zip(keys, origins, strict=True))}


def load_online(path: Path) -> tuple[dict[tuple[str, str], np.ndarray], int]:
    """``(key, origin) -> [H]`` from JSON lines, and how many lines repeated a pair."""
    out: dict[tuple[str, str], np.ndarray] = {}
    repeats = 0
    for line in path.read_bytes().splitlines():
        if not line.strip():
            continue
        doc = orjson.loads(line)
        pair = (str(doc["key"]), str(doc["ts"]))
        repeats += pair in out
        out[pair] = np.asarray(doc["values"], dtype=np.float64)
    return out, repeats


def main(argv: list[str] | None = None) -> int:
    """Entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--offline", type=Path, required=True)
    parser.add_argument("--online", type=Path, required=True)
    parser.add_argument("--rtol", type=float, default=1e-5)
    args = parser.parse_args(argv)
    offline = load_offline(args.offline)
    online, repeats = load_online(args.online)
    common = offline.keys() & online.keys()
    worst = max(
        (
            float(np.max(np.abs(online[p] - offline[p]) / np.maximum(np.abs(offline[p]), 1e-9)))
            for p in common
        ),
        default=0.0,
    )
    missing, extra = len(offline.keys() - online.keys()), len(online.keys() - offline.keys())
    print(
        f"offline {len(offline)} forecasts, online {len(online)} (+{repeats} repeated); "
        f"matched {len(common)}, missing {missing}, extra {extra}; "
        f"worst relative difference {worst:.2e}"
    )
    ok = missing == 0 and extra == 0 and worst <= args.rtol
    print("online equals offline" if ok else "MISMATCH between online and offline")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
