"""The ``streamcast`` command: ``serve``, ``api``, ``config``, ``replay``, ``tail``, ``history``,
``topics``.
``schema``.

Every user error is one line on stderr (``error: ...``) and exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pydantic_settings import CliSettingsSource
from pydantic_settings import SettingsError as SourceError

from streamcast import __version__
from streamcast.config import (
    TTL_INTERVALS,
    ApiSettings,
    ClientSettings,
    Settings,
    flatten,
    load_settings,
    setting_sources,
    unknown_variables,
    unparsable,
)
from streamcast.core.cli_args import USAGE_ERROR, OneLineParser, positive_float, positive_int
from streamcast.core.schemas import CURRENT, schema_text
from streamcast.core.zones import zone_problem
from streamcast.errors import SettingsError, StreamcastError, TransientError
from streamcast.service.logs import configure_logging
from streamcast.tools.history import ExportOptions, export_history
from streamcast.tools.replay import ReplayOptions, replay
from streamcast.tools.tail import TailOptions, tail
from streamcast.tools.topics import TOPICS_EXAMPLES, add_actions, run_topics

#: the settings file read when --env-file is not given (absent is fine)
DEFAULT_ENV_FILE = Path(".env")

log = logging.getLogger("streamcast.config")

Overrides = dict[str, Any]

SERVE_EXAMPLES = """\
examples:
  streamcast serve --model model.onnx --bootstrap-servers kafka:9092
  STREAMCAST_MODEL_PATH=model.onnx STREAMCAST_TOPICS__TICKS=sensors streamcast serve
  streamcast serve --env-file prod.env --log-format console --http-port 9400

Every setting is also an environment variable STREAMCAST_<NAME> (nested with __, e.g.
STREAMCAST_TOPICS__FORECASTS) or a line in the .env file; flags win over both.
`streamcast config` prints what is in effect.
"""

API_EXAMPLES = """\
examples:
  STREAMCAST_API_JWT_SECRET=... streamcast api --api-jwt-audience streamcast \\
      --api-jwt-issuer https://auth.example.com --model model.onnx
  streamcast api --api-auth off            # local use: listens on 127.0.0.1:8400
  streamcast api --api-jwt-jwks-file jwks.json --api-jwt-audience streamcast \\
      --api-jwt-issuer https://auth.example.com --api-max-keys 500000

The API reads the forecasts and alerts topics from the beginning into memory, then
follows them; /readyz answers 200 once it caught up. Its page is at /, its OpenAPI docs
at /docs. Its settings are named api_* (variables STREAMCAST_API_PORT, ...), the Kafka
ones are those `serve` takes.
"""

CONFIG_EXAMPLES = """\
examples:
  streamcast config
  STREAMCAST_SASL_PASSWORD=s3cret streamcast config --env-file prod.env
"""

REPLAY_EXAMPLES = """\
examples:
  streamcast replay --data ped.csv --key-col sensor --time-col time --value-col count
  streamcast replay --data ticks.parquet --key-col key --time-col ts --value-col value \\
      --features temp humidity --topic ticks --rate 2000 --limit 100000
  streamcast replay --data ped.csv --key-col sensor --time-col time --value-col count \\
      --speed 3600   # one hour of event time per second

Ticks are JSON {"key", "ts", "value", extras...} with the original timestamps; the Kafka
message key is the series key. Rows are sent in time order.
"""

HISTORY_EXAMPLES = """\
examples:
  streamcast history export --out history.parquet
  streamcast history export --since 2026-10-01T00:00:00Z --out october.csv --features temp
  streamcast-train fit --data history.parquet --key-col key --time-col ts --value-col value \\
      --out models/retrained

The topic is read from the beginning (or --since) to its end offsets at the start,
read_committed and without a consumer group; malformed messages are skipped (they are in
the dead-letter topic). Times are Kafka record timestamps.
"""

TAIL_EXAMPLES = """\
examples:
  streamcast tail                       # live view: latest forecast per key, alerts, rate
  streamcast tail --from-beginning --timezone Australia/Melbourne --level 0.8
  streamcast tail --plain | grep sensor-7   # one line per forecast (default in a pipe)
  streamcast tail --topic alerts --from-beginning
  streamcast tail --topic dead-letter --from-beginning --limit 20
  streamcast tail --json --limit 5      # raw message values, one per line

