"""dcim-sim site: a whole simulated data centre, every device on its own protocol, driven by one physics model.

A scenario file (TOML) describes the rooms and racks, the electrical chain
(utility feeds -> meters -> UPSes -> PDUs -> racks), the chiller plant
(chillers, towers, pumps, air handlers), NB-IoT sensor gateways, the weather,
the time acceleration and scheduled events. :class:`Site` serves each device
with the protocol simulator of its model (Modbus TCP, SNMP, BACnet/IP) and
pushes the values :class:`simulators.physics.SitePhysics` computes into them
every tick; setpoints clients write to chillers, towers and pumps flow back
into the physics. :mod:`simulators.control` serves the control API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import signal
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from models import catalog
from models.errors import ConfigError, read_toml, validate
from models.schema import DeviceModel, Kind, Protocol
from models.telemetry import ID_RE
from models.values import Value
from simulators.bacnet import SimulatedDevice
from simulators.control import ControlServer
from simulators.modbus import ModbusSimulator, SimDevice
from simulators.physics import (
    EVENT_TARGETS,
    OPTIONAL_TARGET,
    AcceleratedClock,
    Clock,
    DeviceFault,
    EventError,
    EventKind,
    SitePhysics,
    check_speed,
)
from simulators.snmp import UPS_BASE, PduState, SnmpSimulator, UpsState

log = logging.getLogger(__name__)

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
GARBAGE_FRAMES: Final = 10**9  # "corrupt the next N answers": every answer while the fault lasts
DEFAULT_EFFICIENCY: Final = ((0.1, 0.86), (0.25, 0.93), (0.5, 0.955), (0.75, 0.96), (1.0, 0.955))
PDU_BASE: Final = "1.3.6.1.4.1.318.1.1.26"
VOLTAGE_V: Final = 230.0
FREQUENCY_HZ: Final = 50.0


def _ident(value: str) -> str:
    if not ID_RE.match(value):
        raise ValueError(f"{value!r} is not a valid id (letters, digits, '_', '.', ':', '-')")
    return value


Ident = Annotated[str, AfterValidator(_ident)]
Port = Annotated[int, Field(ge=1, le=65535)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- scenario schema


class SiteSection(_Strict):
    """[site]: identity, clock and where the devices listen."""

    id: Ident
    name: str = ""
    start: datetime = datetime(2025, 7, 14, tzinfo=UTC)  # a Monday; naive times are taken as UTC
    speed: float = Field(default=60.0, ge=1.0, le=3600.0)  # simulated seconds per wall second
    tick_s: float = Field(default=1.0, gt=0, le=60.0)  # wall seconds between physics steps
    seed: int = 0
    host: str = "127.0.0.1"


class ControlSection(_Strict):
    """[control]: the JSON-over-HTTP control API (loopback only)."""

    host: Literal["127.0.0.1", "localhost", "::1"] = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)  # 0: any free port (printed in the ready line)


class WeatherSection(_Strict):
    """[weather]: Beijing's synthetic year (models/plant.py) or an hourly CSV of dry_bulb_c, wet_bulb_c."""

    source: Literal["beijing", "csv"] = "beijing"
    csv: Path | None = None  # relative to the scenario file
    pressure_kpa: float = Field(default=100.0, gt=50, le=110)

    @model_validator(mode="after")
    def _csv(self) -> WeatherSection:
        if self.source == "csv" and self.csv is None:
            raise ValueError("source = 'csv' needs csv = 'file.csv'")
        return self


class LoadSection(_Strict):
    """[load]: the IT load profile and the overheads proportional to IT."""

    daily_amplitude: float = Field(default=0.03, ge=0, le=0.5)
    peak_shift_h: float = 9.0
    weekend_factor: float = Field(default=0.98, gt=0, le=1.5)
    chw_load_factor: float = Field(default=1.04, ge=1.0, le=1.5)
    air_handler_fraction: float = Field(default=0.03, ge=0, le=0.5)
    other_fraction: float = Field(default=0.02, ge=0, le=0.5)  # lighting and other loads


class PlantSection(_Strict):
    """[plant]: chiller sizes, plant control and the initial setpoints."""

    chiller_capacity_kw: float = Field(default=3500.0, gt=0)
    cop_ref: float = Field(default=5.53, gt=1, le=15)
    duty_chillers: int | None = Field(default=None, ge=1)  # design flows follow the duty capacity
    stage_up_plr: float = Field(default=0.9, gt=0.2, le=1.0)
    economiser: Literal["auto", "on", "off"] = "auto"
    settling_s: float = Field(default=600.0, gt=0, le=86400)  # to 95 % of a new steady state
    steady_interval_s: float = Field(default=300.0, gt=0, le=3600)  # re-solve the plant at least this often
    chw_supply_c: float = Field(default=10.0, ge=5.0, le=16.0)
    cw_setpoint_c: float = Field(default=29.4, ge=13.0, le=32.0)
    chw_pump_speed_pct: float = Field(default=80.0, ge=25.0, le=100.0)
    cw_pump_speed_pct: float = Field(default=80.0, ge=25.0, le=100.0)


class RoomSection(_Strict):
    """[[rooms]]."""

    id: Ident
    name: str = ""
    humidity_pct: float = Field(default=45.0, ge=0, le=100)


class FeedSection(_Strict):
    """[[feeds]]: a utility feed."""

    id: Ident
    mechanical_share: float | None = Field(default=None, ge=0, le=1)  # default: the rest, split evenly


class RackSection(_Strict):
    """[[racks]]: a rack, or a row of `count` identical racks on one outlet of each of its PDUs."""

    id: Ident
    room: str
    kw: float = Field(gt=0)  # design IT power of one rack
    count: int = Field(default=1, ge=1, le=100_000)
    utilisation: float = Field(default=0.9, ge=0, le=1.2)
    pdus: list[str] = Field(min_length=1, max_length=2)  # two: a dual-corded rack shares its load
    sensor: str | None = None  # "gateway-id:N": the NB-IoT sensor at this rack's inlet


class _Device(_Strict):
    role: ClassVar[str] = ""
    kind: ClassVar[Kind] = Kind.GENERIC
    id: Ident
    model: str
    port: Port


class MeterSection(_Device):
    """[[meters]]: an energy meter on a feed or on the chiller plant."""

    role: ClassVar[str] = "meter"
    kind: ClassVar[Kind] = Kind.METER
    model: str = "meter-sdm630"
    unit: int = Field(default=1, ge=1, le=247)
    measures: Literal["feed", "plant"] = "feed"
    feed: str | None = None


class UpsSection(_Device):
    """[[upses]]: a UPS on a feed."""

    role: ClassVar[str] = "ups"
    kind: ClassVar[Kind] = Kind.UPS
    unit: int = Field(default=1, ge=1, le=247)
    feed: str
    rated_kw: float = Field(gt=0)
    battery_runtime_min: float = Field(default=10.0, gt=0)  # at full rated load
    low_battery_min: float = Field(default=5.0, ge=0)
    recharge_h: float = Field(default=4.0, gt=0)
    efficiency: list[tuple[float, float]] = Field(default_factory=lambda: list(DEFAULT_EFFICIENCY), min_length=1)

    @model_validator(mode="after")
    def _curve(self) -> UpsSection:
        for load, eff in self.efficiency:
            if not (0 <= load <= 2 and 0.5 <= eff <= 1.0):
                raise ValueError(f"efficiency point ({load}, {eff}): load fraction 0-2, efficiency 0.5-1")
        return self


