"""Seeded meter and status histories for the report, settlement and job tests, written through the Store."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from collector.store import Store
from models import telemetry

SITE = "bj-dx"
AGENT = "edge-01"
DAY_S = 86_400
MIN_S = 60

# 2025-03-01 00:00 UTC: three days of one-minute meter readings (the site is in UTC here).
PUE_T0 = int(datetime(2025, 3, 1, tzinfo=UTC).timestamp())
PUE_DAYS = 3
WRAP_KWH = 10_000.0

Value = float | str | None


def batches(
    device: str,
    kind: str,
    model: str,
    ts_s: Sequence[float],
    points: dict[str, tuple[str, Sequence[Value]]],
    *,
    tables: dict[str, dict[str, dict[str, tuple[str, Sequence[Value]]]]] | None = None,
) -> list[telemetry.Batch]:
    """One batch per time: points map a name to (unit, values); None is a failed read (timeout)."""
    out = []
    for i, t in enumerate(ts_s):

        def point(unit: str, values: Sequence[Value], i: int = i) -> telemetry.Point:
            value = values[i]
            if value is None:
                return telemetry.Point(None, unit, "timeout")
            return telemetry.Point(value, unit)

        rows: dict[str, dict[str, telemetry.Row]] = {}
        for table, by_index in (tables or {}).items():
            for index, columns in by_index.items():
                row = {name: point(unit, vals) for name, (unit, vals) in columns.items() if vals[i] is not None}
                if row:
                    rows.setdefault(table, {})[index] = row
        out.append(
            telemetry.Batch(
                site=SITE,
                agent=AGENT,
                device=device,
                model=model,
                kind=kind,
                seq=i,
                ts=float(t),
                points={name: point(unit, vals) for name, (unit, vals) in points.items()},
                tables=rows,
            )
        )
    return out


def write(store: Store, messages: Sequence[telemetry.Batch], chunk: int = 5000) -> None:
    """Write through the Store interface in chunks."""
    for start in range(0, len(messages), chunk):
        store.write_batches(messages[start : start + chunk])


# ---------------------------------------------------------------- PUE history


@dataclass(frozen=True)
class PueExpect:
    """Hand-computed daily energies (kWh) of the seeded meters."""

    facility: tuple[float, ...] = (60 * 24 + 55 * 24, 60 * 24 - 1 + 55 * 24, 60 * 24 + 55 * 24)
    it: tuple[float, ...] = (100 * 24, 100 * 24, 50 * 24 + 50 * 12)  # it-2 silent from day 3 noon
    cooling: float = 12.5 * 24
    chain: float = 2.5 * 24


def seed_pue(store: Store, *, it2_silent_from_s: float | None = PUE_T0 + 2 * DAY_S + DAY_S // 2) -> None:
    """Three days of one-minute readings from six meters (see ``PUE_TOML``).

    feed-a: facility counter at 60 kW, reset to 0 on day 2 at noon (one minute lost);
    feed-b: facility counter at 55 kW on a 10,000 kWh register that wraps on day 1;
    it-1: IT input counter at 50 kW; it-2: IT input power 50 kW (failed reads from
    ``it2_silent_from_s``); cooling: power 12.5 kW; chain: power-chain counter at 2.5 kW.
    """
    n = PUE_DAYS * 1440 + 1
    ts = PUE_T0 + np.arange(n) * MIN_S
    minutes = np.arange(n, dtype=np.float64)
    feed_a = 1000.0 + minutes * 1.0
    reset = 1440 + 720
    feed_a[reset:] = (minutes[reset:] - reset) * 1.0
    feed_b = (9000.0 + minutes * 55.0 / 60.0) % WRAP_KWH
    it1 = 5000.0 + minutes * 50.0 / 60.0
    it2: list[Value] = [50.0] * n
    if it2_silent_from_s is not None:
        it2 = [None if t >= it2_silent_from_s else 50.0 for t in ts]
    chain = 20.0 + minutes * 2.5 / 60.0
    messages: list[telemetry.Batch] = []
    for device, point, unit, values in (
        ("feed-a", "import_energy", "kWh", feed_a.tolist()),
        ("feed-b", "import_energy", "kWh", feed_b.tolist()),
        ("it-1", "import_energy", "kWh", it1.tolist()),
        ("it-2", "total_power", "kW", it2),
        ("cooling", "total_power", "kW", [12.5] * n),
        ("chain", "import_energy", "kWh", chain.tolist()),
    ):
        messages += batches(device, "meter", "meter-sdm630", ts.tolist(), {point: (unit, values)})
    write(store, messages)


PUE_TOML = f"""
[pue]
min_coverage = 0.99
max_gap_s = 150
emission_factor = 0.5366
emission_factor_source = "China national grid 2022"

