"""The collector's analytics configuration: [pue], [availability], [contract] and [jobs]."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Final, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from collector.analytics.availability import DEFAULT_BURN_RATE_ALERTS, CalendarBasis
from collector.analytics.pue import IT_ROLE, Category, Role

_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_FIELD_RE: Final = re.compile(r"^[a-z][a-z0-9_]*$")
_HHMM_RE: Final = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")
_MINUTES_PER_DAY: Final = 1440

# What a status device is read from, by type: (measurement, point) defaults.
STATUS_DEFAULTS: Final[dict[str, tuple[str, str]]] = {
    "ups": ("ups", "output_source"),  # RFC 1628 upsOutputSource names, plus the alarms table
    "ups-flags": ("ups", "on_battery"),  # APC-style flags: online, on_battery, on_bypass
    "pdu": ("pdu", "load_state"),  # rPDU2 phase load states (table "phase")
    "breaker": ("pdu", "tripped"),  # a flag: non-zero is tripped
}


def _ident(value: str) -> str:
    if not _ID_RE.match(value):
        raise ValueError(f"{value!r} is not a valid id (letters, digits, '_', '.', ':', '-')")
    return value


def _field(value: str) -> str:
    if not _FIELD_RE.match(value):
        raise ValueError(f"{value!r} is not a measurement or point name (snake_case)")
    return value


def _minute(value: str) -> str:
    match = _HHMM_RE.match(value)
    if not match or (int(match[1]) == 24 and int(match[2]) != 0):
        raise ValueError(f"{value!r} is not a time of day HH:MM (00:00 to 24:00)")
    return value


Ident = Annotated[str, AfterValidator(_ident)]
FieldName = Annotated[str, AfterValidator(_field)]
TimeOfDay = Annotated[str, AfterValidator(_minute)]


def minute_of_day(value: str) -> int:
    """Minutes since midnight of an HH:MM setting (24:00 is 1440)."""
    hours, minutes = value.split(":")
    return int(hours) * 60 + int(minutes)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- PUE meters


class MeterSpec(_Section):
    """[[pue.meters]]: one meter's series and what it measures in the PUE balance."""

    device: Ident
    role: Role
    measurement: FieldName = "meter"  # the device kind the collector stores it under
    point: FieldName = "import_energy"
    source: Literal["counter", "power"] = "counter"  # counter: kWh register; power: kW, integrated
    table: FieldName | None = None  # a table row (a PDU outlet, a UPS output line)
    index: str | None = None
    wrap_kwh: float | None = Field(default=None, gt=0)  # counter modulus, e.g. 429496729.6 for Counter32 in 0.1 kWh
    live_point: FieldName | None = None  # a power point (kW) for the live ratio

    @model_validator(mode="after")
    def _row(self) -> Self:
        if (self.table is None) != (self.index is None):
            raise ValueError("table and index go together")
        if self.source == "power" and self.wrap_kwh is not None:
            raise ValueError("wrap_kwh applies to counters only")
        return self

    @property
    def id(self) -> str:
        """A name for the meter: device, table row and point."""
        row = f"/{self.table}/{self.index}" if self.table is not None else ""
        return f"{self.device}{row}:{self.point}"


class PueSection(_Section):
    """[pue]: which meters are facility input, IT (by category), cooling and power chain."""

    category: Literal[1, 2, 3] | None = None  # default: the most detailed the IT meters allow
    min_coverage: float = Field(default=0.99, ge=0.0, le=1.0)
    max_gap_s: float = Field(default=300.0, gt=0, le=86_400)  # power samples further apart are a gap
    max_power_kw: float | None = Field(default=None, gt=0)  # counter increments needing more are discarded
    lookaround_s: float = Field(default=3600.0, ge=0, le=7 * 86_400)  # samples read beyond a period's ends
    emission_factor: Decimal | None = Field(default=None, ge=0)  # kg CO2 per kWh
    emission_factor_source: str | None = None
    meters: tuple[MeterSpec, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _balance(self) -> Self:
        if (self.emission_factor is None) != (self.emission_factor_source is None):
            raise ValueError("emission_factor and emission_factor_source go together (record where it comes from)")
        roles = {m.role for m in self.meters}
        if Role.FACILITY not in roles:
            raise ValueError("no meter with role 'facility'")
        it_roles = set(IT_ROLE.values())
        if not roles & it_roles:
            raise ValueError("no IT meter (role it_ups_output, it_pdu_output or it_input)")
        if self.category is not None and IT_ROLE[Category(self.category)] not in roles:
            raise ValueError(f"category {self.category} needs a meter with role {IT_ROLE[Category(self.category)]}")
        ids = [m.id for m in self.meters]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"meters listed twice: {', '.join(duplicates)}")
        return self


