"""Running the forecast API in tests and benchmarks, and minting tokens for it.

- :func:`api_in_process` serves the real app with uvicorn on a free port inside the
  test's event loop, fed by any follower (a :class:`ListFollower` needs no broker);
- :class:`ApiProcess` runs ``python -m streamcast api`` as a genuine subprocess
  configured by ``STREAMCAST_*`` variables, against the real broker;
- :func:`token` mints a JWT (HS256 with a secret, RS256/ES256 with a private key).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
import jwt
import numpy as np
import uvicorn

from streamcast.api.app import ApiContext, create_app
from streamcast.api.server import ApiServer, build_context
from streamcast.config import ApiSettings
from streamcast.core.alerts import AlertBatch, encode_alerts
from streamcast.kafka.wire import Consumed, InRecord
from tests.support.kafka import REPO, kafka_local

SECRET = "test-secret-of-at-least-32-characters!"
AUDIENCE = "streamcast-tests"
ISSUER = "https://issuer.test"


def token(
    key: Any = SECRET,
    *,
    scopes: str = "forecasts:read predict",
    subject: str = "tester",
    audience: str = AUDIENCE,
    issuer: str = ISSUER,
    expires_in_s: float = 300.0,
    algorithm: str = "HS256",
    kid: str | None = None,
) -> str:
    """A signed JWT with the given claims."""
    now = int(time.time())
    claims = {
        "sub": subject,
        "aud": audience,
        "iss": issuer,
        "iat": now,
        "exp": now + int(expires_in_s),
        "scope": scopes,
    }
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


def alert_records(
    alerts: Sequence[tuple[str, int, str, float, str]], *, model: str = "tiny"
) -> list[tuple[bytes, bytes]]:
    """Alert records written by the detectors' own encoder: ``(key, ts_s, kind,
    statistic, severity)`` each (threshold 3, CUSUM, direction up)."""
    n = len(alerts)
    batch = AlertBatch(
        keys=[a[0] for a in alerts], ts=np.array([a[1] for a in alerts], dtype=np.int64),
        kind=[a[2] for a in alerts],
        detector=["ks" if a[2] == "input_drift" else "ewma" for a in alerts],
        statistic=np.array([a[3] for a in alerts]), threshold=np.full(n, 3.0),
        direction=["up"] * n, severity=[a[4] for a in alerts], model=model, model_version="1",
        trigger_index=np.arange(n), recent=np.tile(np.array([0.5, 1.5, 2.5], np.float32), (n, 1)),
        window_mean=np.full(n, 410.0), window_std=np.full(n, 80.0), window=48,
    )  # fmt: skip
    return encode_alerts(batch)


def api_settings(**overrides: Any) -> ApiSettings:
    """Settings for an in-process API: HS256 auth with :data:`SECRET`, a free port."""
    values: dict[str, Any] = {
        "api_host": "127.0.0.1",
        "api_port": kafka_local.free_port(),
        "api_auth": "jwt",
        "api_jwt_secret": SECRET,
        "api_jwt_audience": AUDIENCE,
        "api_jwt_issuer": ISSUER,
        "api_heartbeat_s": 0.5,
        "topics": {"forecasts": "forecasts", "alerts": "alerts"},
    }
    values.update(overrides)
    return ApiSettings(_env_file=None, **values)


@dataclass
class ListFollower:
    """A follower over records a test hands it (``feed``); caught up once fed once."""

    records: list[Consumed] = field(default_factory=list)
    fed: bool = True
    missing_topics: list[str] = field(default_factory=list)

    @property
    def caught_up(self) -> bool:
        return self.fed and not self.records

    def behind(self) -> int:
        return len(self.records)

    def lag(self) -> dict[str, int]:
        return {}

    async def refresh(self) -> None:
        return None

    async def read(self, timeout_ms: int) -> Sequence[Consumed]:
        if not self.records:
            await asyncio.sleep(min(timeout_ms, 20) / 1000)
            return []
        out, self.records = self.records, []
        return out

    def feed(
        self,
        topic: str,
        pairs: Sequence[tuple[bytes, bytes | None]],
        start: int = 0,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        """Queue ``(key, value)`` records of ``topic`` (partition 0, offsets from ``start``),
        each with ``headers``."""
        now = int(time.time() * 1000)
        self.records += [
            InRecord(topic, 0, start + i, now, key, value, headers)
            for i, (key, value) in enumerate(pairs)
        ]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


@dataclass
class RunningApi:
    """An in-process API: its context, base URL and a client for it."""

    ctx: ApiContext
    url: str
    client: httpx.AsyncClient


@contextlib.asynccontextmanager
async def api_in_process(
    settings: ApiSettings, follower: ListFollower | None = None
) -> AsyncIterator[RunningApi]:
    """The real app on uvicorn at ``settings.api_port``, fed by ``follower``."""
    feeder = follower or ListFollower()
    ctx = build_context(settings, lambda: feeder)
    config_kwargs: dict[str, Any] = {"lifespan": "off", "log_config": None, "access_log": False}

    server = ApiServer(
        uvicorn.Config(
            create_app(ctx), host=settings.bind_host, port=settings.api_port, **config_kwargs
        )
    )
    stopping = asyncio.Event()
    feed = asyncio.create_task(ctx.feed.run(stopping))
    models = asyncio.create_task(ctx.models.run(stopping) if ctx.models else asyncio.sleep(0))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()
        await asyncio.sleep(0.01)
    url = f"http://{settings.bind_host}:{settings.api_port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            yield RunningApi(ctx, url, client)
    finally:
        stopping.set()
        ctx.hub.close()
        server.should_exit = True
        await asyncio.wait_for(serving, 10)
        await asyncio.wait_for(feed, 10)
        await asyncio.wait_for(models, 10)
        if ctx.predictor is not None:
            ctx.predictor.close()


@dataclass
class ApiProcess:
    """``python -m streamcast api`` as a real subprocess, configured by environment."""

    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.env['STREAMCAST_API_PORT']}"

    def start(self) -> Self:
        """Start without waiting (see :meth:`wait_ready`)."""
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("STREAMCAST_")}
        env.update(self.env)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamcast", "api"],
            env=env,
            cwd=self.log_path.parent,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Until ``/readyz`` answers 200."""
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"api exited early:\n{self.log_path.read_text()[-3000:]}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/readyz")).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"api not ready:\n{self.log_path.read_text()[-3000:]}")

    def stop(self, timeout_s: float = 15.0) -> int:
        """SIGTERM and the exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.terminate()
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def kill(self) -> None:
        """Make sure the process is gone (teardown)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def api_env(bootstrap: str, prefix: str, **extra: str | int | float) -> dict[str, str]:
    """Environment of an API subprocess reading ``<prefix>-forecasts``/``-alerts``, auth
    off (tests of auth run in process), on a free port."""
    env = {
        "STREAMCAST_BOOTSTRAP_SERVERS": bootstrap,
        "STREAMCAST_TOPICS__FORECASTS": f"{prefix}-forecasts",
        "STREAMCAST_TOPICS__ALERTS": f"{prefix}-alerts",
        "STREAMCAST_API_HOST": "127.0.0.1",
        "STREAMCAST_API_PORT": str(kafka_local.free_port()),
        "STREAMCAST_API_AUTH": "off",
        "STREAMCAST_API_RATE_PER_S": "0",
        "STREAMCAST_LOG_FORMAT": "json",
    }
    env.update({f"STREAMCAST_{k.upper()}": str(v) for k, v in extra.items()})
    return env
