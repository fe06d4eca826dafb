"""BACnet driver against the BACnet simulator over real UDP sockets on loopback."""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from agent import config as agent_config
from agent.config import Device
from agent.drivers.bacnet import BacnetDriver, plan_batches
from models import catalog
from models.profile import profile_value
from models.quality import Quality
from models.schema import DeviceModel
from simulators.bacnet import SimulatedDevice
from tests.support.servers import free_port

CHILLER = catalog.load("chiller-bacnet")
CRAH = catalog.load("crah-bacnet")


def make_device(port: int, model: str = "chiller-bacnet", instance: int = 1001, **options: Any) -> Device:
    timeout_s = options.pop("timeout_s", 2.0)
    retries = options.pop("retries", 0)
    data = {
        "agent": {"id": "edge-test", "site": "lab"},
        "defaults": {"timeout_s": timeout_s, "retries": retries},
        "devices": [
            {
                "id": f"dev-{port}",
                "model": model,
                "host": "127.0.0.1",
                "port": port,
                "bacnet": {"device_instance": instance, **options},
            }
        ],
    }
    return agent_config.parse(Path("test-agent.toml"), data).devices[0]


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


async def until(condition: Callable[[], Any], attempts: int = 200) -> None:
    """Yield to the loop until condition() holds (bounded), for asynchronous notifications."""
    for _ in range(attempts):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


def expected_values(model: DeviceModel, seed: int = 0) -> dict[str, Any]:
    return {p.name: profile_value(p, 0.0, seed) for p in model.points}


@pytest.mark.parametrize("model", [CHILLER, CRAH], ids=lambda m: m.id)
async def test_model_round_trips(model: DeviceModel, driver: BacnetDriver) -> None:
    port = free_port(socket.SOCK_DGRAM)
    async with SimulatedDevice(model, port=port, seed=7) as sim:
        result = await driver.poll(make_device(port, model.id, sim.instance))
    assert result.error is None
    assert set(result.points) == {p.name for p in model.points}
    assert {n: r.quality for n, r in result.points.items()} == dict.fromkeys(result.points, Quality.GOOD)
    assert {n: r.value for n, r in result.points.items()} == expected_values(model, seed=7)


async def test_reads_per_poll_are_the_minimum(chiller: SimulatedDevice, driver: BacnetDriver) -> None:
    device = make_device(chiller.port)
    first = await driver.poll(device)
    # Set-up once: services supported, then max APDU / segmentation / vendor in one request.
    assert first.requests == 3
    assert chiller.traffic.requests["read-property-multiple"] == 2
    second = await driver.poll(device)  # subscribes to the two COV points, reads the rest
    assert second.requests == 1 + 2
    chiller.traffic.reset()
    third = await driver.poll(device)
    assert third.requests == 1
    assert dict(chiller.traffic.requests) == {"read-property-multiple": 1}
    polled = [p.object for p in CHILLER.points if not p.cov]
    assert chiller.traffic.rpm_objects == [polled]
    assert all(r.quality is Quality.GOOD for r in third.points.values())


async def test_without_read_property_multiple_everything_is_read_one_by_one(driver: BacnetDriver) -> None:
    port = free_port(socket.SOCK_DGRAM)
    async with SimulatedDevice(CHILLER, port=port, rpm=False, cov=False) as sim:
        device = make_device(port)
        await driver.poll(device)
        sim.traffic.reset()
        result = await driver.poll(device)
    assert {n: r.value for n, r in result.points.items()} == expected_values(CHILLER)
    # present-value and status-flags of every point, nothing else, and no ReadPropertyMultiple.
    assert dict(sim.traffic.requests) == {"read-property": 2 * len(CHILLER.points)}
    assert result.requests == 2 * len(CHILLER.points)


async def test_rejected_read_property_multiple_falls_back(chiller: SimulatedDevice, driver: BacnetDriver) -> None:
    device = make_device(chiller.port)
    await driver.poll(device)
    chiller.rpm = False  # the device stops accepting it (firmware change, gateway in between)
    chiller.traffic.reset()
    result = await driver.poll(device)
    assert all(r.quality is Quality.GOOD for r in result.points.values())
    assert chiller.traffic.requests["read-property-multiple"] == 1  # tried once, rejected
    chiller.traffic.reset()
    await driver.poll(device)
    assert chiller.traffic.requests["read-property-multiple"] == 0


