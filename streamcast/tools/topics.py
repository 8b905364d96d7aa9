"""``streamcast topics create|check``: set up the topics before the first start, and say
what is missing or wrong (one line per topic; exit status 1 when any topic is unusable)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from streamcast.config import Settings
from streamcast.core.cli_args import positive_int
from streamcast.kafka.topic_setup import TopicStatus, check_topics, create_topics

#: exit status when a topic is missing or wrong
PROBLEM = 1

TOPICS_EXAMPLES = """\
examples:
  streamcast topics create --partitions 6                 # ticks + outputs + changelog
  streamcast topics create --partitions 12 --replication-factor 3 --ticks-topic sensors
  streamcast topics check                                 # exit status 1 if one is unusable

create makes the ticks topic (only when absent: an existing one is never changed), then
the forecasts, alerts and dead-letter topics and, with durable state, the state
changelog (cleanup.policy=compact), all with the ticks topic's partition count and
replication factor. The topic names are the settings (STREAMCAST_TOPICS__*).
"""


def add_actions(topics: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The ``create`` and ``check`` subcommands of ``topics``; returns them (the caller
    adds the settings flags)."""
    fmt = argparse.RawDescriptionHelpFormatter
    actions = topics.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create",
        help="create the ticks topic and the output topics that are missing",
        epilog=TOPICS_EXAMPLES,
        formatter_class=fmt,
    )
    create.add_argument(
        "--partitions", type=positive_int, help="partitions of a new ticks topic (required then)"
    )
    create.add_argument(
        "--replication-factor",
        type=positive_int,
        help="replication of a new ticks topic (default: 3, or the broker count if fewer)",
    )
    check = actions.add_parser(
        "check",
        help="report each topic: ok, missing or wrong (exit status 1 if any is unusable)",
        epilog=TOPICS_EXAMPLES,
        formatter_class=fmt,
    )
    return [create, check]


def run_topics(args: Any, settings: Settings) -> int:
    """Run ``topics create`` or ``topics check``: print one line per topic."""
    statuses: list[TopicStatus]
    if args.action == "create":
        statuses = asyncio.run(create_topics(settings, args.partitions, args.replication_factor))
    else:
        statuses = asyncio.run(check_topics(settings))
    for status in statuses:
        print(status.line())
    return PROBLEM if any(s.problem for s in statuses) else 0
