"""SNMP agent simulator for any SNMP device model, with RFC 1628 UPS and rPDU2 PDU behaviour."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Self

from pysnmp.carrier.asyncio.dgram import udp
from pysnmp.entity import config as snmp_config
from pysnmp.entity import engine as snmp_engine
from pysnmp.entity.rfc3413 import cmdrsp, context
from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    UdpTransportTarget,
    UsmUserData,
    send_notification,
)
from pysnmp.proto import rfc1902, rfc1905
from pysnmp.smi import error as smi_error

from models.codec import ValueType
from models.profile import profile_value
from models.schema import Column, DeviceModel, Point, SnmpSyntax
from models.values import Value, finish, to_raw

log = logging.getLogger(__name__)

Oid = tuple[int, ...]

DEFAULT_COMMUNITY: Final = "public"
DEFAULT_V3_USER: Final = "dcim"
DEFAULT_V3_AUTH_KEY: Final = "dcim-auth-key"
DEFAULT_V3_PRIV_KEY: Final = "dcim-priv-key"

SYS_DESCR: Final = (1, 3, 6, 1, 2, 1, 1, 1, 0)
SYS_OBJECT_ID: Final = (1, 3, 6, 1, 2, 1, 1, 2, 0)
SYS_UPTIME: Final = (1, 3, 6, 1, 2, 1, 1, 3, 0)
SYS_CONTACT: Final = (1, 3, 6, 1, 2, 1, 1, 4, 0)
SYS_NAME: Final = (1, 3, 6, 1, 2, 1, 1, 5, 0)
SYS_LOCATION: Final = (1, 3, 6, 1, 2, 1, 1, 6, 0)
SNMP_TRAP_OID: Final = "1.3.6.1.6.3.1.1.4.1.0"

UPS_BASE: Final = "1.3.6.1.2.1.33.1"
UPS_TRAPS: Final = "1.3.6.1.2.1.33.2"
WELL_KNOWN_ALARMS: Final = f"{UPS_BASE}.6.3"
PDU_BASE: Final = "1.3.6.1.4.1.318.1.1.26"

# RFC 1628 well-known alarms (upsWellKnownAlarms.N)
ALARM_ON_BATTERY: Final = 2
ALARM_LOW_BATTERY: Final = 3
ALARM_DEPLETED_BATTERY: Final = 4
ALARM_INPUT_BAD: Final = 6
ALARM_ON_BYPASS: Final = 9
ALARM_OUTPUT_OFF: Final = 14
ALARM_AWAITING_POWER: Final = 21

TRAP_ON_BATTERY: Final = f"{UPS_TRAPS}.1"
TRAP_TEST_COMPLETED: Final = f"{UPS_TRAPS}.2"
TRAP_ALARM_ADDED: Final = f"{UPS_TRAPS}.3"
TRAP_ALARM_REMOVED: Final = f"{UPS_TRAPS}.4"

_AUTH: Final[dict[str, Any]] = {
    "MD5": snmp_config.USM_AUTH_HMAC96_MD5,
    "SHA": snmp_config.USM_AUTH_HMAC96_SHA,
    "SHA-256": snmp_config.USM_AUTH_HMAC192_SHA256,
    "SHA-512": snmp_config.USM_AUTH_HMAC384_SHA512,
}
_PRIV: Final[dict[str, Any]] = {
    "DES": snmp_config.USM_PRIV_CBC56_DES,
    "AES": snmp_config.USM_PRIV_CFB128_AES,
    "AES-128": snmp_config.USM_PRIV_CFB128_AES,
    "AES-256": snmp_config.USM_PRIV_CFB256_AES_BLUMENTHAL,
}


def oid_of(text: str) -> Oid:
    """A dotted OID as a tuple of integers."""
    return tuple(int(part) for part in text.strip(".").split("."))


def dotted(oid: Iterable[int]) -> str:
    """A tuple OID as dotted text."""
    return ".".join(str(part) for part in oid)


@dataclass(frozen=True, slots=True)
class V3User:
    """An SNMPv3 USM user the simulator accepts (keys are pass phrases)."""

    name: str = DEFAULT_V3_USER
    auth: str | None = "SHA-256"
    auth_key: str = DEFAULT_V3_AUTH_KEY
    priv: str | None = "AES"
    priv_key: str = DEFAULT_V3_PRIV_KEY


@dataclass
class Faults:
    """Faults injected into the simulator's answers; change them at any time."""

    drop: bool = False  # answer nothing: the manager times out
    delay_s: float = 0.0  # answer this late
    missing: set[str] = field(default_factory=set)  # OIDs (or OID subtrees) the agent does not have
    max_varbinds: int | None = None  # GET/GETNEXT/SET with more variables than this answer tooBig


@dataclass(frozen=True, slots=True)
class _Entry:
    """One served object: a point, or one cell of a table column."""

    spec: Point | Column
    row: str  # "" for scalar points
    key: str  # the point OID, or the column OID (behaviours key on it)


# ---------------------------------------------------------------- UPS behaviour (RFC 1628)


