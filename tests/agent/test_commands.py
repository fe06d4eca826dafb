"""Setpoint commands against a simulated Modbus pump: every refusal leaves it untouched; a valid one is audited."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest

from agent import config as agent_config
from agent.commands import CommandHandler
from agent.config import CommandsSection, Device
from agent.drivers.base import Driver
from agent.drivers.modbus import ModbusDriver
from models.telemetry import Command
from tests.agent.agent_helpers import Simulator, simulators

NOW = time.time()


@pytest.fixture(scope="module")
def pump() -> Iterator[Simulator]:
    with simulators("pump-modbus") as (sim,):
        yield sim


@pytest.fixture
async def driver() -> AsyncIterator[Driver]:
    drv = ModbusDriver()
    yield drv
    await drv.close()


def _device(sim: Simulator, tmp_path: Path) -> Device:
    cfg = agent_config.parse(
        tmp_path / "agent.toml",
        {
            "agent": {"id": "edge-01", "site": "bj-dx"},
            "devices": [{"id": "pump-1", "model": "pump-modbus", "port": sim.port, "timeout_s": 2.0}],
        },
    )
    return cfg.devices[0]


def _handler(device: Device, driver: Driver, tmp_path: Path, **commands: object) -> CommandHandler:
    lock = asyncio.Lock()
    section = CommandsSection.model_validate({"audit_log": tmp_path / "audit.jsonl", **commands})
    return CommandHandler(
        commands=section, devices={device.id: device}, driver_for=lambda _d: driver, lock_for=lambda _d: lock
    )


def _cmd(**kw: object) -> bytes:
    fields: dict[str, object] = {
        "id": "c-1",
        "device": "pump-1",
        "point": "speed_setpoint",
        "value": 80.0,
        "expires": NOW + 600,
        "by": "optimizer",
    }
    fields.update(kw)
    return msgspec.json.encode(Command(**fields))  # type: ignore[arg-type]


async def _setpoints(driver: Driver, device: Device) -> dict[str, object]:
    """Every writable point of the pump, read straight from the device."""
    out: dict[str, object] = {}
    for point in device.model.points:
        if point.writable is not None:
            reading = await driver.read_point(device, point)
            assert reading.quality.good, point.name
            out[point.name] = reading.value
    return out


def _audit(tmp_path: Path) -> list[dict[str, object]]:
    path = tmp_path / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


NO_EXPIRY = b'{"v": 1, "id": "c-x", "device": "pump-1", "point": "speed_setpoint", "value": 80}'
ONLY_OPTIMIZER = {"allowed_senders": ["optimizer"]}
REFUSALS = [
    pytest.param((b"{not json", {}, "malformed command"), id="not-json"),
    pytest.param((NO_EXPIRY, {}, "malformed command"), id="no-expiry"),
    pytest.param((b'{"v": 2, "id": "c-x"}', {}, "unsupported version"), id="wrong-version"),
    pytest.param((_cmd(expires=NOW - 5), {}, "expired"), id="expired"),
    pytest.param((_cmd(device="pump-9"), {}, "unknown device 'pump-9'"), id="unknown-device"),
    pytest.param((_cmd(point="impeller"), {}, "has no point 'impeller'"), id="unknown-point"),
    pytest.param((_cmd(point="speed", value=50.0), {}, "not writable"), id="read-only-point"),
    pytest.param((_cmd(point="running", value=False), {}, "not writable"), id="read-only-discrete"),
    pytest.param((_cmd(value=150.0), {}, "outside [25, 100]"), id="above-max"),
    pytest.param((_cmd(value=10.0), {}, "outside [25, 100]"), id="below-min"),
    pytest.param((_cmd(value=99.0), {}, "exceeds max_step 10"), id="step-too-large"),
    pytest.param((_cmd(value="fast"), {}, "not a number"), id="not-a-number"),
    pytest.param((_cmd(value=None), {}, "carries no value"), id="no-value"),
    pytest.param((_cmd(release=True, value=None), {}, "BACnet priority slots only"), id="release-on-modbus"),
    pytest.param((_cmd(), {"advisory_only": True}, "advisory only"), id="advisory-only"),
    pytest.param((_cmd(by="intruder"), ONLY_OPTIMIZER, "not in commands.allowed_senders"), id="sender-not-allowed"),
]


@pytest.mark.parametrize("case", REFUSALS)
async def test_refusals_leave_the_device_untouched(
    pump: Simulator, driver: Driver, tmp_path: Path, case: tuple[bytes, dict[str, object], str]
) -> None:
    payload, settings, reason = case
    device = _device(pump, tmp_path)
    handler = _handler(device, driver, tmp_path, **settings)
    before = await _setpoints(driver, device)
    result = await handler.handle(payload)
    assert not result.ok
    assert result.outcome == "refused"
    assert reason in result.reason
    assert await _setpoints(driver, device) == before
    assert handler.refused == 1
    (record,) = _audit(tmp_path)
    assert record["outcome"] == "refused"
    assert reason in str(record["reason"])
    assert record["after"] is None


async def test_a_valid_command_is_written_read_back_and_audited(
    pump: Simulator, driver: Driver, tmp_path: Path
) -> None:
    device = _device(pump, tmp_path)
    handler = _handler(device, driver, tmp_path)
    point = device.model.point("differential_pressure_setpoint")
    current = (await driver.read_point(device, point)).value
    assert isinstance(current, float)
    target = round(current + 15.0, 1)
    payload = _cmd(id="c-ok", point=point.name, value=target, by="optimizer")
    result = await handler.handle(payload)
    assert result.ok, result.reason
    assert result.outcome == "written"
    assert result.before == pytest.approx(current)
    assert result.after == pytest.approx(target)
    assert (await driver.read_point(device, point)).value == pytest.approx(target)
    (record,) = _audit(tmp_path)
    assert record["id"] == "c-ok"
    assert record["by"] == "optimizer"
    assert record["device"] == "pump-1"
    assert record["point"] == point.name
    assert record["value"] == pytest.approx(target)
    assert record["before"] == pytest.approx(current)
    assert record["after"] == pytest.approx(target)
    assert record["outcome"] == "written"
    assert isinstance(record["ts"], float)
    # A redelivered command (QoS 1) gets the same answer and is not carried out twice.
    again = await handler.handle(_cmd(id="c-ok", point=point.name, value=target + 5))
    assert again == result
    assert (await driver.read_point(device, point)).value == pytest.approx(target)
    assert len(_audit(tmp_path)) == 1
    assert handler.ok == 1
    # Put it back for the other tests sharing the simulator.
    restored = await handler.handle(_cmd(id="c-back", point=point.name, value=current))
    assert restored.ok


async def test_bacnet_commands_write_at_the_model_priority_and_release(tmp_path: Path) -> None:
    from agent.drivers.bacnet import BacnetDriver  # noqa: PLC0415

    with simulators("chiller-bacnet", udp=True) as (chiller,):
        cfg = agent_config.parse(
            tmp_path / "agent.toml",
            {
                "agent": {"id": "edge-01", "site": "bj-dx"},
                "devices": [
                    {
                        "id": "chiller-1",
                        "model": "chiller-bacnet",
                        "port": chiller.port,
                        "timeout_s": 2.0,
                        "bacnet": {"device_instance": 1001},
                    },
                ],
            },
        )
        device = cfg.devices[0]
        driver = BacnetDriver()
        try:
            handler = _handler(device, driver, tmp_path)
            point = device.model.point("chw_supply_setpoint")
            current = (await driver.read_point(device, point)).value
            assert isinstance(current, float)
            refused = await handler.handle(_cmd(id="b-0", device="chiller-1", point=point.name, value=current + 3))
            assert "exceeds max_step 1" in refused.reason
            assert (await driver.read_point(device, point)).value == pytest.approx(current)
            target = current + 0.5
            written = await handler.handle(_cmd(id="b-1", device="chiller-1", point=point.name, value=target))
            assert (written.ok, written.outcome) == (True, "written"), written.reason
            assert written.after == pytest.approx(target)
            assert (await driver.read_point(device, point)).value == pytest.approx(target)
            released = await handler.handle(
                _cmd(id="b-2", device="chiller-1", point=point.name, value=None, release=True)
            )
            assert released.ok, released.reason
            assert released.outcome == "released"
            assert (await driver.read_point(device, point)).value == pytest.approx(current)
        finally:
            await driver.close()
    audit = _audit(tmp_path)
    assert [(r["id"], r["outcome"]) for r in audit] == [("b-0", "refused"), ("b-1", "written"), ("b-2", "released")]
    # Written at the model's priority (16): the slot holds the value and commands the point.
    assert all(r["priority"] == 16 for r in audit)
    priority_array = audit[1]["priority_array"]
    assert isinstance(priority_array, list)
    assert priority_array[15] == pytest.approx(target)
    assert [i + 1 for i, v in enumerate(priority_array) if v is not None] == [16]
    assert audit[1]["active_priority"] == 16
