"""The demo's parts: generated configurations, the commissioning log, the embedded broker, the MQTT view."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent import config as agent_config
from collector import config as collector_config
from models import telemetry
from simulators import demo_config as cfg
from simulators.demo import SCENARIO
from simulators.demo_view import Observed, ups_state
from simulators.physics import SitePhysics
from simulators.site import LoadedScenario


@pytest.fixture(scope="module")
def loaded() -> LoadedScenario:
    return cfg.demo_scenario(SCENARIO, set())


def test_scenario_on_free_ports(loaded: LoadedScenario) -> None:
    ports = [d.port for d in loaded.scenario.devices()]
    assert len(ports) == 16
    assert len(set(ports)) == len(ports)
    assert not any(17000 <= p < 17100 for p in ports)  # not the scenario file's fixed ports
    assert loaded.scenario.control.port == 0
    assert loaded.scenario.site.speed == cfg.SETUP_SPEED


def test_generated_configurations_are_valid(loaded: LoadedScenario, tmp_path: Path) -> None:
    physics = SitePhysics(loaded.scenario, loaded.models, base_dir=loaded.base_dir)
    agent = tmp_path / "agent.toml"
    agent.write_text(cfg.agent_toml(loaded, "mqtt://127.0.0.1:1883", tmp_path), encoding="utf-8")
    a = agent_config.load(agent)
    assert a.config.mqtt.protocol == "3.1.1"
    assert {d.id for d in a.devices} == {d.id for d in loaded.scenario.devices()}
    assert all(d.interval_s == cfg.POLL_INTERVAL_S for d in a.devices)
    for mode in (None, "advisory", "closed-loop"):
        path = tmp_path / f"collector-{mode}.toml"
        path.write_text(cfg.collector_toml(loaded, physics, "mqtt://127.0.0.1:1883", tmp_path, mode), encoding="utf-8")
        c = collector_config.load(path).config
        assert c.store.kind == "sqlite"
        assert c.pue is not None
        assert {m.role for m in c.pue.meters} == {"facility", "it_pdu_output", "cooling"}
        assert c.availability is not None
        assert {d.device for d in c.availability.devices} == {"ups-a", "ups-b"}
        weights = {load.id: load.weight for load in c.availability.loads}
        racks_kw = sum(r.kw * r.count * r.utilisation for r in loaded.scenario.racks)
        assert sum(weights.values()) == pytest.approx(racks_kw)
        assert c.contract is not None
        if mode is None:
            assert c.optimizer is None
        else:
            assert c.optimizer is not None
            assert c.optimizer.mode == mode
            assert c.optimizer.devices.agent == cfg.AGENT_ID


def test_commissioning_log_is_wire_format(loaded: LoadedScenario) -> None:
    batches = cfg.commissioning_history(loaded, end_ts=1_800_000_000.0, days=1)
    devices = {b.device for b in batches}
    assert devices == {"chiller-1", "chiller-2", "tower-1", "pump-chw-1", "pump-cw-1", "gw-1"} | {
        p.id for p in loaded.scenario.pdus
    }
    per_device = len(batches) // len(devices)
    assert per_device == int(cfg.DAY_S / cfg.HISTORY_STEP_S)
    stamps = sorted({b.ts for b in batches})
    assert stamps[-1] == 1_800_000_000.0
    assert np.allclose(np.diff(stamps), cfg.HISTORY_SPACING_S)
    for b in batches:
        assert b.agent == cfg.HISTORY_AGENT
        assert telemetry.decode_batch(telemetry.encode(b)) == b  # strict decode: units, names, types
    # The setpoints were varied, and the log ends back at the baseline.
    chw = [b.points["chw_supply_setpoint"].value for b in batches if b.device == "chiller-1"]
    assert len(set(chw)) > 5
    assert chw[-1] == loaded.scenario.plant.chw_supply_c
    assert all("energy" not in b.points for b in batches if b.device.startswith("pdu"))  # PUE stays untouched


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_embedded_broker_offers_only_a_clients_own_retained_messages() -> None:
    port = _free_port()
    broker = cfg.EmbeddedBroker(cfg.broker_config(port))
    await broker.start()
    got: dict[str, list[str]] = {"wide": [], "narrow": []}
    clients = []
    try:

        def client(name: str, filt: str) -> mqtt.Client:
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv311, clean_session=False)
            subscribed = threading.Event()
            c.on_connect = lambda cl, _u, _f, _rc, _p: cl.subscribe([(filt, 1)])
            c.on_subscribe = lambda *_a: subscribed.set()
            c.on_message = lambda _cl, _u, m: got[name].append(m.topic)
            c.connect("127.0.0.1", port)
            c.loop_start()
            clients.append(c)
            # The marker below only proves anything once this client's subscription is in place.
            assert subscribed.wait(10), f"{name}: no SUBACK"
            return c

        publisher = await asyncio.to_thread(client, "wide", "site/#")
        info = publisher.publish("site/analytics/pue", b"{}", qos=1, retain=True)
        await asyncio.to_thread(info.wait_for_publish, 10)
        for _ in range(100):
            if got["wide"]:
                break
            await asyncio.sleep(0.05)  # waiting for the broker to route the message
        assert got["wide"] == ["site/analytics/pue"]
        await asyncio.to_thread(client, "narrow", "site/agent/cmd/result")
        marker = publisher.publish("site/agent/cmd/result", b"done", qos=1)
        await asyncio.to_thread(marker.wait_for_publish, 10)
        for _ in range(100):
            if got["narrow"]:
                break
            await asyncio.sleep(0.05)  # waiting for the marker, sent after any retained message would be
        # Only its own subscription's message: not the retained result matching the other client's "site/#".
        assert got["narrow"] == ["site/agent/cmd/result"]
    finally:
        for c in clients:
            c.loop_stop()
            c.disconnect()
        await broker.shutdown()


T0 = 1_800_000_000.0


def _batch(device: str, kind: str, model: str, ts: float, **points: telemetry.Point) -> bytes:
    """A batch read at T0 + ts."""
    b = telemetry.Batch(
        site="demo", agent="demo-agent", device=device, model=model, kind=kind, seq=1, ts=T0 + ts, points=points
    )
    return telemetry.encode(b)


def test_observed_reads_what_the_system_publishes() -> None:
    o = Observed("demo")
    o.on_message(
        "dcim/v1/demo/demo-agent/meter-main/telemetry",
        _batch(
            "meter-main",
            "meter",
            "meter-sdm630",
            100.0,
            total_power=telemetry.Point(46_000.0, "W"),
            import_energy=telemetry.Point(1000.0, "kWh", counter=True),
        ),
    )
    o.on_message(
        "dcim/v1/demo/demo-agent/pdu-a1/telemetry",
        _batch("pdu-a1", "pdu", "pdu-apc-rpdu2", 100.0, power=telemetry.Point(36.8, "kW")),
    )
    assert o.live_pue(["pdu-a1"], ["meter-main"]) == pytest.approx(46.0 / 36.8)
    # A failed power read removes the value instead of keeping the last one.
    o.on_message(
        "dcim/v1/demo/demo-agent/pdu-a1/telemetry",
        _batch("pdu-a1", "pdu", "pdu-apc-rpdu2", 101.0, power=telemetry.Point(None, "kW", "timeout")),
    )
    assert o.live_pue(["pdu-a1"], ["meter-main"]) is None
    assert o.devices["pdu-a1"].good == 0
    # UPS state changes become events.
    for ts, source in ((1.0, "normal"), (2.0, "battery"), (3.0, "none")):
        o.on_message(
            "dcim/v1/demo/demo-agent/ups-a/telemetry",
            _batch("ups-a", "ups", "ups-rfc1628", ts, output_source=telemetry.Point(source, "")),
        )
    assert o.ups == {"ups-a": "none"}
    assert [text for _, _, text in o.events] == ["ups-a: output normal -> battery", "ups-a: output battery -> none"]
    o.on_message("dcim/v1/demo/analytics/availability", json.dumps({"remaining_budget": "4 min 20 s"}).encode())
    o.on_message("dcim/v1/demo/optimizer", json.dumps({"mode": "advisory"}).encode())
    result = telemetry.CommandResult(
        id="c1",
        device="chiller-1",
        point="chw_supply_setpoint",
        ok=True,
        outcome="written",
        before=10.0,
        after=11.0,
        ts=T0 + 5.0,
    )
    o.on_message("dcim/v1/demo/demo-agent/cmd/result", telemetry.encode(result))
    o.on_message("dcim/v1/demo/demo-agent/x/telemetry", b"not json")  # ignored, counted
    assert o.analytics["availability"]["remaining_budget"] == "4 min 20 s"
    assert o.optimizer == {"mode": "advisory"}
    assert o.commands == {"written": 1}
    assert o.messages == 10
    # History batches (the commissioning log) are not shown as live devices.
    o.on_message(
        "dcim/v1/demo/commissioning-log/tower-1/telemetry",
        telemetry.encode(
            telemetry.Batch(
                site="demo", agent=cfg.HISTORY_AGENT, device="tower-1", model="tower-modbus", kind="tower", seq=1, ts=T0
            )
        ),
    )
    assert "tower-1" not in o.devices


def test_counter_at_on_the_simulated_clock() -> None:
    o = Observed("demo")
    for wall, kwh in ((10.0, 100.0), (11.0, 110.0), (12.0, 130.0)):
        o.counters.setdefault("m:import_energy", []).append((wall, kwh))

    def clock(walls: np.ndarray) -> np.ndarray:  # 1000 simulated s per wall s, from wall 10 = sim 0
        return (walls - 10.0) * 1000.0

    assert o.counter_at("m:import_energy", 500.0, clock) == pytest.approx(105.0)
    assert o.counter_at("m:import_energy", 2000.0, clock) == pytest.approx(130.0)
    assert o.counter_at("m:import_energy", 4000.0, clock) is None  # well past the last read
    assert o.counter_at("other", 0.0, clock) is None


@pytest.mark.parametrize(
    ("points", "state"),
    [
        ({"output_source": telemetry.Point("battery", "")}, "battery"),
        ({"output_source": telemetry.Point(None, "", "timeout")}, None),
        ({"online": telemetry.Point(True, ""), "on_battery": telemetry.Point(False, "")}, "normal"),
        ({"online": telemetry.Point(False, ""), "on_battery": telemetry.Point(True, "")}, "battery"),
        ({"online": telemetry.Point(False, ""), "on_battery": telemetry.Point(False, "")}, "none"),
        ({"online": telemetry.Point(True, ""), "on_bypass": telemetry.Point(True, "")}, "bypass"),
        ({}, None),
    ],
)
def test_ups_state(points: dict[str, telemetry.Point], state: str | None) -> None:
    assert ups_state(points) == state
