"""Software that is not ours (bacpypes v1, in its own process) reads and commands our BACnet simulators."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from models import catalog
from models.schema import DeviceModel
from simulators.bacnet import SimulatedDevice
from tests.support.servers import free_port

if sys.version_info >= (3, 12):  # bacpypes v1 is built on asyncore, which Python 3.12 removed
    pytest.skip("bacpypes v1 needs Python < 3.12", allow_module_level=True)

# A BACnet/IP client written with bacpypes (v1), an independent BACnet stack: it reads with
# ReadProperty and ReadPropertyMultiple and writes with WriteProperty (writes first), as a job file says.
V1_CLIENT = r'''
"""A BACnet/IP client built on bacpypes (v1): reads and writes as a JSON job file says."""

import json
import sys
import threading

from bacpypes.apdu import (
    ReadAccessSpecification,
    ReadPropertyACK,
    ReadPropertyMultipleACK,
    ReadPropertyMultipleRequest,
    ReadPropertyRequest,
    WritePropertyRequest,
)
from bacpypes.app import BIPSimpleApplication
from bacpypes.basetypes import PropertyReference
from bacpypes.constructeddata import Any, Array
from bacpypes.core import deferred, run, stop
from bacpypes.iocb import IOCB
from bacpypes.local.device import LocalDeviceObject
from bacpypes.object import get_datatype
from bacpypes.pdu import Address
from bacpypes.primitivedata import Enumerated, Null, Real, Unsigned

CAMEL = {
    "analog-input": "analogInput",
    "analog-output": "analogOutput",
    "analog-value": "analogValue",
    "binary-input": "binaryInput",
    "binary-output": "binaryOutput",
    "binary-value": "binaryValue",
    "multi-state-input": "multiStateInput",
    "multi-state-output": "multiStateOutput",
    "multi-state-value": "multiStateValue",
    "device": "device",
}


def camel(name):
    head, *rest = name.split("-")
    return head + "".join(p.title() for p in rest)


def objid(text):
    kind, _, inst = text.rpartition(":")
    return (CAMEL[kind], int(inst))


def plain(value):
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    if isinstance(value, Array):
        return [plain(v) for v in value.value[1:]]
    if hasattr(value, "choiceElements"):
        for element in value.choiceElements:
            chosen = getattr(value, element.name, None)
            if chosen is not None:
                return None if element.name == "null" else plain(chosen)
        return None
    if hasattr(value, "value") and isinstance(value.value, list):  # bit strings
        return list(value.value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if hasattr(value, "dict_contents"):
        return value.dict_contents()
    return str(value)


def request(app, apdu):
    iocb = IOCB(apdu)
    deferred(app.request_io, iocb)
    iocb.wait(timeout=5)
    if iocb.ioError:
        return None, str(iocb.ioError)
    return iocb.ioResponse, None


def job(app, spec, out):
    address = Address(spec["address"])
    for obj, prop, value, priority in spec.get("writes", []):
        apdu = WritePropertyRequest(objectIdentifier=objid(obj), propertyIdentifier=camel(prop))
        apdu.pduDestination = address
        datatype = get_datatype(objid(obj)[0], camel(prop))
        apdu.propertyValue = Any()
        if value is None:
            apdu.propertyValue.cast_in(Null())
        elif datatype is Real:
            apdu.propertyValue.cast_in(Real(value))
        elif issubclass(datatype, Enumerated):
            apdu.propertyValue.cast_in(datatype(value))
        else:
            apdu.propertyValue.cast_in(Unsigned(value))
        if priority is not None:
            apdu.priority = priority
        resp, err = request(app, apdu)
        out["writes"].append({"object": obj, "value": value, "priority": priority, "error": err})

    for obj, prop in spec.get("reads", []):
        apdu = ReadPropertyRequest(objectIdentifier=objid(obj), propertyIdentifier=camel(prop))
        apdu.pduDestination = address
        resp, err = request(app, apdu)
        if err or not isinstance(resp, ReadPropertyACK):
            out["reads"][f"{obj} {prop}"] = {"error": err or repr(resp)}
            continue
        datatype = get_datatype(objid(obj)[0], camel(prop))
        value = resp.propertyValue.cast_out(datatype)
        out["reads"][f"{obj} {prop}"] = {"value": plain(value)}
    if spec.get("rpm"):
        specs = [
            ReadAccessSpecification(
                objectIdentifier=objid(obj),
                listOfPropertyReferences=[PropertyReference(propertyIdentifier=camel(p)) for p in props],
            )
            for obj, props in spec["rpm"]
        ]
        apdu = ReadPropertyMultipleRequest(listOfReadAccessSpecs=specs)
        apdu.pduDestination = address
        resp, err = request(app, apdu)
        if err or not isinstance(resp, ReadPropertyMultipleACK):
            out["rpm"] = {"error": err or repr(resp)}
        else:
            for result in resp.listOfReadAccessResults:
                kind, inst = result.objectIdentifier
                for element in result.listOfResults:
                    key = f"{kind}:{inst} {element.propertyIdentifier}"
                    if element.readResult.propertyAccessError is not None:
                        out["rpm"][key] = {"error": str(element.readResult.propertyAccessError.errorCode)}
                        continue
                    datatype = get_datatype(kind, element.propertyIdentifier)
                    value = element.readResult.propertyValue.cast_out(datatype)
                    out["rpm"][key] = {"value": plain(value)}


def main():
    spec = json.load(open(sys.argv[1]))
    device = LocalDeviceObject(
        objectName="v1-client", objectIdentifier=("device", 4194300), maxApduLengthAccepted=1024,
        segmentationSupported="segmentedBoth", vendorIdentifier=15,
    )
    app = BIPSimpleApplication(device, spec["local"])
    out = {"reads": {}, "rpm": {}, "writes": []}

    def worker():
        try:
            job(app, spec, out)
        finally:
            stop()

    threading.Thread(target=worker, daemon=True).start()
    run()
    print(json.dumps(out))


main()
'''

BACNET_UNITS = {"degC": "degreesCelsius", "kW": "kilowatts", "%": "percent", "L/s": "litersPerSecond"}


async def run_v1_client(tmp_path: Path, job: dict[str, Any]) -> dict[str, Any]:
    """Run the bacpypes v1 client in its own process and return what it read and wrote."""
    import asyncio  # noqa: PLC0415

    script = tmp_path / "v1_client.py"
    script.write_text(V1_CLIENT)
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps({**job, "local": f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}"}))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-W",
        "ignore",
        str(script),
        str(job_file),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out)
    return result


def v1_value(model: DeviceModel, name: str, value: Any) -> Any:
    """What a simulator value looks like to bacpypes v1."""
    point = model.point(name)
    if point.type is not None and point.type.value == "bool":
        return "active" if value else "inactive"
    if point.enum:
        return next(k for k, v in point.enum.items() if v == value)
    return value


@pytest.mark.parametrize("model_id", ["chiller-bacnet", "crah-bacnet"])
async def test_foreign_client_reads_every_point(model_id: str, tmp_path: Path) -> None:
    model = catalog.load(model_id)
    port = free_port(socket.SOCK_DGRAM)
    async with SimulatedDevice(model, port=port) as sim:
        objects = [p.object for p in model.points]
        job = {
            "address": f"127.0.0.1:{port}",
            "reads": [[o, "present-value"] for o in objects]
            + [[p.object, "units"] for p in model.points if p.unit]
            + [[f"device:{sim.instance}", "object-name"]],
            "rpm": [[o, ["present-value", "status-flags", "object-name"]] for o in objects],
        }
        result = await run_v1_client(tmp_path, job)
        expected = {p.name: v1_value(model, p.name, sim.value(p.name)) for p in model.points}
    reads = result["reads"]
    assert {p.name: reads[f"{p.object} present-value"]["value"] for p in model.points} == expected
    units = {p.name: reads[f"{p.object} units"]["value"] for p in model.points if p.unit}
    assert units == {p.name: BACNET_UNITS[p.unit] for p in model.points if p.unit}
    assert reads[f"device:{sim.instance} object-name"]["value"] == f"{model_id}-{sim.instance}"
    rpm = result["rpm"]
    for point in model.points:
        kind, _, instance = (point.object or "").rpartition(":")
        camel = kind.split("-")[0] + "".join(w.title() for w in kind.split("-")[1:])
        key = f"{camel}:{instance}"
        assert rpm[f"{key} presentValue"]["value"] == expected[point.name]
        assert rpm[f"{key} statusFlags"]["value"] == [0, 0, 0, 0]
        assert rpm[f"{key} objectName"]["value"] == point.name


async def test_foreign_operator_commands_priority_8_and_inputs_refuse_writes(tmp_path: Path) -> None:
    model = catalog.load("chiller-bacnet")
    port = free_port(socket.SOCK_DGRAM)
    async with SimulatedDevice(model, port=port) as sim:
        sim.set_out_of_service("alarm")  # an input under test by a technician accepts writes
        job = {
            "address": f"127.0.0.1:{port}",
            "writes": [
                ["analog-value:1", "present-value", 9.0, 8],
                ["analog-value:1", "present-value", 8.0, 16],
                ["binary-input:1", "present-value", "inactive", None],
                ["binary-input:2", "present-value", "active", None],
            ],
            "reads": [["analog-value:1", "priority-array"], ["analog-value:1", "relinquish-default"]],
        }
        result = await run_v1_client(tmp_path, job)
        setpoint = sim.value("chw_supply_setpoint")
        slots = sim.priority_array("chw_supply_setpoint")
        running, alarm = sim.value("running"), sim.value("alarm")
    errors = [w["error"] for w in result["writes"]]
    assert errors[0] is None
    assert errors[1] is None
    assert errors[2] is not None
    assert "writeAccessDenied" in errors[2]
    assert errors[3] is None
    assert setpoint == 9.0
    assert slots[7] == 9.0
    assert slots[15] == 8.0
    assert running is True
    assert alarm is True
    array = result["reads"]["analog-value:1 priority-array"]["value"]
    assert len(array) == 16
    assert array[7] == 9.0
    assert array[15] == 8.0
    assert [v for i, v in enumerate(array) if i not in (7, 15)] == [None] * 14
    assert result["reads"]["analog-value:1 relinquish-default"]["value"] == 7.0


async def test_foreign_client_sees_read_property_multiple_switched_off(tmp_path: Path) -> None:
    model = catalog.load("crah-bacnet")
    port = free_port(socket.SOCK_DGRAM)
    async with SimulatedDevice(model, port=port, rpm=False) as sim:
        job = {
            "address": f"127.0.0.1:{port}",
            "rpm": [["analog-input:1", ["present-value"]]],
            "reads": [["analog-input:1", "present-value"]],
        }
        result = await run_v1_client(tmp_path, job)
        expected = sim.value("supply_air_temp")
    assert "error" in result["rpm"]
    assert result["reads"]["analog-input:1 present-value"]["value"] == expected
