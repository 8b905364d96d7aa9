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

import difflib
import io
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar, overload

from dotenv import dotenv_values
from dotenv.parser import parse_stream
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

from streamcast.core.artifact import Aggregation
from streamcast.core.validation import describe, shown_input
from streamcast.errors import SettingsError

ENV_PREFIX = "STREAMCAST_"
NESTED = "__"

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
#: ``auto``: text when stderr is a terminal, JSON lines otherwise; ``console`` is the
#: former name of ``text``
LogFormat = Literal["auto", "json", "text", "console"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
ProcessingGuarantee = Literal["at_least_once", "exactly_once"]
CompressionType = Literal["none", "gzip", "snappy", "lz4", "zstd"]
ApiAuth = Literal["jwt", "off"]

#: addresses only this machine can reach: the API may listen on them without auth
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def _blank_is_unset(value: object) -> object:
    """An empty (or blank) path means unset: ``Path("")`` would be the working directory,
    and ``STREAMCAST_MODEL_PATH=`` would serve whatever model lies there."""
    return None if isinstance(value, str) and not value.strip() else value


def _host(value: object) -> object:
    """A host without the blanks around it (``" 127.0.0.1 "`` is loopback); blank is
    unset (:func:`_blank_is_unset`)."""
    value = _blank_is_unset(value)
    return value.strip() if isinstance(value, str) else value


#: a file or directory setting; empty means unset
OptionalPath = Annotated[Path | None, BeforeValidator(_blank_is_unset)]
#: a host setting; empty means unset (``API_HOST=${API_HOST:-}`` in a compose file)
OptionalHost = Annotated[str | None, BeforeValidator(_host)]

#: what Kafka accepts as a topic name (and not ``.`` or ``..``)
_TOPIC = re.compile(r"[A-Za-z0-9._-]+")
TOPIC_MAX = 249


def check_topic(name: str) -> str:
    """``name`` if Kafka accepts it as a topic name, else ``ValueError`` saying why: a
    name the broker refuses would otherwise fail only at the first request."""
    if len(name) > TOPIC_MAX:
        raise ValueError(f"a Kafka topic name has at most {TOPIC_MAX} characters, not {len(name)}")
    if name in (".", "..") or not _TOPIC.fullmatch(name):
        raise ValueError(
            "not a Kafka topic name: use only letters A-Z a-z, digits, '.', '_' and '-' "
            "(and not '.' or '..')"
        )
    return name


def check_not_blank(value: str) -> str:
    """``value`` unless it is only whitespace (which no broker resource should be named)."""
    if not value.strip():
        raise ValueError("must not be blank")
    return value


#: a browser origin (CORS): scheme://host[:port], no path (any scheme: an extension's
#: chrome-extension://id, a mobile shell's capacitor://localhost)
_ORIGIN = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://(\[[0-9A-Fa-f:.]+\]|[^\s/?#:\[\]]+)(:\d{1,5})?")


class TopicSettings(BaseModel):
    """Names of the topics the service reads and writes."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", use_attribute_docstrings=True, allow_inf_nan=False
    )

    ticks: str = Field(default="ticks", min_length=1)
    """input: the ticks (it must exist; its partition count is the parallelism ceiling)"""
    forecasts: str = Field(default="forecasts", min_length=1)
    """output: one forecast per closed interval, keyed by series key"""
    alerts: str = Field(default="alerts", min_length=1)
    """output: drift alerts, keyed by series key"""
    dead_letter: str = Field(default="ticks.dead-letter", min_length=1)
    """output: rejected messages, original bytes, reason and source in headers"""
    state_changelog: str = Field(default="streamcast-state-changelog", min_length=1)
    """compacted per-key state, partitioned like the ticks topic"""

    @field_validator("*")
    @classmethod
    def _kafka_topic_name(cls, value: str) -> str:
        return check_topic(value)


class FieldSettings(BaseModel):
    """JSON field names of a tick."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", use_attribute_docstrings=True, allow_inf_nan=False
    )

    key: str = Field(default="key", min_length=1)
    """series key field (used when the Kafka message has no key)"""
    ts: str = Field(default="ts", min_length=1)
    """event timestamp field: ISO-8601, or epoch s/ms/us/ns"""
    value: str = Field(default="value", min_length=1)
    """the value to forecast"""
    extras: dict[str, str] = Field(default_factory=dict)
    """JSON object mapping the model's extra feature names to tick field names"""


