"""dcim-agent: the edge agent's command line (the public interface, docs/cli-*.md)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
import uuid
from collections.abc import Sequence

from agent import config as agent_config
from agent.batch import poll_once_line
from agent.config import Device, LoadedConfig
from agent.discover import cmd_discover
from agent.drivers import driver_class
from agent.drivers.base import Driver, DriverUnavailableError, PollResult
from agent.probe import cmd_probe
from models.errors import ConfigError
from models.schema import Protocol
from models.telemetry import Command

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
CLI_COMMAND_EXPIRY_S = 60.0  # a write from the command line is refused if it waits longer

log = logging.getLogger("dcim-agent")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dcim-agent",
        description="Edge agent: polls Modbus, SNMP and BACnet devices and publishes over MQTT.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="poll every device on its schedule and publish over MQTT")
    p.add_argument("--config", required=True, metavar="FILE")

    p = sub.add_parser("poll-once", help="poll devices once and print what was read")
    p.add_argument("--config", required=True, metavar="FILE")
    p.add_argument("--device", metavar="ID", help="only this device")
    p.add_argument("--json", action="store_true", help="one JSON object per device per line")

    p = sub.add_parser("check-config", help="validate a configuration file and its models")
    p.add_argument("--config", required=True, metavar="FILE")

    p = sub.add_parser("write", help="write a setpoint through the model's limits and read it back")
    p.add_argument("--config", required=True, metavar="FILE")
    p.add_argument("--device", required=True, metavar="ID")
    p.add_argument("--point", required=True, metavar="NAME")
    p.add_argument("--value", metavar="V", help="the new value (number, or an enumeration name)")
    p.add_argument("--release", action="store_true", help="relinquish the BACnet priority slot")

    p = sub.add_parser("probe", help="read raw values from an unknown device")
    probe_sub = p.add_subparsers(dest="protocol", required=True, metavar="PROTOCOL")
    m = probe_sub.add_parser("modbus", help="read registers and print every decoding")
    m.add_argument("--host", required=True)
    m.add_argument("--port", required=True, type=int)
    m.add_argument("--unit", type=int, default=1)
    m.add_argument("--address", required=True, type=int, help="0-based register address")
    m.add_argument("--count", required=True, type=int, help="number of registers")
    m.add_argument("--register", choices=["holding", "input"], default="holding")
    m.add_argument("--timeout", type=float, default=2.0, metavar="S")

    p = sub.add_parser("discover", help="draft a device model from what a device offers")
    disc_sub = p.add_subparsers(dest="protocol", required=True, metavar="PROTOCOL")
    b = disc_sub.add_parser("bacnet", help="read a BACnet device's object list")
    b.add_argument("--host", required=True)
    b.add_argument("--port", required=True, type=int)
    b.add_argument("--instance", type=int, help="device instance (default: ask with Who-Is)")
    b.add_argument("--timeout", type=float, default=3.0, metavar="S", help="seconds to wait for each answer")
    return parser


def _load(path: str) -> LoadedConfig:
    return agent_config.load(path)


def _selected(cfg: LoadedConfig, device_id: str | None) -> list[Device]:
    if device_id is None:
        return [d for d in cfg.devices if d.config.enabled]
    return [cfg.device(device_id)]


async def _poll_all(devices: Sequence[Device]) -> list[tuple[Device, PollResult]]:
    drivers: dict[Protocol, Driver] = {}
    try:
        for device in devices:
            if device.protocol not in drivers:
                drivers[device.protocol] = driver_class(device.protocol)()
        results = await asyncio.gather(*(drivers[d.protocol].poll(d) for d in devices))
    finally:
        for driver in drivers.values():
            await driver.close()
    return list(zip(devices, results, strict=True))


def _print_table(device: Device, result: PollResult) -> None:
    print(f"{device.id} ({device.model.id}) {result.requests} requests, {result.elapsed_s * 1000:.0f} ms")
    if result.error:
        print(f"  error: {result.error}")
    for point in device.model.points:
        reading = result.points.get(point.name)
        if reading is None:
            continue
        shown = f"{reading.value} {point.unit}".rstrip() if reading.quality.good else f"-- ({reading.quality})"
        print(f"  {point.name:32} {shown}")
    for name, rows in result.tables.items():
        for index, row in rows.items():
            for col, reading in row.items():
                shown = str(reading.value) if reading.quality.good else f"-- ({reading.quality})"
                print(f"  {name}[{index}].{col:24} {shown}")


def cmd_poll_once(args: argparse.Namespace) -> int:
    """Poll each selected device once; exit 1 when any device failed."""
    cfg = _load(args.config)
    devices = _selected(cfg, args.device)
    results = asyncio.run(_poll_all(devices))
    failed = False
    for device, result in results:
        if args.json:
            sys.stdout.buffer.write(poll_once_line(device, result) + b"\n")
        else:
            _print_table(device, result)
        if result.error or (result.points and result.good == 0):
            failed = True
    sys.stdout.flush()
    return EXIT_FAILED if failed else EXIT_OK


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate a configuration and its models."""
    cfg = _load(args.config)
    print(f"{cfg.path}: ok: agent {cfg.config.agent.id} at site {cfg.config.agent.site}, {len(cfg.devices)} devices")
    for device in cfg.devices:
        print(
            f"  {device.id}: {device.model.id} ({device.protocol}) at {device.config.host}:{device.port}, "
            f"every {device.interval_s:g} s, {len(device.model.points)} points"
        )
    return EXIT_OK


