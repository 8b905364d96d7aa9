"""The live view of ``streamcast tail`` drawn for terminals of several sizes (pure: a
board filled with forecasts and alerts, rendered by rich into a recording console)."""

from __future__ import annotations

import doctest
import io
from dataclasses import replace
from types import ModuleType

import numpy as np
import pytest
from rich.console import Console

from streamcast.core.alerts import decode_alert
from streamcast.core.records import Forecast
from streamcast.service import logs
from streamcast.tools import tail_view
from streamcast.tools.tail_view import Board, Frame, render, sparkline
from tests.support.api import alert_records

ORIGIN = 1_764_547_200  # 2025-12-01T00:00:00Z
LONG = "melbourne-city/bourke-street-mall-north-side-pedestrian-counter-0042"


def _forecast(key: str, level: float, horizon: int = 24) -> Forecast:
    values = level + 100 * np.sin(np.arange(horizon) / 4)
    spread = np.linspace(10, 60, horizon)
    return Forecast(
        key, ORIGIN, 3600, values, "pedestrian", "20251201-1", levels=(0.8, 0.95),
        lower=np.stack([values - spread, values - 2 * spread]),
        upper=np.stack([values + spread, values + 2 * spread]),
    )  # fmt: skip


def _screen(board: Board, width: int, height: int) -> list[str]:
    console = Console(width=width, height=height, record=True, file=io.StringIO())
    frame = Frame(width, height, "forecasts", "alerts", "kafka:9092")
    console.print(render(board, frame))
    return console.export_text().splitlines()


@pytest.mark.parametrize(("width", "height"), [(80, 24), (120, 40), (160, 50), (60, 20)])
def test_rows_fit_and_align_at_every_width(width: int, height: int) -> None:
    board = Board()
    board.add_forecasts([_forecast(k, 400 + 50 * i) for i, k in enumerate(["s-1", LONG, "s-3"])])
    board.add_alerts(
        [decode_alert(v) for _, v in alert_records([(LONG, ORIGIN, "error_drift", 4.2, "warning")])]
    )
    lines = _screen(board, width, height)
    text = "\n".join(lines)
    assert all(len(line) <= width for line in lines), text
    assert lines[0].startswith("streamcast tail · 3 keys"), text
    header = next(line for line in lines if line.startswith("KEY"))
    rows = [line for line in lines if line.startswith(("s-", "melb"))][:3]
    long_row = next(row for row in rows if row.startswith("melb"))
    column = header.index("NEXT")
    assert {row[column : column + 3] for row in rows} == {"01:"}, text
    assert "…" in long_row[:column] and "!" in long_row[:column], text
    assert "ALERTS" in text and "error_drift" in text


def test_a_short_terminal_shows_what_fits_and_counts_the_rest() -> None:
    board = Board()
    board.add_forecasts([_forecast(f"key-{i:03d}", 100.0 + i) for i in range(200)])
    lines = _screen(board, 80, 20)
    assert len(lines) <= 20
    assert any("more keys" in line for line in lines)


def test_sparkline_keeps_its_width() -> None:
    assert len(sparkline(np.arange(48.0), 12)) == 12
    assert sparkline(np.ones(5), 5) == "▁" * 5


def test_unreadable_messages_are_counted_in_the_header() -> None:
    board = Board()
    board.add_forecasts([_forecast("s-1", 100.0)])
    board.unreadable = 3
    assert "3 unreadable" in _screen(board, 120, 20)[0]


def test_bands_come_before_more_steps_at_80_columns() -> None:
    """The demo's pedestrian forecasts, as a terminal of 80 columns showed them: the first
    step and the horizon's end keep their bands (they fit exactly), no extra steps."""
    values = np.array([71.56, 58.97, *np.linspace(40, 90, 21), 46.41])
    fc = Forecast(
        "Southern Cross Station", ORIGIN, 3600, values, "pedestrian", "20261201T224512Z-d0ebfff1",
        levels=(0.8, 0.95), lower=np.stack([values - 100, values - 237.66]),
        upper=np.stack([values + 100, values + 292.74]),
    )  # fmt: skip
    board = Board()
    board.add_forecasts([fc, replace(fc, key="Bourke Street Mall (North)")])
    lines = _screen(board, 80, 12)
    row = next(line for line in lines if line.startswith("Southern"))
    assert "[-166.1,364.3]" in row and "[-191.2,339.1]" in row, "\n".join(lines)
    assert all(len(line) <= 80 for line in lines)


@pytest.mark.parametrize("module", [tail_view, logs])
def test_docstring_examples_hold(module: ModuleType) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0
    assert result.failed == 0
