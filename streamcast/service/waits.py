"""How the service waits: retry backoff, bounded awaits, and awaits a stop interrupts.

Every wait of the service's lifecycle is bounded or interruptible: a broker that is
away (refusing connections) or hung (accepting them and never answering) must never
hold a SIGTERM for longer than the drain budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine

# These lines are the service's: log filters and dashboards key on the logger name.
log = logging.getLogger("streamcast.service")

#: first retry delay; doubles per attempt up to ``retry_max_backoff_s``
BASE_BACKOFF_S = 0.5


def backoff_delays(max_s: float, base_s: float = BASE_BACKOFF_S) -> Callable[[int], float]:
    """``attempt -> delay``: exponential from ``base_s``, capped at ``max_s``, with jitter."""

    def delay(attempt: int) -> float:
        raw = min(max_s, base_s * 2.0 ** min(attempt, 30))
        return float(raw * (0.75 + 0.5 * random.random()))

    return delay


async def sleep_unless_set(event: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, returning early once ``event`` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=seconds)


async def unless_set(
    aw: Coroutine[object, object, None], event: asyncio.Event, unwind_s: Callable[[], float]
) -> bool:
    """Await ``aw`` unless ``event`` is set first: True when it finished (its error is
    raised), False when the event won and ``aw`` was cancelled (it then gets
    ``unwind_s()`` seconds to clean up after itself; an error while unwinding is of no
    interest)."""
    work = asyncio.ensure_future(aw)
    stop = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not work.done():
            work.cancel()
    if work.done() and not work.cancelled():
        work.result()
        return True
    await asyncio.wait({work}, timeout=unwind_s())
    if work.done() and not work.cancelled():
        work.exception()  # retrieved, so asyncio does not log it as never retrieved
    return False


async def bounded(aw: Awaitable[None], seconds: float, what: str) -> None:
    """Await ``aw`` for at most ``seconds``; a timeout or a stray cancellation raised by
    a client's own close (aiokafka's, with the broker unreachable) is one warning line,
    not a traceback. A cancellation of this task itself still propagates."""
    try:
        await asyncio.wait_for(aw, timeout=seconds)
    except TimeoutError:
        log.warning(f"{what} timed out", extra={"timeout_s": seconds})
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.warning(f"{what} was interrupted by a client's own cancellation")


def first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first real exception inside (nested) task-group errors."""
    first = group.exceptions[0]
    return first_leaf(first) if isinstance(first, BaseExceptionGroup) else first