def _parse_value(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


async def _write(cfg: LoadedConfig, device: Device, point_name: str, value: float | str | None, release: bool) -> int:
    from agent.commands import CommandHandler  # noqa: PLC0415  (only this command needs it)

    point = device.model.point(point_name)
    driver = driver_class(device.protocol)()
    handler = CommandHandler(
        commands=cfg.config.commands,
        devices={d.id: d for d in cfg.devices},
        driver_for=lambda _device: driver,
        lock_for=lambda _device: contextlib.nullcontext(),
    )
    user = os.environ.get("SUDO_USER") or os.environ.get("USER") or "unknown"
    cmd = Command(
        id=f"cli-{uuid.uuid4().hex[:12]}",
        device=device.id,
        point=point.name,
        value=value,
        release=release,
        expires=time.time() + CLI_COMMAND_EXPIRY_S,
        by=f"cli:{user}",
    )
    try:
        result, written = await handler.execute(cmd, source="cli")
    finally:
        await driver.close()
    if result.outcome == "refused":
        print(f"{device.id}.{point.name}: refused: {result.reason}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{device.id}.{point.name}: {result.outcome}: before {result.before} after {result.after} {point.unit}")
    if result.reason:
        print(f"  {result.reason}")
    if written is not None and written.priority_array is not None:
        slots = ", ".join(f"{i + 1}={v}" for i, v in enumerate(written.priority_array) if v is not None)
        print(f"  priority array: {slots or 'all NULL'}; active priority: {written.active_priority}")
    return EXIT_OK if result.ok else EXIT_FAILED


def cmd_write(args: argparse.Namespace) -> int:
    """Write one setpoint through the same checks as a command."""
    if args.release == (args.value is not None):
        print("dcim-agent write: give exactly one of --value or --release", file=sys.stderr)
        return EXIT_USAGE
    cfg = _load(args.config)
    device = cfg.device(args.device)
    value = None if args.release else _parse_value(args.value)
    return asyncio.run(_write(cfg, device, args.point, value, args.release))


def cmd_run(args: argparse.Namespace) -> int:
    """Run the agent service until SIGTERM/SIGINT (SIGHUP reloads the configuration)."""
    # Imported here so that poll-once and check-config do not load paho and apscheduler.
    from agent.publisher import PublisherError  # noqa: PLC0415
    from agent.runtime import run_service  # noqa: PLC0415
    from agent.spool import SpoolError  # noqa: PLC0415

    try:
        return run_service(args.config, verbose=args.verbose)
    except (SpoolError, PublisherError) as exc:
        print(f"{args.config}: {exc}", file=sys.stderr)
        return EXIT_USAGE


def cmd_not_yet(args: argparse.Namespace) -> int:
    """A command whose implementation is not part of this build."""
    name = " ".join(str(x) for x in (args.command, getattr(args, "protocol", None)) if x)
    print(f"dcim-agent {name}: not available yet in this version", file=sys.stderr)
    return EXIT_USAGE


COMMANDS = {
    "run": cmd_run,
    "poll-once": cmd_poll_once,
    "check-config": cmd_check_config,
    "write": cmd_write,
    "probe": cmd_probe,
    "discover": cmd_discover,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of dcim-agent."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    except KeyError as exc:
        print(f"dcim-agent: {exc.args[0]}", file=sys.stderr)
        return EXIT_USAGE
    except DriverUnavailableError as exc:
        print(f"dcim-agent: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