# ---------------------------------------------------------------- availability


class StatusDevice(_Section):
    """[[availability.devices]]: a critical device and the status points its state comes from."""

    device: Ident
    type: Literal["ups", "ups-flags", "pdu", "breaker"]
    measurement: FieldName | None = None  # default by type: ups, ups, pdu, pdu
    point: FieldName | None = None  # default by type: output_source, on_battery, load_state, tripped
    table: FieldName | None = None  # breaker: the table row holding the flag; pdu: "phase" for every phase row
    index: str | None = None
    alarms_table: FieldName = "alarms"  # ups: the RFC 1628 alarm table and its description column
    alarm_column: FieldName = "descr"

    @model_validator(mode="after")
    def _row(self) -> Self:
        if self.index is not None and self.table is None:
            raise ValueError("index needs table")
        return self

    @property
    def resolved_measurement(self) -> str:
        """The measurement to read."""
        return self.measurement or STATUS_DEFAULTS[self.type][0]

    @property
    def resolved_point(self) -> str:
        """The status point to read."""
        return self.point or STATUS_DEFAULTS[self.type][1]


class RedundancyGroup(_Section):
    """[[availability.groups]]: N+1, 2N or A/B: the group carries the load while `needed` members do."""

    id: Ident
    members: tuple[Ident, ...] = Field(min_length=2)
    needed: int = Field(ge=1)

    @model_validator(mode="after")
    def _needed(self) -> Self:
        if self.needed >= len(self.members):
            raise ValueError(f"needed = {self.needed} leaves no redundancy among {len(self.members)} members")
        return self


class LoadSpec(_Section):
    """[[availability.loads]]: a load, the path feeding it (or feeds A and B) and its share of IT load."""

    id: Ident
    weight: float = Field(default=1.0, ge=0)  # kW, racks: any unit, shares are normalised
    path: tuple[Ident, ...] = ()  # single-corded: every element is needed (in series)
    feed_a: tuple[Ident, ...] = ()  # dual-corded: either feed carries the load
    feed_b: tuple[Ident, ...] = ()

    @model_validator(mode="after")
    def _shape(self) -> Self:
        dual = bool(self.feed_a) or bool(self.feed_b)
        if self.path and dual:
            raise ValueError("give path (single-corded) or feed_a and feed_b (dual-corded), not both")
        if dual and not (self.feed_a and self.feed_b):
            raise ValueError("a dual-corded load needs both feed_a and feed_b")
        if not self.path and not dual:
            raise ValueError("give path, or feed_a and feed_b")
        return self


class BurnAlertSpec(_Section):
    """[[availability.burn_alerts]]: fire when both windows burn the budget faster than burn_rate."""

    severity: Literal["page", "ticket"]
    long_window_s: int = Field(gt=0)
    short_window_s: int = Field(gt=0)
    burn_rate: float = Field(gt=0)

    @model_validator(mode="after")
    def _windows(self) -> Self:
        if self.short_window_s >= self.long_window_s:
            raise ValueError("short_window_s must be shorter than long_window_s")
        return self


DEFAULT_BURN_ALERTS: Final = tuple(
    BurnAlertSpec(
        severity="page" if a.severity == "page" else "ticket",
        long_window_s=a.long_window_s,
        short_window_s=a.short_window_s,
        burn_rate=a.burn_rate,
    )
    for a in DEFAULT_BURN_RATE_ALERTS
)