class UpsState:
    """An RFC 1628 UPS: mains, battery and output states, and the alarm table that follows them.

    mains failure -> on battery -> battery draining -> low battery -> output off;
    mains back -> output on, battery charging. Time moves only through advance().
    """

    FULL_RUNTIME_MIN: Final = 45.0  # runtime on a full battery at nominal load
    RECHARGE_S: Final = 4 * 3600.0  # empty to full
    BATTERY_V: Final = 272.0

    def __init__(self, lines: int = 1, low_batt_min: float = 5.0) -> None:
        self.lines = lines
        self.low_batt_min = low_batt_min
        self.mains = True
        self.output_on = True
        self.bypass = False  # load transferred to the static bypass (inverter out of the path)
        self.charge = 100.0
        self.now_s = 0.0
        self.on_battery_since: float | None = None
        self.line_bads = 0
        self.alarms: dict[int, tuple[int, float]] = {}  # alarm id -> (well-known alarm, time s)
        self._next_alarm = 1
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []

    # -- what the MIB shows
    @property
    def runtime_min(self) -> float:
        """UpsEstimatedMinutesRemaining at nominal load."""
        return self.charge / 100.0 * self.FULL_RUNTIME_MIN

    @property
    def battery_status(self) -> str:
        """UpsBatteryStatus by name."""
        if self.charge <= 0.0:
            return "depleted"
        if self.runtime_min <= self.low_batt_min:
            return "low"
        return "normal"

    @property
    def output_source(self) -> str:
        """UpsOutputSource by name."""
        if not self.output_on:
            return "none"
        if self.bypass and self.mains:
            return "bypass"
        return "normal" if self.mains else "battery"

    @property
    def seconds_on_battery(self) -> int:
        """upsSecondsOnBattery: 0 on mains."""
        return 0 if self.on_battery_since is None else int(self.now_s - self.on_battery_since)

    def has_alarm(self, well_known: int) -> bool:
        """Whether an alarm of that kind is present."""
        return any(kind == well_known for kind, _ in self.alarms.values())

    # -- transitions
    def fail_mains(self) -> None:
        """The input goes out of tolerance: the UPS carries the load on battery."""
        if not self.mains:
            return
        self.mains = False
        self.line_bads += 1
        self._add(ALARM_INPUT_BAD)
        if self.output_on:
            self.on_battery_since = self.now_s
            self._add(ALARM_ON_BATTERY)
            self._emit(TRAP_ON_BATTERY, {})
        self._follow_battery()

    def restore_mains(self) -> None:
        """Mains come back: output on again, battery charging."""
        if self.mains:
            return
        self.mains = True
        self.on_battery_since = None
        self.output_on = True
        for kind in (ALARM_INPUT_BAD, ALARM_ON_BATTERY, ALARM_OUTPUT_OFF, ALARM_AWAITING_POWER):
            self._remove(kind)
        self._follow_battery()

    def set_bypass(self, on: bool) -> None:
        """Transfer the load to the static bypass (on) or back to the inverter; alarm onBypass follows."""
        self.bypass = on
        self._set_alarm(ALARM_ON_BYPASS, on)

    def advance(self, dt_s: float) -> None:
        """Let dt_s seconds pass: drain on battery, charge on mains."""
        if dt_s <= 0:
            return
        self.now_s += dt_s
        if not self.mains and self.output_on:
            self.charge = max(0.0, self.charge - dt_s * 100.0 / (self.FULL_RUNTIME_MIN * 60.0))
        elif self.mains and self.charge < 100.0:
            self.charge = min(100.0, self.charge + dt_s * 100.0 / self.RECHARGE_S)
        self._follow_battery()

    def drain_to(self, charge_pct: float) -> None:
        """Jump the battery charge (for tests: reach low battery without waiting)."""
        self.charge = max(0.0, min(100.0, charge_pct))
        self._follow_battery()

    def _follow_battery(self) -> None:
        status = self.battery_status
        self._set_alarm(ALARM_LOW_BATTERY, status in ("low", "depleted"))
        self._set_alarm(ALARM_DEPLETED_BATTERY, status == "depleted")
        if status == "depleted" and self.output_on and not self.mains:
            self.output_on = False
            self.on_battery_since = None
            self._remove(ALARM_ON_BATTERY)
            self._add(ALARM_OUTPUT_OFF)
            self._add(ALARM_AWAITING_POWER)

    def _set_alarm(self, kind: int, present: bool) -> None:
        if present:
            self._add(kind)
        else:
            self._remove(kind)

    def _add(self, kind: int) -> None:
        if self.has_alarm(kind):
            return
        alarm_id = self._next_alarm
        self._next_alarm += 1
        self.alarms[alarm_id] = (kind, self.now_s)
        self._emit(
            TRAP_ALARM_ADDED,
            {f"{UPS_BASE}.6.2.1.2.{alarm_id}": f"{WELL_KNOWN_ALARMS}.{kind}"},
        )

    def _remove(self, kind: int) -> None:
        for alarm_id, (present, _) in list(self.alarms.items()):
            if present == kind:
                del self.alarms[alarm_id]
                self._emit(TRAP_ALARM_REMOVED, {f"{UPS_BASE}.6.2.1.2.{alarm_id}": f"{WELL_KNOWN_ALARMS}.{kind}"})

    def _emit(self, trap: str, objects: dict[str, Any]) -> None:
        for listener in self.listeners:
            listener(trap, objects)

    def value(self, key: str, row: str, nominal: Callable[[], Value]) -> Value:
        """The state-driven value of a UPS-MIB object, or the profile's (nominal) value."""
        b = UPS_BASE
        off = not self.output_on
        fixed: dict[str, Callable[[], Value]] = {
            f"{b}.2.1.0": lambda: self.battery_status,
            f"{b}.2.2.0": lambda: self.seconds_on_battery,
            f"{b}.2.3.0": lambda: round(self.runtime_min),
            f"{b}.2.4.0": lambda: round(self.charge),
            f"{b}.2.6.0": self._battery_current,
            f"{b}.3.1.0": lambda: self.line_bads,
            f"{b}.3.2.0": lambda: self.lines,
            f"{b}.4.1.0": lambda: self.output_source,
            f"{b}.4.3.0": lambda: self.lines,
            f"{b}.5.2.0": lambda: self.lines,
            f"{b}.6.1.0": lambda: len(self.alarms),
            f"{b}.9.7.0": lambda: self.low_batt_min,
        }
        if key in fixed:
            return fixed[key]()
        if key.startswith(f"{b}.3.3.1.") and not self.mains:
            return 0  # input table: no mains
        if key.startswith(f"{b}.4.2.0") and off:
            return 0
        if key.startswith(f"{b}.4.4.1.") and off:
            return 0  # output table: output off
        if key == f"{b}.6.2.1.3":
            return self.alarms[int(row)][1]
        return nominal()

    def _battery_current(self) -> float:
        if not self.mains and self.output_on:
            return -round(5500.0 / self.BATTERY_V, 1)
        if self.mains and self.charge < 100.0:
            return 2.0
        return 0.0

    def rows(self, key: str) -> list[str] | None:
        """Row indexes of a UPS-MIB table, or None when the state does not decide them."""
        if key == f"{UPS_BASE}.6.2.1":
            return [str(i) for i in sorted(self.alarms)]
        if key in (f"{UPS_BASE}.3.3.1", f"{UPS_BASE}.4.4.1", f"{UPS_BASE}.5.3.1"):
            return [str(i) for i in range(1, self.lines + 1)]
        return None


