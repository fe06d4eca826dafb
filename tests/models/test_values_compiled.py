"""Compiled register decoders give exactly the Reading of the reference decoder."""

from __future__ import annotations

import random
from typing import Any

import pydantic
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from models import catalog
from models.codec import ValueType, WordOrder
from models.quality import Quality
from models.schema import Point
from models.values import Reading, decode_registers, pack_registers, register_decoder


def _compiled(point: Point, regs: list[int], lead: int = 0) -> Reading:
    """The compiled decoder's reading of `regs` placed after `lead` other registers of the same read."""
    bits = point.register is not None and point.register.is_bit
    data = pack_registers([0x5A5A if not bits else 1] * lead + regs, bits=bits)
    assert data is not None
    return register_decoder(point)(data, lead)


def test_every_catalog_modbus_point_decodes_like_the_reference() -> None:
    rng = random.Random(7)
    checked = 0
    for model in catalog.load_all().values():
        for point in model.points:
            if point.register is None:
                continue
            for _ in range(200):
                if point.register.is_bit:
                    regs = [rng.randrange(2)]
                else:
                    # plain random words, plus the sentinels and enum values the point names
                    pool = [rng.randrange(0x10000), 0xFFFF, 0x7FC0, 0x7F80, 0, 1, 2, 3]
                    regs = [rng.choice(pool) for _ in range(point.registers)]
                assert _compiled(point, regs, lead=rng.randrange(4)) == decode_registers(point, regs), (
                    model.id,
                    point.name,
                    regs,
                )
                checked += 1
    assert checked > 10_000


_NUMERIC = [t for t in ValueType if t != ValueType.STRING]


@st.composite
def points(draw: st.DrawFn) -> Point:
    """Modbus points of every type, order, scaling, sentinel, enum and bit field the schema accepts."""
    spec: dict[str, Any] = {"name": "p", "address": 0}
    table = draw(st.sampled_from(["holding", "input", "coil", "discrete"]))
    spec["register"] = table
    if table in ("holding", "input"):
        vtype = draw(st.sampled_from([*_NUMERIC, ValueType.STRING]))
        spec["type"] = str(vtype)
        spec["order"] = str(draw(st.sampled_from(list(WordOrder))))
        if vtype is ValueType.STRING:
            spec["length"] = draw(st.integers(1, 4))
        else:
            if draw(st.booleans()):
                spec["scale"] = draw(st.sampled_from([0.1, 2**-9, 10.0, -1.0]))
            if draw(st.booleans()):
                spec["offset"] = draw(st.sampled_from([-40.0, 0.5]))
            extra = draw(st.sampled_from(["none", "na", "enum", "bits", "bit"]))
            if extra == "na":
                spec["na"] = draw(st.sampled_from([0xFFFF, 0x7FFF, 0]))
            elif extra == "enum":
                spec["enum"] = {0: "off", 1: "on", 3: "fault"}
            elif extra == "bits":
                spec["bits"] = {0: "alarm", 3: "bypass", 15: "fault"}
            elif extra == "bit":
                spec["bit"] = draw(st.integers(0, 15))
    try:
        return Point.model_validate(spec)
    except pydantic.ValidationError:
        assume(False)
        raise


@settings(max_examples=400, deadline=None)
@given(point=points(), data=st.data())
def test_generated_points_decode_like_the_reference(point: Point, data: st.DataObject) -> None:
    if point.register is not None and point.register.is_bit:
        regs = [data.draw(st.integers(0, 1))]
    else:
        words = st.one_of(st.integers(0, 0xFFFF), st.sampled_from([0xFFFF, 0x7FC0, 0x7F80, 0xFF80, 0, 1, 3]))
        regs = data.draw(st.lists(words, min_size=point.registers, max_size=point.registers))
    lead = data.draw(st.integers(0, 3))
    assert _compiled(point, regs, lead) == decode_registers(point, regs)


def test_nan_and_infinity_keep_their_qualities() -> None:
    point = Point.model_validate({"name": "p", "register": "input", "address": 0, "type": "float32", "scale": 0.5})
    assert _compiled(point, [0x7FC0, 0]) == Reading(None, Quality.NOT_A_NUMBER)
    assert _compiled(point, [0x7F80, 0]) == Reading(None, Quality.INFINITE)
    assert _compiled(point, [0x4120, 0]) == Reading(5.0)


def test_out_of_range_registers_are_not_packed() -> None:
    assert pack_registers([1, 0x10000]) is None
    assert pack_registers([-1]) is None
    assert pack_registers([1, 0, 1], bits=True) == b"\x01\x00\x01"
