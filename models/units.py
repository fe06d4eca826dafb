"""The canonical unit vocabulary and conversions between units of one dimension."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class UnitInfo:
    """One unit: its dimension and how to reach the dimension's base unit.

    base = value * factor + offset
    """

    symbol: str
    dimension: str
    factor: float = 1.0
    offset: float = 0.0
    description: str = ""


def _u(symbol: str, dimension: str, factor: float = 1.0, offset: float = 0.0, desc: str = "") -> UnitInfo:
    return UnitInfo(symbol, dimension, factor, offset, desc)


# Temperature differences (approach, range, delta-T) are "K"; absolute temperatures are
# "degC" or "degF". Keeping them apart stops a 5 K approach being converted to 278.15.
_UNITS: Final[tuple[UnitInfo, ...]] = (
    _u("", "dimensionless", desc="no unit (power factor, counts of things, states, text)"),
    _u("count", "dimensionless", desc="a number of things"),
    _u("%", "ratio", 1.0, desc="percent"),
    _u("%RH", "humidity", desc="relative humidity in percent"),
    _u("ppm", "concentration", desc="parts per million"),
    _u("V", "voltage"),
    _u("mV", "voltage", 1e-3),
    _u("kV", "voltage", 1e3),
    _u("A", "current"),
    _u("mA", "current", 1e-3),
    _u("W", "power", 1e-3, desc="watt"),
    _u("kW", "power", 1.0, desc="kilowatt (the collector's power unit)"),
    _u("MW", "power", 1e3),
    _u("VA", "apparent_power", 1e-3),
    _u("kVA", "apparent_power", 1.0),
    _u("var", "reactive_power", 1e-3),
    _u("kvar", "reactive_power", 1.0),
    _u("Wh", "energy", 1e-3),
    _u("kWh", "energy", 1.0, desc="kilowatt-hour (the collector's energy unit)"),
    _u("MWh", "energy", 1e3),
    _u("kVAh", "apparent_energy", 1.0),
    _u("kvarh", "reactive_energy", 1.0),
    _u("Hz", "frequency"),
    _u("degC", "temperature", 1.0, desc="degree Celsius"),
    _u("degF", "temperature", 5.0 / 9.0, -32.0 * 5.0 / 9.0, desc="degree Fahrenheit"),
    _u("K", "temperature_difference", 1.0, desc="kelvin, used for temperature differences"),
    _u("ms", "time", 1e-3),
    _u("s", "time", 1.0),
    _u("min", "time", 60.0),
    _u("h", "time", 3600.0),
    _u("d", "time", 86400.0),
    _u("Pa", "pressure", 1e-3),
    _u("kPa", "pressure", 1.0),
    _u("bar", "pressure", 100.0),
    _u("psi", "pressure", 6.894757293168361),
    _u("m", "length", desc="metre (pump head)"),
    _u("m3/h", "volume_flow", 1.0 / 3.6, desc="cubic metres per hour"),
    _u("L/s", "volume_flow", 1.0, desc="litres per second"),
    _u("kg/s", "mass_flow"),
    _u("rpm", "rotational_speed"),
    _u("dBm", "signal_power"),
    _u("dB", "signal_ratio"),
    _u("L", "volume"),
    _u("m3", "volume", 1000.0),
    _u("kg", "mass"),
    _u("t", "mass", 1000.0),
    _u("kg/kWh", "emission_factor"),
    _u("B", "data_size", 1.0 / 1024**2, desc="byte"),
    _u("KiB", "data_size", 1.0 / 1024),
    _u("MiB", "data_size", 1.0, desc="mebibyte (memory, disk)"),
    _u("GiB", "data_size", 1024.0),
)

UNITS: Final[dict[str, UnitInfo]] = {u.symbol: u for u in _UNITS}

# Spellings seen in device documentation and BACnet unit names, mapped to our symbols.
ALIASES: Final[dict[str, str]] = {
    "percent": "%",
    "volts": "V",
    "amperes": "A",
    "watts": "W",
    "kilowatts": "kW",
    "kilowatt-hours": "kWh",
    "hertz": "Hz",
    "degrees-celsius": "degC",
    "degrees-fahrenheit": "degF",
    "°C": "degC",
    "°F": "degF",
    "seconds": "s",
    "minutes": "min",
    "hours": "h",
    "pascals": "Pa",
    "kilopascals": "kPa",
    "percent-relative-humidity": "%RH",
    "revolutions-per-minute": "rpm",
    "cubic-meters-per-hour": "m3/h",
    "liters-per-second": "L/s",
    "kilograms-per-second": "kg/s",
    "delta-degrees-kelvin": "K",
    "no-units": "",
}


class UnitError(ValueError):
    """A unit is unknown, or two units cannot be converted into each other."""


def canonical(symbol: str) -> str:
    """Return the canonical symbol for a unit or one of its known aliases."""
    if symbol in UNITS:
        return symbol
    alias = ALIASES.get(symbol)
    if alias is not None:
        return alias
    known = ", ".join(repr(s) for s in UNITS)
    raise UnitError(f"unknown unit {symbol!r}; known units: {known}")


def is_known(symbol: str) -> bool:
    """Tell whether a symbol is in the vocabulary (aliases not included)."""
    return symbol in UNITS


def convertible(from_unit: str, to_unit: str) -> bool:
    """Tell whether values in one unit can be converted to the other."""
    return UNITS[canonical(from_unit)].dimension == UNITS[canonical(to_unit)].dimension


def conversion(from_unit: str, to_unit: str) -> tuple[float, float]:
    """Return (gain, bias) such that value_in_to = value_in_from * gain + bias."""
    src = UNITS[canonical(from_unit)]
    dst = UNITS[canonical(to_unit)]
    if src.dimension != dst.dimension:
        raise UnitError(f"cannot convert {from_unit!r} ({src.dimension}) to {to_unit!r} ({dst.dimension})")
    gain = src.factor / dst.factor
    bias = (src.offset - dst.offset) / dst.factor
    return gain, bias


def convert(value: float, from_unit: str, to_unit: str) -> float:
    """Convert a value between two units of the same dimension."""
    if from_unit == to_unit:
        return value
    gain, bias = conversion(from_unit, to_unit)
    return value * gain + bias


# What the collector stores: power in kW, energy in kWh, everything else as read.
COLLECTOR_UNITS: Final[dict[str, str]] = {
    "power": "kW",
    "energy": "kWh",
    "apparent_power": "kVA",
    "reactive_power": "kvar",
    "temperature": "degC",
}


def normalised_unit(symbol: str) -> str:
    """Return the unit the collector stores a value of this unit in."""
    info = UNITS[canonical(symbol)]
    return COLLECTOR_UNITS.get(info.dimension, info.symbol)
