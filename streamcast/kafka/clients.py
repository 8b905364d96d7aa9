"""aiokafka clients built from :class:`~streamcast.config.Settings`: the connection and
security options every client shares, the ticks consumer, the output producer, and a
``stop`` that survives aiokafka's own stray cancellations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.helpers import create_ssl_context

from streamcast.config import ClientSettings, Settings
from streamcast.kafka import patches

log = logging.getLogger(__name__)

patches.apply()

#: aiokafka's internal reconnect/retry pause (its default, 100 ms, hammers a dead broker)
RETRY_BACKOFF_MS = 300


def client_options(settings: ClientSettings) -> dict[str, Any]:
    """Connection and security keyword arguments shared by every aiokafka client."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
        "request_timeout_ms": settings.request_timeout_ms,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = ssl_context(settings)
    if settings.security_protocol.startswith("SASL"):
        password = settings.sasl_password.get_secret_value() if settings.sasl_password else None
        options.update(
            sasl_mechanism=settings.sasl_mechanism,
            sasl_plain_username=settings.sasl_username,
            sasl_plain_password=password,
        )
    return options


def ssl_context(settings: ClientSettings) -> ssl.SSLContext:
    """TLS context from the configured CA, client certificate and key (system CAs if unset)."""
    password = settings.ssl_key_password.get_secret_value() if settings.ssl_key_password else None
    context: ssl.SSLContext = create_ssl_context(
        cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None,
        certfile=str(settings.ssl_certfile) if settings.ssl_certfile else None,
        keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
        password=password,
    )
    return context


def make_consumer(settings: Settings, *, subscribe: bool = True) -> AIOKafkaConsumer:
    """The ticks consumer: manual commits, earliest reset, read_committed input.

    ``subscribe=False`` leaves subscribing (with a rebalance listener) to the caller.
    """
    session = settings.session_timeout_ms
    return AIOKafkaConsumer(
        *([settings.topics.ticks] if subscribe else []),
        group_id=settings.group_id,
        enable_auto_commit=False,
        auto_offset_reset=settings.auto_offset_reset,
        isolation_level="read_committed",
        fetch_max_wait_ms=max(settings.batch_max_wait_ms, 1),
        retry_backoff_ms=RETRY_BACKOFF_MS,
        max_poll_interval_ms=max(300_000, int(settings.drain_timeout_s * 2_000)),
        session_timeout_ms=session,
        heartbeat_interval_ms=min(3_000, session // 3),
        # members finish their in-flight batch before rejoining: give them time
        rebalance_timeout_ms=max(session, 30_000),
        **client_options(settings),
    )


def producer_options(settings: ClientSettings) -> dict[str, Any]:
    """Keyword arguments of every producer streamcast creates (output, transactional,
    tools): ``acks=all``, idempotent, batched by ``linger_ms``, compressed with
    ``compression_type``, plus the shared connection and security options."""
    codec = settings.compression_type
    return {
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": settings.linger_ms,
        "max_batch_size": settings.producer_max_batch_bytes,
        "max_request_size": max(settings.producer_max_batch_bytes, 2 * 1024 * 1024),
        "compression_type": None if codec == "none" else codec,
        "retry_backoff_ms": RETRY_BACKOFF_MS,
        **client_options(settings),
    }


def make_producer(settings: ClientSettings) -> AIOKafkaProducer:
    """The output producer (:func:`producer_options`)."""
    return AIOKafkaProducer(**producer_options(settings))


async def stop_client(client: AIOKafkaConsumer | AIOKafkaProducer) -> None:
    """``client.stop()``, surviving the client's own stray cancellation.

    aiokafka (0.14) ``Fetcher.close()`` cancels its in-flight fetch tasks and then awaits
    them; one that was sleeping in its retry backoff because the broker is unreachable
    re-raises that ``CancelledError`` out of ``consumer.stop()``, although nobody
    cancelled the caller. Such an error is logged and the network client that
    ``stop()`` skipped is closed; a real cancellation of the caller still propagates.
    """
    try:
        await client.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the caller is being cancelled (e.g. a close timeout): not ours to eat
        log.warning(
            "Kafka client stopped with a stray cancellation (broker unreachable)",
            extra={"client": type(client).__name__},
        )
        # stop() returned before closing its connections; stop() again is a no-op
        inner = getattr(client, "_client", None)
        if inner is not None:
            with contextlib.suppress(Exception):
                await inner.close()
