"""Fan-out of new forecasts and alerts to the event streams (server-sent events) of a key.

:class:`EventHub` holds one small queue per open stream. Publishing never waits: a stream
whose client reads too slowly loses its oldest queued events (counted), never the
newest, so a slow dashboard costs a bounded amount of memory and never holds back the
view. :meth:`EventHub.close` ends every stream (shutdown), so no connection holds the
server open.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

#: events queued per stream before the oldest are dropped
QUEUE_SIZE = 32


class TooManyStreamsError(Exception):
    """``max_streams`` event streams are open already."""


def sse_frame(event: str, data: bytes, event_id: str | None = None) -> bytes:
    """One server-sent event (``data`` must be a single line, as JSON is)."""
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id else "")
    return head.encode() + b"data: " + data + b"\n\n"


#: a comment line: keeps proxies from closing an idle stream and finds dead clients
HEARTBEAT = b": heartbeat\n\n"


@dataclass(eq=False)
class Stream:
    """One open event stream: its key and its queue of encoded frames."""

    key: str
    queue: asyncio.Queue[bytes | None] = field(
        default_factory=lambda: asyncio.Queue(maxsize=QUEUE_SIZE)
    )
    dropped: int = 0

    def offer(self, frame: bytes | None) -> None:
        """Queue ``frame`` (None ends the stream), dropping the oldest when full."""
        while True:
            try:
                self.queue.put_nowait(frame)
            except asyncio.QueueFull:
                with contextlib.suppress(asyncio.QueueEmpty):
                    self.queue.get_nowait()
                    self.dropped += 1
            else:
                return

    async def next(self, timeout_s: float) -> bytes | None:
        """The next frame; :data:`HEARTBEAT` after ``timeout_s`` without one; None once
        the stream is closed."""
        try:
            return await asyncio.wait_for(self.queue.get(), timeout_s)
        except TimeoutError:
            return HEARTBEAT


class EventHub:
    """The open streams, by key (module docstring)."""

    def __init__(self, max_streams: int = 1_000) -> None:
        self.max_streams = max_streams
        self._streams: dict[str, set[Stream]] = {}
        self._open = 0
        self._closed = False
        self.dropped = 0

    @property
    def open_streams(self) -> int:
        """Streams currently open."""
        return self._open

    @contextlib.contextmanager
    def subscribe(self, key: str) -> Iterator[Stream]:
        """A stream of ``key``'s events for the duration of the block."""
        if self._open >= self.max_streams:
            raise TooManyStreamsError(f"{self._open} event streams are open (api_max_streams)")
        stream = Stream(key)
        if self._closed:
            stream.offer(None)
        self._streams.setdefault(key, set()).add(stream)
        self._open += 1
        try:
            yield stream
        finally:
            self._open -= 1
            self.dropped += stream.dropped
            mine = self._streams.get(key)
            if mine is not None:
                mine.discard(stream)
                if not mine:
                    del self._streams[key]

    def publish(self, key: str, frame: bytes) -> None:
        """Send ``frame`` to every stream of ``key`` (never waits)."""
        for stream in self._streams.get(key, ()):
            stream.offer(frame)

    def wants(self, key: str) -> bool:
        """True when a stream of ``key`` is open (saves encoding events nobody reads)."""
        return key in self._streams

    def close(self) -> None:
        """End every stream, now and from now on (idempotent)."""
        self._closed = True
        for streams in self._streams.values():
            for stream in streams:
                stream.offer(None)
