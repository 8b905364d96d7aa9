"""A genuine single-node Apache Kafka broker (KRaft, combined broker+controller) for dev and CI.

The jars come from Maven Central through a tiny pom (``scripts/kafka-pom.xml``) and are
cached in ``.kafka/libs``; storage is formatted once per data dir; the broker runs as a
plain ``java`` process whose pid is kept in ``<data-dir>/broker.pid``. Readiness means a
real client round trip: a Kafka ``Metadata`` request answered with a live broker list.

Only the standard library is used, so ``scripts/kafka-local start`` works before any
virtualenv exists. The pytest session fixture imports :class:`LocalBroker` from here, so
tests and developers start the broker with the same code.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KAFKA_VERSION = "4.1.2"
POM = REPO / "scripts" / "kafka-pom.xml"
DEFAULT_CACHE = REPO / ".kafka" / "libs"
DEFAULT_DATA = REPO / ".kafka" / "data"
MIN_JAVA = 17

LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
"""


class KafkaLocalError(Exception):
    """A problem the user can fix (missing tool, busy port, broker that will not start)."""


#: the KRaft authorizer (ACLs kept in the metadata log), enabled with SASL users
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
#: principal of the PLAINTEXT and controller listeners, a super user when ACLs are on
ANONYMOUS = "User:ANONYMOUS"


@dataclass(frozen=True)
class BrokerConfig:
    """Where and how the broker runs.

    With ``sasl_users`` (``(user, password)`` pairs) the broker also listens with
    SASL_PLAINTEXT (mechanism PLAIN, those users in its JAAS config) on ``sasl_port`` and
    enforces ACLs (KRaft's ``StandardAuthorizer``; nothing is allowed without an ACL).
    The PLAINTEXT listener stays open for administration: its anonymous principal,
    which the controller and inter-broker traffic also use, is a super user.
    """

    port: int = 9092
    controller_port: int | None = None
    data_dir: Path = DEFAULT_DATA
    cache_dir: Path = DEFAULT_CACHE
    heap: str = "768m"
    host: str = "127.0.0.1"
    sasl_port: int | None = None
    sasl_users: tuple[tuple[str, str], ...] = ()

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def sasl_bootstrap(self) -> str | None:
        """The SASL_PLAINTEXT listener's address (None without SASL users)."""
        if not self.sasl_users or self.sasl_port is None:
            return None
        return f"{self.host}:{self.sasl_port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"


def _say(msg: str) -> None:
    print(f"kafka-local: {msg}", file=sys.stderr, flush=True)


def check_java() -> None:
    """Fail clearly unless a Java >= 17 runtime is on PATH."""
    if shutil.which("java") is None:
        raise KafkaLocalError(f"java not found on PATH; install a JDK {MIN_JAVA}+ (openjdk-17)")
    out = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if match is None:
        raise KafkaLocalError(f"could not read the Java version from: {out.stderr.strip()!r}")
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8" style
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise KafkaLocalError(f"Kafka {KAFKA_VERSION} needs Java {MIN_JAVA}+, found Java {major}")