class PduSection(_Device):
    """[[pdus]]: a rack PDU or distribution board fed by a UPS."""

    role: ClassVar[str] = "pdu"
    kind: ClassVar[Kind] = Kind.PDU
    model: str = "pdu-apc-rpdu2"
    ups: str
    voltage_v: float = Field(default=VOLTAGE_V, gt=0)
    phase_rating_a: float | None = Field(default=None, gt=0)  # default: 1.5 x the design current per phase


class ChillerSection(_Device):
    """[[chillers]]."""

    role: ClassVar[str] = "chiller"
    kind: ClassVar[Kind] = Kind.CHILLER
    model: str = "chiller-bacnet"
    device_instance: int | None = Field(default=None, ge=0, le=4194302)


class TowerSection(_Device):
    """[[towers]]: a cooling tower standing for `cells` cells."""

    role: ClassVar[str] = "tower"
    kind: ClassVar[Kind] = Kind.TOWER
    model: str = "tower-modbus"
    unit: int = Field(default=1, ge=1, le=247)
    cells: int = Field(default=1, ge=1, le=64)


class PumpSection(_Device):
    """[[pumps]]: a chilled-water or condenser-water pump."""

    role: ClassVar[str] = "pump"
    kind: ClassVar[Kind] = Kind.PUMP
    model: str = "pump-modbus"
    unit: int = Field(default=1, ge=1, le=247)
    loop: Literal["chw", "cw"]
    standby: bool = False  # a standby pump starts with its run command off


class CrahSection(_Device):
    """[[crahs]]: an air handler in a room."""

    role: ClassVar[str] = "crah"
    kind: ClassVar[Kind] = Kind.CRAH
    model: str = "crah-bacnet"
    room: str
    device_instance: int | None = Field(default=None, ge=0, le=4194302)


class GatewaySection(_Device):
    """[[gateways]]: an NB-IoT sensor gateway; racks name its sensors as "id:N"."""

    role: ClassVar[str] = "gateway"
    kind: ClassVar[Kind] = Kind.GATEWAY
    model: str = "gateway-nbiot"
    unit: int = Field(default=1, ge=1, le=247)
    room: str


class EventSection(_Strict):
    """[[events]]: something that happens at a simulated time."""

    at_s: float = Field(ge=0)
    kind: EventKind
    target: str | None = None
    duration_s: float | None = Field(default=None, gt=0)
    delay_s: float | None = Field(default=None, gt=0, le=60)


DeviceSection = (
    MeterSection | UpsSection | PduSection | ChillerSection | TowerSection | PumpSection | CrahSection | GatewaySection
)


class Scenario(_Strict):
    """A whole scenario file."""

    site: SiteSection
    control: ControlSection = ControlSection()
    weather: WeatherSection = WeatherSection()
    load: LoadSection = LoadSection()
    plant: PlantSection = PlantSection()
    rooms: list[RoomSection] = Field(min_length=1)
    feeds: list[FeedSection] = Field(min_length=1)
    meters: list[MeterSection] = Field(default_factory=list)
    upses: list[UpsSection] = Field(min_length=1)
    pdus: list[PduSection] = Field(min_length=1)
    racks: list[RackSection] = Field(min_length=1)
    chillers: list[ChillerSection] = Field(min_length=1)
    towers: list[TowerSection] = Field(min_length=1)
    pumps: list[PumpSection] = Field(min_length=2)
    crahs: list[CrahSection] = Field(default_factory=list)
    gateways: list[GatewaySection] = Field(default_factory=list)
    events: list[EventSection] = Field(default_factory=list)

    def devices(self) -> list[DeviceSection]:
        """Every served device, in file order by section."""
        return [
            *self.meters,
            *self.upses,
            *self.pdus,
            *self.chillers,
            *self.towers,
            *self.pumps,
            *self.crahs,
            *self.gateways,
        ]

    def sections(self) -> Iterator[tuple[str, list[DeviceSection]]]:
        """(section name, devices) for each device section."""
        for name in ("meters", "upses", "pdus", "chillers", "towers", "pumps", "crahs", "gateways"):
            yield name, list(getattr(self, name))


@dataclass(frozen=True, slots=True)
class LoadedScenario:
    """A validated scenario with every device's model loaded."""

    path: Path
    scenario: Scenario
    models: dict[str, DeviceModel]  # by device id

    @property
    def base_dir(self) -> Path:
        """The folder relative paths in the scenario start from."""
        return self.path.parent


# Models each role accepts (by kind and protocol).
_ROLE_MODELS: Final[dict[str, tuple[Kind, frozenset[Protocol]]]] = {
    "meter": (Kind.METER, frozenset({Protocol.MODBUS})),
    "ups": (Kind.UPS, frozenset({Protocol.MODBUS, Protocol.SNMP})),
    "pdu": (Kind.PDU, frozenset({Protocol.SNMP})),
    "chiller": (Kind.CHILLER, frozenset({Protocol.BACNET})),
    "tower": (Kind.TOWER, frozenset({Protocol.MODBUS})),
    "pump": (Kind.PUMP, frozenset({Protocol.MODBUS})),
    "crah": (Kind.CRAH, frozenset({Protocol.BACNET})),
    "gateway": (Kind.GATEWAY, frozenset({Protocol.MODBUS})),
}
APC_NOMINAL_MAX_KW: Final = 65.535  # register 589 is a uint16 of watts


def load_scenario(path: str | Path) -> LoadedScenario:
    """Read and validate a scenario file; ConfigError names the file, the key and every problem."""
    p = Path(path)
    data = read_toml(p)
    sc = validate(Scenario, data, p)
    models, problems = _check_devices(sc, p)
    problems += _cross_checks(sc, models)
    if problems:
        raise ConfigError(p, problems)
    return LoadedScenario(path=p, scenario=sc, models=models)


def _check_devices(sc: Scenario, p: Path) -> tuple[dict[str, DeviceModel], list[tuple[str, str]]]:
    """Each device's model (loaded, of the right kind and protocol), unique ids and ports."""
    problems: list[tuple[str, str]] = []
    models: dict[str, DeviceModel] = {}
    seen_ids: dict[str, str] = {}
    seen_ports: dict[tuple[str, int], str] = {}
    for section, devices in sc.sections():
        for i, dev in enumerate(devices):
            key = f"{section}[{i}] ({dev.id})"
            if dev.id in seen_ids:
                problems.append((f"{key}.id", f"{dev.id!r} is already used by {seen_ids[dev.id]}"))
            seen_ids[dev.id] = key
            try:
                model = catalog.load(dev.model, base=p.parent)
            except ConfigError as exc:
                problems.append((f"{key}.model", str(exc)))
                continue
            kind, protocols = _ROLE_MODELS[dev.role]
            if model.kind is not kind or model.protocol not in protocols:
                wanted = "/".join(sorted(protocols))
                problems.append(
                    (f"{key}.model", f"model {model.id!r} is a {model.protocol} {model.kind}, not a {wanted} {kind}")
                )
                continue
            transport = "udp" if model.protocol in (Protocol.SNMP, Protocol.BACNET) else "tcp"
            used = seen_ports.get((transport, dev.port))
            if used is not None:
                problems.append((f"{key}.port", f"{transport} port {dev.port} is already used by {used}"))
            seen_ports[(transport, dev.port)] = key
            models[dev.id] = model
    used = seen_ports.get(("tcp", sc.control.port))
    if sc.control.port and used is not None:
        problems.append(("control.port", f"tcp port {sc.control.port} is already used by {used}"))
    return models, problems


