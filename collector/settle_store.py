"""dcim-collector settle --config --year: contract settlement from the stored meter series.

The year runs from 1 January to 1 January at local midnight in the
collector's time zone. A year still running is settled to date (up to the
last whole day, or hour with a time-of-use tariff) and projected linearly to
the year end. Energies come from the [pue] meters (facility input and the
category's IT meters); a year whose meters do not cover it is settled on
what was measured, marked incomplete, and the command exits 1.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any, Final
from zoneinfo import ZoneInfo

import numpy as np

from collector import analytics_data as data
from collector import config as collector_config
from collector.analytics.energy import NS_PER_S, S_PER_H, calendar_edges_ns
from collector.analytics.pue import PueSeries, pue_series
from collector.analytics.settlement import (
    ContractTerms,
    Settlement,
    TouPeriod,
    TouTariff,
    settle,
    settle_intervals,
    settle_year_to_date,
)
from collector.analytics_config import ContractSection, PueSection, minute_of_day
from collector.reports import UsageError, local_iso
from collector.store import Store, StoreError, create_store
from models.errors import ConfigError

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
_NS_PER_H: Final = S_PER_H * NS_PER_S


def contract_terms(section: ContractSection) -> ContractTerms:
    """The contract terms of a [contract] section."""
    return ContractTerms(
        cap=section.cap,
        threshold=section.threshold,
        bonus_rate=section.bonus_rate,
        penalty_rate=section.penalty_rate,
        min_load_fraction=section.min_load_fraction,
        currency=section.currency,
        minor_unit=section.minor_unit,
    )


def tou_tariff(section: ContractSection, tz: tzinfo, year: int) -> TouTariff | None:
    """The time-of-use table, on the configured UTC offset or the zone's offset on 1 January."""
    if not section.tou:
        return None
    if section.tou_utc_offset_h is not None:
        offset_s = round(section.tou_utc_offset_h * 3600)
    else:
        delta = datetime(year, 1, 1, tzinfo=tz).utcoffset() or timedelta(0)
        offset_s = int(delta.total_seconds())
    periods = tuple(
        TouPeriod(
            name=p.name,
            start_minute=minute_of_day(p.start),
            end_minute=minute_of_day(p.end),
            price_per_kwh=p.price,
            months=frozenset(p.months),
        )
        for p in section.tou
    )
    return TouTariff(periods=periods, utc_offset_s=offset_s)


@dataclass(frozen=True, slots=True)
class StoreSettlement:
    """A year's settlement from the store, to date and (while the year runs) projected."""

    year: int
    start_ns: int
    end_ns: int
    as_of_ns: int
    settlement: Settlement
    projected: Settlement | None
    coverage: float
    complete: bool
    incomplete_meters: tuple[str, ...]
    category: int
    tariff: str

    @property
    def in_progress(self) -> bool:
        """Whether the year was still running at ``as_of_ns``."""
        return self.as_of_ns < self.end_ns


def _whole_span(series: PueSeries) -> tuple[float, bool, tuple[str, ...]]:
    """Coverage, completeness and short meters of a one-bin series."""
    return float(series.coverage[0]), bool(series.complete[0]), series.incomplete_meters[0]


def settle_year(
    store: Store, site: str, pue: PueSection, contract: ContractSection, tz: tzinfo, *, year: int, now_ns: int
) -> StoreSettlement:
    """Settle ``year`` from the stored meters as of ``now_ns``."""
    edges = calendar_edges_ns(date(year, 1, 1), date(year + 1, 1, 1), unit="year", tz=tz)
    start, end = int(edges[0]), int(edges[1])
    tariff = tou_tariff(contract, tz, year)
    step = "hour" if tariff is not None else "day"
    bins = data.hour_edges(edges) if tariff is not None else data.day_edges(date(year, 1, 1), date(year, 12, 31), tz)
    done = bins[bins <= min(now_ns, end)]
    if done.size < 2:
        raise UsageError(f"--year {year}: not a whole {step} of it has passed yet")
    as_of = int(done[-1])
    table = data.meter_table(store, site, pue, done, period=step)
    options: dict[str, Any] = {
        "category": data.category(pue),
        "min_coverage": pue.min_coverage,
        "emission_factor": data.emission_factor(pue),
    }
    per_bin = pue_series(table, **options)
    whole = pue_series(table.rebin(done[[0, -1]]), **options)
    coverage, complete, short = _whole_span(whole)
    terms = contract_terms(contract)
    factor = data.emission_factor(pue)
    it_kwh, facility_kwh = float(whole.it_kwh[0]), float(whole.facility_kwh[0])
    if not it_kwh > 0:
        raise UsageError(f"--year {year}: no IT energy in the store for this year")
    projected: Settlement | None = None
    if tariff is not None:
        result = settle_intervals(
            done,
            np.nan_to_num(per_bin.it_kwh),
            np.nan_to_num(per_bin.facility_kwh),
            tariff=tariff,
            emission_factor=factor,
            terms=terms,
            capacity_kw=contract.capacity_kw,
        )
        if as_of < end:
            # Money at the year's mean price so far per kWh of facility energy: an estimate.
            index = tariff.period_index(done[:-1])
            prices = np.array([float(p.price_per_kwh) for p in tariff.periods])[index]
            fac = np.nan_to_num(per_bin.facility_kwh)
            mean_price = float((fac * prices).sum() / fac.sum()) if fac.sum() > 0 else float(prices.mean())
            projected = settle_year_to_date(
                it_kwh,
                facility_kwh,
                year_start_ns=start,
                year_end_ns=end,
                as_of_ns=as_of,
                tariff_per_kwh=round(mean_price, 6),
                emission_factor=factor,
                terms=terms,
                capacity_kw=contract.capacity_kw,
            ).projected
        label = "time-of-use"
    else:
        price = contract.tariff if contract.tariff is not None else Decimal(0)
        if as_of < end:
            ytd = settle_year_to_date(
                it_kwh,
                facility_kwh,
                year_start_ns=start,
                year_end_ns=end,
                as_of_ns=as_of,
                tariff_per_kwh=price,
                emission_factor=factor,
                terms=terms,
                capacity_kw=contract.capacity_kw,
            )
            result, projected = ytd.to_date, ytd.projected
        else:
            result = settle(
                it_kwh,
                facility_kwh,
                tariff_per_kwh=price,
                emission_factor=factor,
                terms=terms,
                period_h=Decimal(end - start) / _NS_PER_H,
                capacity_kw=contract.capacity_kw,
            )
        label = f"flat {price} {contract.currency}/kWh"
    return StoreSettlement(
        year=year,
        start_ns=start,
        end_ns=end,
        as_of_ns=as_of,
        settlement=result,
        projected=projected,
        coverage=coverage,
        complete=complete,
        incomplete_meters=short,
        category=int(whole.category),
        tariff=label,
    )


