"""dcim-collector settle: contract settlement from raw energy figures or from the store."""

from __future__ import annotations

import argparse
import json
import sys

from collector.analytics.pue import EmissionFactor
from collector.analytics.settlement import ContractTerms, Settlement, settle, to_decimal

EXIT_OK = 0
EXIT_USAGE = 2
DEFAULT_TARIFF = 0.60


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags beyond the original interface: the load condition needs capacity and period."""
    parser.add_argument(
        "--capacity-kw", type=float, metavar="KW", help="contracted IT capacity, for the load condition"
    )
    parser.add_argument(
        "--hours", type=float, metavar="H", help="length of the period (default 8760 with --capacity-kw)"
    )
    parser.add_argument("--currency", default="CNY", help="currency code (default CNY)")
    parser.add_argument(
        "--as-of", metavar="DATE", help="with --config: settle the year as of this local date (default: now)"
    )


def _print_table(result: Settlement) -> None:
    rows = [
        ("PUE", f"{result.pue}"),
        ("IT energy", f"{result.it_kwh:,} kWh"),
        ("facility energy", f"{result.facility_kwh:,} kWh"),
        ("excess over cap", f"{result.excess_kwh:,} kWh"),
        ("saved below threshold", f"{result.saved_kwh:,} kWh"),
        ("value of saving", f"{result.savings_value:,} {result.currency}"),
        ("bonus (to operator)", f"{result.bonus:,} {result.currency}"),
        ("penalty (to customer)", f"{result.penalty:,} {result.currency}"),
        ("CO2 avoided", "n/a (no --co2-factor)" if result.co2_t is None else f"{result.co2_t:,} t"),
        (
            "load condition",
            {True: "met", False: "NOT met: flagged", None: "unknown (no --capacity-kw)"}[result.load_condition_met],
        ),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def cmd_settle(args: argparse.Namespace) -> int:
    """Settle from raw figures (--it-kwh/--facility-kwh) or from the store (--config/--year)."""
    raw = args.it_kwh is not None or args.facility_kwh is not None
    if raw:
        if args.it_kwh is None or args.facility_kwh is None:
            print("dcim-collector settle: give both --it-kwh and --facility-kwh", file=sys.stderr)
            return EXIT_USAGE
        if args.config is not None or args.year is not None:
            print("dcim-collector settle: use either raw figures or --config/--year, not both", file=sys.stderr)
            return EXIT_USAGE
        return _settle_raw(args)
    if args.config is None or args.year is None:
        print("dcim-collector settle: give --config FILE --year YYYY, or --it-kwh X --facility-kwh Y", file=sys.stderr)
        return EXIT_USAGE
    from collector import settle_store  # noqa: PLC0415  (the raw path needs no store or configuration)

    return settle_store.cmd_settle_store(args)


def _settle_raw(args: argparse.Namespace) -> int:
    try:
        terms = ContractTerms(
            cap=to_decimal(args.cap),
            threshold=to_decimal(args.threshold),
            bonus_rate=to_decimal(args.bonus_rate),
            penalty_rate=to_decimal(args.penalty_rate),
            currency=args.currency,
        )
        factor = (
            None
            if args.co2_factor is None
            else EmissionFactor(kg_per_kwh=to_decimal(args.co2_factor), source="command line")
        )
        hours = args.hours if args.hours is not None else (8760.0 if args.capacity_kw is not None else None)
        result = settle(
            args.it_kwh,
            args.facility_kwh,
            tariff_per_kwh=DEFAULT_TARIFF if args.tariff is None else args.tariff,
            emission_factor=factor,
            terms=terms,
            period_h=hours,
            capacity_kw=args.capacity_kw,
        )
    except ValueError as exc:
        print(f"dcim-collector settle: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(result.as_json_dict()))
    else:
        _print_table(result)
    return EXIT_OK
