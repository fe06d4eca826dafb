"""The optimiser job: store to plant samples, fallbacks, and closed-loop commands through a real agent."""

from __future__ import annotations

import dataclasses
import json
import time
from functools import cache
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from collector import optimizer_service as svc
from collector.analytics.plant_fit import PlantFit, fit_plant
from collector.config import CollectorConfig
from collector.store.sqlite import SqliteStore
from models import catalog, telemetry
from tests.agent.agent_helpers import Subscriber, base_sections, start_agent, start_simulator, write_config
from tests.collector.analytics.plant_data import NAMEPLATE
from tests.collector.analytics.plant_data import telemetry as plant_telemetry
from tests.support.servers import Mosquitto

SITE, AGENT = "bj-dx", "edge-01"
NS = 1_000_000_000


@cache
def fitted() -> PlantFit:
    return fit_plant(plant_telemetry(days=10, seed=21), NAMEPLATE)


def config(tmp_path: Path, mode: str = "closed-loop") -> CollectorConfig:
    return CollectorConfig.model_validate(
        {
            "collector": {"id": "c1", "site": SITE},
            "store": {"kind": "sqlite", "path": str(tmp_path / "store.sqlite")},
            "optimizer": {
                "mode": mode,
                "nameplate": {
                    "chillers": 5,
                    "duty_chillers": 4,
                    "chiller_capacity_kw": 3500.0,
                    "chw_design_flow_kg_s": 477.8,
                    "cw_design_flow_kg_s": 689.0,
                },
                "devices": {
                    "agent": AGENT,
                    "chillers": ["chiller-1"],
                    "towers": ["tower-1"],
                    "chw_pumps": ["pump-1"],
                    "cw_pumps": ["pump-2"],
                    "it_power": [{"measurement": "pdu", "device": "pdu-1", "field": "power"}],
                    "inlet_sensors": [{"device": "gw-1", "fields": ["sensor01_temperature", "sensor02_temperature"]}],
                },
                "baseline": {"chw_supply_c": 10.0, "cw_setpoint_c": 29.4, "chw_pump_pct": 80.0, "cw_pump_pct": 80.0},
            },
        }
    )


def batch(  # noqa: PLR0917
    device: str, kind: str, model: str, ts: float, points: dict[str, tuple[Any, str]], seq: int
) -> telemetry.Batch:
    return telemetry.Batch(
        site=SITE,
        agent=AGENT,
        device=device,
        model=model,
        kind=kind,
        seq=seq,
        ts=ts,
        points={k: telemetry.Point(value=v, unit=u) for k, (v, u) in points.items()},
    )


def plant_batches(
    ts: float, seq: int, *, setpoints: tuple[float, float, float, float], inlet: float = 24.0, economiser: bool = False
) -> list[telemetry.Batch]:
    """One poll of a small plant: one chiller, one tower, a pump per loop, an IT meter and an inlet gateway."""
    chw_sp, cw_sp, chw_pct, cw_pct = setpoints
    tower_leaving = 24.0
    return [
        batch(
            "chiller-1",
            "chiller",
            "chiller-bacnet",
            ts,
            {
                "chw_supply_temp": (chw_sp, "degC"),
                "chw_return_temp": (chw_sp + 6.0, "degC"),
                "cw_supply_temp": (tower_leaving + (2.0 if economiser else 0.0), "degC"),
                "power": (1500.0, "kW"),
                "running": (True, ""),
                "chw_supply_setpoint": (chw_sp, "degC"),
            },
            seq,
        ),
        batch(
            "tower-1",
            "tower",
            "tower-modbus",
            ts,
            {
                "wet_bulb_temperature": (18.0, "degC"),
                "leaving_water_temperature": (tower_leaving, "degC"),
                "entering_water_temperature": (29.0, "degC"),
                "fan_power": (100.0, "kW"),
                "fan_speed": (80.0, "%"),
                "leaving_water_setpoint": (cw_sp, "degC"),
            },
            seq,
        ),
        batch(
            "pump-1",
            "pump",
            "pump-modbus",
            ts,
            {
                "flow": (477.8 * 3.6 * chw_pct / 100.0, "m3/h"),
                "power": (100.0, "kW"),
                "speed_setpoint": (chw_pct, "%"),
            },
            seq,
        ),
        batch(
            "pump-2",
            "pump",
            "pump-modbus",
            ts,
            {
                "flow": (689.0 * 3.6 * cw_pct / 100.0, "m3/h"),
                "power": (150.0, "kW"),
                "speed_setpoint": (cw_pct, "%"),
            },
            seq,
        ),
        batch("pdu-1", "pdu", "pdu-apc-rpdu2", ts, {"power": (11_000.0, "kW")}, seq),
        batch(
            "gw-1",
            "gateway",
            "gateway-nbiot",
            ts,
            {
                "sensor01_temperature": (inlet - 1.0, "degC"),
                "sensor02_temperature": (inlet, "degC"),
            },
            seq,
        ),
    ]


