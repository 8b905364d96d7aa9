"""How the service waits: one retry helper, bounded awaits, and awaits a stop interrupts.

Every wait of the service's lifecycle is bounded or interruptible: a broker that is
away (refusing connections) or hung (accepting them and never answering) must never
hold a SIGTERM for longer than the drain budget. :class:`Retry` is the one way the
service retries: transient errors (``retriable``) are retried with exponential backoff,
counted and logged; anything else propagates at once; a stop request ends the wait and
the retrying.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import TypeVar

from streamcast.errors import TransientError

# These lines are the service's: log filters and dashboards key on the logger name.
log = logging.getLogger("streamcast.service")

#: first retry delay; doubles per attempt up to ``retry_max_backoff_s``
BASE_BACKOFF_S = 0.5

T = TypeVar("T")


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


class Retry:
    """Call an operation until it succeeds, backing off after each transient failure.

    ``on_error(op)`` counts each failure (a metric); ``stopping`` is the service's stop
    flag: a stop request ends the backoff wait at once, and the last error is raised
    instead of trying again (what was not delivered is re-read after a restart).

    >>> async def demo() -> str:
    ...     attempts = []
    ...     async def flaky() -> str:
    ...         attempts.append(1)
    ...         if len(attempts) < 3:
    ...             raise TransientError("broker away")
    ...         return "done"
    ...     retry = Retry(lambda attempt: 0.0, asyncio.Event(), lambda op: None)
    ...     return f"{await retry.call('fetch', flaky)} after {len(attempts)} attempts"
    >>> asyncio.run(demo())
    'done after 3 attempts'
    """

    def __init__(
        self,
        delay: Callable[[int], float],
        stopping: asyncio.Event,
        on_error: Callable[[str], None],
    ) -> None:
        self._delay = delay
        self._stopping = stopping
        self._on_error = on_error

    async def call(self, op: str, attempt_once: Callable[[], Awaitable[T]]) -> T:
        """``await attempt_once()`` until it returns; transient errors are retried."""
        attempt = 0
        while True:
            try:
                return await attempt_once()
            except TransientError as exc:
                self._on_error(op)
                if self._stopping.is_set():
                    raise
                delay = self._delay(attempt)
                log.warning(
                    f"{op} failed; retrying",
                    extra={
                        "attempt": attempt + 1,
                        "retry_in_s": round(delay, 2),
                        "error": str(exc),
                    },
                )
                attempt += 1
                await sleep_unless_set(self._stopping, delay)
                if self._stopping.is_set():
                    raise
