"""Service settings: parsed once at the edge (env, ``.env`` file, CLI flags) and passed down.

Precedence, highest first: CLI flags, ``STREAMCAST_*`` environment variables, the ``.env``
file, defaults. Nested groups use ``__`` in their variable names, for example
``STREAMCAST_TOPICS__TICKS=sensor-ticks`` or ``STREAMCAST_FIELDS__TS=time``.

:func:`load_settings` turns a pydantic ``ValidationError`` into a
:class:`SettingsError` whose lines each name the environment variable, the field and the
problem (``STREAMCAST_MAX_KEYS (max_keys): must be > 0``), so a bad deployment fails at
start with a message an operator can act on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from dotenv import dotenv_values
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamcast.core.artifact import Aggregation

ENV_PREFIX = "STREAMCAST_"
NESTED = "__"

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
LogFormat = Literal["json", "console"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
ProcessingGuarantee = Literal["at_least_once", "exactly_once"]


class SettingsError(Exception):
    """Settings the service cannot start with; ``problems`` holds one line per field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class TopicSettings(BaseModel):
    """Names of the topics the service reads and writes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ticks: str = Field(default="ticks", min_length=1)
    forecasts: str = Field(default="forecasts", min_length=1)
    alerts: str = Field(default="alerts", min_length=1)
    dead_letter: str = Field(default="ticks.dead-letter", min_length=1)
    state_changelog: str = Field(default="streamcast-state-changelog", min_length=1)


class FieldSettings(BaseModel):
    """JSON field names of a tick. ``extras`` maps model feature names to tick field names."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str = Field(default="key", min_length=1)
    ts: str = Field(default="ts", min_length=1)
    value: str = Field(default="value", min_length=1)
    extras: dict[str, str] = Field(default_factory=dict)


