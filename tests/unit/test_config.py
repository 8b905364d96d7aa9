"""Settings: precedence, validation messages that name the setting, masking, sources."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from streamcast.config import ApiSettings, Settings, flatten, load_settings, setting_sources
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


@pytest.mark.parametrize(
    ("env", "kind"),
    [
        ("STREAMCAST_API_JWT_LEEWAY_S", ApiSettings),
        ("STREAMCAST_API_RATE_PER_S", ApiSettings),
        ("STREAMCAST_API_HEARTBEAT_S", ApiSettings),
        ("STREAMCAST_DRAIN_TIMEOUT_S", Settings),
        ("STREAMCAST_KEY_TTL_S", Settings),
        ("STREAMCAST_DRIFT__THRESHOLD", Settings),
    ],
)
@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_no_setting_takes_infinity_or_nan(
    monkeypatch: pytest.MonkeyPatch, env: str, kind: type[Settings | ApiSettings], value: str
) -> None:
    """A leeway of inf let a token that expired in 1970 through; a rate of inf turned the
    limit off; nan passes no comparison but inf passes ``>= 0``. Every float setting is
    finite (None says "no bound" where a setting has one)."""
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError) as info:
        load_settings(None, None, kind)
    (problem,) = info.value.problems
    assert problem.startswith(env)


def test_the_jwt_leeway_is_an_hour_at_most(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMCAST_API_JWT_LEEWAY_S", "7200")
    with pytest.raises(SettingsError, match="must be <= 3600"):
        load_settings(None, None, ApiSettings)


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
    with pytest.raises(SettingsError, match="--ssl-cafile"):  # overrides are flags
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
    with pytest.raises(SettingsError, match=r"--compression-type \(compression_type\)"):
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
    assert line.startswith("--bootstrap-servers (bootstrap_servers): ")
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


def _run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from streamcast.tools.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_an_env_file_that_is_not_utf8_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env_file = tmp_path / "latin.env"
    env_file.write_bytes(b"STREAMCAST_GROUP_ID=g\nSTREAMCAST_MAX_KEYS=\xff\xfe\n")
    with pytest.raises(SettingsError) as info:
        load_settings(env_file=env_file)
    (line,) = info.value.problems
    assert line.startswith(f"{env_file} line 2: not UTF-8")
    status, out, err = _run_cli(["config", "--env-file", str(env_file)], capsys)
    assert status == 2
    assert err.splitlines() == [f"error: {line}"]
    assert out == ""


def test_malformed_env_file_lines_are_an_error_naming_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env_file = tmp_path / "typo.env"
    env_file.write_text("# comment\n\nthis is not env\nSTREAMCAST_GROUP_ID=g\n=== \n")
    with pytest.raises(SettingsError) as info:
        load_settings(env_file=env_file)
    assert info.value.problems == [
        f"{env_file} line 3: not a NAME=value line: 'this is not env'",
        f"{env_file} line 5: not a NAME=value line: '=== '",
    ]
    status, out, err = _run_cli(["config", "--env-file", str(env_file)], capsys)
    assert status == 2
    assert out == ""
    assert err.splitlines() == [f"error: {p}" for p in info.value.problems]
    # the default ./.env is checked as well
    (tmp_path / ".env").write_text("STREAMCAST_GROUP_ID g\n")
    status, _, err = _run_cli(["config"], capsys)
    assert status == 2
    assert err.splitlines() == [
        "error: .env line 1: not a NAME=value line: 'STREAMCAST_GROUP_ID g'"
    ]


@pytest.mark.parametrize(
    "name",
    ["model_path", "ssl_cafile", "ssl_certfile", "ssl_keyfile"],
)
@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_path_setting_means_unset_not_the_current_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str
) -> None:
    monkeypatch.setenv(f"STREAMCAST_{name.upper()}", value)
    assert getattr(load_settings(env_file=None), name) is None
    monkeypatch.delenv(f"STREAMCAST_{name.upper()}")
    env_file = tmp_path / "p.env"
    env_file.write_text(f"STREAMCAST_{name.upper()}={value}\n")
    assert getattr(load_settings(env_file=env_file), name) is None
    assert getattr(load_settings({name: value}, env_file=None), name) is None


@pytest.mark.parametrize(
    "name", ["model_path", "api_jwt_public_key_file", "api_jwt_jwks_file", "ssl_cafile"]
)
def test_an_empty_api_path_setting_means_unset(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    from streamcast.config import ApiSettings

    monkeypatch.setenv("STREAMCAST_API_AUTH", "off")
    monkeypatch.setenv(f"STREAMCAST_{name.upper()}", "")
    assert getattr(load_settings(None, None, ApiSettings), name) is None


def test_an_empty_api_host_means_the_default_address_not_every_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``API_HOST=${API_HOST:-}`` in a compose file: blank is unset, so without auth the
    API listens on loopback (it was refused as "reachable from other machines")."""
    monkeypatch.setenv("STREAMCAST_API_HOST", " ")
    monkeypatch.setenv("STREAMCAST_API_AUTH", "off")
    settings = load_settings(None, None, ApiSettings)
    assert settings.api_host is None
    assert settings.bind_host == "127.0.0.1"
    monkeypatch.setenv("STREAMCAST_API_HOST", " 127.0.0.1 ")  # and blanks around a host
    assert load_settings(None, None, ApiSettings).bind_host == "127.0.0.1"


