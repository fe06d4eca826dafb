"""dcim-agent discover: draft a device model from what a device offers."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys

from agent.drivers import driver_class
from agent.drivers.base import DriverUnavailableError
from models.errors import ConfigError
from models.schema import Protocol
from models.units import UnitError, canonical

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
DISCOVER_TIMEOUT_S = 3.0

_TYPES = {"analog": "float32", "binary": "bool", "multi-state": "uint32"}


def snake_name(text: str, fallback: str) -> str:
    """A snake_case point name from a device's object name."""
    name = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    if not name:
        name = re.sub(r"[^a-z0-9]+", "_", fallback.lower()).strip("_")
    if not name[0].isalpha():
        name = f"p_{name}"
    return name


def _toml_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def draft_model(found: object, host: str, port: int) -> str:
    """The TOML text of a draft model for a discovered BACnet device."""
    from agent.drivers.bacnet import DiscoveredDevice  # noqa: PLC0415  (bacpypes3 only when discovering)

    if not isinstance(found, DiscoveredDevice):
        raise TypeError("a DiscoveredDevice is needed")
    model_id = snake_name(found.model_name or found.name or "device", "device").replace("_", "-")
    lines = [
        f"# Draft model discovered from BACnet device {found.instance} at {host}:{port}",
        (
            f"# ({found.vendor or 'unknown vendor'}, {found.model_name or 'unknown model'};"
            f" max APDU {found.max_apdu}, {found.segmentation})."
        ),
        "# Review it: choose the kind, name the points, set units where the device gives none,",
        "# and give writable points their limits before any write.",
        f"id = {_toml_string('draft-' + model_id)}",
        'kind = "generic"',
        'protocol = "bacnet"',
        f"description = {_toml_string(f'{found.vendor} {found.model_name}'.strip() or 'discovered device')}",
        f"bacnet = {{ device_instance = {found.instance} }}",
    ]
    used: set[str] = set()
    for obj in found.objects:
        name = snake_name(obj.name, obj.object)
        base, n = name, 2
        while name in used:
            name, n = f"{base}_{n}", n + 1
        used.add(name)
        family = obj.object.rpartition(":")[0].rsplit("-", 1)[0]
        lines += ["", "[[points]]", f"name = {_toml_string(name)}"]
        if obj.name and obj.name != name:
            lines.append(f"# object-name: {_toml_string(obj.name)}")
        if obj.description:
            lines.append(f"description = {_toml_string(obj.description)}")
        lines.append(f"object = {_toml_string(obj.object)}")
        lines.append(f"type = {_toml_string(_TYPES.get(family, 'float32'))}")
        if obj.units is not None:
            try:
                unit = canonical(obj.units)
            except UnitError:
                lines.append(f'unit = ""  # the device says {obj.units!r}: no unit of ours matches')
            else:
                lines.append(f"unit = {_toml_string(unit)}")
        if obj.states:
            states = ", ".join(f"{i} = {_toml_string(s)}" for i, s in enumerate(obj.states, start=1))
            lines.append(f"enum = {{ {states} }}")
        if obj.commandable:
            lines.append("# commandable: writable = { min = ?, max = ?, max_step = ?, priority = 16 }")
    if found.other_objects:
        lines += ["", "# Objects a model cannot describe yet: " + ", ".join(found.other_objects)]
    return "\n".join(lines) + "\n"


async def _discover_bacnet(host: str, port: int, instance: int | None, timeout_s: float) -> str:
    driver = driver_class(Protocol.BACNET)()
    try:
        found = await driver.discover(host, port, instance, timeout_s=timeout_s)  # type: ignore[attr-defined]
    finally:
        await driver.close()
    return draft_model(found, host, port)


def cmd_discover(args: argparse.Namespace) -> int:
    """Print a draft model file for the device at --host:--port."""
    if args.protocol != "bacnet":
        sys.stderr.write(f"dcim-agent discover: {args.protocol} is not supported\n")
        return EXIT_USAGE
    from agent.drivers.bacnet import BacnetError, NoAnswerError  # noqa: PLC0415

    try:
        timeout_s = float(getattr(args, "timeout", None) or DISCOVER_TIMEOUT_S)
        text = asyncio.run(_discover_bacnet(args.host, args.port, args.instance, timeout_s))
    except (NoAnswerError, BacnetError, OSError, TimeoutError) as exc:
        sys.stderr.write(f"dcim-agent discover bacnet: {args.host}:{args.port}: {exc}\n")
        return EXIT_FAILED
    except (DriverUnavailableError, ConfigError) as exc:
        sys.stderr.write(f"dcim-agent discover bacnet: {exc}\n")
        return EXIT_USAGE
    sys.stdout.write(text)
    return EXIT_OK
