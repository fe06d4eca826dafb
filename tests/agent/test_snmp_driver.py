"""The SNMP driver against our SNMP simulator over real UDP sockets on loopback."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from agent.drivers.snmp import SnmpDriver
from models import catalog
from models.quality import Quality
from models.schema import Column, DeviceModel, Point
from models.values import Reading
from simulators.snmp import SnmpSimulator, V3User
from tests.support.snmp import V3_AUTH_KEY, V3_PRIV_KEY, make_device, make_devices, v3_options

SNMP_MODELS = ["ups-rfc1628", "pdu-apc-rpdu2"]
TEST_USER = V3User("ops", "SHA-256", V3_AUTH_KEY, "AES", V3_PRIV_KEY)
TEST_USER_SHA1 = V3User("legacy", "SHA", V3_AUTH_KEY, "AES", V3_PRIV_KEY)


def _expected(sim: SnmpSimulator, spec: Point | Column, row: str = "") -> object:
    oid = spec.oid if not row else f"{spec.oid}.{row}"
    assert oid is not None
    entry = sim._entries[tuple(int(x) for x in oid.split("."))]
    return sim.value_of(entry)


def _same(spec: Point | Column, got: Reading, want: object) -> bool:
    if not got.quality.good:
        return False
    if isinstance(want, str) and spec.enum is None and spec.type is not None and spec.type.value != "string":
        return False
    if isinstance(want, int | float) and not isinstance(want, bool) and isinstance(got.value, int | float):
        return math.isclose(float(got.value), float(want), abs_tol=spec.scale / 2 + 1e-9)
    if spec.syntax is not None and spec.syntax.value == "ObjectIdentifier" and isinstance(want, str):
        return spec.enum is not None and got.value == spec.enum[int(want.rsplit(".", 1)[-1])]
    return got.value == want


def assert_round_trip(
    sim: SnmpSimulator,
    model: DeviceModel,
    result_points: dict[str, Reading],
    tables: dict[str, dict[str, dict[str, Reading]]],
) -> None:
    bad = []
    for point in model.points:
        want = _expected(sim, point)
        if not _same(point, result_points[point.name], want):
            bad.append((point.name, result_points[point.name], want))
    for table in model.tables:
        rows = sim._table_rows(table.name)
        assert sorted(tables.get(table.name, {})) == sorted(rows), table.name
        for row in rows:
            for col in table.columns:
                want = _expected(sim, col, row)
                got = tables[table.name][row][col.name]
                if not _same(col, got, want):
                    bad.append((f"{table.name}[{row}].{col.name}", got, want))
    assert not bad, bad


@pytest.mark.parametrize("model_id", SNMP_MODELS)
async def test_catalog_round_trips_over_v2c(tmp_path: Path, model_id: str) -> None:
    model = catalog.load(model_id)
    async with SnmpSimulator(model, speed=0.0, seed=3) as sim:
        device = make_device(tmp_path, model_id, sim.port, '{ version = "2c", community = "public" }')
        driver = SnmpDriver()
        try:
            result = await driver.poll(device)
        finally:
            await driver.close()
        assert result.error is None
        assert result.bad == 0
        assert_round_trip(sim, model, result.points, result.tables)


@pytest.mark.parametrize("model_id", SNMP_MODELS)
@pytest.mark.parametrize("user", [TEST_USER, TEST_USER_SHA1], ids=["sha256-aes", "sha1-aes"])
async def test_catalog_round_trips_over_v3_auth_priv(tmp_path: Path, model_id: str, user: V3User) -> None:
    model = catalog.load(model_id)
    async with SnmpSimulator(model, speed=0.0, v3_users=[user]) as sim:
        device = make_device(tmp_path, model_id, sim.port, v3_options(tmp_path, user.name, user.auth or ""))
        driver = SnmpDriver()
        try:
            result = await driver.poll(device)
        finally:
            await driver.close()
        assert result.error is None
        assert result.bad == 0
        assert_round_trip(sim, model, result.points, result.tables)
        assert sim.requests["GetRequestPDU"] >= 1


async def test_v3_wrong_key_is_a_failed_poll_not_values(tmp_path: Path) -> None:
    model = catalog.load("ups-rfc1628")
    async with SnmpSimulator(
        model, speed=0.0, v3_users=[V3User("ops", "SHA-256", "another-passphrase", "AES", "x" * 12)]
    ) as sim:
        device = make_device(tmp_path, "ups-rfc1628", sim.port, v3_options(tmp_path, "ops"))
        driver = SnmpDriver()
        try:
            result = await driver.poll(device)
        finally:
            await driver.close()
    assert result.error is not None
    assert result.good == 0
    assert {r.quality for r in result.points.values()} <= {Quality.COMM_ERROR, Quality.TIMEOUT}


async def test_v1_reads_scalars_and_walks_tables_with_getnext(tmp_path: Path) -> None:
    model = catalog.load("ups-rfc1628")
    async with SnmpSimulator(model, speed=0.0) as sim:
        device = make_device(tmp_path, "ups-rfc1628", sim.port, '{ version = "1", community = "public" }')
        driver = SnmpDriver()
        try:
            result = await driver.poll(device)
        finally:
            await driver.close()
        assert result.bad == 0
        assert_round_trip(sim, model, result.points, result.tables)
        assert sim.requests["GetNextRequestPDU"] > 0
        assert sim.requests["GetBulkRequestPDU"] == 0


async def test_pdu_poll_takes_the_minimum_number_of_requests(tmp_path: Path) -> None:
    model = catalog.load("pdu-apc-rpdu2")
    max_varbinds = 40
    async with SnmpSimulator(model, speed=0.0) as sim:
        device = make_device(
            tmp_path, "pdu-apc-rpdu2", sim.port, f'{{ version = "2c", max_varbinds = {max_varbinds} }}'
        )
        driver = SnmpDriver()
        try:
            first = await driver.poll(device)
            after_first = sim.total_requests
            second = await driver.poll(device)
            after_second = sim.total_requests
        finally:
            await driver.close()
    rows = {t.name: len(t.rows or []) for t in model.tables}
    assert rows["outlet"] == 24
    cells = sum(len(t.columns) * rows[t.name] for t in model.tables)
    # First poll: one GET for the scalars, then each table walked with GETBULK, every
    # column at once, max_varbinds // columns rows per request, one more to see the end.
    walks = sum(math.ceil((rows[t.name] + 1) / (max_varbinds // len(t.columns))) for t in model.tables)
    assert first.bad == 0
    assert first.requests == after_first == math.ceil(len(model.points) / max_varbinds) + walks
    # Steady state: rows are known, so every scalar and every cell goes in full GETs.
    assert second.bad == 0
    assert second.requests == after_second - after_first == math.ceil((len(model.points) + cells) / max_varbinds)
    assert second.requests == 4
    # One GET per OID, as naive pollers do, would take len(points) + cells requests.
    assert second.requests * 30 < len(model.points) + cells


async def test_large_max_varbinds_reads_the_whole_pdu_in_one_request(tmp_path: Path) -> None:
    model = catalog.load("pdu-apc-rpdu2")
    async with SnmpSimulator(model, speed=0.0) as sim:
        device = make_device(tmp_path, "pdu-apc-rpdu2", sim.port, '{ version = "2c", max_varbinds = 200 }')
        driver = SnmpDriver()
        try:
            await driver.poll(device)
            second = await driver.poll(device)
        finally:
            await driver.close()
    assert second.bad == 0
    assert second.requests == 1


async def test_too_big_answers_are_split_and_the_limit_is_learned(tmp_path: Path) -> None:
    model = catalog.load("pdu-apc-rpdu2")
    async with SnmpSimulator(model, speed=0.0) as sim:
        sim.faults.max_varbinds = 10
        device = make_device(tmp_path, "pdu-apc-rpdu2", sim.port, '{ version = "2c", max_varbinds = 40 }')
        driver = SnmpDriver()
        try:
            results = [await driver.poll(device) for _ in range(6)]
        finally:
            await driver.close()
        assert all(r.bad == 0 for r in results)
        cells = len(model.points) + sum(len(t.columns) * len(t.rows or []) for t in model.tables)
        # The request size settles on the agent's limit: the last polls are as few as it allows.
        assert results[-1].requests == results[-2].requests == math.ceil(cells / 10)
        assert_round_trip(sim, model, results[-1].points, results[-1].tables)


async def test_missing_objects_become_qualities_and_the_rest_is_read(tmp_path: Path) -> None:
    model = catalog.load("pdu-apc-rpdu2")
    missing_point = model.point("peak_power")
    outlet_power = next(c for t in model.tables if t.name == "outlet" for c in t.columns if c.name == "power")
    for version in ("2c", "1"):
        async with SnmpSimulator(model, speed=0.0) as sim:
            device = make_device(tmp_path, "pdu-apc-rpdu2", sim.port, f'{{ version = "{version}" }}')
            driver = SnmpDriver()
            try:
                await driver.poll(device)  # learn the rows
                sim.faults.missing = {missing_point.oid or "", f"{outlet_power.oid}.5"}
                result = await driver.poll(device)
            finally:
                await driver.close()
        want_point = Quality.NO_SUCH_OBJECT
        want_cell = Quality.NO_SUCH_INSTANCE if version == "2c" else Quality.NO_SUCH_OBJECT
        assert result.points["peak_power"].quality is want_point, version
        assert result.points["peak_power"].value is None
        assert result.tables["outlet"]["5"]["power"].quality is want_cell, version
        assert result.tables["outlet"]["5"]["energy"].quality is Quality.GOOD
        assert result.bad == 2, version


async def test_a_device_that_does_not_answer_times_out_once(tmp_path: Path) -> None:
    model = catalog.load("ups-rfc1628")
    async with SnmpSimulator(model, speed=0.0) as sim:
        sim.faults.drop = True
        device = make_device(tmp_path, "ups-rfc1628", sim.port, timeout_s=0.3)
        driver = SnmpDriver()
        try:
            result = await driver.poll(device)
        finally:
            await driver.close()
    assert result.error is not None
    assert result.good == 0
    assert {r.quality for r in result.points.values()} == {Quality.TIMEOUT}
    assert result.requests == 1  # the first silence ends the poll
    assert sim.dropped == 1


async def test_wrong_community_reads_nothing(tmp_path: Path) -> None:
    model = catalog.load("ups-rfc1628")
    async with SnmpSimulator(model, speed=0.0) as sim:
        sim.set_community("changed")
        device = make_device(tmp_path, "ups-rfc1628", sim.port, '{ community = "public" }', timeout_s=0.3)
        driver = SnmpDriver()
        try:
            result = await driver.poll(device)
        finally:
            await driver.close()
    assert result.good == 0
    assert {r.quality for r in result.points.values()} == {Quality.TIMEOUT}


async def test_slow_answers_within_the_timeout_are_read(tmp_path: Path) -> None:
    model = catalog.load("ups-rfc1628")
    async with SnmpSimulator(model, speed=0.0) as sim:
        sim.faults.delay_s = 0.2
        device = make_device(tmp_path, "ups-rfc1628", sim.port, timeout_s=3.0)
        driver = SnmpDriver()
        try:
            result = await driver.poll(device)
        finally:
            await driver.close()
    assert result.bad == 0


async def test_a_silent_device_does_not_delay_the_others(tmp_path: Path) -> None:
    model = catalog.load("ups-rfc1628")
    async with SnmpSimulator(model, speed=0.0) as silent, SnmpSimulator(model, speed=0.0) as healthy:
        silent.faults.drop = True
        devices = make_devices(
            tmp_path,
            ("silent", "ups-rfc1628", silent.port, ""),
            ("healthy", "ups-rfc1628", healthy.port, ""),
            timeout_s=2.0,
        )
        driver = SnmpDriver()
        finished: list[str] = []

        async def poll(index: int) -> None:
            result = await driver.poll(devices[index])
            finished.append(result.device)
            if result.device == "healthy":
                assert result.bad == 0
                assert "silent" not in finished

        try:
            await asyncio.gather(poll(0), poll(1))
        finally:
            await driver.close()
    assert finished == ["healthy", "silent"]


async def test_write_sets_a_writable_object_and_reads_it_back(tmp_path: Path) -> None:
    model = catalog.load("ups-rfc1628")
    async with SnmpSimulator(model, speed=0.0) as sim:
        device = make_device(tmp_path, "ups-rfc1628", sim.port)
        driver = SnmpDriver()
        try:
            result = await driver.write(device, model.point("config_low_batt_time"), 9)
            enum_result = await driver.write(device, model.point("config_audible"), "muted")
            refused = await driver.write(device, model.point("battery_charge"), 50)
            out_of_range = await driver.write(device, model.point("config_low_batt_time"), 99)
        finally:
            await driver.close()
    assert (result.ok, result.before, result.after) == (True, 5, 9)
    assert (enum_result.ok, enum_result.before, enum_result.after) == (True, "enabled", "muted")
    assert not refused.ok
    assert "notWritable" in refused.reason
    assert not out_of_range.ok
    assert "wrongValue" in out_of_range.reason
    assert sim.sets == [("1.3.6.1.2.1.33.1.9.7.0", 9), ("1.3.6.1.2.1.33.1.9.8.0", "muted")]


async def test_read_point(tmp_path: Path) -> None:
    model = catalog.load("ups-rfc1628")
    async with SnmpSimulator(model, speed=0.0) as sim:
        device = make_device(tmp_path, "ups-rfc1628", sim.port)
        driver = SnmpDriver()
        try:
            reading = await driver.read_point(device, model.point("model"))
        finally:
            await driver.close()
    assert reading == Reading("SIM-UPS 10kVA")