class DriftDetection(BaseModel):
    """The drift detectors: an EWMA chart of each key's clipped one-step residual
    deviations (error drift) and a periodic KS test of its inputs (input drift)."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", use_attribute_docstrings=True, allow_inf_nan=False
    )

    span: int = Field(default=24, ge=1)
    """error drift: residuals the error level averages over (higher: steadier, slower)"""
    threshold: float = Field(default=1.75, gt=0)
    """error drift: the level, in the key's residual standard deviations, at which it
    alerts (higher: fewer false alarms, slower alerts)"""
    clip: float = Field(default=2.5, gt=0)
    """error drift: residual deviations are clipped to this many standard deviations
    before averaging, so a burst of extreme errors alone does not alert"""
    min_residuals: int = Field(default=48, ge=2)
    """error drift: residuals a key must have (its baseline) before it can alert"""
    baseline_intervals: int = Field(default=500, ge=2)
    """error drift: residuals a key's baseline (mean and spread) averages over"""
    quiet: int = Field(default=48, ge=1)
    """error drift: intervals in a row with the error level below half the threshold
    after which an alarmed key recovers"""
    input_every: int = Field(default=24, ge=0)
    """closed intervals between two input-drift tests of a key (0: no input drift)"""


class ClientSettings(BaseSettings):
    """What every Kafka client of streamcast needs (``replay`` and ``tail`` take these)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        use_attribute_docstrings=True,
        # no setting means "forever" by inf (a leeway of inf let a token that expired in
        # 1970 through, a rate of inf turned limiting off): None says "no bound" where
        # a setting has one
        allow_inf_nan=False,
    )

    # -- Kafka connection
    bootstrap_servers: str = Field(default="localhost:9092", min_length=1)
    """Kafka bootstrap servers, comma-separated host:port"""
    client_id: str = "streamcast"
    """client id the broker sees (logs, quotas)"""
    security_protocol: SecurityProtocol = "PLAINTEXT"
    """how to talk to the brokers"""
    sasl_mechanism: SaslMechanism = "PLAIN"
    """SASL mechanism (with a SASL_* protocol)"""
    sasl_username: str | None = None
    """SASL user name"""
    sasl_password: SecretStr | None = None
    """SASL password (prefer the environment variable or .env to a flag)"""
    ssl_cafile: OptionalPath = None
    """PEM file of the CAs to trust (system CAs when unset)"""
    ssl_certfile: OptionalPath = None
    """PEM client certificate (mutual TLS)"""
    ssl_keyfile: OptionalPath = None
    """PEM key of the client certificate"""
    ssl_key_password: SecretStr | None = None
    """password of the client key"""
    request_timeout_ms: int = Field(default=30_000, ge=1_000)
    """how long a request to a broker may take before it fails (and is retried); bounds
    how soon a vanished topic or a dead broker is noticed"""
    topics: TopicSettings = TopicSettings()
    """topic names"""
    fields: FieldSettings = FieldSettings()
    """tick field names"""

    # -- the producer
    linger_ms: int = Field(default=5, ge=0)
    """producer linger: how long output waits to fill a record batch"""
    producer_max_batch_bytes: int = Field(default=1024 * 1024, gt=0)
    """largest producer record batch, before compression: at most the output topics'
    max.message.bytes (1 MiB + 12 by default; serve checks it at start). Above that
    default, the topics streamcast creates get max.message.bytes set to it"""
    compression_type: CompressionType = "zstd"
    """codec of every record batch streamcast produces (none, gzip, snappy, lz4, zstd).
    zstd by default: on forecast records (horizon 24, calibrated, ~2.1 KB) it makes batches
    3.1x smaller at ~19 us per record, where lz4 (aiokafka compresses at level 9) makes
    them 2.1x smaller at ~36 us, snappy 1.7x at ~5 us, gzip 3.1x at ~110 us
    (bench/compression.py); end to end, flat out, zstd ran within noise of none and lz4
    ~25% slower (bench/e2e.py --compression). Consumers of the output need zstd support
    (every client since Kafka 2.1; the only ones a Kafka 4 broker accepts); choose lz4
    or none otherwise"""

    zstd_level: int = Field(default=1, ge=-131_072, le=22)
    """zstd level of those batches (with compression_type zstd). 1 by default, where Kafka's
    clients use 3: on streamcast's forecast batches level 1 compressed as well as 3 (2.89x
    against 2.82x) at 4.0 instead of 6.3 us per record (bench/compression.py), and at level
    3 compression was a quarter of the service's CPU flat out. Higher levels shrink the
    bytes a little for much more CPU, negative ones the reverse; consumers read any"""

    # -- logs
    log_format: LogFormat = "auto"
    """json (one object per line, for collectors), text (readable lines), or auto: text
    when stderr is a terminal, json otherwise (console is the old name of text)"""
    log_level: LogLevel = "INFO"
    """least severe level logged"""

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_port_list(cls, value: str) -> str:
        for entry in value.split(","):
            check_host_port(entry.strip())
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("compression_type", mode="before")
    @classmethod
    def _lower_choice(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("security_protocol", "sasl_mechanism", mode="before")
    @classmethod
    def _upper_choice(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    def check_security(self, given: Mapping[str, Any] | None = None) -> None:
        """Fail with a named setting when the chosen security protocol lacks credentials
        (or a file it names is missing); ``given``: the settings given as flags, named
        as those flags."""
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
                problems.append(f"{source_name((name,), given)} ({name}): file not found: {path}")
        if problems:
            raise SettingsError(problems)


#: intervals a key may stay silent before the default TTL expires it (a weekly or monthly
#: model's keys would otherwise expire between their ticks under the 7-day default)
TTL_INTERVALS = 3


class Settings(ClientSettings):
    """Everything ``streamcast serve`` needs, frozen once parsed."""

    @model_validator(mode="after")
    def _exactly_once_needs_durable_state(self) -> Settings:
        if self.processing_guarantee == "exactly_once" and not self.durable_state:
            raise ValueError(
                "STREAMCAST_DURABLE_STATE (durable_state): must be true with "
                "processing_guarantee exactly_once (its state commits with the offsets)"
            )
        return self

    @field_validator("group_id", "transactional_id_prefix")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        return check_not_blank(value)

    def effective_key_ttl_s(self, interval_s: int) -> float:
        """The TTL the store applies with a model of ``interval_s``: ``key_ttl_s`` as set,
        or its default but at least :data:`TTL_INTERVALS` of the model's intervals."""
        if "key_ttl_s" in self.model_fields_set:
            return self.key_ttl_s
        return max(self.key_ttl_s, float(TTL_INTERVALS * interval_s))

    # -- the consumer group and the processing guarantee
    group_id: str = Field(default="streamcast", min_length=1)
    """consumer group: instances with the same group share the ticks partitions"""
    processing_guarantee: ProcessingGuarantee = "at_least_once"
    """exactly_once: one Kafka transaction per micro-batch and input partition (outputs,
    state changelog, offsets) and durable per-key state restored on assignment"""
    transactional_id_prefix: str = Field(default="streamcast", min_length=1)
    """transactional ids are <prefix>-<group>-<ticks topic>-<partition> (exactly_once)"""
    durable_state: bool = True
    """keep every key's state in the compacted changelog and restore it when a partition
    is assigned: a restart or rebalance continues each key's forecasts without a new
    warm-up (exactly_once needs it; off: state is memory only and warms up again)"""
    allow_state_rebuild: bool = False
    """start although the changelog lacks the state of partitions the group has committed
    offsets for (it was deleted or recreated): those keys warm up again. Without it that
    is an error, so state is never lost silently"""
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    """where a group with no committed offset for a partition starts: earliest reads the
    partition's whole history (and forecasts it), latest only what arrives from now on"""
    session_timeout_ms: int = Field(default=10_000, ge=1_000)
    """consumer group session timeout: how soon a dead instance's partitions move on"""

    # -- model and input interpretation
    model_path: OptionalPath = None
    """the ONNX model exported by streamcast-train, or a models directory: the newest
    <version>.onnx in it serves"""
    model_poll_s: float = Field(default=10.0, ge=0)
    """how often the model path is checked for a new artifact, swapped in without a
    restart (0: never)"""
    intra_op_threads: int = Field(default=1, gt=0, le=64)
    """threads per model call: a micro-batch's ONNX Runtime runs (up to 1,024 keys each,
    each single-threaded) go side by side on that many; raise it with the CPU limit when
    the broker runs elsewhere (on 2 cores shared with a broker, 1 moves more)"""
    aggregation: Aggregation | None = None
    """how ticks within an interval combine; unset: the model's own"""
    max_gap: int | None = Field(default=None, ge=0)
    """longest gap (missing intervals) bridged by interpolation; unset: the model's own"""
    max_keys: int = Field(default=100_000, gt=0)
    """most keys held in state; the least recently used are evicted beyond it"""
    key_ttl_s: float = Field(default=7 * 86_400.0, gt=0)
    """keys without a tick for this long are dropped"""
    min_ts_s: int = 631_152_000
    """ticks before this epoch second are absurd (dead-lettered); default 1990-01-01"""
    max_future_s: int = Field(default=7 * 86_400, ge=0)
    """ticks further than this ahead of the wall clock are absurd (dead-lettered)"""
    max_jump_intervals: int | None = Field(default=1000, gt=0)
    """a tick further ahead of its key's last tick than this many intervals is dead-lettered
    time_jump unless jump_confirmations ticks confirm the new timeline; unset: no bound"""
    jump_confirmations: int = Field(default=3, ge=1)
    """consecutive ticks on a new timeline (each within max_jump_intervals of the one
    before) that make a key accept a jump; the ones before the last stay dead-lettered"""
    max_message_bytes: int = Field(default=64 * 1024, gt=0)
    """larger tick messages are dead-lettered as oversized"""
    max_key_bytes: int = Field(default=256, gt=0, le=65_536)
    """longer series keys (UTF-8 bytes) are dead-lettered as key_too_long: with max_keys
    this bounds the memory keys can take (docs/operations.md, Sizing)"""

    drift: DriftDetection = DriftDetection()
    """drift detection"""
    band_rate: float = Field(default=0.02, ge=0, le=1)
    """how fast each key's interval bands adapt to the misses of its own actuals (adaptive
    quantile tracking, streamcast/core/bands.py); 0 publishes the model's static bands"""
    forecast_layout: Literal["record", "rows"] = "record"
    """record: one record per forecast (schema forecast/2, the horizon in arrays); rows: one
    flat record per forecast step (schema forecast_row/1: key, origin, target, step,
    value, lower_<level>, upper_<level>) for sinks and time-series databases"""

    # -- micro-batching and the producer
    batch_max_records: int = Field(default=5_000, gt=0)
    """most records per micro-batch"""
    batch_max_wait_ms: int = Field(default=100, ge=0)
    """longest wait for the first record of a micro-batch"""
    heap_keep_mb: int = Field(default=64, ge=0, le=2047)
    """MiB of freed C heap kept for the next micro-batch instead of returned to the
    operating system and faulted in again (streamcast/service/heap.py); 0: glibc's own"""

    # -- lifecycle
    drain_timeout_s: float = Field(default=30.0, gt=0)
    """after SIGTERM: longest time to finish the in-flight batch and close"""
    retry_max_backoff_s: float = Field(default=30.0, gt=0)
    """longest wait between retries of a failing broker operation"""
    ready_stale_s: float = Field(default=30.0, gt=0)
    """/readyz fails when the main loop has not completed an iteration for this long"""

    # -- observability
    http_host: str = "0.0.0.0"
    """address of /metrics, /healthz, /readyz"""
    http_port: int = Field(default=9400, ge=0, le=65535)
    """port of /metrics, /healthz, /readyz; 0 picks a free port (logged at start)"""


