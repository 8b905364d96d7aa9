"""The benchmark's in-process rows still run against the current model format.

`make bench` is not part of the suite (it takes minutes and its figures are not tests),
so a change to the step's inputs once broke it unnoticed: ``bench/micro.py`` fed a
1-wide ``x`` to a model whose step takes the level and the seasonal-lag anchors too.
This runs rows (c), (d) and (e) on a tiny model with lags, calendar features and bands,
for a fraction of a second each; the figures are not checked, only that each row runs
and measures something.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support.kafka import REPO, load_script
from tests.support.models import make_tiny_model

micro = load_script(REPO / "bench" / "micro.py", "bench_micro")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(
        tmp_path_factory.mktemp("bench") / "m.onnx", window=6, horizon=4,
        calendar=("time_of_day", "day_of_week"), lags=(2, 4), levels=(0.8, 0.95),
    )  # fmt: skip


def test_the_ort_rows_run_on_the_models_step_width(model: Path) -> None:
    assert micro.per_tick(model, 0.05) > 0
    assert micro.ceiling(model, 32, 1, 2) > 0
    assert micro.ceiling(model, 300, 2, 2, side_by_side=True) > 0


def test_the_pipeline_row_runs_bytes_to_bytes(model: Path) -> None:
    rows = micro.pipeline_rate(model, 40, 2)
    assert rows["pipeline_ticks_per_s"] > 0
    assert micro.pipeline_rate(model, 300, 2, threads=2)["pipeline_ticks_per_s"] > 0
    assert rows["forecast_bytes"] > 100  # a whole forecast record per key, bands included
    paced = micro.pipeline_rate(model, 40, 2, gap_s=0.01)  # a paced burst, caches cold
    assert paced["pipeline_ms_per_batch"] > 0


def test_the_latency_trace_has_one_row_per_burst_in_the_order_sent(tmp_path: Path) -> None:
    # e2e.py imports its sibling ``common`` as the scripts do
    sys.path.insert(0, str(REPO / "bench"))
    try:
        e2e = load_script(REPO / "bench" / "e2e.py", "bench_e2e")
    finally:
        sys.path.remove(str(REPO / "bench"))
    sent_at = {("a", 0): 10.0, ("b", 0): 10.0, ("a", 60): 10.1, ("b", 60): 10.1}
    arrived = {("a", 0): 10.05, ("b", 0): 10.07, ("a", 60): 10.3, ("b", 60): 10.2}
    published = {key: at - 0.01 for key, at in arrived.items()}
    trace = tmp_path / "trace.csv"
    figures = e2e._latencies(sent_at, arrived, published, trace)
    header, *rows = trace.read_text().splitlines()
    assert header.startswith("sent_s,forecasts,p50_ms,max_ms")
    assert [row.split(",")[:4] for row in rows] == [
        ["0.000", "2", "60.0", "70.0"],
        ["0.100", "2", "150.0", "200.0"],
    ]
    assert figures["latency_p50_ms"] == pytest.approx(85.0)  # of 50, 70, 100, 200


def test_the_swap_rows_peak_memory_sees_a_transient_allocation() -> None:
    sys.path.insert(0, str(REPO / "bench"))
    try:
        swap = load_script(REPO / "bench" / "swap.py", "bench_swap")
    finally:
        sys.path.remove(str(REPO / "bench"))
    with swap.peak_rss_above() as peak_mib:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        time.sleep(0.05)  # a few of the sampler's periods
        del block
    assert 48 < peak_mib() < 200


def test_the_bench_broker_keeps_its_data_in_ram_when_it_can(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    try:
        common = load_script(REPO / "bench" / "common.py", "bench_common")
    finally:
        sys.path.remove(str(REPO / "bench"))
    monkeypatch.delenv("BENCH_BROKER_DIR", raising=False)
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(common, "SHM", shm)
    monkeypatch.setattr(common, "SHM_NEEDS_BYTES", 1)
    assert common.broker_data_parent() == shm
    monkeypatch.setattr(common, "SHM_NEEDS_BYTES", 1 << 62)  # no tmpfs has that room
    assert common.broker_data_parent() is None
    monkeypatch.setattr(common, "SHM", tmp_path / "absent")
    monkeypatch.setattr(common, "SHM_NEEDS_BYTES", 1)
    assert common.broker_data_parent() is None
    monkeypatch.setenv("BENCH_BROKER_DIR", str(tmp_path))  # the operator's choice wins
    assert common.broker_data_parent() == tmp_path
    assert common.broker_data_note(None).endswith(f"({tmp_path.resolve()})")
    assert common.broker_data_note("h:9092") == "the given broker h:9092"
    assert common.filesystem(Path("/proc/self")) == "proc"
