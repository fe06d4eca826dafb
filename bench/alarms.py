"""Benchmark: alarm evaluation against the collector's ingest rate, with the default rules.

A seeded site of catalog devices (UPSes, 200 metered rack PDUs with 24 outlets, sensor
gateways with 16 sensors, meters, chillers, air handlers, pumps, towers) is polled for
a number of rounds; now and then a UPS goes on battery, a rack inlet gets hot, a leak
trips or a device stops answering, so alarms are raised and cleared as they would be.

Timed side by side on the same batches:

- decode: the wire-format decode every message costs the collector anyway;
- engine: rule evaluation only (collector.alarms.engine);
- service: evaluation, lifecycle and the SQLite alarm store (what the collector runs).

Throughput is reported in batches/s and point values/s (table cells included), and as
a multiple of the collector's ingest target of 100,000 values/s. Data generation is not
timed. With ``--json`` the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from collector.alarms.engine import Engine
from collector.alarms.service import AlarmService, catalog_periods
from collector.alarms.settings import AlarmsSection
from models import catalog, telemetry
from models.profile import profile_value
from models.schema import Column, DeviceModel, Point

INGEST_TARGET_VALUES_PER_S = 100_000.0
T0 = 1_764_450_000.0
INTERVAL_S = 10.0
SITE = [
    ("ups-rfc1628", 10),
    ("ups-apc-modbus", 10),
    ("pdu-apc-rpdu2", 200),
    ("gateway-nbiot", 40),
    ("meter-sdm630", 30),
    ("chiller-bacnet", 4),
    ("crah-bacnet", 10),
    ("pump-modbus", 8),
    ("tower-modbus", 4),
]


def wire_value(point: Point | Column, value: Any) -> Any:
    """A simulated value as the agent would publish it (names for enumerations and bits)."""
    bits = getattr(point, "bits", None)
    if bits and isinstance(value, int) and not isinstance(value, bool):
        return ",".join(sorted(name for bit, name in bits.items() if value >> bit & 1))
    if getattr(point, "bit", None) is not None and isinstance(value, int | bool):
        return bool(value)
    if point.enum and isinstance(value, int) and not isinstance(value, bool):
        return point.enum.get(value, next(iter(point.enum.values())))
    return value


def make_batch(
    model: DeviceModel, device: str, ts: float, seq: int, *, rng: random.Random, fault: str
) -> telemetry.Batch:
    """One poll of a device; `fault` ("", "battery", "hot", "leak", "dead") shapes its values."""
    points: dict[str, telemetry.Point] = {}
    for p in model.points:
        value = wire_value(p, profile_value(p, ts - T0, seed=hash(device) & 0xFFFF))
        if fault == "battery" and p.name in ("output_source", "on_battery"):
            value = "battery" if p.name == "output_source" else True
        elif fault == "hot" and p.name == "sensor03_temperature":
            value = 31.5
        elif fault == "leak" and p.name == "sensor05_leak":
            value = True
        if fault == "dead" or value is None or rng.random() < 0.002:
            points[p.name] = telemetry.Point(value=None, unit=p.unit, quality="timeout", counter=p.counter)
        else:
            points[p.name] = telemetry.Point(value=value, unit=p.unit, counter=p.counter)
    tables: dict[str, dict[str, telemetry.Row]] = {}
    if fault != "dead":
        for table in model.tables:
            rows = {}
            for row in table.rows or []:
                rows[row] = {
                    c.name: telemetry.Point(value=wire_value(c, profile_value(c, ts - T0, row=row)), unit=c.unit)
                    for c in table.columns
                }
            if rows:
                tables[table.name] = rows
    return telemetry.Batch(
        site="bench",
        agent="edge-01",
        device=device,
        model=model.id,
        kind=model.kind.value,
        seq=seq,
        ts=ts,
        points=points,
        tables=tables,
    )


def values_of(batch: telemetry.Batch) -> int:
    return len(batch.points) + sum(len(row) for rows in batch.tables.values() for row in rows.values())


def generate(rounds: int, seed: int) -> tuple[list[telemetry.Batch], int]:
    """Every device polled `rounds` times, in poll order; faults come and go."""
    rng = random.Random(seed)
    models = catalog.load_all()
    devices = [(models[m], f"{m}-{i:03d}") for m, n in SITE if m in models for i in range(n)]
    faults: dict[str, tuple[str, int]] = {}  # device -> (fault, until round)
    batches: list[telemetry.Batch] = []
    seq = 0
    for r in range(rounds):
        if r % 5 == 0:  # a few incidents per five rounds: a UPS, a sensor, any device
            for pool in ("ups", "gateway", ""):
                model, device = rng.choice([d for d in devices if d[0].kind.value.startswith(pool)])
                kind = {"ups": "battery", "gateway": rng.choice(["hot", "leak"])}.get(pool, "dead")
                faults[device] = (kind, r + rng.randint(2, 12))
        for model, device in devices:
            fault, until = faults.get(device, ("", -1))
            if r >= until:
                fault = ""
            seq += 1
            ts = T0 + r * INTERVAL_S + rng.random()
            if fault == "dead" and rng.random() < 0.8:
                continue  # mostly no batch at all; sometimes one with every read failed
            batches.append(make_batch(model, device, ts, seq, rng=rng, fault=fault))
    return batches, sum(values_of(b) for b in batches)


def timed(fn: Callable[[], int]) -> tuple[float, int]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="polls of every device (default 30)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()

    batches, values = generate(args.rounds, args.seed)
    payloads = [telemetry.encode(b) for b in batches]
    rules = AlarmsSection().all_rules()

    def decode() -> int:
        for p in payloads:
            telemetry.decode_batch(p)
        return 0

    def engine() -> int:
        e = Engine(rules, periods=catalog_periods)
        n = 0
        for i, b in enumerate(batches):
            n += len(e.on_batch(b))
            if i % 300 == 0:
                n += len(e.tick(b.ts))
        return n

    with tempfile.TemporaryDirectory() as tmp:

        def service() -> int:
            svc = AlarmService(AlarmsSection(), base_dir=Path(tmp), now=T0)
            n = 0
            for i, b in enumerate(batches):
                n += len(svc.on_batch(b))
                if i % 300 == 0:
                    n += len(svc.tick(b.ts))
            svc.close()
            return n

        results = {name: timed(fn) for name, fn in (("decode", decode), ("engine", engine), ("service", service))}

    devices = len({b.device for b in batches})
    print(
        f"alarm evaluation: {devices} devices, {args.rounds} rounds, {len(batches)} batches, "
        f"{values} point values, {len(rules)} default rules"
    )
    header = ("stage", "seconds", "batches/s", "values/s", "x 100k values/s", "transitions")
    print(f"{header[0]:<10} {header[1]:>8} {header[2]:>11} {header[3]:>12} {header[4]:>16} {header[5]:>12}")
    summary: dict[str, Any] = {"devices": devices, "batches": len(batches), "values": values, "rules": len(rules)}
    for name, (secs, transitions) in results.items():
        bps, vps = len(batches) / secs, values / secs
        ratio = vps / INGEST_TARGET_VALUES_PER_S
        shown = "-" if name == "decode" else str(transitions)
        print(f"{name:<10} {secs:>8.3f} {bps:>11,.0f} {vps:>12,.0f} {ratio:>16.2f} {shown:>12}")
        summary[name] = {"seconds": round(secs, 4), "batches_per_s": round(bps), "values_per_s": round(vps)}
        if name != "decode":
            summary[name]["transitions"] = transitions
    summary["service_vs_decode"] = round(results["decode"][0] / results["service"][0], 3)
    summary["service_x_target"] = round(values / results["service"][0] / INGEST_TARGET_VALUES_PER_S, 2)
    print(
        f"service speed relative to decoding the same messages: {summary['service_vs_decode']:.2f} "
        f"(1.0 = as fast as the decode the collector already does)"
    )
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
