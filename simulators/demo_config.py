"""What the demo generates: the site on free ports, agent and collector configurations, the plant's history, a broker.

Nothing here starts a process or talks to one: these are the inputs
:mod:`simulators.demo` hands to the agent, the collector and the broker.
"""

from __future__ import annotations

import json
import math
import random
import socket
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

from amqtt.broker import Broker
from amqtt.plugins.base import BaseAuthPlugin

from models import telemetry
from models.schema import DeviceModel, Protocol
from simulators.physics import ManualClock, SitePhysics
from simulators.site import BACNET_VALUES, MODBUS_VALUES, LoadedScenario, Site, agent_config_for, load_scenario

DAY_S: Final = 86_400.0
SETUP_SPEED: Final = 1.0  # simulated time barely moves while the processes start
SITE_TICK_S: Final = 0.25
POLL_INTERVAL_S: Final = 1.0
POLL_TIMEOUT_S: Final = 0.8
AGENT_ID: Final = "demo-agent"
COLLECTOR_ID: Final = "demo-collector"
HISTORY_AGENT: Final = "commissioning-log"
HISTORY_DAYS: Final = 15
HISTORY_STEP_S: Final = 1800.0  # simulated seconds per commissioning sample: the plant settles within it
HISTORY_HOLD: Final = 1  # samples each operating point is held
HISTORY_BASELINE_TAIL: Final = 4  # the log ends with two hours back at the baseline setpoints
HISTORY_SPACING_S: Final = 10.0  # wall seconds between replayed samples (= the optimiser's sample_s)
OPTIMIZER_INTERVAL_S: Final = 10.0  # the shortest decision interval the optimiser accepts
TARIFF: Final = 0.60
CURRENCY: Final = "CNY"


class PortError(RuntimeError):
    """No free loopback port could be found."""


# ---------------------------------------------------------------- ports and the scenario


def free_port(kind: int, taken: set[tuple[int, int]]) -> int:
    """A loopback port nobody listens on now (TCP or UDP), not handed out before in this run."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if (kind, port) not in taken:
            taken.add((kind, port))
            return port
    raise PortError("no free loopback port found")


def demo_scenario(path: Path, taken: set[tuple[int, int]]) -> LoadedScenario:
    """The scenario with every device on a free loopback port, a free control port and the setup speed.

    Free ports let the demo run beside anything else on the machine (and beside
    a test run); the physics is the scenario's own.
    """
    loaded = load_scenario(path)
    sc = loaded.scenario
    updates: dict[str, Any] = {}
    for name, devices in sc.sections():
        moved = []
        for dev in devices:
            kind = socket.SOCK_STREAM if loaded.models[dev.id].protocol is Protocol.MODBUS else socket.SOCK_DGRAM
            moved.append(dev.model_copy(update={"port": free_port(kind, taken)}))
        updates[name] = moved
    updates["site"] = sc.site.model_copy(update={"speed": SETUP_SPEED, "tick_s": SITE_TICK_S, "host": "127.0.0.1"})
    updates["control"] = sc.control.model_copy(update={"host": "127.0.0.1", "port": 0})
    return LoadedScenario(path=loaded.path, scenario=sc.model_copy(update=updates), models=loaded.models)


def device_ids(loaded: LoadedScenario, role: str) -> list[str]:
    """Ids of the site's devices in a role (meter, ups, pdu, chiller, tower, pump, crah, gateway)."""
    return [d.id for d in loaded.scenario.devices() if d.role == role]


def it_capacity_kw(loaded: LoadedScenario) -> float:
    """The racks' design IT capacity, kW (the contract's capacity)."""
    return float(sum(r.kw * r.count for r in loaded.scenario.racks))


# ---------------------------------------------------------------- configurations


def _q(value: str) -> str:
    return json.dumps(value)


def agent_toml(loaded: LoadedScenario, mqtt_url: str, out: Path) -> str:
    """The agent's configuration: every device every second, over MQTT 3.1.1 (what the embedded broker speaks)."""
    text = agent_config_for(
        loaded,
        mqtt_url,
        agent_id=AGENT_ID,
        interval_s=POLL_INTERVAL_S,
        timeout_s=POLL_TIMEOUT_S,
        retries=0,
        spool_path=str(out / "agent-spool.sqlite"),
        audit_log=str(out / "agent-audit.jsonl"),
    )
    return text.replace("[mqtt]\n", '[mqtt]\nprotocol = "3.1.1"\n', 1)