class Settings(BaseSettings):
    """Everything ``streamcast serve`` needs, frozen once parsed."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    # -- Kafka connection
    bootstrap_servers: str = Field(default="localhost:9092", min_length=1)
    client_id: str = "streamcast"
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_key_password: SecretStr | None = None
    group_id: str = Field(default="streamcast", min_length=1)
    topics: TopicSettings = TopicSettings()
    #: exactly_once: one Kafka transaction per micro-batch and input partition (outputs,
    #: state changelog, offsets); durable per-key state restored on assignment
    processing_guarantee: ProcessingGuarantee = "at_least_once"
    #: transactional ids are ``<prefix>-<group>-<ticks topic>-<partition>`` (exactly_once)
    transactional_id_prefix: str = Field(default="streamcast", min_length=1)
    #: consumer group session timeout: how soon a dead instance's partitions move on
    session_timeout_ms: int = Field(default=10_000, ge=1_000)

    # -- model and input interpretation
    model_path: Path | None = None
    intra_op_threads: int = Field(default=1, gt=0)
    fields: FieldSettings = FieldSettings()
    #: interval aggregation; None means the model's own
    aggregation: Aggregation | None = None
    #: longest gap (missing intervals) bridged by interpolation; None means the model's own
    max_gap: int | None = Field(default=None, ge=0)
    max_keys: int = Field(default=100_000, gt=0)
    key_ttl_s: float = Field(default=7 * 86_400.0, gt=0)
    #: ticks before this epoch second are absurd (dead-lettered); default 1990-01-01
    min_ts_s: int = 631_152_000
    #: ticks further than this ahead of the wall clock are absurd (dead-lettered)
    max_future_s: int = Field(default=7 * 86_400, ge=0)
    max_message_bytes: int = Field(default=64 * 1024, gt=0)

    # -- micro-batching and the producer
    batch_max_records: int = Field(default=5_000, gt=0)
    batch_max_wait_ms: int = Field(default=100, ge=0)
    linger_ms: int = Field(default=5, ge=0)
    producer_max_batch_bytes: int = Field(default=1024 * 1024, gt=0)

    # -- lifecycle
    drain_timeout_s: float = Field(default=30.0, gt=0)
    retry_max_backoff_s: float = Field(default=30.0, gt=0)
    #: /readyz fails when the main loop has not completed an iteration for this long
    ready_stale_s: float = Field(default=30.0, gt=0)

    # -- observability
    http_host: str = "0.0.0.0"
    #: port of /metrics, /healthz, /readyz; 0 picks a free port (logged at start)
    http_port: int = Field(default=9400, ge=0, le=65535)
    log_format: LogFormat = "json"
    log_level: LogLevel = "INFO"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("security_protocol", "sasl_mechanism", mode="before")
    @classmethod
    def _upper_choice(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    def check_security(self) -> None:
        """Fail with a named setting when the chosen security protocol lacks credentials."""
        problems: list[str] = []
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_username and self.sasl_password
        ):
            problems += [
                f"{env_name(('sasl_username',))} (sasl_username) and "
                f"{env_name(('sasl_password',))} (sasl_password): required when "
                f"security_protocol is {self.security_protocol}"
            ]
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                problems.append(f"{env_name((name,))} ({name}): file not found: {path}")
        if problems:
            raise SettingsError(problems)


def env_name(loc: tuple[str | int, ...]) -> str:
    """The environment variable that sets the field at ``loc``."""
    return ENV_PREFIX + NESTED.join(str(part).upper() for part in loc)


def _describe(error: Mapping[str, Any]) -> str:
    """A short, operator-facing description of one pydantic error."""
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    if kind == "greater_than":
        return f"must be > {ctx.get('gt')}"
    if kind == "greater_than_equal":
        return f"must be >= {ctx.get('ge')}"
    if kind == "less_than_equal":
        return f"must be <= {ctx.get('le')}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "value_error":
        return str(ctx.get("error", error.get("msg", "invalid")))
    msg = str(error.get("msg", "invalid"))
    return msg[:1].lower() + msg[1:]


def explain(exc: ValidationError) -> list[str]:
    """One line per invalid field: ``STREAMCAST_X (x): problem (got 'value')``."""
    lines = []
    for error in exc.errors():
        loc = tuple(part for part in error["loc"] if part != "__root__")
        dotted = ".".join(str(part) for part in loc) or "settings"
        got = error.get("input")
        shown = "" if isinstance(got, dict | type(None)) else f" (got {str(got)[:60]!r})"
        if not loc:  # a check across fields: its message names the settings itself
            lines.append(_describe(error))
            continue
        lines.append(f"{env_name(loc)} ({dotted}): {_describe(error)}{shown}")
    return lines


def load_settings(
    overrides: Mapping[str, Any] | None = None, env_file: Path | str | None = ".env"
) -> Settings:
    """Parse settings from ``overrides`` (CLI flags), the environment and ``env_file``.

    Raises :class:`SettingsError` naming every invalid setting.
    """
    try:
        settings = Settings(_env_file=env_file, **dict(overrides or {}))
    except ValidationError as exc:
        raise SettingsError(explain(exc)) from None
    settings.check_security()
    return settings


def setting_sources(
    settings: Settings, overrides: Mapping[str, Any] | None, env_file: Path | str | None
) -> dict[str, str]:
    """Where each (dotted) setting came from: ``cli``, ``env``, ``.env`` or ``default``."""
    environ = {k.upper(): v for k, v in os.environ.items()}
    dotenv: dict[str, str | None] = {}
    if env_file is not None and Path(env_file).is_file():
        dotenv = {k.upper(): v for k, v in dotenv_values(env_file).items()}
    given = dict(overrides or {})
    sources: dict[str, str] = {}
    for dotted, _ in flatten(settings):
        loc = tuple(dotted.split("."))
        top = loc[0]
        name = env_name(loc)
        whole = env_name((top,))
        if top in given and (len(loc) == 1 or loc[1] in dict(given[top])):
            sources[dotted] = "cli"
        elif name in environ or (len(loc) > 1 and whole in environ):
            sources[dotted] = "env"
        elif name in dotenv or (len(loc) > 1 and whole in dotenv):
            sources[dotted] = ".env"
        else:
            sources[dotted] = "default"
    return sources


def flatten(settings: Settings) -> list[tuple[str, str]]:
    """``(dotted name, printable value)`` for every setting; secrets are masked."""
    rows: list[tuple[str, str]] = []

    def show(value: object) -> str:
        if isinstance(value, SecretStr):
            return "**********" if value.get_secret_value() else ""
        if value is None:
            return "(unset)"
        return str(value)

    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, BaseModel):
            for sub in type(value).model_fields:
                rows.append((f"{name}.{sub}", show(getattr(value, sub))))
        else:
            rows.append((name, show(value)))
    return rows
