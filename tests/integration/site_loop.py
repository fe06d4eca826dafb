"""Helpers for the closed-loop site test: the scenario, the optimiser section, a training log and the A twin.

The optimiser fits its plant models on the store's history binned into
``sample_s`` bins of the agent's (wall-clock) read times. A site running at
thousands of times real time cannot log a month of varied steady states in a
few wall minutes, so the training history is logged separately: the same
site's physics, in process on a manual clock, is driven through a
commissioning-style identification schedule (random safe setpoints, each held
for an hour) over the weeks before the test, and every sample is what the
devices would serve (Modbus values decoded from their registers), written to
the store as the agent's batches, one sample per ``sample_s`` bin.
"""

from __future__ import annotations

import json
import math
import random
import signal
import struct
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import pytest

from models import telemetry
from models.schema import DeviceModel, Protocol
from models.values import Value, decode_registers, encode_registers
from simulators.physics import ManualClock, SitePhysics
from simulators.site import Adapter, BacnetAdapter, LoadedScenario, ModbusAdapter, Site, load_scenario
from tests.simulators.site_helpers import demo_scenario

HOUR_S: Final = 3600.0
DAY_S: Final = 86_400.0
INLET_LIMIT_C: Final = 27.0


@dataclass(frozen=True)
class Setpoints:
    """Plant setpoints as the site's devices hold them."""

    chw_supply_c: float
    cw_setpoint_c: float
    chw_pump_pct: float
    cw_pump_pct: float


# Benchmark case A on the demo plant: 7 °C supply, 29.4 °C condenser water, chilled-water flow for a
# 6 K rise at the mean load (37.4 kW over 1.536 kg/s of design flow: 97 %), one condenser pump per
# running chiller (the plant's one condenser pump at full speed).
A_LEVEL: Final = Setpoints(7.0, 29.4, 97.0, 100.0)

# What the optimiser reads (and what the training log holds) per device kind.
CHILLER_POINTS: Final = ("chw_supply_temp", "chw_return_temp", "cw_supply_temp", "power", "running")
TOWER_POINTS: Final = (
    "wet_bulb_temperature",
    "leaving_water_temperature",
    "entering_water_temperature",
    "fan_power",
    "fan_speed",
    "leaving_water_setpoint",
)
PUMP_POINTS: Final = ("flow", "power", "speed_setpoint")


def site_scenario(folder: Path, *, start: datetime, speed: float, setpoints: Setpoints, tick_s: float = 0.5) -> Path:
    """The demo site on free ports, starting at ``start`` with ``setpoints``, at ``speed``x."""
    return demo_scenario(
        folder,
        {
            "start = 2025-07-14T00:00:00Z": f"start = {start.strftime('%Y-%m-%dT%H:%M:%SZ')}",
            "speed = 60.0": f"speed = {speed:g}",
            "tick_s = 1.0": f"tick_s = {tick_s:g}",
            "chw_supply_c = 10.0": f"chw_supply_c = {setpoints.chw_supply_c:g}",
            "cw_setpoint_c = 29.4": f"cw_setpoint_c = {setpoints.cw_setpoint_c:g}",
            "chw_pump_speed_pct = 80.0": f"chw_pump_speed_pct = {setpoints.chw_pump_pct:g}",
            "cw_pump_speed_pct = 80.0": f"cw_pump_speed_pct = {setpoints.cw_pump_pct:g}",
        },
    )


