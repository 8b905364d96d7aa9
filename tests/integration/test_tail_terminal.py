"""``streamcast tail`` in a real terminal: a tmux pane at 80 and 160 columns follows a running
service's forecasts topic and the alerts topic of a real broker; the captured screen is
checked for the header, the width (no wrapped line), the key rows' alignment and the alert.
Piped, the same command prints one plain line per forecast."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.support.api import alert_records
from tests.support.kafka import REPO, create_topics, unique_topic
from tests.support.models import make_tiny_model
from tests.support.service import (
    Message,
    ServiceProcess,
    consume,
    produce,
    recent_hour,
    run_cli,
    service_env,
    tick,
)

pytestmark = pytest.mark.kafka

LONG_KEY = "melbourne-city/bourke-street-mall-north-side-pedestrian-counter-0042"
KEYS = ("sensor-a", "sensor-b", LONG_KEY)
HOURS = 12
HORIZON = 6


@dataclass(frozen=True)
class Running:
    """A service whose forecasts (and one alert) are on the broker."""

    env: dict[str, str]
    forecasts: int


@pytest.fixture(scope="module")
def running(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    import asyncio

    workdir = tmp_path_factory.mktemp("tail")
    prefix = unique_topic("tail")
    model = make_tiny_model(
        workdir / "model.onnx", window=4, horizon=HORIZON, levels=(0.8, 0.95), name="tiny"
    )
    env = service_env(bootstrap, model, prefix)
    asyncio.run(create_topics(bootstrap, [f"{prefix}-ticks"], partitions=2))
    service = ServiceProcess(env, workdir / "serve.log")
    service.start()
    try:
        start = recent_hour()
        rng = np.random.default_rng(3)
        ticks: list[Message] = [
            (key.encode(), tick(key, start + h * 3600 + 60, float(100 + 10 * i + rng.normal())))
            for h in range(HOURS)
            for i, key in enumerate(KEYS)
        ]
        asyncio.run(produce(bootstrap, f"{prefix}-ticks", ticks))
        # one forecast per closed interval once warmed up; then wait for any stragglers
        expected = len(KEYS) * (HOURS - 6)
        records = asyncio.run(consume(bootstrap, f"{prefix}-forecasts", until=expected, idle_s=3.0))
        assert len(records) >= expected
        alert = alert_records([(LONG_KEY, start + 9 * 3600, "error_drift", 4.5, "warning")])
        asyncio.run(produce(bootstrap, f"{prefix}-alerts", alert))
        yield Running(env={**env, "STREAMCAST_LOG_FORMAT": "text"}, forecasts=len(records))
    finally:
        service.stop()


class Pane:
    """A detached tmux session on its own server socket (no other tmux is touched)."""

    def __init__(self, width: int, height: int, command: str, env: dict[str, str]) -> None:
        self.socket = f"streamcast-test-{uuid.uuid4().hex[:8]}"
        self.width = width
        clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAMCAST_")}
        self._env = {**clean, **env, "LANG": "C.UTF-8", "TERM": "xterm-256color"}
        self._tmux("new-session", "-d", "-s", "tail", "-x", str(width), "-y", str(height), command)

    def _tmux(self, *argv: str) -> str:
        done = subprocess.run(
            ["tmux", "-u", "-L", self.socket, "-f", "/dev/null", *argv],
            env=self._env,
            capture_output=True,
            text=True,
            check=True,
            timeout=20,
        )
        return done.stdout

    def keys(self, *keys: str) -> None:
        """Type ``keys`` into the pane (tmux key names, e.g. ``C-c``)."""
        self._tmux("send-keys", "-t", "tail", *keys)

    def screen(self) -> list[str]:
        """The visible screen, wrapped lines joined (so a too-long line shows as one)."""
        return [line.rstrip() for line in self._tmux("capture-pane", "-p", "-J").splitlines()]

    def wait_for(self, *needles: str, timeout_s: float = 60.0) -> list[str]:
        deadline = time.monotonic() + timeout_s
        while True:
            lines = self.screen()
            if all(any(n in line for line in lines) for n in needles):
                return lines
            if time.monotonic() > deadline:
                raise AssertionError(f"{needles} not on screen:\n" + "\n".join(lines))
            time.sleep(0.3)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, check=False)


def _tail_command() -> str:
    """The live view; a failure stays on the screen (the pane outlives the command)."""
    argv = [sys.executable, "-m", "streamcast", "tail", "--from-beginning"]
    return f'cd {shlex.quote(str(REPO))} && {shlex.join(argv)}; echo "exit=$?"; sleep 60'


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
@pytest.mark.parametrize("width", [80, 160])
def test_live_view_fits_the_terminal(running: Running, width: int) -> None:
    pane = Pane(width, 30, _tail_command(), running.env)
    try:
        lines = pane.wait_for("sensor-a", "sensor-b", "melbourne", "error_drift")
        pane.keys("C-c")  # Ctrl-C ends the view with the shell's status for SIGINT
        ended = pane.wait_for("exit=")
    finally:
        pane.close()
    assert "exit=130" in ended and "Traceback" not in "\n".join(ended), "\n".join(ended)
    shown = "\n".join(lines)
    assert lines[0].startswith("streamcast tail"), shown
    assert "3 keys" in lines[0] and "1 alert" in lines[0], shown
    assert "model tiny@1" in lines[1] and "band 95%" in lines[1], shown
    assert all(len(line) <= width for line in lines), f"a line wraps at {width}:\n{shown}"
    header = next(line for line in lines if line.startswith("KEY"))
    rows = [line for line in lines if line.startswith(("sensor-", "melbourne"))]
    assert len(rows) == len(KEYS), shown
    # every row's columns start where the header's do: the long key is cut, not wrapped
    starts = [header.index("NEXT"), header.index("HORIZON")]
    clock = re.compile(r"\d\d:\d\d")
    for row in rows:
        assert clock.match(row, starts[0]), f"NEXT column misaligned:\n{shown}"
        assert row[starts[1]] in "▁▂▃▄▅▆▇█", f"HORIZON column misaligned:\n{shown}"
    long_row = next(row for row in rows if row.startswith("melbourne"))
    assert "…" in long_row[: starts[0]] and LONG_KEY not in long_row
    assert "!" in long_row[: starts[0]], "the key with an alert is marked"
    # values with their target times and a band, the horizon's end
    assert re.search(r"\d\d:\d\d [\d.]+ \[[\d.]+,[\d.]+\]", rows[0]), shown
    assert f"END (+{HORIZON})" in header
    steps = sum(1 for n in range(2, HORIZON) if f"+{n} " in header)
    assert steps >= (3 if width == 160 else 0), "wider terminals show more steps"
    alerts = shown[shown.index("ALERTS") :]
    assert "error_drift" in alerts and "warning" in alerts


def test_piped_tail_prints_one_plain_line_per_forecast(running: Running, tmp_path: Path) -> None:
    result = run_cli(
        "tail", "--from-beginning", "--idle-timeout", "3", cwd=tmp_path, env=running.env
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == running.forecasts
    assert "\x1b[" not in result.stdout, "no colour codes in a pipe"
    line = next(line for line in lines if line.startswith("sensor-a "))
    assert re.fullmatch(
        r"sensor-a origin=\S+Z (\d\d:\d\d=-?[\d.]+\[-?[\d.]+,-?[\d.]+\] ){3}… "
        rf"\d\d:\d\d=-?[\d.]+\[-?[\d.]+,-?[\d.]+\] \(\+{HORIZON}\) model=tiny@1 band=95%",
        line,
    ), line