async def test_batches_fit_a_small_configured_apdu(chiller: SimulatedDevice, driver: BacnetDriver) -> None:
    device = make_device(chiller.port, max_apdu=128)
    await driver.poll(device)
    await driver.poll(device)
    chiller.traffic.reset()
    result = await driver.poll(device)
    polled = [(p.object or "", ["present-value", "status-flags"]) for p in CHILLER.points if not p.cov]
    batches = plan_batches(polled, 128)
    assert len(batches) > 1
    assert result.requests == len(batches) == chiller.traffic.requests["read-property-multiple"]
    assert max(chiller.traffic.response_sizes) <= 128
    # The greedy plan is minimal: no two neighbouring batches fit one answer.
    for left, right in itertools.pairwise(batches):
        assert len(plan_batches(left + right, 128)) == 2
    assert all(r.quality is Quality.GOOD for r in result.points.values())


async def test_device_max_apdu_is_respected_without_segmentation(driver: BacnetDriver) -> None:
    port = free_port(socket.SOCK_DGRAM)
    async with SimulatedDevice(CHILLER, port=port, max_apdu=206, segmentation=False) as sim:
        result = await driver.poll(make_device(port))
    assert result.error is None
    assert all(r.quality is Quality.GOOD for r in result.points.values())
    assert sim.traffic.aborted == 0
    assert max(sim.traffic.response_sizes) <= 206


async def test_too_long_answers_shrink_the_batches(chiller: SimulatedDevice, driver: BacnetDriver) -> None:
    device = make_device(chiller.port)
    await driver.poll(device)
    # The device claimed 1476 but cannot send more than 160 bytes in one answer, nor segment.
    chiller.max_apdu = 160
    chiller.segmentation = False
    chiller.traffic.reset()
    result = await driver.poll(device)
    assert all(r.quality is Quality.GOOD for r in result.points.values())
    assert chiller.traffic.aborted >= 1
    chiller.traffic.reset()
    again = await driver.poll(device)
    assert chiller.traffic.aborted == 0
    assert all(r.quality is Quality.GOOD for r in again.points.values())


async def test_status_flags_and_reliability_become_quality(
    chiller: SimulatedDevice, driver: BacnetDriver, caplog: pytest.LogCaptureFixture
) -> None:
    chiller.set_reliability("chw_flow", "open-loop")
    chiller.set_out_of_service("power")
    with caplog.at_level(logging.WARNING, logger="agent.drivers.bacnet"):
        result = await driver.poll(make_device(chiller.port))
    assert result.points["chw_flow"].quality is Quality.FAULT
    assert result.points["power"].quality is Quality.OUT_OF_SERVICE
    assert result.points["power"].value is None
    assert result.points["cw_flow"].quality is Quality.GOOD
    assert any("chw_flow" in r.getMessage() and "open-loop" in r.getMessage() for r in caplog.records)


async def test_unit_mismatch_is_logged_once_loudly(
    chiller: SimulatedDevice, driver: BacnetDriver, caplog: pytest.LogCaptureFixture
) -> None:
    chiller.set_units("chw_supply_temp", "degrees-fahrenheit")
    device = make_device(chiller.port)
    with caplog.at_level(logging.ERROR, logger="agent.drivers.bacnet"):
        await driver.poll(device)
        await driver.poll(device)
        await driver.poll(device)
    mismatches = [r for r in caplog.records if r.levelno >= logging.ERROR and "chw_supply_temp" in r.getMessage()]
    assert len(mismatches) == 1
    assert "degrees-fahrenheit" in mismatches[0].getMessage()
    assert "degC" in mismatches[0].getMessage()


