"""Structured logs: JSON lines with context fields; repeated client errors rate-limited."""

from __future__ import annotations

import io
import logging
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from streamcast.service.logs import (
    JsonFormatter,
    RepeatFilter,
    TransientClientNoise,
    resolve_format,
)
from tests.support.kafka import kafka_local
from tests.support.models import make_tiny_model

free_port = kafka_local.free_port


def _record(msg: str, name: str = "aiokafka", **extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": name, "msg": msg, "levelname": "ERROR"})
    record.__dict__.update(extra)
    return record


def test_json_line_carries_message_level_and_context() -> None:
    line = JsonFormatter().format(_record("batch produced", name="streamcast", forecasts=12))
    doc = orjson.loads(line)
    assert doc["msg"] == "batch produced"
    assert doc["level"] == "error"
    assert doc["logger"] == "streamcast"
    assert doc["forecasts"] == 12
    assert doc["ts"].endswith("+00:00")


def test_repeats_are_dropped_then_counted() -> None:
    now = [0.0]
    flt = RepeatFilter(interval_s=10, clock=lambda: now[0])
    assert flt.filter(_record("Unable connect to node %s"))
    passed = [flt.filter(_record("Unable connect to node %s")) for _ in range(50)]
    assert not any(passed)
    assert flt.filter(_record("another message"))
    now[0] = 11.0
    again = _record("Unable connect to node %s")
    assert flt.filter(again)
    assert again.__dict__["repeated"] == 50


def test_transient_client_errors_are_warnings_not_pages() -> None:
    """A fresh cluster makes aiokafka log 'GroupCoordinatorNotAvailableError' at ERROR on
    every start although it retries by itself."""
    noise = TransientClientNoise()
    fresh = logging.makeLogRecord(
        {
            "name": "aiokafka.consumer.group_coordinator",
            "msg": "Group Coordinator Request failed: [Error 15] GroupCoordinatorNotAvailableError",
            "levelno": logging.ERROR,
            "levelname": "ERROR",
        }
    )
    assert noise.filter(fresh) and fresh.levelname == "WARNING"
    real = logging.makeLogRecord(
        {"name": "aiokafka", "msg": "Unexpected error", "levelno": logging.ERROR}
    )
    ours = logging.makeLogRecord(
        {"name": "streamcast", "msg": "NotLeaderForPartitionError", "levelno": logging.ERROR}
    )
    assert noise.filter(real) and real.levelno == logging.ERROR
    assert noise.filter(ours) and ours.levelno == logging.ERROR


def _serve_logs(model: Path, *, terminal: bool, fmt: str | None = None) -> str:
    """What ``streamcast serve`` writes before it reaches a broker (none listens on the
    port): on a pseudo-terminal when ``terminal``, else into a pipe."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMCAST_")}
    env.update(
        STREAMCAST_MODEL_PATH=str(model),
        STREAMCAST_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",
        STREAMCAST_HTTP_PORT=str(free_port()),
        STREAMCAST_HTTP_HOST="127.0.0.1",
        COLUMNS="200",
    )
    if fmt is not None:
        env["STREAMCAST_LOG_FORMAT"] = fmt
    primary, secondary = pty.openpty() if terminal else os.pipe()
    process = subprocess.Popen(
        [sys.executable, "-m", "streamcast", "serve"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=secondary,
    )
    os.close(secondary)
    out = b""
    deadline = time.monotonic() + 60
    try:
        while b"model loaded" not in out and time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 1.0)
            if ready:
                out += os.read(primary, 65536)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        os.close(primary)
    return re.sub(r"\x1b\[[0-9;]*m", "", out.decode("utf-8", "replace"))  # no colours


def test_logs_are_text_on_a_terminal_and_json_in_a_pipe(tmp_path: Path) -> None:
    model = make_tiny_model(tmp_path / "m.onnx", window=4, horizon=3, levels=(0.9,), version="7")
    on_terminal = _serve_logs(model, terminal=True)
    line = next(line for line in on_terminal.splitlines() if "model loaded" in line)
    assert "model loaded: tiny, version 7, window 4, horizon 3, interval PT1H" in line
    assert "INFO" in line and not line.lstrip().startswith("{")
    piped = _serve_logs(model, terminal=False)
    doc = orjson.loads(next(line for line in piped.splitlines() if "model loaded" in line))
    assert doc["msg"] == "model loaded: tiny, version 7, window 4, horizon 3, interval PT1H"
    assert (doc["model"], doc["model_version"], doc["window"], doc["horizon"]) == (
        "tiny",
        "7",
        4,
        3,
    )
    assert doc["interval"] == "PT1H" and doc["levels"] == [0.9]
    # the setting wins over the terminal check
    forced = _serve_logs(model, terminal=False, fmt="text")
    assert "model loaded: tiny" in forced and not forced.lstrip().startswith("{")


def test_auto_format_follows_the_stream() -> None:
    primary, secondary = pty.openpty()
    try:
        with os.fdopen(secondary, "w", closefd=False) as tty:
            assert resolve_format("auto", tty) == "text"
    finally:
        os.close(primary)
        os.close(secondary)
    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("text", io.StringIO()) == "text"
    assert resolve_format("console", io.StringIO()) == "text", "the old name still works"
    assert resolve_format("json", sys.stderr) == "json"


def test_a_hot_swap_logs_the_model_that_serves_now(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from streamcast.config import Settings
    from streamcast.core.model import OnnxStepModel
    from streamcast.service.processor import build_processor

    first = make_tiny_model(tmp_path / "a.onnx", window=4, horizon=3, version="1")
    second = make_tiny_model(tmp_path / "b.onnx", window=4, horizon=3, version="2", seed=1)
    with caplog.at_level(logging.INFO, logger="streamcast"):
        processor = build_processor(Settings(_env_file=None), first)
        processor.swap_model(OnnxStepModel.load(second))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("model ")]
    assert lines == [
        "model loaded: tiny, version 1, window 4, horizon 3, interval PT1H",
        "model swapped in: tiny, version 2, window 4, horizon 3, interval PT1H",
    ]
