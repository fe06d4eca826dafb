"""Modbus RTU on a serial line: simulator and driver on the two ends of a socat pty pair."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent import config as agent_config
from agent.config import Device
from agent.drivers.modbus import ModbusDriver
from agent.modbus_plan import plan
from models import catalog
from models.quality import Quality
from simulators.modbus import ModbusSimulator
from tests.support import servers


@dataclass
class PtyPair:
    """Two linked pseudo-terminals: what one end writes, the other reads."""

    sim_end: str
    agent_end: str


@pytest.fixture
async def pty_pair(tmp_path: Path) -> AsyncIterator[PtyPair]:
    socat = shutil.which("socat")
    if socat is None:
        if servers.servers_required():
            pytest.fail("socat is not installed (apt-get install socat)")
        pytest.skip("socat is not installed (apt-get install socat)")
    pair = PtyPair(str(tmp_path / "ttySIM"), str(tmp_path / "ttyAGENT"))
    proc = await asyncio.create_subprocess_exec(
        socat,
        "-d",
        "-d",
        f"pty,raw,echo=0,link={pair.sim_end}",
        f"pty,raw,echo=0,link={pair.agent_end}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(10):
            while b"starting data transfer loop" not in (line := await proc.stderr.readline()):
                if not line:
                    pytest.fail("socat exited before linking the pty pair")
        yield pair
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await proc.wait()


def serial_device(model: str, path: str, **device: Any) -> Device:
    entry = {
        "id": device.pop("id", "dev"),
        "model": model,
        "modbus": {"framer": "rtu", "serial": path, "baudrate": 19200, **device.pop("modbus", {})},
        **device,
    }
    data = {"agent": {"id": "edge", "site": "s"}, "devices": [entry]}
    cfg = agent_config.parse(Path("/nonexistent/agent.toml"), data)
    return cfg.devices[0]


async def test_rtu_over_a_serial_line_round_trips_and_writes(pty_pair: PtyPair) -> None:
    pump = catalog.load("pump-modbus")
    sim = ModbusSimulator({5: pump}, clock=lambda: 500.0)
    await sim.serve_serial(pty_pair.sim_end)
    driver = ModbusDriver()
    try:
        device = serial_device("pump-modbus", pty_pair.agent_end, modbus={"unit": 5})
        result = await driver.poll(device)
        served = {p.name: sim.unit(5).reading(p.name) for p in pump.points}
        write = await driver.write(device, pump.point("speed_setpoint"), 72.5)
    finally:
        await driver.close()
        await sim.stop()
    assert result.error is None
    assert result.bad == 0
    assert result.points == served
    assert sim.count() == len(plan(pump.points).reads) + 2  # the poll, then read before and after the write
    assert write.ok, write.reason
    assert write.after == 72.5


async def test_two_units_on_one_line_and_a_silent_one(pty_pair: PtyPair) -> None:
    pump, tower = catalog.load("pump-modbus"), catalog.load("tower-modbus")
    sim = ModbusSimulator({1: pump, 2: tower})
    await sim.serve_serial(pty_pair.sim_end)
    sim.fault(2).silent = True
    driver = ModbusDriver()
    try:
        a = serial_device("pump-modbus", pty_pair.agent_end, id="pump", modbus={"unit": 1})
        b = serial_device("tower-modbus", pty_pair.agent_end, id="tower", modbus={"unit": 2}, timeout_s=0.3, retries=0)
        silent_result, pump_result = await asyncio.gather(driver.poll(b), driver.poll(a))
        again = await driver.poll(a)  # the line still works after the silent unit's timeout
    finally:
        await driver.close()
        await sim.stop()
    assert pump_result.bad == 0
    assert again.bad == 0
    assert {r.quality for r in silent_result.points.values()} == {Quality.TIMEOUT}
    assert sim.count(unit=2) == 1