_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?)$")


def check_host_port(entry: str) -> None:
    """Raise ``ValueError`` unless ``entry`` is ``host:port`` (IPv6 in brackets)."""
    hint = "give comma-separated host:port, e.g. kafka-1:9092,kafka-2:9092"
    host, sep, port = entry.rpartition(":")
    if not entry or not sep:
        raise ValueError(f"{entry!r} has no port: {hint}")
    if not _HOST.match(host):
        raise ValueError(f"{host!r} is not a host name or address: {hint}")
    if not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"{port!r} is not a port (1-65535): {hint}")


class ApiSettings(ClientSettings):
    """Everything ``streamcast api`` needs: the HTTP server, its auth and limits, the view
    of the forecasts and alerts topics, and the model ``POST /v1/predict`` runs.

    Its own settings are named ``api_*`` so that one environment (a ``.env`` file, a pod)
    can configure ``serve`` and ``api`` without one's value meaning something to the other;
    ``model_path`` and ``intra_op_threads`` are shared on purpose: the API predicts with the
    model the service serves.
    """

    #: refuse settings whose auth is unusable (off only to show them, :func:`api_view`)
    check_auth: ClassVar[bool] = True

    @model_validator(mode="after")
    def _auth_is_configured(self) -> ApiSettings:
        problems = self.auth_problems() if self.check_auth else []
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # -- HTTP
    api_host: OptionalHost = None
    """address to listen on; unset: 0.0.0.0 with auth, 127.0.0.1 with api_auth=off"""
    api_port: int = Field(default=8400, ge=0, le=65535)
    """port of the API, its page, /metrics, /healthz and /readyz; 0 picks a free port"""
    api_forwarded_allow_ips: str = "127.0.0.1"
    """proxies (comma-separated IPs, or *) whose X-Forwarded-For names the client: the
    client IP rate limits count by"""
    api_cors_origins: str = ""
    """comma-separated origins allowed to call the API from a browser page of theirs
    (CORS); empty: CORS off (the API's own page needs none)"""

    # -- auth
    api_auth: ApiAuth = "jwt"
    """jwt: every /v1 request needs a bearer JWT; off: no auth, for local use only (listens
    on 127.0.0.1 unless api_allow_public_without_auth)"""
    api_allow_public_without_auth: bool = False
    """with api_auth=off, allow listening on a non-loopback address (anyone who reaches it
    reads every forecast)"""
    api_jwt_secret: SecretStr | None = None
    """HS256 shared secret (one of secret, public key file, JWKS file)"""
    api_jwt_public_key_file: OptionalPath = None
    """PEM public key: RSA for RS256, EC P-256 for ES256"""
    api_jwt_jwks_file: OptionalPath = None
    """JWKS file (RS256/ES256 keys, chosen by the token's kid; re-read when it changes)"""
    api_jwt_audience: str | None = None
    """the aud claim every token must carry"""
    api_jwt_issuer: str | None = None
    """the iss claim every token must carry"""
    api_jwt_leeway_s: float = Field(default=30.0, ge=0, le=3600)
    """clock skew allowed when checking exp and nbf (an hour at most)"""

    # -- limits
    api_rate_per_s: float = Field(default=50.0, ge=0)
    """requests per second a client (token subject, or IP without a token) may sustain
    under /v1; 0: no limit"""
    api_rate_burst: int = Field(default=200, gt=0)
    """requests a client may make at once before api_rate_per_s applies"""
    api_rate_clients: int = Field(default=100_000, gt=0)
    """most clients whose buckets are kept; the least recently seen are forgotten"""
    api_max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    """larger request bodies are refused with 413"""
    api_max_history: int = Field(default=10_000, gt=0)
    """most ticks in a POST /v1/predict history"""
    api_predict_workers: int = Field(default=1, gt=0)
    """threads running POST /v1/predict (each model call is CPU bound)"""
    api_max_streams: int = Field(default=1_000, gt=0)
    """most open event streams; more are refused with 503"""
    api_heartbeat_s: float = Field(default=15.0, gt=0)
    """an event stream sends a comment line after this long without events"""

    # -- the view
    api_max_keys: int = Field(default=100_000, gt=0)
    """most keys held in the forecast view; beyond it the least recently updated are
    evicted (docs/operations.md, memory per key)"""
    api_alerts_per_key: int = Field(default=50, gt=0)
    """alerts kept per key"""
    api_alerts_max: int = Field(default=10_000, gt=0)
    """alerts kept overall"""

    # -- predict
    model_path: OptionalPath = None
    """the ONNX model POST /v1/predict runs (the one the service serves: a file, or a
    models directory whose newest artifact that passes its self-test is used, followed
    every model_poll_s); unset: /v1/predict answers 503"""
    model_poll_s: float = Field(default=10.0, ge=0)
    """how often the model path is checked for a new artifact, which POST /v1/predict then
    runs without a restart (0: never)"""
    intra_op_threads: int = Field(default=1, gt=0, le=64)
    """threads per model call (a request's runs side by side, as the service's)"""

    @property
    def bind_host(self) -> str:
        """The address to listen on (module rule: loopback by default without auth)."""
        if self.api_host is not None:
            return self.api_host
        return "0.0.0.0" if self.api_auth == "jwt" else "127.0.0.1"

    @property
    def cors_origins(self) -> list[str]:
        """The allowed CORS origins (empty: CORS off)."""
        return [o.strip() for o in self.api_cors_origins.split(",") if o.strip()]

    def auth_problems(self) -> list[str]:
        """What makes the auth settings unusable, one line each (empty when fine)."""
        if self.api_auth == "off":
            if self.bind_host not in LOOPBACK_HOSTS and not self.api_allow_public_without_auth:
                return [
                    f"{env_name(('api_host',))} (api_host): {self.bind_host} is reachable "
                    "from other machines and api_auth is off: configure JWT auth, listen "
                    "on 127.0.0.1, or set STREAMCAST_API_ALLOW_PUBLIC_WITHOUT_AUTH=true"
                ]
            return []
        keys = [self.api_jwt_secret, self.api_jwt_public_key_file, self.api_jwt_jwks_file]
        problems = []
        if sum(k is not None for k in keys) != 1:
            problems.append(
                "STREAMCAST_API_JWT_SECRET, STREAMCAST_API_JWT_PUBLIC_KEY_FILE or "
                "STREAMCAST_API_JWT_JWKS_FILE: exactly one is required with api_auth=jwt "
                "(or STREAMCAST_API_AUTH=off for local use without auth)"
            )
        secret = self.api_jwt_secret
        if secret is not None and not secret.get_secret_value().strip():
            problems.append(
                f"{env_name(('api_jwt_secret',))} (api_jwt_secret): blank: use a random secret"
            )
        for name in ("api_jwt_audience", "api_jwt_issuer"):
            if not (getattr(self, name) or "").strip():
                problems.append(f"{env_name((name,))} ({name}): required with api_auth=jwt")
        return problems

    @field_validator("api_cors_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        # a browser sends its page's origin as scheme://host[:port]; anything else could
        # never match, so CORS would silently stay shut for the page it was meant for
        for origin in (o.strip() for o in value.split(",")):
            if origin and origin not in ("*", "null") and not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"{origin!r} is not an origin: scheme://host[:port], such as "
                    "https://dash.example.com (no path), null, or *"
                )
        return value

    def check_security(self, given: Mapping[str, Any] | None = None) -> None:
        """The Kafka checks, and the key files the JWT settings name must exist."""
        super().check_security(given)
        for name in ("api_jwt_public_key_file", "api_jwt_jwks_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise SettingsError(
                    [f"{source_name((name,), given)} ({name}): file not found: {path}"]
                )
        model = self.model_path
        if model is not None and not (model.is_file() or model.is_dir()):
            raise SettingsError(
                [f"{source_name(('model_path',), given)} (model_path): no such file or models "
                 f"directory: {model}"]
            )  # fmt: skip


