"""Value codec: raw registers and protocol scalars to engineering values and back."""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Final


class CodecError(ValueError):
    """Raw input that cannot be decoded, or a value that cannot be encoded."""


class ValueType(StrEnum):
    """Data types a point can have on the wire."""

    BOOL = "bool"
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    STRING = "string"


class WordOrder(StrEnum):
    """Byte order of a multi-byte value spread over 16-bit registers.

    The letters name the bytes of a 32-bit value from most to least significant (A is
    the most significant) in the order they arrive. ABCD is big-endian throughout;
    CDAB swaps the words; BADC swaps the bytes inside each word; DCBA is little-endian
    throughout. The same two swaps apply to 64-bit values (the word swap reverses all
    four words) and the byte swap alone to 16-bit values and strings.
    """

    ABCD = "ABCD"
    CDAB = "CDAB"
    BADC = "BADC"
    DCBA = "DCBA"

    @property
    def word_swap(self) -> bool:
        """Whether the least significant word comes first."""
        return self in (WordOrder.CDAB, WordOrder.DCBA)

    @property
    def byte_swap(self) -> bool:
        """Whether the low byte of each register comes first."""
        return self in (WordOrder.BADC, WordOrder.DCBA)


_STRUCT: Final[dict[ValueType, str]] = {
    ValueType.INT16: ">h",
    ValueType.UINT16: ">H",
    ValueType.INT32: ">i",
    ValueType.UINT32: ">I",
    ValueType.INT64: ">q",
    ValueType.UINT64: ">Q",
    ValueType.FLOAT32: ">f",
    ValueType.FLOAT64: ">d",
}

REGISTERS: Final[dict[ValueType, int]] = {
    ValueType.BOOL: 1,
    ValueType.INT16: 1,
    ValueType.UINT16: 1,
    ValueType.INT32: 2,
    ValueType.UINT32: 2,
    ValueType.INT64: 4,
    ValueType.UINT64: 4,
    ValueType.FLOAT32: 2,
    ValueType.FLOAT64: 4,
}

INTEGER_TYPES: Final[frozenset[ValueType]] = frozenset(
    {
        ValueType.INT16,
        ValueType.UINT16,
        ValueType.INT32,
        ValueType.UINT32,
        ValueType.INT64,
        ValueType.UINT64,
    }
)
FLOAT_TYPES: Final[frozenset[ValueType]] = frozenset({ValueType.FLOAT32, ValueType.FLOAT64})

_INT_RANGE: Final[dict[ValueType, tuple[int, int]]] = {
    ValueType.INT16: (-(2**15), 2**15 - 1),
    ValueType.UINT16: (0, 2**16 - 1),
    ValueType.INT32: (-(2**31), 2**31 - 1),
    ValueType.UINT32: (0, 2**32 - 1),
    ValueType.INT64: (-(2**63), 2**63 - 1),
    ValueType.UINT64: (0, 2**64 - 1),
}


def register_count(value_type: ValueType, length: int | None = None) -> int:
    """Number of 16-bit registers a value of this type occupies."""
    if value_type is ValueType.STRING:
        if length is None or length < 1:
            raise CodecError("a string point needs length >= 1 (registers)")
        return length
    return REGISTERS[value_type]


def struct_format(value_type: ValueType) -> str:
    """The big-endian struct format of a numeric type (KeyError for bool and string)."""
    return _STRUCT[value_type]


def int_range(value_type: ValueType) -> tuple[int, int]:
    """Smallest and largest raw integer of an integer type."""
    return _INT_RANGE[value_type]


def _check_registers(registers: Sequence[int], expected: int, what: str) -> None:
    if len(registers) != expected:
        raise CodecError(f"{what} needs {expected} registers, got {len(registers)}")
    for reg in registers:
        if not isinstance(reg, int) or isinstance(reg, bool) or not 0 <= reg <= 0xFFFF:
            raise CodecError(f"register value {reg!r} is not a 16-bit unsigned integer")


def _to_bytes(registers: Sequence[int], order: WordOrder) -> bytes:
    """Registers as they arrived to big-endian bytes of the value."""
    words = list(reversed(registers)) if order.word_swap else list(registers)
    if order.byte_swap:
        return b"".join(((w & 0xFF) << 8 | w >> 8).to_bytes(2, "big") for w in words)
    return b"".join(w.to_bytes(2, "big") for w in words)


def _from_bytes(data: bytes, order: WordOrder) -> list[int]:
    """Big-endian bytes of a value to registers in the device's order."""
    words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    if order.byte_swap:
        words = [(w & 0xFF) << 8 | w >> 8 for w in words]
    if order.word_swap:
        words.reverse()
    return words


def decode_registers(
    registers: Sequence[int],
    value_type: ValueType,
    order: WordOrder = WordOrder.ABCD,
    length: int | None = None,
) -> int | float | str | bool:
    """Decode raw 16-bit registers into an integer, float, string or boolean.

    Floats may come back as NaN or infinity: the caller decides what they mean
    (see :func:`finite_or_quality`).
    """
    count = register_count(value_type, length)
    _check_registers(registers, count, str(value_type))
    if value_type is ValueType.BOOL:
        return registers[0] != 0
    if value_type is ValueType.STRING:
        return decode_string(registers, order)
    value: int | float = struct.unpack(_STRUCT[value_type], _to_bytes(registers, order))[0]
    return value