async def test_silent_device_times_out_without_delaying_others(driver: BacnetDriver) -> None:
    dead_port, live_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    async with (
        SimulatedDevice(CHILLER, port=dead_port) as dead,
        SimulatedDevice(CRAH, port=live_port) as live,
    ):
        dead.faults.no_answer = True
        finished: list[str] = []
        dead_device = make_device(dead_port, timeout_s=0.5, retries=1)
        live_device = make_device(live_port, "crah-bacnet", live.instance)

        async def poll(device: Device) -> Any:
            result = await driver.poll(device)
            finished.append(device.id)
            return result

        dead_result, live_result = await asyncio.gather(poll(dead_device), poll(live_device))
    assert finished == [live_device.id, dead_device.id]
    assert dead_result.error is not None
    assert "no answer" in dead_result.error
    assert dead_result.requests == 2  # the first request and one retry, then nothing more
    assert {r.quality for r in dead_result.points.values()} == {Quality.TIMEOUT}
    assert all(r.value is None for r in dead_result.points.values())
    assert all(r.quality is Quality.GOOD for r in live_result.points.values())


async def test_error_answers_become_device_exceptions(chiller: SimulatedDevice, driver: BacnetDriver) -> None:
    device = make_device(chiller.port)
    await driver.poll(device)
    chiller.faults.error = ("device", "operational-problem")
    result = await driver.poll(device)
    assert {r.quality for r in result.points.values()} == {Quality.DEVICE_EXCEPTION}
    chiller.faults.error = None
    recovered = await driver.poll(device)
    assert all(r.quality is Quality.GOOD for r in recovered.points.values())


async def test_unknown_object_is_reported_per_point(driver: BacnetDriver) -> None:
    port = free_port(socket.SOCK_DGRAM)
    partial = CHILLER.model_copy(update={"points": [p for p in CHILLER.points if p.name != "cw_flow"]})
    async with SimulatedDevice(partial, port=port):
        result = await driver.poll(make_device(port))
    assert result.points["cw_flow"].quality is Quality.NO_SUCH_OBJECT
    assert result.points["chw_flow"].quality is Quality.GOOD


async def test_cov_points_follow_notifications_and_renew(chiller: SimulatedDevice) -> None:
    now = [1000.0]
    driver = BacnetDriver(clock=lambda: now[0])
    device = make_device(chiller.port, cov_lifetime_s=60)
    cov_objects = {p.object for p in CHILLER.points if p.cov}
    try:
        await driver.poll(device)
        await driver.poll(device)
        assert chiller.traffic.requests["subscribe-cov"] == len(cov_objects)
        chiller.set_value("alarm", True)
        chiller.traffic.reset()

        async def alarm_seen() -> bool:
            return (await driver.poll(device)).points["alarm"].value is True

        for _ in range(50):
            if await alarm_seen():
                break
        else:
            raise AssertionError("COV notification never reached the driver")
        # None of those polls read the COV objects.
        assert all(not cov_objects & set(objs) for objs in chiller.traffic.rpm_objects)
        # Half a lifetime later the subscriptions are renewed.
        now[0] += 29
        chiller.traffic.reset()
        await driver.poll(device)
        assert chiller.traffic.requests["subscribe-cov"] == 0
        now[0] += 2
        renewed = await driver.poll(device)
        assert chiller.traffic.requests["subscribe-cov"] == len(cov_objects)
        assert renewed.points["alarm"].value is True
    finally:
        chiller.traffic.reset()
        await driver.close()
    # Closing cancels the subscriptions.
    assert chiller.traffic.requests["subscribe-cov"] == len(cov_objects)


async def test_cov_refused_falls_back_to_polling(driver: BacnetDriver) -> None:
    port = free_port(socket.SOCK_DGRAM)
    async with SimulatedDevice(CHILLER, port=port, cov=False) as sim:
        device = make_device(port)
        for _ in range(3):
            result = await driver.poll(device)
        sim.set_value("alarm", True)
        alarm = (await driver.poll(device)).points["alarm"]
    assert sim.traffic.requests["subscribe-cov"] == 0
    assert {p.object for p in CHILLER.points if p.cov} <= set(sim.traffic.rpm_objects[-1])
    assert result.points["alarm"].value is False
    assert alarm.value is True