def optimizer_toml(loaded: LoadedScenario, *, agent: str, mode: str, baseline: Setpoints) -> str:
    """The collector's [optimizer] section for the demo site (nameplate from the scenario's plant)."""
    phys = SitePhysics(loaded.scenario, loaded.models, base_dir=loaded.base_dir)
    p = phys.params
    sc = loaded.scenario
    pdus = ", ".join(f'{{ measurement = "pdu", device = "{d.id}", field = "power" }}' for d in sc.pdus)
    sensors = sorted(int(r.sensor.split(":")[1]) for r in sc.racks if r.sensor)
    gateway = sc.gateways[0].id
    fields = ", ".join(f'"sensor{n:02d}_temperature"' for n in sensors)

    def ids(items: list[str]) -> str:
        return "[" + ", ".join(f'"{i}"' for i in items) + "]"

    return f"""
[optimizer]
mode = "{mode}"
interval_s = 10              # one decision every 10 wall seconds (hours of simulated time)
refit_interval_s = 2592000   # fit once, on the training log: a live 10 s bin averages hours of changing plant
history_days = 2
sample_s = 10
max_data_age_s = 30
inlet_margin_k = 1.0         # a decision holds for 10 simulated hours, while the IT load swings by up to 6 %
min_samples = 200
command_ttl_s = 30

[optimizer.nameplate]
chillers = {p.chiller.count}
duty_chillers = {p.chiller.duty_count}
chiller_capacity_kw = {p.chiller.capacity_ref_kw}
chw_design_flow_kg_s = {p.chw_pump.design_flow_kg_s}
cw_design_flow_kg_s = {p.cw_pump.design_flow_kg_s}

[optimizer.baseline]
chw_supply_c = {baseline.chw_supply_c}
cw_setpoint_c = {baseline.cw_setpoint_c}
chw_pump_pct = {baseline.chw_pump_pct}
cw_pump_pct = {baseline.cw_pump_pct}

[optimizer.devices]
agent = "{agent}"
chillers = {ids([c.id for c in sc.chillers])}
towers = {ids([t.id for t in sc.towers])}
chw_pumps = {ids([q.id for q in sc.pumps if q.loop == "chw"])}
cw_pumps = {ids([q.id for q in sc.pumps if q.loop == "cw"])}
it_power = [{pdus}]
inlet_sensors = [{{ measurement = "gateway", device = "{gateway}", fields = [{fields}] }}]
"""


# ---------------------------------------------------------------- the training log


def _feasible(phys: SitePhysics) -> bool:
    """Whether the plant's steady state at the present setpoints meets the plant's constraints."""
    target = phys.target
    assert target is not None
    n = target.running
    v = target.values
    if not target.cooling or v["it_inlet_c"] > INLET_LIMIT_C - 0.5:
        return False
    if n == 0:
        return target.economiser_on
    duty = phys.params.chiller.duty_count
    per_evap = target.chw_flow_ratio * duty / n
    per_cond = target.cw_flow_ratio * duty / n
    return per_evap >= 0.3 and 0.5 <= per_cond <= 1.25 and v["chiller_plr"] <= 1.0


def _served(model: DeviceModel, name: str, value: Value) -> Value:
    """A value as a client reads it: through the point's registers for Modbus, float32 for BACnet."""
    point = model.point(name)
    if model.protocol is Protocol.MODBUS:
        return decode_registers(point, encode_registers(point, value)).value
    if isinstance(value, float):
        return float(struct.unpack("<f", struct.pack("<f", value))[0])
    return value


def _values(a: Adapter) -> dict[str, Value]:
    """What the site pushes into a device now (before the protocol encodes it)."""
    assert isinstance(a, ModbusAdapter | BacnetAdapter)
    return a.values(a)