def encode_registers(
    value: float | str | bool,
    value_type: ValueType,
    order: WordOrder = WordOrder.ABCD,
    length: int | None = None,
) -> list[int]:
    """Encode an integer, float, string or boolean into 16-bit registers."""
    count = register_count(value_type, length)
    if value_type is ValueType.BOOL:
        if not isinstance(value, bool | int) or (isinstance(value, int) and value not in (0, 1)):
            raise CodecError(f"bool point cannot take {value!r}")
        return [1 if value else 0]
    if value_type is ValueType.STRING:
        if not isinstance(value, str):
            raise CodecError(f"string point cannot take {value!r}")
        return encode_string(value, count, order)
    if isinstance(value, str):
        raise CodecError(f"{value_type} point cannot take text {value!r}")
    if value_type in INTEGER_TYPES:
        if isinstance(value, float):
            if not math.isfinite(value) or value != int(value):
                raise CodecError(f"{value_type} point needs a whole number, got {value!r}")
            value = int(value)
        lo, hi = _INT_RANGE[value_type]
        if not lo <= value <= hi:
            raise CodecError(f"{value} does not fit {value_type} ({lo}..{hi})")
        data = struct.pack(_STRUCT[value_type], value)
    else:
        fvalue = float(value)
        if value_type is ValueType.FLOAT32 and math.isfinite(fvalue) and abs(fvalue) > 3.4028235e38:
            raise CodecError(f"{value!r} does not fit float32")
        data = struct.pack(_STRUCT[value_type], fvalue)
    return _from_bytes(data, order)


def decode_string(registers: Sequence[int], order: WordOrder = WordOrder.ABCD) -> str:
    """Decode a register string: two bytes per register, NUL or space padded."""
    data = b"".join(
        ((r & 0xFF) << 8 | r >> 8).to_bytes(2, "big") if order.byte_swap else r.to_bytes(2, "big") for r in registers
    )
    data = data.split(b"\x00", 1)[0].rstrip(b" ")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise CodecError(f"register string holds bytes that are not text: {data!r}") from exc
    if not text.isprintable():
        raise CodecError(f"register string holds control characters: {text!r}")
    return text


def encode_string(text: str, registers: int, order: WordOrder = WordOrder.ABCD) -> list[int]:
    """Encode text into a fixed number of registers, NUL padded."""
    try:
        data = text.encode("ascii")
    except UnicodeEncodeError as exc:
        raise CodecError(f"register strings are ASCII; cannot encode {text!r}") from exc
    if len(data) > registers * 2:
        raise CodecError(f"{text!r} is longer than {registers} registers ({registers * 2} bytes)")
    data = data.ljust(registers * 2, b"\x00")
    words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    if order.byte_swap:
        words = [(w & 0xFF) << 8 | w >> 8 for w in words]
    return words


def decode_bits(registers: Sequence[int]) -> list[bool]:
    """Coil or discrete-input values (already unpacked by the protocol) as booleans."""
    return [bool(r) for r in registers]


def flags(word: int, names: Mapping[int, str]) -> frozenset[str]:
    """A status word to the set of names of the bits that are set (bit 0 is the LSB)."""
    if word < 0:
        raise CodecError(f"a status word cannot be negative: {word}")
    return frozenset(name for bit, name in names.items() if word >> bit & 1)


def bit(word: int, index: int) -> bool:
    """One bit of a status word (bit 0 is the least significant)."""
    return bool(word >> index & 1)


def set_bit(word: int, index: int, *, value: bool) -> int:
    """A status word with one bit set or cleared."""
    return word | 1 << index if value else word & ~(1 << index)


def scale_value(raw: float, scale: float = 1.0, offset: float = 0.0) -> float:
    """Engineering value = raw * scale + offset."""
    return raw * scale + offset


def unscale_value(value: float, value_type: ValueType, scale: float = 1.0, offset: float = 0.0) -> float:
    """Raw value for an engineering value; rounded to a whole number for integer types."""
    if scale == 0:
        raise CodecError("scale 0 cannot be inverted")
    raw = (value - offset) / scale
    if value_type in INTEGER_TYPES:
        if not math.isfinite(raw):
            raise CodecError(f"{value!r} has no {value_type} representation")
        rounded = round(raw)
        lo, hi = _INT_RANGE[value_type]
        if not lo <= rounded <= hi:
            raise CodecError(f"{value} scales to {rounded}, outside {value_type} ({lo}..{hi})")
        return rounded
    return raw


def enum_name(raw: int, names: Mapping[int, str]) -> str | None:
    """Name of an enumeration value, or None when the value is not in the table."""
    return names.get(raw)


def enum_value(name: str, names: Mapping[int, str]) -> int:
    """Raw value of an enumeration name."""
    for raw, known in names.items():
        if known == name:
            return raw
    raise CodecError(f"{name!r} is not one of {sorted(names.values())}")


def resolution(value_type: ValueType, scale: float) -> float:
    """Smallest step an encoded value can take (for comparing round-tripped values)."""
    if value_type in INTEGER_TYPES or value_type is ValueType.BOOL:
        return abs(scale)
    return 0.0
