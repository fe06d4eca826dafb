"""Point-level decoding: sentinels, enums, bits, NaN and scaling become values or qualities."""

from __future__ import annotations

import math

import pytest

from models.codec import CodecError
from models.quality import Quality
from models.schema import Point
from models.values import Reading, decode_registers, decode_scalar, encode_registers, to_raw


def modbus_point(**kw: object) -> Point:
    base: dict[str, object] = {"name": "p", "register": "holding", "address": 0, "type": "uint16"}
    base.update(kw)
    return Point.model_validate(base)


def test_scaled_value_apc_battery_charge() -> None:
    point = modbus_point(unit="%", scale=2**-9)
    assert decode_registers(point, [87 * 512]) == Reading(87.0)
    assert encode_registers(point, 87.0) == [87 * 512]


def test_signed_scaled_battery_voltage() -> None:
    point = modbus_point(type="int16", unit="V", scale=2**-5)
    assert decode_registers(point, [0xFFE0]) == Reading(-1.0)


def test_not_available_sentinel() -> None:
    point = modbus_point(unit="V", scale=2**-6, na=0xFFFF)
    assert decode_registers(point, [0xFFFF]) == Reading(None, Quality.NOT_AVAILABLE)
    assert decode_registers(point, [230 * 64]) == Reading(230.0)


def test_enum_names_and_unknown_values() -> None:
    point = modbus_point(enum={1: "other", 2: "none", 3: "normal"})
    assert decode_registers(point, [3]) == Reading("normal")
    assert decode_registers(point, [9]) == Reading(None, Quality.UNKNOWN_ENUM)
    assert encode_registers(point, "none") == [2]
    with pytest.raises(CodecError, match="not one of"):
        encode_registers(point, "bogus")


def test_bit_field_and_single_bit() -> None:
    flags = modbus_point(type="uint32", bits={1: "online", 2: "on_battery", 13: "eco"})
    assert decode_registers(flags, [0, (1 << 1) | (1 << 13)]) == Reading("eco,online")
    assert to_raw(flags, "online,on_battery") == 6
    on_battery = modbus_point(type="uint32", bit=2)
    assert decode_registers(on_battery, [0, 4]) == Reading(True)
    assert decode_registers(on_battery, [0, 2]) == Reading(False)


@pytest.mark.parametrize(("regs", "quality"), [([0x7FC0, 0], Quality.NOT_A_NUMBER), ([0x7F80, 0], Quality.INFINITE)])
def test_non_finite_floats_are_qualities(regs: list[int], quality: Quality) -> None:
    point = modbus_point(type="float32", unit="W")
    assert decode_registers(point, regs) == Reading(None, quality)


def test_wrong_register_count_is_a_decode_error_not_a_number() -> None:
    point = modbus_point(type="float32", unit="W")
    assert decode_registers(point, [0x4366]) == Reading(None, Quality.DECODE_ERROR)


def test_coil_point() -> None:
    point = Point.model_validate({"name": "run", "register": "coil", "address": 3})
    assert decode_registers(point, [1]) == Reading(True)
    assert encode_registers(point, False) == [0]


def test_scalar_decoding_for_snmp_and_bacnet() -> None:
    point = Point.model_validate({"name": "v", "oid": "1.3.6.1.2.1.33.1.2.5.0", "unit": "V", "scale": 0.1})
    assert decode_scalar(point, 2701).value == pytest.approx(270.1)
    text = Point.model_validate({"name": "model", "oid": "1.3.6.1.2.1.33.1.1.2.0"})
    assert decode_scalar(text, b"Smart-UPS 3000") == Reading("Smart-UPS 3000")
    assert decode_scalar(text, b"\xff\x00") == Reading("ff00")
    nan = decode_scalar(point, math.nan)
    assert nan.quality is Quality.NOT_A_NUMBER


def test_signed_status_word_with_its_top_bit_set() -> None:
    # A status word declared int16 whose bit 15 is set decodes as negative; its bits are still read.
    point = modbus_point(type="int16", bits={0: "alarm", 15: "fault"})
    assert decode_registers(point, [0x8001]) == Reading("alarm,fault")
    assert decode_registers(modbus_point(type="int16", bit=15), [0x8000]) == Reading(True)
    assert decode_registers(modbus_point(type="int32", bit=31), [0x8000, 0]) == Reading(True)


def test_negative_status_word_of_no_integer_type_is_a_decode_error() -> None:
    point = Point.model_validate({"name": "p", "oid": "1.3.6.1.2.1.1.1.0", "bits": {0: "alarm"}})
    assert decode_scalar(point, -1) == Reading(None, Quality.DECODE_ERROR)