# ---------------------------------------------------------------- PDU behaviour (PowerNet rPDU2)


class PduState:
    """Energy counters of an rPDU2 PDU that grow with power and can be reset."""

    DEVICE_POWER: Final = f"{PDU_BASE}.4.3.1.5.1"
    DEVICE_ENERGY: Final = f"{PDU_BASE}.4.3.1.9.1"
    ENERGY_START: Final = f"{PDU_BASE}.4.3.1.10.1"
    DEVICE_RESET: Final = f"{PDU_BASE}.4.1.1.11.1"
    OUTLETS_RESET: Final = f"{PDU_BASE}.4.1.1.12.1"
    OUTLET_POWER: Final = f"{PDU_BASE}.9.4.3.1.7"
    OUTLET_ENERGY: Final = f"{PDU_BASE}.9.4.3.1.11"
    OUTLET_NAME: Final = f"{PDU_BASE}.9.4.3.1.3"

    def __init__(self, outlet_energy0: dict[str, float], device_energy0: float) -> None:
        self.outlet_energy_kwh = dict(outlet_energy0)
        self.device_energy_kwh = device_energy0
        self.energy_start = "01/01/2026 00:00:00"
        self.resets = 0

    def integrate(self, dt_s: float, outlet_power_w: dict[str, float]) -> None:
        """Let dt_s pass at the given outlet powers."""
        if dt_s <= 0:
            return
        for row, power in outlet_power_w.items():
            self.outlet_energy_kwh[row] = self.outlet_energy_kwh.get(row, 0.0) + power * dt_s / 3.6e6
        self.device_energy_kwh += sum(outlet_power_w.values()) * dt_s / 3.6e6

    def reset_device(self, now_s: float) -> None:
        """What writing reset to rPDU2DeviceConfigDeviceEnergyReset does."""
        self.device_energy_kwh = 0.0
        self.energy_start = time.strftime("%m/%d/%Y %H:%M:%S", time.gmtime(now_s))
        self.resets += 1

    def reset_outlets(self) -> None:
        """What writing reset to rPDU2DeviceConfigOutletsEnergyReset does."""
        for row in self.outlet_energy_kwh:
            self.outlet_energy_kwh[row] = 0.0
        self.resets += 1


# ---------------------------------------------------------------- MIB instrumentation