def env_name(loc: tuple[str | int, ...]) -> str:
    """The environment variable that sets the field at ``loc``."""
    return ENV_PREFIX + NESTED.join(str(part).upper() for part in loc)


def from_flags(loc: tuple[str | int, ...], given: Mapping[str, Any] | None) -> bool:
    """Whether the setting at ``loc`` was given as a flag (``given``: the flags' values,
    nested as :func:`load_settings` takes them); flags win, so its value is the flag's."""
    top = str(loc[0]) if loc else ""
    if not given or top not in given:
        return False
    group = given[top]
    return len(loc) == 1 or not isinstance(group, Mapping) or loc[1] in group


def source_name(loc: tuple[str | int, ...], given: Mapping[str, Any] | None = None) -> str:
    """The flag (``--max-keys``, ``--topics.ticks``) when the setting at ``loc`` came from
    one, else its environment variable."""
    if from_flags(loc, given):
        return "--" + ".".join(str(part).replace("_", "-") for part in loc)
    return env_name(loc)


def explain(exc: ValidationError, given: Mapping[str, Any] | None = None) -> list[str]:
    """One line per invalid field: ``STREAMCAST_X (x): problem (got 'value')``, or
    ``--x (x): ...`` when the value came from the flag ``--x`` (in ``given``)."""
    lines = []
    for error in exc.errors():
        loc = tuple(part for part in error["loc"] if part != "__root__")
        dotted = ".".join(str(part) for part in loc) or "settings"
        if not loc:  # a check across fields: its message names the settings itself
            lines.append(describe(error))
            continue
        lines.append(f"{source_name(loc, given)} ({dotted}): {describe(error)}{shown_input(error)}")
    return lines


