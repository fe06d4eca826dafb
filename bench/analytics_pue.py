"""Benchmark: a year of one-minute data for 200 meters through the PUE report, and availability.

Generates seeded synthetic series (facility feed counters, IT meters as
counters with resets and Counter32 wraps or as power with dropouts, cooling
and power-chain sub-meters), then times, separately:

- energy: per-meter daily energy and coverage from the raw minute series;
- PUE report: daily, monthly and annual PUE from the daily meter table;
- availability: UPS and rack PDU status samples to timelines, N+1 groups,
  A/B feeds per rack, monthly summaries and burn-rate alerts every 5 minutes.

Data generation is not timed. With ``--json`` the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from datetime import date, timedelta, timezone

import numpy as np
import numpy.typing as npt

from collector.analytics.availability import (
    CalendarBasis,
    Load,
    Timeline,
    breaker_states,
    combine_dual_feed,
    combine_redundant,
    combine_series,
    evaluate_burn_rates,
    summarize,
    timeline_from_samples,
    ups_states,
)
from collector.analytics.energy import (
    NS_PER_S,
    BinnedEnergy,
    calendar_edges_ns,
    counter_energy_binned,
    integrate_power_binned,
)
from collector.analytics.pue import MeterTable, Role, pue_report

BEIJING = timezone(timedelta(hours=8))
MINUTE_NS = 60 * NS_PER_S
COUNTER32_0P1_KWH = 2**32 * 0.1


@dataclass
class Timings:
    energy_s: float = 0.0
    report_s: float = 0.0
    availability_s: float = 0.0


def minute_grid(year: int) -> npt.NDArray[np.int64]:
    edges = calendar_edges_ns(date(year, 1, 1), date(year + 1, 1, 1), unit="year", tz=BEIJING)
    # Integer arithmetic: np.arange(start, stop, step) on nanoseconds sizes the
    # result in float and can drop the last point.
    n = int(edges[1] - edges[0]) // MINUTE_NS + 1
    return np.asarray(edges[0] + np.arange(n, dtype=np.int64) * MINUTE_NS, dtype=np.int64)


def daily_profile(ts: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    hour = (ts // (3600 * NS_PER_S) + 8) % 24
    return 1.0 + 0.03 * np.sin(2 * np.pi * (hour - 9) / 24)


def power_series(rng: np.random.Generator, ts: npt.NDArray[np.int64], mean_kw: float) -> npt.NDArray[np.float64]:
    power = mean_kw * daily_profile(ts) * (1.0 + 0.01 * rng.standard_normal(ts.size))
    power[rng.random(ts.size) < 0.001] = np.nan  # isolated failed reads
    start = int(rng.integers(0, ts.size - 600))
    power[start : start + int(rng.integers(0, 600))] = np.nan  # one outage of the meter, up to 10 h
    return power


def counter_series(
    rng: np.random.Generator, ts: npt.NDArray[np.int64], mean_kw: float, *, wrap: bool
) -> npt.NDArray[np.float64]:
    power = power_series(rng, ts, mean_kw)
    increments = np.nan_to_num(power, nan=mean_kw) / 60.0
    counter = np.round(np.concatenate((np.zeros(1), np.cumsum(increments[:-1]))), 1).astype(np.float64)
    if wrap:
        counter = (counter + COUNTER32_0P1_KWH - counter[ts.size // 2]) % COUNTER32_0P1_KWH
    else:
        reset_at = int(rng.integers(1, ts.size))
        counter[reset_at:] -= counter[reset_at]  # a user reset
    counter[np.isnan(power)] = np.nan
    return counter


def meter_energy(
    n_meters: int, ts: npt.NDArray[np.int64], days: npt.NDArray[np.int64], seed: int, timings: Timings
) -> MeterTable:
    """Generate each meter's minute series and bin it into days (binning timed)."""
    rng = np.random.default_rng(seed)
    n_facility, n_cooling, n_chain = 4, 12, 4
    n_it = n_meters - n_facility - n_cooling - n_chain
    if n_it < 1:
        raise SystemExit(f"--meters {n_meters}: at least {n_facility + n_cooling + n_chain + 1} meters are needed")
    it_kw = 11_000.0 / n_it
    binned: list[tuple[str, Role, BinnedEnergy]] = []

    def add(meter_id: str, role: Role, values: npt.NDArray[np.float64], *, counter: bool) -> None:
        started = time.perf_counter()
        if counter:
            energy = counter_energy_binned(ts, values, days, wrap=COUNTER32_0P1_KWH, max_power_kw=20_000.0)
        else:
            energy = integrate_power_binned(ts, values, days, max_gap_s=150.0)
        timings.energy_s += time.perf_counter() - started
        binned.append((meter_id, role, energy))

    for i in range(n_facility):
        add(f"feed-{i}", Role.FACILITY, counter_series(rng, ts, 1.2 * 11_000 / n_facility, wrap=False), counter=True)
    for i in range(n_it):
        if i % 2:
            add(f"pdu-{i}", Role.IT_PDU_OUTPUT, counter_series(rng, ts, it_kw, wrap=i % 4 == 1), counter=True)
        else:
            add(f"pdu-{i}", Role.IT_PDU_OUTPUT, power_series(rng, ts, it_kw), counter=False)
    for i in range(n_cooling):
        add(f"cooling-{i}", Role.COOLING, power_series(rng, ts, 0.14 * 11_000 / n_cooling), counter=False)
    for i in range(n_chain):
        add(f"chain-{i}", Role.POWER_CHAIN, counter_series(rng, ts, 0.06 * 11_000 / n_chain, wrap=False), counter=True)
    return MeterTable.from_binned(binned)