def settlement_json(result: StoreSettlement, tz: tzinfo) -> dict[str, Any]:
    """The contract's keys, then what this settlement rests on."""
    return {
        **result.settlement.as_json_dict(),
        "year": result.year,
        "from": local_iso(result.start_ns, tz),
        "to": local_iso(result.as_of_ns, tz),
        "in_progress": result.in_progress,
        "complete": result.complete,
        "coverage": round(result.coverage, 6) if math.isfinite(result.coverage) else None,
        "incomplete_meters": list(result.incomplete_meters),
        "category": result.category,
        "tariff": result.tariff,
        "projected": None if result.projected is None else result.projected.as_json_dict(),
    }


def _rows(s: Settlement) -> list[tuple[str, str]]:
    condition = {True: "met", False: "NOT met: flagged", None: "unknown (no capacity_kw in [contract])"}
    return [
        ("PUE", f"{s.pue}"),
        ("IT energy", f"{s.it_kwh:,} kWh"),
        ("facility energy", f"{s.facility_kwh:,} kWh"),
        ("excess over cap", f"{s.excess_kwh:,} kWh"),
        ("saved below threshold", f"{s.saved_kwh:,} kWh"),
        ("value of saving", f"{s.savings_value:,} {s.currency}"),
        ("bonus (to operator)", f"{s.bonus:,} {s.currency}"),
        ("penalty (to customer)", f"{s.penalty:,} {s.currency}"),
        ("CO2 avoided", "n/a (no emission factor in [pue])" if s.co2_t is None else f"{s.co2_t:,} t"),
        ("load condition", condition[s.load_condition_met]),
    ]


def settlement_text(result: StoreSettlement, tz: tzinfo) -> str:
    """A readable settlement: to date, and projected while the year runs."""
    span = f"{local_iso(result.start_ns, tz)} to {local_iso(result.as_of_ns, tz)}"
    lines = [
        f"PUE contract settlement {result.year} ({'year to date' if result.in_progress else 'whole year'}: {span})",
        f"category {result.category}; tariff {result.tariff}; coverage {result.coverage:.2%}"
        + ("" if result.complete else f" INCOMPLETE (short: {', '.join(result.incomplete_meters) or 'IT energy'})"),
        "",
    ]
    rows = _rows(result.settlement)
    width = max(len(k) for k, _ in rows)
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    if result.projected is not None:
        lines += ["", "projected to the year end (linear):"]
        lines += [f"{k:<{width}}  {v}" for k, v in _rows(result.projected)]
    return "\n".join(lines) + "\n"


def parse_as_of(value: str | None, tz: tzinfo) -> int:
    """--as-of YYYY-MM-DD (local midnight) as ns; now when not given."""
    if value is None:
        return time.time_ns()
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--as-of {value!r}: expected YYYY-MM-DD") from None
    return int(calendar_edges_ns(day, day + timedelta(days=1), unit="day", tz=tz)[0])


def cmd_settle_store(args: argparse.Namespace) -> int:
    """Settle --year from the store of --config."""
    loaded = collector_config.load(args.config)
    cfg = loaded.config
    missing = [
        (name, f"the [{name}] section is missing; `settle --config` needs it")
        for name in ("pue", "contract")
        if getattr(cfg, name) is None
    ]
    if missing:
        raise ConfigError(loaded.path, missing)
    assert cfg.pue is not None  # noqa: S101  (checked above; for the type checker)
    assert cfg.contract is not None  # noqa: S101
    tz = ZoneInfo(cfg.collector.timezone)
    try:
        now_ns = parse_as_of(getattr(args, "as_of", None), tz)
        store = create_store(cfg.store)
        store.open()
        try:
            result = settle_year(store, cfg.collector.site, cfg.pue, cfg.contract, tz, year=args.year, now_ns=now_ns)
        finally:
            store.close()
    except (UsageError, ValueError) as exc:
        sys.stderr.write(f"dcim-collector settle: {exc}\n")
        return EXIT_USAGE
    except StoreError as exc:
        sys.stderr.write(f"dcim-collector settle: store: {exc}\n")
        return EXIT_FAILED
    if args.json:
        sys.stdout.write(json.dumps(settlement_json(result, tz)) + "\n")
    else:
        sys.stdout.write(settlement_text(result, tz))
    return EXIT_OK if result.complete else EXIT_FAILED