def _cross_checks(sc: Scenario, models: Mapping[str, DeviceModel]) -> list[tuple[str, str]]:  # noqa: C901, PLR0912
    problems: list[tuple[str, str]] = []
    rooms = {r.id for r in sc.rooms}
    feeds = {f.id for f in sc.feeds}
    upses = {u.id for u in sc.upses}
    pdus = {p.id: 0 for p in sc.pdus}
    gateways = {g.id for g in sc.gateways}
    shares = [f.mechanical_share for f in sc.feeds if f.mechanical_share is not None]
    if sum(shares) > 1.0 + 1e-9 or (len(shares) == len(sc.feeds) and abs(sum(shares) - 1.0) > 1e-6):
        problems.append(("feeds", f"mechanical_share values add up to {sum(shares)}, not 1"))
    for i, m in enumerate(sc.meters):
        if m.measures == "feed" and m.feed not in feeds:
            problems.append((f"meters[{i}] ({m.id}).feed", f"no feed {m.feed!r} (feeds: {', '.join(sorted(feeds))})"))
        if m.measures == "plant" and m.feed is not None:
            problems.append((f"meters[{i}] ({m.id}).feed", "a plant meter measures the plant, not a feed"))
    for i, u in enumerate(sc.upses):
        if u.feed not in feeds:
            problems.append((f"upses[{i}] ({u.id}).feed", f"no feed {u.feed!r}"))
        model = models.get(u.id)
        if model is not None and model.id == "ups-apc-modbus" and u.rated_kw > APC_NOMINAL_MAX_KW:
            problems.append(
                (f"upses[{i}] ({u.id}).rated_kw", f"{model.id} reports its rating in a uint16 of W (at most 65.5 kW)")
            )
    for i, pdu in enumerate(sc.pdus):
        if pdu.ups not in upses:
            problems.append((f"pdus[{i}] ({pdu.id}).ups", f"no UPS {pdu.ups!r}"))
    sensors: dict[str, str] = {}
    for i, r in enumerate(sc.racks):
        key = f"racks[{i}] ({r.id})"
        if r.room not in rooms:
            problems.append((f"{key}.room", f"no room {r.room!r}"))
        if len(set(r.pdus)) != len(r.pdus):
            problems.append((f"{key}.pdus", "the same PDU is named twice"))
        for name in r.pdus:
            if name not in pdus:
                problems.append((f"{key}.pdus", f"no PDU {name!r}"))
            else:
                pdus[name] += 1
        if r.sensor is not None:
            gw, _, n = r.sensor.rpartition(":")
            if gw not in gateways or not n.isdigit() or not 1 <= int(n) <= 16:
                problems.append((f"{key}.sensor", f"{r.sensor!r} is not 'gateway-id:N' with N in 1-16"))
            elif r.sensor in sensors:
                problems.append((f"{key}.sensor", f"sensor {r.sensor} already watches rack {sensors[r.sensor]}"))
            sensors[r.sensor] = r.id
    rack_ids = [r.id for r in sc.racks]
    if len(set(rack_ids)) != len(rack_ids):
        problems.append(("racks", "rack ids must be unique"))
    for i, pdu in enumerate(sc.pdus):
        model = models.get(pdu.id)
        outlets = _outlet_rows(model) if model is not None else []
        if pdus[pdu.id] > len(outlets):
            problems.append((f"pdus[{i}] ({pdu.id})", f"feeds {pdus[pdu.id]} racks but has {len(outlets)} outlets"))
    for i, c in enumerate(sc.crahs):
        if c.room not in rooms:
            problems.append((f"crahs[{i}] ({c.id}).room", f"no room {c.room!r}"))
    for i, g in enumerate(sc.gateways):
        if g.room not in rooms:
            problems.append((f"gateways[{i}] ({g.id}).room", f"no room {g.room!r}"))
    problems.extend(
        ("pumps", f"the {loop} loop needs at least one pump that is not standby")
        for loop in ("chw", "cw")
        if not any(p.loop == loop and not p.standby for p in sc.pumps)
    )
    return problems + _event_checks(sc)


def _event_checks(sc: Scenario) -> list[tuple[str, str]]:
    """Every scheduled event names a target of the right kind."""
    gateways = {g.id for g in sc.gateways}
    targets = {
        "feed": {f.id for f in sc.feeds},
        "ups": {u.id for u in sc.upses},
        "pdu": {p.id for p in sc.pdus},
        "chiller": {c.id for c in sc.chillers},
        "tower": {t.id for t in sc.towers},
        "sensor": {f"{g}:{n}" for g in gateways for n in range(1, 17)},
        "device": {d.id for d in sc.devices()},
    }
    problems: list[tuple[str, str]] = []
    for i, ev in enumerate(sc.events):
        what = EVENT_TARGETS[ev.kind]
        if ev.target is None and ev.kind not in OPTIONAL_TARGET:
            problems.append((f"events[{i}].target", f"{ev.kind} needs a {what} id"))
        elif ev.target is not None and ev.target not in targets[what]:
            problems.append((f"events[{i}].target", f"no {what} {ev.target!r}"))
    return problems


def _outlet_rows(model: DeviceModel) -> list[str]:
    for table in model.tables:
        if table.name == "outlet":
            return list(table.rows or [])
    return []


# ---------------------------------------------------------------- device adapters


def _garble(values: Mapping[str, Value], rng: random.Random) -> dict[str, Value]:
    """Nonsense in place of every number (what a confused device answers)."""
    out: dict[str, Value] = {}
    for name, value in values.items():
        if isinstance(value, float):
            out[name] = rng.choice((-1.0, 1.0)) * 10 ** rng.uniform(0, 6)
        elif isinstance(value, int) and not isinstance(value, bool):
            out[name] = rng.randrange(0, 60000)
        else:
            out[name] = value
    return out


