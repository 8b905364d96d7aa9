"""Recent alerts, bounded twice: the last ``per_key`` of each key and the last ``total``.

An alert is kept while it is among the last ``per_key`` alerts of its key *and* among the
last ``total`` overall, so memory is bounded by ``total`` alerts whatever the keys do.
Both orders are the order of arrival (the alerts topic's order per key).

>>> log = AlertLog(per_key=2, total=3)
>>> for i in range(4):
...     log.add(_example("a" if i < 3 else "b", i))
>>> [a.ts_s for a in log.recent()], [a.ts_s for a in log.recent(key="a")]
([3, 2, 1], [2, 1])
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from streamcast.core.alerts import Alert


@dataclass(frozen=True, slots=True)
class _Kept:
    seq: int
    alert: Alert


class AlertLog:
    """The recent alerts (module docstring). Not thread-safe: one event loop uses it."""

    def __init__(self, per_key: int = 50, total: int = 10_000) -> None:
        if per_key < 1 or total < 1:
            raise ValueError(f"per_key and total must be >= 1, got {per_key} and {total}")
        self.per_key = per_key
        self.total = total
        self._all: deque[_Kept] = deque()
        self._by_key: dict[str, deque[_Kept]] = {}
        self._seq = 0

    def __len__(self) -> int:
        """Alerts kept (both bounds applied)."""
        return sum(len(d) for d in self._by_key.values())

    def add(self, alert: Alert) -> None:
        """Keep ``alert`` as the newest; drop what falls out of either bound."""
        kept = _Kept(self._seq, alert)
        self._seq += 1
        if len(self._all) == self.total:
            oldest = self._all.popleft()
            mine = self._by_key.get(oldest.alert.key)
            if mine and mine[0] is oldest:
                mine.popleft()
                if not mine:
                    del self._by_key[oldest.alert.key]
        self._all.append(kept)
        self._by_key.setdefault(alert.key, deque(maxlen=self.per_key)).append(kept)

    def recent(
        self, *, key: str | None = None, since_s: float | None = None, limit: int = 100
    ) -> list[Alert]:
        """Up to ``limit`` kept alerts, newest first, of ``key`` (or every key), with an
        event time at or after ``since_s``."""
        if key is not None:
            source = reversed(self._by_key.get(key, ()))
        else:
            source = (k for k in reversed(self._all) if self._is_kept(k))
        out: list[Alert] = []
        for kept in source:
            if len(out) >= limit:
                break
            if since_s is None or kept.alert.ts_s >= since_s:
                out.append(kept.alert)
        return out

    def _is_kept(self, kept: _Kept) -> bool:
        mine = self._by_key.get(kept.alert.key)
        return bool(mine) and mine[0].seq <= kept.seq  # type: ignore[index]


def _example(key: str, ts: int) -> Alert:
    """An alert for doctests."""
    return Alert(key, "", ts, "error_drift", 4.0, 3.0, "up", "warning", "m", "1")
