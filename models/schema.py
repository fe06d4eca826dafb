"""Device-model schema: what to read from a device, where, and how to decode it."""

from __future__ import annotations

import builtins
import re
import warnings
from enum import StrEnum
from typing import Annotated, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from models.codec import FLOAT_TYPES, INTEGER_TYPES, ValueType, WordOrder, register_count
from models.units import UnitError, canonical

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
OID_RE = re.compile(r"^\.?[0-9]+(\.[0-9]+)+$")
BACNET_OBJECT_RE = re.compile(r"^[a-z][a-z-]*:[0-9]+$")

# Modbus limits from the specification (one read of holding/input registers, or bits).
MAX_REGISTERS_PER_READ = 125
MAX_BITS_PER_READ = 2000


def _snake(value: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError(f"{value!r} is not snake_case (a-z, 0-9, _; starts with a letter)")
    return value


def _unit(value: str) -> str:
    try:
        return canonical(value)
    except UnitError as exc:
        raise ValueError(str(exc)) from exc


def _oid(value: str) -> str:
    if not OID_RE.match(value):
        raise ValueError(f"{value!r} is not a dotted numeric OID")
    return value.lstrip(".")


SnakeName = Annotated[str, AfterValidator(_snake)]
UnitSymbol = Annotated[str, AfterValidator(_unit)]
Oid = Annotated[str, AfterValidator(_oid)]


class SnmpSyntax(StrEnum):
    """SNMP value syntaxes a simulator serves (a driver takes the syntax from the answer)."""

    INTEGER32 = "Integer32"
    UNSIGNED32 = "Unsigned32"
    GAUGE32 = "Gauge32"
    COUNTER32 = "Counter32"
    COUNTER64 = "Counter64"
    TIMETICKS = "TimeTicks"
    OCTET_STRING = "OctetString"
    IP_ADDRESS = "IpAddress"
    OBJECT_IDENTIFIER = "ObjectIdentifier"


class Protocol(StrEnum):
    """Protocols a device model can speak."""

    MODBUS = "modbus"
    SNMP = "snmp"
    BACNET = "bacnet"


class Kind(StrEnum):
    """What a device is; the collector stores one measurement per kind."""

    UPS = "ups"
    PDU = "pdu"
    METER = "meter"
    CHILLER = "chiller"
    TOWER = "tower"
    PUMP = "pump"
    CRAH = "crah"
    GATEWAY = "gateway"
    GENERIC = "generic"


class Register(StrEnum):
    """Modbus tables."""

    HOLDING = "holding"
    INPUT = "input"
    COIL = "coil"
    DISCRETE = "discrete"

    @property
    def is_bit(self) -> bool:
        """Whether the table holds single bits rather than 16-bit registers."""
        return self in (Register.COIL, Register.DISCRETE)

    @property
    def is_writable(self) -> bool:
        """Whether the Modbus table can be written at all."""
        return self in (Register.HOLDING, Register.COIL)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Writable(_Strict):
    """Limits a write to the point must stay within."""

    min: float
    max: float
    max_step: float | None = Field(default=None, gt=0)
    # BACnet priorities 1-7 are life safety and critical equipment: never ours to write.
    priority: Annotated[int, Field(ge=8, le=16)] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class SimProfile(_Strict):
    """How a simulator varies the point: plausible, slowly varying, seeded.

    value = base + amplitude * sin(2*pi*t/period_s + phase) + noise * N(0,1), clipped to
    [min, max]; counters grow by rate_per_h per hour; `value` fixes a constant (strings,
    enumerations, booleans).
    """

    value: float | int | str | bool | None = None
    base: float = 0.0
    amplitude: float = 0.0
    period_s: float = Field(default=3600.0, gt=0)
    noise: float = Field(default=0.0, ge=0)
    rate_per_h: float = Field(default=0.0, ge=0)
    min: float | None = None
    max: float | None = None


# "register" is the contract's key name; it shadows BaseModel.register (ABC registration),
# which models never use.
warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)


