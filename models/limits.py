"""The checks every setpoint write goes through, wherever it comes from."""

from __future__ import annotations

import math

from models.schema import Point
from models.values import Value

# BACnet priorities 1-7 are life safety and critical equipment; 8 is the operator's.
LOWEST_FORBIDDEN_PRIORITY = 7
# float32 carries about 7 significant digits; a step judged against a value read back from
# a float32 register may be off by that much without anyone having asked for more.
FLOAT32_RELATIVE_TOLERANCE = 1e-6


class WriteRefused(ValueError):  # noqa: N818  (a refusal, not a crash)
    """A write that must not reach the device; the message is the reason."""


def check_write(point: Point, value: Value, current: Value = None, *, release: bool = False) -> None:
    """Refuse writes to non-writable points, outside [min, max] or larger than max_step.

    `current` is the value read from the device just before; max_step is judged
    against it. Raises WriteRefused with a reason that names the point.
    """
    where = f"point {point.name!r}"
    limits = point.writable
    if limits is None:
        raise WriteRefused(f"{where} is not writable in its model")
    if limits.priority is not None and limits.priority <= LOWEST_FORBIDDEN_PRIORITY:
        raise WriteRefused(f"{where}: priority {limits.priority} is reserved for life safety")
    if release:
        if limits.priority is None:
            raise WriteRefused(f"{where}: release applies to BACnet priority slots only")
        return
    if isinstance(value, bool) or value is None or isinstance(value, str):
        if point.enum is not None and isinstance(value, str):
            if value not in point.enum.values():
                raise WriteRefused(f"{where}: {value!r} is not one of {sorted(point.enum.values())}")
            return
        if isinstance(value, bool) and (limits.min <= int(value) <= limits.max):
            return
        raise WriteRefused(f"{where}: {value!r} is not a number")
    number = float(value)
    if not math.isfinite(number):
        raise WriteRefused(f"{where}: {value!r} is not a finite number")
    if number < limits.min or number > limits.max:
        raise WriteRefused(f"{where}: {number:g} is outside [{limits.min:g}, {limits.max:g}]")
    if limits.max_step is not None and isinstance(current, int | float) and not isinstance(current, bool):
        step = abs(number - float(current))
        # Devices hand back setpoints at their own precision: 15.3 written to a float32
        # reads back as 15.3000002, and a full 1 K step from there must still pass.
        tolerance = FLOAT32_RELATIVE_TOLERANCE * max(1.0, abs(number), abs(float(current)))
        if step > limits.max_step + tolerance:
            raise WriteRefused(f"{where}: step {step:g} from {float(current):g} exceeds max_step {limits.max_step:g}")