On a terminal the forecasts topic is shown as a live view that fits the window (Ctrl-C
ends it); piped, or with --plain, each message is one plain line.
"""


#: short names kept for the settings used most on the command line
SHORTCUTS: dict[str, str | list[str]] = {
    "model-path": "model",
    "topics.ticks": "ticks-topic",
    "topics.forecasts": "forecasts-topic",
    "topics.alerts": "alerts-topic",
    "topics.dead-letter": "dead-letter-topic",
    "topics.state-changelog": "state-changelog-topic",
}


def typed_flags(argv: Sequence[str]) -> dict[str, str]:
    """Each setting given as a flag in ``argv``, by its dotted name (``model_path``,
    ``topics.ticks``), and the flag as it was typed (``--model``, ``--ticks-topic``)."""
    shortcuts = {
        f"--{alias}": name
        for name, aliases in SHORTCUTS.items()
        for alias in ([aliases] if isinstance(aliases, str) else aliases)
    }
    typed: dict[str, str] = {}
    for token in argv:
        if token == "--":
            break
        if token.startswith("--"):
            flag = token.split("=", 1)[0]
            typed[shortcuts.get(flag, flag[2:]).replace("-", "_")] = flag
    return typed


#: the start of a message about one setting: ``STREAMCAST_X (x): `` or ``--x (x): ``
_ABOUT_A_SETTING = re.compile(
    r"(?:STREAMCAST_[A-Z0-9_]+|--[a-z0-9.-]+) \((?P<name>[a-z0-9_.]+)\): "
)


def as_typed(line: str, typed: Mapping[str, str]) -> str:
    """``line`` naming the setting it is about by the flag the user typed, when it came
    from one (messages name the environment variable by default: the code that raises
    them does not know where each setting came from)."""
    about = _ABOUT_A_SETTING.match(line)
    if about is None or about["name"] not in typed:
        return line
    return f"{typed[about['name']]} ({about['name']}): {line[about.end() :]}"


def _settings_flags(parser: argparse.ArgumentParser, kind: type[ClientSettings]) -> None:
    """A flag for every setting of ``kind``, with its help, default and environment
    variable, derived from the settings model by pydantic-settings (``--max-keys``,
    ``--topics.ticks``, ...)."""
    parser.add_argument(
        "--env-file",
        type=Path,
        default=None,
        help="settings file; it must exist (default: ./.env when present)",
    )
    shortcuts = {
        name: alias
        for name, alias in SHORTCUTS.items()
        if name.split(".")[0].replace("-", "_") in kind.model_fields
    }
    source: CliSettingsSource[ClientSettings] = CliSettingsSource(
        kind,
        root_parser=parser,
        cli_kebab_case=True,
        cli_hide_none_type=True,
        cli_show_env_vars=True,
        cli_shortcuts=shortcuts,
    )
    parser.set_defaults(settings_source=source, settings_kind=kind)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``streamcast`` command."""
    fmt = argparse.RawDescriptionHelpFormatter
    # usage errors are one line; the subcommands' parsers inherit the class
    parser = OneLineParser(
        prog="streamcast",
        description="Real-time LSTM forecasting for Kafka streams.",
        epilog="run `streamcast COMMAND --help` for a command's flags and examples",
        formatter_class=fmt,
    )
    parser.add_argument("--version", action="version", version=f"streamcast {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve", help="run the forecasting service", epilog=SERVE_EXAMPLES, formatter_class=fmt
    )
    _settings_flags(serve, Settings)

    api = sub.add_parser(
        "api",
        help="serve the forecast API (HTTP: latest forecasts, alerts, events, predict)",
        epilog=API_EXAMPLES,
        formatter_class=fmt,
    )
    _settings_flags(api, ApiSettings)

    config = sub.add_parser(
        "config",
        help="print the effective settings (secrets masked) and where each came from",
        epilog=CONFIG_EXAMPLES,
        formatter_class=fmt,
    )
    _settings_flags(config, Settings)

    replay = sub.add_parser(
        "replay",
        help="produce a CSV/Parquet dataset as ticks",
        epilog=REPLAY_EXAMPLES,
        formatter_class=fmt,
    )
    _settings_flags(replay, ClientSettings)
    replay.add_argument("--data", type=Path, required=True, help="CSV or Parquet file")
    replay.add_argument("--key-col", required=True, help="column with the series key")
    replay.add_argument("--time-col", required=True, help="column with the event time")
    replay.add_argument("--value-col", required=True, help="column with the value")
    replay.add_argument("--features", nargs="*", default=[], help="extra feature columns")
    replay.add_argument("--topic", help="default: the ticks topic setting")
    pace = replay.add_mutually_exclusive_group()
    pace.add_argument(
        "--speed",
        type=positive_float,
        help="event-time seconds per wall second (> 0; default: neither, as fast as the "
        "broker accepts)",
    )
    pace.add_argument("--rate", type=positive_float, help="messages per second (> 0)")
    replay.add_argument(
        "--limit", type=positive_int, help="send at most N ticks (N >= 1; default: all)"
    )
    replay.add_argument("--no-progress", action="store_true", help="no progress bar")

    tail = sub.add_parser(
        "tail",
        help="show forecasts or alerts as they arrive",
        epilog=TAIL_EXAMPLES,
        formatter_class=fmt,
    )
    _settings_flags(tail, ClientSettings)
    tail.add_argument(
        "--topic",
        default="forecasts",
        help="forecasts, alerts, dead-letter (the configured names) or any topic name",
    )
    tail.add_argument("--from-beginning", action="store_true")
    tail.add_argument(
        "--limit", type=positive_int, help="stop after N messages (N >= 1; default: no limit)"
    )
    view = tail.add_mutually_exclusive_group()
    view.add_argument(
        "--plain",
        action="store_true",
        help="one plain line per message (the default when stdout is not a terminal)",
    )
    view.add_argument("--json", action="store_true", help="print raw values, one per line")
    tail.add_argument(
        "--idle-timeout",
        type=positive_float,
        help="stop after S seconds without messages (S > 0; default: never)",
    )
    tail.add_argument(
        "--timezone", type=_zone, default=UTC, help="IANA zone of the times shown (default UTC)"
    )
    tail.add_argument(
        "--level", type=float, help="interval level of the bands shown (default: the widest)"
    )
    _history_parser(sub, fmt)
    topics = sub.add_parser(
        "topics",
        help="create the topics before the first start, or check them",
        epilog=TOPICS_EXAMPLES,
        formatter_class=fmt,
    )
    for action in add_actions(topics):
        _settings_flags(action, Settings)
    _schema_parser(sub, fmt)
    return parser


