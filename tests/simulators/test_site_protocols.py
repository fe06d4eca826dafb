"""The site served in-process on free loopback ports, read and written by the agent's own drivers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.config import Device
from agent.drivers import driver_class
from agent.drivers.base import Driver, PollResult
from models.schema import Protocol
from simulators.physics import EventKind, ManualClock, SitePhysics
from simulators.site import Site
from tests.simulators.site_helpers import agent_devices, load_demo


@dataclass
class Served:
    site: Site
    clock: ManualClock
    devices: dict[str, Device]
    drivers: dict[Protocol, Driver]

    async def poll(self, device_id: str) -> PollResult:
        device = self.devices[device_id]
        return await self.drivers[device.protocol].poll(device)

    def step(self, dt_s: float) -> None:
        self.clock.advance(dt_s)
        self.site.tick()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    loaded = load_demo(tmp_path)
    clock = ManualClock()
    site = Site(loaded, clock)
    await site.start()
    devices = agent_devices(loaded, tmp_path, timeout_s=1.0, retries=0)
    drivers = {p: driver_class(p)() for p in Protocol}
    try:
        yield Served(site, clock, devices, drivers)
    finally:
        for driver in drivers.values():
            await driver.close()
        await site.stop()


def number(result: PollResult, name: str) -> float:
    reading = result.points[name]
    assert reading.quality.good, f"{result.device}.{name}: {reading.quality}"
    assert isinstance(reading.value, int | float)
    return float(reading.value)


async def test_every_device_answers_on_its_protocol(served: Served) -> None:
    for device_id in served.devices:
        result = await served.poll(device_id)
        assert result.error is None, f"{device_id}: {result.error}"
        assert result.good > 0
        assert result.bad == 0, f"{device_id}: {[n for n, r in result.points.items() if not r.quality.good]}"


async def test_ups_output_equals_the_sum_of_its_pdus(served: Served) -> None:
    served.step(900)
    ups_a = await served.poll("ups-a")  # SNMP UPS-MIB
    out_w = ups_a.tables["output"]["1"]["power"].value
    assert isinstance(out_w, int | float)
    pdus_a = [number(await served.poll(p), "power") for p in ("pdu-a1", "pdu-a2")]
    assert out_w / 1000.0 == pytest.approx(sum(pdus_a), abs=0.03)  # PDUs report 0.01 kW
    ups_b = await served.poll("ups-b")  # APC Modbus: load is % of the nominal real power
    out_b_kw = number(ups_b, "load") / 100.0 * number(ups_b, "nominal_power") / 1000.0
    pdus_b = [number(await served.poll(p), "power") for p in ("pdu-b1", "pdu-b2")]
    assert out_b_kw == pytest.approx(sum(pdus_b), abs=0.03)
    outlets = (await served.poll("pdu-a1")).tables["outlet"]
    outlet_w = [r["power"].value for r in outlets.values()]
    assert sum(w for w in outlet_w if isinstance(w, int | float)) / 1000.0 == pytest.approx(pdus_a[0], abs=0.02)


async def test_facility_meter_equals_it_plus_plant_plus_losses(served: Served) -> None:
    served.step(600)
    phys = served.site.physics
    main = number(await served.poll("meter-main"), "total_power") / 1000.0
    plant = number(await served.poll("meter-plant"), "total_power") / 1000.0
    assert plant == pytest.approx(phys.plant_kw, rel=1e-4)
    losses = phys.ups_loss_kw + phys.air_handler_kw + phys.other_kw
    assert main == pytest.approx(phys.it_kw + plant + losses, rel=1e-4)
    e0 = number(await served.poll("meter-main"), "import_energy")
    served.step(3600)
    e1 = number(await served.poll("meter-main"), "import_energy")
    assert e1 - e0 == pytest.approx(main, rel=0.05)  # an hour at roughly that power


async def test_higher_chilled_water_setpoint_over_bacnet_lowers_chiller_power(served: Served) -> None:
    site = served.site
    loaded = site.loaded
    twin = SitePhysics(loaded.scenario, loaded.models, base_dir=loaded.base_dir)  # the same site, left alone
    served.step(1800)
    twin.advance_to(1800)
    bacnet = served.drivers[Protocol.BACNET]
    chiller = served.devices["chiller-1"]
    before = number(await served.poll("chiller-1"), "power")
    assert before == pytest.approx(twin.chillers[0].power_kw, rel=1e-5)
    point = chiller.model.point("chw_supply_setpoint")
    for value in (11.0, 12.0):  # at most 1 K per write (the model's max_step)
        result = await bacnet.write(chiller, point, value)
        assert result.ok, result.reason
        assert result.after == pytest.approx(value)
    settling = loaded.scenario.plant.settling_s
    served.step(settling)
    twin.advance_to(site.physics.t_s)
    after = number(await served.poll("chiller-1"), "power")
    assert site.physics.target is not None
    assert twin.target is not None
    drop_steady = twin.target.values["chiller_kw"] - site.physics.target.values["chiller_kw"]
    assert drop_steady > 0.05 * before
    assert twin.chillers[0].power_kw - after >= 0.9 * drop_steady  # within the settling time
    supply = number(await served.poll("chiller-1"), "chw_supply_temp")
    assert supply == pytest.approx(12.0, abs=0.15)
    # Every rack inlet sensor on the gateway reports warmer than the untouched twin's.
    served.step(900)
    twin.advance_to(site.physics.t_s)
    gw = await served.poll("gw-1")
    for s in twin.sensors:
        if s.rack is None:
            continue
        served_temp = number(gw, f"sensor{s.index:02d}_temperature")
        assert served_temp > s.temperature_c + 1.5, s.key


async def test_tower_and_pump_setpoints_move_the_plant(served: Served) -> None:
    modbus = served.drivers[Protocol.MODBUS]
    phys = served.site.physics
    tower, pump = served.devices["tower-1"], served.devices["pump-chw-1"]
    result = await modbus.write(tower, tower.model.point("leaving_water_setpoint"), 27.4)
    assert result.ok, result.reason
    result = await modbus.write(pump, pump.model.point("speed_setpoint"), 90.0)
    assert result.ok, result.reason
    served.step(1)
    assert phys.towers[0].setpoint_c == pytest.approx(27.4)
    assert phys.pumps[0].speed_pct == pytest.approx(90.0)
    served.step(3 * phys.scenario.plant.settling_s)
    assert number(await served.poll("pump-chw-1"), "speed") == pytest.approx(90.0, abs=0.1)
    assert phys.target is not None
    assert phys.target.chw_flow_ratio == pytest.approx(0.9)


async def test_faults_offline_slow_and_garbage(served: Served) -> None:
    site = served.site
    ev = site.trigger(EventKind.DEVICE_OFFLINE, "meter-plant")
    result = await served.poll("meter-plant")
    assert result.good == 0
    assert {str(r.quality) for r in result.points.values()} == {"timeout"}
    site.end_event(ev["id"])
    assert (await served.poll("meter-plant")).bad == 0
    ev = site.trigger(EventKind.DEVICE_SLOW, "pump-cw-1", delay_s=3.0)  # longer than the 1 s timeout
    assert (await served.poll("pump-cw-1")).good == 0
    site.end_event(ev["id"])
    ev = site.trigger(EventKind.DEVICE_GARBAGE, "gw-1")  # Modbus: corrupted frames
    assert (await served.poll("gw-1")).good == 0
    site.end_event(ev["id"])
    assert (await served.poll("gw-1")).bad == 0
    good = number(await served.poll("chiller-2"), "chw_return_temp")
    site.trigger(EventKind.DEVICE_GARBAGE, "chiller-2")  # BACnet: nonsense values
    bad = number(await served.poll("chiller-2"), "chw_return_temp")
    assert abs(bad - good) > 0.5
    ev = site.trigger(EventKind.DEVICE_OFFLINE, "ups-a")  # SNMP: no answer
    assert (await served.poll("ups-a")).good == 0


async def test_mains_failure_seen_over_snmp_and_modbus(served: Served) -> None:
    site = served.site
    site.trigger(EventKind.MAINS_FAILURE, "utility")
    served.step(60)
    ups_a = await served.poll("ups-a")
    assert ups_a.points["output_source"].value == "battery"
    assert number(ups_a, "seconds_on_battery") == pytest.approx(60, abs=2)
    alarms = {row["descr"].value for row in ups_a.tables["alarms"].values()}
    assert {"onBattery", "inputBad"} <= alarms
    ups_b = await served.poll("ups-b")
    assert ups_b.points["on_battery"].value is True
    served.step(3600)
    ups_a = await served.poll("ups-a")
    assert ups_a.points["output_source"].value == "none"
    assert ups_a.points["battery_status"].value == "depleted"
    assert number(await served.poll("meter-main"), "total_power") == 0.0
    assert number(await served.poll("pdu-a1"), "power") == 0.0