def open_store(tmp_path: Path) -> SqliteStore:
    store = SqliteStore(tmp_path / "store.sqlite")
    store.open()
    return store


def test_gather_turns_device_series_into_plant_samples(tmp_path: Path) -> None:
    cfg = config(tmp_path, "advisory")
    assert cfg.optimizer is not None
    store = open_store(tmp_path)
    try:
        t0 = 1_750_000_000.0
        store.write_batches(plant_batches(t0 + 10, 1, setpoints=(12.0, 25.0, 60.0, 70.0), inlet=25.0))
        store.write_batches(plant_batches(t0 + 310, 2, setpoints=(12.0, 25.0, 60.0, 70.0), economiser=True))
        samples = svc.gather(store, cfg.optimizer, int(t0 * NS), int((t0 + 600) * NS))
    finally:
        store.close()
    assert len(samples) == 2
    assert samples["it_kw"].tolist() == pytest.approx([11_000.0, 11_000.0])
    assert samples["chw_flow_ratio"].tolist() == pytest.approx([0.6, 0.6])
    assert samples["cw_flow_ratio"].tolist() == pytest.approx([0.7, 0.7])
    assert samples["tower_fan_speed"].tolist() == pytest.approx([0.8, 0.8])
    assert samples["it_inlet_c"].tolist() == pytest.approx([25.0, 24.0])
    assert samples["economiser_on"].tolist() == [0.0, 1.0]
    assert samples["chillers_running"].tolist() == [1.0, 1.0]