S = TypeVar("S", bound=ClientSettings)


@overload
def load_settings(
    overrides: Mapping[str, Any] | None = None, env_file: Path | str | None = ".env"
) -> Settings: ...


@overload
def load_settings(
    overrides: Mapping[str, Any] | None, env_file: Path | str | None, kind: type[S]
) -> S: ...


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    env_file: Path | str | None = ".env",
    kind: type[ClientSettings] = Settings,
) -> ClientSettings:
    """Parse settings of ``kind`` from ``overrides`` (CLI flags), the environment and
    ``env_file``.

    Raises :class:`SettingsError` naming every invalid setting (the flag for a value
    given as one), or each line of ``env_file`` that is not ``NAME=value`` UTF-8 text.
    """
    settings = _parse(overrides, env_file, kind)
    settings.check_security(overrides)
    return settings


def _parse(overrides: Mapping[str, Any] | None, env_file: Path | str | None, kind: type[S]) -> S:
    """:func:`load_settings` without the checks of files and credentials."""
    check_env_file(env_file)
    try:
        return kind(_env_file=env_file, **dict(overrides or {}))
    except ValidationError as exc:
        raise SettingsError(explain(exc, overrides)) from None
    except SourceError as exc:
        raise SettingsError([unparsable(exc, env_file)]) from None


