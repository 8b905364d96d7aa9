"""``streamcast-train``: fit, evaluate, tune, and the built-in datasets.

Every error a user can cause ends as one line ``error: ...`` on stderr and exit code 2;
programming errors still surface as tracebacks.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streamcast.core.cli_args import OneLineParser, positive_float, positive_int
from streamcast.core.features import CALENDAR_NAMES
from streamcast.core.intervals import AGGREGATIONS
from streamcast.core.zones import zone_problem
from training.config import BASELINES, PROTOCOLS, TrainConfig, date_problem
from training.errors import ConfigError, TrainingError

EXIT_USAGE = 2

FIT_EXAMPLES = """examples:
  streamcast-train fit --data dataset:pedestrian --non-negative --out models/pedestrian
  streamcast-train fit --data sensors.csv --key-col sensor --time-col ts --value-col count \\
      --interval 1h --window 48 --horizon 24 --season 24 \\
      --calendar time_of_day,day_of_week --timezone Australia/Melbourne --out models/sensors
  streamcast-train fit --data dataset:vic_elec --features Temperature --out models/vic
  streamcast-train fit --data dataset:taylor --config best.json --out models/taylor
  streamcast-train fit --data dataset:m3_monthly --interval 1M --horizon 18 --season 12 \\
      --protocol last-window --out models/m3
  streamcast-train fit --data prices.csv --key-col symbol --time-col date --value-col close \\
      --trading-days --horizon 5 --require-beat-baseline --final-refit --out models/prices
  streamcast history export --since 2026-11-01T00:00:00Z --out history.parquet
  streamcast-train fit --data history.parquet --key-col key --time-col ts --value-col value \\
      --duplicates first --out models/retrained --publish-to /models
"""
EVALUATE_EXAMPLES = """examples:
  streamcast-train evaluate --model models/pedestrian/model.onnx --data dataset:pedestrian
  streamcast-train evaluate --model models/sensors/model.onnx --data sensors-december.csv
  streamcast-train evaluate --model m.onnx --data new.csv --key-col sensor --time-col ts \\
      --value-col count --out reports/new --forecasts forecasts.csv

The column flags default to the columns the model was trained on (recorded in its
metadata); flags given win. A model exported before streamcast recorded them needs them.
"""
TUNE_EXAMPLES = """examples:
  streamcast-train tune --data dataset:pedestrian --trials 6 --time-budget 600 --out best.json
  streamcast-train fit --data dataset:pedestrian --config best.json --out models/tuned
"""
DATASETS_EXAMPLES = """examples:
  streamcast-train datasets list
  streamcast-train datasets export pedestrian --out pedestrian.csv
