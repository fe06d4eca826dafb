"""Site physics stepped in-process on a simulated clock: energy balance, power chain, plant, sensors, scenarios."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from collector import config as collector_config
from models import plant
from models.errors import ConfigError
from simulators.physics import (
    AcceleratedClock,
    EventError,
    EventKind,
    ManualClock,
    SitePhysics,
    check_speed,
    energy_balance,
    feed_meter_kwh,
)
from simulators.site import LoadedScenario, collector_config_for, load_scenario
from tests.simulators.site_helpers import DEMO, SOURCE_FACILITY, agent_devices, demo_scenario, load_demo


def physics(loaded: LoadedScenario, max_step_s: float = 60.0) -> SitePhysics:
    return SitePhysics(loaded.scenario, loaded.models, base_dir=loaded.base_dir, max_step_s=max_step_s)


def check_chain(p: SitePhysics) -> None:
    """Instantaneous agreement: UPS output = its PDUs, PDUs = racks, feeds = IT + plant + losses."""
    for ups in p.upses:
        pdu_sum = sum(p.pdus[i].power_kw for i in ups.pdus)
        assert ups.output_kw == pytest.approx(pdu_sum, rel=1e-9, abs=1e-9), ups.id
    assert sum(d.power_kw for d in p.pdus) == pytest.approx(p.it_kw, rel=1e-9, abs=1e-9)
    parts = p.it_kw + p.plant_kw + p.ups_loss_kw + p.air_handler_kw + p.other_kw
    assert p.facility_kw == pytest.approx(parts, rel=1e-9, abs=1e-9)
    assert sum(m.power_kw for m in p.meters if m.measures == "feed") == pytest.approx(p.facility_kw, rel=1e-9)


EVENTS_OF_A_DAY = """
[[events]]
at_s = 3600
kind = "mains_failure"
target = "utility"
duration_s = 900

[[events]]
at_s = 7200
kind = "ups_bypass"
target = "ups-b"
duration_s = 1800

[[events]]
at_s = 10000
kind = "pdu_breaker_trip"
target = "pdu-a2"
duration_s = 2000

[[events]]
at_s = 20000
kind = "chiller_trip"
target = "chiller-1"
duration_s = 10000

