"""The processing guarantee, chosen once: the only place that knows which sink runs."""

from __future__ import annotations

import time
from collections.abc import Callable

from streamcast.config import Settings
from streamcast.kafka.at_least_once import AtLeastOnceSink
from streamcast.kafka.exactly_once import ExactlyOnceSink
from streamcast.kafka.sink import PartitionedState, Sink, SinkObserver


def make_sink(
    settings: Settings,
    state: PartitionedState,
    observer: SinkObserver,
    clock: Callable[[], float] = time.time,
) -> Sink:
    """The sink of ``settings.processing_guarantee`` (see :mod:`streamcast.kafka.sink`)."""
    if settings.processing_guarantee == "exactly_once":
        return ExactlyOnceSink(settings, state, observer, clock)
    return AtLeastOnceSink(settings, state, observer, clock)
