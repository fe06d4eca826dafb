"""The checks every setpoint write goes through."""

from __future__ import annotations

import struct

import pytest

from models.limits import WriteRefused, check_write
from models.schema import Point


def setpoint(**writable: float) -> Point:
    limits = {"min": 5.0, "max": 16.0, "max_step": 1.0, "priority": 16, **writable}
    return Point.model_validate(
        {"name": "chw_supply_setpoint", "unit": "degC", "object": "analog-value:1", "writable": limits}
    )


def float32(value: float) -> float:
    result: float = struct.unpack(">f", struct.pack(">f", value))[0]
    return result


def test_within_limits_passes() -> None:
    check_write(setpoint(), 9.0, 8.5)


@pytest.mark.parametrize(
    ("value", "current", "reason"),
    [
        (4.9, 5.0, "outside [5, 16]"),
        (16.1, 16.0, "outside [5, 16]"),
        (11.0, 9.0, "step 2 from 9 exceeds max_step 1"),
        (float("nan"), 9.0, "not a finite number"),
        ("warm", 9.0, "not a number"),
    ],
)
def test_refusals_name_the_point_and_reason(value: float | str, current: float, reason: str) -> None:
    with pytest.raises(WriteRefused) as err:
        check_write(setpoint(), value, current)
    assert "chw_supply_setpoint" in str(err.value)
    assert reason in str(err.value)


def test_a_full_step_from_a_float32_read_back_passes() -> None:
    current = float32(15.3)  # 15.300000190734863
    assert current != 15.3
    check_write(setpoint(), 14.3, current)
    with pytest.raises(WriteRefused, match="exceeds max_step"):
        check_write(setpoint(), 14.29, current)


def test_release_needs_a_priority_slot() -> None:
    check_write(setpoint(), None, 9.0, release=True)
    modbus = Point.model_validate(
        {"name": "speed", "unit": "%", "register": "holding", "address": 1, "type": "uint16",
         "writable": {"min": 0, "max": 100}}
    )  # fmt: skip
    with pytest.raises(WriteRefused, match="BACnet priority slots only"):
        check_write(modbus, None, 50, release=True)


def test_not_writable_point_is_refused() -> None:
    point = Point.model_validate({"name": "supply_temp", "unit": "degC", "object": "analog-input:1"})
    with pytest.raises(WriteRefused, match="not writable"):
        check_write(point, 9.0, 9.0)
