"""Unit vocabulary and conversions."""

from __future__ import annotations

import pytest

from models import units


@pytest.mark.parametrize(
    ("value", "src", "dst", "expected"),
    [
        (1500.0, "W", "kW", 1.5),
        (2.0, "MWh", "kWh", 2000.0),
        (212.0, "degF", "degC", 100.0),
        (0.0, "degC", "degF", 32.0),
        (36.0, "m3/h", "L/s", 10.0),
        (2.0, "h", "min", 120.0),
        (1.0, "bar", "kPa", 100.0),
    ],
)
def test_conversions(value: float, src: str, dst: str, expected: float) -> None:
    assert units.convert(value, src, dst) == pytest.approx(expected)


def test_incompatible_units_refused() -> None:
    with pytest.raises(units.UnitError, match="cannot convert 'kW'"):
        units.convert(1.0, "kW", "kWh")
    # A temperature difference is not a temperature.
    with pytest.raises(units.UnitError):
        units.convert(5.0, "K", "degC")


def test_aliases_and_unknown() -> None:
    assert units.canonical("degrees-celsius") == "degC"
    with pytest.raises(units.UnitError, match="unknown unit 'furlong'"):
        units.canonical("furlong")


def test_collector_normalisation() -> None:
    assert units.normalised_unit("W") == "kW"
    assert units.normalised_unit("Wh") == "kWh"
    assert units.normalised_unit("degF") == "degC"
    assert units.normalised_unit("%RH") == "%RH"