class Adapter(ABC):
    """One simulated device of the site: its protocol server and the mapping from the physics to its points."""

    def __init__(self, site: Site, section: DeviceSection, model: DeviceModel) -> None:
        self.site = site
        self.section = section
        self.model = model
        self.id = section.id
        self.port = section.port
        self.fault = DeviceFault()
        self._rng = random.Random(f"{site.physics.seed}:{section.id}")

    @property
    def phys(self) -> SitePhysics:
        """The site physics."""
        return self.site.physics

    @abstractmethod
    async def start(self, host: str) -> None:
        """Bind the device's port and start answering."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop answering and release the port."""

    def read_controls(self) -> None:  # noqa: B027  (most devices take no setpoints)
        """Pull what clients wrote (setpoints, run commands) into the physics."""

    @abstractmethod
    def publish(self) -> None:
        """Push the physics' values into the protocol server."""

    @abstractmethod
    def apply_fault(self, fault: DeviceFault) -> None:
        """Make the server misbehave (or behave again)."""

    def describe(self) -> dict[str, Any]:
        """The device for the control API."""
        return {
            "id": self.id,
            "role": self.section.role,
            "model": self.model.id,
            "protocol": str(self.model.protocol),
            "port": self.port,
            "fault": {"offline": self.fault.offline, "delay_s": self.fault.delay_s, "garbage": self.fault.garbage},
        }


# -- Modbus ----------------------------------------------------------------------------------


class ModbusAdapter(Adapter):
    """A Modbus TCP device (meter, APC UPS, tower, pump, gateway)."""

    def __init__(self, site: Site, section: DeviceSection, model: DeviceModel) -> None:
        super().__init__(site, section, model)
        self.unit_id = int(getattr(section, "unit", 1))
        self.sim = ModbusSimulator({self.unit_id: model}, seed=site.physics.seed, clock=lambda: self.phys.t_s)
        self.values = MODBUS_VALUES[section.role]
        self.controls = MODBUS_CONTROLS.get(section.role)
        initial = MODBUS_INITIAL.get(section.role)
        if initial is not None:
            for name, value in initial(self).items():
                self.device.set_value(name, value)

    @property
    def device(self) -> SimDevice:
        """The simulated unit."""
        return self.sim.unit(self.unit_id)

    async def start(self, host: str) -> None:
        """Listen on the device's TCP port."""
        await self.sim.start(host, self.port)

    async def stop(self) -> None:
        """Close the server."""
        await self.sim.stop()

    def read_controls(self) -> None:
        """Setpoints written by clients."""
        if self.controls is not None:
            self.controls(self)

    def reading(self, name: str) -> Value:
        """The value the unit serves for a point (None when it does not decode)."""
        return self.device.reading(name).value

    def publish(self) -> None:
        """Set every physics-driven point."""
        for name, value in self.values(self).items():
            self.device.set_value(name, value)

    def apply_fault(self, fault: DeviceFault) -> None:
        """Silence, slow answers or corrupted frames."""
        self.fault = fault
        f = self.sim.fault(self.unit_id)
        f.silent = fault.offline
        f.delay_s = fault.delay_s
        f.corrupt = GARBAGE_FRAMES if fault.garbage else 0


def _meter_values(a: Adapter) -> dict[str, Value]:
    phys = a.phys
    meter = next(m for m in phys.meters if m.id == a.id)
    live = (meter.measures == "plant" and phys.plant_powered) or (
        meter.feed is not None and phys.feeds[phys.feed_index[meter.feed]].alive
    )
    kw = meter.power_kw
    pf = 0.97 if kw > 0 else 1.0
    base = a.site.counter_base(a.id)
    kwh = base + meter.kwh
    volts = VOLTAGE_V if live else 0.0
    phase_w = kw * 1000.0 / 3.0
    amps = phase_w / VOLTAGE_V / pf if live else 0.0
    apparent = phase_w / pf
    reactive = math.sqrt(max(0.0, apparent**2 - phase_w**2))
    out: dict[str, Value] = {
        "total_power": kw * 1000.0,
        "total_apparent_power": 3 * apparent,
        "total_reactive_power": 3 * reactive,
        "power_factor": pf,
        "frequency": FREQUENCY_HZ if live else 0.0,
        "import_energy": kwh,
        "export_energy": 0.0,
        "total_energy": kwh,
        "neutral_current": 0.02 * amps,
    }
    for n in (1, 2, 3):
        out |= {
            f"l{n}_voltage": volts,
            f"l{n}_current": amps,
            f"l{n}_power": phase_w,
            f"l{n}_apparent_power": apparent,
            f"l{n}_reactive_power": reactive,
            f"l{n}_power_factor": pf,
        }
    for name in ("l1_l2_voltage", "l2_l3_voltage", "l3_l1_voltage"):
        out[name] = volts * math.sqrt(3.0)
    return out


def _apc_status(source: str) -> str:
    return {
        "normal": "online",
        "bypass": "online,bypass",
        "battery": "on_battery,input_bad",
        "none": "output_off,input_bad",
    }[source]


def _ups_apc_values(a: Adapter) -> dict[str, Value]:
    ups = a.phys.upses[a.phys.ups_index[a.id]]
    on = ups.output_on
    return {
        "status": _apc_status(ups.source),
        "transfer_reason": "acceptable_input" if ups.mains else "low_input_voltage",
        "runtime_remaining": round(ups.runtime_min() * 60.0),
        "battery_charge": ups.charge_pct,
        "load": min(255.0, 100.0 * ups.load_fraction),
        "output_current": min(2047.0, ups.output_kw * 1000.0 / VOLTAGE_V) if on else 0.0,
        "output_voltage": VOLTAGE_V if on else 0.0,
        "output_frequency": FREQUENCY_HZ if on else 0.0,
        "input_voltage": 231.0 if ups.mains else 0.0,
        "nominal_power": round(ups.rated_kw * 1000.0),
    }


def _tower_values(a: Adapter) -> dict[str, Value]:
    phys = a.phys
    tower = next(t for t in phys.towers if t.id == a.id)
    p = phys.plant
    total_cells = sum(t.cells for t in phys.towers)
    assert phys.target is not None  # noqa: S101
    flow_kg_s = phys.target.cw_flow_ratio * phys.params.cw_pump.design_flow_kg_s * tower.cells / total_cells
    speed = 100.0 * tower.airflow_ratio
    return {
        "entering_water_temperature": p["tower_entering_c"],
        "leaving_water_temperature": p["tower_leaving_c"],
        "wet_bulb_temperature": phys.wet_bulb_c,
        "outdoor_temperature": phys.dry_bulb_c,
        "fan_speed": speed,
        "fan_frequency": FREQUENCY_HZ * tower.airflow_ratio,
        "fan_power": tower.fan_kw,
        "fan_current": tower.fan_kw * 1000.0 / (math.sqrt(3.0) * 400.0 * 0.85),
        "basin_temperature": p["tower_leaving_c"],
        "water_flow": flow_kg_s * 3.6,
        "fan_energy": a.site.counter_base(a.id) + tower.kwh,
        "fan_run_hours": 1000.0 + tower.run_h,
        "fan_running": tower.fan_kw > 0.0,
        "vfd_fault": tower.fan_failed,
        "vibration_alarm": False,
        "basin_low_level": False,
    }


def _tower_initial(a: Adapter) -> dict[str, Value]:
    return {"leaving_water_setpoint": a.phys.scenario.plant.cw_setpoint_c, "control_mode": "auto_setpoint"}


