"""Wiring into the collector service: evaluate what the store has just taken, and tick."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Self

from collector.alarms.service import AlarmService
from collector.config import StoreSection
from collector.store import FloatArray, IntArray, SeriesKey, Store, Stored

log = logging.getLogger(__name__)


class EvaluatingStore(Store):
    """The store as the ingest writer sees it, evaluating alarms after each write.

    Each batch and event written successfully is then evaluated by the alarm service (in
    the writer's worker thread, before the messages are acknowledged). Everything else
    goes straight to the wrapped store.
    """

    def __init__(self, inner: Store, alarms: AlarmService) -> None:
        self.inner = inner
        self.alarms = alarms
        self.kind = inner.kind

    @classmethod
    def from_config(cls, section: StoreSection) -> Self:
        """Not built from configuration: it wraps a store that is."""
        raise TypeError(f"EvaluatingStore wraps a store; build the {section.kind} store first")

    def __repr__(self) -> str:
        return repr(self.inner)

    def open(self) -> None:
        """Open the wrapped store."""
        self.inner.open()

    def close(self) -> None:
        """Close the wrapped store."""
        self.inner.close()

    def write_batches(self, messages: Sequence[Stored]) -> None:
        """Write, then evaluate alarms; an alarm failure never fails the write."""
        self.inner.write_batches(messages)
        try:
            self.alarms.on_messages(messages)
        except Exception:
            log.exception("alarm evaluation failed for a write of %d messages", len(messages))

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
        """Delegated."""
        return self.inner.read_series(measurement, device, field, start_ns, end_ns, table=table, index=index, tags=tags)

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
        """Delegated."""
        return self.inner.read_text(measurement, device, field, start_ns, end_ns, table=table, index=index, tags=tags)

    def list_series(self, measurement: str | None = None, *, device: str | None = None) -> list[SeriesKey]:
        """Delegated."""
        return self.inner.list_series(measurement, device=device)

    def write_derived(
        self, name: str, tags: Mapping[str, str], ts_ns: IntArray, fields: Mapping[str, FloatArray]
    ) -> None:
        """Delegated."""
        self.inner.write_derived(name, tags, ts_ns, fields)


async def run_ticks(alarms: AlarmService, every_s: float) -> None:
    """Call the alarm service's periodic pass every `every_s` seconds, off the event loop."""
    while True:
        await asyncio.sleep(every_s)
        try:
            await asyncio.to_thread(alarms.tick)
        except Exception:
            log.exception("alarm tick failed")