class AvailabilitySection(_Section):
    """[availability]: critical devices, redundancy, loads, target and budget basis."""

    target: Decimal = Field(default=Decimal("0.9999"), gt=0, lt=1)
    basis: CalendarBasis = CalendarBasis.AVERAGE_MONTH
    max_gap_s: float = Field(default=120.0, gt=0, le=86_400)  # a status older than this is unknown
    count_unknown_in_burn: bool = False
    devices: tuple[StatusDevice, ...] = Field(min_length=1)
    groups: tuple[RedundancyGroup, ...] = ()
    loads: tuple[LoadSpec, ...] = ()
    burn_alerts: tuple[BurnAlertSpec, ...] = DEFAULT_BURN_ALERTS

    @model_validator(mode="after")
    def _references(self) -> Self:
        known: set[str] = set()
        for d in self.devices:
            if d.device in known:
                raise ValueError(f"device {d.device!r} listed twice")
            known.add(d.device)
        for g in self.groups:
            if g.id in known:
                raise ValueError(f"group id {g.id!r} is already a device or group id")
            unknown = [m for m in g.members if m not in known]
            if unknown:
                raise ValueError(
                    f"group {g.id!r}: unknown members {', '.join(unknown)} (devices, or groups defined before it)"
                )
            known.add(g.id)
        loads: set[str] = set()
        for load in self.loads:
            if load.id in loads:
                raise ValueError(f"load {load.id!r} listed twice")
            loads.add(load.id)
            unknown = [x for x in (*load.path, *load.feed_a, *load.feed_b) if x not in known]
            if unknown:
                raise ValueError(f"load {load.id!r}: unknown devices or groups {', '.join(unknown)}")
        return self


# ---------------------------------------------------------------- contract


class TouPeriodSpec(_Section):
    """[[contract.tou]]: a price from start to end (local time; end may pass midnight)."""

    name: str = Field(min_length=1)
    start: TimeOfDay
    end: TimeOfDay
    price: Decimal = Field(ge=0)  # per kWh
    months: tuple[int, ...] = ()  # 1-12; empty: every month

    @model_validator(mode="after")
    def _span(self) -> Self:
        if minute_of_day(self.start) >= _MINUTES_PER_DAY or minute_of_day(self.start) == minute_of_day(self.end):
            raise ValueError("start must be before 24:00 and differ from end")
        if any(not 1 <= m <= 12 for m in self.months):
            raise ValueError("months must be 1-12")
        return self


class ContractSection(_Section):
    """[contract]: PUE cap and threshold, rates, load condition and tariff."""

    cap: Decimal = Field(default=Decimal("1.40"), gt=0)
    threshold: Decimal = Field(default=Decimal("1.30"), gt=0)
    bonus_rate: Decimal = Field(default=Decimal("0.10"), ge=0)
    penalty_rate: Decimal = Field(default=Decimal("0.10"), ge=0)
    min_load_fraction: Decimal = Field(default=Decimal("0.70"), ge=0, le=1)
    capacity_kw: Decimal | None = Field(default=None, gt=0)  # contracted IT capacity, for the load condition
    currency: str = Field(default="CNY", min_length=1, max_length=8)
    minor_unit: int = Field(default=2, ge=0, le=4)
    tariff: Decimal | None = Field(default=None, ge=0)  # flat price per kWh
    tou: tuple[TouPeriodSpec, ...] = ()  # or a time-of-use table (first matching period wins)
    tou_utc_offset_h: float | None = Field(default=None, ge=-14, le=14)  # default: the collector's zone

    @model_validator(mode="after")
    def _terms(self) -> Self:
        if self.threshold > self.cap:
            raise ValueError(f"threshold {self.threshold} is above cap {self.cap}")
        if (self.tariff is None) == (not self.tou):
            raise ValueError("give either tariff (a flat price per kWh) or a [[contract.tou]] table")
        return self


# ---------------------------------------------------------------- scheduled jobs


class JobsSection(_Section):
    """[jobs]: the scheduled analytics jobs of `dcim-collector run`."""

    enabled: bool = True  # with several collectors sharing a site, enable the jobs on one of them
    energy_minute: int = Field(default=5, ge=0, le=59)  # minute past each hour: energy and PUE of past hours
    recompute_hours: int = Field(default=24, ge=1, le=24 * 31)  # hours recomputed each run (late data)
    availability_interval_s: float = Field(default=300.0, ge=10, le=86_400)
    burn_rate_interval_s: float = Field(default=60.0, ge=5, le=3600)
    live_interval_s: float = Field(default=60.0, ge=5, le=3600)
    settlement_hour: int = Field(default=1, ge=0, le=23)  # local hour of the daily year-to-date settlement
    publish_prefix: str = "dcim/v1/{site}/analytics"  # results go to <prefix>/<name> (retained)