def _tower_controls(a: ModbusAdapter) -> None:
    tower = next(t for t in a.phys.towers if t.id == a.id)
    setpoint = a.reading("leaving_water_setpoint")
    if isinstance(setpoint, int | float) and math.isfinite(setpoint):
        tower.setpoint_c = float(setpoint)
    enable = a.reading("fan_enable")
    if isinstance(enable, bool):
        tower.fan_enable = enable


def _pump_values(a: Adapter) -> dict[str, Value]:
    pump = next(q for q in a.phys.pumps if q.id == a.id)
    speed = pump.speed_pct if pump.running else 0.0
    suction = 150.0
    load = pump.power_kw / max(1e-9, _pump_design_kw(a))
    return {
        "speed": speed,
        "motor_speed": round(14.8 * speed),
        "frequency": 0.5 * speed,
        "power": pump.power_kw,
        "current": pump.power_kw * 1000.0 / (math.sqrt(3.0) * 400.0 * 0.85),
        "flow": pump.flow_kg_s * 3.6,
        "differential_pressure": pump.head_kpa,
        "suction_pressure": suction if pump.running else 100.0,
        "discharge_pressure": suction + pump.head_kpa if pump.running else 100.0,
        "motor_temperature": 35.0 + 30.0 * min(1.0, load),
        "energy": a.site.counter_base(a.id) + pump.kwh,
        "run_hours": round(2000.0 + pump.run_h),
        "state": "running" if pump.running else "stopped",
        "fault_code": 0,
        "running": pump.running,
        "drive_fault": False,
        "remote_mode": True,
    }


def _pump_design_kw(a: Adapter) -> float:
    pump = next(q for q in a.phys.pumps if q.id == a.id)
    params = a.phys.params.chw_pump if pump.loop == "chw" else a.phys.params.cw_pump
    duty = max(1, sum(1 for q in a.phys.pumps if q.loop == pump.loop and not q.standby))
    return params.design_kw / duty


def _pump_initial(a: Adapter) -> dict[str, Value]:
    pump = next(q for q in a.phys.pumps if q.id == a.id)
    return {"speed_setpoint": pump.speed_pct, "run_command": pump.run_command, "control_mode": "speed"}


def _pump_controls(a: ModbusAdapter) -> None:
    pump = next(q for q in a.phys.pumps if q.id == a.id)
    speed = a.reading("speed_setpoint")
    if isinstance(speed, int | float) and math.isfinite(speed):
        pump.speed_pct = float(speed)
    run = a.reading("run_command")
    if isinstance(run, bool):
        pump.run_command = run


def _gateway_values(a: Adapter) -> dict[str, Value]:
    phys = a.phys
    out: dict[str, Value] = {"sensor_count": 16}
    online = 0
    for s in phys.sensors:
        if s.gateway != a.id:
            continue
        age = phys.sensor_age_s(s)
        online += age <= 1.5 * s.period_s
        n = f"sensor{s.index:02d}"
        out |= {
            f"{n}_temperature": s.temperature_c,
            f"{n}_humidity": min(100.0, max(0.0, s.humidity_pct)),
            f"{n}_leak": False,
            f"{n}_battery": round(s.battery_pct),
            f"{n}_age": round(min(age, 2**32 - 1)),
        }
    out["sensors_online"] = online
    return out


MODBUS_VALUES: Final[dict[str, Callable[[Adapter], dict[str, Value]]]] = {
    "meter": _meter_values,
    "ups": _ups_apc_values,
    "tower": _tower_values,
    "pump": _pump_values,
    "gateway": _gateway_values,
}
MODBUS_INITIAL: Final[dict[str, Callable[[Adapter], dict[str, Value]]]] = {
    "tower": _tower_initial,
    "pump": _pump_initial,
}
MODBUS_CONTROLS: Final[dict[str, Callable[[ModbusAdapter], None]]] = {
    "tower": _tower_controls,
    "pump": _pump_controls,
}


# -- BACnet ----------------------------------------------------------------------------------


class BacnetAdapter(Adapter):
    """A BACnet/IP device (chiller, air handler)."""

    def __init__(self, site: Site, section: DeviceSection, model: DeviceModel, instance: int) -> None:
        super().__init__(site, section, model)
        self.instance = instance
        self.device: SimulatedDevice | None = None
        self.values = BACNET_VALUES[section.role]

    async def start(self, host: str) -> None:
        """Bind the device's UDP port and create its objects."""
        device = SimulatedDevice(self.model, host, self.port, instance=self.instance, seed=self.phys.seed)
        await device.start()
        self.device = device
        if self.section.role == "chiller":
            device.set_value("chw_supply_setpoint", self.phys.scenario.plant.chw_supply_c)
            device.set_value("run_command", value=True)

    async def stop(self) -> None:
        """Release the UDP port."""
        if self.device is not None:
            self.device.close()
            self.device = None

    def read_controls(self) -> None:
        """The chiller's commandable setpoint and run command, the CRAH's supply-air setpoint."""
        if self.device is None:
            return
        if self.section.role == "chiller":
            chiller = next(c for c in self.phys.chillers if c.id == self.id)
            setpoint = self.device.value("chw_supply_setpoint")
            if isinstance(setpoint, int | float) and math.isfinite(setpoint):
                chiller.setpoint_c = float(setpoint)
            run = self.device.value("run_command")
            if isinstance(run, bool):
                chiller.run_command = run
        else:
            crah = next(c for c in self.phys.crahs if c.id == self.id)
            setpoint = self.device.value("supply_air_setpoint")
            if isinstance(setpoint, int | float) and math.isfinite(setpoint):
                crah.setpoint_c = float(setpoint)

    def publish(self) -> None:
        """Set the present value of every physics-driven object."""
        if self.device is None:
            return
        values = self.values(self)
        if self.fault.garbage:
            values = _garble(values, self._rng)
        for name, value in values.items():
            self.device.set_value(name, value)

    def apply_fault(self, fault: DeviceFault) -> None:
        """No answers, or slow ones (garbage is applied to the values)."""
        self.fault = fault
        if self.device is not None:
            self.device.faults.no_answer = fault.offline
            self.device.faults.delay_s = fault.delay_s


def _chiller_values(a: Adapter) -> dict[str, Value]:
    phys = a.phys
    assert phys.target is not None  # noqa: S101
    chiller = next(c for c in phys.chillers if c.id == a.id)
    p = phys.plant
    n = max(1, phys.target.running)
    rated_kw = phys.params.chiller.capacity_ref_kw / phys.params.chiller.cop_ref
    chw_flow = phys.target.chw_flow_ratio * phys.params.chw_pump.design_flow_kg_s / n
    cw_flow = phys.target.cw_flow_ratio * phys.params.cw_pump.design_flow_kg_s / n
    running = chiller.running
    mode = "cooling" if running else "free-cooling" if phys.target.economiser_on and not chiller.tripped else "off"
    return {
        "chw_supply_temp": p["chw_supply_c"] if running else p["chw_return_c"],
        "chw_return_temp": p["chw_return_c"],
        "cw_supply_temp": p["cw_entering_chiller_c"],
        "cw_return_temp": p["tower_entering_c"] if running else p["cw_entering_chiller_c"],
        "power": chiller.power_kw,
        "rla": min(110.0, 100.0 * chiller.power_kw / rated_kw),
        "chw_flow": chw_flow if running else 0.0,
        "cw_flow": cw_flow if running else 0.0,
        "running": running,
        "alarm": chiller.tripped,
        "mode": mode,
    }


