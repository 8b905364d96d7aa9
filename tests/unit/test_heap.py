"""The C heap's thresholds in the service process (:mod:`streamcast.service.heap`)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from streamcast.config import Settings
from streamcast.service import heap

#: a micro-batch's pattern: three 14 MiB buffers alive together (a 10,000-key batch's
#: records and texts), all freed, then the next batch; page faults of batches 2-6
BATCHES = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    from streamcast.service.heap import keep_freed_heap
    keep_mb = int(sys.argv[1])
    if keep_mb:
        assert keep_freed_heap(keep_mb)
    faults = []
    for batch in range(6):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        held = [np.ones(14 << 20, dtype=np.uint8) for _ in range(3)]
        del held
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(sum(faults[1:]))
    """
)


def _faults(keep_mb: int) -> int:
    out = subprocess.run(
        [sys.executable, "-c", BATCHES, str(keep_mb)], capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    return int(out.stdout)


def test_kept_pages_are_not_faulted_in_again_batch_after_batch() -> None:
    """glibc's own thresholds hand a batch's 42 MiB back and fault them in again each
    time; with 64 MiB kept, the next batches reuse them. (Fewer faults than pages: numpy
    asks for transparent huge pages for large arrays, a fault maps 2 MiB where it can.)"""
    own, kept = _faults(0), _faults(64)
    assert own > 500, own
    assert kept * 20 < own, (kept, own)


def _recording(monkeypatch: pytest.MonkeyPatch, returns: int) -> list[tuple[int, int]]:
    """A fake ``mallopt`` that returns ``returns``; the calls it gets."""
    calls: list[tuple[int, int]] = []

    def mallopt(param: int, value: int) -> int:
        calls.append((param, value))
        return returns

    monkeypatch.setattr(heap, "_mallopt", lambda: mallopt)
    return calls


def test_both_thresholds_are_set_the_mmap_one_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _recording(monkeypatch, returns=1)
    assert heap.keep_freed_heap(64)
    assert calls == [(heap.M_MMAP_THRESHOLD, 32 << 20), (heap.M_TRIM_THRESHOLD, 64 << 20)]
    calls.clear()
    assert heap.keep_freed_heap(8)
    assert calls == [(heap.M_MMAP_THRESHOLD, 8 << 20), (heap.M_TRIM_THRESHOLD, 8 << 20)]


def test_zero_a_refusal_or_no_mallopt_sets_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _recording(monkeypatch, returns=0)
    assert not heap.keep_freed_heap(0)
    assert calls == []
    assert not heap.keep_freed_heap(64)  # mallopt returned 0: refused
    monkeypatch.setattr(heap, "_mallopt", lambda: None)
    assert not heap.keep_freed_heap(64)
    calls = _recording(monkeypatch, returns=1)
    for wrong in (-1, heap.KEEP_MB_MAX + 1):  # 2048 MiB would wrap mallopt's C int to 0
        with pytest.raises(ValueError, match="keep_mb"):
            heap.keep_freed_heap(wrong)
    assert calls == []


def test_the_setting_defaults_to_64_and_is_bounded() -> None:
    assert Settings(_env_file=None).heap_keep_mb == 64
    assert Settings(_env_file=None, heap_keep_mb=0).heap_keep_mb == 0
    with pytest.raises(ValueError, match="heap_keep_mb"):
        Settings(_env_file=None, heap_keep_mb=-1)
    with pytest.raises(ValueError, match="heap_keep_mb"):
        Settings(_env_file=None, heap_keep_mb=2048)
    assert Settings(_env_file=None, heap_keep_mb=2047).heap_keep_mb == heap.KEEP_MB_MAX
