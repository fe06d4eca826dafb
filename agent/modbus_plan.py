"""Modbus request planner: the fewest reads that cover a model's points, and how to split them.

Pure functions over the model's points: no sockets, no clocks, no protocol library. The
driver plans with it, the simulator-side tests count against it, and benches can reuse it.

Terms:

- A *block* is a run of registers (or bits) that must be read in one request: one point,
  or several points that overlap (a status word and the single-bit points inside it).
  Blocks never share a register. Points that merely touch stay separate blocks, so a
  failing read can be split between them.
- A *read* is one request: a start address and a count covering one or more whole
  blocks of one table, plus the gap registers between them (read and discarded).
- A *barrier* at address ``b`` forbids a read containing both ``b - 1`` and ``b``
  (learned when a device refuses a read across an unmapped gap or an internal boundary).
  Points left out of a plan (known to fail) are fenced off by barriers at both ends, so
  their registers are not read as gap filler either.

The greedy planner below is optimal: blocks are disjoint and sorted, and whether a run of
consecutive blocks fits one read (span within the limit, every gap within the gap limit,
no barrier inside) can only get easier for a shorter run, so extending each read as far
as it goes gives the fewest reads. A block longer than one read (a long string on a
device with a small limit) is split into full-size chunks first; only then can the plan
be longer than the minimum, by at most one read per such block.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from models.schema import MAX_BITS_PER_READ, MAX_REGISTERS_PER_READ, Point, Register

# Bits are cheap: a gap limit in registers is allowed as the same number of bytes of bits.
BITS_PER_GAP_REGISTER = 16

# The order tables are read in: a plan is stable whatever order the model lists points in.
TABLE_ORDER: tuple[Register, ...] = (Register.COIL, Register.DISCRETE, Register.HOLDING, Register.INPUT)


@dataclass(frozen=True, slots=True)
class Limits:
    """How large a read may be and how many unused registers may be read to join two reads."""

    max_registers: int = MAX_REGISTERS_PER_READ
    max_bits: int = MAX_BITS_PER_READ
    max_gap: int = 16

    def __post_init__(self) -> None:
        if not 1 <= self.max_registers <= MAX_REGISTERS_PER_READ:
            raise ValueError(f"max_registers must be 1..{MAX_REGISTERS_PER_READ}, not {self.max_registers}")
        if not 1 <= self.max_bits <= MAX_BITS_PER_READ:
            raise ValueError(f"max_bits must be 1..{MAX_BITS_PER_READ}, not {self.max_bits}")
        if self.max_gap < 0:
            raise ValueError(f"max_gap must not be negative, not {self.max_gap}")

    def size(self, table: Register) -> int:
        """Largest count one read of this table may have."""
        return self.max_bits if table.is_bit else self.max_registers

    def gap(self, table: Register) -> int:
        """Largest number of unused addresses one read of this table may include between blocks."""
        return self.max_gap * BITS_PER_GAP_REGISTER if table.is_bit else self.max_gap


@dataclass(frozen=True, slots=True)
class Block:
    """Addresses [start, end) of one table that are read together, and the points in them."""

    table: Register
    start: int
    end: int
    points: tuple[Point, ...]

    @property
    def count(self) -> int:
        """Number of registers (or bits)."""
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class Read:
    """One request: `count` registers (or bits) of `table` from `start`, covering `blocks`."""

    table: Register
    start: int
    count: int
    blocks: tuple[Block, ...]

    @property
    def end(self) -> int:
        """First address after the read."""
        return self.start + self.count

    @property
    def points(self) -> tuple[Point, ...]:
        """Every point at least partly inside the read."""
        return tuple(p for b in self.blocks for p in b.points)


@dataclass(frozen=True, slots=True)
class Plan:
    """The reads of one poll, and the points left out because they are known to fail."""

    reads: tuple[Read, ...]
    skipped: tuple[Point, ...] = ()

    def count(self, table: Register | None = None) -> int:
        """Number of reads (of one table, or in all)."""
        return sum(1 for r in self.reads if table is None or r.table is table)


@dataclass(frozen=True, slots=True)
class Avoid:
    """What a device has shown it cannot do: barriers per table and points to leave out."""

    barriers: Mapping[Register, frozenset[int]] = field(default_factory=dict)
    skip: frozenset[str] = frozenset()


def point_span(point: Point) -> tuple[int, int]:
    """Addresses [start, end) a Modbus point occupies."""
    if point.register is None or point.address is None:
        raise ValueError(f"point {point.name!r} has no Modbus register and address")
    return point.address, point.address + point.registers


def blocks(points: Iterable[Point]) -> dict[Register, list[Block]]:
    """Group points into disjoint blocks per table, sorted by address."""
    by_table: dict[Register, list[tuple[int, int, Point]]] = {}
    for point in points:
        start, end = point_span(point)
        assert point.register is not None  # noqa: S101  (point_span checked it)
        by_table.setdefault(point.register, []).append((start, end, point))
    out: dict[Register, list[Block]] = {}
    for table in TABLE_ORDER:
        spans = sorted(by_table.get(table, []), key=lambda s: (s[0], s[1], s[2].name))
        merged: list[Block] = []
        for start, end, point in spans:
            if merged and start < merged[-1].end:  # overlaps: must be read in the same request
                last = merged[-1]
                merged[-1] = Block(table, last.start, max(last.end, end), (*last.points, point))
            else:
                merged.append(Block(table, start, end, (point,)))
        if merged:
            out[table] = merged
    return out


def _crosses(barriers: Collection[int], lo: int, hi: int) -> bool:
    """Whether any barrier b has lo <= b <= hi."""
    return any(lo <= b <= hi for b in barriers)


def _chunks(block: Block, size: int) -> list[Read]:
    """Full-size reads for a block that is longer than one read allows (all but the last)."""
    reads: list[Read] = []
    start = block.start
    while block.end - start > size:
        reads.append(Read(block.table, start, size, (block,)))
        start += size
    return reads


def plan_table(
    table: Register, table_blocks: Sequence[Block], limits: Limits, barriers: Collection[int] = ()
) -> list[Read]:
    """The fewest reads covering the blocks of one table (greedy; see the module docstring)."""
    size, gap = limits.size(table), limits.gap(table)
    reads: list[Read] = []
    cur_start = cur_end = 0
    cur: list[Block] = []
    for block in table_blocks:
        if cur:
            fits = (
                block.start - cur_end <= gap
                and block.end - cur_start <= size
                and not _crosses(barriers, cur_end, block.start)
            )
            if fits:
                cur.append(block)
                cur_end = block.end
                continue
            reads.append(Read(table, cur_start, cur_end - cur_start, tuple(cur)))
        chunks = _chunks(block, size)
        reads.extend(chunks)
        cur, cur_start, cur_end = [block], (chunks[-1].end if chunks else block.start), block.end
    if cur:
        reads.append(Read(table, cur_start, cur_end - cur_start, tuple(cur)))
    return reads


def plan(points: Iterable[Point], limits: Limits | None = None, avoid: Avoid | None = None) -> Plan:
    """The reads for one poll of these points: fewest requests within the limits."""
    limits = limits or Limits()
    avoid = avoid or Avoid()
    wanted: list[Point] = []
    skipped: list[Point] = []
    for point in points:
        (skipped if point.name in avoid.skip else wanted).append(point)
    # A left-out point's registers must not come back as gap filler: fence them off.
    barriers = {table: set(found) for table, found in avoid.barriers.items()}
    for point in skipped:
        start, end = point_span(point)
        assert point.register is not None  # noqa: S101  (point_span checked it)
        barriers.setdefault(point.register, set()).update((start, end))
    reads: list[Read] = []
    for table, table_blocks in blocks(wanted).items():
        reads.extend(plan_table(table, table_blocks, limits, barriers.get(table, set())))
    return Plan(tuple(reads), tuple(skipped))


def split(read: Read) -> tuple[Read, Read] | None:
    """Two reads that together cover a failed read's blocks, balanced by size.

    None when the read holds a single block (it cannot be split without splitting a
    point), which is where bisection stops.
    """
    if len(read.blocks) < 2:
        return None
    total = read.blocks[-1].end - read.blocks[0].start
    best, best_cost = 1, total + 1
    for k in range(1, len(read.blocks)):
        left = read.blocks[k - 1].end - read.blocks[0].start
        right = read.blocks[-1].end - read.blocks[k].start
        cost = max(left, right)
        if cost < best_cost:
            best, best_cost = k, cost
    return _over(read.table, read.blocks[:best]), _over(read.table, read.blocks[best:])


def _over(table: Register, run: Sequence[Block]) -> Read:
    start = run[0].start
    return Read(table, start, run[-1].end - start, tuple(run))


def with_barrier(avoid: Avoid, table: Register, address: int) -> Avoid:
    """Avoid plus a barrier at one address of one table."""
    barriers = dict(avoid.barriers)
    barriers[table] = barriers.get(table, frozenset()) | {address}
    return replace(avoid, barriers=barriers)


def with_skip(avoid: Avoid, names: Iterable[str]) -> Avoid:
    """Avoid plus points to leave out."""
    return replace(avoid, skip=avoid.skip | frozenset(names))


def reads_for(points: Iterable[Point], limits: Limits | None = None) -> int:
    """Number of reads one poll of these points needs (the planner's minimum)."""
    return len(plan(points, limits).reads)
