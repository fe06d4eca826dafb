"""The UPS simulator: RFC 1628 state machine, and standard managers and NUT reading it."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from agent.drivers.snmp import SnmpDriver
from models import catalog
from simulators.snmp import SnmpSimulator, V3User
from tests.support.snmp import make_device

UPS = "1.3.6.1.2.1.33.1"
NUT_DRIVER = "/lib/nut/snmp-ups"
needs_net_snmp = pytest.mark.skipif(shutil.which("snmpget") is None, reason="Debian package snmp is not installed")


async def run(*args: str, env: dict[str, str] | None = None, timeout_s: float = 60.0) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=timeout_s)
    return proc.returncode or 0, out.decode(errors="replace")


async def test_mains_failure_to_output_off_and_back(tmp_path: Path) -> None:
    model = catalog.load("ups-rfc1628")
    async with SnmpSimulator(model, speed=0.0) as sim:
        device = make_device(tmp_path, "ups-rfc1628", sim.port)
        driver = SnmpDriver()

        async def state() -> tuple[str, str, set[str], int]:
            result = await driver.poll(device)
            assert result.error is None
            alarms = {row["descr"].value for row in result.tables["alarms"].values()}
            assert result.points["alarms_present"].value == len(alarms)
            return (
                str(result.points["output_source"].value),
                str(result.points["battery_status"].value),
                {str(a) for a in alarms},
                int(result.points["battery_charge"].value),  # type: ignore[arg-type]
            )

        try:
            assert await state() == ("normal", "normal", set(), 100)
            sim.fail_mains()
            source, status, alarms, _ = await state()
            assert (source, status) == ("battery", "normal")
            assert alarms == {"onBattery", "inputBad"}
            sim.advance(20 * 60)  # draining
            source, status, alarms, charge = await state()
            assert (source, status) == ("battery", "normal")
            assert 50 <= charge <= 60
            sim.advance(22 * 60)  # under 5 minutes left
            source, status, alarms, _ = await state()
            assert (source, status) == ("battery", "low")
            assert alarms == {"onBattery", "inputBad", "lowBattery"}
            sim.advance(10 * 60)  # empty: output off
            source, status, alarms, charge = await state()
            assert (source, status, charge) == ("none", "depleted", 0)
            assert alarms == {"inputBad", "lowBattery", "depletedBattery", "upsOutputOff", "awaitingPower"}
            off = await driver.poll(device)
            assert off.tables["output"]["1"]["power"].value == 0
            sim.restore_mains()
            source, status, alarms, _ = await state()
            assert source == "normal"
            charging = await driver.poll(device)
            assert charging.points["battery_current"].value > 0  # type: ignore[operator]
            sim.advance(3600)
            _, status, alarms, charge = await state()
            assert status == "normal"
            assert alarms == set()
            assert charge > 20
        finally:
            await driver.close()


async def test_three_phase_ups_has_three_input_and_output_lines(tmp_path: Path) -> None:
    model = catalog.load("ups-rfc1628")
    async with SnmpSimulator(model, speed=0.0, ups_lines=3) as sim:
        device = make_device(tmp_path, "ups-rfc1628", sim.port)
        driver = SnmpDriver()
        try:
            result = await driver.poll(device)
        finally:
            await driver.close()
    assert result.bad == 0
    assert result.points["input_num_lines"].value == 3
    for table in ("input", "output", "bypass"):
        assert sorted(result.tables[table]) == ["1", "2", "3"]


@needs_net_snmp
async def test_net_snmp_tools_read_and_set_the_ups() -> None:
    model = catalog.load("ups-rfc1628")
    user = V3User("mgr", "SHA", "manager-auth-key", "AES", "manager-priv-key")
    async with SnmpSimulator(model, speed=0.0, v3_users=[user]) as sim:
        target = f"127.0.0.1:{sim.port}"
        code, walk = await run("snmpwalk", "-v2c", "-c", "public", "-On", "-t", "2", target, UPS)
        assert code == 0, walk
        assert f'.{UPS}.1.2.0 = STRING: "SIM-UPS 10kVA"' in walk
        assert f".{UPS}.4.1.0 = INTEGER: 3" in walk  # upsOutputSource normal
        assert f".{UPS}.3.3.1.3.1 = INTEGER:" in walk  # upsInputVoltage.1
        code, bulk = await run("snmpbulkwalk", "-v2c", "-c", "public", "-On", target, f"{UPS}.4.4")
        assert code == 0, bulk
        assert len(bulk.strip().splitlines()) == 4
        code, v1 = await run("snmpget", "-v1", "-c", "public", "-On", target, f"{UPS}.2.4.0", "1.3.6.1.2.1.1.2.0")
        assert code == 0, v1
        assert f".{UPS}.2.4.0 = INTEGER: 100" in v1
        assert ".1.3.6.1.2.1.1.2.0 = OID: .1.3.6.1.2.1.33" in v1
        v3 = ["-v3", "-l", "authPriv", "-u", "mgr", "-a", "SHA", "-A", "manager-auth-key", "-x", "AES"]
        code, out = await run("snmpget", *v3, "-X", "manager-priv-key", "-On", target, f"{UPS}.1.1.0")
        assert code == 0, out
        assert "DCIM Simulated Power" in out
        code, out = await run("snmpset", "-v2c", "-c", "public", "-On", target, f"{UPS}.9.7.0", "i", "8")
        assert code == 0, out
        assert sim.sets == [(f"{UPS}.9.7.0", 8)]
        code, out = await run("snmpset", "-v2c", "-c", "public", target, f"{UPS}.2.4.0", "i", "10")
        assert code != 0
        assert "notWritable" in out
        sim.fail_mains()
        code, out = await run("snmpwalk", "-v2c", "-c", "public", "-On", target, f"{UPS}.6.2.1.2")
        assert f".{UPS}.6.2.1.2.1 = OID: .{UPS}.6.3.6" in out  # inputBad
        assert f".{UPS}.6.2.1.2.2 = OID: .{UPS}.6.3.2" in out  # onBattery


@pytest.mark.skipif(not os.access(NUT_DRIVER, os.X_OK), reason="Debian package nut-snmp is not installed")
async def test_nut_reads_the_simulator_as_an_ietf_ups(tmp_path: Path) -> None:
    model = catalog.load("ups-rfc1628")
    state = tmp_path / "nut"
    state.mkdir()
    state.chmod(0o777)
    env = {**os.environ, "NUT_STATEPATH": str(state)}
    async with SnmpSimulator(model, speed=0.0) as sim:
        args = [
            NUT_DRIVER,
            "-s",
            "simups",
            "-x",
            f"port=127.0.0.1:{sim.port}",
            "-x",
            "mibs=ietf",
            "-x",
            "community=public",
            "-x",
            "snmp_version=v2c",
            "-d",
            "1",
        ]
        if os.geteuid() == 0:
            args += ["-u", "root"]  # the driver would otherwise switch to the nut user
        code, online = await run(*args, env=env)
        assert code == 0, online
        sim.fail_mains()
        sim.advance(42 * 60)
        _, on_battery = await run(*args, env=env)
    dump = dict(line.split(": ", 1) for line in online.splitlines() if ": " in line)
    assert dump["driver.version.data"].startswith("ietf MIB")
    assert dump["ups.model"] == "SIM-UPS 10kVA"
    assert dump["ups.mfr"] == "DCIM Simulated Power"
    assert dump["ups.status"] == "OL"
    assert dump["battery.charge"] == "100"
    assert 220 <= float(dump["output.voltage"]) <= 240
    after = dict(line.split(": ", 1) for line in on_battery.splitlines() if ": " in line)
    assert {"OB", "LB"} <= set(after["ups.status"].split())
    assert "OL" not in after["ups.status"].split()