SCHEMA_EXAMPLES = """\
examples:
  streamcast schema forecast            # the version written now
  streamcast schema forecast --version 1
  streamcast schema dead_letter > dead_letter.json

Every produced record names its schema in the header streamcast.schema (<kind>/<version>);
docs/records.md explains the fields.
"""


def _schema_parser(sub: Any, fmt: type[argparse.HelpFormatter]) -> None:
    schema = sub.add_parser(
        "schema",
        help="print the JSON Schema of a record kind (ticks, forecasts, alerts, ...)",
        epilog=SCHEMA_EXAMPLES,
        formatter_class=fmt,
    )
    schema.add_argument("kind", choices=sorted(CURRENT), help="the record kind")
    schema.add_argument("--version", type=int, help="a schema version (default: the current)")


def _schema(args: argparse.Namespace) -> int:
    try:
        text = schema_text(args.kind, args.version)
    except KeyError as exc:
        raise SettingsError([str(exc.args[0])]) from None
    sys.stdout.write(text.decode())
    return 0


def _history_parser(sub: Any, fmt: type[argparse.HelpFormatter]) -> None:
    history = sub.add_parser(
        "history",
        help="export the ticks topic as a table (for retraining)",
        epilog=HISTORY_EXAMPLES,
        formatter_class=fmt,
    )
    actions = history.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = actions.add_parser(
        "export",
        help="write every well-formed tick as one row: key, ts, value, extras",
        epilog=HISTORY_EXAMPLES,
        formatter_class=fmt,
    )
    _settings_flags(export, ClientSettings)
    export.add_argument("--out", type=Path, required=True, help=".parquet or .csv file")
    export.add_argument("--topic", help="default: the ticks topic setting")
    export.add_argument("--features", nargs="*", default=[], help="extra feature names")
    export.add_argument("--since", type=_instant, help="ISO-8601 time: ticks produced from it")
    export.add_argument("--until", type=_instant, help="ISO-8601 time: ticks produced before it")


