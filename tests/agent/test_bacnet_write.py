"""BACnet setpoint writes: priority array, release, limits, and `dcim-agent write` / `discover`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agent import cli
from agent.drivers.bacnet import BacnetDriver
from models import catalog
from simulators.bacnet import SimulatedDevice
from tests.agent.test_bacnet_driver import make_device
from tests.support.servers import free_port

CHILLER = catalog.load("chiller-bacnet")
SETPOINT = CHILLER.point("chw_supply_setpoint")
RELINQUISH_DEFAULT = 7.0  # the model's simulation value for the setpoint
OPERATOR = 8


@pytest.fixture
async def chiller() -> AsyncIterator[SimulatedDevice]:
    async with SimulatedDevice(CHILLER, port=free_port(socket.SOCK_DGRAM)) as sim:
        yield sim


@pytest.fixture
async def driver() -> AsyncIterator[BacnetDriver]:
    drv = BacnetDriver()
    try:
        yield drv
    finally:
        await drv.close()


def slots(**held: float | bool | None) -> tuple[float | bool | None, ...]:
    """A priority array with the named slots (p8=..., p16=...) filled."""
    values: list[float | bool | None] = [None] * 16
    for name, value in held.items():
        values[int(name.removeprefix("p")) - 1] = value
    return tuple(values)


async def test_write_at_16_does_not_move_a_point_an_operator_holds(
    chiller: SimulatedDevice, driver: BacnetDriver
) -> None:
    device = make_device(chiller.port)
    chiller.command("chw_supply_setpoint", 7.5, OPERATOR)
    result = await driver.write(device, SETPOINT, 8.0)
    assert not result.ok
    assert result.outcome == "overridden"
    assert "operator" in result.reason
    assert result.active_priority == OPERATOR
    assert result.priority_array == slots(p8=7.5, p16=8.0)
    assert result.after == 7.5
    assert chiller.value("chw_supply_setpoint") == 7.5
    assert chiller.priority_array("chw_supply_setpoint") == slots(p8=7.5, p16=8.0)

    released = await driver.write(device, SETPOINT, None, release=True)
    assert released.ok
    assert released.outcome == "released"
    assert chiller.priority_array("chw_supply_setpoint") == slots(p8=7.5)
    assert chiller.value("chw_supply_setpoint") == 7.5  # still the operator's

    chiller.command("chw_supply_setpoint", None, OPERATOR)  # the operator lets go
    assert chiller.value("chw_supply_setpoint") == RELINQUISH_DEFAULT


async def test_write_then_release_returns_to_relinquish_default(chiller: SimulatedDevice, driver: BacnetDriver) -> None:
    device = make_device(chiller.port)
    written = await driver.write(device, SETPOINT, 7.5)
    assert written.ok
    assert written.outcome == "written"
    assert (written.before, written.after) == (RELINQUISH_DEFAULT, 7.5)
    assert written.active_priority == 16
    assert chiller.value("chw_supply_setpoint") == 7.5
    assert chiller.priority_array("chw_supply_setpoint") == slots(p16=7.5)

    released = await driver.write(device, SETPOINT, None, release=True)
    assert released.ok
    assert released.outcome == "released"
    assert released.after == RELINQUISH_DEFAULT
    assert released.active_priority is None
    assert chiller.value("chw_supply_setpoint") == chiller.relinquish_default("chw_supply_setpoint")
    assert chiller.priority_array("chw_supply_setpoint") == slots()


@pytest.mark.parametrize(
    ("value", "reason"),
    [(20.0, "outside [5, 16]"), (4.0, "outside [5, 16]"), (8.5, "exceeds max_step 1"), (float("nan"), "finite")],
)
async def test_out_of_limit_writes_are_refused_and_the_device_untouched(
    chiller: SimulatedDevice, driver: BacnetDriver, value: float, reason: str
) -> None:
    device = make_device(chiller.port)
    result = await driver.write(device, SETPOINT, value)
    assert not result.ok
    assert result.outcome == "refused"
    assert reason in result.reason
    assert "chw_supply_setpoint" in result.reason
    assert chiller.traffic.requests["write-property"] == 0
    assert chiller.priority_array("chw_supply_setpoint") == slots()
    assert chiller.value("chw_supply_setpoint") == RELINQUISH_DEFAULT


async def test_binary_run_command_write(chiller: SimulatedDevice, driver: BacnetDriver) -> None:
    device = make_device(chiller.port)
    point = CHILLER.point("run_command")
    refused = await driver.write(device, point, 0.5)
    assert refused.outcome == "refused"
    result = await driver.write(device, point, 0.0)
    assert result.ok
    assert result.after is False
    assert chiller.priority_array("run_command") == slots(p16=False)
    await driver.write(device, point, None, release=True)
    assert chiller.value("run_command") is True


async def test_points_not_writable_in_the_model_are_refused(chiller: SimulatedDevice, driver: BacnetDriver) -> None:
    result = await driver.write(make_device(chiller.port), CHILLER.point("chw_supply_temp"), 7.0)
    assert result.outcome == "refused"
    assert "not writable" in result.reason
    assert chiller.traffic.requests["write-property"] == 0


# ---------------------------------------------------------------- the command line, against dcim-sim


@pytest.fixture
def sim_process(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """`dcim-sim device chiller-bacnet` on a free UDP port, and an agent config pointing at it."""
    port = free_port(socket.SOCK_DGRAM)
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulators.cli", "device", "chiller-bacnet", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert line == f"ready bacnet chiller-bacnet on 127.0.0.1:{port} device 1001\n"
        config = tmp_path / "agent.toml"
        config.write_text(
            '[agent]\nid = "edge-01"\nsite = "lab"\n[defaults]\ntimeout_s = 2.0\nretries = 1\n'
            f'[[devices]]\nid = "chiller-1"\nmodel = "chiller-bacnet"\nhost = "127.0.0.1"\nport = {port}\n'
            "bacnet = { device_instance = 1001 }\n"
        )
        yield port, config
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_cli_write_release_and_refusal(sim_process: tuple[int, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _port, config = sim_process
    base = ["write", "--config", str(config), "--device", "chiller-1", "--point", "chw_supply_setpoint"]
    assert cli.main([*base, "--value", "7.5"]) == 0
    out = capsys.readouterr().out
    assert "chiller-1.chw_supply_setpoint: written: before 7.0 after 7.5 degC" in out
    assert "priority array: 16=7.5; active priority: 16" in out

    assert cli.main([*base, "--value", "12"]) == 1
    captured = capsys.readouterr()
    assert "refused" in captured.err
    assert "max_step" in captured.err

    assert cli.main(["poll-once", "--config", str(config), "--json"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["points"]["chw_supply_setpoint"] == {"value": 7.5, "unit": "degC", "quality": "good"}

    assert cli.main([*base, "--release"]) == 0
    out = capsys.readouterr().out
    assert "released: before 7.5 after 7.0" in out
    assert "priority array: all NULL; active priority: None" in out


def test_cli_discover_drafts_a_model_that_loads(
    sim_process: tuple[int, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    port, _config = sim_process
    assert cli.main(["discover", "bacnet", "--host", "127.0.0.1", "--port", str(port)]) == 0
    draft = tmp_path / "draft.toml"
    draft.write_text(capsys.readouterr().out)
    model = catalog.load_path(draft)
    assert model.bacnet == {"device_instance": 1001}
    found = {p.name: (p.object, p.unit, p.type) for p in model.points}
    assert found == {p.name: (p.object, p.unit, p.type) for p in CHILLER.points}
    assert model.point("mode").enum == CHILLER.point("mode").enum
    assert "# commandable: writable" in draft.read_text()


def test_cli_discover_reports_a_silent_address(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port(socket.SOCK_DGRAM)
    assert (
        cli.main(
            ["discover", "bacnet", "--host", "127.0.0.1", "--port", str(port), "--instance", "5", "--timeout", "0.3"]
        )
        == 1
    )
    assert f"127.0.0.1:{port}" in capsys.readouterr().err