"""


def _instant(text: str) -> int:
    from training.timetext import parse_instant  # noqa: PLC0415 - keeps --help fast

    try:
        return parse_instant(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _zone(text: str) -> str:
    problem = zone_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def _dates(text: str) -> tuple[str, ...]:
    dates = _names(text)
    for day in dates:
        problem = date_problem(day)
        if problem is not None:
            raise argparse.ArgumentTypeError(problem)
    return dates


def _file_name(text: str) -> str:
    """A forecasts file name: written into --out, so no directories and a known format."""
    path = Path(text)
    if path.name != text or path.suffix not in (".csv", ".parquet"):
        raise argparse.ArgumentTypeError(
            f"expected a file name ending .csv or .parquet (written into --out), got {text!r}"
        )
    return text


def _add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        required=True,
        help="CSV/Parquet file in long format, or dataset:NAME (see 'datasets list')",
    )
    g.add_argument("--key-col", help="column naming the series (omit for one series)")
    g.add_argument("--time-col", help="timestamp column (ISO-8601 or epoch s/ms)")
    g.add_argument("--value-col", help="the numeric column to forecast")
    g.add_argument(
        "--features",
        type=_names,
        default=(),
        help="comma-separated extra numeric columns observed with the value",
    )
    g.add_argument(
        "--since", type=_instant, help="ISO-8601 time: use rows whose timestamp is at or after it"
    )
    g.add_argument("--until", type=_instant, help="ISO-8601 time: use rows before it")
    g.add_argument(
        "--duplicates",
        choices=("error", "first", "aggregate"),
        default="error",
        help="rows of one key at the same time: an error (default), keep the first (what "
        "the service does: an exported ticks topic may hold retried messages), or aggregate",
    )


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "model and training (defaults: built-in dataset presets, then TrainConfig)"
    )
    g.add_argument("--config", type=Path, help="JSON/TOML TrainConfig (e.g. from 'tune')")
    g.add_argument(
        "--interval",
        help="interval of the grid: 5min (or 5m), 1h, 1d; calendar months 1M (1mo, 1month) "
        "and quarters 1Q (3M). Default: inferred from the data",
    )
    g.add_argument(
        "--trading-days",
        action="store_true",
        default=None,
        help="daily intervals on trading days only (weekends and holidays are not gaps)",
    )
    g.add_argument(
        "--holidays",
        type=_dates,
        help="with --trading-days: comma-separated ISO dates that are not trading days "
        "(default: the weekdays on which no key has a value)",
    )
    g.add_argument("--window", type=positive_int, help="warm-up length in intervals")
    g.add_argument("--horizon", type=positive_int, help="forecast steps")
    g.add_argument(
        "--season", type=positive_int, help="seasonal period in intervals (seasonal naive, MASE)"
    )
    g.add_argument(
        "--calendar",
        type=_names,
        help=f"calendar features, comma-separated from {','.join(CALENDAR_NAMES)}"
        " ('none' for none)",
    )
    g.add_argument("--timezone", type=_zone, help="IANA zone for calendar features")
    g.add_argument("--max-gap", type=int, help="longest gap (intervals) bridged linearly")
    g.add_argument("--aggregation", choices=AGGREGATIONS)
    g.add_argument(
        "--non-negative",
        action="store_true",
        default=None,
        help="the series cannot go below 0 (counts, volumes): the model floors its "
        "forecasts and bands at 0, in the service as in the backtest",
    )
    g.add_argument("--units", type=positive_int)
    g.add_argument("--layers", type=positive_int)
    g.add_argument("--dropout", type=float)
    g.add_argument("--epochs", type=positive_int)
    g.add_argument("--batch-size", type=positive_int)
    g.add_argument("--seq-len", type=positive_int, help="training sequence length (steps)")
    g.add_argument("--learning-rate", type=positive_float)
    g.add_argument("--time-budget", type=positive_float, help="training wall-clock seconds")
    g.add_argument("--seed", type=int)
    _add_protocol(g)
    _add_baselines(g)
    g.add_argument(
        "--require-beat-baseline",
        action="store_true",
        default=None,
        help="fail (exit 2) when the LSTM loses to the best baseline on validation",
    )
    g.add_argument(
        "--no-refit",
        dest="refit",
        action="store_false",
        default=None,
        help="no fine-tune on training + validation rows after early stopping",
    )
    g.add_argument(
        "--no-shrinkage",
        dest="shrinkage",
        action="store_false",
        default=None,
        help="no validation-chosen shrinkage toward naive (nor its significance guard)",
    )
    g.add_argument(
        "--final-refit",
        action="store_true",
        default=None,
        help="after the backtest, fine-tune on every row (test included) and export that "
        "model; the reported metrics stay those of the model before it",
    )


def _add_baselines(g: Any) -> None:
    g.add_argument(
        "--baselines",
        type=_names,
        help=f"baselines scored beside the LSTM, comma-separated from {','.join(BASELINES)} "
        "(default all) or 'none'",
    )
    g.add_argument(
        "--baseline-budget",
        type=positive_float,
        help="wall-clock seconds the statistical baselines may take in all (default 360; "
        "one projected to exceed it is skipped, and the report says so)",
    )


def _add_protocol(g: Any) -> None:
    g.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        help="rolling: the streaming backtest over the test period (default); last-window: "
        "one forecast from the end of each key's fit part, the last horizon rows as test "
        "(the M3/Monash standard)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    root = OneLineParser(
        prog="streamcast-train",
        description="Train, evaluate and export streamcast's stateful LSTM.",
        epilog=FIT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = root.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    fit = sub.add_parser(
        "fit",
        help="train, export model.onnx, backtest and report",
        epilog=FIT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_data_args(fit)
    _add_model_args(fit)
    fit.add_argument("--out", type=Path, required=True, help="output directory")
    fit.add_argument("--name", help="model name (default: the output directory's name)")
    fit.add_argument(
        "--forecasts",
        default="forecasts.parquet",
        type=_file_name,
        help="forecasts file name in --out (.csv or .parquet)",
    )
    fit.add_argument(
        "--publish-to",
        type=Path,
        metavar="DIR",
        help="also publish the model into this models directory as <version>.onnx, "
        "atomically (what a service watching the directory swaps to)",
    )
    fit.add_argument(
        "--publish-if-better-than",
        type=_names,
        default=(),
        metavar="MODELS",
        help="publish only if the LSTM's test MASE beats these baselines, e.g. seasonal_naive",
    )
    fit.add_argument(
        "--publish-keep",
        type=positive_int,
        metavar="N",
        help="after publishing, remove all but the newest N models in --publish-to",
    )
    fit.add_argument("--quiet", action="store_true", help="no progress output")

    ev = sub.add_parser(
        "evaluate",
        help="re-run the streaming backtest with ONNX only",
        epilog=EVALUATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ev.add_argument("--model", type=Path, required=True, help="model.onnx from fit")
    _add_data_args(ev)
    ev.add_argument("--out", type=Path, help="output directory (default: next to the model)")
    _add_protocol(ev)
    _add_baselines(ev)
    ev.add_argument(
        "--forecasts",
        default="forecasts.parquet",
        type=_file_name,
        help="forecasts file name in --out (.csv or .parquet)",
    )
    ev.add_argument("--quiet", action="store_true")

    tune = sub.add_parser(
        "tune",
        help="keras-tuner search; writes the best config",
        epilog=TUNE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_data_args(tune)
    _add_model_args(tune)
    tune.add_argument("--trials", type=positive_int, default=6)
    tune.add_argument(
        "--search-budget",
        type=positive_float,
        default=600.0,
        help="wall-clock seconds for the whole search",
    )
    tune.add_argument("--out", type=Path, required=True, help="best config file (.json/.toml)")
    tune.add_argument("--quiet", action="store_true")

    ds = sub.add_parser(
        "datasets",
        help="list or export the built-in datasets",
        epilog=DATASETS_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ds_sub = ds.add_subparsers(dest="action", required=True, parser_class=OneLineParser)
    ds_sub.add_parser("list", help="list the datasets and their settings")
    export = ds_sub.add_parser("export", help="write a dataset as CSV")
    export.add_argument("name")
    export.add_argument("--out", type=Path, required=True)
    return root


def _data_source(args: argparse.Namespace) -> Any:
    from training.history import DataSource  # noqa: PLC0415 - keeps --help fast

    return DataSource(
        spec=args.data,
        key_col=args.key_col,
        time_col=args.time_col,
        value_col=args.value_col,
        feature_cols=tuple(args.features),
        since_ms=args.since,
        until_ms=args.until,
        duplicates=args.duplicates,
    )


_FLAG_FIELDS = {
    "window": "window",
    "horizon": "horizon",
    "season": "season",
    "timezone": "timezone",
    "max_gap": "max_gap",
    "aggregation": "aggregation",
    "non_negative": "non_negative",
    "units": "units",
    "layers": "layers",
    "dropout": "dropout",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "seq_len": "seq_len",
    "learning_rate": "learning_rate",
    "time_budget": "time_budget_s",
    "baseline_budget": "baseline_budget_s",
    "seed": "seed",
    "protocol": "protocol",
    "trading_days": "trading_days",
    "require_beat_baseline": "require_beat_baseline",
    "final_refit": "final_refit",
    "refit": "refit",
    "shrinkage": "shrinkage",
}


def config_from_args(args: argparse.Namespace, source: Any) -> TrainConfig:
    """Defaults < dataset presets < --config file < explicit flags."""
    from training.history import dataset_defaults  # noqa: PLC0415
    from training.timetext import parse_grid  # noqa: PLC0415

    values: dict[str, Any] = dict(dataset_defaults(source))
    if args.config is not None:
        values.update(TrainConfig.load(args.config).to_dict())
    for flag, field_name in _FLAG_FIELDS.items():
        value = getattr(args, flag, None)
        if value is not None:
            values[field_name] = value
    if args.interval is not None:
        parse_grid(args.interval)  # a spelling it cannot read is a one-line error now
        values["interval"] = args.interval
    if getattr(args, "holidays", None) is not None:
        if not values.get("trading_days"):
            raise ConfigError("--holidays needs --trading-days (holidays are days off its grid)")
        values["holidays"] = args.holidays
    if args.calendar is not None:
        values["calendar"] = () if args.calendar == ("none",) else args.calendar
    if args.baselines is not None:
        values["baselines"] = () if args.baselines == ("none",) else args.baselines
    return TrainConfig.from_dict(values)


def _check_out_dir(out: Path) -> None:
    """ConfigError unless --out is a directory or can become one (before any work)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: not a directory")
    _check_parents(out)


