"""The Modbus driver against the Modbus simulator over real loopback sockets."""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import struct
from pathlib import Path
from typing import Any

import pytest

from agent import config as agent_config
from agent.config import Device
from agent.drivers import driver_class
from agent.drivers.modbus import ModbusDriver, backoff_delay, same_value, settings_of
from agent.modbus_plan import Limits, plan
from models import catalog, codec, values
from models.profile import profile_value
from models.quality import Quality
from models.schema import DeviceModel, Protocol, Register
from simulators.modbus import READ_FUNCTIONS, WRITE_FUNCTIONS, ModbusSimulator
from tests.support.servers import free_port

MODBUS_MODELS = sorted(m for m, x in catalog.load_all().items() if x.protocol is Protocol.MODBUS)
FROZEN_T_S = 1234.5


def make_device(model: str, port: int, **device: Any) -> Device:
    """A resolved device as the agent builds it from a configuration file."""
    entry = {"id": device.pop("id", "dev"), "model": model, "host": "127.0.0.1", "port": port, **device}
    data = {"agent": {"id": "edge", "site": "s"}, "devices": [entry]}
    cfg = agent_config.parse(Path("/nonexistent/agent.toml"), data)
    return cfg.devices[0]


def test_the_registry_names_this_driver() -> None:
    assert driver_class(Protocol.MODBUS) is ModbusDriver


@pytest.mark.parametrize("model_id", MODBUS_MODELS)
async def test_catalog_round_trip_with_the_planned_number_of_reads(model_id: str) -> None:
    model = catalog.load(model_id)
    async with ModbusSimulator(model, seed=7, clock=lambda: FROZEN_T_S) as sim:
        device = make_device(model_id, sim.port)
        driver = ModbusDriver()
        try:
            result = await driver.poll(device)
        finally:
            await driver.close()
        served = sim.unit(1)
    assert result.error is None
    minimum = len(plan(model.points).reads)
    assert sim.count() == minimum == result.requests
    assert set(result.points) == {p.name for p in model.points}
    for point in model.points:
        reading = result.points[point.name]
        assert reading.quality is Quality.GOOD, point.name
        assert reading == served.reading(point.name), point.name
        if point.is_numeric and point.writable is None:
            expected = profile_value(point, FROZEN_T_S, 7)
            assert isinstance(expected, int | float)
            assert isinstance(reading.value, int | float)
            step = codec.resolution(point.type or codec.ValueType.FLOAT64, point.scale)
            tolerance = step / 2 + 1e-9 if step else abs(expected) * 1e-6
            assert math.isclose(reading.value, expected, abs_tol=tolerance), point.name


async def test_profiles_vary_with_time_and_counters_grow() -> None:
    model = catalog.load("meter-sdm630")
    now = [100.0]
    async with ModbusSimulator(model, clock=lambda: now[0]) as sim:
        device = make_device("meter-sdm630", sim.port)
        driver = ModbusDriver()
        first = await driver.poll(device)
        now[0] += 3600.0
        second = await driver.poll(device)
        await driver.close()
    assert second.points["import_energy"].value > first.points["import_energy"].value  # type: ignore[operator]
    assert second.points["l1_voltage"].value != first.points["l1_voltage"].value


async def test_an_illegal_address_inside_a_block_costs_only_its_points() -> None:
    model = catalog.load("meter-sdm630")
    async with ModbusSimulator(model) as sim:
        sim.fault().illegal(Register.INPUT, model.point("l2_current").address or 0)
        device = make_device("meter-sdm630", sim.port)
        driver = ModbusDriver()
        first = await driver.poll(device)
        refused_first = len(sim.requests) - sim.count()  # nothing but reads was sent
        before_second = sim.count()
        second = await driver.poll(device)
        second_reads = sim.count() - before_second
        await driver.close()
    assert refused_first == 0
    for result in (first, second):
        assert result.error is None
        assert result.points["l2_current"].quality is Quality.ILLEGAL_ADDRESS
        assert result.points["l2_current"].value is None
        good = {n for n, r in result.points.items() if r.quality.good}
        assert good == {p.name for p in model.points} - {"l2_current"}
    # The first poll bisected the failing read; the second reads around the bad point at once.
    assert first.requests > len(plan(model.points).reads)
    assert second.requests == second_reads == len(driver.plan(device).reads)
    assert [p.name for p in driver.plan(device).skipped] == ["l2_current"]