_EOL = "\r\n"


def check_env_file(env_file: Path | str | None) -> None:
    """Raise :class:`SettingsError` with one line (file and line number) per line of
    ``env_file`` that is not UTF-8 or not a ``NAME=value`` line (nothing when it is
    absent). python-dotenv would warn, once per read, and go on without that line: a
    typo would run with the defaults."""
    if env_file is None or not Path(env_file).is_file():
        return
    data = Path(env_file).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        byte = data[exc.start : exc.start + 1].hex()
        raise SettingsError(
            [f"{env_file} line {line}: not UTF-8 text (byte 0x{byte}): save it as UTF-8"]
        ) from None
    bad = []
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            # python-dotenv counts blank lines before a statement as part of it
            raw = binding.original.string
            head = raw[: len(raw) - len(raw.lstrip())]
            start = head.rfind("\n") + 1
            line = binding.original.line + head.count("\n")
            shown = raw[start:].rstrip(_EOL)[:80]
            bad.append(f"{env_file} line {line}: not a NAME=value line: {shown!r}")
    if bad:
        raise SettingsError(bad)


#: pydantic-settings names the field it could not parse in one of these two forms
_UNPARSABLE = re.compile(r'field "(?P<a>[^"]+)" from source "(?P<src>\w+)"|for (?P<b>[\w.]+):')


