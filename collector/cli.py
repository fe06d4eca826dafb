"""dcim-collector: the collector's command line (the public interface, docs/cli-*.md)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Final

from collector import config as collector_config
from collector import reports, settle_cmd
from collector.alarms.cli import cmd_alarms
from models.errors import ConfigError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:  # noqa: PLR0915  (one statement per flag reads best)
    parser = argparse.ArgumentParser(
        prog="dcim-collector",
        description="Collector: MQTT ingest into InfluxDB or SQLite; PUE, availability, settlement, optimiser.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="ingest telemetry and run the scheduled jobs")
    p.add_argument("--config", required=True, metavar="FILE")
    p.add_argument("--http", metavar="HOST:PORT", help="serve the read-only dashboard here")

    p = sub.add_parser("check-config", help="validate a configuration file")
    p.add_argument("--config", required=True, metavar="FILE")

    p = sub.add_parser("report", help="PUE and availability reports")
    rep = p.add_subparsers(dest="report", required=True, metavar="REPORT")
    r = rep.add_parser("pue", help="energy-based PUE over a period")
    r.add_argument("--config", required=True, metavar="FILE")
    r.add_argument("--from", dest="date_from", required=True, metavar="DATE")
    r.add_argument("--to", dest="date_to", required=True, metavar="DATE")
    r.add_argument("--json", action="store_true")
    r.add_argument("--csv", action="store_true")
    r.add_argument("--plot", metavar="PNG")
    r.add_argument("--source", choices=("auto", "raw"), default="auto", help="raw: ignore stored energies")
    r = rep.add_parser("availability", help="power-environment availability for a month")
    r.add_argument("--config", required=True, metavar="FILE")
    r.add_argument("--month", required=True, metavar="YYYY-MM")
    r.add_argument("--json", action="store_true")
    r.add_argument("--csv", action="store_true")
    r.add_argument("--plot", metavar="PNG")

    p = sub.add_parser("settle", help="PUE contract settlement (bonus or penalty)")
    p.add_argument("--config", metavar="FILE")
    p.add_argument("--year", type=int, metavar="YYYY")
    p.add_argument("--it-kwh", type=float, metavar="X")
    p.add_argument("--facility-kwh", type=float, metavar="Y")
    p.add_argument("--tariff", type=float, metavar="P", help="price per kWh (default 0.60)")
    p.add_argument("--co2-factor", type=float, metavar="F", help="kg CO2 per kWh")
    p.add_argument("--cap", type=float, default=1.40)
    p.add_argument("--threshold", type=float, default=1.30)
    p.add_argument("--bonus-rate", type=float, default=0.10)
    p.add_argument("--penalty-rate", type=float, default=0.10)
    p.add_argument("--json", action="store_true")
    settle_cmd.add_arguments(p)

    p = sub.add_parser("optimize", help="the chiller-plant optimiser's current recommendation")
    p.add_argument("--config", required=True, metavar="FILE")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("alarms", help="list and acknowledge alarms")
    al = p.add_subparsers(dest="alarms", required=True, metavar="ACTION")
    a = al.add_parser("list")
    a.add_argument("--config", required=True, metavar="FILE")
    a.add_argument("--active", action="store_true")
    a.add_argument("--json", action="store_true")
    a = al.add_parser("ack")
    a.add_argument("id", metavar="ID")
    a.add_argument("--config", required=True, metavar="FILE")
    a.add_argument("--by", required=True, metavar="NAME")
    a.add_argument("--comment", default="")
    return parser


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate a collector configuration."""
    loaded = collector_config.load(args.config)
    cfg = loaded.config
    print(f"{loaded.path}: ok: collector {cfg.collector.id} at site {cfg.collector.site}, store {cfg.store.kind}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    """Run the collector service until SIGTERM or SIGINT."""
    from collector import http as dashboard_http  # noqa: PLC0415  (keeps the other commands' start-up light)
    from collector import service  # noqa: PLC0415

    loaded = collector_config.load(args.config)
    if args.http:  # checked before anything starts: a bad address is a usage error
        try:
            dashboard_http.parse_address(args.http)
        except dashboard_http.HttpAddressError as exc:
            print(f"dcim-collector run: {exc}", file=sys.stderr)
            return EXIT_USAGE
    service.configure_logging(loaded.config, verbose=args.verbose)
    try:
        return service.run(loaded, http=args.http)
    except dashboard_http.DashboardError as exc:
        print(f"dcim-collector run: {exc}", file=sys.stderr)
        return EXIT_FAILED


def cmd_not_yet(args: argparse.Namespace) -> int:
    """A command whose implementation is not part of this build."""
    print(f"dcim-collector {args.command}: not available yet in this version", file=sys.stderr)
    return EXIT_USAGE


def cmd_optimize(args: argparse.Namespace) -> int:
    """Print the chiller-plant optimiser's current recommendation (docs/optimizer.md)."""
    from collector import optimizer_service  # noqa: PLC0415  (numpy and scipy only for this command)
    from collector.store import StoreError, create_store  # noqa: PLC0415

    cfg = collector_config.load(args.config).config
    store = create_store(cfg.store)
    try:
        store.open()
        return optimizer_service.cmd_optimize(cfg, store, as_json=args.json)
    except StoreError as exc:
        print(f"dcim-collector optimize: store: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        store.close()


COMMANDS: Final[dict[str, Callable[[argparse.Namespace], int]]] = {
    "run": cmd_run,
    "check-config": cmd_check_config,
    "report": reports.cmd_report,
    "settle": settle_cmd.cmd_settle,
    "optimize": cmd_optimize,
    "alarms": cmd_alarms,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of dcim-collector."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
