"""Settings: precedence, validation messages that name the setting, masking, sources."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from streamcast.config import Settings, flatten, load_settings, setting_sources
from streamcast.errors import SettingsError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No STREAMCAST_* variables or .env file from the developer's shell leak in."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("STREAMCAST_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_cli_overrides_env_overrides_dotenv_overrides_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env_file = tmp_path / "prod.env"
    env_file.write_text(
        "STREAMCAST_GROUP_ID=from-dotenv\nSTREAMCAST_MAX_KEYS=11\nSTREAMCAST_TOPICS__ALERTS=a1\n"
    )
    monkeypatch.setenv("STREAMCAST_MAX_KEYS", "22")
    monkeypatch.setenv("STREAMCAST_TOPICS__TICKS", "env-ticks")
    overrides = {"topics": {"forecasts": "cli-forecasts"}, "batch_max_records": 7}
    settings = load_settings(overrides, env_file=env_file)
    assert settings.group_id == "from-dotenv"
    assert settings.max_keys == 22
    assert settings.batch_max_records == 7
    assert settings.topics.ticks == "env-ticks"
    assert settings.topics.forecasts == "cli-forecasts"
    assert settings.topics.alerts == "a1"
    assert settings.topics.dead_letter == Settings().topics.dead_letter
    sources = setting_sources(settings, overrides, env_file)
    assert sources["group_id"] == ".env"
    assert sources["max_keys"] == "env"
    assert sources["topics.forecasts"] == "cli"
    assert sources["batch_max_records"] == "cli"
    assert sources["linger_ms"] == "default"


@pytest.mark.parametrize(
    ("env", "value", "expected"),
    [
        ("STREAMCAST_MAX_KEYS", "0", "STREAMCAST_MAX_KEYS (max_keys): must be > 0"),
        ("STREAMCAST_MAX_KEYS", "lots", "STREAMCAST_MAX_KEYS (max_keys): "),
        ("STREAMCAST_AGGREGATION", "median", "STREAMCAST_AGGREGATION (aggregation): must be one"),
        ("STREAMCAST_SECURITY_PROTOCOL", "TLS", "STREAMCAST_SECURITY_PROTOCOL (security_protocol)"),
        ("STREAMCAST_HTTP_PORT", "70000", "STREAMCAST_HTTP_PORT (http_port): must be <= 65535"),
        ("STREAMCAST_TOPICS__TICKS", "", "STREAMCAST_TOPICS__TICKS (topics.ticks): must not be"),
        ("STREAMCAST_PROCESSING_GUARANTEE", "once", "(processing_guarantee): must be one of"),
        ("STREAMCAST_SESSION_TIMEOUT_MS", "10", "(session_timeout_ms): must be >= 1000"),
    ],
)
def test_invalid_setting_names_variable_and_problem(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError) as info:
        load_settings(env_file=None)
    assert len(info.value.problems) == 1
    assert expected in info.value.problems[0]


def test_every_invalid_field_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMCAST_MAX_KEYS", "-1")
    monkeypatch.setenv("STREAMCAST_LINGER_MS", "-5")
    with pytest.raises(SettingsError) as info:
        load_settings(env_file=None)
    joined = "\n".join(info.value.problems)
    assert "STREAMCAST_MAX_KEYS" in joined
    assert "STREAMCAST_LINGER_MS" in joined


def test_sasl_needs_credentials_and_ssl_files_must_exist(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="STREAMCAST_SASL_USERNAME"):
        load_settings({"security_protocol": "sasl_ssl"}, env_file=None)
    with pytest.raises(SettingsError, match="STREAMCAST_SSL_CAFILE"):
        load_settings({"ssl_cafile": tmp_path / "missing.pem"}, env_file=None)
    ok = load_settings(
        {"security_protocol": "SASL_PLAINTEXT", "sasl_username": "u", "sasl_password": "p"},
        env_file=None,
    )
    assert isinstance(ok.sasl_password, SecretStr)
    assert ok.sasl_password.get_secret_value() == "p"


def test_secrets_are_masked_when_printed() -> None:
    settings = load_settings(
        {"sasl_username": "alice", "sasl_password": "hunter2", "ssl_key_password": "k3y"},
        env_file=None,
    )
    printed = dict(flatten(settings))
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in " ".join(printed.values())
    assert "k3y" not in " ".join(printed.values())
    assert printed["sasl_password"] == "**********"
    assert printed["sasl_username"] == "alice"


def test_settings_are_frozen() -> None:
    settings = load_settings(env_file=None)
    with pytest.raises(ValueError, match="frozen"):
        settings.max_keys = 3  # type: ignore[misc]


def test_security_settings_become_client_options() -> None:
    from streamcast.kafka.clients import client_options

    plain = client_options(load_settings(env_file=None))
    assert plain["security_protocol"] == "PLAINTEXT"
    assert "ssl_context" not in plain
    assert "sasl_plain_password" not in plain
    sasl = client_options(
        load_settings(
            {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_username": "svc",
                "sasl_password": "pw",
                "bootstrap_servers": "b1:9093,b2:9093",
            },
            env_file=None,
        )
    )
    assert sasl["bootstrap_servers"] == "b1:9093,b2:9093"
    assert sasl["sasl_mechanism"] == "SCRAM-SHA-512"
    assert sasl["sasl_plain_username"] == "svc"
    assert sasl["sasl_plain_password"] == "pw"
    assert sasl["ssl_context"].verify_mode.name == "CERT_REQUIRED"


def test_every_producer_compresses_as_configured() -> None:
    from streamcast.kafka.clients import producer_options

    assert producer_options(load_settings(env_file=None))["compression_type"] == "zstd"
    assert (
        producer_options(load_settings({"compression_type": "none"}, env_file=None))[
            "compression_type"
        ]
        is None
    )
    lz4 = producer_options(load_settings({"compression_type": "LZ4"}, env_file=None))
    assert (lz4["compression_type"], lz4["acks"], lz4["enable_idempotence"]) == ("lz4", "all", True)
    with pytest.raises(SettingsError, match=r"STREAMCAST_COMPRESSION_TYPE \(compression_type\)"):
        load_settings({"compression_type": "brotli"}, env_file=None)


def test_every_codec_kafka_has_can_be_read_and_written() -> None:
    """cramjam is a runtime dependency: without it aiokafka cannot read snappy, lz4 or
    zstd batches (UnsupportedCodecError on every fetch) nor write them."""
    from aiokafka import codec

    assert codec.has_gzip() and codec.has_snappy() and codec.has_lz4() and codec.has_zstd()
    payload = b'{"key": "sensor-1", "values": [1.0, 2.0]}' * 20
    for encode, decode in [
        (codec.snappy_encode, codec.snappy_decode),
        (codec.lz4_encode, codec.lz4_decode),
        (codec.zstd_encode, codec.zstd_decode),
    ]:
        assert decode(encode(payload)) == payload


@pytest.mark.parametrize(
    ("servers", "problem"),
    [
        ("localhost:abc", "'abc' is not a port"),
        ("localhost", "'localhost' has no port"),
        ("a:1,,b:2", "'' has no port"),
        ("kafka:0", "'0' is not a port"),
        ("kafka:70000", "'70000' is not a port"),
        ("ka fka:9092", "'ka fka' is not a host"),
        (":9092", "'' is not a host"),
    ],
)
def test_bootstrap_servers_must_be_host_port_lists(servers: str, problem: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"bootstrap_servers": servers}, env_file=None)
    (line,) = info.value.problems
    assert line.startswith("STREAMCAST_BOOTSTRAP_SERVERS (bootstrap_servers): ")
    assert problem in line
    assert "host:port" in line


def test_bootstrap_servers_accepts_names_addresses_and_ipv6() -> None:
    servers = "kafka-1.prod:9092, 10.0.0.7:9093,[::1]:19092,broker_2:1"
    assert load_settings({"bootstrap_servers": servers}, env_file=None).bootstrap_servers == servers


@pytest.mark.parametrize(
    ("env", "value", "start", "hint"),
    [
        ("STREAMCAST_FIELDS__EXTRAS", "not json", "STREAMCAST_FIELDS__EXTRAS (fields.extras)",
         '{"temp": "t"}'),
        ("STREAMCAST_TOPICS", "{not json", "STREAMCAST_TOPICS (topics)",
         "STREAMCAST_TOPICS__TICKS"),
        ("STREAMCAST_FIELDS", "[1", "STREAMCAST_FIELDS (fields)", "STREAMCAST_FIELDS__KEY"),
    ],
)  # fmt: skip
def test_values_that_are_not_json_are_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, start: str, hint: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError) as info:
        load_settings(env_file=None)
    (line,) = info.value.problems
    assert line.startswith(f"{start}: not valid JSON (")
    assert hint in line
    assert "\n" not in line


def test_json_errors_in_the_env_file_name_the_file(tmp_path: Path) -> None:
    env_file = tmp_path / "prod.env"
    env_file.write_text("STREAMCAST_TOPICS={ticks: x}\n")
    with pytest.raises(SettingsError) as info:
        load_settings(env_file=env_file)
    assert info.value.problems[0].startswith(f"STREAMCAST_TOPICS in {env_file} (topics): not valid")


def test_unknown_variables_are_named_with_the_closest_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from streamcast.config import unknown_variables

    monkeypatch.setenv("STREAMCAST_BOOTSTRAP_SERVER", "kafka:9092")
    monkeypatch.setenv("STREAMCAST_FIELDS_TS", "time")
    monkeypatch.setenv("STREAMCAST_WHATEVER", "1")
    monkeypatch.setenv("STREAMCAST_MAX_KEYS", "10")  # real settings are not reported
    monkeypatch.setenv("STREAMCAST_TOPICS__TICKS", "t")
    # Kubernetes service links for a Service named streamcast-metrics: not typos
    monkeypatch.setenv("STREAMCAST_METRICS_SERVICE_HOST", "10.0.0.3")
    monkeypatch.setenv("STREAMCAST_METRICS_PORT_9108_TCP_ADDR", "10.0.0.3")
    env_file = tmp_path / "prod.env"
    env_file.write_text("STREAMCAST_GROUPID=g\n")
    lines = sorted(unknown_variables(env_file))
    assert lines == [
        "STREAMCAST_BOOTSTRAP_SERVER is not a streamcast setting and is ignored: "
        "did you mean STREAMCAST_BOOTSTRAP_SERVERS?",
        "STREAMCAST_FIELDS_TS is not a streamcast setting and is ignored: "
        "did you mean STREAMCAST_FIELDS__TS?",
        f"STREAMCAST_GROUPID in {env_file} is not a streamcast setting and is ignored: "
        "did you mean STREAMCAST_GROUP_ID?",
        "STREAMCAST_WHATEVER is not a streamcast setting and is ignored: "
        "`streamcast config` lists them",
    ]
