"""Permanent misconfiguration ends the process with one line; a broker that is down is
retried. Against a real broker with a SASL_PLAINTEXT listener and ACLs enforced
(``sasl_broker``).

Before, each of these looped on "connect failed; retrying" for ever: aiokafka turns a
rejected password or a listener that drops the connection into a bare "Unable to
bootstrap", and the admin client reports a topic it may not see like a missing one.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.support.kafka import SaslBroker, allow, create_topics, kafka_local, unique_topic
from tests.support.models import make_tiny_model
from tests.support.service import ServiceProcess, run_cli, service_env

pytestmark = pytest.mark.kafka

#: every case must end within this (the brief: bounded, say 30 s)
BOUND_S = 30.0


def _serve_until_exit(env: dict[str, str], log: Path) -> tuple[int, str, float]:
    """Run ``streamcast serve``; ``(status, output, seconds)`` once it exits."""
    service = ServiceProcess(env, log)
    began = time.monotonic()
    service.launch()
    assert service.process is not None
    try:
        status = service.process.wait(timeout=BOUND_S + 30)
    finally:
        service.kill()
    return status, log.read_text(), time.monotonic() - began


def _error_line(output: str) -> str:
    """The one ``error:`` line; no traceback and no retry loop before it."""
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, output[-3000:]
    assert "Traceback" not in output
    assert output.count("retrying") <= 1, output[-3000:]
    return errors[0]


def _tools(tmp_path: Path, env: dict[str, str], topic: str) -> dict[str, tuple[int, str, float]]:
    """``replay`` and ``tail`` with ``env``: ``{command: (status, stderr, seconds)}``."""
    data = tmp_path / "d.csv"
    data.write_text("k,t,v\na,1700000000,1.0\n")
    argv = {
        "replay": ["replay", "--data", str(data), "--key-col", "k", "--time-col", "t",
                   "--value-col", "v", "--topic", topic, "--no-progress"],
        "tail": ["tail", "--topic", topic, "--idle-timeout", "5"],
    }  # fmt: skip
    out = {}
    for command, args in argv.items():
        began = time.monotonic()
        result = run_cli(*args, cwd=tmp_path, env=env)
        out[command] = (result.returncode, result.stderr, time.monotonic() - began)
    return out


def _check_all(tmp_path: Path, env: dict[str, str], topic: str, *needles: str) -> dict[str, float]:
    """serve, replay and tail each exit 2 within the bound with one line holding every
    needle; returns the seconds each took."""
    model = make_tiny_model(tmp_path / "tiny.onnx")
    serve_env = {
        **service_env("unused:9092", model, unique_topic("mis")),
        "STREAMCAST_TOPICS__TICKS": topic,
        **env,
    }
    status, output, seconds = _serve_until_exit(serve_env, tmp_path / "serve.log")
    runs = {"serve": (status, output, seconds), **_tools(tmp_path, env, topic)}
    for command, (status, output, seconds) in runs.items():
        assert status == 2, (command, output[-3000:])
        assert seconds < BOUND_S, (command, seconds)
        line = _error_line(output)
        for needle in needles:
            assert needle in line, (command, line)
    return {command: round(run[2], 1) for command, run in runs.items()}


async def _ticks_topic(sasl_broker: SaslBroker) -> str:
    topic = unique_topic("acl-ticks")
    await create_topics(sasl_broker.admin, [topic])
    return topic


async def test_a_wrong_password_ends_every_command(sasl_broker: SaslBroker, tmp_path: Path) -> None:
    topic = await _ticks_topic(sasl_broker)
    env = sasl_broker.env("streamcast", password="wrong-password")
    _check_all(tmp_path, env, topic, "rejected the credentials", "STREAMCAST_SASL_PASSWORD")


async def test_plaintext_against_a_sasl_listener_says_check_the_protocol(
    sasl_broker: SaslBroker, tmp_path: Path
) -> None:
    topic = await _ticks_topic(sasl_broker)
    env = {"STREAMCAST_BOOTSTRAP_SERVERS": sasl_broker.sasl}
    _check_all(
        tmp_path,
        env,
        topic,
        "closed the connection during the handshake",
        "STREAMCAST_SECURITY_PROTOCOL (now PLAINTEXT)",
    )


async def test_sasl_against_a_plaintext_listener_says_check_the_protocol(
    sasl_broker: SaslBroker, tmp_path: Path
) -> None:
    topic = await _ticks_topic(sasl_broker)
    env = {**sasl_broker.env("streamcast"), "STREAMCAST_BOOTSTRAP_SERVERS": sasl_broker.admin}
    _check_all(tmp_path, env, topic, "does not accept this SASL handshake")


async def test_a_ca_file_that_is_not_pem_names_the_setting(
    sasl_broker: SaslBroker, tmp_path: Path
) -> None:
    topic = await _ticks_topic(sasl_broker)
    bad = tmp_path / "ca.crt"
    bad.write_text("this is not a certificate\n")
    env = {
        **sasl_broker.env("streamcast"),
        "STREAMCAST_SECURITY_PROTOCOL": "SASL_SSL",
        "STREAMCAST_SSL_CAFILE": str(bad),
    }
    _check_all(tmp_path, env, topic, "STREAMCAST_SSL_CAFILE (ssl_cafile)", "no PEM CA certificate")


async def test_a_principal_without_acls_is_told_what_to_grant(
    sasl_broker: SaslBroker, tmp_path: Path
) -> None:
    topic = await _ticks_topic(sasl_broker)
    env = sasl_broker.env("stranger")
    _check_all(tmp_path, env, topic, f"describe topic '{topic}'", "does not authorize")


async def test_a_group_the_principal_may_not_join_ends_serve(
    sasl_broker: SaslBroker, tmp_path: Path
) -> None:
    prefix = unique_topic("acl")
    model = make_tiny_model(tmp_path / "tiny.onnx")
    env = {**service_env("unused:9092", model, prefix), **sasl_broker.env("streamcast")}
    outputs = [env[f"STREAMCAST_TOPICS__{name}"] for name in ("FORECASTS", "ALERTS", "DEAD_LETTER")]
    await create_topics(sasl_broker.admin, [env["STREAMCAST_TOPICS__TICKS"], *outputs])
    changelog = env["STREAMCAST_TOPICS__STATE_CHANGELOG"]
    await create_topics(sasl_broker.admin, [changelog], config={"cleanup.policy": "compact"})
    operations = ["describe", "describe_configs", "read", "write"]
    await allow(
        sasl_broker.admin, "User:streamcast", "topic", prefix, operations, pattern="prefixed"
    )
    status, output, seconds = _serve_until_exit(env, tmp_path / "serve.log")
    assert status == 2, output[-3000:]
    assert seconds < BOUND_S
    line = _error_line(output)
    assert "GroupAuthorizationFailedError" in line
    assert "grant it Read on the consumer group (STREAMCAST_GROUP_ID)" in line


async def test_a_broker_that_is_down_is_retried_not_refused(tmp_path: Path) -> None:
    """Connection refused is an outage, not a setting: serve keeps retrying (and stays
    live) until it is stopped, then exits 0."""
    model = make_tiny_model(tmp_path / "tiny.onnx")
    down = f"127.0.0.1:{kafka_local.free_port()}"
    env = {**service_env(down, model, unique_topic("down")), "STREAMCAST_RETRY_MAX_BACKOFF_S": "2"}
    service = ServiceProcess(env, tmp_path / "serve.log")
    service.launch()
    try:
        text = service.wait_for_log("connect failed; retrying", count=3, timeout_s=BOUND_S)
        assert service.process is not None and service.process.poll() is None
        assert service.probe("/healthz")[0] == 200
        assert service.stop(signal.SIGTERM) == 0
    finally:
        service.kill()
    assert "error: " not in text