def _check_out_file(out: Path) -> None:
    """ConfigError unless --out can be written as a config file ``fit --config`` reads."""
    if out.suffix not in (".json", ".toml"):
        raise ConfigError(f"--out {out}: give a .json or .toml file name (what --config reads)")
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a directory; give a .json or .toml file name")
    _check_parents(out)


def _check_parents(out: Path) -> None:
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"--out {out}: {parent}: not a directory")
            return


def _fit(args: argparse.Namespace) -> None:
    from training.workflow import fit_pipeline  # noqa: PLC0415

    _check_out_dir(args.out)
    source = _data_source(args)
    config = config_from_args(args, source)
    if args.publish_to is not None:
        from training.publish import check_baselines, check_models_dir  # noqa: PLC0415

        check_models_dir(args.publish_to)
        check_baselines(args.publish_if_better_than, config.baselines)
    elif args.publish_if_better_than or args.publish_keep is not None:
        raise ConfigError("--publish-if-better-than and --publish-keep need --publish-to")
    name = args.name or args.out.resolve().name
    report = fit_pipeline(
        source, config, args.out, name, verbose=not args.quiet, forecasts_file=args.forecasts
    )
    print(
        f"wrote {args.out / 'model.onnx'}, report.json, report.md, {args.forecasts} "
        f"(parity {report['parity']['max_abs_diff']:.1e}, {report['timings']['total']:.0f}s)"
    )
    if args.publish_to is not None:
        _publish(args, report)