def _availability_toml(loaded: LoadedScenario) -> list[str]:
    """UPSes as status devices; racks grouped into loads by the UPSes that feed them, weighted by their kW."""
    sc = loaded.scenario
    lines = ["[availability]", "max_gap_s = 10.0", ""]
    for ups in sc.upses:
        kind = "ups" if loaded.models[ups.id].protocol is Protocol.SNMP else "ups-flags"
        lines += ["[[availability.devices]]", f"device = {_q(ups.id)}", f"type = {_q(kind)}", ""]
    pdu_ups = {p.id: p.ups for p in sc.pdus}
    loads: dict[tuple[str, ...], float] = {}
    for rack in sc.racks:
        feeds = tuple(pdu_ups[p] for p in rack.pdus)
        loads[feeds] = loads.get(feeds, 0.0) + rack.kw * rack.count * rack.utilisation
    for feeds, kw in sorted(loads.items(), key=lambda kv: -kv[1]):
        name = "racks-" + "-".join(feeds) + ("" if len(feeds) > 1 else "-only")
        lines += ["[[availability.loads]]", f"id = {_q(name)}", f"weight = {kw:.2f}"]
        if len(feeds) >= 2:
            lines += [f"feed_a = {json.dumps([feeds[0]])}", f"feed_b = {json.dumps([feeds[1]])}"]
        else:
            lines.append(f"path = {json.dumps([feeds[0]])}")
        lines.append("")
    return lines


def _optimizer_toml(loaded: LoadedScenario, physics: SitePhysics, mode: str) -> list[str]:
    """[optimizer] for the site's plant, sampling as fast as the demo's compressed time needs."""
    sc = loaded.scenario
    pl = sc.plant
    params = physics.params
    sensors: dict[str, list[str]] = {g.id: [] for g in sc.gateways}
    for rack in sc.racks:
        if rack.sensor:
            gateway, _, n = rack.sensor.partition(":")
            sensors[gateway].append(f"sensor{int(n):02d}_temperature")
    it_power = ", ".join(f'{{ measurement = "pdu", device = {_q(p.id)}, field = "power" }}' for p in sc.pdus)
    inlets = ", ".join(
        f'{{ measurement = "gateway", device = {_q(g)}, fields = {json.dumps(sorted(f))} }}'
        for g, f in sensors.items()
        if f
    )
    return [
        "[optimizer]",
        f"mode = {_q(mode)}",
        f"interval_s = {OPTIMIZER_INTERVAL_S}",
        "refit_interval_s = 60.0",
        "history_days = 0.5",
        f"sample_s = {HISTORY_SPACING_S}",
        "max_data_age_s = 30.0",
        "min_samples = 200",
        "command_ttl_s = 30.0",
        "",
        "[optimizer.nameplate]",
        f"chillers = {len(sc.chillers)}",
        f"duty_chillers = {params.chiller.duty_count}",
        f"chiller_capacity_kw = {params.chiller.capacity_ref_kw:.3f}",
        f"chw_design_flow_kg_s = {params.chw_pump.design_flow_kg_s:.5f}",
        f"cw_design_flow_kg_s = {params.cw_pump.design_flow_kg_s:.5f}",
        "",
        "[optimizer.devices]",
        f"agent = {_q(AGENT_ID)}",
        f"chillers = {json.dumps(device_ids(loaded, 'chiller'))}",
        f"towers = {json.dumps(device_ids(loaded, 'tower'))}",
        f"chw_pumps = {json.dumps([p.id for p in sc.pumps if p.loop == 'chw'])}",
        f"cw_pumps = {json.dumps([p.id for p in sc.pumps if p.loop == 'cw'])}",
        f"it_power = [{it_power}]",
        f"inlet_sensors = [{inlets}]",
        "",
        "[optimizer.baseline]",
        f"chw_supply_c = {pl.chw_supply_c}",
        f"cw_setpoint_c = {pl.cw_setpoint_c}",
        f"chw_pump_pct = {pl.chw_pump_speed_pct}",
        f"cw_pump_pct = {pl.cw_pump_speed_pct}",
        "",
    ]