[[pue.meters]]
device = "feed-a"
role = "facility"

[[pue.meters]]
device = "feed-b"
role = "facility"
wrap_kwh = {WRAP_KWH}

[[pue.meters]]
device = "it-1"
role = "it_input"

[[pue.meters]]
device = "it-2"
role = "it_input"
point = "total_power"
source = "power"

[[pue.meters]]
device = "cooling"
role = "cooling"
point = "total_power"
source = "power"

[[pue.meters]]
device = "chain"
role = "power_chain"
"""

# ---------------------------------------------------------------- availability history

# April 2025 (30 days, UTC): two UPS in an N+1 group feed two rows; row-1 also needs breaker pdu-r1.
APRIL = int(datetime(2025, 4, 1, tzinfo=UTC).timestamp())
MAY = int(datetime(2025, 5, 1, tzinfo=UTC).timestamp())
STATUS_STEP_S = 600

AVAILABILITY_TOML = """
[availability]
target = 0.9999
basis = "30.44-day"
max_gap_s = 900

[[availability.devices]]
device = "ups-a1"
type = "ups"

[[availability.devices]]
device = "ups-a2"
type = "ups"

[[availability.devices]]
device = "pdu-r1"
type = "breaker"
point = "breaker_tripped"

[[availability.groups]]
id = "ups-a"
members = ["ups-a1", "ups-a2"]
needed = 1

[[availability.loads]]
id = "row-1"
weight = 3
path = ["ups-a", "pdu-r1"]

[[availability.loads]]
id = "row-2"
weight = 1
path = ["ups-a"]
"""


@dataclass(frozen=True)
class Episode:
    """A change of a device's status for a while: (device, value, start offset in s, duration in s)."""

    device: str
    value: str | float
    offset_s: int
    duration_s: int


def status_times(
    episodes: Sequence[Episode], device: str, start_s: int, end_s: int, gaps: Sequence[tuple[int, int]]
) -> list[int]:
    """Regular poll times plus the start and end of each episode of the device, minus the gaps."""
    times = set(range(start_s - STATUS_STEP_S, end_s + 1, STATUS_STEP_S))
    for e in episodes:
        if e.device == device:
            times |= {start_s + e.offset_s, start_s + e.offset_s + e.duration_s}
    return sorted(t for t in times if not any(start_s + a <= t < start_s + a + d for a, d in gaps))


def seed_status(
    store: Store,
    episodes: Sequence[Episode],
    *,
    start_s: int = APRIL,
    end_s: int = MAY,
    gaps: Mapping[str, Sequence[tuple[int, int]]] | None = None,
    alarm_rows: Mapping[str, Sequence[Episode]] | None = None,
) -> None:
    """UPS output source (RFC 1628 names) and breaker flags, with the given episodes.

    ``gaps`` maps a device to (offset_s, duration_s) stretches without any poll;
    ``alarm_rows`` maps a UPS to episodes whose value is an alarm description.
    """
    gaps = gaps or {}
    messages: list[telemetry.Batch] = []
    for device, normal in (("ups-a1", "normal"), ("ups-a2", "normal"), ("pdu-r1", 0.0)):
        times = status_times(
            [*episodes, *(alarm_rows or {}).get(device, ())], device, start_s, end_s, gaps.get(device, ())
        )

        def value_at(t: int, device: str = device, normal: str | float = normal) -> str | float:
            value: str | float = normal
            for e in episodes:
                if e.device == device and start_s + e.offset_s <= t < start_s + e.offset_s + e.duration_s:
                    value = e.value
            return value

        values = [value_at(t) for t in times]
        if device.startswith("ups"):
            alarms = [
                next(
                    (
                        str(a.value)
                        for a in (alarm_rows or {}).get(device, ())
                        if start_s + a.offset_s <= t < start_s + a.offset_s + a.duration_s
                    ),
                    None,
                )
                for t in times
            ]
            messages += batches(
                device,
                "ups",
                "ups-rfc1628",
                times,
                {"output_source": ("", values)},
                tables={"alarms": {"1": {"descr": ("", alarms)}}},
            )
        else:
            messages += batches(device, "pdu", "pdu-apc-rpdu2", times, {"breaker_tripped": ("", values)})
    write(store, messages)


# ---------------------------------------------------------------- configs and the CLI


def write_config(path: Path, store_toml: str, *sections: str, timezone: str = "UTC") -> Path:
    """A collector configuration with the given [store] body and analytics sections."""
    body = "\n".join(sections)
    path.write_text(
        f"""
[collector]
id = "collector-1"
site = "{SITE}"
timezone = "{timezone}"

[store]
{store_toml}
{body}
""",
        encoding="utf-8",
    )
    return path


def dcim_collector(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run dcim-collector as a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "collector.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )


Seeder = Callable[[Store], None]
