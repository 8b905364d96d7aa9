"""What ``streamcast tail`` shows: the latest forecast per key, the recent alerts and the
throughput, laid out to fit the terminal (:class:`Board` holds it, :func:`render` draws it).

One row per key, sorted by key, as many as the terminal's height allows (the rest are
counted in the footer); at 80 columns (a tmux capture of the demo)::

    streamcast tail · 4 keys · 0.0 forecasts/s · 0 alerts · forecasts + alerts ← 12…
    model model@20261201T224512Z-d0ebfff1 · 24 x PT1H · band 95% · times Australia/…
    KEY              ! NEXT (95% BAND)            HORIZON END (+24)
    Birrarung Marr     23:00 1019 [711.9,1398]    ▆▁▂▅█▇▂ 22:00 75 [-236.6,523.4]
    Bourke Street M…   23:00 475.8 [71.49,973.8]  ▁▁▁▄█▇▂ 22:00 297.1 [-113.1,887.2]

The columns: the alert mark, the first step's target time, value and band, further
steps (``+2``, ``+3``, ... as the width allows, after the bands), the horizon as a
sparkline, and the horizon's end with its band (its date from 120 columns on); the
widths are computed from the cells, so rich never has to cut a value.
Keys longer than their column end in an ellipsis; no line is wider than the terminal.
The number of step columns grows with the width. Bands are those of one level (the
widest the model publishes unless chosen). :func:`plain_forecast` is the one-line form for
pipes.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo

import numpy as np
import numpy.typing as npt
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from streamcast.core.alerts import Alert
from streamcast.core.records import Forecast, iso_duration

#: sparkline glyphs, lowest to highest
SPARKS = "▁▂▃▄▅▆▇█"
#: alerts kept for the view (the newest are shown)
ALERTS_KEPT = 50
#: keys kept (the view shows what fits; a bound keeps memory flat whatever arrives)
KEYS_KEPT = 100_000
#: seconds of arrivals the throughput is measured over
RATE_WINDOW_S = 10.0


def compact(value: float) -> str:
    """A number in at most 6 characters: 4 significant digits, k/M/G beyond 99,999.

    >>> compact(412.25), compact(0.01234), compact(123456.0), compact(-2.5e9), compact(7.0)
    ('412.2', '0.01234', '123k', '-2.5G', '7')
    """
    magnitude = abs(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e5, "k")):
        if magnitude >= limit:
            return f"{value / (limit if suffix != 'k' else 1e3):.3g}{suffix}"
    return f"{value:.4g}"


def sparkline(values: npt.NDArray[np.float64], width: int) -> str:
    """``values`` as ``width`` block glyphs (each the mean of its share of the steps),
    scaled between their own minimum and maximum.

    >>> sparkline(np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]), 8)
    '▁▂▃▄▅▆▇█'
    """
    if width <= 0 or len(values) == 0:
        return ""
    width = min(width, len(values))
    edges = np.linspace(0, len(values), width + 1).astype(np.int64)
    means = np.add.reduceat(values, edges[:-1]) / np.diff(edges)
    low, span = float(means.min()), float(np.ptp(means))
    levels = np.zeros(width, np.int64) if span == 0 else (means - low) / span * (len(SPARKS) - 1)
    return "".join(SPARKS[round(x)] for x in np.asarray(levels).tolist())


@dataclass
class Board:
    """The latest forecast of each key, the newest alerts, and when forecasts arrived."""

    forecasts: dict[str, Forecast] = field(default_factory=dict)
    alerts: deque[Alert] = field(default_factory=lambda: deque(maxlen=ALERTS_KEPT))
    alerted: dict[str, Alert] = field(default_factory=dict)
    received: int = 0
    alerts_received: int = 0
    #: messages of the forecasts topic that are not forecasts this reader understands
    unreadable: int = 0
    clock: Callable[[], float] = time.monotonic
    _arrivals: deque[tuple[float, int]] = field(default_factory=deque)

    def add_forecasts(self, forecasts: list[Forecast]) -> None:
        """Keep the newest forecast of each key (by origin)."""
        for fc in forecasts:
            old = self.forecasts.get(fc.key)
            if old is None and len(self.forecasts) >= KEYS_KEPT:
                continue
            if old is None or fc.origin_ts >= old.origin_ts:
                self.forecasts[fc.key] = fc
        self.received += len(forecasts)
        now = self.clock()
        self._arrivals.append((now, len(forecasts)))
        self._forget_before(now - RATE_WINDOW_S)

    def add_alerts(self, alerts: list[Alert]) -> None:
        """Keep the newest alerts and the last alert of each key."""
        for alert in alerts:
            self.alerts.append(alert)
            if len(self.alerted) < KEYS_KEPT or alert.key in self.alerted:
                self.alerted[alert.key] = alert
        self.alerts_received += len(alerts)

    def rate(self) -> float:
        """Forecasts per second over the last :data:`RATE_WINDOW_S`."""
        now = self.clock()
        self._forget_before(now - RATE_WINDOW_S)
        return sum(n for _, n in self._arrivals) / RATE_WINDOW_S

    def _forget_before(self, moment: float) -> None:
        while self._arrivals and self._arrivals[0][0] < moment:
            self._arrivals.popleft()


@dataclass(frozen=True)
class Frame:
    """What the view is drawn for: the terminal's size and the source it reads."""

    width: int
    height: int
    forecasts_topic: str
    alerts_topic: str | None
    bootstrap: str
    zone: tzinfo = UTC
    level: float | None = None