[[events]]
at_s = 40000
kind = "tower_fan_failure"
target = "tower-1"
duration_s = 10000
"""


def test_energy_balance_over_a_simulated_day(tmp_path: Path) -> None:
    loaded = load_demo(tmp_path, extra=EVENTS_OF_A_DAY)
    p = physics(loaded, max_step_s=120.0)
    sources: set[str] = set()
    for _ in range(720):  # 24 h in 120 s steps (and at every event)
        p.advance(120.0)
        check_chain(p)
        sources |= {u.source for u in p.upses}
    assert p.t_s == pytest.approx(86400.0)
    assert {"normal", "battery", "bypass"} <= sources  # the day went through the events
    e = energy_balance(p)
    parts = e["it"] + e["plant"] + e["losses"]
    assert abs(e["facility"] - parts) <= 0.001 * e["facility"]
    assert feed_meter_kwh(p) == pytest.approx(e["facility"], rel=1e-3)
    plant_meter = next(m for m in p.meters if m.measures == "plant")
    assert plant_meter.kwh == pytest.approx(e["plant"], rel=1e-3)
    for ups in p.upses:
        assert ups.out_kwh == pytest.approx(sum(p.pdus[i].kwh for i in ups.pdus), rel=1e-3), ups.id
    assert sum(r.kwh for r in p.racks) == pytest.approx(e["it"], rel=1e-3)
    # A plausible small room: about 36 kW of IT for 24 h, a PUE between 1.1 and 1.6.
    assert 0.8 * 36 * 24 < e["it"] < 1.1 * 36 * 24
    assert 1.1 < e["facility"] / e["it"] < 1.6


def test_energy_counters_integrate_power(tmp_path: Path) -> None:
    p = physics(load_demo(tmp_path))
    powers: list[float] = []
    for _ in range(120):
        powers.append(p.pdus[0].power_kw)  # held over the next step
        p.advance(30.0)
    assert p.pdus[0].kwh == pytest.approx(sum(powers) * 30.0 / 3600.0, rel=1e-9)
    assert p.pdus[0].kwh == pytest.approx(sum(p.pdus[0].outlet_kwh), rel=1e-9)


def test_mains_failure_drains_the_batteries_then_drops_the_load(tmp_path: Path) -> None:
    p = physics(load_demo(tmp_path))
    p.advance(600)
    ev = p.trigger(EventKind.MAINS_FAILURE, "utility")
    seen: list[tuple[str, str, str]] = []
    it_before = p.it_kw
    for _ in range(60):  # an hour: longer than either battery lasts at this load
        p.advance(60)
        ups = p.upses[p.ups_index["ups-a"]]
        seen.append((ups.source, ups.battery_status, "it" if p.it_kw > 0 else "dark"))
    sources = [s for s, _, _ in seen]
    assert sources[0] == "battery"
    assert "low" in [b for _, b, _ in seen]
    assert sources[-1] == "none"
    # order: battery, then low battery, then output off; the racks go dark once both UPSes are off
    assert sources.index("none") > [b for _, b, _ in seen].index("low")
    assert seen[-1][2] == "dark"
    assert p.facility_kw == 0.0
    assert it_before > 0
    p.end(ev.id)
    p.advance(60)
    ups = p.upses[p.ups_index["ups-a"]]
    assert ups.source == "normal"
    assert p.it_kw == pytest.approx(it_before, rel=0.05)
    assert ups.charging_kw > 0
    assert ups.input_kw > ups.output_kw / ups.efficiency()  # recharging on top of the load


def test_bypass_breaker_trip_and_dual_cords(tmp_path: Path) -> None:
    p = physics(load_demo(tmp_path))
    p.trigger(EventKind.UPS_BYPASS, "ups-b")
    ups_b = p.upses[p.ups_index["ups-b"]]
    assert ups_b.source == "bypass"
    assert ups_b.input_kw == pytest.approx(ups_b.output_kw / 0.995)
    a08 = p.racks[p.rack_index["A08"]]
    a05 = p.racks[p.rack_index["A05"]]
    before_b2 = p.pdus[p.pdu_index["pdu-b2"]].power_kw
    p.trigger(EventKind.PDU_BREAKER_TRIP, "pdu-a2")
    assert a08.power_kw == 0.0  # single-corded on pdu-a2
    assert a05.power_kw == pytest.approx(a05.demand_kw)  # dual-corded: pdu-b2 carries it all
    b2 = p.pdus[p.pdu_index["pdu-b2"]]
    assert b2.power_kw > before_b2
    assert b2.power_kw == pytest.approx(sum(p.racks[r].demand_kw for r in b2.racks))
    assert "A08" in p.snapshot()["racks"]["down"]
    check_chain(p)


def test_chiller_trip_starts_the_other_and_losing_both_heats_the_room(tmp_path: Path) -> None:
    p = physics(load_demo(tmp_path))
    assert [c.running for c in p.chillers] == [True, False]
    p.trigger(EventKind.CHILLER_TRIP, "chiller-1")
    p.advance(60)
    assert [c.running for c in p.chillers] == [False, True]
    assert p.chillers[0].power_kw == 0.0
    assert p.chillers[1].power_kw > 0.0
    inlet = p.plant["it_inlet_c"]
    p.trigger(EventKind.CHILLER_TRIP, "chiller-2")
    p.advance(p.scenario.plant.settling_s)
    assert p.target is not None
    assert not p.target.cooling
    assert p.plant["chiller_kw"] < 0.1
    assert p.plant["it_inlet_c"] > inlet + 10.0


def test_tower_fan_failure_warms_the_condenser_water(tmp_path: Path) -> None:
    loaded = load_demo(tmp_path)
    normal, failed = physics(loaded), physics(loaded)
    failed.trigger(EventKind.TOWER_FAN_FAILURE, "tower-1")
    for p in (normal, failed):
        p.advance(2 * loaded.scenario.plant.settling_s)
    assert failed.towers[0].fan_kw == 0.0
    assert normal.towers[0].fan_kw > 0.0
    assert failed.plant["tower_leaving_c"] > normal.plant["tower_leaving_c"] + 0.5
    assert failed.plant["chiller_kw"] > normal.plant["chiller_kw"]


def test_higher_chilled_water_setpoint_settles_within_the_settling_time(tmp_path: Path) -> None:
    loaded = load_demo(tmp_path)
    base, raised = physics(loaded), physics(loaded)
    for p in (base, raised):
        p.advance(1800)
    for c in raised.chillers:
        c.setpoint_c += 2.0
    settling = loaded.scenario.plant.settling_s
    base.advance(settling)
    raised.advance(settling)
    assert raised.target is not None
    assert base.target is not None
    drop_now = base.plant["chiller_kw"] - raised.plant["chiller_kw"]
    drop_steady = base.target.values["chiller_kw"] - raised.target.values["chiller_kw"]
    assert drop_steady > 0
    assert drop_now >= 0.9 * drop_steady  # first order: 95 % after the settling time
    for rb, rr in zip(base.racks, raised.racks, strict=True):
        assert rr.inlet_c > rb.inlet_c + 1.5
    assert raised.facility_kw < base.facility_kw


def test_sensors_report_at_their_own_periods_and_a_flat_battery_stops_them(tmp_path: Path) -> None:
    p = physics(load_demo(tmp_path), max_step_s=30.0)
    start = {s.key: s.reports for s in p.sensors}
    p.advance(7200)
    for s in p.sensors:
        expected = 7200 / s.period_s
        assert expected - 1 <= s.reports - start[s.key] <= expected + 1, s.key
        assert p.sensor_age_s(s) < s.period_s
    periods = {s.period_s for s in p.sensors}
    assert len(periods) > 1  # the gateway's sensors do not share one period
    flat = p.sensors[p.sensor_index["gw-1:3"]]
    ev = p.trigger(EventKind.SENSOR_BATTERY_FLAT, "gw-1:3")
    count = flat.reports
    p.advance(3 * flat.period_s)
    assert flat.reports == count
    assert flat.battery_pct == 0.0
    assert p.sensor_age_s(flat) > 2 * flat.period_s
    p.end(ev.id)
    p.advance(60)
    assert flat.reports == count + 1
    assert flat.battery_pct > 99.9  # replaced


def test_rack_sensor_follows_its_rack_inlet(tmp_path: Path) -> None:
    p = physics(load_demo(tmp_path), max_step_s=30.0)
    p.advance(3600)
    s = p.sensors[p.sensor_index["gw-1:7"]]
    rack = p.racks[p.rack_index["A07"]]
    assert s.rack == p.rack_index["A07"]
    assert abs(s.temperature_c - rack.inlet_c) < 0.3  # latched at its last report


def test_events_name_their_targets(tmp_path: Path) -> None:
    p = physics(load_demo(tmp_path))
    with pytest.raises(EventError, match="unknown event kind"):
        p.trigger("meteor_strike", None)
    with pytest.raises(EventError, match="no pdu 'pdu-z9'"):
        p.trigger(EventKind.PDU_BREAKER_TRIP, "pdu-z9")
    with pytest.raises(EventError, match="needs a target"):
        p.trigger(EventKind.CHILLER_TRIP, None)
    with pytest.raises(KeyError):
        p.end(999)
    slow = p.trigger(EventKind.DEVICE_SLOW, "meter-main", delay_s=2.5)
    p.trigger(EventKind.DEVICE_OFFLINE, "chiller-2", duration_s=100)
    faults = p.device_faults()
    assert faults["meter-main"].delay_s == 2.5
    assert faults["chiller-2"].offline
    p.advance(101)
    assert "chiller-2" not in p.device_faults()
    p.end(slow.id)
    assert p.device_faults() == {}


def test_clocks() -> None:
    wall = [100.0]
    clock = AcceleratedClock(3600.0, wall=lambda: wall[0])
    wall[0] += 2.0
    assert clock.now_s() == pytest.approx(7200.0)
    clock.set_speed(1.0)
    wall[0] += 10.0
    assert clock.now_s() == pytest.approx(7210.0)
    for bad in (0.5, 3601.0, float("nan")):
        with pytest.raises(ValueError, match="outside 1 to 3600"):
            check_speed(bad)
    manual = ManualClock()
    manual.advance(5.0)
    assert manual.now_s() == 5.0
    with pytest.raises(ValueError, match="cannot go back"):
        manual.advance(-1.0)


def test_source_facility_is_about_eleven_megawatts_of_it() -> None:
    loaded = load_scenario(SOURCE_FACILITY)
    sc = loaded.scenario
    assert sum(r.count for r in sc.racks) == 1388
    assert {r.kw for r in sc.racks} == {8.8}
    p = physics(loaded, max_step_s=600.0)
    p.advance(86400.0)
    e = energy_balance(p)
    mean_it_kw = e["it"] / 24.0
    assert 10_500 < mean_it_kw < 11_500
    assert 1.1 < e["facility"] / e["it"] < 1.45
    check_chain(p)
    assert len(sc.devices()) == 45


def test_plant_spot_checks_the_site_relies_on() -> None:
    """COP rises with L and falls with E over the whole box; approach about 3.8 K at the reference point."""
    leaving = np.linspace(7.22, 16.0, 12)[:, None]
    entering = np.linspace(12.78, 32.0, 12)[None, :]
    cop = plant.chiller_cop(2000.0, leaving, entering)
    assert (np.diff(cop, axis=0) > 0).all()
    falls = np.diff(cop, axis=1)
    assert (falls <= 1e-12).all()
    lifted = (entering[:, :-1] > leaving + 4.0) & (entering[:, :-1] > 13.0)  # above the head-pressure floor
    assert (falls[lifted] < 0).all()
    approach = float(plant.tower_approach_k(25.6, 35.0 - 29.4, 1.0))
    assert approach == pytest.approx(3.8, abs=0.2)


# ---------------------------------------------------------------- scenario files


def problems(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    text = str(info.value)
    assert all(line.startswith(str(path)) for line in text.splitlines())
    return text


def test_bad_scenarios_name_the_file_and_the_key(tmp_path: Path) -> None:
    path = demo_scenario(tmp_path, {"speed = 60.0": "speedd = 60.0"})
    assert "site.speedd: unknown key" in problems(path)
    path = demo_scenario(tmp_path, {"speed = 60.0": "speed = 5000.0"})
    assert "site.speed:" in problems(path)
    path = demo_scenario(tmp_path, {'ups = "ups-b"': 'ups = "ups-q"'})
    assert "pdus[2] (pdu-b1).ups: no UPS 'ups-q'" in problems(path)
    path = demo_scenario(tmp_path, {'pdus = ["pdu-a2"]': 'pdus = ["pdu-x"]'})
    assert "racks[7] (A08).pdus: no PDU 'pdu-x'" in problems(path)
    path = demo_scenario(tmp_path, {'model = "ups-rfc1628"': 'model = "meter-sdm630"'})
    assert "upses[0] (ups-a).model: model 'meter-sdm630' is a modbus meter" in problems(path)
    path = demo_scenario(tmp_path, {'model = "ups-rfc1628"': 'model = "no-such-model"'})
    assert "upses[0] (ups-a).model:" in problems(path)
    path = demo_scenario(tmp_path, extra='[[events]]\nat_s = 5\nkind = "chiller_trip"\ntarget = "chiller-9"\n')
    assert "events[0].target: no chiller 'chiller-9'" in problems(path)
    path = demo_scenario(tmp_path, {'sensor = "gw-1:2"': 'sensor = "gw-1:1"'})
    assert "racks[1] (A02).sensor: sensor gw-1:1 already watches rack A01" in problems(path)
    text = DEMO.read_text(encoding="utf-8").replace("port = 17002", "port = 17001")
    (tmp_path / "dup.toml").write_text(text, encoding="utf-8")
    assert "meters[1] (meter-plant).port: tcp port 17001 is already used by meters[0] (meter-main)" in problems(
        tmp_path / "dup.toml"
    )
    assert "file not found" in problems(tmp_path / "missing.toml")


def test_generated_agent_and_collector_configs_cover_every_device(tmp_path: Path) -> None:
    loaded = load_demo(tmp_path)
    devices = agent_devices(loaded, tmp_path, interval_s=5.0)
    assert set(devices) == {d.id for d in loaded.scenario.devices()}
    for dev in loaded.scenario.devices():
        assert devices[dev.id].port == dev.port
        assert devices[dev.id].model.id == loaded.models[dev.id].id
        assert devices[dev.id].interval_s == 5.0
    assert devices["chiller-2"].config.bacnet is not None
    assert devices["chiller-2"].config.bacnet.device_instance == 1002
    path = tmp_path / "collector.toml"
    path.write_text(collector_config_for(loaded, store_path=str(tmp_path / "store.sqlite")), encoding="utf-8")
    cfg = collector_config.load(path).config
    assert cfg.collector.site == "demo"
    assert cfg.store.kind == "sqlite"