class Point(_Strict):
    """One value a device offers."""

    name: SnakeName
    unit: UnitSymbol = ""
    description: str = ""
    type: ValueType | None = None
    # Modbus
    register: Register | None = None
    address: Annotated[int, Field(ge=0, le=65535)] | None = None
    order: WordOrder = WordOrder.ABCD
    length: Annotated[int, Field(ge=1, le=125)] | None = None  # string length in registers
    bit: Annotated[int, Field(ge=0, le=63)] | None = None  # one bit of an integer register
    # SNMP
    oid: Oid | None = None
    syntax: SnmpSyntax | None = None  # what an SNMP simulator serves; default follows type/counter
    # BACnet
    object: str | None = None
    property: str = "present-value"
    cov: bool = False
    # Decoding, any protocol
    scale: float = 1.0
    offset: float = 0.0
    counter: bool = False
    na: int | None = None  # raw value that means "no reading" (e.g. 65535)
    enum: dict[int, str] | None = None
    bits: dict[int, str] | None = None  # status word -> names of the bits set
    writable: Writable | None = None
    period_s: float | None = Field(default=None, gt=0)  # the point's own report period
    sim: SimProfile | None = None

    @field_validator("object")
    @classmethod
    def _object(cls, value: str | None) -> str | None:
        if value is not None and not BACNET_OBJECT_RE.match(value):
            raise ValueError(f"{value!r} is not 'object-type:instance' (e.g. analog-input:1)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        if self.enum is not None and self.bits is not None:
            raise ValueError("a point has either enum or bits, not both")
        if self.type is ValueType.STRING and (self.enum or self.bits or self.counter):
            raise ValueError("a string point cannot be an enum, bit field or counter")
        if self.bit is not None and self.type not in INTEGER_TYPES:
            raise ValueError("bit needs an integer type (uint16, uint32, ...)")
        if self.writable is not None and self.type is ValueType.STRING:
            raise ValueError("string points cannot be writable")
        return self

    @builtins.property
    def registers(self) -> int:
        """Number of Modbus registers (or bits) the point spans."""
        if self.register is not None and self.register.is_bit:
            return 1
        return register_count(self.type or ValueType.UINT16, self.length)

    @builtins.property
    def is_numeric(self) -> bool:
        """Whether the decoded value is a number (not text, state name or flag set)."""
        if self.enum is not None or self.bits is not None or self.bit is not None:
            return False
        return self.type is None or self.type in INTEGER_TYPES | FLOAT_TYPES


class Column(_Strict):
    """One column of a table: the value for every row of the table."""

    name: SnakeName
    oid: Oid  # the column OID; row OIDs are column.index
    syntax: SnmpSyntax | None = None  # what an SNMP simulator serves; default follows type/counter
    unit: UnitSymbol = ""
    description: str = ""
    type: ValueType | None = None
    scale: float = 1.0
    offset: float = 0.0
    counter: bool = False
    enum: dict[int, str] | None = None
    sim: SimProfile | None = None


class Table(_Strict):
    """A table of rows (outlets, phases, input lines); each row becomes its own series."""

    name: SnakeName
    index_name: SnakeName = "index"
    columns: list[Column] = Field(min_length=1)
    rows: list[str] | None = None  # row indexes a simulator serves (e.g. ["1", "2", "3"])
    volatile: bool = False  # rows come and go (alarm tables): walked on every poll, never cached
    description: str = ""


class DeviceModel(_Strict):
    """A device type, described once as data."""

    id: str
    kind: Kind
    protocol: Protocol
    description: str = ""
    manufacturer: str = ""
    points: list[Point] = Field(default_factory=list)
    tables: list[Table] = Field(default_factory=list)
    # Protocol-wide settings a model can carry (e.g. max registers per read for a slow device).
    modbus: dict[str, int | float | str | bool] = Field(default_factory=dict)
    snmp: dict[str, int | float | str | bool] = Field(default_factory=dict)
    bacnet: dict[str, int | float | str | bool] = Field(default_factory=dict)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not re.match(r"^[a-z0-9][a-z0-9-]*$", value):
            raise ValueError(f"{value!r} is not a model id (lowercase letters, digits, '-')")
        return value

    @model_validator(mode="after")
    def _protocol_keys(self) -> Self:
        if not self.points and not self.tables:
            raise ValueError("a model needs at least one point or table")
        seen: set[str] = set()
        for point in self.points:
            if point.name in seen:
                raise ValueError(f"point {point.name!r} is defined twice")
            seen.add(point.name)
            _check_point_protocol(self.protocol, point)
        for table in self.tables:
            if self.protocol is not Protocol.SNMP:
                raise ValueError(f"table {table.name!r}: tables are supported for snmp models only")
            if table.name in seen:
                raise ValueError(f"table {table.name!r} clashes with a point of that name")
            seen.add(table.name)
        return self

    def point(self, name: str) -> Point:
        """The point of that name (KeyError naming the model when there is none)."""
        for point in self.points:
            if point.name == name:
                return point
        raise KeyError(f"model {self.id!r} has no point {name!r}")


_KEYS_OF: dict[Protocol, tuple[str, ...]] = {
    Protocol.MODBUS: ("register", "address"),
    Protocol.SNMP: ("oid",),
    Protocol.BACNET: ("object",),
}


def _check_point_protocol(protocol: Protocol, point: Point) -> None:
    where = f"point {point.name!r}"
    for other, keys in _KEYS_OF.items():
        for key in keys:
            present = getattr(point, key) is not None
            if other is protocol and not present:
                raise ValueError(f"{where}: {protocol} points need {key!r}")
            if other is not protocol and present:
                raise ValueError(f"{where}: {key!r} belongs to {other} points, not {protocol}")
    if protocol is Protocol.MODBUS:
        assert point.register is not None  # noqa: S101  (checked just above)
        if point.register.is_bit:
            if point.type not in (None, ValueType.BOOL):
                raise ValueError(f"{where}: {point.register} registers hold bits; type must be bool")
        elif point.type is None:
            raise ValueError(f"{where}: modbus register points need 'type'")
        elif point.type is ValueType.STRING and point.length is None:
            raise ValueError(f"{where}: string points need 'length' (registers)")
        if point.writable is not None and not point.register.is_writable:
            raise ValueError(f"{where}: {point.register} registers cannot be written")
        if point.address is not None and point.address + point.registers > 65536:
            raise ValueError(f"{where}: runs past register 65535")
    if point.writable is not None and point.writable.priority is not None and protocol is not Protocol.BACNET:
        raise ValueError(f"{where}: 'priority' applies to bacnet points only")
    if point.syntax is not None and protocol is not Protocol.SNMP:
        raise ValueError(f"{where}: 'syntax' applies to snmp points only")
    if point.cov and protocol is not Protocol.BACNET:
        raise ValueError(f"{where}: 'cov' applies to bacnet points only")