def ensure_jars(cache_dir: Path) -> Path:
    """Resolve the broker jars from Maven Central into ``cache_dir`` (reused when complete)."""
    stamp = cache_dir / f".complete-{KAFKA_VERSION}"
    if stamp.exists():
        return cache_dir
    if shutil.which("mvn") is None:
        raise KafkaLocalError("mvn (Apache Maven) not found on PATH; it fetches the Kafka jars")
    _say(f"fetching Apache Kafka {KAFKA_VERSION} jars from Maven Central into {cache_dir} ...")
    if cache_dir.exists():
        shutil.rmtree(cache_dir)
    cache_dir.mkdir(parents=True)
    cmd = [
        "mvn", "-q", "-B", "-f", str(POM),
        f"-Dkafka.version={KAFKA_VERSION}",
        "dependency:copy-dependencies",
        f"-DoutputDirectory={cache_dir}",
        "-DincludeScope=runtime",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise KafkaLocalError(f"maven could not fetch the Kafka jars:\n{tail}")
    stamp.write_text(KAFKA_VERSION)
    return cache_dir


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port(host: str = "127.0.0.1") -> int:
    """An ephemeral port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _kafka_string(value: str) -> bytes:
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


def fetch_metadata(host: str, port: int, timeout: float = 2.0) -> int:
    """Send a real Kafka Metadata (v4) request; return the number of live brokers."""
    client_id = _kafka_string("kafka-local")
    # header v1: api_key=3 (Metadata), version=4, correlation id, client id;
    # body: topics=null (-1: all topics), allow_auto_topic_creation=false
    body = struct.pack(">hhi", 3, 4, 7) + client_id + struct.pack(">i", -1) + b"\x00"
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", _recv_exact(sock, 4))[0]
        payload = _recv_exact(sock, size)
    correlation, _throttle, n_brokers = struct.unpack(">iii", payload[:12])
    if correlation != 7:
        raise KafkaLocalError(f"unexpected correlation id {correlation} from {host}:{port}")
    return int(n_brokers)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        chunks.extend(chunk)
    return bytes(chunks)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still answers kill(0); treat it as gone
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        if state == "Z":
            return False
    return True


class LocalBroker:
    """Start, probe and stop one broker described by a :class:`BrokerConfig`."""

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config

    # -- state ---------------------------------------------------------------------------
    def running_pid(self) -> int | None:
        """The pid from the pid file when that process is still alive."""
        try:
            pid = int(self.config.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def is_ready(self) -> bool:
        """True when a Metadata request is answered with at least one broker."""
        try:
            return fetch_metadata(self.config.host, self.config.port) > 0
        except (OSError, struct.error, KafkaLocalError):
            return False

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, *, fresh: bool = False, timeout: float = 60.0) -> str:
        """Start the broker (idempotent: a running one is left alone); return bootstrap."""
        cfg = self.config
        if (pid := self.running_pid()) is not None:
            _say(f"already running (pid {pid}) at {cfg.bootstrap}")
            return cfg.bootstrap
        check_java()
        libs = ensure_jars(cfg.cache_dir)
        if cfg.sasl_users and cfg.sasl_port is None:
            raise KafkaLocalError("SASL users need a port for their listener (--sasl-port)")
        controller_port = cfg.controller_port or free_port(cfg.host)
        ports = [cfg.port, controller_port]
        if cfg.sasl_port is not None and cfg.sasl_users:
            ports.append(cfg.sasl_port)
        for port in ports:
            if port_in_use(cfg.host, port):
                raise KafkaLocalError(
                    f"port {port} on {cfg.host} is already in use; "
                    "stop whatever listens there or pick another with --port"
                )
        if fresh and cfg.data_dir.exists():
            shutil.rmtree(cfg.data_dir)
        log_dirs = cfg.data_dir / "kraft"
        cfg.log_dir.mkdir(parents=True, exist_ok=True)
        props = self._write_config(controller_port, log_dirs)
        classpath = f"{libs}/*"
        if not (log_dirs / "meta.properties").exists():
            cluster_id = str(uuid.uuid4().hex[:22])
            fmt = subprocess.run(
                ["java", "-cp", classpath, "kafka.tools.StorageTool", "format",
                 "-t", cluster_id, "-c", str(props), "--ignore-formatted"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if fmt.returncode != 0:
                raise KafkaLocalError(f"formatting KRaft storage failed: {fmt.stderr.strip()}")
        stdout = (cfg.log_dir / "stdout.log").open("ab")
        proc = subprocess.Popen(
            ["java", "-Xms256m", f"-Xmx{cfg.heap}", "-XX:+UseG1GC",
             "-Djava.awt.headless=true",
             f"-Dlog4j2.configurationFile={cfg.data_dir / 'log4j2.properties'}",
             f"-Dkafka.logs.dir={cfg.log_dir}",
             "-cp", classpath, "kafka.Kafka", str(props)],
            stdout=stdout, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        stdout.close()
        cfg.pid_file.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                cfg.pid_file.unlink(missing_ok=True)
                raise KafkaLocalError(
                    f"broker exited with code {proc.returncode}; see {cfg.log_dir}/stdout.log "
                    f"and server.log:\n{self.tail_logs(20)}"
                )
            if self.is_ready():
                return cfg.bootstrap
            time.sleep(0.25)
        self.stop()
        raise KafkaLocalError(f"broker did not answer metadata requests within {timeout:.0f}s")

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the broker this pid file names and wait for it; True if one was running."""
        pid = self.running_pid()
        if pid is None:
            self.config.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _pid_alive(pid):
            time.sleep(0.1)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            while _pid_alive(pid):
                time.sleep(0.05)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
        self.config.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        """SIGKILL the broker (for crash tests); the data dir stays."""
        pid = self.running_pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            while _pid_alive(pid):
                time.sleep(0.05)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
        self.config.pid_file.unlink(missing_ok=True)

    def tail_logs(self, lines: int = 50) -> str:
        """Last lines of the broker's server log (or stdout when that is empty)."""
        for name in ("server.log", "stdout.log"):
            path = self.config.log_dir / name
            if path.exists() and path.stat().st_size:
                return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return "(no broker logs yet)"

    def _write_config(self, controller_port: int, log_dirs: Path) -> Path:
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        (cfg.data_dir / "log4j2.properties").write_text(LOG4J2)
        props = cfg.data_dir / "server.properties"
        plain = f"PLAINTEXT://{cfg.host}:{cfg.port}"
        sasl = f",SASL_PLAINTEXT://{cfg.host}:{cfg.sasl_port}" if cfg.sasl_bootstrap else ""
        props.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@{cfg.host}:{controller_port}",
                    f"listeners={plain}{sasl},CONTROLLER://{cfg.host}:{controller_port}",
                    f"advertised.listeners={plain}{sasl}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
                    + (",SASL_PLAINTEXT:SASL_PLAINTEXT" if sasl else ""),
                    "inter.broker.listener.name=PLAINTEXT",
                    *self._security_lines(),
                    f"log.dirs={log_dirs}",
                    "num.partitions=1",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=4",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "transaction.state.log.num.partitions=4",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=false",
                    "log.cleaner.backoff.ms=1000",
                    "",
                ]
            )
        )
        return props

    def _security_lines(self) -> list[str]:
        """SASL/PLAIN users and the authorizer (nothing without SASL users)."""
        users = self.config.sasl_users
        if not users:
            return []
        accounts = " ".join(f'user_{name}="{password}"' for name, password in users)
        return [
            "sasl.enabled.mechanisms=PLAIN",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config="
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {accounts};",
            f"authorizer.class.name={AUTHORIZER}",
            f"super.users={ANONYMOUS}",
            "allow.everyone.if.no.acl.found=false",
        ]


