"""The store interface every backend implements, the stored schema, and the registry of backends.

Stored schema (one row per device poll, per table row, per event, per status):

- measurement = the device kind (``ups``, ``meter``, ...); tags ``site``, ``agent``,
  ``device``, ``model``, plus ``table`` and ``index`` for a table row (a PDU outlet, a
  UPS input line); timestamp = the time of the read.
- one field per point holding its good value, in the collector's units (power kW,
  energy kWh, temperature degC); a failed read is a string field ``<point>__q``
  naming the quality instead, so coverage can be counted and a read returns NaN.
- ``units``: the unit of each (kind, model, table, field), ``events``: agent events,
  ``agent_status``: online/offline transitions, ``collector``: the collector's own
  metrics; analytics results are measurements of their own (``write_derived``).
"""

from __future__ import annotations

import importlib
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Self

import numpy as np
import numpy.typing as npt

from collector.config import StoreSection
from models import telemetry

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

QUALITY_SUFFIX: Final = "__q"
UNITS_MEASUREMENT: Final = "units"
EVENTS_MEASUREMENT: Final = "events"
STATUS_MEASUREMENT: Final = "agent_status"
METRICS_MEASUREMENT: Final = "collector"
RESERVED_MEASUREMENTS: Final = frozenset({UNITS_MEASUREMENT, EVENTS_MEASUREMENT, STATUS_MEASUREMENT})

Stored = telemetry.Batch | telemetry.Event | telemetry.Status
Value = float | int | str | bool


class StoreError(Exception):
    """Something went wrong talking to the store."""


class StoreUnavailable(StoreError):  # noqa: N818  (reads as what happened)
    """The store cannot take writes right now (down, timing out, refusing us): try again later."""


class StoreRejected(StoreError):  # noqa: N818
    """The store refused the data itself (bad type, malformed); the same write will fail again."""


class StoreTypeError(StoreError):
    """A series holds text where numbers were asked for, or the other way round."""


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """One stored series: a measurement and its tag set (fields are the model's points)."""

    measurement: str
    tags: tuple[tuple[str, str], ...]

    def tag(self, key: str) -> str | None:
        """The value of a tag, or None."""
        for k, v in self.tags:
            if k == key:
                return v
        return None

    @property
    def device(self) -> str | None:
        """The device tag."""
        return self.tag("device")

    @property
    def table(self) -> str | None:
        """The table tag of a table row, else None."""
        return self.tag("table")

    @property
    def index(self) -> str | None:
        """The row index tag of a table row, else None."""
        return self.tag("index")


def ts_ns(ts_s: float) -> int:
    """A wire timestamp (Unix seconds) as integer nanoseconds, rounded to the microsecond.

    Rounding to the microsecond keeps the conversion exact and repeatable, so a batch written
    twice lands on the same timestamp and overwrites itself instead of doubling.
    """
    return round(ts_s * 1_000_000) * 1000


def batch_tags(batch: telemetry.Batch) -> list[tuple[str, str]]:
    """The tags of a batch's device-level row, sorted by key (empty values left out)."""
    tags = [("agent", batch.agent), ("device", batch.device), ("model", batch.model), ("site", batch.site)]
    return [(k, v) for k, v in tags if v]


def row_tags(batch: telemetry.Batch, table: str, index: str) -> list[tuple[str, str]]:
    """The tags of one table row of a batch, sorted by key."""
    return sorted([*batch_tags(batch), ("table", table), ("index", index)])


def count_values(message: Stored) -> int:
    """How many point values (good or failed) a message carries."""
    if not isinstance(message, telemetry.Batch):
        return 1
    return len(message.points) + sum(len(row) for rows in message.tables.values() for row in rows.values())


