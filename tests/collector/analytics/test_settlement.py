"""Contract settlement: the source facility's 2022 figures, penalties, the exact edges, tariffs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pytest

from collector.analytics.energy import NS_PER_S, datetime_ns
from collector.analytics.pue import EmissionFactor
from collector.analytics.settlement import (
    SETTLEMENT_KEYS,
    ContractTerms,
    TouPeriod,
    TouTariff,
    settle,
    settle_intervals,
    settle_year_to_date,
)

# About 0.3407 kg/kWh reproduces the source's 5,111 t from 15 million kWh.
SOURCE_FACTOR = EmissionFactor(Decimal("0.3407"), "source document, 2022 settlement")
CAPACITY_KW = Decimal(1388) * Decimal("8.8")  # 1,388 racks of 8.8 kW
HOURS_2022 = 8760
IT_2022_KWH = 100_000_000  # 11.4 MW mean IT load over 2022
BEIJING = timezone(timedelta(hours=8))
ZERO = Decimal(0)


def test_settlement_reproduces_the_source_2022_figures() -> None:
    result = settle(
        IT_2022_KWH,
        115_000_000,
        tariff_per_kwh="0.60",
        emission_factor=SOURCE_FACTOR,
        period_h=HOURS_2022,
        capacity_kw=CAPACITY_KW,
    )
    assert result.pue == Decimal("1.1500")
    assert result.saved_kwh == Decimal(15_000_000)  # (1.30 - 1.15) x 100 million kWh
    assert result.savings_value == Decimal("9000000.00")  # about 9 million yuan
    assert result.bonus == Decimal("900000.00")  # about 0.9 million yuan
    assert result.penalty == Decimal("0.00")
    assert result.excess_kwh == Decimal(0)
    assert result.co2_t == Decimal("5110.500")
    assert result.co2_t.quantize(Decimal(1), rounding=ROUND_HALF_UP) == 5111
    assert result.currency == "CNY"
    assert result.load_condition_met is True  # 11,416 kW of 12,214 kW


def test_settlement_keys_are_the_public_contract() -> None:
    result = settle(IT_2022_KWH, 115_000_000, tariff_per_kwh="0.60", emission_factor=SOURCE_FACTOR)
    assert tuple(result.as_dict()) == SETTLEMENT_KEYS
    assert set(SETTLEMENT_KEYS) == {
        "pue",
        "it_kwh",
        "facility_kwh",
        "excess_kwh",
        "saved_kwh",
        "penalty",
        "bonus",
        "savings_value",
        "co2_t",
        "currency",
        "load_condition_met",
    }
    as_json = result.as_json_dict()
    assert as_json["bonus"] == 900_000.0
    assert as_json["load_condition_met"] is None  # load unknown: null, not false


def test_penalty_above_the_cap() -> None:
    result = settle(IT_2022_KWH, 145_000_000, tariff_per_kwh=0.6, emission_factor=SOURCE_FACTOR)
    assert result.pue == Decimal("1.4500")
    assert result.excess_kwh == Decimal(5_000_000)  # 145 - 1.40 x 100 million kWh
    assert result.penalty == Decimal("300000.00")  # 10 % of 5 million kWh at 0.60
    assert (result.bonus, result.savings_value, result.saved_kwh, result.co2_t) == (ZERO,) * 4


def test_between_threshold_and_cap_nothing_is_paid() -> None:
    result = settle(IT_2022_KWH, 135_000_000, tariff_per_kwh="0.60", emission_factor=SOURCE_FACTOR)
    assert (result.penalty, result.bonus, result.excess_kwh, result.saved_kwh) == (ZERO,) * 4


@pytest.mark.parametrize(
    ("it_kwh", "facility_kwh"),
    [
        # As floats these ratios come out on the wrong side: 11.7 / 9 is
        # 1.2999999999999998 and 4.2 / 3 is 1.4000000000000001.
        (9.0, 11.7),
        (3.0, 4.2),
        (90_000_000.0, 117_000_000.0),
        (IT_2022_KWH, 130_000_000),
        (IT_2022_KWH, 140_000_000),
    ],
)
def test_nothing_is_paid_at_exactly_130_or_140(it_kwh: float, facility_kwh: float) -> None:
    result = settle(it_kwh, facility_kwh, tariff_per_kwh="0.60", emission_factor=SOURCE_FACTOR)
    assert result.pue in {Decimal("1.3000"), Decimal("1.4000")}
    assert (result.penalty, result.bonus, result.excess_kwh, result.saved_kwh) == (ZERO,) * 4


def test_float_edge_cases_really_are_on_the_wrong_side_in_float() -> None:
    assert 11.7 / 9.0 < 1.3
    assert 4.2 / 3.0 > 1.4


def test_load_condition_is_checked_and_flagged() -> None:
    low = settle(
        50_000_000,
        60_000_000,
        tariff_per_kwh="0.60",
        emission_factor=SOURCE_FACTOR,
        period_h=8760,
        capacity_kw=CAPACITY_KW,
    )
    assert low.load_condition_met is False  # 5.7 MW of 12.2 MW
    assert low.bonus == Decimal("300000.00")  # still computed, for the parties to decide
    by_mean = settle(
        1, 1, tariff_per_kwh=1, emission_factor=SOURCE_FACTOR, mean_it_kw=8_550.08, capacity_kw=CAPACITY_KW
    )
    assert by_mean.load_condition_met is True  # exactly 70 %
    with pytest.raises(ValueError, match="not both"):
        settle(1, 1, tariff_per_kwh=1, emission_factor=SOURCE_FACTOR, mean_it_kw=1, period_h=1, capacity_kw=1)


def test_money_is_rounded_once_at_the_end() -> None:
    # 1,000 hourly intervals each saving 0.0667 kWh at 0.60: per-interval
    # bonus 0.004 yuan would round to nothing each time; the total is 4.00.
    edges = datetime_ns(datetime(2022, 1, 1, tzinfo=UTC)) + np.arange(1001, dtype=np.int64) * 3600 * NS_PER_S
    it = np.full(1000, 1.0)
    facility = np.full(1000, 1.3 - 0.0667)
    flat = TouTariff((TouPeriod("flat", 0, 1440, Decimal("0.60")),))
    result = settle_intervals(edges, it, facility, tariff=flat, emission_factor=SOURCE_FACTOR)
    assert result.saved_kwh == Decimal("66.700")
    assert result.bonus == Decimal("4.00")
    assert result.savings_value == Decimal("40.02")


def test_time_of_use_values_energy_at_its_price() -> None:
    # One day of hours on Beijing time: valley 22:00-08:00 at 0.30, peak
    # 08:00-22:00 at 1.00. IT 1,000 kWh every hour; facility 1,100 kWh in
    # valley hours (10) and 1,200 kWh in peak hours (14).
    # IT 24,000; facility 27,800; saved = 1.30 x 24,000 - 27,800 = 3,400 kWh.
    # Valued per hour: 10 x 200 x 0.30 + 14 x 100 x 1.00 = 600 + 1,400 = 2,000.
    start = datetime_ns(datetime(2022, 6, 1, tzinfo=BEIJING))
    edges = start + np.arange(25, dtype=np.int64) * 3600 * NS_PER_S
    hour = np.arange(24)
    peak = (hour >= 8) & (hour < 22)
    tariff = TouTariff(
        (
            TouPeriod("valley", 22 * 60, 8 * 60, Decimal("0.30")),
            TouPeriod("peak", 8 * 60, 22 * 60, Decimal("1.00")),
        )
    )
    result = settle_intervals(
        edges, np.full(24, 1000.0), np.where(peak, 1200.0, 1100.0), tariff=tariff, emission_factor=SOURCE_FACTOR
    )
    assert result.pue == Decimal("1.1583")
    assert result.saved_kwh == Decimal("3400.000")
    assert result.savings_value == Decimal("2000.00")
    assert result.bonus == Decimal("200.00")


def test_time_of_use_penalty_and_seasonal_periods() -> None:
    start = datetime_ns(datetime(2022, 7, 1, tzinfo=BEIJING))
    edges = start + np.arange(3, dtype=np.int64) * 12 * 3600 * NS_PER_S
    tariff = TouTariff(
        (
            TouPeriod("summer morning", 0, 12 * 60, Decimal("0.80"), months=frozenset({7, 8})),
            TouPeriod("rest", 0, 1440, Decimal("0.50")),
        )
    )
    # Excess 100 kWh in the morning (at 0.80) and 50 kWh in the afternoon (at 0.50).
    result = settle_intervals(edges, [1000.0, 1000.0], [1500.0, 1450.0], tariff=tariff, emission_factor=SOURCE_FACTOR)
    assert result.excess_kwh == Decimal("150.000")
    assert result.penalty == Decimal("10.50")  # 10 % of (80 + 25)


def test_single_price_table_matches_the_flat_tariff() -> None:
    edges = datetime_ns(datetime(2022, 1, 1, tzinfo=UTC)) + np.arange(13, dtype=np.int64) * 730 * 3600 * NS_PER_S
    it = np.full(12, IT_2022_KWH / 12)
    facility = it * 1.15
    flat = TouTariff((TouPeriod("flat", 0, 1440, Decimal("0.60")),))
    by_interval = settle_intervals(
        edges, it, facility, tariff=flat, emission_factor=SOURCE_FACTOR, capacity_kw=CAPACITY_KW
    )
    direct = settle(
        IT_2022_KWH,
        115_000_000,
        tariff_per_kwh="0.60",
        emission_factor=SOURCE_FACTOR,
        period_h=8760,
        capacity_kw=CAPACITY_KW,
    )
    assert by_interval == direct


def test_tariff_must_cover_every_interval_and_energy_must_be_complete() -> None:
    edges = datetime_ns(datetime(2022, 1, 1, tzinfo=BEIJING)) + np.arange(3, dtype=np.int64) * 3600 * NS_PER_S
    night = TouTariff((TouPeriod("night", 0, 60, Decimal("0.30")),))
    with pytest.raises(ValueError, match="no tariff period"):
        settle_intervals(edges, [1.0, 1.0], [1.0, 1.0], tariff=night, emission_factor=SOURCE_FACTOR)
    whole_day = TouTariff((TouPeriod("flat", 0, 1440, Decimal("0.30")),))
    with pytest.raises(ValueError, match="finite"):
        settle_intervals(edges, [1.0, np.nan], [1.0, 1.0], tariff=whole_day, emission_factor=SOURCE_FACTOR)


def test_year_to_date_projects_linearly_to_the_year_end() -> None:
    year_start = datetime_ns(datetime(2022, 1, 1, tzinfo=BEIJING))
    year_end = datetime_ns(datetime(2023, 1, 1, tzinfo=BEIJING))
    half = year_start + (year_end - year_start) // 2
    ytd = settle_year_to_date(
        50_000_000,
        57_500_000,
        year_start_ns=year_start,
        year_end_ns=year_end,
        as_of_ns=half,
        tariff_per_kwh="0.60",
        emission_factor=SOURCE_FACTOR,
        capacity_kw=CAPACITY_KW,
    )
    assert ytd.elapsed_fraction == Decimal("0.5")
    assert ytd.to_date.bonus == Decimal("450000.00")
    assert ytd.projected.pue == ytd.to_date.pue == Decimal("1.1500")
    assert ytd.projected.it_kwh == Decimal(IT_2022_KWH)
    assert ytd.projected.bonus == Decimal("900000.00")
    assert ytd.projected.load_condition_met is True


def test_other_terms_and_currency() -> None:
    terms = ContractTerms(cap=Decimal("1.50"), threshold=Decimal("1.20"), currency="JPY", minor_unit=0)
    result = settle(1_000, 1_100, tariff_per_kwh=25, emission_factor=SOURCE_FACTOR, terms=terms)
    assert result.saved_kwh == Decimal("100.000")
    assert result.bonus == Decimal(250)
    assert result.currency == "JPY"
    with pytest.raises(ValueError, match="threshold <= cap"):
        ContractTerms(cap=Decimal("1.20"), threshold=Decimal("1.30"))
    with pytest.raises(ValueError, match="positive"):
        settle(0, 1, tariff_per_kwh=1, emission_factor=SOURCE_FACTOR)


def test_co2_is_null_without_an_emission_factor() -> None:
    result = settle(IT_2022_KWH, 115_000_000, tariff_per_kwh="0.60")
    assert result.co2_t is None
    assert result.as_json_dict()["co2_t"] is None
    assert result.bonus == Decimal("900000.00")
