"""The simulated site's coupled state: power chain, IT load, weather, chiller plant, rack inlets and sensors.

Everything here runs on a simulated clock that the caller moves with
:meth:`SitePhysics.advance_to`: the protocol servers only show what this
module computes, so every device agrees with every other one.

- Electrical chain: utility feeds -> meters -> UPSes (efficiency curve,
  battery, bypass) -> PDUs (outlets, breakers) -> racks (IT load profile).
  The mechanical load (plant, air handlers, lighting and other) is shared
  among the feeds that have mains.
- Chiller plant: :func:`models.plant.evaluate` gives the steady state at the
  setpoints the devices hold; the served state settles towards it with a
  first-order lag (``settling_s`` is the time to 95 %).
- Energy counters integrate power over simulated time, all with the same rule,
  so the facility energy equals IT + plant + losses at every instant.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from models import plant as plant_model
from models.schema import DeviceModel

if TYPE_CHECKING:
    from simulators.site import Scenario

log = logging.getLogger(__name__)

REFERENCE_DUTY_KW: Final = 4 * 3500.0  # the reference plant's duty cooling capacity (models/plant.py)
SENSORS_PER_GATEWAY: Final = 16
DEFAULT_SLOW_DELAY_S: Final = 3.0
NO_COOLING_INLET_C: Final = 45.0  # where the IT inlet heads when the plant cannot cool at all
BYPASS_EFFICIENCY: Final = 0.995
CHARGER_EFFICIENCY: Final = 0.9
RACK_LOAD_INLET_K: Final = 1.0  # K of extra inlet temperature per unit of rack load above the mean
FloatArray = npt.NDArray[np.float64]


class EventKind(StrEnum):
    """What can happen to the site, scheduled in the scenario or triggered through the control API."""

    MAINS_FAILURE = "mains_failure"
    MAINS_RESTORE = "mains_restore"
    UPS_BYPASS = "ups_bypass"
    PDU_BREAKER_TRIP = "pdu_breaker_trip"
    CHILLER_TRIP = "chiller_trip"
    TOWER_FAN_FAILURE = "tower_fan_failure"
    SENSOR_BATTERY_FLAT = "sensor_battery_flat"
    DEVICE_OFFLINE = "device_offline"
    DEVICE_SLOW = "device_slow"
    DEVICE_GARBAGE = "device_garbage"


# What each kind's target names; None = a target is optional (all feeds).
EVENT_TARGETS: Final[dict[EventKind, str]] = {
    EventKind.MAINS_FAILURE: "feed",
    EventKind.MAINS_RESTORE: "feed",
    EventKind.UPS_BYPASS: "ups",
    EventKind.PDU_BREAKER_TRIP: "pdu",
    EventKind.CHILLER_TRIP: "chiller",
    EventKind.TOWER_FAN_FAILURE: "tower",
    EventKind.SENSOR_BATTERY_FLAT: "sensor",
    EventKind.DEVICE_OFFLINE: "device",
    EventKind.DEVICE_SLOW: "device",
    EventKind.DEVICE_GARBAGE: "device",
}
OPTIONAL_TARGET: Final = frozenset({EventKind.MAINS_FAILURE, EventKind.MAINS_RESTORE})


class EventError(ValueError):
    """An event that cannot be applied (unknown kind or target)."""


# ---------------------------------------------------------------- clocks


class Clock(Protocol):
    """Simulated seconds since the scenario start."""

    def now_s(self) -> float:
        """The simulated time now."""
        ...


class ManualClock:
    """A clock that moves only when told: tests step the site without sleeping."""

    def __init__(self, t_s: float = 0.0) -> None:
        self.t_s = t_s

    def now_s(self) -> float:
        """The simulated time now."""
        return self.t_s

    def advance(self, dt_s: float) -> None:
        """Move the clock forward by dt_s simulated seconds."""
        if dt_s < 0:
            raise ValueError(f"a clock cannot go back ({dt_s} s)")
        self.t_s += dt_s


class AcceleratedClock:
    """Simulated time running ``speed`` times faster than the wall clock (1x to 3,600x)."""

    def __init__(self, speed: float, wall: Callable[[], float] = time.monotonic, start_s: float = 0.0) -> None:
        self._wall = wall
        self._wall0 = wall()
        self._sim0 = start_s
        self._speed = check_speed(speed)

    @property
    def speed(self) -> float:
        """Simulated seconds per wall second."""
        return self._speed

    def set_speed(self, speed: float) -> None:
        """Change the acceleration from now on (simulated time stays continuous)."""
        speed = check_speed(speed)
        now = self.now_s()
        self._wall0 = self._wall()
        self._sim0 = now
        self._speed = speed

    def now_s(self) -> float:
        """The simulated time now."""
        return self._sim0 + (self._wall() - self._wall0) * self._speed


def check_speed(speed: float) -> float:
    """The speed if it lies within 1x to 3,600x (ValueError otherwise)."""
    if not 1.0 <= speed <= 3600.0 or not math.isfinite(speed):
        raise ValueError(f"speed {speed} is outside 1 to 3600")
    return float(speed)


# ---------------------------------------------------------------- site elements


@dataclass
class Feed:
    """A utility feed: mains present or not, and what it supplies."""

    id: str
    share: float  # of the mechanical load (plant, air handlers, other) while every feed has mains
    alive: bool = True
    power_kw: float = 0.0
    kwh: float = 0.0


@dataclass
class Meter:
    """An energy meter on a feed or on the plant."""

    id: str
    measures: str  # "feed" or "plant"
    feed: str | None
    power_kw: float = 0.0
    kwh: float = 0.0


@dataclass
class Ups:
    """A UPS: efficiency curve, battery, bypass and mains state."""

    id: str
    feed: str
    rated_kw: float
    battery_kwh: float
    low_battery_min: float
    recharge_s: float
    curve_load: FloatArray
    curve_eff: FloatArray
    pdus: list[int] = field(default_factory=list)
    mains: bool = True
    bypass: bool = False
    output_on: bool = True
    charge_pct: float = 100.0
    battery_since_s: float | None = None
    output_kw: float = 0.0
    input_kw: float = 0.0
    charging_kw: float = 0.0
    out_kwh: float = 0.0
    in_kwh: float = 0.0
    transfers: int = 0  # times the UPS went to battery

    @property
    def load_fraction(self) -> float:
        """Output over rating."""
        return self.output_kw / self.rated_kw

    def efficiency(self) -> float:
        """Double-conversion efficiency at the present load (from the curve)."""
        return float(np.interp(self.load_fraction, self.curve_load, self.curve_eff))

    @property
    def source(self) -> str:
        """What feeds the output, as upsOutputSource names it."""
        if not self.output_on:
            return "none"
        if not self.mains:
            return "battery"
        return "bypass" if self.bypass else "normal"

    @property
    def discharge_kw(self) -> float:
        """Power the battery gives while it carries the load, kW."""
        return self.output_kw / max(self.efficiency(), 0.01)

    def runtime_min(self) -> float:
        """Minutes the battery lasts at the present load (at 1 % of rating when unloaded)."""
        power = max(self.discharge_kw, 0.01 * self.rated_kw)
        return self.battery_kwh * self.charge_pct / 100.0 / power * 60.0

    def full_runtime_min(self) -> float:
        """Minutes a full battery lasts at the present load."""
        power = max(self.discharge_kw, 0.01 * self.rated_kw)
        return self.battery_kwh / power * 60.0

    @property
    def battery_status(self) -> str:
        """UpsBatteryStatus by name."""
        if self.charge_pct <= 0.0:
            return "depleted"
        if self.runtime_min() <= self.low_battery_min:
            return "low"
        return "normal"


@dataclass
class Pdu:
    """A rack PDU (or distribution board): one outlet per rack entry it feeds."""

    id: str
    ups: str
    voltage_v: float
    racks: list[int] = field(default_factory=list)
    tripped: bool = False
    power_kw: float = 0.0
    outlet_kw: list[float] = field(default_factory=list)
    peak_kw: float = 0.0
    kwh: float = 0.0
    outlet_kwh: list[float] = field(default_factory=list)


@dataclass
class Rack:
    """A rack, or a row of identical racks (count): its IT load and inlet temperature."""

    id: str
    room: str
    design_kw: float  # all `count` racks together
    count: int
    utilisation: float
    pdus: list[int]
    offset_k: float
    demand_kw: float = 0.0
    power_kw: float = 0.0
    inlet_c: float = 22.0
    kwh: float = 0.0


@dataclass
class Chiller:
    """A chiller: its setpoint and run command (written by clients), trip state and share of the plant."""

    id: str
    setpoint_c: float
    run_command: bool = True
    tripped: bool = False
    running: bool = False
    power_kw: float = 0.0
    kwh: float = 0.0


@dataclass
class Tower:
    """A cooling tower standing for ``cells`` cells of the plant."""

    id: str
    cells: int
    setpoint_c: float
    fan_enable: bool = True
    fan_failed: bool = False
    airflow_ratio: float = 0.0
    fan_kw: float = 0.0
    kwh: float = 0.0
    run_h: float = 0.0

    @property
    def fans_work(self) -> bool:
        """Whether its fans can run."""
        return self.fan_enable and not self.fan_failed


@dataclass
class Pump:
    """A variable-speed pump of the chilled-water or condenser-water loop."""

    id: str
    loop: str  # "chw" or "cw"
    standby: bool
    speed_pct: float
    run_command: bool = True
    running: bool = False
    power_kw: float = 0.0
    flow_kg_s: float = 0.0
    head_kpa: float = 0.0
    kwh: float = 0.0
    run_h: float = 0.0


@dataclass
class Crah:
    """A computer-room air handler."""

    id: str
    room: str
    setpoint_c: float = 18.0
    fan_kw: float = 0.0
    fan_pct: float = 0.0
    valve_pct: float = 0.0
    kwh: float = 0.0


@dataclass
class Sensor:
    """A battery sensor behind an NB-IoT gateway, reporting at its own period."""

    gateway: str
    index: int  # 1..16
    rack: int | None
    room: str
    period_s: float
    phase_s: float
    offset_k: float
    humidity_pct: float
    battery_pct: float
    flat: bool = False
    last_report_s: float = 0.0
    next_report_s: float = 0.0
    temperature_c: float = 22.0
    reports: int = 0

    @property
    def key(self) -> str:
        """gateway:index, as events name it."""
        return f"{self.gateway}:{self.index}"


@dataclass
class Event:
    """An event: active from start_s until end_s (None: until ended)."""

    id: int
    kind: EventKind
    target: str | None
    start_s: float
    end_s: float | None = None
    delay_s: float = DEFAULT_SLOW_DELAY_S
    source: str = "api"  # "scenario" or "api"
    started: bool = False
    ended: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The event as JSON-ready data."""
        return {
            "id": self.id,
            "kind": str(self.kind),
            "target": self.target,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "delay_s": self.delay_s if self.kind is EventKind.DEVICE_SLOW else None,
            "source": self.source,
            "state": "ended" if self.ended else "active" if self.started else "scheduled",
        }


