"""``make bench``: every row in one run, one model, one table (plus JSON and Markdown).

The model is :mod:`bench.model`'s (LSTM hidden 64, window 48, horizon 24, calendar
features, bands), generated once and cached in the work dir. Rows:

(a) Keras ``predict`` per tick and (b) ONNX Runtime per tick on the window (the tutorial
twin, ``bench/model.py``); (c) ORT per tick with the stateful step, (d) the batched ORT
ceiling at 1,024 and 10,000 keys with 1 and 2 threads, (e) streamcast's pipeline from
encoded tick bytes to encoded forecast bytes at 10,000 keys (``bench/micro.py``); (f)
end to end through the local broker, at-least-once and exactly-once, flat out (200,000
ticks; ``--repeats`` runs alternating the guarantees, the median kept) and at 5,000
ticks/s offered (``bench/e2e.py``; at-least-once also with ``intra_op_threads = 2``: the
spare core a paced load leaves), and Kafka's own hop for those bursts
(``bench/hop.py``); (g) the per-message peer, a Quix Streams app
(``bench/peer_app.py``, own venv) and streamcast as 2 processes in one consumer group;
(h) RSS per active key at 100,000 and 1,000,000 keys; (i) restore keys/s
(``bench/eos.py``). Every figure is ticks/s unless the row says otherwise.

    .venv/bin/python bench/table.py [--bootstrap HOST:PORT] [--work .bench]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from common import REPO, broker, broker_data_note, create_topics, unique_topic
from e2e import SETTLE_S
from e2e import bench as e2e_bench
from eos import restore_bench
from hop import run as hop_run
from model import describe

PY = sys.executable
HERE = Path(__file__).resolve().parent


def load() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def child(script: str, *args: str | Path, work: Path) -> dict[str, float]:
    """Run ``bench/<script>`` with ``--json``; its figures."""
    out = work / f"{Path(script).stem}-{'-'.join(map(str, args[2:])) or 'rows'}.json"
    subprocess.run([PY, str(HERE / script), *map(str, args), "--json", str(out)], check=True)
    figures: dict[str, float] = json.loads(out.read_text())
    return figures


def tf_rows(work: Path) -> dict[str, float]:
    """(a), (b): ``bench/model.py`` (TensorFlow stays out of this process)."""
    subprocess.run([PY, str(HERE / "model.py"), "--work", str(work)], check=True)
    rows: dict[str, float] = json.loads((work / "rows-tf.json").read_text())
    return rows


def peer_venv(work: Path) -> Path:
    """The Quix Streams peer's interpreter: a venv under the work dir (made once)."""
    venv = work / "quix-venv"
    python = venv / "bin" / "python"
    if not (venv / ".ready").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "quixstreams", "onnxruntime",
             "numpy"], check=True,
        )  # fmt: skip
        (venv / ".ready").touch()
    return python


