"""The ``streamcast`` command: help with examples, ``config`` masking, one-line errors."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest

from streamcast.config import flatten, load_settings
from streamcast.tools.cli import build_parser, main, overrides_from


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No STREAMCAST_* variables leak in; the root logging set-up ``serve`` installs
    (bound to this test's captured stderr) is undone afterwards."""
    for name in list(os.environ):
        if name.upper().startswith("STREAMCAST_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


@pytest.mark.parametrize("command", ["serve", "config", "replay", "tail", "topics"])
def test_every_command_has_help_with_examples(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = _run([command, "--help"], capsys)
    assert status == 0
    assert "examples:" in out
    assert f"streamcast {command}" in out


def test_config_masks_secrets_and_says_where_settings_came_from(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / ".env").write_text("STREAMCAST_SASL_USERNAME=svc\nSTREAMCAST_GROUP_ID=g-dotenv\n")
    monkeypatch.setenv("STREAMCAST_SASL_PASSWORD", "hunter2-secret")
    monkeypatch.setenv("STREAMCAST_SECURITY_PROTOCOL", "SASL_SSL")
    status, out, err = _run(["config", "--max-keys", "777"], capsys)
    assert status == 0, err
    assert "hunter2-secret" not in out
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert "**********" in lines["sasl_password"]
    assert lines["sasl_password"].endswith("[env]")
    assert lines["group_id"].endswith("[.env]")
    assert "777" in lines["max_keys"]
    assert lines["max_keys"].endswith("[cli]")
    assert lines["linger_ms"].endswith("[default]")


def test_invalid_setting_is_one_line_naming_it_with_status_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STREAMCAST_MAX_KEYS", "0")
    status, _, err = _run(["config"], capsys)
    assert status == 2
    assert err.strip().splitlines() == [
        "error: STREAMCAST_MAX_KEYS (max_keys): must be > 0 (got '0')"
    ]


def test_invalid_flag_value_names_the_setting(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = _run(["config", "--batch-max-records", "-3"], capsys)
    assert status == 2
    assert "--batch-max-records (batch_max_records): must be > 0" in err  # the flag given


def test_serve_without_model_fails_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = _run(["serve", "--log-level", "ERROR"], capsys)
    assert status == 2
    assert err.strip().splitlines() == [
        "error: STREAMCAST_MODEL_PATH (model_path): required: the ONNX file from streamcast-train "
        "(or a models directory)"
    ]


def test_serve_with_a_broken_model_file_fails_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not an onnx file")
    status, _, err = _run(["serve", "--model", str(bad)], capsys)
    assert status == 2
    assert len(err.strip().splitlines()) == 1
    assert str(bad) in err


def test_replay_with_missing_column_names_the_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "d.csv"
    data.write_text("sensor,time,count\na,2024-01-01T00:00:00Z,1\n")
    argv = ["replay", "--data", str(data), "--key-col", "sensor", "--time-col", "when"]
    status, _, err = _run([*argv, "--value-col", "count"], capsys)
    assert status == 2
    assert "['when'] not found" in err


def test_flags_become_nested_overrides() -> None:
    args = build_parser().parse_args(
        ["serve", "--ticks-topic", "in", "--topics.forecasts", "out", "--max-gap", "2"]
    )
    overrides = overrides_from(args)
    assert overrides == {"topics": {"ticks": "in", "forecasts": "out"}, "max_gap": "2"}
    settings = load_settings(overrides, env_file=None)
    assert (settings.topics.ticks, settings.topics.forecasts) == ("in", "out")
    assert settings.max_gap == 2


def test_exactly_once_flags_become_settings() -> None:
    args = build_parser().parse_args(
        ["serve", "--processing-guarantee", "exactly_once", "--state-changelog-topic", "st"]
    )
    assert overrides_from(args) == {
        "processing_guarantee": "exactly_once",
        "topics": {"state_changelog": "st"},
    }


def test_every_setting_has_a_flag_with_help() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    serve = commands.choices["serve"]
    flags = {o for action in serve._actions for o in action.option_strings}
    for dotted, _ in flatten(load_settings({}, env_file=None)):
        flag = "--" + dotted.replace("_", "-")
        assert flag in flags, f"no flag for setting {dotted}"
    helps = {o: a.help for a in serve._actions for o in a.option_strings}
    assert all(helps[f] and "(default:" in helps[f] for f in flags if f.startswith("--max"))


def test_console_script_module_entry_has_no_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMCAST_")}
    env["STREAMCAST_LOG_FORMAT"] = "yaml"
    result = subprocess.run(
        [sys.executable, "-m", "streamcast", "config"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "STREAMCAST_LOG_FORMAT (log_format): must be one of" in result.stderr


def test_replay_encodes_in_time_order_and_paces_by_rate_or_speed(tmp_path: Path) -> None:
    import pandas as pd

    from streamcast.config import load_settings
    from streamcast.tools.replay import ReplayOptions, due_times, encode_ticks, next_chunk

    frame = pd.DataFrame(
        {
            "k": ["a", "b", "a", "b"],
            "t": [1_700_000_120, 1_700_000_000, 1_700_000_000, 1_700_000_060],
            "v": [3.0, 1.0, 2.0, 4.0],
            "temp": [0.5, 0.6, 0.7, 0.8],
        }
    )
    settings = load_settings(
        {"fields": {"value": "reading", "extras": {"temp": "temperature"}}}, env_file=None
    )
    options = ReplayOptions(tmp_path, "k", "t", "v", topic="x", features=("temp",))
    rows = encode_ticks(frame, options, settings)
    docs = [orjson.loads(v) for v in rows.values]
    assert [d["ts"] for d in docs] == [1_700_000_000, 1_700_000_000, 1_700_000_060, 1_700_000_120]
    assert [d["key"] for d in docs] == ["b", "a", "b", "a"]  # stable for equal times
    assert docs[0] == {"key": "b", "ts": 1_700_000_000, "reading": 1.0, "temperature": 0.6}
    assert rows.keys[0] == b"b"
    limited = encode_ticks(frame, ReplayOptions(tmp_path, "k", "t", "v", "x", limit=2), settings)
    assert len(limited) == 2

    many = encode_ticks(
        pd.DataFrame({"k": ["a"] * 1200, "t": range(0, 120_000, 100), "v": 1.0}),
        ReplayOptions(tmp_path, "k", "t", "v", "x"),
        settings,
    )
    # every message paced on its own: the README's --speed 3600 on hourly data sent 500
    # at once then nothing for minutes; --rate 20 finished 100 messages in 1.96 s
    by_rate = due_times(many, ReplayOptions(tmp_path, "k", "t", "v", "x", rate=100.0))
    assert by_rate[:3].tolist() == [0.0, 0.01, 0.02] and by_rate[-1] == pytest.approx(11.99)
    by_speed = due_times(many, ReplayOptions(tmp_path, "k", "t", "v", "x", speed=1000.0))
    assert by_speed[:3].tolist() == [0.0, 0.1, 0.2]
    assert next_chunk(by_rate, 0, 0.0) == 1, "only what is due"
    assert next_chunk(by_rate, 1, 0.0) == 1, "nothing due yet: wait"
    assert next_chunk(by_rate, 1, 0.05) == 6
    flat_out = due_times(many, ReplayOptions(tmp_path, "k", "t", "v", "x"))
    assert next_chunk(flat_out, 0, 0.0) == 500, "flat out: chunks of CHUNK"
    # ISO-8601 times pace in seconds too (pandas 3 parses them at microseconds: read as
    # nanoseconds they made --speed 3600 on hourly data send an hour per millisecond)
    hourly = pd.date_range("2026-11-01", periods=4, freq="h", tz="UTC").strftime("%Y-%m-%dT%H:%MZ")
    iso = encode_ticks(
        pd.DataFrame({"k": "a", "t": hourly, "v": 1.0}),
        ReplayOptions(tmp_path, "k", "t", "v", "x"),
        settings,
    )
    assert [orjson.loads(v)["ts"] for v in iso.values][1] == "2026-11-01T01:00:00Z"
    by_speed = due_times(iso, ReplayOptions(tmp_path, "k", "t", "v", "x", speed=3600.0))
    assert by_speed.tolist() == [0.0, 1.0, 2.0, 3.0]


def test_tail_lines_are_readable_for_forecasts_and_dead_letters() -> None:
    from streamcast.core.records import ForecastBatch, encode_forecasts
    from streamcast.tools.tail import describe

    batch = ForecastBatch(
        ["s-1"], np.array([1_714_557_600]), np.array([[1.0, 2.5, 3.25, 4.0, 5.0, 6.0]]), "m", "2",
        3600, 6, np.array([0]),
    )  # fmt: skip
    ((_, forecast),) = encode_forecasts(batch)
    line = describe(forecast, {})
    assert "s-1" in line
    assert "2024-05-01T10:00:00Z" in line
    assert "m@2" in line
    assert "3.25" in line
    assert "…" in line
    dead = describe(
        b"\x80garbage",
        {
            "streamcast.reason": b"invalid_utf8",
            "streamcast.source.topic": b"ticks",
            "streamcast.source.partition": b"1",
            "streamcast.source.offset": b"42",
        },
    )
    assert "invalid_utf8" in dead
    assert "ticks[1]@42" in dead
    assert describe(b"not json", {}).startswith("b'not json'")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["topics", "create", "--partitions", "0"], "expected a positive integer, got '0'"),
        (["tail", "--timezone", "Mars/Olympus"], "unknown time zone 'Mars/Olympus'"),
    ],
)
def test_tool_flags_are_checked_in_one_line(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = _run(argv, capsys)
    assert status == 2
    assert says in err and "Traceback" not in err


def test_unreachable_broker_is_one_line_for_the_tools(tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_text("sensor,time,count\na,2024-01-01T00:00:00Z,1\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMCAST_")}
    result = subprocess.run(
        [
            sys.executable, "-m", "streamcast", "replay", "--data", str(data),
            "--key-col", "sensor", "--time-col", "time", "--value-col", "count",
            "--bootstrap-servers", "127.0.0.1:1",
        ],
        env=env, cwd=tmp_path, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: Kafka:")
    assert "--bootstrap-servers" in lines[0]


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("command", ["serve", "config", "replay", "tail"])
def test_bootstrap_servers_that_are_not_host_port_fail_in_one_line(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = ["--data", "d.csv", "--key-col", "k", "--time-col", "t", "--value-col", "v"]
    argv = [
        command,
        "--bootstrap-servers",
        "localhost:abc",
        *(extra if command == "replay" else []),
    ]
    status, _, err = _run(argv, capsys)
    assert status == 2
    line = _one_error_line(err)
    assert "--bootstrap-servers (bootstrap_servers): 'abc' is not a port" in line


@pytest.mark.parametrize(
    ("env", "argv", "start"),
    [
        ({"STREAMCAST_FIELDS__EXTRAS": "not json"}, [],
         "error: STREAMCAST_FIELDS__EXTRAS (fields.extras): not valid JSON"),
        ({"STREAMCAST_TOPICS": "{not json"}, [],
         "error: STREAMCAST_TOPICS (topics): not valid JSON"),
        ({}, ["--topics", "{not json"], "error: --topics (topics): not valid JSON"),
        ({}, ["--fields.extras", "not json"], "error: --fields.extras (fields.extras): not valid"),
    ],
)  # fmt: skip
def test_values_that_are_not_json_fail_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    argv: list[str],
    start: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    status, _, err = _run(["serve", *argv], capsys)
    assert status == 2
    assert _one_error_line(err).startswith(start)


def test_a_named_env_file_must_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = _run(["config", "--env-file", "nope.env"], capsys)
    assert status == 2
    assert "--env-file nope.env: file not found" in _one_error_line(err)
    # without --env-file, an absent ./.env is fine
    assert _run(["config"], capsys)[0] == 0


def test_misspelt_variables_are_a_warning_naming_the_real_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STREAMCAST_BOOTSTRAP_SERVER", "kafka:9092")
    status, out, err = _run(["config"], capsys)
    assert status == 0
    assert err.strip().splitlines() == [
        "warning: STREAMCAST_BOOTSTRAP_SERVER is not a streamcast setting and is ignored: "
        "did you mean STREAMCAST_BOOTSTRAP_SERVERS?"
    ]
    assert "localhost:9092" in out  # ignored, as the warning says


def test_serve_logs_misspelt_variables_as_one_json_line(tmp_path: Path) -> None:
    from tests.support.service import run_cli

    result = run_cli("serve", cwd=tmp_path, env={"STREAMCAST_MODEL_PAHT": "model.onnx"})
    assert result.returncode == 2
    warning, error = result.stderr.strip().splitlines()
    doc = orjson.loads(warning)
    assert doc["level"] == "warning"
    assert "STREAMCAST_MODEL_PAHT" in doc["msg"]
    assert "did you mean STREAMCAST_MODEL_PATH?" in doc["msg"]
    assert error.startswith("error: STREAMCAST_MODEL_PATH (model_path): required")


def test_serve_with_broken_model_metadata_names_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.support.models import make_tiny_model, rewrite_meta

    good = make_tiny_model(tmp_path / "good.onnx")
    bad = rewrite_meta(good, tmp_path / "bad.onnx", window=0, horizon="three")
    status, _, err = _run(["serve", "--model", str(bad)], capsys)
    assert status == 2
    line = _one_error_line(err)
    assert "invalid streamcast metadata: window: must be > 0 (got '0'); horizon: " in line
    assert "https://" not in line


@pytest.mark.timeout(60)  # accepted, serve would retry an absent broker for ever
def test_extras_for_features_the_model_lacks_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.support.models import make_tiny_model

    plain = make_tiny_model(tmp_path / "plain.onnx")
    monkeypatch.setenv("STREAMCAST_FIELDS__EXTRAS", '{"temp": "t"}')
    status, _, err = _run(["serve", "--model", str(plain)], capsys)
    assert status == 2
    assert _one_error_line(err) == (
        "error: STREAMCAST_FIELDS__EXTRAS (fields.extras): temp is not an extra feature of "
        "model tiny@1 (its extra features: none): map only the model's features to tick "
        "fields, or serve the model that has them"
    )
    with_temp = make_tiny_model(tmp_path / "temp.onnx", extras=("temp", "humidity"))
    monkeypatch.setenv("STREAMCAST_FIELDS__EXTRAS", '{"temp": "t", "hum": "h", "rain": "r"}')
    status, _, err = _run(["serve", "--model", str(with_temp)], capsys)
    assert status == 2
    assert (
        "hum, rain are not extra features of model tiny@1 (its extra features: temp, "
        "humidity)" in _one_error_line(err)
    )


_REPLAY = ["replay", "--key-col", "key", "--time-col", "ts", "--value-col", "value"]


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "the file is empty; it needs a header line and data rows"),
        (b"key,ts,value\n", "no data rows"),
        (
            b"key,ts,value\na,2026-01-01T00:00:00Z,1\nb,notatime,2\n",
            "cannot parse timestamp 'notatime' in column 'ts' at row 2 (line 3)",
        ),
        (b"key,ts,value\na,1e400,1\n", "timestamp inf in column 'ts' at row 1 (line 2)"),
        (b"key,ts,value\n\xff\xfe,\x80,1\n", "cannot read the file"),
        (b'key,ts,value\na,"unterminated,1\n', "cannot read the file"),
    ],
    ids=["empty", "header only", "bad timestamp", "infinite epoch", "not utf-8", "bad quoting"],
)
def test_replay_data_it_cannot_read_is_one_line_naming_the_file(
    content: bytes, says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "d.csv"
    data.write_bytes(content)
    status, _, err = _run([*_REPLAY, "--data", str(data)], capsys)
    assert status == 2
    line = _one_error_line(err)
    assert f"--data {data}: " in line and says in line


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--limit", "-1", "expected a positive integer, got '-1'"),
        ("--limit", "0", "expected a positive integer, got '0'"),
        ("--rate", "0", "expected a positive number, got '0'"),
        ("--rate", "-5", "expected a positive number, got '-5'"),
        ("--rate", "inf", "expected a positive number, got 'inf'"),
        ("--speed", "0", "expected a positive number, got '0'"),
        ("--speed", "-1", "expected a positive number, got '-1'"),
        ("--speed", "nan", "expected a positive number, got 'nan'"),
    ],
)
def test_replay_pace_and_limit_must_be_positive(
    flag: str, value: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = _run([*_REPLAY, "--data", "d.csv", flag, value], capsys)
    assert status == 2
    line = _one_error_line(err)
    assert f"argument {flag}: {says}" in line


def test_replay_options_refuse_what_the_flags_refuse(tmp_path: Path) -> None:
    from streamcast.tools.replay import ReplayOptions

    for bad in ({"limit": 0}, {"limit": -1}, {"rate": 0.0}, {"speed": float("nan")}):
        with pytest.raises(ValueError, match="must be"):
            ReplayOptions(tmp_path, "k", "t", "v", "x", **bad)


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--limit", "-1", "expected a positive integer, got '-1'"),
        ("--limit", "0", "expected a positive integer, got '0'"),
        ("--idle-timeout", "-1", "expected a positive number, got '-1'"),
        ("--idle-timeout", "0", "expected a positive number, got '0'"),
        ("--idle-timeout", "nan", "expected a positive number, got 'nan'"),
    ],
)
def test_tail_limit_and_idle_timeout_must_be_positive(
    flag: str, value: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = _run(["tail", flag, value], capsys)
    assert status == 2
    assert f"argument {flag}: {says}" in _one_error_line(err)


def test_tail_options_refuse_what_the_flags_refuse() -> None:
    from streamcast.tools.tail import TailOptions

    for bad in ({"limit": 0}, {"limit": -1}, {"idle_timeout_s": 0.0}, {"idle_timeout_s": -1.0}):
        with pytest.raises(ValueError, match="must be"):
            TailOptions(topic="f", **bad)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["topics", "create", "--partitions", "0"], "error: streamcast topics create: argument "),
        (["tail", "--timezone", "Mars/Base"], "error: streamcast tail: argument --timezone: "),
        (["serve", "--max-keys"], "error: streamcast serve: argument --max-keys: expected one"),
        (["replay", "--data", "d.csv"], "error: streamcast replay: the following arguments are"),
        (["tail", "--bogus"], "error: streamcast: unrecognized arguments: --bogus"),
        # a prefix of a flag is not the flag (its errors would name the variable instead)
        (["config", "--durable-st", "false"], "error: streamcast: unrecognized arguments: --dur"),
        (["history"], "error: streamcast history: the following arguments are required: ACTION"),
        ([], "error: streamcast: the following arguments are required: COMMAND"),
        (["nope"], "error: streamcast: argument COMMAND: invalid choice: 'nope'"),
    ],
)
def test_usage_errors_are_one_line_without_the_usage_text(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = _run(argv, capsys)
    assert status == 2
    assert _one_error_line(err).startswith(says)
    assert "usage:" not in err and out == ""


def test_serve_on_a_host_that_does_not_resolve_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.support.models import make_tiny_model

    model = make_tiny_model(tmp_path / "m.onnx")
    argv = ["serve", "--model", str(model), "--http-host", "not a host", "--log-level", "ERROR"]
    status, _, err = _run(argv, capsys)
    assert status == 2
    line = _one_error_line(err)
    assert "'not a host'" in line and "STREAMCAST_HTTP_HOST (--http-host)" in line


def test_serve_on_a_port_in_use_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    from tests.support.models import make_tiny_model

    model = make_tiny_model(tmp_path / "m.onnx")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["serve", "--model", str(model), "--http-host", "127.0.0.1"]
        status, _, err = _run([*argv, "--http-port", str(port), "--log-level", "ERROR"], capsys)
    assert status == 2
    line = _one_error_line(err)
    assert f"127.0.0.1:{port}" in line and "in use" in line
    assert "STREAMCAST_HTTP_PORT (--http-port)" in line


def test_the_api_on_a_port_in_use_is_one_line_before_any_kafka_client(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn logged '[Errno 98] ... address already in use', an 'Unclosed
    AIOKafkaConsumer' error followed and the command exited 3. The API binds its port
    itself now, first: one line naming the setting, exit status 2."""
    import socket

    monkeypatch.setenv("STREAMCAST_API_AUTH", "off")
    monkeypatch.setenv("STREAMCAST_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, _, err = _run(["api", "--api-port", str(port), "--log-level", "ERROR"], capsys)
    assert status == 2
    line = _one_error_line(err)
    assert f"127.0.0.1:{port} for the forecast API" in line and "in use" in line
    assert "STREAMCAST_API_PORT (--api-port)" in line
    assert "AIOKafkaConsumer" not in err


@pytest.mark.parametrize("zone", ["Mars/Base", "America"])
def test_a_zone_that_is_not_one_is_a_usage_error(
    zone: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """'America' is a directory of the zone database: ZoneInfo raises IsADirectoryError,
    which argparse does not catch, so it ended in a traceback."""
    status, _, err = _run(["tail", "--timezone", zone], capsys)
    assert status == 2
    assert "unknown time zone" in _one_error_line(err)


@pytest.mark.parametrize(
    ("argv", "env", "want"),
    [
        # a shortcut is named as typed, not as the setting's long flag or variable
        (["serve", "--model", "nope.onnx"], {}, "error: --model (model_path): file not found"),
        (["serve", "--model-path=nope.onnx"], {}, "error: --model-path (model_path): file not"),
        (
            ["config", "--processing-guarantee", "exactly_once", "--durable-state", "false"],
            {},
            "error: --durable-state (durable_state): must be true with processing_guarantee",
        ),
        # from the environment, the variable is named
        (
            ["config", "--processing-guarantee", "exactly_once"],
            {"STREAMCAST_DURABLE_STATE": "false"},
            "error: STREAMCAST_DURABLE_STATE (durable_state): must be true",
        ),
        (["serve"], {"STREAMCAST_MODEL_PATH": "nope.onnx"}, "error: STREAMCAST_MODEL_PATH"),
    ],
)
def test_errors_name_a_setting_as_the_user_gave_it(
    argv: list[str],
    env: dict[str, str],
    want: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    status, _, err = _run([*argv, "--log-level", "ERROR"], capsys)
    assert status == 2
    (line,) = err.strip().splitlines()
    assert line.startswith(want), line


def test_config_names_the_api_refusals_by_the_flag_typed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = _run(["config", "--model", str(tmp_path / "gone.onnx")], capsys)
    assert status == 0, err
    (refusal,) = [line for line in out.splitlines() if "(model_path)" in line]
    assert refusal.startswith("# streamcast api would refuse these settings: --model (model_path)")


def test_config_shows_the_ttl_a_weekly_model_gets_when_the_default_is_too_short(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.support.models import make_tiny_model

    weekly = make_tiny_model(tmp_path / "models" / "w.onnx", interval_s=7 * 86_400)
    hourly = make_tiny_model(tmp_path / "h.onnx", interval_s=3600)
    for where in (weekly, weekly.parent):  # the file, or the models directory holding it
        _, out, _ = _run(["config", "--model", str(where)], capsys)
        (note,) = [line for line in out.splitlines() if line.startswith("# key_ttl_s")]
        assert note.startswith("# key_ttl_s in effect: 1814400 s (3 intervals of tiny@1")
    for argv in (["--model", str(hourly)], ["--model", str(weekly), "--key-ttl-s", "3600"]):
        _, out, _ = _run(["config", *argv], capsys)
        assert "# key_ttl_s" not in out  # the TTL shown is the one applied