@dataclass(frozen=True, slots=True)
class DeviceFault:
    """How a device's protocol server misbehaves now."""

    offline: bool = False
    delay_s: float = 0.0
    garbage: bool = False


PLANT_KEYS: Final = (
    "chiller_kw",
    "tower_fan_kw",
    "chw_pump_kw",
    "cw_pump_kw",
    "chw_supply_c",
    "chw_return_c",
    "cw_entering_chiller_c",
    "tower_leaving_c",
    "tower_entering_c",
    "tower_airflow_ratio",
    "supply_air_c",
    "it_inlet_c",
    "economiser_kw",
    "chiller_load_kw",
    "heat_rejected_kw",
    "chiller_plr",
)
POWER_KEYS: Final = ("chiller_kw", "tower_fan_kw", "chw_pump_kw", "cw_pump_kw")


@dataclass
class PlantTarget:
    """The steady state the plant settles towards, and the discrete choices behind it."""

    values: dict[str, float]
    running: int
    economiser_on: bool
    cooling: bool  # False: the plant cannot remove the load (temperatures climb)
    chw_flow_ratio: float
    cw_flow_ratio: float


def scaled_params(
    chiller_count: int,
    *,
    duty_count: int,
    capacity_kw: float,
    cop_ref: float,
    tower_cells: int,
    load: plant_model.LoadParams,
) -> plant_model.PlantParams:
    """The reference plant of models/plant.py scaled to ``duty_count`` chillers of ``capacity_kw``.

    Flows, conductances and pump powers scale with the duty capacity, so
    temperatures and part-load ratios behave as in the reference plant; the
    reference plant itself (4 duty chillers of 3,500 kW) is left unchanged.
    """
    ref = plant_model.DEFAULT_PARAMS
    s = duty_count * capacity_kw / REFERENCE_DUTY_KW
    tower_design = ref.tower.design_flow_kg_s * s
    cell_capacity = ref.tower.cells * ref.tower.cell_flow_kg_s / ref.tower.design_flow_kg_s
    return plant_model.PlantParams(
        chiller=dataclasses.replace(
            ref.chiller, capacity_ref_kw=capacity_kw, cop_ref=cop_ref, count=chiller_count, duty_count=duty_count
        ),
        tower=dataclasses.replace(
            ref.tower,
            cells=tower_cells,
            design_flow_kg_s=tower_design,
            cell_flow_kg_s=tower_design * cell_capacity / tower_cells,
        ),
        chw_pump=dataclasses.replace(ref.chw_pump, design_flow_kg_s=ref.chw_pump.design_flow_kg_s * s),
        cw_pump=dataclasses.replace(ref.cw_pump, design_flow_kg_s=ref.cw_pump.design_flow_kg_s * s),
        economiser=plant_model.EconomiserParams(ua_kw_k=ref.economiser.ua_kw_k * s),
        air_side=dataclasses.replace(ref.air_side, coil_ua_kw_k=ref.air_side.coil_ua_kw_k * s),
        load=load,
        bounds=ref.bounds,
    )


