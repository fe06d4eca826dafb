"""Simulation profiles: plausible, slowly varying, seeded values for a model's points."""

from __future__ import annotations

import hashlib
import math
import random

from models.codec import INTEGER_TYPES, ValueType, int_range
from models.schema import Column, Point, SimProfile
from models.values import Value


def _phase(seed: int, name: str) -> float:
    digest = hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * 2 * math.pi


def _default(point: Point | Column) -> SimProfile:
    """A profile for points whose model gives none: the middle of their range."""
    if point.enum:
        return SimProfile(value=next(iter(point.enum.values())))
    bits = getattr(point, "bits", None)
    if bits is not None or getattr(point, "bit", None) is not None:
        return SimProfile(value=0)
    vtype = point.type
    if vtype is ValueType.STRING:
        return SimProfile(value=point.name.replace("_", "-"))
    if vtype is ValueType.BOOL:
        return SimProfile(value=False)
    writable = getattr(point, "writable", None)
    if writable is not None:
        return SimProfile(base=(writable.min + writable.max) / 2)
    if point.counter:
        return SimProfile(base=1000.0, rate_per_h=10.0)
    return SimProfile(base=50.0 * point.scale if point.scale < 1 else 50.0, amplitude=1.0, period_s=900.0)


def profile_value(point: Point | Column, t_s: float, seed: int = 0, row: str = "") -> Value:
    """The value a simulator serves for a point at time t_s (seconds since start).

    Deterministic for a (seed, point, row, t_s); noise is seeded per call time so two
    simulators with the same seed agree.
    """
    prof = point.sim or _default(point)
    if prof.value is not None:
        return prof.value
    key = f"{point.name}:{row}"
    if point.counter:
        value = prof.base + prof.rate_per_h * t_s / 3600.0
    else:
        value = prof.base + prof.amplitude * math.sin(2 * math.pi * t_s / prof.period_s + _phase(seed, key))
        if prof.noise:
            rng = random.Random(f"{seed}:{key}:{int(t_s)}")
            value += rng.gauss(0.0, prof.noise)
    if prof.min is not None:
        value = max(prof.min, value)
    if prof.max is not None:
        value = min(prof.max, value)
    return quantise(point, value)


def quantise(point: Point | Column, value: float) -> float | int:
    """Round a value to what the point's type and scale can represent."""
    vtype = point.type
    if vtype in INTEGER_TYPES:
        assert vtype is not None  # noqa: S101
        lo, hi = int_range(vtype)
        raw = min(max(round((value - point.offset) / point.scale), lo), hi)
        scaled = raw * point.scale + point.offset
        return int(scaled) if point.scale == 1 and point.offset == 0 else scaled
    if vtype is ValueType.FLOAT32:
        import struct  # noqa: PLC0415  (only float32 needs it)

        return float(struct.unpack(">f", struct.pack(">f", value))[0])
    return value