def _crah_values(a: Adapter) -> dict[str, Value]:
    phys = a.phys
    crah = next(c for c in phys.crahs if c.id == a.id)
    supply = phys.plant["supply_air_c"] + (phys.room_inlet_c(crah.room) - phys.plant["it_inlet_c"])
    design_it = sum(r.design_kw for r in phys.racks)
    rise = phys.params.air_side.air_rise_k * (phys.it_kw / design_it if design_it > 0 else 0.0) / 0.9
    return {
        "supply_air_temp": supply,
        "return_air_temp": supply + rise,
        "fan_speed": min(100.0, crah.fan_pct),
        "valve_position": crah.valve_pct,
        "running": phys.plant_powered,
        "alarm": False,
    }


BACNET_VALUES: Final[dict[str, Callable[[Adapter], dict[str, Value]]]] = {
    "chiller": _chiller_values,
    "crah": _crah_values,
}


# -- SNMP ------------------------------------------------------------------------------------


class _LinkedUpsState(UpsState):
    """An RFC 1628 UPS state machine whose battery follows the site physics instead of its own model."""

    def __init__(self, site: Site, ups_id: str, lines: int, low_batt_min: float) -> None:
        super().__init__(lines=lines, low_batt_min=low_batt_min)
        self._site = site
        self._ups_id = ups_id

    @property
    def runtime_min(self) -> float:
        """UpsEstimatedMinutesRemaining at the present load."""
        phys = self._site.physics
        return phys.upses[phys.ups_index[self._ups_id]].runtime_min()

    def advance(self, dt_s: float) -> None:
        """Only the clock moves: the physics drains and charges the battery."""
        if dt_s > 0:
            self.now_s += dt_s


class SnmpAdapter(Adapter):
    """An SNMP agent (RFC 1628 UPS, rPDU2 PDU)."""

    def __init__(self, site: Site, section: DeviceSection, model: DeviceModel) -> None:
        super().__init__(site, section, model)
        # speed 0: the agent's clock is the site's, moved by publish(). SNMP v1/v2c only: SNMPv3 key
        # localisation costs a third of a second per agent, which a site of dozens of agents does not need.
        self.sim = SnmpSimulator(model, site.host, section.port, site.physics.seed, speed=0.0, v3_users=())
        self._sets_seen = 0
        self._device_reset_kwh = 0.0
        self._outlet_reset_kwh: dict[int, float] = {}
        if self.sim.ups is not None:
            linked = _LinkedUpsState(self.site, self.id, self.sim.ups.lines, self.sim.ups.low_batt_min)
            linked.listeners.append(self.sim._on_ups_event)  # noqa: SLF001  (the agent's trap hook)
            self.sim.ups = linked
            ups = site.physics.upses[site.physics.ups_index[self.id]]
            linked.low_batt_min = ups.low_battery_min

    async def start(self, host: str) -> None:
        """Bind the device's UDP port."""
        self.sim.host = host
        await self.sim.start()

    async def stop(self) -> None:
        """Release the UDP port."""
        await self.sim.stop()

    def read_controls(self) -> None:
        """UPS: the low-battery threshold; PDU: energy counter resets."""
        sets = self.sim.sets[self._sets_seen :]
        self._sets_seen = len(self.sim.sets)
        phys = self.phys
        if self.section.role == "ups" and self.sim.ups is not None:
            phys.upses[phys.ups_index[self.id]].low_battery_min = float(self.sim.ups.low_batt_min)
            return
        pdu = phys.pdus[phys.pdu_index[self.id]] if self.id in phys.pdu_index else None
        for oid, value in sets:
            if pdu is None or value != "reset":
                continue
            if oid == PduState.DEVICE_RESET:
                self._device_reset_kwh = pdu.kwh
            elif oid == PduState.OUTLETS_RESET:
                self._outlet_reset_kwh = dict(enumerate(pdu.outlet_kwh))

    def publish(self) -> None:
        """Move the agent's clock to the site's and set every physics-driven object."""
        self.sim.advance(max(0.0, self.phys.t_s - self.sim.now_s()))
        values = _snmp_ups_values(self) if self.section.role == "ups" else _snmp_pdu_values(self)
        if self.fault.garbage:
            values = _garble(values, self._rng)
        self.sim.overrides.update(values)

    def apply_fault(self, fault: DeviceFault) -> None:
        """Dropped or slow answers (garbage is applied to the values)."""
        self.fault = fault
        self.sim.faults.drop = fault.offline
        self.sim.faults.delay_s = fault.delay_s


def _snmp_ups_values(a: SnmpAdapter) -> dict[str, Value]:
    phys = a.phys
    ups = phys.upses[phys.ups_index[a.id]]
    state = a.sim.ups
    assert state is not None  # noqa: S101  (an RFC 1628 model has UPS-MIB objects)
    # The state machine follows the physics: mains, bypass, then the battery (depletion turns the output off).
    if ups.mains and not state.mains:
        state.restore_mains()
    elif not ups.mains and state.mains:
        state.fail_mains()
    if state.bypass != ups.bypass:
        state.set_bypass(ups.bypass)
    state.drain_to(ups.charge_pct)
    b = UPS_BASE
    lines = state.lines
    out_w = ups.output_kw * 1000.0 / lines
    in_w = ups.input_kw * 1000.0 / lines
    on = ups.output_on
    values: dict[str, Value] = {
        f"{b}.2.6.0": round(
            -ups.discharge_kw * 1000.0 / UpsState.BATTERY_V
            if ups.source == "battery"
            else ups.charging_kw * 1000.0 / UpsState.BATTERY_V,
            1,
        ),
        f"{b}.9.5.0": round(ups.rated_kw * 1000.0 / 0.9),
        f"{b}.9.6.0": round(ups.rated_kw * 1000.0),
    }
    for line in range(1, lines + 1):
        values |= {
            f"{b}.3.3.1.2.{line}": FREQUENCY_HZ if ups.mains else 0.0,
            f"{b}.3.3.1.3.{line}": round(VOLTAGE_V) if ups.mains else 0,
            f"{b}.3.3.1.4.{line}": round(in_w / VOLTAGE_V, 1) if ups.mains else 0.0,
            f"{b}.3.3.1.5.{line}": round(in_w) if ups.mains else 0,
            f"{b}.4.4.1.2.{line}": round(VOLTAGE_V) if on else 0,
            f"{b}.4.4.1.3.{line}": round(out_w / VOLTAGE_V, 1) if on else 0.0,
            f"{b}.4.4.1.4.{line}": round(out_w) if on else 0,
            f"{b}.4.4.1.5.{line}": round(100.0 * ups.load_fraction) if on else 0,
            f"{b}.5.3.1.3.{line}": round(out_w / VOLTAGE_V, 1) if ups.source == "bypass" else 0.0,
            f"{b}.5.3.1.4.{line}": round(out_w) if ups.source == "bypass" else 0,
        }
    if not on:
        values[f"{b}.4.2.0"] = 0.0
    else:
        a.sim.overrides.pop(f"{b}.4.2.0", None)
    return values