def test_stale_data_and_an_unusable_fit_fall_back_to_the_baseline(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    store = open_store(tmp_path)
    sent: list[tuple[str, bytes]] = []
    now = time.time_ns()
    try:
        # The last plant data is two hours old.
        store.write_batches(plant_batches(now / NS - 7200, 1, setpoints=(14.0, 22.0, 60.0, 60.0)))
        service = svc.OptimizerService(
            cfg, store, publish=lambda t, p, *, retain: sent.append((t, p)) if retain is not None else None
        )
        service.fit = dataclasses.replace(fitted(), fitted_at_ns=now)
        decision = service.decide(now)
        # With a fit refitted on what the store holds (one old sample) it falls back too.
        service.fit = None
        sparse = service.decide(now)
    finally:
        store.close()
    assert decision.fallback
    assert any("stale" in r for r in decision.reasons)
    assert sparse.fallback
    assert any("usable samples, fewer than needed" in r for r in sparse.reasons)
    published = [json.loads(p) for t, p in sent if t == f"dcim/v1/{SITE}/optimizer"]
    assert published[-1]["fallback"] is True
    # The setpoints are unknown (stale), so it steps from the baseline itself: nothing moves.
    assert decision.commanded == svc.baseline_of(cfg.optimizer)  # type: ignore[arg-type]


def test_inlet_near_the_limit_falls_back_and_steps_towards_the_baseline(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    store = open_store(tmp_path)
    sent: list[telemetry.Command] = []
    now = time.time_ns()

    def publish(topic: str, payload: bytes, *, retain: bool) -> None:
        if topic.endswith("/cmd"):
            sent.append(telemetry.decode_as(telemetry.Command, payload))

    try:
        store.write_batches(plant_batches(now / NS - 60, 1, setpoints=(14.0, 22.0, 50.0, 60.0), inlet=26.9))
        service = svc.OptimizerService(cfg, store, publish=publish)
        service.fit = dataclasses.replace(fitted(), fitted_at_ns=now)
        decision = service.decide(now)
    finally:
        store.close()
    assert decision.fallback
    assert any("IT inlet 26.90" in r for r in decision.reasons)
    assert decision.commanded is not None
    assert decision.commanded.chw_supply_c == pytest.approx(13.0)  # one rate-limited step down towards 10
    assert decision.commanded.chw_pump_pct == pytest.approx(60.0)  # and the pumps speed up
    by_point = {(c.device, c.point): c.value for c in sent}
    assert by_point[("chiller-1", "chw_supply_setpoint")] == pytest.approx(13.0)
    assert by_point[("pump-1", "speed_setpoint")] == pytest.approx(60.0)
    assert all(c.by == "optimizer" and c.expires > now / NS for c in sent)


def test_advisory_mode_publishes_a_recommendation_and_sends_no_command(tmp_path: Path) -> None:
    cfg = config(tmp_path, "advisory")
    store = open_store(tmp_path)
    sent: list[tuple[str, bytes, bool]] = []
    now = time.time_ns()
    try:
        store.write_batches(plant_batches(now / NS - 60, 1, setpoints=(10.0, 29.4, 80.0, 80.0)))
        service = svc.OptimizerService(cfg, store, publish=lambda t, p, *, retain: sent.append((t, p, retain)))
        service.fit = dataclasses.replace(fitted(), fitted_at_ns=now)
        decision = service.decide(now)
        _, stored = store.read_series(
            "optimizer", None, "predicted_saving_kw", now - NS, now + NS, tags={"site": SITE, "mode": "advisory"}
        )
    finally:
        store.close()
    assert not decision.fallback, decision.reasons
    assert [t for t, _, _ in sent] == [f"dcim/v1/{SITE}/optimizer"]
    _, payload, retain = sent[0]
    assert retain
    data = json.loads(payload)
    assert data["recommendation"]["ok"] is True
    assert data["recommendation"]["predicted_saving_kw"] > 0
    assert stored.tolist() == pytest.approx([data["recommendation"]["predicted_saving_kw"]], abs=0.1)


class _Publisher:
    def __init__(self, broker: Mosquitto) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="optimizer-test", protocol=mqtt.MQTTv311)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def __call__(self, topic: str, payload: bytes, *, retain: bool) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=30)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.servers