class _Recorder:
    """Batches of what the site's plant, PDUs and sensor gateways serve now."""

    def __init__(self, site: Site, agent: str) -> None:
        self.site = site
        self.agent = agent
        self.seq = 0
        sc = site.scenario
        self.chillers = [site.adapter(c.id) for c in sc.chillers]
        self.towers = [site.adapter(t.id) for t in sc.towers]
        self.pumps = [site.adapter(q.id) for q in sc.pumps]
        self.pdus = [d.id for d in sc.pdus]
        self.gateways = [site.adapter(g.id) for g in sc.gateways]

    def _batch(self, device: str, kind: str, ts: float, values: dict[str, Value]) -> telemetry.Batch:
        self.seq += 1
        model = self.site.loaded.models[device]
        points = {}
        for name, value in values.items():
            served = _served(model, name, value)
            points[name] = telemetry.Point(
                value=served, unit=model.point(name).unit, quality="good" if served is not None else "bad_value"
            )
        return telemetry.Batch(
            site=self.site.scenario.site.id,
            agent=self.agent,
            device=device,
            model=model.id,
            kind=kind,
            seq=self.seq,
            ts=ts,
            points=points,
        )

    def record(self, ts: float) -> list[telemetry.Batch]:
        """One poll of the plant devices, the PDUs and the gateways, stamped ts."""
        out: list[telemetry.Batch] = []
        phys = self.site.physics
        for a in self.chillers:
            served = _values(a)
            chiller = next(c for c in phys.chillers if c.id == a.id)
            values = {k: served[k] for k in CHILLER_POINTS} | {"chw_supply_setpoint": chiller.setpoint_c}
            out.append(self._batch(a.id, "chiller", ts, values))
        for a in self.towers:
            tower = next(t for t in phys.towers if t.id == a.id)
            served = _values(a)
            values = {k: served[k] for k in TOWER_POINTS if k in served}
            out.append(self._batch(a.id, "tower", ts, values | {"leaving_water_setpoint": tower.setpoint_c}))
        for a in self.pumps:
            pump = next(q for q in phys.pumps if q.id == a.id)
            served = _values(a)
            values = {k: served[k] for k in PUMP_POINTS if k in served}
            out.append(self._batch(a.id, "pump", ts, values | {"speed_setpoint": pump.speed_pct}))
        for pdu_id in self.pdus:
            pdu = phys.pdus[phys.pdu_index[pdu_id]]
            out.append(self._batch(pdu_id, "pdu", ts, {"power": round(pdu.power_kw, 2)}))
        for a in self.gateways:
            served = _values(a)
            values = {k: v for k, v in served.items() if k.endswith("_temperature")}
            out.append(self._batch(a.id, "gateway", ts, values))
        return out


def identification_log(
    scenario: Path,
    *,
    start: datetime,
    days: float,
    end_ts: float,
    sample_s: float,
    agent: str,
    seed: int = 1,
    hold_s: float = HOUR_S,
    samples_per_hold: int = 2,
) -> Iterator[list[telemetry.Batch]]:
    """Batches of the site run through random safe setpoints from ``start`` for ``days`` (simulated).

    Each operating point is held for ``hold_s`` and sampled at the end of each of the last
    ``samples_per_hold`` quarters of the hold (the plant has settled, and the rack sensors have
    reported since). Sample i of n is stamped ``end_ts - (n - i) * sample_s``: one sample per bin
    of the optimiser. Yields the batches of one hold at a time.
    """
    text = scenario.read_text(encoding="utf-8")
    first_start = next(line for line in text.splitlines() if line.startswith("start = "))
    shifted = scenario.with_name("training.toml")
    shifted.write_text(
        text.replace(first_start, f"start = {start.strftime('%Y-%m-%dT%H:%M:%SZ')}", 1), encoding="utf-8"
    )
    loaded = load_scenario(shifted)
    site = Site(loaded, clock=ManualClock())  # never started: only its physics and value mappings are used
    phys = site.physics
    phys.max_step_s = hold_s / 4.0  # the first-order lag settles within a step this long
    rng = random.Random(seed)
    recorder = _Recorder(site, agent)
    holds = int(days * DAY_S / hold_s)
    total = holds * samples_per_hold
    index = 0
    for h in range(holds):
        t_hold = h * hold_s
        for attempt in range(20):
            chw = round(rng.uniform(7.0, 16.0), 1)
            cw = round(min(32.0, max(13.0, phys.wet_bulb_c + rng.uniform(-2.0, 14.0))), 1)
            chw_pct = round(rng.uniform(30.0, 100.0), 1)
            cw_pct = round(rng.uniform(40.0, 100.0), 1)
            for c in phys.chillers:
                c.setpoint_c = chw
            for t in phys.towers:
                t.setpoint_c = cw
            for q in phys.pumps:
                q.speed_pct = chw_pct if q.loop == "chw" else cw_pct
            phys.advance_to(t_hold + attempt + 1.0)  # re-solves the steady state at the new setpoints
            if _feasible(phys):
                break
        batches: list[telemetry.Batch] = []
        for k in range(samples_per_hold):
            phys.advance_to(t_hold + hold_s * (4 - samples_per_hold + k + 1) / 4.0)
            index += 1
            batches += recorder.record(end_ts - (total - index + 1) * sample_s)
        yield batches


