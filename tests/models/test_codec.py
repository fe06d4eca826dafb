"""Codec: every type and order round-trips; known vectors pin the orders; bad input is an error."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models import codec
from models.codec import CodecError, ValueType, WordOrder

ORDERS = list(WordOrder)
INT_TYPES = sorted(codec.INTEGER_TYPES)


@pytest.mark.parametrize(
    ("value", "vtype", "order", "registers"),
    [
        # The anchor: float32 7.25 is 0x40E8 0x0000 big-endian.
        (7.25, ValueType.FLOAT32, WordOrder.ABCD, [0x40E8, 0x0000]),
        (7.25, ValueType.FLOAT32, WordOrder.CDAB, [0x0000, 0x40E8]),
        (7.25, ValueType.FLOAT32, WordOrder.BADC, [0xE840, 0x0000]),
        (7.25, ValueType.FLOAT32, WordOrder.DCBA, [0x0000, 0xE840]),
        # 230.5 V = 0x43668000
        (230.5, ValueType.FLOAT32, WordOrder.ABCD, [0x4366, 0x8000]),
        (230.5, ValueType.FLOAT32, WordOrder.CDAB, [0x8000, 0x4366]),
        (0x12345678, ValueType.UINT32, WordOrder.ABCD, [0x1234, 0x5678]),
        (0x12345678, ValueType.UINT32, WordOrder.CDAB, [0x5678, 0x1234]),
        (0x12345678, ValueType.UINT32, WordOrder.BADC, [0x3412, 0x7856]),
        (0x12345678, ValueType.UINT32, WordOrder.DCBA, [0x7856, 0x3412]),
        (-2, ValueType.INT32, WordOrder.ABCD, [0xFFFF, 0xFFFE]),
        (-2, ValueType.INT16, WordOrder.ABCD, [0xFFFE]),
        (0x1234, ValueType.UINT16, WordOrder.ABCD, [0x1234]),
        (0x1234, ValueType.UINT16, WordOrder.BADC, [0x3412]),
        (0x1234, ValueType.UINT16, WordOrder.CDAB, [0x1234]),
        (0x1234, ValueType.UINT16, WordOrder.DCBA, [0x3412]),
        (0x0102030405060708, ValueType.UINT64, WordOrder.ABCD, [0x0102, 0x0304, 0x0506, 0x0708]),
        (0x0102030405060708, ValueType.UINT64, WordOrder.CDAB, [0x0708, 0x0506, 0x0304, 0x0102]),
        (0x0102030405060708, ValueType.UINT64, WordOrder.BADC, [0x0201, 0x0403, 0x0605, 0x0807]),
        (0x0102030405060708, ValueType.UINT64, WordOrder.DCBA, [0x0807, 0x0605, 0x0403, 0x0201]),
        (1.0, ValueType.FLOAT64, WordOrder.ABCD, [0x3FF0, 0, 0, 0]),
        (1.0, ValueType.FLOAT64, WordOrder.CDAB, [0, 0, 0, 0x3FF0]),
        (True, ValueType.BOOL, WordOrder.ABCD, [1]),
    ],
)
def test_known_vectors(value: float, vtype: ValueType, order: WordOrder, registers: list[int]) -> None:
    assert codec.encode_registers(value, vtype, order) == registers
    assert codec.decode_registers(registers, vtype, order) == value


@given(st.sampled_from(INT_TYPES), st.sampled_from(ORDERS), st.data())
def test_integers_round_trip(vtype: ValueType, order: WordOrder, data: st.DataObject) -> None:
    lo, hi = codec.int_range(vtype)
    value = data.draw(st.integers(lo, hi))
    regs = codec.encode_registers(value, vtype, order)
    assert len(regs) == codec.register_count(vtype)
    assert all(0 <= r <= 0xFFFF for r in regs)
    assert codec.decode_registers(regs, vtype, order) == value


@given(st.sampled_from(ORDERS), st.floats(width=32, allow_nan=False))
def test_float32_round_trips(order: WordOrder, value: float) -> None:
    regs = codec.encode_registers(value, ValueType.FLOAT32, order)
    assert codec.decode_registers(regs, ValueType.FLOAT32, order) == value


@given(st.sampled_from(ORDERS), st.floats(allow_nan=False))
def test_float64_round_trips(order: WordOrder, value: float) -> None:
    regs = codec.encode_registers(value, ValueType.FLOAT64, order)
    assert codec.decode_registers(regs, ValueType.FLOAT64, order) == value


@given(st.sampled_from(ORDERS), st.sampled_from([ValueType.FLOAT32, ValueType.FLOAT64]))
def test_nan_survives_as_nan(order: WordOrder, vtype: ValueType) -> None:
    regs = codec.encode_registers(math.nan, vtype, order)
    decoded = codec.decode_registers(regs, vtype, order)
    assert isinstance(decoded, float)
    assert math.isnan(decoded)


@given(
    st.sampled_from(ORDERS),
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20),
    st.integers(10, 16),
)
def test_strings_round_trip(order: WordOrder, text: str, length: int) -> None:
    regs = codec.encode_string(text, length, order)
    assert len(regs) == length
    assert codec.decode_registers(regs, ValueType.STRING, order, length) == text


def test_string_padding_and_byte_order() -> None:
    # "SMT1500" space padded, as some UPS firmware sends it.
    regs = [0x534D, 0x5431, 0x3530, 0x3020, 0x2020]
    assert codec.decode_string(regs) == "SMT1500"
    swapped = [((r & 0xFF) << 8) | (r >> 8) for r in regs]
    assert codec.decode_string(swapped, WordOrder.BADC) == "SMT1500"
    assert codec.decode_string([0x4142, 0x0043, 0x4445]) == "AB"  # NUL ends the text


@pytest.mark.parametrize(
    ("registers", "vtype", "message"),
    [
        ([0x4366], ValueType.FLOAT32, "needs 2 registers, got 1"),
        ([1, 2, 3], ValueType.UINT32, "needs 2 registers, got 3"),
        ([0x10000], ValueType.UINT16, "not a 16-bit"),
        ([-1], ValueType.INT16, "not a 16-bit"),
        ([1, 2], ValueType.FLOAT64, "needs 4 registers"),
    ],
)
def test_malformed_registers_are_errors(registers: list[int], vtype: ValueType, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        codec.decode_registers(registers, vtype)


def test_bytes_that_are_not_text_are_an_error() -> None:
    with pytest.raises(CodecError, match="not text"):
        codec.decode_registers([0xC3FF, 0x4142], ValueType.STRING, length=2)
    with pytest.raises(CodecError, match="control characters"):
        codec.decode_registers([0x0741, 0x4142], ValueType.STRING, length=2)


@pytest.mark.parametrize(
    ("value", "vtype", "message"),
    [
        (70000, ValueType.UINT16, "does not fit"),
        (-1, ValueType.UINT32, "does not fit"),
        (1.5, ValueType.INT16, "whole number"),
        (math.inf, ValueType.INT32, "whole number"),
        ("abc", ValueType.FLOAT32, "cannot take text"),
        (1e39, ValueType.FLOAT32, "does not fit float32"),
        (2, ValueType.BOOL, "cannot take"),
    ],
)
def test_values_that_do_not_fit_are_errors(value: float, vtype: ValueType, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        codec.encode_registers(value, vtype)


def test_string_too_long_or_not_ascii() -> None:
    with pytest.raises(CodecError, match="longer than 2 registers"):
        codec.encode_string("ABCDE", 2)
    with pytest.raises(CodecError, match="ASCII"):
        codec.encode_string("℃", 4)


def test_flags_and_bits() -> None:
    names = {1: "online", 2: "on_battery", 13: "eco"}
    word = (1 << 1) | (1 << 13)
    assert codec.flags(word, names) == frozenset({"online", "eco"})
    assert codec.bit(word, 13)
    assert not codec.bit(word, 2)
    assert codec.set_bit(word, 2, value=True) == word | 4
    assert codec.set_bit(word, 1, value=False) == 1 << 13


@given(st.sampled_from(INT_TYPES), st.integers(-1000, 1000), st.sampled_from([0.1, 0.01, 2**-9, 1.0]))
def test_scale_inverts(vtype: ValueType, raw: int, scale: float) -> None:
    lo, hi = codec.int_range(vtype)
    if not lo <= raw <= hi:
        return
    value = codec.scale_value(raw, scale, 0.0)
    assert codec.unscale_value(value, vtype, scale, 0.0) == raw


def test_unscale_refuses_out_of_range() -> None:
    with pytest.raises(CodecError, match="outside uint16"):
        codec.unscale_value(700.0, ValueType.UINT16, 0.01)


def test_float32_vectors_agree_with_struct() -> None:
    for value in (0.0, -0.0, 1.5, -273.15, 1e-38, 3.0e38):
        packed = struct.pack(">f", value)
        expected = [int.from_bytes(packed[:2], "big"), int.from_bytes(packed[2:], "big")]
        assert codec.encode_registers(value, ValueType.FLOAT32) == expected