def check_derived(name: str, tags: Mapping[str, str], ts: IntArray, fields: Mapping[str, FloatArray]) -> None:
    """Validate the arguments of write_derived (same length arrays, sane names)."""
    if not name or name in RESERVED_MEASUREMENTS:
        raise StoreRejected(f"derived measurement name {name!r} is empty or reserved")
    for k, v in tags.items():
        if not k or not v:
            raise StoreRejected(f"derived {name!r}: empty tag key or value ({k!r}={v!r})")
    for field, values in fields.items():
        if not field or field.endswith(QUALITY_SUFFIX):
            raise StoreRejected(f"derived {name!r}: bad field name {field!r}")
        if len(values) != len(ts):
            raise StoreRejected(f"derived {name!r}: field {field!r} has {len(values)} values for {len(ts)} times")


def finite(value: float) -> bool:
    """Whether a derived value can be stored (NaN and infinities are left out)."""
    return math.isfinite(value)


class Store(ABC):
    """Where readings go, and where analytics read them back.

    Implementations are thread-safe: the ingest writer and analytics jobs call them from
    worker threads, never from the event loop.
    """

    kind: str = ""

    @classmethod
    @abstractmethod
    def from_config(cls, section: StoreSection) -> Self:
        """A store from the [store] section of the configuration."""

    @abstractmethod
    def open(self) -> None:
        """Connect and create what is missing (database, schema); StoreUnavailable if unreachable."""

    @abstractmethod
    def close(self) -> None:
        """Release connections and files."""

    @abstractmethod
    def write_batches(self, messages: Sequence[Stored]) -> None:
        """Store batches (and events and statuses) in one go.

        Writing the same batch twice stores it once. Raises StoreUnavailable when the store
        cannot take writes now (keep the messages and retry) and StoreRejected when it refused
        the data (retrying the same write is pointless).
        """

    @abstractmethod
    def read_series(
        self,
        measurement: str,
        device: str | None,
        field: str,
        start_ns: int,
        end_ns: int,
        *,
        table: str | None = None,
        index: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> tuple[IntArray, FloatArray]:
        """Read one numeric series over [start_ns, end_ns): times in ns and values.

        Failed reads give NaN; booleans give 0.0 and 1.0. ``device=None`` (with ``tags``)
        reads derived series. Without ``table``, only device-level rows are read.
        Raises StoreTypeError for a text field (use read_text).
        """

    @abstractmethod
    def read_text(
        self,
        measurement: str,
        device: str | None,
        field: str,
        start_ns: int,
        end_ns: int,
        *,
        table: str | None = None,
        index: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> tuple[IntArray, list[str | None]]:
        """Read a text series (enumeration names, strings); None where the read failed."""

    @abstractmethod
    def list_series(self, measurement: str | None = None, *, device: str | None = None) -> list[SeriesKey]:
        """The stored series (tag sets), optionally of one measurement or device, sorted."""

    @abstractmethod
    def write_derived(
        self, name: str, tags: Mapping[str, str], ts_ns: IntArray, fields: Mapping[str, FloatArray]
    ) -> None:
        """Store analytics results: measurement ``name``, one row per timestamp, NaN left out."""


# kind (the [store] kind, with the API for InfluxDB) -> "module:Class", imported on use so that
# an SQLite collector never loads the InfluxDB client.
STORES: Final[dict[str, str]] = {
    "sqlite": "collector.store.sqlite:SqliteStore",
    "influxdb-v1": "collector.store.influx_v1:InfluxV1Store",
    "influxdb-v2": "collector.store.influx_v2:InfluxV2Store",
}


def store_key(kind: str, api: str) -> str:
    """The registry key of a [store] section."""
    return "sqlite" if kind == "sqlite" else f"{kind}-{api}"


def store_class(key: str) -> type[Store]:
    """The Store class registered under a key."""
    try:
        target = STORES[key]
    except KeyError:
        raise StoreError(f"unknown store {key!r}; known: {', '.join(STORES)}") from None
    module_name, _, class_name = target.partition(":")
    cls: type[Store] = getattr(importlib.import_module(module_name), class_name)
    return cls


def create_store(section: StoreSection) -> Store:
    """The store a [store] section describes (not opened yet)."""
    return store_class(store_key(section.kind, section.api)).from_config(section)
