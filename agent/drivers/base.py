"""The interface every protocol driver implements, and the values it returns."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from models.quality import Quality
from models.values import Reading, Value

if TYPE_CHECKING:
    from agent.config import Device
    from models.schema import Point

Table = dict[str, dict[str, Reading]]  # row index -> column -> reading


class DriverUnavailableError(RuntimeError):
    """The protocol's driver is not part of this build."""


@dataclass(frozen=True, slots=True)
class PollResult:
    """Everything one poll of one device produced. Every model point has a reading."""

    device: str
    ts: float  # Unix seconds when the read started
    points: dict[str, Reading]
    tables: dict[str, Table] = field(default_factory=dict)
    requests: int = 0  # protocol requests sent for this poll
    elapsed_s: float = 0.0
    error: str | None = None  # device-level failure (timeout, refused), if any

    def counts(self) -> tuple[int, int]:
        """(good, bad): points with and without a value, table cells included."""
        good_q = Quality.GOOD
        good = total = 0
        for r in self.points.values():
            good += r.quality is good_q
        total = len(self.points)
        for t in self.tables.values():
            for row in t.values():
                for r in row.values():
                    good += r.quality is good_q
                total += len(row)
        return good, total - good

    @property
    def good(self) -> int:
        """Number of good points, table cells included."""
        return self.counts()[0]

    @property
    def bad(self) -> int:
        """Number of points without a value, table cells included."""
        return self.counts()[1]


@dataclass(frozen=True, slots=True)
class WriteResult:
    """The outcome of one setpoint write, with the values before and after."""

    ok: bool
    outcome: str  # "written", "released", "refused", "failed", "overridden"
    reason: str = ""
    before: Value = None
    after: Value = None
    priority_array: tuple[Value, ...] | None = None  # BACnet: slots 1-16, None = NULL
    active_priority: int | None = None  # BACnet: the slot that holds the present value


class Driver(ABC):
    """A protocol driver. One instance per agent serves every device of its protocol.

    Drivers share connections among devices behind the same host:port, serialise
    requests on them, and never raise for a device failure: they report it as point
    qualities and `PollResult.error`.
    """

    @abstractmethod
    async def poll(self, device: Device) -> PollResult:
        """Read every point (and table) of the device's model once."""

    @abstractmethod
    async def read_point(self, device: Device, point: Point) -> Reading:
        """Read one point (for read-back around writes)."""

    @abstractmethod
    async def write(self, device: Device, point: Point, value: Value, *, release: bool = False) -> WriteResult:
        """Write one point after the limit checks, and read it back."""

    async def close(self) -> None:  # noqa: B027  (optional hook: drivers without connections keep it)
        """Close connections."""
