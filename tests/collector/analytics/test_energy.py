"""Interval energy from counters (resets, Counter32 wraps) and from power (gaps, coverage)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.analytics.energy import (
    NS_PER_S,
    calendar_edges_ns,
    counter_energy,
    counter_energy_binned,
    datetime_ns,
    integrate_power,
    integrate_power_binned,
)

T0 = datetime_ns(datetime(2022, 6, 1, tzinfo=UTC))
MIN = 60 * NS_PER_S
COUNTER32_0P1_KWH = 2**32 * 0.1  # rPDU2 device energy: Counter32 in 0.1 kWh


def minutes(n: int) -> np.ndarray:
    return T0 + np.arange(n, dtype=np.int64) * MIN


def test_counter_sums_increments_over_the_interval() -> None:
    result = counter_energy(minutes(5), [100.0, 110.0, 125.0, 125.0, 130.0], T0, T0 + 4 * MIN)
    assert result.energy_kwh == pytest.approx(30.0)
    assert result.coverage == 1.0
    assert (result.resets, result.wraps) == (0, 0)


def test_counter_reset_starts_a_new_run_and_loses_only_that_pair() -> None:
    # 100 -> 120 (20), reset to 5 (nothing: the pair is not covered), 5 -> 15 (10).
    result = counter_energy(minutes(5), [100.0, 110.0, 120.0, 5.0, 15.0], T0, T0 + 4 * MIN)
    assert result.energy_kwh == pytest.approx(30.0)
    assert result.resets == 1
    assert result.coverage == pytest.approx(0.75)


def test_counter_replaced_by_meter_with_higher_reading_is_not_negative() -> None:
    # A replacement meter that starts lower is a reset; the new reading is not energy.
    result = counter_energy(minutes(4), [5000.0, 5002.0, 12.0, 13.0], T0, T0 + 3 * MIN)
    assert result.energy_kwh == pytest.approx(3.0)
    assert result.resets == 1


def test_counter32_wrap_counts_the_wrapped_increment() -> None:
    wrap = COUNTER32_0P1_KWH
    values = [wrap - 1.0, wrap - 0.5, 0.4, 1.4]  # 0.5, then 0.5 + 0.4 across the wrap, then 1.0
    result = counter_energy(minutes(4), values, T0, T0 + 3 * MIN, wrap=wrap)
    assert result.energy_kwh == pytest.approx(2.4, abs=1e-6)
    assert (result.wraps, result.resets) == (1, 0)
    assert result.coverage == 1.0


def test_counter32_wrap_without_modulus_is_a_reset() -> None:
    wrap = COUNTER32_0P1_KWH
    result = counter_energy(minutes(4), [wrap - 1.0, wrap - 0.5, 0.4, 1.4], T0, T0 + 3 * MIN)
    assert result.energy_kwh == pytest.approx(1.5, abs=1e-6)
    assert (result.wraps, result.resets) == (0, 1)


def test_user_reset_is_not_taken_for_a_wrap() -> None:
    # Going forward round the modulus from 1001 to 0 is nearly the whole
    # range: that is a reset, never 429 million kWh.
    result = counter_energy(minutes(4), [1000.0, 1001.0, 0.0, 1.0], T0, T0 + 3 * MIN, wrap=COUNTER32_0P1_KWH)
    assert result.energy_kwh == pytest.approx(2.0)
    assert (result.wraps, result.resets) == (0, 1)


def test_max_power_rejects_a_glitch() -> None:
    values = [10.0, 11.0, 1.0e6, 12.0]
    assert counter_energy(minutes(4), values, T0, T0 + 3 * MIN).energy_kwh == pytest.approx(999_990.0)
    # 100 kW allows 1.67 kWh a minute: the jump is discarded, the fall back is a reset.
    # (An event is counted in the interval holding the sample that shows it:
    # the last sample is at T0 + 3 min, so look at the four minutes from T0.)
    guarded = counter_energy(minutes(4), values, T0, T0 + 4 * MIN, max_power_kw=100.0)
    assert guarded.energy_kwh == pytest.approx(1.0)
    assert guarded.resets == 2
    assert guarded.coverage == pytest.approx(0.25)


def test_counter_nan_is_skipped_not_zero() -> None:
    result = counter_energy(minutes(4), [0.0, 1.0, np.nan, 3.0], T0, T0 + 3 * MIN)
    assert result.energy_kwh == pytest.approx(3.0)
    assert result.coverage == 1.0


def test_counter_pair_is_apportioned_across_bins_at_constant_power() -> None:
    ts = [T0, T0 + 60 * MIN]
    binned = counter_energy_binned(ts, [0.0, 60.0], [T0, T0 + 15 * MIN, T0 + 60 * MIN])
    assert binned.energy_kwh == pytest.approx([15.0, 45.0])
    assert binned.coverage == pytest.approx([1.0, 1.0])


def test_counter_events_are_counted_in_the_bin_where_seen() -> None:
    values = [0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 3.0]
    binned = counter_energy_binned(minutes(7), values, [T0, T0 + 2 * MIN, T0 + 6 * MIN])
    assert binned.resets.tolist() == [0, 1]
    assert binned.energy_kwh == pytest.approx([2.0, 3.0])
    assert binned.coverage == pytest.approx([1.0, 0.75])


def test_time_outside_the_samples_is_not_covered() -> None:
    # Samples only from minute 30 of a 60-minute interval.
    result = counter_energy(minutes(61)[30:], np.arange(31.0), T0, T0 + 60 * MIN)
    assert result.energy_kwh == pytest.approx(30.0)
    assert result.coverage == pytest.approx(0.5)


def test_no_samples_give_zero_energy_and_zero_coverage() -> None:
    result = counter_energy([], [], T0, T0 + MIN)
    assert (result.energy_kwh, result.coverage) == (0.0, 0.0)


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.floats(min_value=-50.0, max_value=50.0), min_size=2, max_size=60),
    cuts=st.lists(st.integers(min_value=1, max_value=59 * 60), min_size=1, max_size=6, unique=True),
)
def test_counter_bins_are_never_negative_and_add_up(steps: list[float], cuts: list[int]) -> None:
    values = np.cumsum(steps) + 100.0  # negative steps make resets
    ts = minutes(len(values))
    end = T0 + 60 * MIN
    edges = np.array([T0, *sorted(T0 + c * NS_PER_S for c in cuts), end], dtype=np.int64)
    binned = counter_energy_binned(ts, values, edges)
    whole = counter_energy(ts, values, T0, end)
    assert np.all(binned.energy_kwh >= 0.0)
    assert binned.energy_kwh.sum() == pytest.approx(whole.energy_kwh, abs=1e-9)
    widths = np.diff(edges) / (end - T0)
    assert float(np.dot(binned.coverage, widths)) == pytest.approx(whole.coverage)
    assert int(binned.resets.sum()) == whole.resets


def test_trapezoid_of_a_ramp_and_its_exact_split() -> None:
    ts = [T0, T0 + 60 * MIN]
    assert integrate_power(ts, [0.0, 60.0], T0, T0 + 60 * MIN, max_gap_s=3600).energy_kwh == pytest.approx(30.0)
    # Power is linear inside the pair: the first half hour holds a quarter of it.
    binned = integrate_power_binned(ts, [0.0, 60.0], [T0, T0 + 30 * MIN, T0 + 60 * MIN], max_gap_s=3600)
    assert binned.energy_kwh == pytest.approx([7.5, 22.5])


def test_power_gap_longer_than_limit_is_not_bridged() -> None:
    ts = minutes(61)
    power = np.full(61, 120.0)
    keep = (np.arange(61) < 20) | (np.arange(61) >= 30)  # minutes 20..29 missing
    # The pair 19 -> 30 spans 11 minutes: 49 of 60 minutes are measured.
    result = integrate_power(ts[keep], power[keep], T0, T0 + 60 * MIN, max_gap_s=120)
    assert result.energy_kwh == pytest.approx(120.0 * 49 / 60)
    assert result.coverage == pytest.approx(49 / 60)
    assert result.gaps == 1
    # The same hole as NaN reads gives the same answer.
    with_nan = integrate_power(ts, np.where(keep, power, np.nan), T0, T0 + 60 * MIN, max_gap_s=120)
    assert with_nan == result


def test_power_gap_within_limit_is_bridged() -> None:
    power = np.full(61, 120.0)
    power[30] = np.nan
    result = integrate_power(minutes(61), power, T0, T0 + 60 * MIN, max_gap_s=150)
    assert result.energy_kwh == pytest.approx(120.0)
    assert (result.coverage, result.gaps) == (1.0, 0)


def test_power_gap_spanning_a_bin_boundary_leaves_both_bins_short() -> None:
    # Every 10 minutes, except that nothing comes between minutes 50 and 70.
    ts = T0 + np.array([0, 10, 20, 30, 40, 50, 70, 80, 90, 100, 110, 120]) * MIN
    binned = integrate_power_binned(ts, [60.0] * ts.size, [T0, T0 + 60 * MIN, T0 + 120 * MIN], max_gap_s=900)
    assert binned.energy_kwh == pytest.approx([50.0, 50.0])
    assert binned.coverage == pytest.approx([50 / 60, 50 / 60])
    assert binned.gaps.tolist() == [0, 1]


def test_invalid_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="non-decreasing"):
        counter_energy([T0 + MIN, T0], [1.0, 2.0], T0, T0 + MIN)
    with pytest.raises(ValueError, match="same length"):
        counter_energy([T0], [1.0, 2.0], T0, T0 + MIN)
    with pytest.raises(ValueError, match="strictly increasing"):
        counter_energy_binned([T0], [1.0], [T0, T0])
    with pytest.raises(ValueError, match="max_gap_s"):
        integrate_power([T0], [1.0], T0, T0 + MIN, max_gap_s=0)


def test_calendar_edges_follow_the_site_time_zone() -> None:
    beijing = timezone(timedelta(hours=8))
    months = calendar_edges_ns(date(2022, 1, 1), date(2023, 1, 1), unit="month", tz=beijing)
    assert months.size == 13
    assert months[0] == datetime_ns(datetime(2021, 12, 31, 16, tzinfo=UTC))
    assert np.diff(months)[1] == 28 * 86_400 * NS_PER_S  # February 2022
    days = calendar_edges_ns(date(2022, 1, 1), date(2023, 1, 1), unit="day", tz=beijing)
    assert days.size == 366
    years = calendar_edges_ns(date(2022, 1, 1), date(2023, 1, 1), unit="year", tz=beijing)
    assert years.tolist() == [months[0], months[-1]]
    with pytest.raises(ValueError, match="aligned"):
        calendar_edges_ns(date(2022, 1, 2), date(2022, 3, 1), unit="month")