def parse_user(text: str) -> tuple[str, str]:
    """``user:password`` -> ``(user, password)`` (for ``--sasl-plain``)."""
    name, sep, password = text.partition(":")
    if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or not password or '"' in password:
        raise argparse.ArgumentTypeError(
            f'{text!r}: give user:password (user of letters, digits, _ . -; no " in passwords)'
        )
    return name, password


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kafka-local",
        description=f"Run a genuine Apache Kafka {KAFKA_VERSION} broker (KRaft) for development.",
    )
    parser.add_argument("command", choices=["start", "stop", "status", "logs"])
    parser.add_argument("--port", type=int, default=int(os.environ.get("KAFKA_LOCAL_PORT", "9092")))
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("KAFKA_LOCAL_DATA", DEFAULT_DATA)),
        help="KRaft storage, logs and pid file (default: .kafka/data)",
    )
    parser.add_argument("--fresh", action="store_true", help="wipe the data dir before start")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for ready")
    parser.add_argument("--lines", type=int, default=50, help="log lines to show (logs)")
    parser.add_argument(
        "--sasl-plain",
        type=parse_user,
        action="append",
        default=[],
        metavar="USER:PASSWORD",
        help="also listen with SASL_PLAINTEXT (PLAIN) for this user and enforce ACLs "
        "(repeatable; the PLAINTEXT listener stays open as the super user)",
    )
    parser.add_argument(
        "--sasl-port", type=int, default=None, help="SASL listener port (default: --port + 1)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``scripts/kafka-local``."""
    args = _build_parser().parse_args(argv)
    users = tuple(args.sasl_plain)
    broker = LocalBroker(
        BrokerConfig(
            port=args.port,
            data_dir=args.data_dir.resolve(),
            sasl_users=users,
            sasl_port=(args.sasl_port or args.port + 1) if users else None,
        )
    )
    try:
        if args.command == "start":
            started = time.monotonic()
            was_running = broker.running_pid() is not None
            bootstrap = broker.start(fresh=args.fresh, timeout=args.timeout)
            if not was_running:
                _say(f"ready in {time.monotonic() - started:.1f}s (pid {broker.running_pid()})")
            print(bootstrap)
            if broker.config.sasl_bootstrap:
                _say(f"SASL_PLAINTEXT (PLAIN) at {broker.config.sasl_bootstrap}, ACLs enforced")
        elif args.command == "stop":
            _say("stopped" if broker.stop() else "not running")
        elif args.command == "status":
            pid = broker.running_pid()
            if pid is None:
                _say("not running")
                return 1
            state = "ready" if broker.is_ready() else "starting (not answering yet)"
            _say(f"running (pid {pid}) at {broker.config.bootstrap}: {state}")
        else:
            print(broker.tail_logs(args.lines))
    except KafkaLocalError as exc:
        _say(f"error: {exc}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