def test_an_empty_model_path_is_the_model_path_required_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from streamcast.errors import ConfigurationError
    from streamcast.service.models import required_model_path

    (tmp_path / "stray.onnx").write_bytes(b"")  # in the working directory: never picked up
    monkeypatch.setenv("STREAMCAST_MODEL_PATH", "")
    with pytest.raises(
        ConfigurationError, match=r"^STREAMCAST_MODEL_PATH \(model_path\): required"
    ):
        required_model_path(load_settings(env_file=None).model_path)


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("STREAMCAST_TOPICS__TICKS", "bad topic"),
        ("STREAMCAST_TOPICS__TICKS", " ticks"),
        ("STREAMCAST_TOPICS__FORECASTS", "a/b"),
        ("STREAMCAST_TOPICS__ALERTS", ".."),
        ("STREAMCAST_TOPICS__DEAD_LETTER", "."),
        ("STREAMCAST_TOPICS__STATE_CHANGELOG", "x" * 250),
        ("STREAMCAST_TOPICS__TICKS", "tïcks"),
    ],
)
def test_topic_names_kafka_refuses_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError) as info:
        load_settings(env_file=None)
    (line,) = info.value.problems
    dotted = "topics." + env.split("__")[1].lower()
    assert line.startswith(f"{env} ({dotted}): ")
    assert "topic name" in line
    assert "\n" not in line


def test_topic_names_kafka_accepts_are_accepted() -> None:
    names = {"ticks": "a.b_c-D9", "forecasts": "x" * 249, "alerts": "..a", "dead_letter": "._"}
    topics = load_settings({"topics": names}, env_file=None).topics
    assert (topics.ticks, topics.forecasts, topics.alerts, topics.dead_letter) == (
        "a.b_c-D9", "x" * 249, "..a", "._"
    )  # fmt: skip


@pytest.mark.parametrize("name", ["group_id", "transactional_id_prefix"])
@pytest.mark.parametrize("value", [" ", "\t  "])
def test_blank_group_and_transactional_ids_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(f"STREAMCAST_{name.upper()}", value)
    with pytest.raises(SettingsError) as info:
        load_settings(env_file=None)
    (line,) = info.value.problems
    assert line.startswith(f"STREAMCAST_{name.upper()} ({name}): must not be blank")


def test_group_ids_may_hold_characters_topics_may_not() -> None:
    settings = load_settings({"group_id": "team a/forecasts"}, env_file=None)
    assert settings.group_id == "team a/forecasts"