async def test_an_illegal_gap_is_learned_as_a_barrier() -> None:
    model = catalog.load("meter-sdm630")
    async with ModbusSimulator(model) as sim:
        sim.fault().illegal(Register.INPUT, 0x30)  # unmapped register read as gap filler
        device = make_device("meter-sdm630", sim.port)
        driver = ModbusDriver()
        first = await driver.poll(device)
        start = len(sim.requests)
        second = await driver.poll(device)
        second_requests = sim.requests[start:]
        await driver.close()
    assert first.bad == 0
    assert second.bad == 0
    assert all(not (r.address <= 0x30 < r.address + r.count) for r in second_requests)
    assert len(second_requests) == len(plan(model.points).reads) + 1


async def test_a_device_that_refuses_large_reads_is_read_in_smaller_ones_from_then_on() -> None:
    model = catalog.load("gateway-nbiot")
    async with ModbusSimulator(model) as sim:
        sim.fault().max_registers = 40
        device = make_device("gateway-nbiot", sim.port)
        driver = ModbusDriver()
        first = await driver.poll(device)
        start = len(sim.requests)
        second = await driver.poll(device)
        second_requests = sim.requests[start:]
        await driver.close()
    assert first.bad == 0
    assert second.bad == 0
    assert max(r.count for r in second_requests) <= 40
    assert len(second_requests) == len(driver.plan(device).reads)
    assert len(second_requests) > len(plan(model.points).reads)


async def test_a_silent_device_times_out_without_delaying_another() -> None:
    meter, ups = catalog.load("meter-sdm630"), catalog.load("ups-apc-modbus")
    async with ModbusSimulator(meter) as silent, ModbusSimulator(ups) as healthy:
        silent.fault().silent = True
        timeout_s = 0.5
        quiet = make_device("meter-sdm630", silent.port, id="quiet", timeout_s=timeout_s, retries=0)
        fine = make_device("ups-apc-modbus", healthy.port, id="fine", timeout_s=timeout_s, retries=0)
        driver = ModbusDriver()
        finished: list[str] = []

        async def poll(device: Device) -> Any:
            result = await driver.poll(device)
            finished.append(device.id)
            return result

        quiet_result, fine_result = await asyncio.gather(poll(quiet), poll(fine))
        await driver.close()
    assert finished == ["fine", "quiet"]
    assert fine_result.bad == 0
    assert quiet_result.good == 0
    assert {r.quality for r in quiet_result.points.values()} == {Quality.TIMEOUT}
    assert quiet_result.error is not None
    assert "timeout" in quiet_result.error
    # One request, one timeout: the poll stops instead of waiting once per planned read.
    assert silent.count() == 1
    assert quiet_result.elapsed_s < timeout_s * 4


async def test_a_dropped_connection_is_reconnected_on_the_next_poll() -> None:
    model = catalog.load("pump-modbus")
    async with ModbusSimulator(model) as sim:
        device = make_device("pump-modbus", sim.port, retries=0)
        driver = ModbusDriver()
        assert (await driver.poll(device)).bad == 0
        assert sim.drop_connections() == 1
        after_idle_drop = await driver.poll(device)
        # Now the device drops the connection on the next requests, whatever connection they use.
        sim.fault().drop = 2
        dropped = await driver.poll(device)
        recovered = await driver.poll(device)
        await driver.close()
    assert after_idle_drop.bad == 0
    assert dropped.good == 0
    assert {r.quality for r in dropped.points.values()} == {Quality.COMM_ERROR}
    assert recovered.bad == 0
    assert sim.accepted >= 3