def test_closed_loop_commands_go_through_a_real_agent_within_limits(mosquitto: Mosquitto, tmp_path: Path) -> None:
    cfg = config(tmp_path)
    store = open_store(tmp_path)
    results = Subscriber(mosquitto.host, mosquitto.port).start()
    sims = [
        start_simulator("pump-modbus"),
        start_simulator("pump-modbus", seed=2),
        start_simulator("tower-modbus"),
        start_simulator("chiller-bacnet", udp=True),
    ]
    pump1, pump2, tower, chiller = sims
    publisher = _Publisher(mosquitto)
    agent = None
    try:
        devices: list[dict[str, object]] = [
            {"id": "pump-1", "model": "pump-modbus", "port": pump1.port, "interval_s": 1.0},
            {"id": "pump-2", "model": "pump-modbus", "port": pump2.port, "interval_s": 1.0},
            {"id": "tower-1", "model": "tower-modbus", "port": tower.port, "interval_s": 1.0},
            {
                "id": "chiller-1",
                "model": "chiller-bacnet",
                "port": chiller.port,
                "interval_s": 1.0,
                "bacnet": {"device_instance": 1001},
            },
        ]
        agent_cfg = write_config(tmp_path / "agent.toml", base_sections(tmp_path, mosquitto.url), devices)
        agent = start_agent(agent_cfg, tmp_path / "agent.log")
        # The agent is connected (and subscribed to its commands) once every device's telemetry arrives.
        results.wait_for(
            lambda _m: all(results.batches(d["id"]) for d in devices),  # type: ignore[arg-type]
            timeout_s=60,
            what="telemetry of every device",
        )
        now = time.time_ns()
        # The plant as the devices hold it now: the simulators' setpoints.
        store.write_batches(plant_batches(now / NS - 30, 1, setpoints=(7.0, 29.5, 78.0, 78.0)))
        service = svc.OptimizerService(cfg, store, publish=publisher)
        service.fit = dataclasses.replace(fitted(), fitted_at_ns=now)
        first = service.decide(now)
        sent_ids = {c.id for c in first.commands}

        result_topic = telemetry.command_result_topic(SITE, AGENT)

        def answers() -> list[Any]:
            return [m for m in results.received if m.topic == result_topic]

        def answered(_m: object) -> bool:
            return sent_ids <= {telemetry.decode_as(telemetry.CommandResult, m.payload).id for m in answers()}

        results.wait_for(answered, timeout_s=60, what="answers to every command")
        for m in answers():
            service.on_message(m.topic, m.payload)
        assert agent.terminate() == 0, agent.output()
    finally:
        if agent is not None:
            agent.kill()
        publisher.close()
        results.stop()
        for sim in sims:
            sim.stop()
        store.close()
    assert not first.fallback, first.reasons
    assert first.recommendation is not None
    assert first.recommendation.setpoints is not None
    # Every setpoint moved by one rate-limited step towards the recommendation.
    assert {(c.device, c.point) for c in first.commands} == {
        ("chiller-1", "chw_supply_setpoint"),
        ("tower-1", "leaving_water_setpoint"),
        ("pump-1", "speed_setpoint"),
        ("pump-2", "speed_setpoint"),
    }
    assert service.outcomes.answers == {"written": 4}, service.outcomes.to_json()
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert {r["id"] for r in audit} == sent_ids
    limits = {
        (d, p): catalog.load(m).point(p).writable
        for d, m, p in (
            ("chiller-1", "chiller-bacnet", "chw_supply_setpoint"),
            ("tower-1", "tower-modbus", "leaving_water_setpoint"),
            ("pump-1", "pump-modbus", "speed_setpoint"),
            ("pump-2", "pump-modbus", "speed_setpoint"),
        )
    }
    for record in audit:
        w = limits[(record["device"], record["point"])]
        assert w is not None
        assert record["ok"]
        assert record["outcome"] == "written"
        assert record["by"] == "optimizer"
        assert w.min <= record["value"] <= w.max
        assert w.max_step is not None
        assert abs(record["value"] - record["before"]) <= w.max_step + 1e-6
        assert record["after"] == pytest.approx(record["value"], abs=0.06)


def test_tower_cell_staging_reaches_the_fitting_nameplate(tmp_path: Path) -> None:
    data = config(tmp_path).model_dump()
    data["optimizer"]["nameplate"] |= {"tower_cells": 8, "tower_cell_min_flow_kg_s": 60.0}
    section = CollectorConfig.model_validate(data).optimizer
    assert section is not None
    plate = svc.nameplate_of(section)
    assert (plate.tower_cells, plate.tower_cell_min_flow_kg_s) == (8, 60.0)
    assert plate.knows_tower_cells
    # Without them the towers are fitted as one; one without the other is refused, by name.
    base = config(tmp_path).optimizer
    assert base is not None
    assert not svc.nameplate_of(base).knows_tower_cells
    data["optimizer"]["nameplate"]["tower_cell_min_flow_kg_s"] = 0.0
    with pytest.raises(ValueError, match="tower_cells and tower_cell_min_flow_kg_s go together"):
        CollectorConfig.model_validate(data)