def _seeded(seed: int, name: str) -> float:
    """A deterministic number in [0, 1) for (seed, name)."""
    digest = hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


# ---------------------------------------------------------------- the site


class SitePhysics:
    """The whole site's state at the simulated time ``t_s``; move it with :meth:`advance_to`."""

    def __init__(
        self,
        scenario: Scenario,
        models: Mapping[str, DeviceModel],
        *,
        base_dir: Path | None = None,
        max_step_s: float = 60.0,
    ) -> None:
        self.scenario = scenario
        self.models = models
        self.seed = scenario.site.seed
        self.max_step_s = max_step_s
        self.t_s = 0.0
        self.start: datetime = scenario.site.start
        year_start = self.start.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
        self._hour_of_year0 = (self.start - year_start) / timedelta(hours=1)
        self._load_hour0 = self.start.weekday() * 24.0 + (
            self.start - self.start.replace(hour=0, minute=0, second=0, microsecond=0)
        ) / timedelta(hours=1)
        self.weather = self._weather(base_dir)
        self._weather_dry = [float(x) for x in self.weather.dry_bulb_c]
        self._weather_wet = [float(x) for x in self.weather.wet_bulb_c]
        ld = scenario.load
        self.load_params = plant_model.LoadParams(
            it_design_kw=1.0,
            daily_amplitude=ld.daily_amplitude,
            peak_shift_h=ld.peak_shift_h,
            weekend_factor=ld.weekend_factor,
            chw_load_factor=ld.chw_load_factor,
            air_handler_fraction=ld.air_handler_fraction,
            other_fraction=ld.other_fraction,
        )
        self._build(scenario)
        pl = scenario.plant
        duty = pl.duty_chillers or max(1, len(self.chillers) - (1 if len(self.chillers) > 2 else 0))
        self.params = scaled_params(
            len(self.chillers),
            duty_count=duty,
            capacity_kw=pl.chiller_capacity_kw,
            cop_ref=pl.cop_ref,
            tower_cells=sum(t.cells for t in self.towers),
            load=self.load_params,
        )
        self.tau_s = pl.settling_s / 3.0  # first order: 95 % after three time constants
        self.events: list[Event] = []
        self._next_event_id = 1
        for ev in scenario.events:
            self.schedule(ev.kind, ev.target, ev.at_s, ev.duration_s, ev.delay_s, source="scenario")
        # results of the last recompute
        self.dry_bulb_c = 0.0
        self.wet_bulb_c = 0.0
        self.load_factor = 1.0
        self.it_kw = 0.0
        self.facility_kw = 0.0
        self.mechanical_kw = 0.0
        self.air_handler_kw = 0.0
        self.other_kw = 0.0
        self.ups_loss_kw = 0.0
        self.plant_powered = True
        # energy since the start, kWh
        self.energy: dict[str, float] = dict.fromkeys(
            ("it", "facility", "plant", "ups_loss", "air_handlers", "other", "chillers", "tower_fans", "pumps"), 0.0
        )
        self.plant: dict[str, float] = {}
        self.target: PlantTarget | None = None
        self._target_key: tuple[Any, ...] | None = None
        self._target_at_s = -math.inf
        self.evaluations = 0
        self._recompute(0.0)

    # -- construction --------------------------------------------------------------------

    def _weather(self, base_dir: Path | None) -> plant_model.Weather:
        w = self.scenario.weather
        if w.source == "csv":
            assert w.csv is not None  # noqa: S101  (the scenario schema requires it)
            path = w.csv if w.csv.is_absolute() or base_dir is None else base_dir / w.csv
            return plant_model.parse_weather_csv(path.read_text(encoding="utf-8"), str(path))
        return plant_model.weather_year(pressure_kpa=w.pressure_kpa)

    def _build(self, sc: Scenario) -> None:
        seed = sc.site.seed
        self.feeds = [Feed(f.id, 0.0) for f in sc.feeds]
        shares = [f.mechanical_share for f in sc.feeds]
        given = [s for s in shares if s is not None]
        rest = max(0.0, 1.0 - sum(given))
        missing = sum(1 for s in shares if s is None)
        for feed, share in zip(self.feeds, shares, strict=True):
            feed.share = share if share is not None else rest / missing
        self.feed_index = {f.id: i for i, f in enumerate(self.feeds)}
        self.meters = [Meter(m.id, m.measures, m.feed) for m in sc.meters]
        self.upses: list[Ups] = []
        for u in sc.upses:
            curve = sorted(u.efficiency)
            self.upses.append(
                Ups(
                    id=u.id,
                    feed=u.feed,
                    rated_kw=u.rated_kw,
                    battery_kwh=u.rated_kw * u.battery_runtime_min / 60.0,
                    low_battery_min=u.low_battery_min,
                    recharge_s=u.recharge_h * 3600.0,
                    curve_load=np.array([c[0] for c in curve], dtype=np.float64),
                    curve_eff=np.array([c[1] for c in curve], dtype=np.float64),
                )
            )
        self.ups_index = {u.id: i for i, u in enumerate(self.upses)}
        self.pdus = [Pdu(p.id, p.ups, p.voltage_v) for p in sc.pdus]
        self.pdu_index = {p.id: i for i, p in enumerate(self.pdus)}
        for i, pdu in enumerate(self.pdus):
            self.upses[self.ups_index[pdu.ups]].pdus.append(i)
        self.racks: list[Rack] = []
        for r in sc.racks:
            rack = Rack(
                id=r.id,
                room=r.room,
                design_kw=r.kw * r.count,
                count=r.count,
                utilisation=r.utilisation,
                pdus=[self.pdu_index[p] for p in r.pdus],
                offset_k=(_seeded(seed, f"rack:{r.id}") - 0.5) * 1.6,
            )
            for p in rack.pdus:
                self.pdus[p].racks.append(len(self.racks))
            self.racks.append(rack)
        for pdu in self.pdus:
            pdu.outlet_kw = [0.0] * len(pdu.racks)
            pdu.outlet_kwh = [0.0] * len(pdu.racks)
        self.rack_index = {r.id: i for i, r in enumerate(self.racks)}
        pl = sc.plant
        self.chillers = [Chiller(c.id, pl.chw_supply_c) for c in sc.chillers]
        self.towers = [Tower(t.id, t.cells, pl.cw_setpoint_c) for t in sc.towers]
        self.pumps = [
            Pump(
                p.id,
                p.loop,
                p.standby,
                pl.chw_pump_speed_pct if p.loop == "chw" else pl.cw_pump_speed_pct,
                run_command=not p.standby,
            )
            for p in sc.pumps
        ]
        self.crahs = [Crah(c.id, c.room) for c in sc.crahs]
        self.sensors: list[Sensor] = []
        bound = {r.sensor: i for i, r in enumerate(sc.racks) if r.sensor}
        room_rh = {room.id: room.humidity_pct for room in sc.rooms}
        for g in sc.gateways:
            model = self.models[g.id]
            for n in range(1, SENSORS_PER_GATEWAY + 1):
                key = f"{g.id}:{n}"
                period = _sensor_period(model, n)
                phase = _seeded(seed, f"phase:{key}") * period
                rack_i = bound.get(key)
                room = sc.racks[rack_i].room if rack_i is not None else g.room
                sensor = Sensor(
                    gateway=g.id,
                    index=n,
                    rack=rack_i,
                    room=room,
                    period_s=period,
                    phase_s=phase,
                    offset_k=(_seeded(seed, f"sensor:{key}") - 0.5) * 1.0,
                    humidity_pct=room_rh.get(room, 45.0) + (_seeded(seed, f"rh:{key}") - 0.5) * 6.0,
                    battery_pct=60.0 + 40.0 * _seeded(seed, f"battery:{key}"),
                    last_report_s=phase - period,
                    next_report_s=phase,
                )
                self.sensors.append(sensor)
        self.sensor_index = {s.key: i for i, s in enumerate(self.sensors)}
        self.device_ids = {d.id for d in sc.devices()}

    # -- events ------------------------------------------------------------------------

    def targets_of(self, kind: EventKind) -> set[str]:
        """The names an event of this kind may target."""
        what = EVENT_TARGETS[kind]
        return {
            "feed": set(self.feed_index),
            "ups": set(self.ups_index),
            "pdu": set(self.pdu_index),
            "chiller": {c.id for c in self.chillers},
            "tower": {t.id for t in self.towers},
            "sensor": set(self.sensor_index),
            "device": self.device_ids,
        }[what]

    def check_event(self, kind: EventKind | str, target: str | None) -> EventKind:
        """The kind, if an event of it may target this (EventError naming what is wrong)."""
        try:
            kind = EventKind(kind)
        except ValueError:
            known = ", ".join(k.value for k in EventKind)
            raise EventError(f"unknown event kind {kind!r} (known: {known})") from None
        if target is None:
            if kind not in OPTIONAL_TARGET:
                raise EventError(f"event {kind} needs a target ({EVENT_TARGETS[kind]} id)")
            return kind
        if target not in self.targets_of(kind):
            raise EventError(f"event {kind}: no {EVENT_TARGETS[kind]} {target!r} in this site")
        return kind

    def schedule(
        self,
        kind: EventKind | str,
        target: str | None,
        at_s: float,
        duration_s: float | None = None,
        delay_s: float | None = None,
        *,
        source: str = "api",
    ) -> Event:
        """Add an event starting at simulated time at_s (lasting duration_s, or until ended)."""
        kind = self.check_event(kind, target)
        if duration_s is not None and duration_s <= 0:
            raise EventError(f"event {kind}: duration_s must be positive")
        if delay_s is not None and not 0 < delay_s <= 60:
            raise EventError(f"event {kind}: delay_s must be in (0, 60] seconds")
        ev = Event(
            id=self._next_event_id,
            kind=kind,
            target=target,
            start_s=max(at_s, self.t_s),
            end_s=None if duration_s is None else max(at_s, self.t_s) + duration_s,
            delay_s=delay_s or DEFAULT_SLOW_DELAY_S,
            source=source,
        )
        self._next_event_id += 1
        self.events.append(ev)
        if ev.start_s <= self.t_s:
            self._start(ev)
            self._recompute(0.0)
        return ev

    def trigger(
        self, kind: EventKind | str, target: str | None, duration_s: float | None = None, delay_s: float | None = None
    ) -> Event:
        """Start an event now."""
        return self.schedule(kind, target, self.t_s, duration_s, delay_s)

    def end(self, event_id: int) -> Event:
        """End an active or scheduled event now (KeyError when there is no such event)."""
        for ev in self.events:
            if ev.id == event_id:
                if not ev.ended:
                    ev.started = True
                    ev.ended = True
                    ev.end_s = self.t_s
                    self._on_end(ev)
                    self._recompute(0.0)
                return ev
        raise KeyError(f"no event {event_id}")

    def active(self, kind: EventKind) -> list[Event]:
        """Events of this kind in force now."""
        return [e for e in self.events if e.kind is kind and e.started and not e.ended]

    def _start(self, ev: Event) -> None:
        ev.started = True
        log.info("event %d %s %s at %.0f s", ev.id, ev.kind, ev.target or "(all)", self.t_s)
        if ev.kind is EventKind.MAINS_RESTORE:
            for other in self.active(EventKind.MAINS_FAILURE):
                if ev.target is None or other.target in (None, ev.target):
                    other.ended = True
                    other.end_s = self.t_s
            ev.ended = True
            ev.end_s = self.t_s
        elif ev.kind is EventKind.SENSOR_BATTERY_FLAT and ev.target is not None:
            sensor = self.sensors[self.sensor_index[ev.target]]
            sensor.flat = True
            sensor.battery_pct = 0.0

    def _on_end(self, ev: Event) -> None:
        log.info("event %d %s %s ended at %.0f s", ev.id, ev.kind, ev.target or "(all)", self.t_s)
        if ev.kind is EventKind.SENSOR_BATTERY_FLAT and ev.target is not None:
            sensor = self.sensors[self.sensor_index[ev.target]]
            if not any(e.target == ev.target for e in self.active(EventKind.SENSOR_BATTERY_FLAT)):
                sensor.flat = False  # battery replaced: it reports again now
                sensor.battery_pct = 100.0
                sensor.next_report_s = self.t_s

    def _next_event_time(self) -> float | None:
        times = [e.start_s for e in self.events if not e.started]
        times += [e.end_s for e in self.events if e.started and not e.ended and e.end_s is not None]
        return min(times) if times else None

    def _events_due(self) -> bool:
        changed = False
        for ev in self.events:
            if not ev.started and ev.start_s <= self.t_s + 1e-9:
                self._start(ev)
                changed = True
            if ev.started and not ev.ended and ev.end_s is not None and ev.end_s <= self.t_s + 1e-9:
                ev.ended = True
                self._on_end(ev)
                changed = True
        return changed

    def device_faults(self) -> dict[str, DeviceFault]:
        """Protocol faults in force now, by device id."""
        out: dict[str, DeviceFault] = {}
        for kind in (EventKind.DEVICE_OFFLINE, EventKind.DEVICE_SLOW, EventKind.DEVICE_GARBAGE):
            for ev in self.active(kind):
                assert ev.target is not None  # noqa: S101  (device events always name a device)
                cur = out.get(ev.target, DeviceFault())
                if kind is EventKind.DEVICE_OFFLINE:
                    cur = dataclasses.replace(cur, offline=True)
                elif kind is EventKind.DEVICE_SLOW:
                    cur = dataclasses.replace(cur, delay_s=max(cur.delay_s, ev.delay_s))
                else:
                    cur = dataclasses.replace(cur, garbage=True)
                out[ev.target] = cur
        return out

    # -- time --------------------------------------------------------------------------

    @property
    def epoch_s(self) -> float:
        """Unix time of the simulated instant."""
        return self.start.timestamp() + self.t_s

    def advance_to(self, t_s: float) -> None:
        """Move the site to simulated time t_s in steps of at most max_step_s, stopping at every event."""
        while self.t_s < t_s - 1e-9:
            dt = min(self.max_step_s, t_s - self.t_s)
            nxt = self._next_event_time()
            if nxt is not None and self.t_s + 1e-9 < nxt < self.t_s + dt:
                dt = nxt - self.t_s
            self._integrate(dt)
            self.t_s += dt
            self._events_due()
            self._recompute(dt)

    def advance(self, dt_s: float) -> None:
        """Move the site forward by dt_s simulated seconds."""
        self.advance_to(self.t_s + dt_s)

    # -- integration (powers held over the step) -----------------------------------------------

    def _integrate(self, dt: float) -> None:
        h = dt / 3600.0
        for rack in self.racks:
            rack.kwh += rack.power_kw * h
        for pdu in self.pdus:
            pdu.kwh += pdu.power_kw * h
            for i, kw in enumerate(pdu.outlet_kw):
                pdu.outlet_kwh[i] += kw * h
        for ups in self.upses:
            ups.out_kwh += ups.output_kw * h
            ups.in_kwh += ups.input_kw * h
            if not ups.mains and ups.output_on:
                ups.charge_pct = max(0.0, ups.charge_pct - ups.discharge_kw * h / ups.battery_kwh * 100.0)
            elif ups.mains and ups.charge_pct < 100.0:
                ups.charge_pct = min(100.0, ups.charge_pct + dt / ups.recharge_s * 100.0)
        for feed in self.feeds:
            feed.kwh += feed.power_kw * h
        for meter in self.meters:
            meter.kwh += meter.power_kw * h
        for chiller in self.chillers:
            chiller.kwh += chiller.power_kw * h
        for tower in self.towers:
            tower.kwh += tower.fan_kw * h
            tower.run_h += h if tower.fan_kw > 0 else 0.0
        for pump in self.pumps:
            pump.kwh += pump.power_kw * h
            pump.run_h += h if pump.running else 0.0
        for crah in self.crahs:
            crah.kwh += crah.fan_kw * h
        e = self.energy
        e["it"] += self.it_kw * h
        e["facility"] += self.facility_kw * h
        e["plant"] += self.plant_kw * h
        e["ups_loss"] += self.ups_loss_kw * h
        e["air_handlers"] += self.air_handler_kw * h
        e["other"] += self.other_kw * h
        e["chillers"] += self.plant.get("chiller_kw", 0.0) * h
        e["tower_fans"] += self.plant.get("tower_fan_kw", 0.0) * h
        e["pumps"] += (self.plant.get("chw_pump_kw", 0.0) + self.plant.get("cw_pump_kw", 0.0)) * h

    @property
    def plant_kw(self) -> float:
        """Chillers, tower fans and both pump groups, kW."""
        return sum(self.plant.get(k, 0.0) for k in POWER_KEYS)

    # -- the state at t_s ----------------------------------------------------------------

    def _recompute(self, dt: float) -> None:
        hour = (self._hour_of_year0 + self.t_s / 3600.0) % len(self._weather_dry)
        i = int(hour)
        frac = hour - i
        j = (i + 1) % len(self._weather_dry)
        self.dry_bulb_c = float(self._weather_dry[i] * (1.0 - frac) + self._weather_dry[j] * frac)
        self.wet_bulb_c = float(self._weather_wet[i] * (1.0 - frac) + self._weather_wet[j] * frac)
        self.load_factor = float(plant_model.it_load_kw(self._load_hour0 + self.t_s / 3600.0, self.load_params))
        self._electrical()
        self._cooling(dt)
        self._mechanical()
        self._sensors()

    def _electrical(self) -> None:
        failed = self.active(EventKind.MAINS_FAILURE)
        for feed in self.feeds:
            feed.alive = not any(e.target in (None, feed.id) for e in failed)
        bypassed = {e.target for e in self.active(EventKind.UPS_BYPASS)}
        for ups in self.upses:
            was_mains = ups.mains
            ups.mains = self.feeds[self.feed_index[ups.feed]].alive
            ups.bypass = ups.id in bypassed
            if ups.mains:
                ups.output_on = True  # automatic restart when mains return
                ups.battery_since_s = None
            elif was_mains and ups.output_on:
                ups.battery_since_s = self.t_s
                ups.transfers += 1
            if not ups.mains and ups.charge_pct <= 0.0 and ups.output_on:
                ups.output_on = False
                ups.battery_since_s = None
                log.info("UPS %s: battery depleted, output off at %.0f s", ups.id, self.t_s)
        tripped = {e.target for e in self.active(EventKind.PDU_BREAKER_TRIP)}
        alive: list[bool] = []
        for pdu in self.pdus:
            pdu.tripped = pdu.id in tripped
            alive.append(not pdu.tripped and self.upses[self.ups_index[pdu.ups]].output_on)
            pdu.power_kw = 0.0
        for rack in self.racks:
            rack.demand_kw = rack.design_kw * rack.utilisation * self.load_factor
            live = [p for p in rack.pdus if alive[p]]
            rack.power_kw = rack.demand_kw if live else 0.0
            for p in live:
                self.pdus[p].power_kw += rack.demand_kw / len(live)
        for p, pdu in enumerate(self.pdus):
            for j, r in enumerate(pdu.racks):
                rack = self.racks[r]
                live = [q for q in rack.pdus if alive[q]]
                pdu.outlet_kw[j] = rack.demand_kw / len(live) if alive[p] and live else 0.0
            pdu.power_kw = sum(pdu.outlet_kw)
            pdu.peak_kw = max(pdu.peak_kw, pdu.power_kw)
        self.it_kw = sum(r.power_kw for r in self.racks)
        self.ups_loss_kw = 0.0
        for ups in self.upses:
            ups.output_kw = sum(self.pdus[p].power_kw for p in ups.pdus) if ups.output_on else 0.0
            if not ups.mains:
                ups.input_kw = 0.0
                ups.charging_kw = 0.0
            else:
                ups.charging_kw = (
                    ups.battery_kwh / (ups.recharge_s / 3600.0) / CHARGER_EFFICIENCY if ups.charge_pct < 100.0 else 0.0
                )
                eff = BYPASS_EFFICIENCY if ups.bypass else ups.efficiency()
                ups.input_kw = ups.output_kw / eff + ups.charging_kw
            self.ups_loss_kw += ups.input_kw - ups.output_kw

    def _mechanical(self) -> None:
        powered = self.plant_powered
        self.air_handler_kw = self.load_params.air_handler_fraction * self.it_kw if powered else 0.0
        self.other_kw = self.load_params.other_fraction * self.it_kw if powered else 0.0
        self.mechanical_kw = self.plant_kw + self.air_handler_kw + self.other_kw
        shares = sum(f.share for f in self.feeds if f.alive)
        for feed in self.feeds:
            ups_in = sum(u.input_kw for u in self.upses if u.feed == feed.id)
            mech = self.mechanical_kw * feed.share / shares if feed.alive and shares > 0 else 0.0
            feed.power_kw = ups_in + mech
        self.facility_kw = sum(f.power_kw for f in self.feeds)
        for meter in self.meters:
            if meter.measures == "plant":
                meter.power_kw = self.plant_kw
            else:
                meter.power_kw = self.feeds[self.feed_index[str(meter.feed)]].power_kw
        n_crah = max(1, len(self.crahs))
        for crah in self.crahs:
            crah.fan_kw = self.air_handler_kw / n_crah
            crah.fan_pct = 100.0 * (crah.fan_kw / max(1e-9, self._crah_design_kw())) ** (1.0 / 3.0) if powered else 0.0
            crah.valve_pct = min(100.0, 100.0 * self.plant.get("chiller_plr", 0.5) + 20.0) if powered else 0.0

    def _crah_design_kw(self) -> float:
        design_it = sum(r.design_kw for r in self.racks)
        return self.load_params.air_handler_fraction * design_it / max(1, len(self.crahs)) * 1.25

    # -- the plant ---------------------------------------------------------------------

    def _cooling(self, dt: float) -> None:
        self.plant_powered = any(f.alive for f in self.feeds)
        tripped = {e.target for e in self.active(EventKind.CHILLER_TRIP)}
        fan_failed = {e.target for e in self.active(EventKind.TOWER_FAN_FAILURE)}
        for chiller in self.chillers:
            chiller.tripped = chiller.id in tripped
        for tower in self.towers:
            tower.fan_failed = tower.id in fan_failed
        for pump in self.pumps:
            pump.running = pump.run_command and self.plant_powered
        key = self._decision_key()
        due = self.t_s - self._target_at_s >= self.scenario.plant.steady_interval_s
        if self.target is None or key != self._target_key or due:
            self.target = self._steady_state()
            self._target_key = key
            self._target_at_s = self.t_s
        target = self.target.values
        if not self.plant:
            self.plant = dict(target)
        else:
            alpha = 1.0 - math.exp(-dt / self.tau_s) if dt > 0 else 0.0
            for k in PLANT_KEYS:
                self.plant[k] += (target[k] - self.plant[k]) * alpha
        if not self.plant_powered:
            for k in POWER_KEYS:
                self.plant[k] = 0.0
        if self.target.running == 0:
            self.plant["chiller_kw"] = target["chiller_kw"]  # stopped compressors draw nothing at once
        self._share_plant()
        for rack in self.racks:
            load = rack.power_kw / rack.design_kw if rack.design_kw > 0 else 0.0
            rack.inlet_c = self.plant["it_inlet_c"] + rack.offset_k + RACK_LOAD_INLET_K * (load - 0.9)

    def _decision_key(self) -> tuple[Any, ...]:
        return (
            tuple((c.setpoint_c, c.run_command, c.tripped) for c in self.chillers),
            tuple((t.setpoint_c, t.fans_work) for t in self.towers),
            tuple((p.speed_pct, p.running) for p in self.pumps),
            round(self.it_kw / max(1e-9, sum(r.design_kw for r in self.racks)), 3),
            round(self.wet_bulb_c, 1),
            self.plant_powered,
        )

    def _flow_ratio(self, loop: str) -> float:
        pumps = [p for p in self.pumps if p.loop == loop]
        duty = max(1, sum(1 for p in pumps if not p.standby))
        ratio = sum(p.speed_pct / 100.0 for p in pumps if p.running) / duty
        return min(ratio, 1.2)

    def _steady_state(self) -> PlantTarget:
        """The plant's steady state at the present setpoints, with its own staging (models/plant.py physics)."""
        self.evaluations += 1
        pl = self.scenario.plant
        params = self.params
        r_chw = self._flow_ratio("chw")
        r_cw = self._flow_ratio("cw")
        available = [c for c in self.chillers if c.run_command and not c.tripped]
        # The supply follows the setpoints of the chillers that lead (those running, in order).
        lead = available[: max(1, self.target.running if self.target is not None else 1)]
        chw_sp = float(np.mean([c.setpoint_c for c in (lead or self.chillers)]))
        cw_sp = float(np.mean([t.setpoint_c for t in self.towers]))
        total_cells = sum(t.cells for t in self.towers)
        working = sum(t.cells for t in self.towers if t.fans_work)
        if working == 0:
            cw_sp = 60.0  # no fan can run: the water settles wherever free convection takes it
        elif working < total_cells:
            tower = params.tower
            params = dataclasses.replace(
                params,
                tower=dataclasses.replace(
                    tower,
                    cells=working,
                    fan_kw_per_kw_rejected=tower.fan_kw_per_kw_rejected * working / total_cells,
                ),
            )
        it = max(self.it_kw, 1e-3 * sum(r.design_kw for r in self.racks) + 1e-6)
        conditions = plant_model.Conditions(self.wet_bulb_c, it)
        if not self.plant_powered or r_chw < 0.05 or r_cw < 0.05:
            return self._no_cooling(params, r_chw, r_cw)
        econ = self._economiser(pl.economiser, chw_sp, r_chw, conditions, params)
        counts = np.arange(0 if econ else 1, len(available) + 1, dtype=np.float64)
        if counts.size == 0:
            return self._no_cooling(params, r_chw, r_cw)
        res = plant_model.evaluate(plant_model.Decisions(chw_sp, cw_sp, r_chw, r_cw, econ, counts), conditions, params)
        short = (res.violations & np.uint8(plant_model.Violation.ECONOMISER_SHORT)) != 0
        carries = (res.chiller_plr <= 1.0 + 1e-9) & ~short
        comfortable = carries & (res.chiller_plr <= pl.stage_up_plr)
        if comfortable.any():
            i = int(np.argmax(comfortable))
        elif carries.any():
            i = int(np.argmax(carries))
        else:
            # Not enough chillers: the supply temperature rises until the running ones carry the load.
            offsets = np.arange(0.5, 20.01, 0.5)
            res = plant_model.evaluate(
                plant_model.Decisions(chw_sp + offsets, cw_sp, r_chw, r_cw, econ, counts[-1]), conditions, params
            )
            short = (res.violations & np.uint8(plant_model.Violation.ECONOMISER_SHORT)) != 0
            carries = (res.chiller_plr <= 1.0 + 1e-9) & ~short
            if not carries.any():
                return self._no_cooling(params, r_chw, r_cw)
            i = int(np.argmax(carries))
        values = {k: float(np.asarray(getattr(res, k)).ravel()[i]) for k in PLANT_KEYS}
        running = int(np.asarray(counts).ravel()[min(i, counts.size - 1)])
        return PlantTarget(values, running, econ, cooling=True, chw_flow_ratio=r_chw, cw_flow_ratio=r_cw)

    def _economiser(
        self,
        mode: str,
        chw_sp: float,
        r_chw: float,
        conditions: plant_model.Conditions,
        params: plant_model.PlantParams,
    ) -> bool:
        if mode != "auto":
            return mode == "on"
        # ASHRAE Guideline 36: enable when the return is 2 K above the predicted exchanger leaving temperature.
        probe = plant_model.evaluate(
            plant_model.Decisions(
                chw_sp, plant_model.FANS_AT_MAX, r_chw, cw_flow_ratio=1.0, economiser_on=True, chillers_running=0
            ),
            conditions,
            params,
        )
        c_chw = r_chw * params.chw_pump.design_flow_kg_s * plant_model.CP_WATER_KJ_KG_K
        ret = float(probe.chw_return_c)
        predicted = ret - float(probe.economiser_capacity_kw) / c_chw
        return ret > predicted + 2.0

    def _no_cooling(self, params: plant_model.PlantParams, r_chw: float, r_cw: float) -> PlantTarget:
        pumps = self.plant_powered
        values = dict.fromkeys(PLANT_KEYS, 0.0)
        values.update(
            chw_pump_kw=float(plant_model.pump_kw(r_chw, params.chw_pump)) if pumps else 0.0,
            cw_pump_kw=float(plant_model.pump_kw(r_cw, params.cw_pump)) if pumps else 0.0,
            chw_supply_c=NO_COOLING_INLET_C - 10.0,
            chw_return_c=NO_COOLING_INLET_C - 10.0,
            cw_entering_chiller_c=self.wet_bulb_c + 4.0,
            tower_leaving_c=self.wet_bulb_c + 4.0,
            tower_entering_c=self.wet_bulb_c + 4.0,
            supply_air_c=NO_COOLING_INLET_C - 1.0,
            it_inlet_c=NO_COOLING_INLET_C,
        )
        return PlantTarget(values, 0, economiser_on=False, cooling=False, chw_flow_ratio=r_chw, cw_flow_ratio=r_cw)

    def _share_plant(self) -> None:
        """Split the plant's totals among the devices that stand for it."""
        assert self.target is not None  # noqa: S101
        p = self.plant
        available = [c for c in self.chillers if c.run_command and not c.tripped]
        n = self.target.running if self.plant_powered else 0
        running_ids = {c.id for c in available[:n]}
        for chiller in self.chillers:
            chiller.running = chiller.id in running_ids
            chiller.power_kw = p["chiller_kw"] / n if chiller.running and n else 0.0
        working = [t for t in self.towers if t.fans_work]
        cells = sum(t.cells for t in working)
        for tower in self.towers:
            if tower.fans_work and cells:
                tower.fan_kw = p["tower_fan_kw"] * tower.cells / cells
                tower.airflow_ratio = p["tower_airflow_ratio"]
            else:
                tower.fan_kw = 0.0
                tower.airflow_ratio = 0.0
        for loop, key, pump_params in (
            ("chw", "chw_pump_kw", self.params.chw_pump),
            ("cw", "cw_pump_kw", self.params.cw_pump),
        ):
            pumps = [q for q in self.pumps if q.loop == loop]
            duty = max(1, sum(1 for q in pumps if not q.standby))
            speed_sum = sum(q.speed_pct for q in pumps if q.running)
            design_head_kpa = pump_params.head_m * plant_model.GRAVITY_M_S2  # kPa for water at 1 kg/L
            for q in pumps:
                share = q.speed_pct / speed_sum if q.running and speed_sum > 0 else 0.0
                q.power_kw = p[key] * share
                q.flow_kg_s = pump_params.design_flow_kg_s / duty * q.speed_pct / 100.0 if q.running else 0.0
                q.head_kpa = design_head_kpa * (q.speed_pct / 100.0) ** 2 if q.running else 0.0

    # -- sensors ---------------------------------------------------------------------------

    def room_inlet_c(self, room: str) -> float:
        """Mean inlet temperature of a room's racks (the plant's IT inlet when it has none)."""
        temps = [r.inlet_c for r in self.racks if r.room == room]
        return float(np.mean(temps)) if temps else self.plant["it_inlet_c"]

    def _sensors(self) -> None:
        for s in self.sensors:
            if s.flat:
                continue
            if s.next_report_s <= self.t_s + 1e-9:
                base = self.racks[s.rack].inlet_c if s.rack is not None else self.room_inlet_c(s.room) + s.offset_k
                s.temperature_c = base
                s.last_report_s = self.t_s
                s.reports += 1
                s.battery_pct = max(1.0, s.battery_pct - 0.002)
                while s.next_report_s <= self.t_s + 1e-9:
                    s.next_report_s += s.period_s

    def sensor_age_s(self, s: Sensor) -> float:
        """Seconds since the sensor last reported."""
        return max(0.0, self.t_s - s.last_report_s)

    # -- a summary for the control API -----------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The site's state now, as JSON-ready data."""
        assert self.target is not None  # noqa: S101
        p = self.plant

        def r(x: float, nd: int = 3) -> float:
            return round(x, nd)

        return {
            "time": {
                "sim_s": r(self.t_s),
                "epoch_s": r(self.epoch_s),
                "iso": datetime.fromtimestamp(self.epoch_s, tz=self.start.tzinfo).isoformat(),
            },
            "weather": {"dry_bulb_c": r(self.dry_bulb_c), "wet_bulb_c": r(self.wet_bulb_c)},
            "it_kw": r(self.it_kw),
            "plant_kw": r(self.plant_kw),
            "facility_kw": r(self.facility_kw),
            "ups_loss_kw": r(self.ups_loss_kw),
            "air_handler_kw": r(self.air_handler_kw),
            "other_kw": r(self.other_kw),
            "pue": r(self.facility_kw / self.it_kw, 4) if self.it_kw > 0 else None,
            "energy_kwh": {k: r(v) for k, v in self.energy.items()},
            "plant": {
                **{k: r(v) for k, v in p.items()},
                "chillers_running": self.target.running,
                "economiser_on": self.target.economiser_on,
                "cooling": self.target.cooling,
                "chw_flow_ratio": r(self.target.chw_flow_ratio),
                "cw_flow_ratio": r(self.target.cw_flow_ratio),
            },
            "setpoints": {
                "chillers": {c.id: {"chw_supply_c": c.setpoint_c, "run": c.run_command} for c in self.chillers},
                "towers": {t.id: {"leaving_water_c": t.setpoint_c, "fan_enable": t.fan_enable} for t in self.towers},
                "pumps": {q.id: {"speed_pct": q.speed_pct, "run": q.run_command} for q in self.pumps},
                "crahs": {c.id: {"supply_air_c": c.setpoint_c} for c in self.crahs},
            },
            "feeds": {f.id: {"mains": f.alive, "power_kw": r(f.power_kw)} for f in self.feeds},
            "upses": {
                u.id: {
                    "source": u.source,
                    "output_kw": r(u.output_kw),
                    "input_kw": r(u.input_kw),
                    "load_pct": r(100.0 * u.load_fraction, 1),
                    "charge_pct": r(u.charge_pct, 2),
                    "runtime_min": r(u.runtime_min(), 1),
                    "battery_status": u.battery_status,
                }
                for u in self.upses
            },
            "pdus": {d.id: {"power_kw": r(d.power_kw), "tripped": d.tripped} for d in self.pdus},
            "chillers": {
                c.id: {"running": c.running, "tripped": c.tripped, "power_kw": r(c.power_kw)} for c in self.chillers
            },
            "racks": {
                "count": sum(rk.count for rk in self.racks),
                "inlet_max_c": r(max((rk.inlet_c for rk in self.racks), default=0.0)),
                "inlet_mean_c": r(float(np.mean([rk.inlet_c for rk in self.racks])) if self.racks else 0.0),
                "down": [rk.id for rk in self.racks if rk.power_kw <= 0.0],
            },
        }


def _sensor_period(model: DeviceModel, n: int) -> float:
    """The report period of sensor n from the gateway model (900 s when it names none)."""
    for point in model.points:
        if point.name == f"sensor{n:02d}_temperature" and point.period_s is not None:
            return point.period_s
    return 900.0


def energy_balance(phys: SitePhysics) -> dict[str, float]:
    """Facility energy and its parts since the start, kWh (facility = IT + plant + losses)."""
    e = phys.energy
    losses = e["ups_loss"] + e["air_handlers"] + e["other"]
    return {"facility": e["facility"], "it": e["it"], "plant": e["plant"], "losses": losses}


def feed_meter_kwh(phys: SitePhysics, ids: Iterable[str] | None = None) -> float:
    """Energy counted by the feed meters (all, or those named), kWh."""
    wanted = set(ids) if ids is not None else None
    return sum(m.kwh for m in phys.meters if m.measures == "feed" and (wanted is None or m.id in wanted))