def collector_toml(
    loaded: LoadedScenario, physics: SitePhysics, mqtt_url: str, out: Path, optimizer: str | None
) -> str:
    """The collector's configuration: SQLite store in ``out``, PUE, availability, contract, fast jobs, optimiser."""
    sc = loaded.scenario
    lines = [
        f"# Collector configuration written by dcim-sim demo for site {sc.site.id}.",
        "[collector]",
        f"id = {_q(COLLECTOR_ID)}",
        f"site = {_q(sc.site.id)}",
        'timezone = "UTC"',
        "",
        "[mqtt]",
        f"url = {_q(mqtt_url)}",
        'protocol = "3.1.1"',
        "",
        "[store]",
        'kind = "sqlite"',
        f"path = {_q(str(out / 'store.sqlite'))}",
        "",
        "[ingest]",
        "metrics_interval_s = 5.0",
        "",
        "[jobs]",
        "live_interval_s = 5.0",
        "availability_interval_s = 10.0",
        "burn_rate_interval_s = 5.0",
        "",
        "[pue]",
    ]
    for meter in sc.meters:
        role = "facility" if meter.measures == "feed" else "cooling"
        lines += ["[[pue.meters]]", f"device = {_q(meter.id)}", f"role = {_q(role)}", 'live_point = "total_power"', ""]
    for pdu in sc.pdus:
        lines += [
            "[[pue.meters]]",
            f"device = {_q(pdu.id)}",
            'role = "it_pdu_output"',
            'measurement = "pdu"',
            'point = "energy"',
            'live_point = "power"',
            "",
        ]
    lines += _availability_toml(loaded)
    lines += [
        "[contract]",
        f"tariff = {TARIFF}",
        f"currency = {_q(CURRENCY)}",
        f"capacity_kw = {it_capacity_kw(loaded):.1f}",
        "",
    ]
    if optimizer is not None:
        lines += _optimizer_toml(loaded, physics, optimizer)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the plant's commissioning log


def _scalar(value: Any) -> telemetry.Scalar | None:
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int | float) and math.isfinite(float(value)):
        return float(value)
    return None


def history_batch(
    site: str, device: str, model: DeviceModel, *, seq: int, ts: float, values: dict[str, Any]
) -> telemetry.Batch:
    """A wire-format batch of the model's points among ``values`` (in the model's units)."""
    by_name = {p.name: p for p in model.points}
    points = {}
    for name, raw in values.items():
        point = by_name.get(name)
        value = _scalar(raw)
        if point is not None and value is not None:
            points[name] = telemetry.Point(value, point.unit, counter=point.counter)
    return telemetry.Batch(
        site=site, agent=HISTORY_AGENT, device=device, model=model.id, kind=model.kind, seq=seq, ts=ts, points=points
    )


def _device_values(site: Site, adapter: Any) -> dict[str, Any]:
    """What a plant device, PDU or gateway of the site shows now (setpoints included)."""
    phys = site.physics
    role = adapter.section.role
    if role == "chiller":
        chiller = next(c for c in phys.chillers if c.id == adapter.id)
        return {**BACNET_VALUES[role](adapter), "chw_supply_setpoint": chiller.setpoint_c}
    if role == "tower":
        tower = next(t for t in phys.towers if t.id == adapter.id)
        return {**MODBUS_VALUES[role](adapter), "leaving_water_setpoint": tower.setpoint_c}
    if role == "pump":
        pump = next(q for q in phys.pumps if q.id == adapter.id)
        return {**MODBUS_VALUES[role](adapter), "speed_setpoint": pump.speed_pct}
    if role == "gateway":
        return MODBUS_VALUES[role](adapter)
    return {"power": next(p for p in phys.pdus if p.id == adapter.id).power_kw}


