"""Point-level decoding: raw protocol values to engineering values with a quality."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from models import codec
from models.codec import CodecError, ValueType
from models.quality import Quality
from models.schema import Column, Point

Value = float | int | str | bool | None


@dataclass(frozen=True, slots=True)
class Reading:
    """A decoded value and its quality. A value is None exactly when quality is not good."""

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
    if bit is not None:
        return Reading(codec.bit(int(raw), bit))
    bits = getattr(point, "bits", None)
    if bits is not None:
        return Reading(",".join(sorted(codec.flags(int(raw), bits))))
    if point.enum is not None:
        if isinstance(raw, float) and raw != int(raw):
            return Reading.bad(Quality.UNKNOWN_ENUM)
        name = point.enum.get(int(raw))
        return Reading(name) if name is not None else Reading.bad(Quality.UNKNOWN_ENUM)
    if point.scale == 1.0 and point.offset == 0.0:
        return Reading(raw)
    return Reading(codec.scale_value(raw, point.scale, point.offset))


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