def _pdu_load_state(current_a: float, rating_a: float) -> str:
    ratio = current_a / rating_a
    if ratio > 1.0:
        return "overload"
    if ratio > 0.8:
        return "nearOverload"
    if ratio < 0.1:
        return "lowLoad"
    return "normal"


def _snmp_pdu_values(a: SnmpAdapter) -> dict[str, Value]:
    phys = a.phys
    pdu = phys.pdus[phys.pdu_index[a.id]]
    section = a.section
    assert isinstance(section, PduSection)  # noqa: S101
    volts = pdu.voltage_v
    design_kw = sum(phys.racks[r].design_kw / len(phys.racks[r].pdus) for r in pdu.racks)
    rating = section.phase_rating_a or max(1.0, 1.5 * design_kw * 1000.0 / 3.0 / volts)
    base = a.site.counter_base(a.id)
    b = PDU_BASE
    phase_kw = [0.0, 0.0, 0.0]
    rows = _outlet_rows(a.model)
    values: dict[str, Value] = {
        f"{b}.2.1.3.1": a.id,
        f"{b}.4.3.1.5.1": round(pdu.power_kw, 2),
        f"{b}.4.3.1.6.1": round(pdu.peak_kw, 2),
        f"{b}.4.3.1.9.1": round(base + pdu.kwh - a._device_reset_kwh, 1),  # noqa: SLF001
    }
    for j, row in enumerate(rows):
        kw = pdu.outlet_kw[j] if j < len(pdu.outlet_kw) else 0.0
        kwh = pdu.outlet_kwh[j] - a._outlet_reset_kwh.get(j, 0.0) if j < len(pdu.outlet_kwh) else 0.0  # noqa: SLF001
        phase_kw[j % 3] += kw
        name = phys.racks[pdu.racks[j]].id if j < len(pdu.racks) else f"Outlet {row}"
        values |= {
            f"{b}.9.4.3.1.3.{row}": name,
            f"{b}.9.4.3.1.6.{row}": round(kw * 1000.0 / volts, 1),
            f"{b}.9.4.3.1.7.{row}": round(kw * 1000.0),
            f"{b}.9.4.3.1.8.{row}": round(max(kw * 1000.0, 0.0)),
            f"{b}.9.4.3.1.11.{row}": round(base / 24.0 + kwh, 1),
        }
    live = not pdu.tripped and phys.upses[phys.ups_index[pdu.ups]].output_on
    total_a = 0.0
    for n in (1, 2, 3):
        amps = phase_kw[n - 1] * 1000.0 / volts
        total_a += amps
        values |= {
            f"{b}.6.3.1.4.{n}": _pdu_load_state(amps, rating),
            f"{b}.6.3.1.5.{n}": round(amps, 1),
            f"{b}.6.3.1.6.{n}": round(volts) if live else 0,
            f"{b}.6.3.1.7.{n}": round(phase_kw[n - 1], 2),
        }
    values[f"{b}.4.3.1.4.1"] = _pdu_load_state(max(phase_kw) * 1000.0 / volts, rating)
    for bank in (1, 2):
        values[f"{b}.8.3.1.5.{bank}"] = round(total_a / 2.0, 1)
    return values


# ---------------------------------------------------------------- the site


class Site:
    """The served site: physics, one adapter per device, the tick loop and the control API's handle."""

    def __init__(self, loaded: LoadedScenario, clock: Clock | None = None) -> None:
        self.loaded = loaded
        sc = loaded.scenario
        self.scenario = sc
        self.host = sc.site.host
        self.physics = SitePhysics(sc, loaded.models, base_dir=loaded.base_dir)
        self.clock: Clock = clock if clock is not None else AcceleratedClock(sc.site.speed)
        self.adapters: list[Adapter] = []
        instances: dict[str, int] = {}
        for dev in sc.devices():
            model = loaded.models[dev.id]
            if model.protocol is Protocol.MODBUS:
                self.adapters.append(ModbusAdapter(self, dev, model))
            elif model.protocol is Protocol.SNMP:
                self.adapters.append(SnmpAdapter(self, dev, model))
            else:
                default = int(model.bacnet.get("device_instance", 1001))
                instance = getattr(dev, "device_instance", None)
                if instance is None:
                    instance = default + instances.get(model.id, 0)
                instances[model.id] = instances.get(model.id, 0) + 1
                self.adapters.append(BacnetAdapter(self, dev, model, instance))
        self.control: ControlServer | None = None
        self.ticks = 0

    def adapter(self, device_id: str) -> Adapter:
        """The adapter of a device (KeyError naming it)."""
        for a in self.adapters:
            if a.id == device_id:
                return a
        raise KeyError(f"site {self.scenario.site.id!r} has no device {device_id!r}")

    def counter_base(self, device_id: str) -> float:
        """Where a device's energy counter started (a plausible, seeded reading), kWh."""
        digest = sum(ord(c) * (i + 1) for i, c in enumerate(device_id))
        return float(1000 + (digest * 7919 + self.physics.seed * 104729) % 50000)

    # -- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Bind every device's port (OSError naming the device when one cannot be bound)."""
        started: list[Adapter] = []
        try:
            for a in self.adapters:
                try:
                    await a.start(self.host)
                except OSError as exc:
                    what = f"device {a.id} ({a.model.id}, {a.model.protocol})"
                    raise OSError(f"{what}: cannot listen on {self.host}:{a.port}: {exc}") from exc
                started.append(a)
        except BaseException:
            for a in started:
                with contextlib.suppress(Exception):
                    await a.stop()
            raise
        if isinstance(self.clock, AcceleratedClock) and self.physics.t_s == 0.0:
            # Simulated time starts when the site answers, not while its ports are being bound.
            self.clock = AcceleratedClock(self.clock.speed)
        self.publish()

    async def stop(self) -> None:
        """Stop the control API and every device."""
        if self.control is not None:
            await self.control.stop()
            self.control = None
        for a in self.adapters:
            with contextlib.suppress(Exception):
                await a.stop()

    async def start_control(self, host: str | None = None, port: int | None = None) -> int:
        """Serve the control API; its port."""
        cfg = self.scenario.control
        self.control = ControlServer(self, host or cfg.host, cfg.port if port is None else port)
        return await self.control.start()

    def tick(self) -> None:
        """Read client writes, move the physics to the clock, push every value."""
        for a in self.adapters:
            a.read_controls()
        self.physics.advance_to(self.clock.now_s())
        self.publish()
        self.ticks += 1

    def publish(self) -> None:
        """Apply faults and push the physics into every device."""
        faults = self.physics.device_faults()
        for a in self.adapters:
            fault = faults.get(a.id, DeviceFault())
            if fault != a.fault:
                a.apply_fault(fault)
            a.publish()

    async def run(self, stop: asyncio.Event) -> None:
        """Tick every tick_s (wall) until stop is set."""
        tick_s = self.scenario.site.tick_s
        while not stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("site %s: tick failed", self.scenario.site.id)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=tick_s)

    # -- what the control API calls --------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The site's state (GET /state)."""
        snap = self.physics.snapshot()
        snap["site"] = self.scenario.site.id
        speed = self.clock.speed if isinstance(self.clock, AcceleratedClock) else None
        snap["time"]["speed"] = speed
        return snap

    def devices(self) -> list[dict[str, Any]]:
        """Every device (GET /devices)."""
        return [a.describe() for a in self.adapters]

    def events(self) -> list[dict[str, Any]]:
        """Every event, scheduled, active or ended (GET /events)."""
        return [e.as_dict() for e in self.physics.events]

    def trigger(
        self,
        kind: str,
        target: str | None,
        duration_s: float | None = None,
        delay_s: float | None = None,
        at_s: float | None = None,
    ) -> dict[str, Any]:
        """Start (or schedule) an event (POST /events); EventError when it makes no sense."""
        self.tick()
        if at_s is None:
            ev = self.physics.trigger(kind, target, duration_s, delay_s)
        else:
            ev = self.physics.schedule(kind, target, at_s, duration_s, delay_s)
        self.publish()
        return ev.as_dict()

    def end_event(self, event_id: int) -> dict[str, Any]:
        """End an event now (DELETE /events/ID); KeyError when there is none."""
        self.tick()
        ev = self.physics.end(event_id)
        self.publish()
        return ev.as_dict()

    def set_speed(self, speed: float) -> float:
        """Change the time acceleration (POST /clock); ValueError outside 1-3600 or for a manual clock."""
        clock = self.clock
        if isinstance(clock, AcceleratedClock):
            self.tick()
            clock.set_speed(check_speed(speed))
            return clock.speed
        raise ValueError("this site runs on a manual clock: its speed cannot change")