async def test_devices_behind_one_gateway_share_one_connection() -> None:
    pump, tower = catalog.load("pump-modbus"), catalog.load("tower-modbus")
    async with ModbusSimulator({1: pump, 2: tower}) as sim:
        a = make_device("pump-modbus", sim.port, id="pump", modbus={"unit": 1})
        b = make_device("tower-modbus", sim.port, id="tower", modbus={"unit": 2})
        driver = ModbusDriver()
        results = await asyncio.gather(driver.poll(a), driver.poll(b), driver.poll(a), driver.poll(b))
        await driver.close()
    assert all(r.bad == 0 for r in results)
    assert sim.accepted == 1
    assert sim.count(unit=1) == 2 * len(plan(pump.points).reads)
    assert sim.count(unit=2) == 2 * len(plan(tower.points).reads)


async def test_an_unknown_unit_behind_a_gateway_is_a_timeout() -> None:
    async with ModbusSimulator({1: catalog.load("pump-modbus")}) as sim:
        device = make_device("pump-modbus", sim.port, modbus={"unit": 9})
        driver = ModbusDriver()
        result = await driver.poll(device)
        await driver.close()
    assert {r.quality for r in result.points.values()} == {Quality.TIMEOUT}
    assert result.error is not None
    assert "gateway" in result.error


async def test_rtu_over_tcp_round_trip() -> None:
    model = catalog.load("gateway-nbiot")
    async with ModbusSimulator({3: model}, framer="rtu-over-tcp", clock=lambda: FROZEN_T_S) as sim:
        device = make_device("gateway-nbiot", sim.port, modbus={"unit": 3, "framer": "rtu-over-tcp"})
        driver = ModbusDriver()
        result = await driver.poll(device)
        await driver.close()
        served = sim.unit(3)
    assert result.bad == 0
    assert all(result.points[p.name] == served.reading(p.name) for p in model.points)
    assert sim.count() == len(plan(model.points).reads)


@pytest.mark.parametrize("framer", ["tcp", "rtu-over-tcp"])
async def test_a_corrupted_answer_is_retried(framer: str) -> None:
    model = catalog.load("pump-modbus")
    async with ModbusSimulator(model, framer=framer) as sim:  # type: ignore[arg-type]
        sim.fault().corrupt = 1
        device = make_device("pump-modbus", sim.port, timeout_s=0.3, retries=1, modbus={"framer": framer})
        driver = ModbusDriver()
        result = await driver.poll(device)
        await driver.close()
    assert result.bad == 0
    assert sim.count() == len(plan(model.points).reads) + 1


async def test_a_corrupted_answer_without_retries_fails_only_that_poll() -> None:
    model = catalog.load("pump-modbus")
    async with ModbusSimulator(model, framer="rtu-over-tcp") as sim:
        sim.fault().corrupt = 1
        device = make_device("pump-modbus", sim.port, timeout_s=0.3, retries=0, modbus={"framer": "rtu-over-tcp"})
        driver = ModbusDriver()
        broken = await driver.poll(device)
        healthy = await driver.poll(device)
        await driver.close()
    assert broken.good == 0
    assert broken.error is not None
    assert healthy.bad == 0


async def test_slow_answers_within_the_timeout_are_read() -> None:
    async with ModbusSimulator(catalog.load("ups-apc-modbus")) as sim:
        sim.fault().delay_s = 0.05
        device = make_device("ups-apc-modbus", sim.port, timeout_s=2.0, retries=0)
        driver = ModbusDriver()
        result = await driver.poll(device)
        await driver.close()
    assert result.bad == 0


async def test_delay_ms_paces_requests_on_the_line() -> None:
    async with ModbusSimulator(catalog.load("ups-apc-modbus")) as sim:
        device = make_device("ups-apc-modbus", sim.port, modbus={"delay_ms": 40})
        driver = ModbusDriver()
        result = await driver.poll(device)
        await driver.close()
    assert result.bad == 0
    arrivals = [r.at for r in sim.requests]
    assert len(arrivals) == 4
    # A lower bound only: pacing may be longer on a loaded machine, never shorter.
    assert all(b - a >= 0.035 for a, b in itertools.pairwise(arrivals))


