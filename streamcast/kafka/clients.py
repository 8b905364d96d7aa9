"""aiokafka clients built from :class:`~streamcast.config.Settings`: the connection and
security options every client shares, the ticks consumer, the output producer, a
``start`` that tells a wrong setting from a broker that is down, and a ``stop`` that
survives aiokafka's own stray cancellations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any, TypeAlias

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.helpers import create_ssl_context
from aiokafka.protocol.metadata import MetadataRequest

from streamcast.config import ClientSettings, Settings
from streamcast.errors import ConfigurationError, StreamcastError, TransientError
from streamcast.kafka import patches, zstd_level
from streamcast.kafka.errors import describe, map_kafka_errors, translate

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
    """TLS context from the configured CA, client certificate and key (system CAs if unset).

    A file that is not what its setting says (a CA bundle that is not PEM, a key that does
    not match its certificate, a wrong key password) is a
    :class:`~streamcast.errors.ConfigurationError` naming the setting: retrying cannot
    help, and the ``ssl.SSLError`` would otherwise look like a broker outage.
    """
    cafile, certfile, keyfile = settings.ssl_cafile, settings.ssl_certfile, settings.ssl_keyfile
    try:
        context: ssl.SSLContext = create_ssl_context(cafile=str(cafile) if cafile else None)
    except ssl.SSLError as exc:
        raise ConfigurationError(
            f"STREAMCAST_SSL_CAFILE (ssl_cafile): {cafile} holds no PEM CA certificate "
            f"({exc.reason or exc}): give the broker's CA bundle in PEM "
            "(-----BEGIN CERTIFICATE-----), or unset it to trust the system CAs"
        ) from None
    if certfile:
        password = settings.ssl_key_password
        try:
            context.load_cert_chain(
                str(certfile),
                str(keyfile) if keyfile else None,
                password.get_secret_value() if password else None,
            )
        except ssl.SSLError as exc:
            raise ConfigurationError(
                "STREAMCAST_SSL_CERTFILE, STREAMCAST_SSL_KEYFILE, STREAMCAST_SSL_KEY_PASSWORD: "
                f"cannot load the client certificate {certfile} ({exc.reason or exc}): give "
                "a PEM certificate, its PEM key and the key's password"
            ) from None
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
    ``compression_type``, plus the shared connection and security options. Sets the
    process's zstd level too (:mod:`streamcast.kafka.zstd_level`: aiokafka has no
    per-producer setting), so every producer built from these options uses ``zstd_level``."""
    codec = settings.compression_type
    zstd_level.use(settings.zstd_level)
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


#: aiokafka's message when no bootstrap server answered (why is only logged, not raised)
BOOTSTRAP_FAILED = "Unable to bootstrap"
#: bound on one diagnostic connection attempt
HANDSHAKE_TIMEOUT_S = 10.0
#: a connection closed on its first request may be a broker restarting: look again after
RECHECK_S = 1.0

Client: TypeAlias = AIOKafkaConsumer | AIOKafkaProducer | AIOKafkaAdminClient


async def start_client(client: Client, settings: ClientSettings) -> None:
    """``client.start()``, its errors mapped (:func:`~streamcast.kafka.errors.map_kafka_errors`).

    When no bootstrap server could be used, aiokafka raises a bare "Unable to bootstrap"
    and only logs why. That reason decides whether retrying makes sense, so it is found
    (:func:`handshake_error`) and a permanent one (wrong credentials, security protocol
    or TLS settings) is raised instead of the transient error.
    """
    try:
        with map_kafka_errors("connect"):
            await client.start()
    except TransientError as exc:
        if BOOTSTRAP_FAILED in str(exc.__cause__):
            found = await handshake_error(settings)
            if found is not None:
                raise found from exc
        raise


async def handshake_error(settings: ClientSettings) -> StreamcastError | None:
    """Connect to each bootstrap server the way the clients do and send one request; the
    permanent error found (credentials, protocol, TLS), or None when a server answered or
    every failure may heal (refused, unreachable, timeout: the broker is down)."""
    options = client_options(settings)
    servers = str(options.pop("bootstrap_servers"))
    options.pop("client_id")
    found: StreamcastError | None = None
    for entry in servers.split(","):
        host, _, port = entry.strip().rpartition(":")
        error = await _handshake(host.strip("[]"), int(port), settings, options)
        if error is None:
            return None
        if not error.retriable and found is None:
            found = error
    return found


async def _handshake(
    host: str, port: int, settings: ClientSettings, options: dict[str, Any]
) -> StreamcastError | None:
    where = f"connect to {host}:{port}"
    closed = (
        f"connect: the broker at {host}:{port} closed the connection during the handshake: "
        f"check STREAMCAST_SECURITY_PROTOCOL (now {settings.security_protocol}) against the "
        "protocol of that listener (PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL)"
    )
    for attempt in range(2):
        try:
            conn = await asyncio.wait_for(
                create_conn(host, port, client_id=settings.client_id, **options),
                HANDSHAKE_TIMEOUT_S,
            )
        except ssl.SSLCertVerificationError as exc:
            return translate(exc, where)
        except (
            ssl.SSLError,
            ConnectionResetError,
            ConnectionAbortedError,
            BrokenPipeError,
            KafkaConnectionError,
        ) as exc:
            # accepted, then dropped while handshaking (TLS to a plaintext listener, a
            # listener closing on the version probe, ...); a refused connection is another
            # OSError and a silent one a timeout: the broker is down, retried
            error: StreamcastError = ConfigurationError(f"{closed} ({describe(exc)})")
        except (OSError, KafkaError, TimeoutError) as exc:
            return translate(exc, where)
        else:
            try:
                await asyncio.wait_for(conn.send(MetadataRequest([])), HANDSHAKE_TIMEOUT_S)
            except KafkaConnectionError:
                error = ConfigurationError(closed)
            except (KafkaError, TimeoutError) as exc:
                return translate(exc, where)
            else:
                return None
            finally:
                conn.close()
        if attempt == 0:
            await asyncio.sleep(RECHECK_S)  # a broker restarting also drops connections
    return error


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
