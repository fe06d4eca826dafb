"""Point-level decoding: raw protocol values to engineering values with a quality."""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Final, NamedTuple

from models import codec
from models.codec import CodecError, ValueType
from models.quality import Quality
from models.schema import Column, Point

Value = float | int | str | bool | None


class Reading(NamedTuple):
    """A decoded value and its quality. A value is None exactly when quality is not good.

    A named tuple: one is made for every point of every poll, and a tuple is made several
    times faster than a frozen dataclass.
    """

    value: Value
    quality: Quality = Quality.GOOD

    @classmethod
    def bad(cls, quality: Quality) -> Reading:
        """A failed read."""
        return cls(None, quality)


def finish(point: Point | Column, raw: float | str | bool) -> Reading:
    """Apply the sentinel, enumeration, bit field, NaN checks and scaling to a raw value."""
    if isinstance(raw, str):
        return Reading(raw)
    if isinstance(raw, bool):
        return Reading(raw)
    if isinstance(raw, float) and not math.isfinite(raw):
        return Reading.bad(Quality.NOT_A_NUMBER if math.isnan(raw) else Quality.INFINITE)
    na = getattr(point, "na", None)
    if na is not None and raw == na:
        return Reading.bad(Quality.NOT_AVAILABLE)
    bit = getattr(point, "bit", None)
    bits = getattr(point, "bits", None)
    if bit is not None or bits is not None:
        word = _status_word(point, raw)
        if word is None:
            return Reading.bad(Quality.DECODE_ERROR)
        if bit is not None:
            return Reading(codec.bit(word, bit))
        return Reading(",".join(sorted(codec.flags(word, bits or {}))))
    if point.enum is not None:
        if isinstance(raw, float) and raw != int(raw):
            return Reading.bad(Quality.UNKNOWN_ENUM)
        name = point.enum.get(int(raw))
        return Reading(name) if name is not None else Reading.bad(Quality.UNKNOWN_ENUM)
    if point.scale == 1.0 and point.offset == 0.0:
        return Reading(raw)
    return Reading(codec.scale_value(raw, point.scale, point.offset))


def _status_word(point: Point | Column, raw: float) -> int | None:
    """A raw value as the unsigned word its bits are read from (a signed type's sign bit is bit 15, 31 or 63)."""
    word = int(raw)
    if word >= 0:
        return word
    vtype = point.type
    if vtype is None or vtype not in codec.INTEGER_TYPES:
        return None
    return word & ((1 << 16 * codec.REGISTERS[vtype]) - 1)


def decode_registers(point: Point, registers: Sequence[int]) -> Reading:
    """Decode a Modbus point from its registers (or bits for coils/discretes)."""
    if point.register is not None and point.register.is_bit:
        if len(registers) != 1:
            return Reading.bad(Quality.DECODE_ERROR)
        return Reading(bool(registers[0]))
    assert point.type is not None  # noqa: S101  (the schema requires it for registers)
    try:
        raw = codec.decode_registers(registers, point.type, point.order, point.length)
    except CodecError:
        return Reading.bad(Quality.DECODE_ERROR)
    return finish(point, raw)


# ---------------------------------------------------------------- compiled register decoding
#
# decode_registers above is the reference. A poll decodes many points from a few reads, so the
# Modbus driver packs each read once into bytes (two big-endian bytes per register, one byte per
# coil or discrete input) and decodes each point with a decoder compiled for it: one precompiled
# struct.Struct and the point's finishing steps chosen up front. The result is the same Reading
# as decode_registers (tests compare the two over the catalog and generated points).

RegisterDecoder = Callable[[bytes, int], Reading]
"""Decodes a point from a packed read at the index (register or bit) of its first register."""

_DECODERS: dict[int, tuple[Point, RegisterDecoder]] = {}
_DECODERS_MAX: Final = 100_000


@lru_cache(maxsize=256)
def _words(count: int) -> struct.Struct:
    return struct.Struct(f">{count}H")


def pack_registers(registers: Sequence[int], *, bits: bool = False) -> bytes | None:
    """A read's registers (or bits) as the bytes compiled decoders take; None if one is out of range."""
    try:
        return bytes(registers) if bits else _words(len(registers)).pack(*registers)
    except (struct.error, ValueError, TypeError):
        return None


def unpack_registers(data: bytes, index: int, count: int) -> list[int]:
    """`count` registers from a packed read, from register `index`."""
    return list(_words(count).unpack_from(data, 2 * index))