async def test_connection_failures_back_off_and_recover() -> None:
    port = free_port()
    now = [1000.0]
    driver = ModbusDriver(clock=lambda: now[0], rng=random.Random(1))
    device = make_device("pump-modbus", port, retries=0, timeout_s=1.0)
    refused = await driver.poll(device)
    assert refused.error is not None
    assert "cannot connect" in refused.error
    assert {r.quality for r in refused.points.values()} == {Quality.COMM_ERROR}
    sim = ModbusSimulator(catalog.load("pump-modbus"))
    await sim.start(port=port)
    try:
        waiting = await driver.poll(device)  # still inside the backoff window: no attempt
        assert waiting.error is not None
        assert "next attempt" in waiting.error
        assert sim.accepted == 0
        now[0] += 60.0
        recovered = await driver.poll(device)
        assert recovered.bad == 0
        assert sim.accepted == 1
    finally:
        await driver.close()
        await sim.stop()


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    rng = random.Random(3)
    assert backoff_delay(0, rng) == 0.0
    for failures in range(1, 12):
        nominal = min(30.0, 0.5 * 2 ** (failures - 1))
        delays = {backoff_delay(failures, rng) for _ in range(20)}
        assert all(nominal / 2 <= d <= nominal for d in delays)
        assert len(delays) > 1  # jittered


async def test_write_goes_through_the_codec_in_the_points_word_order() -> None:
    model = catalog.load("tower-modbus")
    async with ModbusSimulator(model) as sim:
        device = make_device("tower-modbus", sim.port)
        driver = ModbusDriver()
        point = model.point("leaving_water_setpoint")
        result = await driver.write(device, point, 30.5)
        written = sim.unit(1).image(Register.HOLDING, 100, 2)
        writes = [r for r in sim.requests if r.function in WRITE_FUNCTIONS]
        await driver.close()
    assert result.ok, result.reason
    assert result.outcome == "written"
    assert result.before == 29.5
    assert result.after == 30.5
    high, low = struct.unpack(">HH", struct.pack(">f", 30.5))
    assert written == [low, high]  # CDAB: low word first, as the model says
    assert [(r.function, r.address, r.count) for r in writes] == [(16, 100, 2)]


@pytest.mark.parametrize(
    ("model_id", "name", "value", "function", "expected"),
    [
        ("pump-modbus", "speed_setpoint", 70.0, 6, 70.0),
        ("tower-modbus", "control_mode", "manual_speed", 6, "manual_speed"),
        ("pump-modbus", "run_command", False, 5, False),
        ("tower-modbus", "fan_enable", 0.0, 5, False),
    ],
)
async def test_writes_of_each_kind_read_back(
    model_id: str, name: str, value: Any, function: int, expected: Any
) -> None:
    model = catalog.load(model_id)
    async with ModbusSimulator(model) as sim:
        device = make_device(model_id, sim.port)
        driver = ModbusDriver()
        result = await driver.write(device, model.point(name), value)
        served = sim.unit(1).reading(name)
        functions = [r.function for r in sim.requests if r.function in WRITE_FUNCTIONS]
        await driver.close()
    assert result.ok, result.reason
    assert result.after == expected
    assert served.value == expected
    assert functions == [function]


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("speed_setpoint", 120.0, "outside"),
        ("speed_setpoint", 50.0, "max_step"),
        ("motor_speed", 1000.0, "not writable"),
    ],
)
async def test_refused_writes_never_reach_the_device(name: str, value: float, reason: str) -> None:
    model = catalog.load("pump-modbus")
    async with ModbusSimulator(model) as sim:
        device = make_device("pump-modbus", sim.port)
        driver = ModbusDriver()
        result = await driver.write(device, model.point(name), value)
        await driver.close()
    assert not result.ok
    assert result.outcome == "refused"
    assert reason in result.reason
    assert sim.count(functions=WRITE_FUNCTIONS) == 0