# ---------------------------------------------------------------- configurations for the agent and collector


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def agent_config_for(
    loaded: LoadedScenario,
    mqtt_url: str = "mqtt://127.0.0.1:1883",
    *,
    agent_id: str | None = None,
    interval_s: float = 10.0,
    timeout_s: float = 2.0,
    retries: int = 1,
    spool_path: str = "spool.sqlite",
    audit_log: str = "audit.jsonl",
) -> str:
    """An agent configuration (TOML text) that polls every device of the site."""
    sc = loaded.scenario
    host = sc.site.host
    lines = [
        f"# Agent configuration generated from {loaded.path.name}: every device of site {sc.site.id}.",
        "[agent]",
        f"id = {_toml_str(agent_id or f'{sc.site.id}-agent')}",
        f"site = {_toml_str(sc.site.id)}",
        "",
        "[mqtt]",
        f"url = {_toml_str(mqtt_url)}",
        "",
        "[spool]",
        f"path = {_toml_str(spool_path)}",
        "",
        "[defaults]",
        f"interval_s = {float(interval_s)}",
        f"timeout_s = {float(timeout_s)}",
        f"retries = {int(retries)}",
        "",
        "[commands]",
        f"audit_log = {_toml_str(audit_log)}",
    ]
    instances: dict[str, int] = {}
    for dev in sc.devices():
        model = loaded.models[dev.id]
        lines += ["", "[[devices]]", f"id = {_toml_str(dev.id)}"]
        ref = (
            dev.model
            if not (dev.model.endswith(".toml") or "/" in dev.model)
            else str((loaded.base_dir / dev.model).resolve())
        )
        lines += [f"model = {_toml_str(ref)}", f"host = {_toml_str(host)}", f"port = {dev.port}"]
        if model.protocol is Protocol.SNMP:
            lines.append('snmp = { version = "2c", community = "public" }')
        elif model.protocol is Protocol.MODBUS:
            lines.append(f'modbus = {{ unit = {int(getattr(dev, "unit", 1))}, framer = "tcp" }}')
        else:
            default = int(model.bacnet.get("device_instance", 1001))
            instance = getattr(dev, "device_instance", None)
            if instance is None:
                instance = default + instances.get(model.id, 0)
            instances[model.id] = instances.get(model.id, 0) + 1
            lines.append(f"bacnet = {{ device_instance = {instance} }}")
    return "\n".join(lines) + "\n"


def collector_config_for(
    loaded: LoadedScenario,
    mqtt_url: str = "mqtt://127.0.0.1:1883",
    *,
    collector_id: str | None = None,
    store_path: str = "store.sqlite",
    timezone: str = "UTC",
) -> str:
    """A collector configuration (TOML text) that stores the site's telemetry in the embedded SQLite store."""
    sc = loaded.scenario
    return "\n".join(
        [
            f"# Collector configuration generated from {loaded.path.name} for site {sc.site.id}.",
            "[collector]",
            f"id = {_toml_str(collector_id or f'{sc.site.id}-collector')}",
            f"site = {_toml_str(sc.site.id)}",
            f"timezone = {_toml_str(timezone)}",
            "",
            "[mqtt]",
            f"url = {_toml_str(mqtt_url)}",
            "",
            "[store]",
            'kind = "sqlite"',
            f"path = {_toml_str(store_path)}",
            "",
        ]
    )


def write_configs(loaded: LoadedScenario, folder: str | Path, mqtt_url: str) -> tuple[Path, Path]:
    """Write agent.toml and collector.toml for the site into folder; their paths."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    agent = out / "agent.toml"
    collector = out / "collector.toml"
    agent.write_text(
        agent_config_for(loaded, mqtt_url, spool_path=str(out / "spool.sqlite"), audit_log=str(out / "audit.jsonl")),
        encoding="utf-8",
    )
    collector.write_text(collector_config_for(loaded, mqtt_url, store_path=str(out / "store.sqlite")), encoding="utf-8")
    return agent, collector


# ---------------------------------------------------------------- dcim-sim site


async def _serve(loaded: LoadedScenario, configs: str | None, mqtt_url: str) -> int:
    site = Site(loaded)
    sc = loaded.scenario
    try:
        await site.start()
        control_port = await site.start_control()
    except OSError as exc:
        sys.stderr.write(f"dcim-sim site {loaded.path}: {exc}\n")
        await site.stop()
        return EXIT_FAILED
    if configs is not None:
        agent, collector = write_configs(loaded, configs, mqtt_url)
        log.info("wrote %s and %s", agent, collector)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    sys.stdout.write(
        f"ready site {sc.site.id}: {len(site.adapters)} devices on {site.host}, "
        f"control on http://{sc.control.host}:{control_port}, speed {sc.site.speed:g}x\n"
    )
    sys.stdout.flush()
    try:
        await site.run(stop)
    finally:
        await site.stop()
    return EXIT_OK


def main(scenario_path: str, write_configs_to: str | None = None, mqtt_url: str = "mqtt://127.0.0.1:1883") -> int:
    """Serve a site scenario until SIGINT/SIGTERM (dcim-sim site); ConfigError for a bad scenario."""
    loaded = load_scenario(scenario_path)
    return asyncio.run(_serve(loaded, write_configs_to, mqtt_url))


__all__ = [
    "EventError",
    "LoadedScenario",
    "Scenario",
    "Site",
    "agent_config_for",
    "collector_config_for",
    "load_scenario",
    "main",
    "write_configs",
]
