"""PUE per category, completeness, partial PUE, CUE, and annual PUE as a ratio of sums."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import numpy as np
import pytest

from collector.analytics.energy import (
    NS_PER_S,
    calendar_edges_ns,
    counter_energy_binned,
    datetime_ns,
    integrate_power_binned,
)
from collector.analytics.pue import (
    Category,
    EmissionFactor,
    MeterEnergy,
    MeterTable,
    Role,
    compute_pue,
    live_pue_kw,
    peak_demand_pue,
    pue_report,
    pue_series,
)

START = datetime_ns(datetime(2022, 1, 1, tzinfo=UTC))
END = datetime_ns(datetime(2022, 2, 1, tzinfo=UTC))
CHINA_2022 = EmissionFactor(Decimal("0.5366"), "China national grid 2022")


def feeds(a_kwh: float = 600.0, b_kwh: float = 550.0, b_coverage: float = 1.0) -> list[MeterEnergy]:
    return [
        MeterEnergy("feed-a", Role.FACILITY, a_kwh, 1.0),
        MeterEnergy("feed-b", Role.FACILITY, b_kwh, b_coverage),
    ]


def test_pue_is_summed_facility_over_summed_it_energy() -> None:
    meters = [
        *feeds(),
        MeterEnergy("ups-1", Role.IT_UPS_OUTPUT, 400.0, 1.0),
        MeterEnergy("ups-2", Role.IT_UPS_OUTPUT, 600.0, 1.0),
    ]
    result = compute_pue(meters, START, END)
    assert result.pue == pytest.approx(1.15)
    assert result.dcie_pct == pytest.approx(100 / 1.15)
    assert result.category == Category.BASIC
    assert (result.start_ns, result.end_ns) == (START, END)
    assert (result.facility_kwh, result.it_kwh) == (1150.0, 1000.0)
    assert result.complete
    assert result.coverage == 1.0


@pytest.mark.parametrize(
    ("category", "expected"),
    [
        (Category.BASIC, 1150 / 1000),
        (Category.INTERMEDIATE, 1150 / 980),
        (Category.ADVANCED, 1150 / 950),
        (None, 1150 / 950),  # the most detailed category available
    ],
)
def test_each_category_uses_its_own_it_metering_point(category: Category | None, expected: float) -> None:
    meters = [
        *feeds(),
        MeterEnergy("ups-out", Role.IT_UPS_OUTPUT, 1000.0, 1.0),
        MeterEnergy("pdu-out", Role.IT_PDU_OUTPUT, 980.0, 1.0),
        MeterEnergy("it-in", Role.IT_INPUT, 950.0, 1.0),
    ]
    result = compute_pue(meters, START, END, category=category)
    assert result.pue == pytest.approx(expected)
    assert result.category == (category or Category.ADVANCED)


def test_category_without_its_meters_or_category_zero_is_refused() -> None:
    meters = [*feeds(), MeterEnergy("ups-out", Role.IT_UPS_OUTPUT, 1000.0, 1.0)]
    with pytest.raises(ValueError, match="it_pdu_output"):
        compute_pue(meters, START, END, category=Category.INTERMEDIATE)
    with pytest.raises(ValueError, match="peak demand"):
        compute_pue(meters, START, END, category=Category.PEAK_DEMAND)
    with pytest.raises(ValueError, match="no IT meter"):
        compute_pue(feeds(), START, END)


def test_category_zero_is_a_ratio_of_peak_demand() -> None:
    assert peak_demand_pue(1_430.0, 1_100.0) == pytest.approx(1.3)
    assert peak_demand_pue(1_430.0, 0.0) is None


def test_under_covered_meter_makes_the_period_incomplete() -> None:
    meters = [*feeds(b_kwh=500.0, b_coverage=0.95), MeterEnergy("ups", Role.IT_UPS_OUTPUT, 1000.0, 1.0)]
    result = compute_pue(meters, START, END)
    assert not result.complete
    assert result.pue is None
    assert result.dcie_pct is None
    assert result.pue_measured == pytest.approx(1.1)  # what was measured, for diagnosis only
    assert result.coverage == 0.95
    assert result.incomplete_meters == ("feed-b",)
    # The minimum is a setting.
    assert compute_pue(meters, START, END, min_coverage=0.9).complete


def test_meter_without_data_makes_the_period_incomplete() -> None:
    meters = [*feeds(b_kwh=0.0, b_coverage=0.0), MeterEnergy("ups", Role.IT_UPS_OUTPUT, 1000.0, 1.0)]
    result = compute_pue(meters, START, END)
    assert not result.complete
    assert result.pue is None
    assert result.coverage == 0.0
    unknown = [*feeds(b_kwh=float("nan"), b_coverage=float("nan")), MeterEnergy("ups", Role.IT_UPS_OUTPUT, 1000.0, 1.0)]
    assert not compute_pue(unknown, START, END).complete


def test_partial_pue_and_cue() -> None:
    meters = [
        *feeds(),
        MeterEnergy("ups", Role.IT_UPS_OUTPUT, 1000.0, 1.0),
        MeterEnergy("chillers", Role.COOLING, 80.0, 1.0),
        MeterEnergy("towers", Role.COOLING, 20.0, 1.0),
        MeterEnergy("ups-losses", Role.POWER_CHAIN, 30.0, 0.5),
    ]
    result = compute_pue(meters, START, END, emission_factor=CHINA_2022)
    assert result.ppue_cooling == pytest.approx(1.1)  # (1000 + 100) / 1000
    assert result.ppue_power_chain is None  # its sub-meter covers half the period
    assert result.cue_kg_per_kwh == pytest.approx(0.5366 * 1.15)
    assert result.emission_factor_source == "China national grid 2022"
    assert result.complete  # sub-meters do not decide the PUE itself


def test_annual_pue_is_the_ratio_of_annual_sums_not_the_mean_of_months() -> None:
    # Six winter months at IT 1000 kWh, facility 1100 kWh (PUE 1.1) and six
    # summer months at IT 500 kWh, facility 750 kWh (PUE 1.5).
    # Annual: (6*1100 + 6*750) / (6*1000 + 6*500) = 11100 / 9000 = 1.2333...
    # Mean of the monthly ratios: (1.1 + 1.5) / 2 = 1.3.
    months = calendar_edges_ns(date(2022, 1, 1), date(2023, 1, 1), unit="month")
    summer = np.array([m in {4, 5, 6, 7, 8, 9} for m in range(1, 13)])
    table = MeterTable(
        meter_ids=("feed", "ups"),
        roles=(Role.FACILITY, Role.IT_UPS_OUTPUT),
        edges_ns=months,
        energy_kwh=np.vstack([np.where(summer, 750.0, 1100.0), np.where(summer, 500.0, 1000.0)]),
        coverage=np.ones((2, 12)),
    )
    report = pue_report(table, {"monthly": months, "annual": months[[0, -1]]})
    monthly, annual = report["monthly"], report["annual"]
    assert monthly.pue == pytest.approx(np.where(summer, 1.5, 1.1))
    assert len(annual) == 1
    assert annual.pue[0] == pytest.approx(11100 / 9000)
    assert float(np.mean(monthly.pue)) == pytest.approx(1.3)
    assert abs(annual.pue[0] - np.mean(monthly.pue)) > 0.06


def test_rebin_sums_energy_and_weights_coverage_by_time() -> None:
    days = START + np.arange(4, dtype=np.int64) * 86_400 * NS_PER_S
    table = MeterTable(
        meter_ids=("feed", "ups"),
        roles=(Role.FACILITY, Role.IT_UPS_OUTPUT),
        edges_ns=days,
        energy_kwh=np.array([[110.0, 120.0, 130.0], [100.0, 100.0, 100.0]]),
        coverage=np.array([[1.0, 0.5, 1.0], [1.0, 1.0, 1.0]]),
    )
    coarse = table.rebin(days[[0, 2, 3]])
    assert coarse.energy_kwh.tolist() == [[230.0, 130.0], [200.0, 100.0]]
    assert coarse.coverage[0] == pytest.approx([0.75, 1.0])
    series = pue_series(coarse)
    assert series.complete.tolist() == [False, True]
    assert np.isnan(series.pue[0])
    assert series.pue_measured[0] == pytest.approx(1.15)
    assert series.pue[1] == pytest.approx(1.3)
    assert series.incomplete_meters == (("feed",), ())
    with pytest.raises(ValueError, match="subset"):
        table.rebin([days[0], days[1] + 1])


def test_daily_pue_from_meter_series_with_a_gap() -> None:
    # Two days of one-minute data: a facility counter and IT power that stops
    # for three hours on day two.
    minute = 60 * NS_PER_S
    ts = START + np.arange(2 * 1440 + 1, dtype=np.int64) * minute
    facility_counter = np.arange(ts.size) * 1.2 * 1000 / 60  # 1,200 kW
    it_power = np.full(ts.size, 1000.0)
    it_power[1440 + 600 : 1440 + 780] = np.nan
    days = START + np.arange(3, dtype=np.int64) * 86_400 * NS_PER_S
    table = MeterTable.from_binned(
        [
            ("feed", Role.FACILITY, counter_energy_binned(ts, facility_counter, days)),
            ("pdus", Role.IT_PDU_OUTPUT, integrate_power_binned(ts, it_power, days, max_gap_s=120)),
        ]
    )
    series = pue_series(table)
    assert series.category == Category.INTERMEDIATE
    assert series.pue[0] == pytest.approx(1.2)
    assert np.isnan(series.pue[1])
    assert series.coverage[1] == pytest.approx((1440 - 181) / 1440)
    day2 = series.period(1)
    assert day2.pue is None
    assert not day2.complete
    assert day2.incomplete_meters == ("pdus",)


def test_live_pue_is_labelled_live() -> None:
    live = live_pue_kw(1_265.0, 1_100.0)
    assert live.label == "live"
    assert live.ratio == pytest.approx(1.15)
    assert live_pue_kw(1_265.0, 0.0).ratio is None
    assert live_pue_kw(float("nan"), 1_100.0).ratio is None