class _Instrumentation:
    """A MIB instrumentation controller serving the simulator's live values."""

    def __init__(self, sim: SnmpSimulator) -> None:
        self.sim = sim

    def _check_size(self, var_binds: tuple[Any, ...]) -> None:
        limit = self.sim.faults.max_varbinds
        if limit is not None and len(var_binds) > limit:
            raise smi_error.TooBigError

    def read_variables(self, *var_binds: Any, **_context: Any) -> list[tuple[Any, Any]]:
        self._check_size(var_binds)
        self.sim.refresh()
        return [(name, self.sim.get(tuple(name))) for name, _ in var_binds]

    def read_next_variables(self, *var_binds: Any, **_context: Any) -> list[tuple[Any, Any]]:
        self._check_size(var_binds)
        self.sim.refresh()
        out: list[tuple[Any, Any]] = []
        for name, _ in var_binds:
            nxt = self.sim.next_oid(tuple(name))
            if nxt is None:
                out.append((name, rfc1905.endOfMibView))
            else:
                out.append((rfc1902.ObjectName(nxt), self.sim.get(nxt)))
        return out

    def write_variables(self, *var_binds: Any, **_context: Any) -> list[tuple[Any, Any]]:
        self._check_size(var_binds)
        self.sim.refresh()
        return self.sim.set_many([(tuple(name), value) for name, value in var_binds])


class _SimTransport(udp.UdpAsyncioTransport):  # type: ignore[misc]
    """The agent's UDP socket, with dropped and delayed answers for fault injection."""

    sim: SnmpSimulator | None = None

    def datagram_received(self, datagram: bytes, transport_address: Any) -> None:
        if self.sim is not None and self.sim.faults.drop:
            self.sim.dropped += 1
            return
        super().datagram_received(datagram, transport_address)

    def send_message(self, outgoing: bytes, transport_address: Any) -> None:
        delay = self.sim.faults.delay_s if self.sim is not None else 0.0
        if delay > 0:
            self.loop.call_later(delay, udp.UdpAsyncioTransport.send_message, self, outgoing, transport_address)
        else:
            super().send_message(outgoing, transport_address)


class _BulkResponder(cmdrsp.BulkCommandResponder):  # type: ignore[misc]
    max_varbinds = 64


# ---------------------------------------------------------------- the simulator


def _syntax(spec: Point | Column) -> SnmpSyntax:
    if spec.syntax is not None:
        return spec.syntax
    vtype = spec.type
    if vtype is ValueType.STRING:
        return SnmpSyntax.OCTET_STRING
    if spec.enum:
        return SnmpSyntax.INTEGER32
    if spec.counter:
        return SnmpSyntax.COUNTER64 if vtype in (ValueType.UINT64, ValueType.INT64) else SnmpSyntax.COUNTER32
    if vtype in (ValueType.UINT16, ValueType.UINT32):
        return SnmpSyntax.GAUGE32
    if vtype is ValueType.UINT64:
        return SnmpSyntax.COUNTER64
    return SnmpSyntax.INTEGER32


_LIMITS: Final[dict[SnmpSyntax, int]] = {
    SnmpSyntax.COUNTER32: 2**32,
    SnmpSyntax.COUNTER64: 2**64,
    SnmpSyntax.TIMETICKS: 2**32,
}


def encode(spec: Point | Column, value: Value) -> Any:
    """A point's engineering value as the SNMP object the agent serves."""
    syntax = _syntax(spec)
    if syntax is SnmpSyntax.OCTET_STRING:
        return rfc1902.OctetString(str(value))
    if syntax is SnmpSyntax.IP_ADDRESS:
        return rfc1902.IpAddress(str(value))
    if syntax is SnmpSyntax.OBJECT_IDENTIFIER:
        if isinstance(value, str) and "." in value:
            return rfc1902.ObjectIdentifier(value)
        code = to_raw(spec, value) if value is not None else 0
        return rfc1902.ObjectIdentifier(f"0.0.{int(code)}")
    if syntax is SnmpSyntax.TIMETICKS:
        seconds = float(value) if isinstance(value, int | float) else 0.0
        return rfc1902.TimeTicks(round(seconds * 100) % 2**32)
    raw = to_raw(spec, value)
    number = round(float(raw)) if not isinstance(raw, str) else 0
    if syntax in _LIMITS:
        number %= _LIMITS[syntax]
    if syntax is SnmpSyntax.COUNTER32:
        return rfc1902.Counter32(number)
    if syntax is SnmpSyntax.COUNTER64:
        return rfc1902.Counter64(number)
    if syntax is SnmpSyntax.GAUGE32:
        return rfc1902.Gauge32(min(max(number, 0), 2**32 - 1))
    if syntax is SnmpSyntax.UNSIGNED32:
        return rfc1902.Unsigned32(min(max(number, 0), 2**32 - 1))
    return rfc1902.Integer32(min(max(number, -(2**31)), 2**31 - 1))


def _decode_set(spec: Point | Column, value: Any) -> Value:
    """The engineering value a SET asks for; WrongTypeError when the syntax does not fit."""
    syntax = _syntax(spec)
    if syntax is SnmpSyntax.OCTET_STRING:
        if not isinstance(value, rfc1902.OctetString):
            raise smi_error.WrongTypeError
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, rfc1902.OctetString | rfc1902.ObjectIdentifier | rfc1902.IpAddress):
        raise smi_error.WrongTypeError
    reading = finish(spec, int(value))
    if not reading.quality.good:
        raise smi_error.WrongValueError
    return reading.value


