"""Our BACnet driver reads and commands a device built on software that is not ours (bacpypes v1)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.drivers.bacnet import BacnetDriver
from models import catalog
from models.quality import Quality
from tests.agent.test_bacnet_driver import make_device
from tests.support.servers import free_port

if sys.version_info >= (3, 12):  # bacpypes v1 is built on asyncore, which Python 3.12 removed
    pytest.skip("bacpypes v1 needs Python < 3.12", allow_module_level=True)

CHILLER = catalog.load("chiller-bacnet")
INSTANCE = 3001

# A BACnet/IP device written with bacpypes (v1), an independent BACnet stack, serving the
# objects of a JSON file: plain inputs, commandable values and outputs, a multi-state value.
V1_DEVICE = r'''
"""A BACnet/IP device built on bacpypes (v1), serving objects described in a JSON file."""

import json
import sys

from bacpypes.app import BIPSimpleApplication
from bacpypes.core import run
from bacpypes.local.device import LocalDeviceObject
from bacpypes.local.object import AnalogValueCmdObject, BinaryOutputCmdObject
from bacpypes.object import AnalogInputObject, BinaryInputObject, MultiStateValueObject, register_object_type
from bacpypes.service.object import ReadWritePropertyMultipleServices

CAMEL = {
    "analog-input": "analogInput",
    "analog-value": "analogValue",
    "binary-input": "binaryInput",
    "binary-output": "binaryOutput",
    "multi-state-value": "multiStateValue",
}
CLASSES = {
    ("analog-input", False): AnalogInputObject,
    ("analog-value", True): AnalogValueCmdObject,
    ("binary-input", False): BinaryInputObject,
    ("binary-output", True): BinaryOutputCmdObject,
    ("multi-state-value", False): MultiStateValueObject,
}


class App(BIPSimpleApplication, ReadWritePropertyMultipleServices):
    pass


# Registering the commandable classes builds their property tables with a writable
# present-value (unregistered, they inherit the read-only table of the plain class).
register_object_type(AnalogValueCmdObject, vendor_id=15)
register_object_type(BinaryOutputCmdObject, vendor_id=15)


def main():
    spec = json.load(open(sys.argv[1]))
    device = LocalDeviceObject(
        objectName=spec["name"],
        objectIdentifier=("device", spec["instance"]),
        maxApduLengthAccepted=1024,
        segmentationSupported="segmentedBoth",
        vendorIdentifier=15,
    )
    app = App(device, spec["address"])
    for item in spec["objects"]:
        cls = CLASSES[(item["type"], item["commandable"])]
        kwargs = {
            "objectIdentifier": (CAMEL[item["type"]], item["instance"]),
            "objectName": item["name"],
            "presentValue": item["value"],
            "statusFlags": [0, 0, 0, 0],
            "eventState": "normal",
            "outOfService": False,
        }
        if item.get("units"):
            kwargs["units"] = item["units"]
        if item["type"].startswith("multi-state"):
            kwargs["numberOfStates"] = item["states"]
        if item["commandable"]:
            kwargs["relinquishDefault"] = item["value"]
        app.add_object(cls(**kwargs))
    print("ready", flush=True)
    run()


main()
'''

V1_UNITS = {"degC": "degreesCelsius", "kW": "kilowatts", "%": "percent", "L/s": "litersPerSecond"}


def device_spec(port: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Objects for the chiller model with distinct values, and the values the driver must read."""
    objects, expected = [], {}
    for i, point in enumerate(CHILLER.points):
        kind, _, instance = (point.object or "").rpartition(":")
        value: Any
        if kind.startswith("analog"):
            value = 7.0 if point.writable else 10.5 + i  # the setpoint inside its limits
            expected[point.name] = value
        elif kind.startswith("binary"):
            value = "active" if i % 2 else "inactive"
            expected[point.name] = value == "active"
        else:
            value = 3
            expected[point.name] = (point.enum or {})[3]
        objects.append(
            {
                "type": kind,
                "instance": int(instance),
                "name": point.name,
                "value": value,
                "units": V1_UNITS.get(point.unit),
                "commandable": point.writable is not None,
                "states": 4,
            }
        )
    spec = {"name": "v1-chiller", "instance": INSTANCE, "address": f"127.0.0.1:{port}", "objects": objects}
    return spec, expected


@pytest.fixture
def v1_device(tmp_path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    port = free_port(socket.SOCK_DGRAM)
    spec, expected = device_spec(port)
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    (tmp_path / "v1_device.py").write_text(V1_DEVICE)
    proc = subprocess.Popen(
        [sys.executable, "-W", "ignore", str(tmp_path / "v1_device.py"), str(tmp_path / "spec.json")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        yield port, expected
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


async def test_driver_reads_a_foreign_device(v1_device: tuple[int, dict[str, Any]]) -> None:
    port, expected = v1_device
    driver = BacnetDriver()
    device = make_device(port, instance=INSTANCE)
    try:
        results = [await driver.poll(device) for _ in range(3)]
    finally:
        await driver.close()
    for result in results:
        assert result.error is None
        assert {n: r.quality for n, r in result.points.items()} == dict.fromkeys(expected, Quality.GOOD)
        assert {n: r.value for n, r in result.points.items()} == expected
    # The foreign device offers no COV: the COV points are polled, in one request per poll.
    assert results[2].requests == 1


async def test_driver_commands_a_foreign_device(v1_device: tuple[int, dict[str, Any]]) -> None:
    port, _expected = v1_device
    driver = BacnetDriver()
    device = make_device(port, instance=INSTANCE)
    setpoint = CHILLER.point("chw_supply_setpoint")
    try:
        written = await driver.write(device, setpoint, 7.5)
        refused = await driver.write(device, setpoint, 9.0)
        released = await driver.write(device, setpoint, None, release=True)
        run = await driver.write(device, CHILLER.point("run_command"), 1.0)
    finally:
        await driver.close()
    assert written.ok
    assert (written.before, written.after, written.active_priority) == (7.0, 7.5, 16)
    assert written.priority_array is not None
    assert written.priority_array[15] == 7.5
    assert refused.outcome == "refused"
    assert released.ok
    assert (released.after, released.active_priority) == (7.0, None)
    assert run.ok
    assert run.after is True


async def test_discover_a_foreign_device(v1_device: tuple[int, dict[str, Any]]) -> None:
    port, _expected = v1_device
    driver = BacnetDriver()
    try:
        found = await driver.discover("127.0.0.1", port, timeout_s=2.0)
    finally:
        await driver.close()
    assert found.instance == INSTANCE
    assert found.name == "v1-chiller"
    by_name = {o.name: o for o in found.objects}
    assert set(by_name) == {p.name for p in CHILLER.points}
    assert by_name["chw_supply_temp"].units == "degrees-celsius"
    assert by_name["chw_supply_setpoint"].commandable
    assert not by_name["chw_supply_temp"].commandable
