"""Turning a poll result into a wire-format batch and into poll-once JSON lines."""

from __future__ import annotations

from typing import Any

import msgspec

from agent.config import Device
from agent.drivers.base import PollResult
from models import telemetry
from models.quality import Quality
from models.schema import DeviceModel
from models.values import Reading

GOOD = Quality.GOOD


def _point(reading: Reading, unit: str, counter: bool) -> telemetry.Point:
    quality = reading.quality
    return telemetry.Point(reading.value if quality is GOOD else None, unit, quality.value, counter)


# Per model object: (name, unit, counter) of each point, in model order.
_POINT_META: dict[int, tuple[DeviceModel, tuple[tuple[str, str, bool], ...]]] = {}


def _point_meta(model: DeviceModel) -> tuple[tuple[str, str, bool], ...]:
    hit = _POINT_META.get(id(model))
    if hit is not None and hit[0] is model:
        return hit[1]
    meta = tuple((p.name, p.unit, p.counter) for p in model.points)
    if len(_POINT_META) >= 10_000:
        _POINT_META.clear()
    _POINT_META[id(model)] = (model, meta)
    return meta


def to_batch(site: str, agent_id: str, device: Device, result: PollResult, seq: int) -> telemetry.Batch:
    """One wire-format batch for one poll of one device."""
    model = device.model
    readings = result.points
    wire = telemetry.Point
    points: dict[str, telemetry.Point] = {}
    for name, unit, counter in _point_meta(model):
        reading = readings.get(name)
        if reading is not None:
            quality = reading.quality
            points[name] = wire(reading.value if quality is GOOD else None, unit, quality.value, counter)
    tables: dict[str, dict[str, telemetry.Row]] = {}
    for table in model.tables:
        rows = result.tables.get(table.name)
        if not rows:
            continue
        columns = {c.name: c for c in table.columns}
        tables[table.name] = {
            index: {
                name: _point(reading, columns[name].unit, columns[name].counter)
                for name, reading in row.items()
                if name in columns
            }
            for index, row in rows.items()
        }
    return telemetry.Batch(
        site=site,
        agent=agent_id,
        device=device.id,
        model=model.id,
        kind=model.kind.value,
        seq=seq,
        ts=result.ts,
        points=points,
        tables=tables,
        poll_ms=round(result.elapsed_s * 1000.0, 3),
    )


def _json_point(reading: Reading, unit: str) -> dict[str, Any]:
    return {"value": reading.value if reading.quality.good else None, "unit": unit, "quality": reading.quality.value}


def poll_once_object(device: Device, result: PollResult) -> dict[str, Any]:
    """The poll-once --json object of the public interface for one device."""
    model = device.model
    obj: dict[str, Any] = {
        "device": device.id,
        "model": model.id,
        "ts": round(result.ts, 3),
        "points": {p.name: _json_point(result.points[p.name], p.unit) for p in model.points if p.name in result.points},
    }
    if result.tables:
        units = {t.name: {c.name: c.unit for c in t.columns} for t in model.tables}
        obj["tables"] = {
            name: {
                index: {col: _json_point(r, units[name].get(col, "")) for col, r in row.items()}
                for index, row in rows.items()
            }
            for name, rows in result.tables.items()
        }
    if result.error:
        obj["error"] = result.error
    return obj


def poll_once_line(device: Device, result: PollResult) -> bytes:
    """One JSON line (no newline) for poll-once --json."""
    return msgspec.json.encode(poll_once_object(device, result))