def commissioning_history(
    loaded: LoadedScenario, end_ts: float, days: int = HISTORY_DAYS
) -> list[telemetry.Batch]:
    """The plant's log of a commissioning week: varied setpoints, one sample every 10 simulated minutes.

    The optimiser fits its plant models on logged telemetry, and a site that
    has just started has none; a real one would log its commissioning tests.
    The same site's physics, from ``days`` before the demo's simulated start,
    is run through a seeded identification schedule (chilled-water supply,
    condenser-water setpoint and pump speeds held 30 minutes each, within the
    devices' limits) and ends with two hours at the baseline setpoints. Each
    sample becomes one batch per chiller, tower, pump, PDU (power only: no
    energy counters, so PUE is untouched) and sensor gateway, sent by the agent
    id ``commissioning-log`` and stamped ``HISTORY_SPACING_S`` apart up to
    ``end_ts``: time compressed as the demo's day is, which the optimiser,
    sampling every ``HISTORY_SPACING_S``, reads as one sample each.
    """
    sc = loaded.scenario
    start = sc.site.start - timedelta(days=days)
    history = LoadedScenario(
        path=loaded.path,
        scenario=sc.model_copy(update={"site": sc.site.model_copy(update={"start": start})}),
        models=loaded.models,
    )
    site = Site(history, clock=ManualClock())
    phys = site.physics
    phys.max_step_s = HISTORY_STEP_S  # one physics step per sample: the log needs no finer dynamics
    rng = random.Random(f"commissioning:{sc.site.seed}")
    steps = int(days * DAY_S / HISTORY_STEP_S)
    adapters = [a for a in site.adapters if a.section.role in {"chiller", "tower", "pump", "gateway", "pdu"}]
    pl = sc.plant
    out: list[telemetry.Batch] = []
    for k in range(steps):
        if k >= steps - HISTORY_BASELINE_TAIL:
            supply, cw, chw_pct, cw_pct = pl.chw_supply_c, pl.cw_setpoint_c, pl.chw_pump_speed_pct, pl.cw_pump_speed_pct
        elif k % HISTORY_HOLD == 0:
            supply = round(rng.uniform(7.0, 16.0), 1)
            cw = round(min(32.0, max(13.0, phys.wet_bulb_c + rng.uniform(-2.0, 12.0))), 1)
            chw_pct = round(rng.uniform(40.0, 100.0))
            cw_pct = round(rng.uniform(50.0, 100.0))
        else:
            supply, cw, chw_pct, cw_pct = (
                phys.chillers[0].setpoint_c,
                phys.towers[0].setpoint_c,
                next(q.speed_pct for q in phys.pumps if q.loop == "chw"),
                next(q.speed_pct for q in phys.pumps if q.loop == "cw"),
            )
        for c in phys.chillers:
            c.setpoint_c = supply
        for t in phys.towers:
            t.setpoint_c = cw
        for q in phys.pumps:
            q.speed_pct = chw_pct if q.loop == "chw" else cw_pct
        phys.advance_to((k + 1) * HISTORY_STEP_S)
        ts = end_ts - (steps - 1 - k) * HISTORY_SPACING_S
        out += [
            history_batch(sc.site.id, a.id, a.model, seq=k, ts=ts, values=_device_values(site, a)) for a in adapters
        ]
    return out


# ---------------------------------------------------------------- the embedded broker


class LoopbackAuth(BaseAuthPlugin):  # type: ignore[misc]  # amqtt ships no type information
    """Accept every client of the embedded broker (it listens on loopback only) and keep persistent sessions.

    amqtt's anonymous plugin marks every session anonymous and drops anonymous
    sessions when their client disconnects; the collector's queued messages
    must survive its restart.
    """

    async def authenticate(self, *, session: Any) -> bool:  # noqa: ARG002  (every local client is welcome)
        """Every client is accepted."""
        return True


class EmbeddedBroker(Broker):  # type: ignore[misc]  # amqtt ships no type information
    """amqtt's broker, offering a connecting client only the retained messages of its own subscriptions.

    amqtt 0.12 offers a client that connects the retained messages matching
    every subscription of every client, so the collector would receive the
    analytics results it publishes itself (and count them as rejected).
    """

    async def _publish_retained_messages_for_subscription(self, subscription: tuple[str, int], session: Any) -> None:
        subscribers = self._subscriptions.get(subscription[0], [])
        if any(s.client_id == session.client_id for s, _ in subscribers):
            await super()._publish_retained_messages_for_subscription(subscription, session)


def broker_config(port: int) -> dict[str, Any]:
    """The embedded broker's configuration: one TCP listener on loopback, every local client accepted."""
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {f"{LoopbackAuth.__module__}.{LoopbackAuth.__qualname__}": {}},
    }
