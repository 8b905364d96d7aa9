"""``scripts/chaos SCENARIO [options]``: the chaos runs of the exactly-once service
against a real broker (``crash``, ``rebalance``, ``broker-restart``), with a verdict.

The scenarios and the verdict live in :mod:`tests.support.chaos` (the integration tests
run them too). Example: ``scripts/chaos crash --ticks 50000 --keys 100 --kills 5``
(starts its own broker unless ``--bootstrap`` is given). Exit status 0 on PASS.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.chaos import Scenario, run_scenario  # noqa: E402
from tests.support.kafka import kafka_local  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """``scripts/chaos SCENARIO [options]``: run it, print the verdict, exit 0 on PASS."""
    parser = argparse.ArgumentParser(prog="scripts/chaos", description=__doc__.split("\n")[0])
    parser.add_argument("scenario", choices=["crash", "rebalance", "broker-restart"])
    parser.add_argument("--bootstrap", help="use this broker (default: start a private one)")
    defaults = Scenario()
    for name in ("ticks", "keys", "partitions", "kills", "bad_every", "seed", "batch_max_records"):
        flag = f"--{name.replace('_', '-')}"
        parser.add_argument(flag, type=int, default=getattr(defaults, name))
    parser.add_argument("--pace-s", type=float, default=defaults.pace_s)
    parser.add_argument("--outage-s", type=float, default=defaults.outage_s)
    parser.add_argument(
        "--signal", choices=["KILL", "TERM"], default="KILL", help="crash: how to stop"
    )
    parser.add_argument("--timeout-s", type=float, default=defaults.timeout_s)
    args = parser.parse_args(argv)
    sc = Scenario(
        ticks=args.ticks,
        keys=args.keys,
        partitions=args.partitions,
        kills=args.kills,
        bad_every=args.bad_every,
        seed=args.seed,
        batch_max_records=args.batch_max_records,
        pace_s=args.pace_s,
        outage_s=args.outage_s,
        stop_signal=signal.Signals[f"SIG{args.signal}"].value,
        timeout_s=args.timeout_s,
    )
    with tempfile.TemporaryDirectory(prefix="streamcast-chaos-") as tmp:
        workdir = Path(tmp)
        broker = None
        bootstrap = args.bootstrap
        if bootstrap is None or args.scenario == "broker-restart":
            port = kafka_local.free_port()
            broker = kafka_local.LocalBroker(
                kafka_local.BrokerConfig(port=port, data_dir=workdir / "kafka")
            )
            bootstrap = broker.start(timeout=120)
        try:
            verdict = asyncio.run(
                run_scenario(args.scenario, bootstrap, workdir / "run", sc, broker)
            )
        finally:
            if broker is not None:
                broker.stop()
    print(verdict.report())
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