def unparsable(exc: SourceError, env_file: Path | str | None, *, from_cli: bool = False) -> str:
    """One line for a value pydantic-settings could not even parse (a nested group or a
    dict given as something that is not JSON): which variable, flag or file, and how to
    write it."""
    match = _UNPARSABLE.search(str(exc))
    dotted = (match.group("a") or match.group("b")) if match else "settings"
    where = None
    if from_cli or (match and match.group("src") == "CliSettingsSource"):
        where = f"--{dotted.replace('_', '-')}"
    else:
        found = _culprit(dotted.split(".")[0], env_file)
        if found is not None:
            where, dotted = found
    where = where or env_name(tuple(dotted.split(".")))
    cause = exc.__cause__
    why = f" ({' '.join(str(cause).split())})" if cause else ""
    top = dotted.split(".")[0]
    if dotted.endswith("extras"):
        hint = """give a JSON object of model feature -> tick field, e.g. '{"temp": "t"}'"""
    elif dotted == top and top in _GROUPS:
        example = ", ".join(f'"{sub}": "..."' for sub in list(_GROUPS[top])[:2])
        first = next(iter(_GROUPS[top]))
        one = f"--{top}.{first.replace('_', '-')}" if where.startswith("--") else None
        hint = (
            f"give a JSON object, e.g. '{{{example}}}', or set each value on its own "
            f"({one or env_name((top, first))})"
        )
    else:
        hint = "give it as JSON"
    return f"{where} ({dotted}): not valid JSON{why}: {hint}"


def _culprit(top: str, env_file: Path | str | None) -> tuple[str, str] | None:
    """``(where, dotted name)`` of the variable (environment first, then the env file)
    setting ``top`` or a nested value of it whose value is not JSON; None if none is."""
    prefix = env_name((top,))
    for suffix, values in (("", dict(os.environ)), (f" in {env_file}", _dotenv(env_file))):
        for name, value in values.items():
            upper = name.upper()
            if upper != prefix and not upper.startswith(prefix + NESTED):
                continue
            try:
                json.loads(value or "")
            except ValueError:
                dotted = ".".join(part.lower() for part in upper[len(ENV_PREFIX) :].split(NESTED))
                return upper + suffix, dotted
    return None


def _dotenv(env_file: Path | str | None) -> dict[str, str]:
    if env_file is None or not Path(env_file).is_file():
        return {}
    return {k: v for k, v in dotenv_values(env_file).items() if v is not None}


#: the nested groups of settings and their fields
_GROUPS: dict[str, dict[str, Any]] = {
    name: dict(type(field.default).model_fields)
    for name, field in Settings.model_fields.items()
    if isinstance(field.default, BaseModel)
}


