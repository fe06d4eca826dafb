"""Building batches, events and rules for the alarm tests."""

from __future__ import annotations

from typing import Any

from collector.alarms.rules import Rule
from models.telemetry import Batch, Event, Point

T0 = 1_764_450_000.0
SITE = "bj-dx"
_seq = [0]


def pt(value: Any, unit: str = "") -> Point:
    """A good point, or a failed read when value is a quality name prefixed with '!'."""
    if isinstance(value, str) and value.startswith("!"):
        return Point(value=None, unit=unit, quality=value[1:])
    return Point(value=value, unit=unit)


def batch(
    ts: float,
    points: dict[str, Any] | None = None,
    *,
    device: str = "dev-1",
    model: str = "test-model",
    kind: str = "generic",
    tables: dict[str, dict[str, dict[str, Any]]] | None = None,
    units: dict[str, str] | None = None,
    site: str = SITE,
) -> Batch:
    units = units or {}
    _seq[0] += 1
    return Batch(
        site=site,
        agent="edge-01",
        device=device,
        model=model,
        kind=kind,
        seq=_seq[0],
        ts=ts,
        points={k: pt(v, units.get(k, "")) for k, v in (points or {}).items()},
        tables={
            t: {r: {c: pt(v) for c, v in row.items()} for r, row in rows.items()} for t, rows in (tables or {}).items()
        },
    )


def event(ts: float, type_: str, *, device: str = "dev-1", **data: Any) -> Event:
    return Event(site=SITE, agent="edge-01", device=device, type=type_, ts=ts, data=data)


def rule(data: dict[str, Any]) -> Rule:
    return Rule.model_validate({"severity": "major", **data})
