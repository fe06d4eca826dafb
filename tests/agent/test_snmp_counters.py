"""Counter wraps and resets: never negative, never huge energy."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from agent.drivers.snmp import COUNTER32_MODULUS, CounterTracker, SnmpDriver
from models import catalog
from simulators.snmp import SnmpSimulator
from tests.support.snmp import make_device


@given(st.lists(st.integers(min_value=0, max_value=COUNTER32_MODULUS - 1), min_size=2, max_size=40))
def test_increments_are_never_negative_nor_huge(values: list[int]) -> None:
    tracker = CounterTracker()
    for i, raw in enumerate(values):
        tracker.update("dev", "energy", "", raw, syntax="Counter32", ts=float(i * 10))
        increment = tracker.increments[("dev", "energy", "")]
        assert increment >= 0
        assert increment <= max(raw, COUNTER32_MODULUS // 8)


def test_counter32_wrap_is_unwrapped_and_a_reset_starts_a_new_run() -> None:
    tracker = CounterTracker()
    key = ("dev", "energy", "")
    published = [
        tracker.update("dev", "energy", "", raw, syntax="Counter32", ts=ts)
        for raw, ts in ((COUNTER32_MODULUS - 300, 0.0), (COUNTER32_MODULUS - 100, 10.0), (100, 20.0))
    ]
    assert published == [COUNTER32_MODULUS - 300, COUNTER32_MODULUS - 100, COUNTER32_MODULUS + 100]
    assert tracker.increments[key] == 200
    assert tracker.update("dev", "energy", "", 5, syntax="Counter32", ts=30.0) == 5  # reset: a huge drop
    assert tracker.increments[key] == 5
    assert [e.kind for e in tracker.events] == ["wrap", "reset"]


def test_a_gauge_counter_that_goes_down_was_reset() -> None:
    tracker = CounterTracker()
    tracker.update("dev", "energy", "1", 12_000, syntax="Gauge32", ts=0.0)
    assert tracker.update("dev", "energy", "1", 3, syntax="Gauge32", ts=10.0) == 3
    assert tracker.increments[("dev", "energy", "1")] == 3
    assert tracker.events[-1].kind == "reset"


async def test_pdu_energy_reset_never_yields_negative_or_huge_energy(tmp_path: Path) -> None:
    model = catalog.load("pdu-apc-rpdu2")
    async with SnmpSimulator(model, speed=0.0) as sim:
        device = make_device(tmp_path, "pdu-apc-rpdu2", sim.port)
        driver = SnmpDriver()
        try:
            first = await driver.poll(device)
            sim.advance(3600.0)
            second = await driver.poll(device)
            reset_device = await driver.write(device, model.point("energy_reset"), "reset")
            reset_outlets = await driver.write(device, model.point("outlets_energy_reset"), "reset")
            sim.advance(600.0)
            third = await driver.poll(device)
        finally:
            await driver.close()
    assert reset_device.ok
    assert reset_outlets.ok
    assert sim.pdu is not None
    assert sim.pdu.resets == 2
    # an hour at about 3.6 kW: the device meter grew by about 3.6 kWh, outlets by about 0.15 kWh
    grown = second.points["energy"].value - first.points["energy"].value  # type: ignore[operator]
    assert 2.0 < grown < 5.0
    assert third.points["energy"].value < 1.0  # type: ignore[operator]  # published as read: a new run
    increments = driver.counters.increments
    assert all(inc >= 0 for inc in increments.values())
    assert increments[("dev", "energy", "")] < 10  # tenths of kWh since the reset, not 2^32
    for row in map(str, range(1, 25)):
        assert third.tables["outlet"][row]["energy"].value < 0.1  # type: ignore[operator]
        assert increments[("dev", "outlet.energy", row)] <= 1
    kinds = {(e.name, e.kind) for e in driver.counters.events}
    assert kinds == {("energy", "reset"), ("outlet.energy", "reset")}


async def test_counter32_wrap_read_from_the_agent_keeps_growing(tmp_path: Path) -> None:
    model = catalog.load("ups-rfc1628")
    oid = model.point("input_line_bads").oid or ""
    async with SnmpSimulator(model, speed=0.0) as sim:
        sim.raw_offsets[oid] = COUNTER32_MODULUS - 1  # the agent's Counter32 is at its top
        device = make_device(tmp_path, "ups-rfc1628", sim.port)
        driver = SnmpDriver()
        try:
            values = []
            for _ in range(2):
                values.append((await driver.poll(device)).points["input_line_bads"].value)
                sim.fail_mains()
                sim.restore_mains()
            values.append((await driver.poll(device)).points["input_line_bads"].value)
        finally:
            await driver.close()
    assert values == [COUNTER32_MODULUS - 1, COUNTER32_MODULUS, COUNTER32_MODULUS + 1]
    assert [e.kind for e in driver.counters.events] == ["wrap"]
