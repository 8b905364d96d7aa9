"""The C heap's thresholds in the service process: a micro-batch's freed pages stay for
the next one.

A micro-batch allocates tens of MB for a moment: decoded ticks, the model's inputs, the
forecasts' text, the changelog records (a 10,000-key batch of the ``make bench`` model,
LSTM 64, window 48, horizon 24: 14.5 MB of records alone). glibc hands the freed pages
back to the operating system once more than ``M_TRIM_THRESHOLD`` is free at the top of
the heap, and its dynamic threshold (twice the largest block it has seen freed, ~30 MB)
is below what one batch frees. So every batch faulted its pages in afresh, zeroed by the
kernel: 6,700 page faults and 10-12 ms of system time per 10,000-key batch (3,500 per
5,000-key batch), 3-4 % of the batch (``bench/micro.py``).

:func:`keep_freed_heap` sets both thresholds once: ``M_TRIM_THRESHOLD`` to what the
service may keep free (``STREAMCAST_HEAP_KEEP_MB``, default 64) and
``M_MMAP_THRESHOLD`` to glibc's largest, 32 MiB (setting one fixes the other, and a
block above the mmap threshold is mapped and unmapped each time whatever the trim
threshold). Measured with that model: 6,700 -> 65-135 faults and 11 -> 0.5 ms of system
time per 10,000-key batch. The cost is resident memory: up to that much stays mapped
between batches (the batch's high-water, which the service reached anyway). A restore
still hands every free page back (:func:`streamcast.kafka.changelog.release_free_memory`
trims whatever the thresholds).
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from typing import cast

#: ``mallopt`` parameters (glibc's malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: glibc's largest mmap threshold on 64-bit systems (``DEFAULT_MMAP_THRESHOLD_MAX``)
MMAP_THRESHOLD_MAX = 32 << 20
#: the most ``keep_mb`` can be: ``mallopt`` takes a C int (2 GiB would wrap to 0, which
#: trims everything)
KEEP_MB_MAX = 2047


@functools.cache
def _mallopt() -> Callable[[int, int], int] | None:
    """glibc's ``mallopt``, or None where the C library has none (musl, macOS, Windows)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return cast("Callable[[int, int], int]", mallopt)


def keep_freed_heap(keep_mb: int) -> bool:
    """Let the C heap keep up to ``keep_mb`` MiB of freed pages (module docstring);
    ``keep_mb = 0`` leaves glibc's own thresholds. False when nothing was set (0, or a C
    library without ``mallopt``, or one that refused)."""
    if not 0 <= keep_mb <= KEEP_MB_MAX:
        raise ValueError(f"keep_mb must be 0 to {KEEP_MB_MAX}, got {keep_mb}")
    mallopt = _mallopt()
    if keep_mb == 0 or mallopt is None:
        return False
    keep = keep_mb << 20
    # mallopt returns 1 on success; the mmap threshold first, then the trim threshold
    # (glibc caps the mmap threshold, not the trim one)
    mapped = mallopt(M_MMAP_THRESHOLD, min(keep, MMAP_THRESHOLD_MAX))
    trimmed = mallopt(M_TRIM_THRESHOLD, keep)
    return mapped == 1 and trimmed == 1