async def test_a_write_the_device_refuses_is_reported_with_its_exception() -> None:
    model = catalog.load("pump-modbus")
    # The real device's firmware treats the setpoint as read-only, unlike the model.
    firmware = model.model_copy(
        update={"points": [p.model_copy(update={"writable": None}) if p.name == "speed_setpoint" else p
                           for p in model.points]}
    )
    async with ModbusSimulator(firmware) as sim:
        device = make_device("pump-modbus", sim.port)
        driver = ModbusDriver()
        result = await driver.write(device, model.point("speed_setpoint"), 70.0)
        after = sim.unit(1).reading("speed_setpoint")
        await driver.close()
    assert not result.ok
    assert result.outcome == "failed"
    assert "exception 2 (illegal data address)" in result.reason
    assert result.before == 78.0
    assert after.value == 78.0
    assert sim.count(functions=WRITE_FUNCTIONS) == 1


async def test_read_point_reads_one_point() -> None:
    model = catalog.load("ups-apc-modbus")
    async with ModbusSimulator(model, clock=lambda: FROZEN_T_S) as sim:
        device = make_device("ups-apc-modbus", sim.port)
        driver = ModbusDriver()
        reading = await driver.read_point(device, model.point("model"))
        await driver.close()
    assert reading == values.Reading("Smart-UPS SRT 10000")
    assert [(r.function, r.address, r.count) for r in sim.requests] == [(3, 532, 16)]
    assert all(r.function in READ_FUNCTIONS for r in sim.requests)


def test_settings_come_from_the_device_over_the_model_over_defaults(tmp_path: Path) -> None:
    base = catalog.load("pump-modbus").model_dump(mode="json", exclude_none=True)
    slow = DeviceModel.model_validate({**base, "id": "pump-slow", "modbus": {"max_registers": 10, "delay_ms": 20}})
    model_file = tmp_path / "pump-slow.toml"
    lines = [f'{k} = "{v}"' for k, v in (("id", "pump-slow"), ("kind", "pump"), ("protocol", "modbus"))]
    lines += ["[modbus]", "max_registers = 10", "delay_ms = 20"]
    for point in slow.points[:2]:
        lines += ["[[points]]", f'name = "{point.name}"', f'register = "{point.register}"',
                  f"address = {point.address}", f'type = "{point.type}"']
    model_file.write_text("\n".join(lines) + "\n")
    from_model = settings_of(make_device(str(model_file), 502))
    assert from_model.limits.max_registers == 10
    assert from_model.delay_s == pytest.approx(0.02)
    overridden = settings_of(make_device(str(model_file), 502, modbus={"max_registers": 50, "max_gap": 3}))
    assert overridden.limits == Limits(max_registers=50, max_gap=3)
    assert overridden.delay_s == pytest.approx(0.02)
    default = settings_of(make_device("pump-modbus", 502))
    assert default.limits == Limits()
    assert default.delay_s == 0.0


def test_same_value_respects_resolution_and_types() -> None:
    model = catalog.load("pump-modbus")
    assert same_value(model.point("speed_setpoint"), 70.0, 70.04)
    assert not same_value(model.point("speed_setpoint"), 70.0, 70.2)
    assert same_value(model.point("control_mode"), "speed", 0)
    assert same_value(model.point("run_command"), False, 0.0)
    tower = catalog.load("tower-modbus")
    assert same_value(tower.point("leaving_water_setpoint"), 29.100000381469727, 29.1)


def test_a_point_left_out_for_a_while_is_decoded_again_when_it_comes_back() -> None:
    # A read over the same registers with a point in the middle left out, and then with it
    # back: the compiled layout of one must not be used for the other.
    from agent.drivers.modbus import _layout  # noqa: PLC0415
    from agent.modbus_plan import Read  # noqa: PLC0415

    model = catalog.load("gateway-nbiot")
    full = plan(model.points).reads[0]
    middle = full.blocks[len(full.blocks) // 2]
    without = Read(full.table, full.start, full.count, tuple(b for b in full.blocks if b is not middle))
    gone = {p.name for p in middle.points}
    assert not gone & {name for name, _, _ in _layout(without)}
    assert gone <= {name for name, _, _ in _layout(full)}
    assert {name for name, _, _ in _layout(full)} == {p.name for p in full.points}