# ---------------------------------------------------------------- the A-level twin


def twin_energy(scenario: Path, sim_times_s: list[float]) -> list[dict[str, float]]:
    """Energy since the start (kWh by part) of the same site held at its initial setpoints, at each time."""
    loaded = load_scenario(scenario)
    phys = SitePhysics(loaded.scenario, loaded.models, base_dir=loaded.base_dir)
    out = []
    for t in sorted(sim_times_s):
        phys.advance_to(t)
        out.append(dict(phys.energy))
    return out


def start_of_week(d: datetime) -> datetime:
    """Midnight of the Monday on or before d."""
    day = d.replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday())


def pue(energy_from: dict[str, float], energy_to: dict[str, float]) -> float:
    """Facility over IT energy between two energy snapshots."""
    it = energy_to["it"] - energy_from["it"]
    return (energy_to["facility"] - energy_from["facility"]) / it if it > 0 else math.nan


# ---------------------------------------------------------------- processes and the control API


@contextmanager
def process(args: list[str], log: Path, *, stdout: int | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A child process, stopped by its own PID (SIGTERM, then SIGKILL) when the block ends."""
    with log.open("wb") as err:
        proc = subprocess.Popen(args, stdout=stdout if stdout is not None else err, stderr=err)
        try:
            yield proc
        finally:
            stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> int:
    """Stop a child by its PID: SIGTERM, then SIGKILL after 15 s; its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
    return int(proc.returncode)


def ready_line(proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    """The simulator's one readiness line (fails when it exits or stays silent)."""
    out = proc.stdout
    assert out is not None
    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.append(out.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    if not lines or not lines[0]:
        pytest.fail(f"dcim-sim site printed no ready line within {timeout_s} s (exit code {proc.poll()})")
    return lines[0].decode()


def api(port: int, method: str, path: str, body: object = None) -> dict[str, Any]:
    """One request to the site's control API (loopback HTTP)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310  (loopback http)
        answer: dict[str, Any] = json.loads(resp.read())
        return answer


def wait_until(
    what: str,
    check: Callable[[], bool],
    procs: dict[Path, subprocess.Popen[bytes]],
    timeout_s: float,
    poll_s: float = 0.5,
) -> None:
    """Re-check a condition until it holds; fail (with the logs) when a process exits or on timeout."""
    deadline = time.monotonic() + timeout_s
    while not check():
        for log, proc in procs.items():
            if proc.poll() is not None:
                tail = log.read_text()[-3000:]
                pytest.fail(f"{log.stem} exited ({proc.returncode}) while waiting for {what}:\n{tail}")
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {log.name}\n{log.read_text()[-2000:]}" for log in procs)
            pytest.fail(f"no {what} within {timeout_s} s\n{tails}")
        time.sleep(poll_s)  # re-read the condition; what we wait on is the condition itself


def plant_per_it(energy_from: dict[str, float], energy_to: dict[str, float]) -> float:
    """Plant energy (chillers, tower fans, pumps) per kWh of IT between two energy snapshots."""
    it = energy_to["it"] - energy_from["it"]
    return (energy_to["plant"] - energy_from["plant"]) / it if it > 0 else math.nan