def register_decoder(point: Point) -> RegisterDecoder:
    """The compiled decoder of a Modbus point (cached per point object)."""
    hit = _DECODERS.get(id(point))
    if hit is not None and hit[0] is point:
        return hit[1]
    decoder = _compile(point)
    if len(_DECODERS) >= _DECODERS_MAX:
        _DECODERS.clear()
    _DECODERS[id(point)] = (point, decoder)
    return decoder


def _raw_struct(point: Point) -> struct.Struct | None:
    """One struct reading the point's raw number straight from the packed read, if there is one."""
    vtype = point.type
    if vtype is None or vtype not in codec.INTEGER_TYPES | codec.FLOAT_TYPES:
        return None
    fmt = codec.struct_format(vtype)
    if point.order is codec.WordOrder.ABCD or (point.registers == 1 and not point.order.byte_swap):
        return struct.Struct(fmt)
    if point.order is codec.WordOrder.DCBA or point.registers == 1:
        # every byte reversed (or the two bytes of one register swapped): little-endian
        return struct.Struct("<" + fmt[1:])
    return None  # CDAB, BADC over several registers: the reference path


def _compile(point: Point) -> RegisterDecoder:
    count = point.registers
    if point.register is not None and point.register.is_bit:

        def bit_value(data: bytes, index: int) -> Reading:
            return Reading(data[index] != 0)

        return bit_value

    def reference(data: bytes, index: int) -> Reading:
        return decode_registers(point, unpack_registers(data, index, count))

    raw_struct = _raw_struct(point)
    if raw_struct is None:
        return reference
    unpack = raw_struct.unpack_from
    is_float = point.type in codec.FLOAT_TYPES
    plain = point.na is None and point.bit is None and point.bits is None and point.enum is None
    if not plain:

        def finished(data: bytes, index: int) -> Reading:
            return finish(point, unpack(data, 2 * index)[0])

        return finished
    scale, offset = point.scale, point.offset
    unscaled = scale == 1.0 and offset == 0.0
    if is_float:
        if unscaled:

            def float_value(data: bytes, index: int) -> Reading:
                raw = unpack(data, 2 * index)[0]
                return Reading(raw) if raw - raw == 0.0 else finish(point, raw)  # NaN and inf: finish says which

            return float_value

        def float_scaled(data: bytes, index: int) -> Reading:
            raw = unpack(data, 2 * index)[0]
            return Reading(raw * scale + offset) if raw - raw == 0.0 else finish(point, raw)

        return float_scaled
    if unscaled:

        def int_value(data: bytes, index: int) -> Reading:
            return Reading(unpack(data, 2 * index)[0])

        return int_value

    def int_scaled(data: bytes, index: int) -> Reading:
        return Reading(unpack(data, 2 * index)[0] * scale + offset)

    return int_scaled


def decode_scalar(point: Point | Column, raw: float | str | bool | bytes) -> Reading:
    """Decode an SNMP or BACnet scalar (already a Python value) for a point."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.hex()
        return finish(point, text)
    return finish(point, raw)


def to_raw(point: Point | Column, value: Value) -> float | int | str | bool:
    """Inverse of :func:`finish`: an engineering value to the raw number or text."""
    if value is None:
        raise CodecError(f"point {point.name!r}: no value to encode")
    if isinstance(value, str) and point.enum is not None:
        return codec.enum_value(value, point.enum)
    bits = getattr(point, "bits", None)
    if isinstance(value, str) and bits is not None:
        word = 0
        for name in filter(None, value.split(",")):
            word = codec.set_bit(word, codec.enum_value(name, bits), value=True)
        return word
    if isinstance(value, str | bool):
        return value
    vtype = point.type or ValueType.FLOAT64
    if point.scale == 1.0 and point.offset == 0.0 and vtype not in codec.INTEGER_TYPES:
        return value
    return codec.unscale_value(value, vtype, point.scale, point.offset)


def encode_registers(point: Point, value: Value) -> list[int]:
    """Registers (or bits) that make a Modbus point read back as `value`."""
    raw = to_raw(point, value)
    if point.register is not None and point.register.is_bit:
        return [1 if raw else 0]
    assert point.type is not None  # noqa: S101
    if point.bit is not None:
        raise CodecError(f"point {point.name!r}: a single bit is encoded with its whole word")
    return codec.encode_registers(raw, point.type, point.order, point.length)