class SnmpSimulator:
    """An SNMP agent (v1, v2c, v3) serving one device model on a UDP port.

    Start it with `await sim.start()` inside a running loop and stop it with
    `await sim.stop()`. `requests` counts the requests it answered (or dropped) by PDU
    type; `faults` injects timeouts, slow answers, missing objects and tooBig; `ups` and
    `pdu` drive the device's state; `advance()` moves simulated time.
    """

    def __init__(
        self,
        model: DeviceModel,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        *,
        community: str = DEFAULT_COMMUNITY,
        v3_users: Iterable[V3User] = (V3User(),),
        ups_lines: int | None = None,
        speed: float = 1.0,
        max_bulk_varbinds: int = 64,
    ) -> None:
        self.model = model
        self.host = host
        self.port = port
        self.seed = seed
        self.community = community
        self.v3_users = tuple(v3_users)
        self.speed = speed
        self.max_bulk_varbinds = max_bulk_varbinds
        self.faults = Faults()
        self.requests: Counter[str] = Counter()
        self.varbinds_requested = 0
        self.dropped = 0
        self.sets: list[tuple[str, Value]] = []
        self.overrides: dict[str, Value] = {}  # OID (dotted) -> engineering value
        self.raw_offsets: dict[str, int] = {}  # OID -> raw amount added (counter wrap tests)
        self._t0 = time.monotonic()
        self._offset_s = 0.0
        self._last_tick: float | None = None
        self._engine: Any = None
        self._transport: _SimTransport | None = None
        self._entries: dict[Oid, _Entry] = {}
        self._objects: set[Oid] = set()
        self._sorted: list[Oid] = []
        self._layout_key: tuple[tuple[str, tuple[str, ...]], ...] = ()
        self._points = {p.oid: p for p in model.points if p.oid}
        self._columns: dict[str, tuple[str, Column]] = {}
        for table in model.tables:
            for col in table.columns:
                self._columns[col.oid] = (table.name, col)
        self._table_entry_oid = {t.name: _entry_oid(t.columns) for t in model.tables}
        self.ups: UpsState | None = None
        self.pdu: PduState | None = None
        if any(oid.startswith(UPS_BASE + ".") for oid in self._all_oids()):
            low = self._points.get(f"{UPS_BASE}.9.7.0")
            low_min = float(profile_value(low, 0.0, seed)) if low is not None else 5.0  # type: ignore[arg-type]
            self.ups = UpsState(lines=ups_lines or self._rows_of(f"{UPS_BASE}.3.3.1", 1), low_batt_min=low_min)
            self.ups.listeners.append(self._on_ups_event)
        if any(oid.startswith(PDU_BASE + ".") for oid in self._all_oids()):
            self.pdu = self._make_pdu()
        self.trap_targets: list[tuple[str, int, CommunityData | UsmUserData]] = []
        self.traps_sent: list[str] = []
        self._pending: set[asyncio.Task[None]] = set()
        self._rebuild()

    # -- model layout
    def _all_oids(self) -> list[str]:
        return [p.oid for p in self.model.points if p.oid] + list(self._columns)

    def _rows_of(self, entry_oid: str, default: int) -> int:
        for table in self.model.tables:
            if self._table_entry_oid[table.name] == entry_oid and table.rows:
                return len(table.rows)
        return default

    def _make_pdu(self) -> PduState:
        outlet_energy: dict[str, float] = {}
        energy_col = self._columns.get(PduState.OUTLET_ENERGY)
        if energy_col is not None:
            rows = self._table_rows(energy_col[0])
            outlet_energy = {row: float(profile_value(energy_col[1], 0.0, self.seed, row) or 0.0) for row in rows}
        device = self._points.get(PduState.DEVICE_ENERGY)
        device0 = float(profile_value(device, 0.0, self.seed) or 0.0) if device is not None else 0.0
        return PduState(outlet_energy, device0)

    def _table_rows(self, table_name: str) -> list[str]:
        table = next(t for t in self.model.tables if t.name == table_name)
        if self.ups is not None:
            rows = self.ups.rows(self._table_entry_oid[table_name])
            if rows is not None:
                return rows
        return list(table.rows or [])

    def _layout(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        return tuple((t.name, tuple(self._table_rows(t.name))) for t in self.model.tables)

    def _rebuild(self) -> None:
        entries: dict[Oid, _Entry] = {}
        for point in self.model.points:
            assert point.oid is not None  # noqa: S101  (snmp models validate it)
            entries[oid_of(point.oid)] = _Entry(point, "", point.oid)
        for table_name, rows in self._layout():
            table = next(t for t in self.model.tables if t.name == table_name)
            for col in table.columns:
                for row in rows:
                    entries[oid_of(f"{col.oid}.{row}")] = _Entry(col, row, col.oid)
        for oid in (SYS_DESCR, SYS_OBJECT_ID, SYS_UPTIME, SYS_CONTACT, SYS_NAME, SYS_LOCATION):
            entries.setdefault(oid, _Entry(_SYSTEM, "", dotted(oid)))
        self._entries = entries
        self._objects = {oid[:-1] for oid, e in entries.items() if not e.row}
        self._sorted = sorted(entries)
        self._layout_key = self._layout()

    # -- time and state
    def now_s(self) -> float:
        """Simulated seconds since start."""
        return (time.monotonic() - self._t0) * self.speed + self._offset_s

    def advance(self, seconds: float) -> None:
        """Move simulated time forward (battery drains, energy grows) without waiting."""
        self._offset_s += seconds
        self.refresh()

    def refresh(self) -> None:
        """Bring the device state up to the simulated clock."""
        now = self.now_s()
        last = self._last_tick if self._last_tick is not None else now
        self._last_tick = now
        dt = max(0.0, now - last)
        if self.ups is not None:
            self.ups.advance(dt)
        if self.pdu is not None:
            self.pdu.integrate(dt, self._outlet_powers(now))
        if self._layout() != self._layout_key:
            self._rebuild()

    def _outlet_powers(self, now: float) -> dict[str, float]:
        col = self._columns.get(PduState.OUTLET_POWER)
        if col is None or self.pdu is None:
            return {}
        out: dict[str, float] = {}
        for row in self.pdu.outlet_energy_kwh:
            value = self.overrides.get(f"{col[1].oid}.{row}", profile_value(col[1], now, self.seed, row))
            out[row] = float(value) if isinstance(value, int | float) else 0.0
        return out

    # -- serving
    def _missing(self, oid: Oid) -> bool:
        text = dotted(oid)
        return any(text == m or text.startswith(m + ".") for m in self.faults.missing)

    def next_oid(self, oid: Oid) -> Oid | None:
        """The first served OID after oid, skipping missing ones."""
        i = bisect.bisect_right(self._sorted, oid)
        while i < len(self._sorted):
            if not self._missing(self._sorted[i]):
                return self._sorted[i]
            i += 1
        return None

    def get(self, oid: Oid) -> Any:
        """The SNMP value of one OID (noSuchObject / noSuchInstance when absent)."""
        entry = self._entries.get(oid)
        if entry is None or self._missing(oid):
            if entry is not None:
                return rfc1905.noSuchInstance if entry.row else rfc1905.noSuchObject
            # an instance the agent does not have of an object it knows, or no such object
            known = oid[:-1] in self._objects or dotted(oid[:-1]) in self._columns
            return rfc1905.noSuchInstance if known else rfc1905.noSuchObject
        if entry.spec is _SYSTEM:
            return self._system(oid)
        value = self.value_of(entry)
        encoded = encode(entry.spec, value)
        offset = self.raw_offsets.get(dotted(oid))
        if offset:
            encoded = encoded.clone(
                (int(encoded) + offset) % _LIMITS.get(_syntax(entry.spec), 2**32),
            )
        return encoded

    def value_of(self, entry: _Entry) -> Value:
        """The engineering value an entry serves now."""
        oid = entry.key if not entry.row else f"{entry.key}.{entry.row}"
        if oid in self.overrides:
            return self.overrides[oid]
        now = self.now_s()

        def nominal() -> Value:
            return self._pdu_value(entry, now)

        if self.ups is not None and entry.key.startswith(UPS_BASE):
            if entry.key == f"{UPS_BASE}.6.2.1.2":
                kind = self.ups.alarms[int(entry.row)][0]
                return f"{WELL_KNOWN_ALARMS}.{kind}"
            return self.ups.value(entry.key, entry.row, nominal)
        return nominal()

    def _pdu_value(self, entry: _Entry, now: float) -> Value:
        pdu = self.pdu
        if pdu is not None:
            if entry.key == PduState.OUTLET_ENERGY:
                return pdu.outlet_energy_kwh.get(entry.row, 0.0)
            if entry.key == PduState.DEVICE_ENERGY:
                return pdu.device_energy_kwh
            if entry.key == PduState.DEVICE_POWER and PduState.OUTLET_POWER in self._columns:
                return sum(self._outlet_powers(now).values()) / 1000.0
            if entry.key == PduState.ENERGY_START:
                return pdu.energy_start
            if entry.key == PduState.OUTLET_NAME:
                return f"Outlet {entry.row}"
        return profile_value(entry.spec, now, self.seed, entry.row)

    def _system(self, oid: Oid) -> Any:
        snmp = self.model.snmp
        uptime = int(self.now_s() * 100) % 2**32
        values: dict[Oid, Any] = {
            SYS_DESCR: rfc1902.OctetString(str(snmp.get("sys_descr", self.model.description))),
            SYS_OBJECT_ID: rfc1902.ObjectIdentifier(str(snmp.get("sys_object_id", "1.3.6.1.4.1.8072.3.2.10"))),
            SYS_UPTIME: rfc1902.TimeTicks(uptime),
            SYS_CONTACT: rfc1902.OctetString("facilities@example.com"),
            SYS_NAME: rfc1902.OctetString(f"{self.model.id}-sim"),
            SYS_LOCATION: rfc1902.OctetString("simulated"),
        }
        return values[oid]

    def set_many(self, items: list[tuple[Oid, Any]]) -> list[tuple[Any, Any]]:
        """Apply a SET: every variable is checked before any is written."""
        staged: list[tuple[_Entry, str, Value]] = []
        for idx, (oid, value) in enumerate(items):
            entry = self._entries.get(oid)
            if entry is None or self._missing(oid):
                raise smi_error.NoSuchObjectError(name=oid, idx=idx)
            spec = entry.spec
            writable = getattr(spec, "writable", None)
            if writable is None:
                raise smi_error.NotWritableError(name=oid, idx=idx)
            try:
                wanted = _decode_set(spec, value)
            except smi_error.SmiError as exc:
                exc.update({"name": oid, "idx": idx})
                raise
            number = to_raw(spec, wanted) if isinstance(wanted, str) and spec.enum else wanted
            if not isinstance(number, int | float) or not writable.min <= float(number) <= writable.max:
                raise smi_error.WrongValueError(name=oid, idx=idx)
            staged.append((entry, dotted(oid), wanted))
        for entry, oid_text, wanted in staged:
            self._apply_set(entry, oid_text, wanted)
        return [(rfc1902.ObjectName(oid), self.get(oid)) for oid, _ in items]

    def _apply_set(self, entry: _Entry, oid_text: str, value: Value) -> None:
        self.sets.append((oid_text, value))
        log.info("SET %s = %r", oid_text, value)
        if self.pdu is not None and oid_text in (PduState.DEVICE_RESET, PduState.OUTLETS_RESET):
            if value == "reset":
                if oid_text == PduState.DEVICE_RESET:
                    self.pdu.reset_device(time.time())
                else:
                    self.pdu.reset_outlets()
            return  # a command: reads back noOperation
        if self.ups is not None and oid_text == f"{UPS_BASE}.9.7.0" and isinstance(value, int | float):
            self.ups.low_batt_min = float(value)
            self.ups.drain_to(self.ups.charge)
            return
        del entry
        self.overrides[oid_text] = value

    # -- mains and energy controls (conveniences over ups / pdu)
    def fail_mains(self) -> None:
        """UPS: mains failure (on battery)."""
        self._need_ups().fail_mains()
        self.refresh()

    def restore_mains(self) -> None:
        """UPS: mains back (output on, charging)."""
        self._need_ups().restore_mains()
        self.refresh()

    def _need_ups(self) -> UpsState:
        if self.ups is None:
            raise RuntimeError(f"model {self.model.id!r} is not an RFC 1628 UPS")
        return self.ups

    # -- traps
    def add_trap_target(
        self, host: str, port: int, *, community: str | None = None, v3_user: V3User | None = None
    ) -> None:
        """Send this device's traps (UPS state changes) to host:port, v2c or v3."""
        self.trap_targets.append((host, port, self._auth(community, v3_user)))

    def _auth(self, community: str | None, v3_user: V3User | None) -> CommunityData | UsmUserData:
        if v3_user is None:
            return CommunityData(community or self.community, mpModel=1)  # noqa: S508  (v2c traps are asked for)
        return UsmUserData(
            v3_user.name,
            authKey=v3_user.auth_key if v3_user.auth else None,
            privKey=v3_user.priv_key if v3_user.priv else None,
            authProtocol=_AUTH[v3_user.auth] if v3_user.auth else snmp_config.USM_AUTH_NONE,
            privProtocol=_PRIV[v3_user.priv] if v3_user.priv else snmp_config.USM_PRIV_NONE,
        )

    def _on_ups_event(self, trap: str, objects: dict[str, Any]) -> None:
        if not self.trap_targets or self._engine is None:
            return
        task = asyncio.get_running_loop().create_task(self._send_to_targets(trap, objects))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send_to_targets(self, trap: str, objects: dict[str, Any]) -> None:
        for host, port, auth in self.trap_targets:
            await self._send(host, port, auth, trap, objects)

    async def send_trap(
        self,
        host: str,
        port: int,
        trap: str = TRAP_ON_BATTERY,
        *,
        objects: dict[str, Any] | None = None,
        community: str | None = None,
        v3_user: V3User | None = None,
    ) -> None:
        """Send one trap (an OID, e.g. upsTrapOnBattery) to host:port from the agent's port."""
        await self._send(host, port, self._auth(community, v3_user), trap, objects or {})

    async def _send(
        self, host: str, port: int, auth: CommunityData | UsmUserData, trap: str, objects: dict[str, Any]
    ) -> None:
        if self._engine is None:
            raise RuntimeError("the simulator is not running")
        var_binds = [ObjectType(ObjectIdentity(SNMP_TRAP_OID), rfc1902.ObjectIdentifier(trap))]
        if trap == TRAP_ON_BATTERY and self.ups is not None:
            objects = {
                f"{UPS_BASE}.2.3.0": rfc1902.Integer32(round(self.ups.runtime_min)),
                f"{UPS_BASE}.2.2.0": rfc1902.Integer32(self.ups.seconds_on_battery),
                f"{UPS_BASE}.9.7.0": rfc1902.Integer32(round(self.ups.low_batt_min)),
                **objects,
            }
        for oid, value in objects.items():
            snmp_value = value
            if isinstance(value, str):
                snmp_value = rfc1902.ObjectIdentifier(value) if value[:1].isdigit() else rfc1902.OctetString(value)
            elif isinstance(value, int):
                snmp_value = rfc1902.Integer32(value)
            var_binds.append(ObjectType(ObjectIdentity(oid), snmp_value))
        target = await UdpTransportTarget.create((host, port), timeout=1.0, retries=0)
        error, _, _, _ = await send_notification(
            self._engine, auth, target, ContextData(), "trap", *var_binds, lookupMib=False
        )
        if error:
            log.warning("trap %s to %s:%d failed: %s", trap, host, port, error)
            return
        self.traps_sent.append(trap)

    # -- lifecycle
    async def start(self) -> None:
        """Bind the UDP port and start answering."""
        eng = snmp_engine.SnmpEngine()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((self.host, self.port))
        sock.setblocking(False)  # noqa: FBT003
        self.port = sock.getsockname()[1]
        transport = _SimTransport()
        transport.sim = self
        transport.open_server_mode(sock=sock)
        await transport._lport  # noqa: SLF001  (the endpoint is created asynchronously)
        snmp_config.add_transport(eng, udp.DOMAIN_NAME, transport)
        self._transport = transport
        snmp_config.add_v1_system(eng, "sim-agent", self.community)
        for user in self.v3_users:
            snmp_config.add_v3_user(
                eng,
                user.name,
                _AUTH[user.auth] if user.auth else snmp_config.USM_AUTH_NONE,
                user.auth_key if user.auth else None,
                _PRIV[user.priv] if user.priv else snmp_config.USM_PRIV_NONE,
                user.priv_key if user.priv else None,
            )
        snmp_ctx = context.SnmpContext(eng)
        snmp_ctx.unregister_context_name(b"")
        snmp_ctx.register_context_name(b"", _Instrumentation(self))
        cmdrsp.GetCommandResponder(eng, snmp_ctx)
        cmdrsp.NextCommandResponder(eng, snmp_ctx)
        bulk = _BulkResponder(eng, snmp_ctx)
        bulk.max_varbinds = self.max_bulk_varbinds
        cmdrsp.SetCommandResponder(eng, snmp_ctx)
        eng.observer.register_observer(self._observe, "rfc3412.receiveMessage:request")
        self._engine = eng
        self._t0 = time.monotonic()
        self._last_tick = None
        log.info("snmp simulator %s on %s:%d", self.model.id, self.host, self.port)

    def set_community(self, community: str) -> None:
        """Answer only this community from now on (a wrong-community fault for old managers)."""
        self.community = community
        if self._engine is not None:
            snmp_config.delete_v1_system(self._engine, "sim-agent")
            snmp_config.add_v1_system(self._engine, "sim-agent", community)

    def _observe(self, _engine: Any, _point: str, variables: dict[str, Any], _ctx: Any) -> None:
        pdu = variables["pdu"]
        self.requests[type(pdu).__name__] += 1
        with contextlib.suppress(Exception):
            self.varbinds_requested += len(pdu["variable-bindings"])

    @property
    def total_requests(self) -> int:
        """Every request this agent has received and answered (or let time out)."""
        return sum(self.requests.values()) + self.dropped

    async def stop(self) -> None:
        """Stop answering and release the port."""
        for task in list(self._pending):
            task.cancel()
        if self._engine is not None:
            self._engine.observer.unregister_observer()
            self._engine.close_dispatcher()
            self._engine = None
        if self._transport is not None:
            self._transport.close_transport()
            self._transport = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()


def _entry_oid(columns: list[Column]) -> str:
    """The table entry OID: the column OIDs less their last arc."""
    return columns[0].oid.rsplit(".", 1)[0]


_SYSTEM: Final = Point(name="system", oid="1.3.6.1.2.1.1", type=ValueType.STRING)


# ---------------------------------------------------------------- dcim-sim device


async def _serve(model: DeviceModel, host: str, port: int, seed: int) -> int:
    sim = SnmpSimulator(model, host, port, seed)
    try:
        await sim.start()
    except OSError as exc:
        log.error("cannot serve %s on %s:%d: %s", model.id, host, port, exc)  # noqa: TRY400
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"ready snmp {model.id} on {host}:{sim.port}", flush=True)  # noqa: T201  (the readiness line)
    try:
        await stop.wait()
    finally:
        await sim.stop()
    return 0


def serve_forever(model: DeviceModel, host: str, port: int, seed: int) -> int:
    """Serve one simulated SNMP device until SIGINT/SIGTERM (dcim-sim device)."""
    return asyncio.run(_serve(model, host, port, seed))


__all__ = [
    "ALARM_LOW_BATTERY",
    "ALARM_ON_BATTERY",
    "TRAP_ALARM_ADDED",
    "TRAP_ALARM_REMOVED",
    "TRAP_ON_BATTERY",
    "Faults",
    "PduState",
    "SnmpSimulator",
    "UpsState",
    "V3User",
    "encode",
    "serve_forever",
]
