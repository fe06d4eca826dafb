"""The Modbus request planner: fewest reads, limits, gaps, barriers, bisection splits."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from agent import modbus_plan
from agent.modbus_plan import Avoid, Limits, blocks, plan, split
from models import catalog
from models.schema import Point, Protocol, Register


def reg(name: str, address: int, type_: str = "uint16", table: str = "holding", **kw: object) -> Point:
    return Point.model_validate({"name": name, "register": table, "address": address, "type": type_, **kw})


def bit(name: str, address: int, table: str = "coil") -> Point:
    return Point.model_validate({"name": name, "register": table, "address": address})


def spans(p: modbus_plan.Plan) -> list[tuple[str, int, int]]:
    return [(r.table.value, r.start, r.count) for r in p.reads]


def minimum_reads(points: list[Point], limits: Limits, barriers: dict[Register, frozenset[int]] | None = None) -> int:
    """Independent oracle: dynamic programming over every way to cut the blocks into reads."""
    total = 0
    for table, blks in blocks(points).items():
        size, gap = limits.size(table), limits.gap(table)
        bars = (barriers or {}).get(table, frozenset())
        n = len(blks)
        best = [0] + [10**9] * n
        for j in range(1, n + 1):
            for i in range(j, 0, -1):
                run = blks[i - 1 : j]
                span_ok = run[-1].end - run[0].start <= size
                gaps_ok = all(b.start - a.end <= gap for a, b in itertools.pairwise(run))
                bars_ok = not any(a.end <= x <= b.start for a, b in itertools.pairwise(run) for x in bars)
                if span_ok and gaps_ok and bars_ok:
                    best[j] = min(best[j], best[i - 1] + 1)
        total += best[n]
    return total


def test_contiguous_points_are_one_read() -> None:
    points = [reg(f"p{i}", i) for i in range(10)]
    assert spans(plan(points)) == [("holding", 0, 10)]


def test_gap_up_to_the_limit_is_read_through_and_larger_gaps_split() -> None:
    points = [reg("a", 0), reg("b", 17), reg("c", 35)]  # gaps of 16 and 17 registers
    assert spans(plan(points, Limits(max_gap=16))) == [("holding", 0, 18), ("holding", 35, 1)]
    assert spans(plan(points, Limits(max_gap=0))) == [("holding", 0, 1), ("holding", 17, 1), ("holding", 35, 1)]


def test_reads_never_exceed_125_registers() -> None:
    points = [reg(f"p{i}", i) for i in range(130)]
    assert spans(plan(points)) == [("holding", 0, 125), ("holding", 125, 5)]


def test_a_point_is_never_split_between_two_reads() -> None:
    points = [reg(f"p{i}", i) for i in range(124)] + [reg("f", 124, "float32")]
    assert spans(plan(points)) == [("holding", 0, 124), ("holding", 124, 2)]


def test_overlapping_points_form_one_block() -> None:
    status = reg("status", 0, "uint32", bits={1: "online"})
    online = reg("online", 0, "uint32", bit=1)
    low = reg("low_word", 1)
    grouped = blocks([online, low, status])[Register.HOLDING]
    assert len(grouped) == 1
    assert {p.name for p in grouped[0].points} == {"status", "online", "low_word"}
    assert (grouped[0].start, grouped[0].end) == (0, 2)


def test_touching_points_stay_separate_blocks_so_a_failure_can_be_isolated() -> None:
    grouped = blocks([reg("a", 0, "float32"), reg("b", 2, "float32")])[Register.HOLDING]
    assert [(b.start, b.end) for b in grouped] == [(0, 2), (2, 4)]


def test_tables_are_planned_separately_and_bits_by_2000() -> None:
    points = [bit(f"c{i}", i) for i in range(2100)] + [reg("h", 0), reg("i", 0, table="input")]
    assert spans(plan(points)) == [("coil", 0, 2000), ("coil", 2000, 100), ("holding", 0, 1), ("input", 0, 1)]


def test_bit_gaps_are_counted_in_bits_as_sixteen_per_register() -> None:
    points = [bit("a", 0, "discrete"), bit("b", 200, "discrete"), bit("c", 500, "discrete")]
    assert spans(plan(points, Limits(max_gap=16))) == [("discrete", 0, 201), ("discrete", 500, 1)]


def test_device_limits_shrink_reads() -> None:
    points = [reg(f"p{i}", i) for i in range(20)]
    assert spans(plan(points, Limits(max_registers=8))) == [("holding", 0, 8), ("holding", 8, 8), ("holding", 16, 4)]


def test_a_barrier_stops_a_read_spanning_it() -> None:
    points = [reg("a", 0), reg("b", 5), reg("c", 10)]
    avoid = Avoid(barriers={Register.HOLDING: frozenset({7})})
    assert spans(plan(points, avoid=avoid)) == [("holding", 0, 6), ("holding", 10, 1)]
    # A barrier right at a block boundary splits touching blocks too.
    touching = [reg("x", 0), reg("y", 1)]
    assert len(plan(touching, avoid=Avoid(barriers={Register.HOLDING: frozenset({1})})).reads) == 2


def test_skipped_points_are_left_out_and_reported() -> None:
    points = [reg("a", 0), reg("b", 1), reg("c", 2)]
    result = plan(points, avoid=Avoid(skip=frozenset({"b"})))
    assert [p.name for p in result.skipped] == ["b"]
    # b's register is not read as gap filler either: it would fail the whole read.
    assert spans(result) == [("holding", 0, 1), ("holding", 2, 1)]
    assert [p.name for r in result.reads for p in r.points] == ["a", "c"]


def test_a_block_longer_than_one_read_is_chunked() -> None:
    text = reg("name", 10, "string", length=20)
    result = plan([text, reg("after", 30)], Limits(max_registers=8))
    assert spans(result) == [("holding", 10, 8), ("holding", 18, 8), ("holding", 26, 5)]
    covered = {a for r in result.reads for a in range(r.start, r.end)}
    assert set(range(10, 31)) <= covered


def test_split_balances_the_halves_and_covers_every_block() -> None:
    points = [reg(f"p{i}", i * 2) for i in range(9)]
    (read,) = plan(points).reads
    halves = split(read)
    assert halves is not None
    left, right = halves
    assert left.blocks + right.blocks == read.blocks
    assert abs(left.count - right.count) <= 2
    single = plan([reg("only", 0, "float32")]).reads[0]
    assert split(single) is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_registers": 0}, "max_registers"),
        ({"max_registers": 126}, "max_registers"),
        ({"max_bits": 2001}, "max_bits"),
        ({"max_gap": -1}, "max_gap"),
    ],
)
def test_limits_are_validated(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Limits(**kwargs)


@pytest.mark.parametrize("model_id", [m for m, x in catalog.load_all().items() if x.protocol is Protocol.MODBUS])
def test_catalog_plans_are_the_minimum(model_id: str) -> None:
    model = catalog.load(model_id)
    limits = Limits()
    result = plan(model.points, limits)
    assert len(result.reads) == minimum_reads(model.points, limits)
    planned = {p.name for r in result.reads for p in r.points}
    assert planned == {p.name for p in model.points}


TYPES = ["uint16", "int32", "float32", "float64", "string"]


@st.composite
def point_sets(draw: st.DrawFn) -> list[Point]:
    count = draw(st.integers(1, 25))
    points = []
    for i in range(count):
        type_ = draw(st.sampled_from(TYPES))
        address = draw(st.integers(0, 400))
        extra: dict[str, object] = {"length": draw(st.integers(1, 6))} if type_ == "string" else {}
        table = draw(st.sampled_from(["holding", "input"]))
        points.append(reg(f"p{i}", address, type_, table=table, **extra))
    return points


@settings(max_examples=150, deadline=None)
@given(
    points=point_sets(),
    max_registers=st.integers(6, 125),
    max_gap=st.integers(0, 20),
    barriers=st.sets(st.integers(0, 410), max_size=4),
)
def test_greedy_plan_is_minimal_and_valid(
    points: list[Point], max_registers: int, max_gap: int, barriers: set[int]
) -> None:
    limits = Limits(max_registers=max_registers, max_gap=max_gap)
    # Overlapping points whose union is larger than one read cannot be read as one block;
    # the planner reads them in full-size chunks (tested separately); the oracle does not.
    assume(all(b.end - b.start <= limits.size(t) for t, blks in blocks(points).items() for b in blks))
    bars = {Register.HOLDING: frozenset(barriers)}
    result = plan(points, limits, Avoid(barriers=bars))
    assert len(result.reads) == minimum_reads(points, limits, bars)
    for read in result.reads:
        assert 1 <= read.count <= max_registers
        for a, b in zip(read.blocks, read.blocks[1:], strict=False):
            assert b.start - a.end <= max_gap
            if read.table is Register.HOLDING:
                assert not any(a.end <= x <= b.start for x in barriers)
        for blk in read.blocks:
            assert read.start <= blk.start
            assert blk.end <= read.end
    # Every point is inside exactly one read.
    for point in points:
        assert point.address is not None
        inside = [r for r in result.reads if r.table is point.register and r.start <= point.address < r.end]
        assert len(inside) == 1


def test_overlapping_points_larger_than_one_read_are_covered_by_full_size_chunks() -> None:
    # A 6-register string at 5 and an int32 at 4 overlap; together they span 7 registers,
    # more than a 6-register read. The block is read in chunks and the driver decodes the
    # points from the register image, so every register of every point must be read.
    points = [reg("s", 5, "string", length=6), reg("i", 4, "int32"), reg("u", 0)]
    result = plan(points, Limits(max_registers=6, max_gap=0))
    covered = {a for r in result.reads for a in range(r.start, r.end)}
    assert all(r.count <= 6 for r in result.reads)
    for point in points:
        assert point.address is not None
        assert set(range(point.address, point.address + point.registers)) <= covered, point.name
    assert len(result.reads) == 3  # register 0, then the 7-register block as 6 + 1
