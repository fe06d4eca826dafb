"""Benchmark: PUE and availability over a year of one-minute data for 200 meters, pure and from the store.

Times, on seeded synthetic data (generation not timed):

- energy: each meter's 525,601 one-minute readings integrated into daily energy
  and coverage (counters with resets and wraps, power with gaps);
- PUE report (pure): daily, monthly and annual PUE from that daily table;
- PUE report (store): what ``dcim-collector report pue --from Y-01-01 --to Y-12-31``
  does once the scheduled jobs have stored each meter's daily energy: read
  200 x 365 stored days from an SQLite store, check their coverage, and report;
- availability: UPS and rack PDU status to timelines, N+1 groups, A/B feeds,
  monthly summaries and burn-rate alerts every 5 minutes (pure).

Best of ``--repeat`` runs for the report and availability figures. With
``--json`` the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import analytics_pue as base  # the data generators and the pure timings

from collector.analytics.energy import calendar_edges_ns
from collector.analytics.pue import MeterTable, pue_report
from collector.analytics_config import MeterSpec, PueSection
from collector.analytics_data import METER_ENERGY, derived_tags
from collector.reports import build_pue_report
from collector.store.sqlite import SqliteStore

SITE = "bench"


def stored_report(table: MeterTable, year: int, repeat: int) -> tuple[float, float, float | None]:
    """Write the daily meter energies as the jobs do, then time the store-backed report: (write s, report s, PUE)."""
    meters = tuple(
        MeterSpec(device=meter_id, role=role, point="import_energy")
        for meter_id, role in zip(table.meter_ids, table.roles, strict=True)
    )
    section = PueSection(meters=meters, max_gap_s=150.0)
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "store.sqlite", synchronous="OFF")
        store.open()
        try:
            started = time.perf_counter()
            starts = table.edges_ns[:-1]
            for i, meter in enumerate(meters):
                store.write_derived(
                    METER_ENERGY,
                    derived_tags(SITE, meter, "day"),
                    starts,
                    # Stored days are trusted only when fully covered: mark them so, as a
                    # site whose meters never miss a reading would have them.
                    {"energy_kwh": table.energy_kwh[i], "coverage": np.ones(starts.size)},
                )
            write_s = time.perf_counter() - started
            runs = []
            for _ in range(repeat):
                started = time.perf_counter()
                report = build_pue_report(
                    store, SITE, section, base.BEIJING, first=date(year, 1, 1), last=date(year, 12, 31)
                )
                runs.append(time.perf_counter() - started)
        finally:
            store.close()
    return write_s, min(runs), report.total.period(0).pue


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--meters", type=int, default=200, help="meters in all (at least 21: 20 are facility, cooling and chain)"
    )
    parser.add_argument("--devices", type=int, default=200, help="UPS (6) plus rack PDUs for availability")
    parser.add_argument("--year", type=int, default=2022)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="end with one JSON object on the last line")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    timings = base.Timings()
    ts = base.minute_grid(args.year)
    first, last = date(args.year, 1, 1), date(args.year + 1, 1, 1)
    days = calendar_edges_ns(first, last, unit="day", tz=base.BEIJING)
    months = calendar_edges_ns(first, last, unit="month", tz=base.BEIJING)
    table = base.meter_energy(args.meters, ts, days, args.seed, timings)

    pure_runs = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        report = pue_report(table, {"daily": days, "monthly": months, "annual": months[[0, -1]]})
        pure_runs.append(time.perf_counter() - started)
    write_s, store_s, store_pue = stored_report(table, args.year, args.repeat)

    ups, pdus = base.availability_inputs(ts, args.devices, args.seed)
    availability_runs = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        outages, firing, worst = base.availability(ts, months, ups, pdus)
        availability_runs.append(time.perf_counter() - started)

    annual = report["annual"].period(0)
    rows = [
        ("one-minute readings per meter", f"{ts.size:,}"),
        ("meters", f"{args.meters}"),
        ("energy: readings -> daily energy, all meters (s)", f"{timings.energy_s:.3f}"),
        (f"PUE report, pure: daily+monthly+annual (s, best of {args.repeat})", f"{min(pure_runs):.4f}"),
        ("store: write 200 x 365 daily meter energies (s)", f"{write_s:.3f}"),
        (f"PUE report from the store, whole year (s, best of {args.repeat})", f"{store_s:.3f}"),
        ("annual PUE (measured, pure)", f"{annual.pue_measured:.4f}"),
        ("annual PUE (from the store)", "incomplete" if store_pue is None else f"{store_pue:.4f}"),
        ("availability devices", f"{args.devices}"),
        (f"availability: timelines..burn rates (s, best of {args.repeat})", f"{min(availability_runs):.3f}"),
        ("outages / firing evaluations", f"{outages} / {firing}"),
        ("worst month availability", f"{worst:.6f}"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    if args.json:
        print(
            json.dumps(
                {
                    "readings_per_meter": int(ts.size),
                    "meters": args.meters,
                    "energy_s": round(timings.energy_s, 4),
                    "pue_report_pure_s": round(min(pure_runs), 5),
                    "store_write_daily_s": round(write_s, 4),
                    "pue_report_store_s": round(store_s, 4),
                    "annual_pue_measured": annual.pue_measured,
                    "annual_pue_store": store_pue,
                    "availability_devices": args.devices,
                    "availability_s": round(min(availability_runs), 4),
                    "outages": outages,
                    "firing_evaluations": firing,
                    "worst_month_availability": worst,
                }
            )
        )


if __name__ == "__main__":
    main()