def availability_inputs(
    ts: npt.NDArray[np.int64], n_devices: int, seed: int
) -> tuple[list[npt.NDArray[np.str_]], list[npt.NDArray[np.float64]]]:
    """UPS output-source names and rack PDU breaker flags, one sample a minute."""
    rng = np.random.default_rng(seed + 1)
    ups: list[npt.NDArray[np.str_]] = []
    for _ in range(6):
        source = np.full(ts.size, "normal")
        for name, count, longest in (("battery", 6, 20), ("bypass", 2, 120), ("none", 1, 3)):
            for start in rng.integers(0, ts.size - 200, count):
                source[start : start + int(rng.integers(1, longest + 1))] = name
        ups.append(source)
    pdus: list[npt.NDArray[np.float64]] = []
    for _ in range((n_devices - 6) // 2):  # a rack: feeds A and B
        pair = np.zeros((2, ts.size))
        pair[rng.random(pair.shape) < 0.0005] = np.nan
        for feed in pair:
            if rng.random() < 0.05:
                start = int(rng.integers(0, ts.size - 100))
                feed[start : start + int(rng.integers(1, 60))] = 1.0
        if rng.random() < 0.03:  # both feeds lost at once: the rack is down
            start = int(rng.integers(0, ts.size - 100))
            pair[:, start : start + int(rng.integers(1, 10))] = 1.0
        pdus.extend(pair)
    return ups, pdus


def availability(
    ts: npt.NDArray[np.int64],
    months: npt.NDArray[np.int64],
    ups: list[npt.NDArray[np.str_]],
    pdus: list[npt.NDArray[np.float64]],
) -> tuple[int, int, float]:
    """Timelines, buses, racks, monthly summaries and burn rates: (outages, firing evaluations, worst month)."""
    end_ns = int(ts[-1]) + MINUTE_NS

    def ups_tl(i: int) -> Timeline:
        return timeline_from_samples(f"ups-{i}", ts, *ups_states(ups[i]), max_gap_s=150.0, end_ns=end_ns)

    bus_a = combine_redundant("bus-a", [ups_tl(i) for i in range(3)], needed=2)
    bus_b = combine_redundant("bus-b", [ups_tl(i) for i in range(3, 6)], needed=2)
    loads = []
    for r in range(len(pdus) // 2):
        feeds = [
            timeline_from_samples(
                f"pdu-{r}{side}", ts, *breaker_states(pdus[2 * r + k]), max_gap_s=150.0, end_ns=end_ns
            )
            for k, side in enumerate("ab")
        ]
        rack = combine_dual_feed(
            f"rack-{r}",
            combine_series(f"rack-{r}a", [bus_a, feeds[0]]),
            combine_series(f"rack-{r}b", [bus_b, feeds[1]]),
        )
        loads.append(Load(rack, weight=8.8, devices=tuple(feeds)))
    summaries = summarize(loads, months, basis=CalendarBasis.AVERAGE_MONTH)
    every_5_min = ts[::5]
    firing = sum(int(e.firing.sum()) for e in evaluate_burn_rates(loads, every_5_min))
    outages = sum(len(s.outages) for s in summaries)
    return outages, firing, min(s.availability for s in summaries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--meters", type=int, default=200, help="meters in all (at least 21: 20 are facility, cooling and chain)"
    )
    parser.add_argument("--devices", type=int, default=200, help="UPS (6) plus rack PDUs for availability")
    parser.add_argument("--year", type=int, default=2022)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of the report and availability (best kept)")
    parser.add_argument("--json", action="store_true", help="end with one JSON object on the last line")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    timings = Timings()
    ts = minute_grid(args.year)
    first, last = date(args.year, 1, 1), date(args.year + 1, 1, 1)
    days = calendar_edges_ns(first, last, unit="day", tz=BEIJING)
    months = calendar_edges_ns(first, last, unit="month", tz=BEIJING)
    table = meter_energy(args.meters, ts, days, args.seed, timings)

    # Best of --repeat runs: the machine may be shared, and the minimum is the
    # least disturbed measurement.
    report_runs, availability_runs = [], []
    for _ in range(args.repeat):
        started = time.perf_counter()
        report = pue_report(table, {"daily": days, "monthly": months, "annual": months[[0, -1]]})
        report_runs.append(time.perf_counter() - started)
    timings.report_s = min(report_runs)

    ups, pdus = availability_inputs(ts, args.devices, args.seed)
    for _ in range(args.repeat):
        started = time.perf_counter()
        outages, firing, worst = availability(ts, months, ups, pdus)
        availability_runs.append(time.perf_counter() - started)
    timings.availability_s = min(availability_runs)

    annual = report["annual"].period(0)
    complete_days = int(report["daily"].complete.sum())
    rows = [
        ("samples per series", f"{ts.size:,}"),
        ("meters", f"{args.meters}"),
        ("energy: minute series -> daily (s)", f"{timings.energy_s:.3f}"),
        (f"PUE report: daily+monthly+annual (s, best of {args.repeat})", f"{timings.report_s:.4f}"),
        ("availability devices", f"{args.devices}"),
        (f"availability: timelines..burn rates (s, best of {args.repeat})", f"{timings.availability_s:.3f}"),
        ("annual PUE (measured)", f"{annual.pue_measured:.4f}"),
        ("annual complete", f"{annual.complete}"),
        ("complete days", f"{complete_days} / {len(report['daily'])}"),
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
                    "samples_per_series": int(ts.size),
                    "meters": args.meters,
                    "energy_s": round(timings.energy_s, 4),
                    "pue_report_s": round(timings.report_s, 5),
                    "availability_devices": args.devices,
                    "availability_s": round(timings.availability_s, 4),
                    "annual_pue_measured": annual.pue_measured,
                    "annual_complete": annual.complete,
                    "complete_days": complete_days,
                    "outages": outages,
                    "firing_evaluations": firing,
                    "worst_month_availability": worst,
                }
            )
        )


if __name__ == "__main__":
    main()
