"""Traps from the UPS simulator reach the agent's receiver: an event and an immediate poll."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.config import TrapsSection
from agent.drivers.base import PollResult
from agent.drivers.snmp import SnmpDriver
from agent.traps import Trap, start_trap_receiver
from models import catalog, telemetry
from simulators.snmp import TRAP_ON_BATTERY, SnmpSimulator, V3User
from tests.support.snmp import V3_AUTH_KEY, V3_PRIV_KEY, free_udp_port, make_devices, v3_options

USER = V3User("traps", "SHA-256", V3_AUTH_KEY, "AES", V3_PRIV_KEY)


@pytest.mark.parametrize("version", ["2c", "3"])
async def test_ups_trap_gives_an_event_and_an_immediate_poll(tmp_path: Path, version: str) -> None:
    model = catalog.load("ups-rfc1628")
    async with SnmpSimulator(model, speed=0.0, v3_users=[USER]) as sim:
        snmp = v3_options(tmp_path, USER.name) if version == "3" else '{ community = "public" }'
        devices = make_devices(tmp_path, ("ups-a1", "ups-rfc1628", sim.port, snmp))
        driver = SnmpDriver()
        seen: list[tuple[Trap, PollResult]] = []
        on_battery = asyncio.Event()

        async def on_trap(trap: Trap) -> None:
            # what the agent runtime does: publish the event, poll the device at once
            result = await driver.poll(trap.device)
            seen.append((trap, result))
            if trap.name == "upsTrapOnBattery":
                on_battery.set()

        config = TrapsSection(enabled=True, host="127.0.0.1", port=free_udp_port(), community="public")
        receiver = await start_trap_receiver(config, devices, on_trap)
        try:
            if version == "3":
                sim.add_trap_target("127.0.0.1", receiver.port, v3_user=USER)
            else:
                sim.add_trap_target("127.0.0.1", receiver.port, community="public")
            sim.fail_mains()
            await asyncio.wait_for(on_battery.wait(), timeout=20)
        finally:
            await receiver.close()
            await driver.close()
    trap, result = next((t, r) for t, r in seen if t.name == "upsTrapOnBattery")
    assert trap.device.id == "ups-a1"
    assert trap.version == version
    assert trap.severity == "major"
    assert result.points["output_source"].value == "battery"
    assert result.points["input_line_bads"].value == 1
    alarms = {row["descr"].value for row in result.tables["alarms"].values()}
    assert "onBattery" in alarms
    event = trap.to_event("lab", "edge-test")
    decoded = telemetry.decode_as(telemetry.Event, telemetry.encode(event))
    assert decoded.device == "ups-a1"
    assert decoded.type == "trap"
    assert decoded.data["trap"] == "upsTrapOnBattery"
    assert receiver.received >= 1
    assert receiver.unmatched == 0


async def test_alarm_traps_name_the_alarm_and_wrong_community_is_ignored(tmp_path: Path) -> None:
    model = catalog.load("ups-rfc1628")
    async with SnmpSimulator(model, speed=0.0) as sim:
        devices = make_devices(tmp_path, ("ups-a1", "ups-rfc1628", sim.port, ""))
        traps: list[Trap] = []
        arrived = asyncio.Event()

        def on_trap(trap: Trap) -> None:
            traps.append(trap)
            arrived.set()

        config = TrapsSection(enabled=True, host="127.0.0.1", port=free_udp_port(), community="s3cret")
        receiver = await start_trap_receiver(config, devices, on_trap)
        try:
            await sim.send_trap("127.0.0.1", receiver.port, TRAP_ON_BATTERY, community="public")
            await sim.send_trap(
                "127.0.0.1",
                receiver.port,
                "1.3.6.1.2.1.33.2.3",
                objects={"1.3.6.1.2.1.33.1.6.2.1.2.7": "1.3.6.1.2.1.33.1.6.3.3"},
                community="s3cret",
            )
            await asyncio.wait_for(arrived.wait(), timeout=10)
        finally:
            await receiver.close()
    assert len(traps) == 1  # the trap with the wrong community was dropped
    assert receiver._listener.datagrams == 2
    trap = traps[0]
    assert trap.name == "upsTrapAlarmEntryAdded"
    assert trap.data["alarm"] == "lowBattery"
    assert trap.data["alarm_id"] == 7
    assert trap.severity == "critical"