def _publish(args: argparse.Namespace, report: dict[str, Any]) -> None:
    from training.publish import prune_published, publish_model, quality_gate  # noqa: PLC0415

    quality_gate(report["metrics"], args.publish_if_better_than)
    published = publish_model(args.out / "model.onnx", args.publish_to, report["model"]["version"])
    print(f"published {published}")
    if args.publish_keep is not None:
        for old in prune_published(args.publish_to, args.publish_keep):
            print(f"removed {old}")


def _evaluate(args: argparse.Namespace) -> None:
    from training.workflow import evaluate_pipeline  # noqa: PLC0415

    if not args.model.is_file():
        raise ConfigError(f"--model {args.model}: no such file")
    out = args.out or args.model.parent / "evaluate"
    _check_out_dir(out)
    overrides: dict[str, Any] = {}
    if args.baselines is not None:
        overrides["baselines"] = () if args.baselines == ("none",) else args.baselines
    if args.baseline_budget is not None:
        overrides["baseline_budget_s"] = args.baseline_budget
    evaluate_pipeline(
        args.model, _data_source(args), out, verbose=not args.quiet,
        forecasts_file=args.forecasts, protocol=args.protocol, overrides=overrides,
    )  # fmt: skip
    print(f"wrote {out / 'report.json'}, report.md, {args.forecasts}")


def _tune(args: argparse.Namespace) -> None:
    from training.tune import tune  # noqa: PLC0415

    _check_out_file(args.out)
    source = _data_source(args)
    config = config_from_args(args, source)
    best, score = tune(
        source, config, trials=args.trials, budget_s=args.search_budget, verbose=not args.quiet
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.suffix == ".toml":
        args.out.write_text(_toml(best.to_dict()))
    else:
        best.save(args.out)
    print(f"best validation loss {score:.4f}; wrote {args.out}")


def _toml(values: dict[str, Any]) -> str:
    import json  # noqa: PLC0415

    lines = []
    for k, v in values.items():
        if v is None:
            continue
        lines.append(f"{k} = {json.dumps(v) if not isinstance(v, bool) else str(v).lower()}")
    return "\n".join(lines) + "\n"


def _datasets(args: argparse.Namespace) -> None:
    from training.datasets import DATASETS, export_csv  # noqa: PLC0415

    if args.action == "list":
        for info in DATASETS.values():
            print(
                f"{info.name:<15} {info.interval:<6} season {info.season:<3} "
                f"{info.timezone:<20} {info.description}"
            )
        return
    if args.name not in DATASETS:
        raise ConfigError(f"unknown dataset {args.name!r}; available: {', '.join(DATASETS)}")
    path = export_csv(args.name, args.out)
    print(f"wrote {path}; fit it with: {DATASETS[args.name].fit_flags()}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``streamcast-train`` console script."""
    # TensorFlow's C++ banners are noise on a CLI (see training/model.py for oneDNN)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    args = build_parser().parse_args(argv)
    handlers = {"fit": _fit, "evaluate": _evaluate, "tune": _tune, "datasets": _datasets}
    try:
        handlers[args.command](args)
    except TrainingError as exc:
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # e.g. --out is a file, or a directory we may not write
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: cannot write {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


def _one_line(message: str) -> str:
    return " ".join(message.split())


if __name__ == "__main__":
    sys.exit(main())