def known_variables() -> list[str]:
    """Every ``STREAMCAST_*`` variable a setting of ``serve`` or ``api`` reads (nested ones
    with ``__``): one environment may configure both."""
    fields = dict.fromkeys([*Settings.model_fields, *ApiSettings.model_fields])
    names = [env_name((name,)) for name in fields]
    return names + [env_name((top, sub)) for top, subs in _GROUPS.items() for sub in subs]


#: variables Kubernetes injects for a Service named ``streamcast-*`` (service links):
#: not settings, never a typo of one
_SERVICE_LINK = re.compile(
    r"_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_\d+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)?)$"
)


def unknown_variables(env_file: Path | str | None) -> list[str]:
    """One warning line per ``STREAMCAST_*`` variable (environment or env file) that no
    setting reads, naming the closest real one: a misspelt variable is otherwise ignored
    in silence (pydantic-settings ignores unknown names). Nested groups reject unknown
    names themselves (``extra="forbid"``)."""
    # compared without the common prefix, which would make everything look close
    bare = {name[len(ENV_PREFIX) :]: name for name in known_variables()}
    tops = {env_name((name,)) for name in [*Settings.model_fields, *ApiSettings.model_fields]}
    lines = []
    seen: set[str] = set()
    for where, names in (("", os.environ), (f" in {env_file}", _dotenv(env_file))):
        for raw in names:
            name = raw.upper()
            if not name.startswith(ENV_PREFIX) or name in seen or _SERVICE_LINK.search(name):
                continue
            seen.add(name)
            if name.split(NESTED)[0] in tops:
                continue
            close = difflib.get_close_matches(name[len(ENV_PREFIX) :], list(bare), n=1, cutoff=0.7)
            hint = f"did you mean {bare[close[0]]}?" if close else "`streamcast config` lists them"
            lines.append(f"{name}{where} is not a streamcast setting and is ignored: {hint}")
    return lines


def setting_sources(
    settings: ClientSettings, overrides: Mapping[str, Any] | None, env_file: Path | str | None
) -> dict[str, str]:
    """Where each (dotted) setting came from: ``cli``, ``env``, ``.env`` or ``default``.

    A nested value comes from a whole-group variable (``STREAMCAST_TOPICS='{...}'``) only
    when its JSON holds that value; an env file line without a value (``NAME`` alone)
    sets nothing."""
    environ = {k.upper(): v for k, v in os.environ.items()}
    dotenv = {k.upper(): v for k, v in _dotenv(env_file).items()}
    sources: dict[str, str] = {}
    for dotted, _ in flatten(settings):
        loc = tuple(dotted.split("."))
        if from_flags(loc, overrides):
            sources[dotted] = "cli"
        elif _sets(environ, loc):
            sources[dotted] = "env"
        elif _sets(dotenv, loc):
            sources[dotted] = ".env"
        else:
            sources[dotted] = "default"
    return sources


def _sets(variables: Mapping[str, str], loc: tuple[str, ...]) -> bool:
    """Whether ``variables`` set the setting at ``loc``: its own variable, or for a nested
    one a whole-group variable whose JSON object has it."""
    if env_name(loc) in variables:
        return True
    whole = variables.get(env_name(loc[:1]))
    if len(loc) < 2 or whole is None:
        return False
    try:
        group = json.loads(whole)
    except ValueError:
        return False
    return isinstance(group, dict) and loc[1] in group


class _ApiView(ApiSettings):
    """:class:`ApiSettings` without the auth check across fields, so that ``streamcast
    config`` can show them while the API's auth is not configured (it says so instead)."""

    check_auth: ClassVar[bool] = False


def api_view(
    overrides: Mapping[str, Any] | None, env_file: Path | str | None
) -> tuple[ApiSettings, list[str]]:
    """The settings ``streamcast api`` would read (flags of ``overrides`` it has too) and,
    one line each, why it would refuse them (auth not configured, a file missing).

    Raises :class:`SettingsError` for a value that is invalid in itself."""
    shared = {k: v for k, v in (overrides or {}).items() if k in ApiSettings.model_fields}
    view = _parse(shared, env_file, _ApiView)
    problems = view.auth_problems()
    try:
        view.check_security(shared)
    except SettingsError as exc:
        problems += exc.problems
    return view, problems


def flatten(settings: ClientSettings) -> list[tuple[str, str]]:
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