async def peer_row(bootstrap: str, model: Path, work: Path, ticks: int, keys: int) -> float:
    """(g) the Quix Streams app: ``ticks`` ticks waiting in its topic, then the rate at
    which its forecasts arrive (first to last, so start-up is not counted)."""

    python = peer_venv(work)
    prefix = unique_topic("peer")
    ticks_topic, out_topic = f"{prefix}-ticks", f"{prefix}-forecasts"
    await create_topics(bootstrap, [ticks_topic, out_topic], partitions=2)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    start = (int(time.time()) // 86_400 - 30) * 86_400
    futures = []
    for i in range(ticks):
        key = f"k{i % keys:05d}"
        body = orjson.dumps({"key": key, "ts": start + (i // keys) * 3600, "value": 100.0 + i % 7})
        futures.append(await producer.send(ticks_topic, body, key=key.encode()))
    await asyncio.gather(*futures)
    await producer.stop()
    consumer = AIOKafkaConsumer(out_topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest")  # fmt: skip
    await consumer.start()
    log = (work / "peer.log").open("wb")
    app = await asyncio.create_subprocess_exec(
        str(python), str(HERE / "peer_app.py"), bootstrap, ticks_topic, out_topic, str(model),
        str(work / f"peer-state-{prefix}"), f"{prefix}-group",
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    seen, first, last = 0, 0.0, 0.0
    deadline = time.monotonic() + 300
    try:
        while seen < ticks and time.monotonic() < deadline and app.returncode is None:
            batch = await consumer.getmany(timeout_ms=500)
            n = sum(len(v) for v in batch.values())
            if n:
                now = time.time()
                first = first or now
                seen, last = seen + n, now
    finally:
        if app.returncode is None:
            app.terminate()
        await asyncio.wait_for(app.wait(), 30)
        log.close()
        await consumer.stop()
    if seen < ticks:
        raise RuntimeError(f"the peer produced {seen} of {ticks} forecasts; see {work}/peer.log")
    return (seen - 1) / (last - first)


async def broker_rows(args: argparse.Namespace, bootstrap: str, work: Path) -> dict[str, Any]:
    """(f), (g), (i): everything that needs the broker."""

    def run_args(**over: Any) -> argparse.Namespace:
        base = argparse.Namespace(
            model=args.model, partitions=2, batch=args.batch, wait_ms=args.wait_ms,
            guarantee="at_least_once", compression=None, ticks=args.ticks, keys=args.keys,
            rate=None, timeout=300, instances=1, restore_keys=50_000,
        )  # fmt: skip
        for name, value in over.items():
            setattr(base, name, value)
        return base

    out: dict[str, Any] = {}
    traces = work / "results"  # each paced run's latency per burst (e2e.py --trace)
    traces.mkdir(parents=True, exist_ok=True)

    async def e2e(name: str, run: argparse.Namespace) -> None:
        out[name] = f = await e2e_bench(run, bootstrap, work)
        print(
            f"{name}: {f['forecast_ticks_per_s']:,.0f} forecasting ticks/s, p50/p99 "
            f"{f['latency_p50_ms']:.0f}/{f['latency_p99_ms']:.0f} ms, "
            f"{f['forecasts']:,} of {f['forecasts_expected']:,} forecasts",
            flush=True,
        )

    # the flat-out runs alternate the guarantees, `repeats` times: on a shared VM one run
    # moves by 10-20 %, and the table keeps each guarantee's median run (all are listed)
    flat: dict[str, list[dict[str, Any]]] = {"at_least_once": [], "exactly_once": []}
    for i in range(args.repeats):
        for mode, runs in flat.items():
            await e2e(f"flat_{mode}_{i}", run_args(guarantee=mode))
            runs.append(out.pop(f"flat_{mode}_{i}"))
    for mode, runs in flat.items():
        ranked = sorted(runs, key=lambda f: f["forecast_ticks_per_s"])
        out[f"flat_{mode}"] = ranked[len(ranked) // 2]
        out[f"flat_{mode}_runs"] = [f["forecast_ticks_per_s"] for f in runs]
    for mode in flat:
        trace = traces / f"trace_paced_{mode}.csv"
        paced = run_args(guarantee=mode, rate=args.rate, keys=args.paced_keys,
                         ticks=args.paced_ticks, trace=trace)  # fmt: skip
        await e2e(f"paced_{mode}", paced)
    # the spare core, when the load leaves one: the model's runs side by side on 2 threads
    await e2e("paced_at_least_once_t2", run_args(rate=args.rate, keys=args.paced_keys,
                                                 ticks=args.paced_ticks, threads=2,
                                                 trace=traces / "trace_paced_t2.csv"))  # fmt: skip
    every_ms = 1000 * args.paced_keys / args.rate
    hops = argparse.Namespace(model=args.model, keys=args.paced_keys, every_ms=every_ms, bursts=150)
    out["hop"] = {"every_ms": every_ms, **(await hop_run(hops, bootstrap))}
    await e2e("flat_two_processes", run_args(instances=2))
    out["peer"] = await peer_row(bootstrap, args.model, work, args.peer_ticks, 200)
    print(f"peer: {out['peer']:,.0f} ticks/s", flush=True)
    out["restore"] = await restore_bench(run_args(), bootstrap, work)
    return out


def render(r: dict[str, Any], meta: dict[str, str]) -> list[tuple[str, str, str, str]]:
    """``(row, figure, x of (d) 1 thread at 10,000 keys, x of (e))`` rows of the table."""
    ceiling, pipe = r["ceiling_10000_t1"], r["pipeline_ticks_per_s"]

    def ratio(v: float) -> tuple[str, str]:
        return f"{v / ceiling:.3g}", f"{v / pipe:.3g}"

    rows: list[tuple[str, str, str, str]] = []

    def add(label: str, value: float, extra: str = "") -> None:
        rows.append((label, f"{value:,.1f}{extra}" if value < 100 else f"{value:,.0f}{extra}",
                     *ratio(value)))  # fmt: skip

    add("(a) Keras model.predict per tick (tutorial LSTM over the window)", r["keras"])
    add("(b) ONNX Runtime per tick on the window", r["ort_window"])
    add("(c) ONNX Runtime per tick, stateful step (1 key per call)", r["ort_step"])
    for keys in (1_024, 10_000):
        for t in (1, 2):
            add(f"(d) batched ORT ceiling, {keys:,} keys per run, {t} thread{'s' * (t > 1)}",
                r[f"ceiling_{keys}_t{t}"])  # fmt: skip
    if "ceiling_10000_side_by_side_t2" in r:
        add("(d) 10,000 keys on 2 threads side by side: runs of 1,024, each on 1 thread "
            "(what intra_op_threads = 2 does)", r["ceiling_10000_side_by_side_t2"])  # fmt: skip
    add(f"(e) streamcast pipeline, {r['pipeline_keys']:,} keys, tick bytes -> forecast bytes",
        pipe, f" ({r['pipeline_ms_per_batch']:,.0f} ms per batch)")  # fmt: skip
    if "pipeline_cpu_ticks_per_s" in r:
        add("(e) the same in CPU time: ticks/s per core, whatever the load",
            r["pipeline_cpu_ticks_per_s"])  # fmt: skip
    if "pipeline_ticks_per_s_t2" in r:
        per_batch = f" ({r['pipeline_ms_per_batch_t2']:,.0f} ms per batch)"
        add("(e) the same with intra_op_threads = 2 (the model's runs side by side)",
            r["pipeline_ticks_per_s_t2"], per_batch)  # fmt: skip
    rows.append((
        "(e) one paced burst's batch, 500 keys: ms back to back / 100 ms apart (as the "
        "paced runs send; the caches go cold between bursts)",
        f"{r['burst_ms_gap_0']:.1f} / {r['burst_ms_gap_100']:.1f} ms", "", ""))  # fmt: skip
    for mode, name in (("at_least_once", "at-least-once"), ("exactly_once", "exactly-once")):
        f, runs = r[f"flat_{mode}"], r.get(f"flat_{mode}_runs", [])
        each = f" (median of {' / '.join(f'{v:,.0f}' for v in runs)})" if len(runs) > 1 else ""
        add(f"(f) end to end via Kafka, {name}, flat out ({f['keys']:,} keys){each}",
            f["forecast_ticks_per_s"])  # fmt: skip
    f = r["flat_at_least_once"]
    if "cores_bound_ticks_per_s" in f:
        rows.append((
            "(f) CPU per forecasting tick, at-least-once flat out: service / broker / "
            "bench producer+consumer",
            f"{f['cpu_us_per_tick_service']:.0f} / {f['cpu_us_per_tick_broker']:.0f} / "
            f"{f['cpu_us_per_tick_bench']:.0f} us", "", ""))  # fmt: skip
        add("(f) the bound those costs put on end to end: all cores / (service + broker)",
            f["cores_bound_ticks_per_s"])  # fmt: skip
    for mode, name in (("at_least_once", "at-least-once"), ("exactly_once", "exactly-once"),
                       ("at_least_once_t2", "at-least-once, 2 model threads")):  # fmt: skip
        if f"paced_{mode}" not in r:
            continue
        f = r[f"paced_{mode}"]
        rows.append((
            f"(f) {name} at {meta['rate']} ticks/s offered ({f['keys']:,} keys): "
            "latency p50 / p95 / p99",
            f"{f['latency_p50_ms']:.0f} / {f['latency_p95_ms']:.0f} / "
            f"{f['latency_p99_ms']:.0f} ms", "", ""))  # fmt: skip
        if "steady_p99_ms" in f:
            rows.append((
                f"(f) {name}, the same past the warm-up transient (ticks sent "
                f"{SETTLE_S:g} s after the first forecasting one): p50 / p95 / p99; "
                "per batch: pipeline / delivery",
                f"{f['steady_p50_ms']:.0f} / {f['steady_p95_ms']:.0f} / "
                f"{f['steady_p99_ms']:.0f} ms; {f['pipeline_ms_per_batch']:.0f} / "
                f"{f['delivery_ms_per_batch']:.0f} ms", "", ""))  # fmt: skip
    if "hop" in r:
        t, fc = r["hop"]["ticks"], r["hop"]["forecasts"]
        rows.append((
            f"(f) Kafka alone, the floor under that latency: one hop of {t['records']:,.0f} "
            f"records every {r['hop']['every_ms']:.0f} ms (bench/hop.py): ticks / forecasts, "
            "p50 / p99",
            f"{t['p50_ms']:.1f} / {t['p99_ms']:.1f}; {fc['p50_ms']:.1f} / {fc['p99_ms']:.1f} ms",
            "", ""))  # fmt: skip
    add("(g) Quix Streams 3 app: (h, c) in its state store, ORT per message", r["peer"])
    add("(g) streamcast, 2 processes in one consumer group, at-least-once, flat out",
        r["flat_two_processes"]["forecast_ticks_per_s"])  # fmt: skip
    for keys in (100_000, 1_000_000):
        m = r[f"rss_{keys}"]
        rows.append((f"(h) RSS per active key at {keys:,} keys",
                     f"{m['rss_bytes_per_key']:,.0f} B (store arrays "
                     f"{m['store_array_bytes_per_key']:,.0f} B)", "", ""))  # fmt: skip
    rs = r["restore"]
    rows.append((f"(i) restore from the changelog, {rs['restore_keys']:,.0f} keys",
                 f"{rs['restore_keys_per_s']:,.0f} keys/s", "", ""))  # fmt: skip
    return rows


def targets(r: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """Each target of issue 14: ``(target, met, measured)``."""
    alo = r["flat_at_least_once"]["forecast_ticks_per_s"]
    eos = r["flat_exactly_once"]["forecast_ticks_per_s"]
    pipe, ceiling = r["pipeline_ticks_per_s"], r["ceiling_10000_t1"]
    paced = r["paced_at_least_once"]
    p99, steady = paced["latency_p99_ms"], paced.get("steady_p99_ms", float("nan"))
    t2 = r.get("paced_at_least_once_t2")
    rss = r["rss_1000000"]["rss_bytes_per_key"]
    return [
        ("(e) >= 60 % of (d) 1 thread, 10,000 keys", pipe >= 0.6 * ceiling,
         f"{pipe / ceiling:.0%}"),
        ("end to end at-least-once >= 15,000 ticks/s", alo >= 15_000, f"{alo:,.0f}"),
        ("exactly-once >= 0.9 x at-least-once", eos >= 0.9 * alo, f"{eos / alo:.2f}"),
        ("p99 <= 50 ms at 5,000 ticks/s offered", p99 <= 50,
         f"{p99:.0f} ms ({steady:.0f} ms past the warm-up)" + (
            f"; 2 threads: {t2['latency_p99_ms']:.0f} ms "
            f"({t2.get('steady_p99_ms', float('nan')):.0f} ms)" if t2 else "")),
        ("(e) >= 2,000 x (a)", pipe >= 2000 * r["keras"], f"{pipe / r['keras']:,.0f} x" + (
            f" (2 threads: {r['pipeline_ticks_per_s_t2'] / r['keras']:,.0f} x)"
            if "pipeline_ticks_per_s_t2" in r else "")),
        ("(e) >= 15 x (c)", pipe >= 15 * r["ort_step"], f"{pipe / r['ort_step']:.1f} x"),
        ("end to end >= 30 x the peer (g)", alo >= 30 * r["peer"], f"{alo / r['peer']:.1f} x"),
        ("<= 1.2 KiB RSS per active key at 1,000,000 keys", rss <= 1.2 * 1024, f"{rss:,.0f} B"),
    ]  # fmt: skip


def markdown(rows: list[tuple[str, str, str, str]], r: dict[str, Any], head: str) -> str:
    lines = [head, "", "| row | figure (ticks/s unless named) | x (d) 1 thread 10k | x (e) |",
             "|---|---|---|---|"]  # fmt: skip
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines += ["", "| target | met | measured |", "|---|---|---|"]
    lines += [f"| {t} | {'yes' if ok else '**no**'} | {m} |" for t, ok, m in targets(r)]
    return "\n".join(lines) + "\n"


def local_rows(model: Path, work: Path) -> dict[str, Any]:
    """(a)-(e), (h): the rows without a broker, each script in its own process."""
    tf = tf_rows(work)
    micro = child("micro.py", "--model", model, work=work)
    r: dict[str, Any] = {
        "keras": tf["keras_predict_ticks_per_s"],
        "ort_window": tf["ort_window_ticks_per_s"],
        "ort_step": micro["ort_step_per_tick_ticks_per_s"],
        "pipeline_keys": 10_000,
        **micro,
    }
    for keys in (100_000, 1_000_000):
        r[f"rss_{keys}"] = child("micro.py", "--model", model, "--rss-keys", str(keys), work=work)
    return r


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap", help="use this broker (default: start one locally)")
    parser.add_argument("--work", type=Path, default=REPO / ".bench")
    parser.add_argument("--keys", type=int, default=1_000, help="keys of the flat-out runs")
    # 200,000 ticks of 1,000 keys: 48,000 warm up, 152,000 forecast (at 70,000 the run was
    # 22,000 forecasts in ~1.6 s, mostly the warm-up transient, and measured 13,769 ticks/s
    # where the steady state runs at 21,544)
    parser.add_argument("--ticks", type=int, default=200_000, help="ticks of the flat-out runs")
    parser.add_argument("--rate", type=float, default=5_000, help="offered ticks/s (paced)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="flat-out runs per guarantee (the median is kept)")  # fmt: skip
    parser.add_argument("--paced-keys", type=int, default=500)
    # 100,000 ticks of 500 keys: 152 forecasting intervals, the warm-up transient ~10 of them
    parser.add_argument("--paced-ticks", type=int, default=100_000)
    parser.add_argument("--peer-ticks", type=int, default=2_000)
    parser.add_argument("--batch", type=int, default=5_000, help="service batch_max_records")
    parser.add_argument("--wait-ms", type=int, default=20, help="service batch_max_wait_ms")
    parser.add_argument("--broker-only", action="store_true",
                        help="reuse the last run's rows without a broker (developing)")  # fmt: skip
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    began, load_before = time.time(), load()
    print(f"bench: {os.cpu_count()} cores; load {load_before}; model {describe()}", flush=True)
    args.model = work / "model" / "model.onnx"
    local = work / "local-rows.json"
    if args.broker_only and local.is_file():
        r: dict[str, Any] = json.loads(local.read_text())
    else:
        r = local_rows(args.model, work)
        local.write_text(json.dumps(r, indent=1))
    with broker(args.bootstrap) as bootstrap:
        r.update(asyncio.run(broker_rows(args, bootstrap, work)))
    meta = {"rate": f"{args.rate:,.0f}", "load_before": load_before, "load_after": load()}
    head = (
        f"streamcast bench, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(began))}: "
        f"{os.cpu_count()} cores, broker co-located, {broker_data_note(args.bootstrap)}; "
        f"load average {load_before} before, "
        f"{meta['load_after']} after (other jobs share the machine: ratios count more than "
        f"absolute figures); model: {describe()}; {time.time() - began:.0f} s"
    )
    rows = render(r, meta)
    width = max(len(a) for a, *_ in rows)
    print("\n" + head)
    print(f"{'row':<{width}}  {'figure':>34}  {'x (d)1t':>8}  {'x (e)':>8}")
    for a, b, c, d in rows:
        print(f"{a:<{width}}  {b:>34}  {c:>8}  {d:>8}")
    print()
    for t, ok, m in targets(r):
        print(f"{'met ' if ok else 'MISS'}  {t}: {m}")
    results = work / "results"
    results.mkdir(exist_ok=True)
    (results / "bench.json").write_text(json.dumps({"meta": meta, "head": head, **r}, indent=1))
    (results / "bench.md").write_text(markdown(rows, r, head))
    print(f"\nwritten: {results / 'bench.json'}, {results / 'bench.md'}")


if __name__ == "__main__":
    main()