def test_a_bad_flag_value_names_the_flag(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STREAMCAST_LINGER_MS", "-1")  # from the environment: the variable
    status, _, err = _run_cli(["config", "--max-keys", "abc", "--topics.ticks", "a b"], capsys)
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 3, lines
    assert lines[1].startswith("error: STREAMCAST_LINGER_MS (linger_ms): must be >= 0")
    assert lines[2].startswith("error: --max-keys (max_keys): input should be a valid integer")
    assert lines[0] == (
        "error: --topics.ticks (topics.ticks): not a Kafka topic name: use only letters "
        "A-Z a-z, digits, '.', '_' and '-' (and not '.' or '..') (got 'a b')"
    )
    monkeypatch.delenv("STREAMCAST_LINGER_MS")
    with pytest.raises(SettingsError) as info:
        load_settings({"drift": {"span": 0}}, env_file=None)
    assert info.value.problems[0].startswith("--drift.span (drift.span): must be >= 1")
    with pytest.raises(SettingsError, match=r"^--ssl-cafile \(ssl_cafile\): file not found"):
        load_settings({"ssl_cafile": "missing.pem"}, env_file=None)


def test_config_shows_the_api_settings_in_their_own_section(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from streamcast.config import ApiSettings

    monkeypatch.setenv("STREAMCAST_API_PORT", "9999")
    monkeypatch.setenv("STREAMCAST_API_JWT_SECRET", "jwt-secret-value")
    (tmp_path / ".env").write_text("STREAMCAST_API_MAX_KEYS=5\n")
    status, out, err = _run_cli(["config", "--max-keys", "7"], capsys)
    assert status == 0, err
    assert "jwt-secret-value" not in out
    lines = out.splitlines()
    header = lines.index("# streamcast api (api_* settings; the others are shared)")
    rows = {line.split()[0]: line for line in lines[header + 1 :] if line[0] != "#"}
    api_only = [name for name in ApiSettings.model_fields if name not in Settings.model_fields]
    assert list(rows) == api_only
    assert rows["api_port"].split()[1] == "9999" and rows["api_port"].endswith("[env]")
    assert rows["api_max_keys"].split()[1] == "5" and rows["api_max_keys"].endswith("[.env]")
    assert rows["api_jwt_secret"].split()[1] == "**********"
    assert rows["api_rate_per_s"].endswith("[default]")
    # serve's settings come first, as before
    assert lines[0].startswith("bootstrap_servers ")
    assert any(line.startswith("max_keys ") and line.endswith("[cli]") for line in lines)
    # the API's auth is not configured (no audience, issuer): a note, not a failure
    notes = [line for line in lines if line.startswith("# streamcast api would refuse")]
    assert len(notes) == 2 and "STREAMCAST_API_JWT_AUDIENCE" in notes[0], notes
    assert err == ""


def test_config_fails_on_an_invalid_api_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STREAMCAST_API_PORT", "abc")
    status, out, err = _run_cli(["config"], capsys)
    assert status == 2
    assert out == ""
    assert err.strip().splitlines() == [
        "error: STREAMCAST_API_PORT (api_port): input should be a valid integer, unable to "
        "parse string as an integer (got 'abc')"
    ]


def test_a_whole_group_variable_is_the_source_only_of_the_values_it_holds(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STREAMCAST_TOPICS", '{"ticks": "x"}')
    env_file = tmp_path / "g.env"
    env_file.write_text('STREAMCAST_FIELDS={"ts": "time"}\nSTREAMCAST_TOPICS__ALERTS=al\n')
    settings = load_settings(env_file=env_file)
    sources = setting_sources(settings, None, env_file)
    assert sources["topics.ticks"] == "env"
    assert sources["topics.alerts"] == ".env"
    assert sources["topics.forecasts"] == "default"
    assert sources["topics.dead_letter"] == "default"
    assert sources["fields.ts"] == ".env"
    assert sources["fields.key"] == "default"


def test_an_env_file_line_without_a_value_is_not_a_source(tmp_path: Path) -> None:
    env_file = tmp_path / "n.env"
    env_file.write_text("STREAMCAST_GROUP_ID\nSTREAMCAST_MAX_KEYS=9\n")
    settings = load_settings(env_file=env_file)
    assert settings.group_id == "streamcast"
    sources = setting_sources(settings, None, env_file)
    assert sources["group_id"] == "default"
    assert sources["max_keys"] == ".env"


@pytest.mark.parametrize("origin", ["dash.example.com", "https://dash.example.com/page", "//x"])
def test_a_cors_origin_a_browser_never_sends_is_refused(origin: str) -> None:
    """A browser sends its page's origin as scheme://host[:port]: an entry of any other
    shape could never match, and CORS stayed shut for the page it was meant for."""
    with pytest.raises(SettingsError, match="is not an origin"):
        load_settings({"api_auth": "off", "api_cors_origins": origin}, None, ApiSettings)


def test_cors_origins_of_every_browser_shape_are_accepted() -> None:
    origins = (
        "https://dash.example.com, http://localhost:3000,http://[::1]:8080, *,"
        "chrome-extension://abcdefghijklmnop, capacitor://localhost, null"
    )
    settings = load_settings({"api_auth": "off", "api_cors_origins": origins}, None, ApiSettings)
    assert settings.cors_origins == [
        "https://dash.example.com", "http://localhost:3000", "http://[::1]:8080", "*",
        "chrome-extension://abcdefghijklmnop", "capacitor://localhost", "null",
    ]  # fmt: skip


def test_a_blank_jwt_secret_audience_or_issuer_is_refused() -> None:
    """32 spaces passed the secret's length rule, and an audience or issuer of one space
    passed as set."""
    blank = {"api_auth": "jwt", "api_jwt_secret": " " * 32, "api_jwt_audience": " ",
             "api_jwt_issuer": "\t"}  # fmt: skip
    with pytest.raises(SettingsError) as info:
        load_settings(blank, None, ApiSettings)
    text = " ".join(info.value.problems)
    for name in ("api_jwt_secret", "api_jwt_audience", "api_jwt_issuer"):
        assert f"({name})" in text
