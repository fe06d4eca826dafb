"""The site's control API over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.drivers import driver_class
from models.schema import Protocol
from simulators.physics import AcceleratedClock, ManualClock
from simulators.site import Site
from tests.simulators.site_helpers import agent_devices, load_demo


class Api:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def _call(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base + path, data=data, method=method)  # noqa: S310  (loopback http)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    async def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
        # urllib blocks: run it in a thread so the site's loop keeps answering.
        return await asyncio.to_thread(self._call, method, path, body, raw)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    s = Site(load_demo(tmp_path), ManualClock())  # devices not bound: the API alone is under test
    await s.start_control(port=0)
    try:
        yield s
    finally:
        await s.stop()


def api_of(site: Site) -> Api:
    assert site.control is not None
    return Api(site.control.port)


async def test_state_devices_and_index(site: Site) -> None:
    api = api_of(site)
    status, index = await api.call("GET", "/")
    assert status == 200
    assert {(e["method"], e["path"]) for e in index["endpoints"]} >= {("GET", "/state"), ("POST", "/events")}
    assert isinstance(site.clock, ManualClock)
    site.clock.advance(3600)
    site.tick()
    status, state = await api.call("GET", "/state")
    assert status == 200
    assert state["site"] == "demo"
    assert state["time"]["sim_s"] == pytest.approx(3600)
    assert state["time"]["iso"].startswith("2025-07-14T01:00:00")
    assert state["it_kw"] > 30
    assert state["facility_kw"] == pytest.approx(
        state["it_kw"] + state["plant_kw"] + state["ups_loss_kw"] + state["air_handler_kw"] + state["other_kw"],
        abs=0.01,
    )
    assert state["pue"] == pytest.approx(state["facility_kw"] / state["it_kw"], rel=1e-3)
    assert state["setpoints"]["chillers"]["chiller-1"]["chw_supply_c"] == 10.0
    assert state["upses"]["ups-a"]["source"] == "normal"
    status, devices = await api.call("GET", "/devices")
    assert status == 200
    assert {d["id"]: d["protocol"] for d in devices["devices"]}["chiller-1"] == "bacnet"
    assert len(devices["devices"]) == 16


async def test_events_start_and_end_through_the_api(site: Site) -> None:
    api = api_of(site)
    status, created = await api.call("POST", "/events", {"kind": "mains_failure", "target": "utility"})
    assert status == 201
    event = created["event"]
    assert event["state"] == "active"
    _, state = await api.call("GET", "/state")
    assert state["upses"]["ups-a"]["source"] == "battery"
    assert state["feeds"]["utility"]["mains"] is False
    status, created = await api.call(
        "POST", "/events", {"kind": "pdu_breaker_trip", "target": "pdu-a2", "duration_s": 600}
    )
    assert status == 201
    _, state = await api.call("GET", "/state")
    assert state["pdus"]["pdu-a2"]["tripped"] is True
    assert "A08" in state["racks"]["down"]
    status, ended = await api.call("DELETE", f"/events/{event['id']}")
    assert status == 200
    assert ended["event"]["state"] == "ended"
    _, state = await api.call("GET", "/state")
    assert state["upses"]["ups-a"]["source"] == "normal"
    status, scheduled = await api.call(
        "POST", "/events", {"kind": "chiller_trip", "target": "chiller-1", "at_s": 7200, "duration_s": 60}
    )
    assert status == 201
    assert scheduled["event"]["state"] == "scheduled"
    _, events = await api.call("GET", "/events")
    assert [e["state"] for e in events["events"]] == ["ended", "active", "scheduled"]
    assert isinstance(site.clock, ManualClock)
    site.clock.advance(7230)
    site.tick()
    _, state = await api.call("GET", "/state")
    assert state["chillers"]["chiller-1"]["tripped"] is True
    assert state["pdus"]["pdu-a2"]["tripped"] is False  # its 600 s are over


async def test_bad_requests_get_clear_errors(site: Site) -> None:
    api = api_of(site)
    cases: list[tuple[str, str, Any, int, str]] = [
        ("POST", "/events", {"kind": "meteor_strike"}, 400, "unknown event kind"),
        ("POST", "/events", {"kind": "chiller_trip", "target": "chiller-9"}, 400, "no chiller 'chiller-9'"),
        ("POST", "/events", {"kind": "chiller_trip"}, 400, "needs a target"),
        ("POST", "/events", {"kind": "device_slow", "target": "gw-1", "delay_s": "x"}, 400, "finite number"),
        ("POST", "/events", {"kind": "mains_failure", "colour": "red"}, 400, "unknown keys: colour"),
        ("POST", "/events", [1, 2], 400, "JSON object"),
        ("DELETE", "/events/42", None, 404, "no event 42"),
        ("GET", "/nowhere", None, 404, "no endpoint"),
        ("PUT", "/state", None, 405, "not allowed"),
        ("POST", "/clock", {"speed": 10}, 400, "manual clock"),
    ]
    for method, path, body, code, message in cases:
        status, answer = await api.call(method, path, body)
        assert status == code, (method, path, answer)
        assert message in answer["error"], (method, path, answer)
    status, answer = await api.call("POST", "/events", raw=b"{not json")
    assert status == 400
    assert "not JSON" in answer["error"]


async def test_garbage_on_the_socket_is_answered_and_the_api_keeps_serving(site: Site) -> None:
    assert site.control is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", site.control.port)
    writer.write(b"HELLO\r\n\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400")
    status, _ = await api_of(site).call("GET", "/state")
    assert status == 200


async def test_clock_speed_changes_on_an_accelerated_site(tmp_path: Path) -> None:
    s = Site(load_demo(tmp_path), AcceleratedClock(60.0))
    await s.start_control(port=0)
    try:
        api = api_of(s)
        status, answer = await api.call("POST", "/clock", {"speed": 3600})
        assert status == 200
        assert answer["speed"] == 3600.0
        _, state = await api.call("GET", "/state")
        assert state["time"]["speed"] == 3600.0
        status, answer = await api.call("POST", "/clock", {"speed": 7200})
        assert status == 400
        assert "outside 1 to 3600" in answer["error"]
    finally:
        await s.stop()


async def test_an_api_event_reaches_the_devices(tmp_path: Path) -> None:
    loaded = load_demo(tmp_path)
    s = Site(loaded, ManualClock())
    await s.start()
    await s.start_control(port=0)
    snmp = driver_class(Protocol.SNMP)()
    try:
        devices = agent_devices(loaded, tmp_path, timeout_s=1.0, retries=0)
        before = await snmp.poll(devices["ups-a"])
        assert before.points["output_source"].value == "normal"
        status, _ = await api_of(s).call("POST", "/events", {"kind": "ups_bypass", "target": "ups-a"})
        assert status == 201
        after = await snmp.poll(devices["ups-a"])
        assert after.points["output_source"].value == "bypass"
        assert "onBypass" in {row["descr"].value for row in after.tables["alarms"].values()}
    finally:
        await snmp.close()
        await s.stop()


def test_the_control_api_binds_loopback_only() -> None:
    from simulators.control import ControlServer  # noqa: PLC0415

    with pytest.raises(ValueError, match="loopback only"):
        ControlServer(site=None, host=socket.gethostname() + ".invalid")  # type: ignore[arg-type]
