"""Per-client rate limits: one token bucket per client, a bounded table of buckets.

A client is the token's subject when the request carries a valid token, otherwise its IP
address (behind a trusted proxy, the one ``X-Forwarded-For`` names). Each bucket holds up
to ``burst`` tokens and refills at ``rate_per_s``; a request takes one. When none is
left, :meth:`TokenBuckets.take` says how long until one is (the ``Retry-After``).

>>> now = [0.0]
>>> buckets = TokenBuckets(rate_per_s=1.0, burst=2, clock=lambda: now[0])
>>> [buckets.take("ip:1") for _ in range(3)]
[0.0, 0.0, 1.0]
>>> now[0] = 1.0
>>> buckets.take("ip:1")
0.0
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class TokenBuckets:
    """Token buckets by client (module docstring); ``rate_per_s=0`` lets everything by."""

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        max_clients: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate_per_s
        self.burst = float(burst)
        self.max_clients = max_clients
        self._clock = clock
        #: client -> [tokens, last refill]; least recently seen first
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()
        self.refused = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, client: str) -> float:
        """Take a token for ``client``: 0.0 when granted, else seconds until one is."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = [self.burst, now]
            if len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(client)
            bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return 0.0
        self.refused += 1
        return (1.0 - bucket[0]) / self.rate
