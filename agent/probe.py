"""`dcim-agent probe modbus`: read raw registers and show every way they can be decoded.

A field engineer facing an undocumented device reads a few registers and looks for the
row that shows a plausible value (a mains voltage near 230, a temperature near 25): its
type and word order are what the device model needs.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from collections.abc import Sequence

from models import codec
from models.codec import CodecError, ValueType, WordOrder
from models.schema import MAX_REGISTERS_PER_READ, Register

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

ORDERS: tuple[WordOrder, ...] = (WordOrder.ABCD, WordOrder.CDAB, WordOrder.BADC, WordOrder.DCBA)
SECTIONS: tuple[tuple[int, tuple[ValueType, ...]], ...] = (
    (1, (ValueType.UINT16, ValueType.INT16)),
    (2, (ValueType.UINT32, ValueType.INT32, ValueType.FLOAT32)),
    (4, (ValueType.UINT64, ValueType.INT64, ValueType.FLOAT64)),
)
WIDTH: dict[int, int] = {1: 8, 2: 14, 4: 24}


def _number(value: float | str | bool, value_type: ValueType) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.7g}" if value_type is ValueType.FLOAT32 else f"{value:.15g}"
    return str(value)


def _ascii(registers: Sequence[int], order: WordOrder) -> str:
    data = b"".join(
        ((r & 0xFF) << 8 | r >> 8).to_bytes(2, "big") if order.byte_swap else r.to_bytes(2, "big") for r in registers
    )
    return "".join(chr(b) if 32 <= b < 127 else "." for b in data)


def render(registers: Sequence[int], address: int) -> list[str]:
    """Lines showing the registers raw and decoded as every type in every word order."""
    lines = ["address       raw     hex  ascii"]
    lines.extend(
        f"{address + i:>7}  {reg:>8}  0x{reg:04X}  {_ascii([reg], WordOrder.ABCD)}" for i, reg in enumerate(registers)
    )
    for size, types in SECTIONS:
        if len(registers) < size:
            continue
        width = WIDTH[size]
        lines.append("")
        lines.append(f"{size * 16}-bit values")
        lines.append("address  order  " + "  ".join(f"{t.value:>{width}}" for t in types))
        for i in range(len(registers) - size + 1):
            window = registers[i : i + size]
            for order in ORDERS:
                cells = []
                for value_type in types:
                    try:
                        cells.append(_number(codec.decode_registers(window, value_type, order), value_type))
                    except CodecError:
                        cells.append("-")
                lines.append(f"{address + i:>7}  {order.value:<5}  " + "  ".join(f"{c:>{width}}" for c in cells))
    lines.append("")
    lines.append("text")
    lines.extend(f"{order.value:<5}  {_ascii(registers, order)!r}" for order in (WordOrder.ABCD, WordOrder.BADC))
    return lines


async def _read(args: argparse.Namespace) -> list[int]:
    from agent.drivers import modbus  # noqa: PLC0415  (load pymodbus only when probing)

    return await modbus.read_raw(
        args.host,
        args.port,
        unit=args.unit,
        table=Register(args.register),
        address=args.address,
        count=args.count,
        timeout_s=args.timeout,
    )


def cmd_probe(args: argparse.Namespace) -> int:
    """Run `probe PROTOCOL`; only modbus exists."""
    if args.protocol != "modbus":
        sys.stderr.write(f"dcim-agent probe: unknown protocol {args.protocol!r}\n")
        return EXIT_USAGE
    return probe_modbus(args)


def probe_modbus(args: argparse.Namespace) -> int:
    """Read registers once and print every decoding; exit 1 when the device does not answer."""
    problems = []
    if not 1 <= args.count <= MAX_REGISTERS_PER_READ:
        problems.append(f"--count must be 1..{MAX_REGISTERS_PER_READ}, not {args.count}")
    if not 0 <= args.address <= 0xFFFF or args.address + args.count > 0x10000:
        problems.append(f"--address {args.address} with --count {args.count} is outside registers 0..65535")
    if not 0 <= args.unit <= 255:
        problems.append(f"--unit must be 0..255, not {args.unit}")
    if not 1 <= args.port <= 65535:
        problems.append(f"--port must be 1..65535, not {args.port}")
    if args.timeout <= 0:
        problems.append(f"--timeout must be positive, not {args.timeout}")
    if problems:
        for problem in problems:
            sys.stderr.write(f"dcim-agent probe modbus: {problem}\n")
        return EXIT_USAGE
    from agent.drivers.modbus import DeviceExceptionError, LinkError  # noqa: PLC0415

    try:
        registers = asyncio.run(_read(args))
    except (LinkError, DeviceExceptionError) as exc:
        sys.stderr.write(
            f"dcim-agent probe modbus: {args.host}:{args.port} unit {args.unit} {args.register} "
            f"{args.address}+{args.count}: {exc}\n"
        )
        return EXIT_FAILED
    last = args.address + args.count - 1
    header = (
        f"{args.host}:{args.port} unit {args.unit}, {args.register} registers {args.address}..{last} "
        f"({args.count} registers, 0-based)"
    )
    sys.stdout.write("\n".join([header, "", *render(registers, args.address)]) + "\n")
    return EXIT_OK
