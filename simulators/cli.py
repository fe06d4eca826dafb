"""dcim-sim: simulated devices, a simulated site, and the demo (the public interface, docs/cli-*.md)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Final

from models import catalog
from models.errors import ConfigError
from models.schema import Protocol

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

# Explicit registry: protocol -> "module:function" serving one device until interrupted.
# The function takes (model, host, port, seed) and returns an exit code.
SIMULATORS: Final[dict[Protocol, str]] = {
    Protocol.MODBUS: "simulators.modbus:serve_forever",
    Protocol.SNMP: "simulators.snmp:serve_forever",
    Protocol.BACNET: "simulators.bacnet:serve_forever",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dcim-sim",
        description="Simulated data-centre hardware speaking Modbus, SNMP and BACnet.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("device", help="serve one simulated device of a catalog model")
    p.add_argument("model", metavar="MODEL", help="catalog id or path to a model file")
    p.add_argument("--port", required=True, type=int, metavar="P")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--seed", type=int, default=0, metavar="N")
    p = sub.add_parser("site", help="serve a whole simulated site from a scenario file")
    p.add_argument("--scenario", required=True, metavar="FILE")
    p.add_argument("--write-configs", metavar="DIR", help="write agent.toml and collector.toml polling every device")
    p.add_argument("--mqtt-url", default="mqtt://127.0.0.1:1883", help="broker named in the written configs")
    p = sub.add_parser("demo", help="run the whole system on simulated hardware")
    p.add_argument("--minutes", type=float, default=2.0, metavar="M", help="wall minutes of the simulated day")
    p.add_argument("--speed", type=float, default=None, metavar="X", help="time acceleration (default: fit one day)")
    p.add_argument("--mqtt-url", default=None, help="use this broker instead of the embedded one")
    p.add_argument("--out", default="demo-output", metavar="DIR", help="where the report, charts and logs go")
    sub.add_parser("models", help="list the catalog models")
    return parser


def _resolve(target: str) -> Callable[..., int]:
    module_name, _, func = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise LookupError(f"{module_name} is not available yet in this version") from None
    fn: Callable[..., int] = getattr(module, func)
    return fn


def cmd_device(args: argparse.Namespace) -> int:
    """Serve one device until interrupted."""
    model = catalog.load(args.model)
    serve = _resolve(SIMULATORS[model.protocol])
    return serve(model, args.host, args.port, args.seed)


def cmd_site(args: argparse.Namespace) -> int:
    """Serve a site scenario."""
    return _resolve("simulators.site:main")(args.scenario, args.write_configs, args.mqtt_url)


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo."""
    return _resolve("simulators.demo:main")(args)


def cmd_models(_args: argparse.Namespace) -> int:
    """List the catalog."""
    for model in catalog.load_all().values():
        print(f"{model.id:20} {model.protocol:7} {model.kind:8} {model.description}")
    return EXIT_OK


COMMANDS: Final = {"device": cmd_device, "site": cmd_site, "demo": cmd_demo, "models": cmd_models}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of dcim-sim."""
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
    except LookupError as exc:
        print(f"dcim-sim {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