def render(board: Board, frame: Frame) -> RenderableType:
    """The whole view for ``frame`` (header, key rows, alerts)."""
    shown_alerts = min(len(board.alerts), max(0, (frame.height - 8) // 3))
    rows = max(1, frame.height - 5 - (shown_alerts + 1 if shown_alerts else 0))
    keys = sorted(board.forecasts)
    parts: list[RenderableType] = [*_header(board, frame, keys)]
    parts.append(_forecast_table(board, frame, keys[:rows]))
    if len(keys) > rows:
        parts.append(_line(f"… {len(keys) - rows} more keys (a taller terminal shows more)"))
    if shown_alerts:
        parts.append(_alert_table(list(board.alerts)[-shown_alerts:], frame))
    return Group(*parts)


def _line(text: str, style: str = "dim") -> Text:
    return Text(text, style=style, no_wrap=True, overflow="ellipsis")


def _header(board: Board, frame: Frame, keys: list[str]) -> list[Text]:
    alerts = board.alerts_received
    source = frame.forecasts_topic + (f" + {frame.alerts_topic}" if frame.alerts_topic else "")
    first = Text(no_wrap=True, overflow="ellipsis")
    first.append("streamcast tail", style="bold")
    first.append(f" · {len(keys)} keys · ")
    first.append(f"{board.rate():.1f} forecasts/s", style="cyan")
    first.append(f" · {alerts} alert{'s' if alerts != 1 else ''}", style="red" if alerts else "")
    if board.unreadable:
        first.append(f" · {board.unreadable} unreadable (--plain shows them)", style="yellow")
    first.append(f" · {source} ← {frame.bootstrap}", style="dim")
    if not keys:
        return [first, _line("waiting for forecasts …")]
    fc = board.forecasts[keys[-1]]
    level = _level(fc, frame.level)
    band = f"band {level:.0%}" if level is not None else "no bands (uncalibrated model)"
    now = datetime.now(frame.zone).strftime("%H:%M:%S")
    second = _line(
        f"model {fc.model}@{fc.model_version} · {fc.horizon} x {iso_duration(fc.interval_s)} · "
        f"{band} · times {_zone_name(frame.zone)} · updated {now}"
    )
    return [first, second]


def _zone_name(zone: tzinfo) -> str:
    return str(getattr(zone, "key", None) or zone.tzname(None) or zone)


def _level(fc: Forecast, wanted: float | None) -> float | None:
    """The band level shown: ``wanted`` if the forecast has it, else its widest."""
    if not fc.levels:
        return None
    if wanted is not None and wanted in fc.levels:
        return wanted
    return max(fc.levels)


@dataclass(frozen=True)
class _Layout:
    """Column widths for one terminal width: the key column, the extra step columns and
    the sparkline share what the first step and the horizon's end leave."""

    key: int
    steps: int
    spark: int
    #: False when even the narrowest layout is wider than the terminal
    fits: bool


#: the narrowest key column and sparkline, and the widest key column
KEY_MIN, KEY_MAX, SPARK_MIN = 12, 48, len("HORIZON")


def _layout(
    width: int, keys: list[str], cells: list[list[str]], headers: tuple[str, str]
) -> _Layout:
    """Widths that fit ``width``: cells are each row's ``[first, step 2, ..., end]``, the
    headers those of the first and the end column (a column is as wide as its header)."""
    horizon = max((len(row) for row in cells), default=2)
    longest = max((len(k) for k in keys), default=KEY_MIN)
    key = min(longest, max(KEY_MIN, width // 5))
    first = max([len(row[0]) for row in cells] + [len(headers[0])])
    last = max([len(row[-1]) for row in cells] + [len(headers[1])])
    step = max((len(c) for row in cells for c in row[1:-1]), default=0)
    # one space after every column but the last: key, the alert mark, first, spark, end
    left = width - (key + 1) - 2 - (first + 1) - last - 1
    steps = 0
    if step:
        steps = max(0, min(horizon - 2, (left - SPARK_MIN) // (step + 1)))
    fits = left >= SPARK_MIN
    left -= steps * (step + 1)
    spark = max(SPARK_MIN, min(horizon, left))
    key = min(longest, KEY_MAX, key + max(0, left - spark))
    return _Layout(key=key, steps=steps, spark=spark, fits=fits)


def _cells(fc: Forecast, frame: Frame, dated: bool, bands: bool) -> list[str]:
    """``[first step with its band, steps 2..H-1, the horizon's end with its band]``."""
    times = _clock_times(fc.target_ts(), frame.zone, fc.interval_s)
    lo, hi = _band(fc, frame.level) if bands else (None, None)
    values = [compact(v) for v in fc.values.tolist()]
    end = fc.horizon - 1
    first = f"{times[0]} {values[0]} {_band_text(lo, hi, 0)}".rstrip()
    steps = [f"{times[i]} {values[i]}" for i in range(1, end)]
    when = _stamp(int(fc.target_ts()[end]), frame.zone) if dated else times[end]
    return [first, *steps, f"{when} {values[end]} {_band_text(lo, hi, end)}".rstrip()]


def _forecast_table(board: Board, frame: Frame, keys: list[str]) -> Table:
    forecasts = [board.forecasts[k] for k in keys]
    horizon = max((fc.horizon for fc in forecasts), default=1)
    dated = frame.width >= 120
    level = _level(forecasts[0], frame.level) if forecasts else None
    for bands in (True, False):  # a narrow terminal: the values without their bands
        cells = [_cells(fc, frame, dated, bands) for fc in forecasts]
        first = f"NEXT ({level:.0%} BAND)" if bands and level is not None else "NEXT"
        layout = _layout(frame.width, keys, cells, (first, f"END (+{horizon})"))
        if layout.fits:
            break
    table = Table(box=None, pad_edge=False, padding=(0, 1, 0, 0), show_edge=False)
    table.add_column("KEY", width=layout.key, no_wrap=True, overflow="ellipsis")
    table.add_column("!", width=1, min_width=1, no_wrap=True, style="red")
    table.add_column(first, no_wrap=True, style="cyan")
    for step in range(2, layout.steps + 2):
        table.add_column(f"+{step}", no_wrap=True)
    table.add_column("HORIZON", width=layout.spark, no_wrap=True, style="green")
    table.add_column(f"END (+{horizon})", no_wrap=True, overflow="ellipsis")
    for key, fc, row in zip(keys, forecasts, cells, strict=True):
        steps = [row[i] if i < len(row) - 1 else "" for i in range(1, layout.steps + 1)]
        mark = "!" if key in board.alerted else ""
        table.add_row(key, mark, row[0], *steps, sparkline(fc.values, layout.spark), row[-1])
    return table


def _band(
    fc: Forecast, wanted: float | None
) -> tuple[npt.NDArray[np.float64] | None, npt.NDArray[np.float64] | None]:
    level = _level(fc, wanted)
    if level is None or fc.lower is None or fc.upper is None:
        return None, None
    row = fc.levels.index(level)
    return fc.lower[row], fc.upper[row]


def _band_text(
    lo: npt.NDArray[np.float64] | None, hi: npt.NDArray[np.float64] | None, step: int
) -> str:
    """``[lower,upper]`` of one step ('' without a band)."""
    if lo is None or hi is None:
        return ""
    return f"[{compact(lo[step])},{compact(hi[step])}]"


def _clock_times(ts_s: npt.NDArray[np.int64], zone: tzinfo, interval_s: int) -> list[str]:
    """Target times as the clock shows them (with the date for daily or longer steps)."""
    fmt = "%H:%M" if interval_s < 86_400 else "%m-%d"
    return [datetime.fromtimestamp(int(t), zone).strftime(fmt) for t in ts_s.tolist()]


def _stamp(ts_s: int, zone: tzinfo) -> str:
    return datetime.fromtimestamp(ts_s, zone).strftime("%m-%d %H:%M")


def _alert_table(alerts: list[Alert], frame: Frame) -> Table:
    table = Table(box=None, pad_edge=False, padding=(0, 1), show_edge=False, title_justify="left")
    table.title = Text("ALERTS (newest last)", style="bold red", no_wrap=True)
    table.add_column("TIME", no_wrap=True)
    table.add_column("KEY", max_width=max(8, frame.width // 5), no_wrap=True, overflow="ellipsis")
    table.add_column("KIND", no_wrap=True, style="red")
    table.add_column("SEVERITY", no_wrap=True)
    table.add_column("STATISTIC", no_wrap=True, overflow="ellipsis")
    for alert in alerts:
        table.add_row(
            _stamp(alert.ts_s, frame.zone),
            alert.key,
            alert.kind,
            alert.severity,
            f"{compact(alert.statistic)} vs {compact(alert.threshold)} {alert.direction}".strip(),
        )
    return table


def plain_forecast(fc: Forecast, zone: tzinfo = UTC, level: float | None = None) -> str:
    """One forecast as one plain line (no colour): key, origin, the first three steps with
    their target times, the horizon's end, model; the band of one level in brackets.

    >>> from streamcast.core.records import Forecast
    >>> fc = Forecast("k", 0, 3600, np.array([1.0, 2.0, 3.0, 4.0]), "m", "1")
    >>> plain_forecast(fc)
    'k origin=1970-01-01T00:00:00Z 01:00=1 02:00=2 03:00=3 04:00=4 (+4) model=m@1'
    """
    times = _clock_times(fc.target_ts(), zone, fc.interval_s)
    lo, hi = _band(fc, level)

    def step(i: int) -> str:
        return f"{times[i]}={compact(fc.values[i])}{_band_text(lo, hi, i)}"

    shown = [step(i) for i in range(min(3, fc.horizon))]
    if fc.horizon > 3:
        shown += ["…" if fc.horizon > 4 else "", step(fc.horizon - 1) + f" (+{fc.horizon})"]
    origin = datetime.fromtimestamp(fc.origin_ts, zone).isoformat().replace("+00:00", "Z")
    level_shown = _level(fc, level)
    band = f" band={level_shown:.0%}" if level_shown is not None else ""
    body = " ".join(s for s in shown if s)
    return f"{fc.key} origin={origin} {body} model={fc.model}@{fc.model_version}{band}"


def plain_alert(alert: Alert) -> str:
    """One alert as one plain line."""
    return (
        f"ALERT {alert.key} {alert.ts} {alert.kind} severity={alert.severity} "
        f"statistic={compact(alert.statistic)} threshold={compact(alert.threshold)} "
        f"direction={alert.direction} model={alert.model}@{alert.model_version}"
    )