def _instant(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO-8601 time such as 2026-11-01T00:00:00Z, got {text!r}"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _zone(name: str) -> tzinfo:
    problem = zone_problem(name)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return ZoneInfo(name)


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags, as a nested dict for :func:`load_settings`."""
    source: CliSettingsSource[ClientSettings] = args.settings_source
    try:
        return dict(source(parsed_args=args)())
    except SourceError as exc:  # a nested flag that is not JSON
        raise SettingsError([unparsable(exc, None, from_cli=True)]) from None


def run(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the command; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "schema":  # no settings: it prints a file shipped with streamcast
        return _schema(args)
    if args.env_file is None:
        args.env_file = DEFAULT_ENV_FILE  # read when present, silently absent otherwise
    elif not args.env_file.is_file():
        raise SettingsError(
            [
                f"--env-file {args.env_file}: file not found: give an existing file, or "
                f"leave --env-file out to read ./{DEFAULT_ENV_FILE} when there is one"
            ]
        )
    overrides = overrides_from(args)
    # (set after the flags are read: the settings source reads every attribute of args)
    args.typed_flags = typed_flags(sys.argv[1:] if argv is None else argv)
    settings = load_settings(overrides, args.env_file, args.settings_kind)
    if args.command in ("serve", "api"):
        configure_logging(settings.log_format, settings.log_level)
    else:
        # The tools talk to people: readable logs, and the client's own connection errors
        # stay quiet because the one-line error the command ends with says what failed.
        configure_logging("console", settings.log_level)
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    for line in unknown_variables(args.env_file):
        if args.command in ("serve", "api"):
            log.warning(line)  # one log line, in the service's log format
        else:
            print(f"warning: {line}", file=sys.stderr)
    commands = {
        "serve": _serve,
        "api": _api,
        "config": _config,
        "replay": _replay,
        "tail": _tail,
        "history": _history,
        "topics": _topics,
    }
    return commands[args.command](args, settings, overrides)


def _serve(args: argparse.Namespace, settings: ClientSettings, overrides: Overrides) -> int:
    assert isinstance(settings, Settings)
    # onnxruntime loads only for serve: the other commands stay quick to start.
    from streamcast.service.app import serve  # noqa: PLC0415

    asyncio.run(serve(settings))
    return 0


def _api(args: argparse.Namespace, settings: ClientSettings, overrides: Overrides) -> int:
    assert isinstance(settings, ApiSettings)
    # FastAPI, uvicorn and onnxruntime load only for api
    from streamcast.api.server import serve_api  # noqa: PLC0415

    asyncio.run(serve_api(settings))
    return 0


def _config(args: argparse.Namespace, settings: ClientSettings, overrides: Overrides) -> int:
    # `streamcast api` reads the same environment: its own (api_*) settings follow serve's
    from streamcast.config import api_view  # noqa: PLC0415

    api, refusals = api_view(overrides, args.env_file)
    sources = setting_sources(settings, overrides, args.env_file)
    api_sources = setting_sources(api, overrides, args.env_file)
    rows = flatten(settings)
    api_rows = [(name, value) for name, value in flatten(api) if name not in dict(rows)]
    width = max(len(name) for name, _ in rows + api_rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:<40}  [{sources.get(name, 'default')}]")
    ttl_note = _effective_ttl(settings)
    if ttl_note is not None:
        print(ttl_note)
    print("# streamcast api (api_* settings; the others are shared)")
    for name, value in api_rows:
        print(f"{name:<{width}}  {value:<40}  [{api_sources.get(name, 'default')}]")
    typed = args.typed_flags
    for line in refusals:  # the auth is often left to the API's own deployment: a note
        print(f"# streamcast api would refuse these settings: {as_typed(line, typed)}")
    return 0


def _effective_ttl(settings: ClientSettings) -> str | None:
    """A note when the store's key TTL is not ``key_ttl_s`` as shown: left at its default
    with a model whose intervals it would not outlast (:meth:`Settings.effective_key_ttl_s`);
    None when it is, or when the model cannot be read (serve says why)."""
    if not isinstance(settings, Settings) or settings.model_path is None:
        return None
    from streamcast.core.artifact import read_meta  # noqa: PLC0415 - reads ONNX (slow import)
    from streamcast.core.models_dir import resolve_model  # noqa: PLC0415

    try:
        meta = read_meta(resolve_model(settings.model_path))
    except StreamcastError:
        return None
    ttl = settings.effective_key_ttl_s(meta.interval_s)
    if ttl == settings.key_ttl_s:
        return None
    return (
        f"# key_ttl_s in effect: {ttl:.0f} s ({TTL_INTERVALS} intervals of {meta.name}@"
        f"{meta.version}, {meta.interval_s} s each: the {settings.key_ttl_s:.0f} s default "
        "would expire its keys between their ticks)"
    )


def _replay(args: argparse.Namespace, settings: ClientSettings, overrides: Overrides) -> int:
    options = ReplayOptions(
        data=args.data,
        key_col=args.key_col,
        time_col=args.time_col,
        value_col=args.value_col,
        features=tuple(args.features),
        topic=args.topic or settings.topics.ticks,
        speed=args.speed,
        rate=args.rate,
        limit=args.limit,
        progress=not args.no_progress,
    )
    sent = asyncio.run(replay(settings, options))
    print(f"sent {sent} ticks to {options.topic}", file=sys.stderr)
    return 0


def _history(args: argparse.Namespace, settings: ClientSettings, overrides: Overrides) -> int:
    options = ExportOptions(
        out=args.out,
        topic=args.topic or settings.topics.ticks,
        features=tuple(args.features),
        since=args.since,
        until=args.until,
    )
    done = asyncio.run(export_history(settings, options))
    print(
        f"wrote {done.rows} ticks of {done.keys} keys to {options.out} "
        f"({done.skipped} malformed messages skipped)",
        file=sys.stderr,
    )
    return 0


def _topics(args: argparse.Namespace, settings: ClientSettings, overrides: Overrides) -> int:
    assert isinstance(settings, Settings)
    return run_topics(args, settings)


def _tail(args: argparse.Namespace, settings: ClientSettings, overrides: Overrides) -> int:
    topics = settings.topics
    aliases = {
        "forecasts": topics.forecasts,
        "alerts": topics.alerts,
        "dead-letter": topics.dead_letter,
        "dead_letter": topics.dead_letter,
    }
    topic = aliases.get(args.topic, args.topic)
    options = TailOptions(
        topic=topic,
        from_beginning=args.from_beginning,
        limit=args.limit,
        raw_json=args.json,
        idle_timeout_s=args.idle_timeout,
        # the live view is for the forecasts topic; any other topic is shown as lines
        live=False if args.plain or args.json or topic != topics.forecasts else None,
        alerts_topic=topics.alerts,
        zone=args.timezone,
        level=args.level,
    )
    asyncio.run(tail(settings, options))
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: user errors are one line and exit status 2."""
    typed = typed_flags(sys.argv[1:] if argv is None else argv)
    try:
        status = run(argv)
    except SettingsError as exc:
        for line in exc.problems:
            print(f"error: {as_typed(line, typed)}", file=sys.stderr)
        status = USAGE_ERROR
    except TransientError as exc:
        print(
            f"error: Kafka: {exc} (check --bootstrap-servers and the security settings)",
            file=sys.stderr,
        )
        status = USAGE_ERROR
    except (StreamcastError, FileNotFoundError) as exc:
        print(f"error: {as_typed(str(exc), typed)}", file=sys.stderr)
        status = USAGE_ERROR
    except KeyboardInterrupt:
        status = 130
    sys.exit(status)
