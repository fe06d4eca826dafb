"""State timelines, redundancy, the 99.99 % monthly budget, outages and burn-rate alerts."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.analytics.availability import (
    CalendarBasis,
    Cause,
    Load,
    State,
    Timeline,
    _bad_share_on_grid,
    breaker_states,
    combine_dual_feed,
    combine_redundant,
    combine_series,
    evaluate_burn_rates,
    states_from_names,
    summarize,
    timeline_from_samples,
    ups_states,
)
from collector.analytics.energy import NS_PER_S, datetime_ns

JUNE = datetime_ns(datetime(2022, 6, 1, tzinfo=UTC))
JULY = datetime_ns(datetime(2022, 7, 1, tzinfo=UTC))
AUGUST = datetime_ns(datetime(2022, 8, 1, tzinfo=UTC))
STEP_S = 10
S = NS_PER_S


def month_of_ups(start_ns: int, end_ns: int, events: dict[str, tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Output-source names every 10 s; ``events`` maps a name to (offset_s, duration_s)."""
    ts = np.arange(start_ns, end_ns, STEP_S * S, dtype=np.int64)
    source = np.full(ts.size, "normal", dtype=object)
    for name, (offset_s, duration_s) in events.items():
        first = offset_s // STEP_S
        source[first : first + duration_s // STEP_S] = name
    return ts, source


def ups_timeline(name: str, ts: np.ndarray, source: np.ndarray, end_ns: int, **alarms: np.ndarray) -> Timeline:
    state, cause = ups_states(source, alarms or None)
    return timeline_from_samples(name, ts, state, cause, max_gap_s=30, end_ns=end_ns)


def step(name: str, points: list[tuple[int, State]], end_ns: int) -> Timeline:
    """Timeline from (offset_s from JUNE, state) change points."""
    start = np.array([JUNE + t * S for t, _ in points], dtype=np.int64)
    state = np.array([s for _, s in points], dtype=np.int8)
    cause = np.where(state == State.DOWN, Cause.BREAKER_TRIP, Cause.NONE).astype(np.int8)
    return Timeline(name, start, state, cause, end_ns)


def test_no_data_gap_is_unknown_after_the_staleness_limit() -> None:
    ts = JUNE + np.array([0, 10, 20, 500, 510], dtype=np.int64) * S
    state, cause = states_from_names(
        ["normal", "normal", "normal", "battery", None],
        {"normal": (State.UP, Cause.NONE), "battery": (State.DEGRADED, Cause.ON_BATTERY)},
    )
    tl = timeline_from_samples("ups", ts, state, cause, max_gap_s=30, end_ns=JUNE + 600 * S)
    assert tl.start_ns.tolist() == [JUNE + t * S for t in (0, 50, 500, 510)]
    assert tl.state.tolist() == [State.UP, State.UNKNOWN, State.DEGRADED, State.UNKNOWN]
    assert tl.cause.tolist() == [Cause.NONE, Cause.NO_DATA, Cause.ON_BATTERY, Cause.NO_DATA]


@pytest.mark.parametrize(
    ("down_s", "basis", "met"),
    [
        # 4 min 20 s in a 30-day month: within the 4.38 min of the 30.44-day
        # average month (the "under 4.4 minutes" of the source contract)...
        (260, CalendarBasis.AVERAGE_MONTH, True),
        # ...but not within 4.32 min when the month itself is the basis.
        (260, CalendarBasis.DAYS_30, False),
        (260, CalendarBasis.ACTUAL, False),
        (259.2, CalendarBasis.DAYS_30, True),  # exactly the budget is still 99.99 %
        (280, CalendarBasis.AVERAGE_MONTH, False),
        (280, CalendarBasis.DAYS_30, False),
    ],
)
def test_thirty_day_month_against_the_9999_budget(down_s: float, basis: CalendarBasis, met: bool) -> None:
    down_ns = round(down_s * S)
    offset = 10 * 86_400 * S
    tl = Timeline(
        "bus",
        np.array([JUNE, JUNE + offset, JUNE + offset + down_ns]),
        np.array([State.UP, State.DOWN, State.UP], dtype=np.int8),
        np.array([Cause.NONE, Cause.OUTPUT_SOURCE_NONE, Cause.NONE], dtype=np.int8),
        JULY,
    )
    (month,) = summarize(tl, [JUNE, JULY], basis=basis)
    period_s = {CalendarBasis.AVERAGE_MONTH: 30.44 * 86_400}.get(basis, 30 * 86_400)
    assert month.down_s == pytest.approx(down_s)
    assert month.down_min == pytest.approx(down_s / 60)
    assert month.period_s == pytest.approx(period_s)
    assert month.allowed_down_s == pytest.approx(period_s * 1e-4)
    assert month.remaining_budget_s == pytest.approx(period_s * 1e-4 - down_s)
    assert month.availability == pytest.approx(1 - down_s / period_s)
    assert month.met is met


def test_thirty_one_day_month_on_its_actual_length_allows_446_minutes() -> None:
    tl = Timeline(
        "bus",
        np.array([JULY, JULY + 100 * S, JULY + 360 * S]),
        np.array([State.UP, State.DOWN, State.UP], dtype=np.int8),
        np.zeros(3, dtype=np.int8),
        AUGUST,
    )
    (month,) = summarize(tl, [JULY, AUGUST], basis=CalendarBasis.ACTUAL)
    assert month.allowed_down_s == pytest.approx(267.84)  # 4.464 min
    assert month.met is True


def test_ups_status_samples_to_a_month_summary() -> None:
    ts, source = month_of_ups(
        JUNE, JULY, {"none": (86_400, 260), "battery": (2 * 86_400, 1800), "bypass": (3 * 86_400, 600)}
    )
    (month,) = summarize(ups_timeline("ups-a1", ts, source, JULY), [JUNE, JULY])
    assert month.down_s == 260.0
    # On battery and on bypass the load still has power: degraded, not down.
    assert month.degraded_s == 2400.0
    assert month.unknown_s == 0.0
    assert month.up_s == 30 * 86_400 - 260 - 2400
    assert month.met is True
    (outage,) = month.outages
    assert outage.start_ns == JUNE + 86_400 * S
    assert outage.duration_s == 260.0
    assert outage.causes == ("output_source_none",)
    assert outage.devices == ("ups-a1",)
    assert outage.load_share == 1.0


def test_on_battery_alone_is_degraded_and_costs_no_budget() -> None:
    ts, source = month_of_ups(JUNE, JULY, {"battery": (5 * 86_400, 3600)})
    (month,) = summarize(ups_timeline("ups", ts, source, JULY), [JUNE, JULY])
    assert (month.down_s, month.degraded_s, month.degraded_min) == (0.0, 3600.0, 60.0)
    assert month.availability == 1.0
    assert month.remaining_budget_s == pytest.approx(month.allowed_down_s)
    assert month.outages == ()


def test_down_alarm_overrides_the_output_source() -> None:
    ts, source = month_of_ups(JUNE, JULY, {})
    output_off = np.zeros(ts.size)
    output_off[1000:1006] = 1.0  # 60 s with upsOutputOff while the source says normal
    output_off[2000] = np.nan  # an alarm not read is not an alarm
    (month,) = summarize(ups_timeline("ups", ts, source, JULY, upsOutputOff=output_off), [JUNE, JULY])
    assert month.down_s == 60.0
    assert month.outages[0].causes == ("output_off",)


def test_unknown_is_never_counted_as_up() -> None:
    ts, source = month_of_ups(JUNE, JULY, {})
    hole = (ts >= JUNE + 86_400 * S) & (ts < JUNE + 86_400 * S + 7200 * S)
    source[(ts >= JUNE + 2 * 86_400 * S) & (ts < JUNE + 2 * 86_400 * S + 600 * S)] = None  # failed reads
    (month,) = summarize(ups_timeline("ups", ts[~hole], source[~hole], JULY), [JUNE, JULY])
    # The last sample before the hole stays valid for 30 s, i.e. 20 s past its
    # 10 s period; failed reads are unknown from the first one.
    assert month.unknown_s == pytest.approx(7200 - 20 + 600)
    assert month.up_s == pytest.approx(30 * 86_400 - month.unknown_s)
    assert month.down_s == 0.0
    # Unknown time larger than the budget: the month cannot be declared met.
    assert month.met is None
    assert month.availability == 1.0
    assert month.availability_if_unknown_down < 0.9999


def test_month_without_any_data_is_all_unknown_and_not_met() -> None:
    empty = timeline_from_samples("ups", [], [], max_gap_s=30, end_ns=JULY)
    (month,) = summarize(empty, [JUNE, JULY])
    assert month.unknown_s == 30 * 86_400
    assert month.up_s == 0.0
    assert month.met is None


def test_series_path_takes_the_worst_state() -> None:
    ups = step("ups", [(0, State.UP), (100, State.DEGRADED), (200, State.UP)], JUNE + 1000 * S)
    pdu = step("pdu", [(0, State.UP), (150, State.DOWN), (160, State.UP)], JUNE + 1000 * S)
    path = combine_series("rack-1", [ups, pdu])
    assert path.start_ns.tolist() == [JUNE + t * S for t in (0, 100, 150, 160, 200)]
    assert path.state.tolist() == [State.UP, State.DEGRADED, State.DOWN, State.DEGRADED, State.UP]


def test_n_plus_one_group_loses_redundancy_then_goes_down() -> None:
    end = JUNE + 1000 * S
    a = step("ups-a", [(0, State.UP), (100, State.DOWN)], end)
    b = step("ups-b", [(0, State.UP), (200, State.DOWN), (300, State.UP)], end)
    c = step("ups-c", [(0, State.UP)], end)
    group = combine_redundant("ups-group", [a, b, c], needed=2)
    assert group.state.tolist() == [State.UP, State.REDUNDANCY_LOST, State.DOWN, State.REDUNDANCY_LOST]
    (summary,) = summarize(group, [JUNE, end])
    assert summary.redundancy_lost_s == 100 + 700
    assert summary.down_s == 100
    assert summary.outages[0].causes == ("breaker_trip",)


def test_dual_feed_one_side_is_redundancy_lost_both_is_down() -> None:
    end = JUNE + 1000 * S
    feed_a = timeline_from_samples(
        "pdu-a",
        JUNE + np.arange(0, 1000, 10) * S,
        *breaker_states(np.isin(np.arange(100), np.arange(10, 40))),
        max_gap_s=30,
        end_ns=end,
    )
    feed_b = timeline_from_samples(
        "pdu-b",
        JUNE + np.arange(0, 1000, 10) * S,
        *breaker_states(np.isin(np.arange(100), np.arange(30, 50))),
        max_gap_s=30,
        end_ns=end,
    )
    rack = combine_dual_feed("rack-7", feed_a, feed_b)
    (summary,) = summarize([Load(rack, devices=(feed_a, feed_b))], [JUNE, end])
    assert summary.redundancy_lost_s == 200 + 100  # A alone 100-300 s, B alone 400-500 s
    assert summary.down_s == 100  # both 300-400 s
    assert summary.outages[0].devices == ("pdu-a", "pdu-b")


def test_member_without_data_provides_no_redundancy() -> None:
    end = JUNE + 100 * S
    a = step("feed-a", [(0, State.UP)], end)
    b = step("feed-b", [(0, State.UNKNOWN)], end)
    assert combine_dual_feed("rack", a, b).state.tolist() == [State.REDUNDANCY_LOST]
    down = step("feed-a", [(0, State.DOWN)], end)
    assert combine_dual_feed("rack", down, b).state.tolist() == [State.UNKNOWN]


def test_breaker_trip_on_a_single_corded_rack_is_weighted_by_its_load() -> None:
    racks = [step(f"rack-{i}", [(0, State.UP)], JULY) for i in range(3)]
    tripped = step("rack-3", [(0, State.UP), (1000, State.DOWN), (1400, State.UP)], JULY)
    loads = [Load(tl, weight=8.8) for tl in [*racks, tripped]]
    (month,) = summarize(loads, [JUNE, JULY], basis=CalendarBasis.DAYS_30)
    assert month.down_s == pytest.approx(100.0)  # 400 s on a quarter of the load
    assert month.availability == pytest.approx(1 - 100 / (30 * 86_400))
    (outage,) = month.outages
    assert (outage.load, outage.load_share, outage.duration_s) == ("rack-3", 0.25, 400.0)


def test_outage_across_a_month_boundary_is_split() -> None:
    tl = Timeline(
        "bus",
        np.array([JUNE, JULY - 100 * S, JULY + 50 * S]),
        np.array([State.UP, State.DOWN, State.UP], dtype=np.int8),
        np.array([Cause.NONE, Cause.OUTPUT_SOURCE_NONE, Cause.NONE], dtype=np.int8),
        AUGUST,
    )
    june, july = summarize(tl, [JUNE, JULY, AUGUST])
    assert (june.down_s, july.down_s) == (100.0, 50.0)
    assert june.outages[0].end_ns == JULY
    assert july.outages[0].start_ns == JULY


def outage_from(t0_ns: int, duration_s: float, end_ns: int) -> Timeline:
    return Timeline(
        "bus",
        np.array([t0_ns - 86_400 * 4 * S, t0_ns, t0_ns + round(duration_s * S)]),
        np.array([State.UP, State.DOWN, State.UP], dtype=np.int8),
        np.zeros(3, dtype=np.int8),
        end_ns,
    )


def test_fast_burn_pages_within_the_short_window() -> None:
    t0 = JUNE + 10 * 86_400 * S
    tl = outage_from(t0, 600, t0 + 86_400 * S)
    # 1 h window at 14.4 x budget is 5.184 s of down: 5 s is not enough, 6 s is.
    at = t0 + np.array([5, 6, 300], dtype=np.int64) * S
    page_1h, page_6h, ticket = evaluate_burn_rates(tl, at)
    assert page_1h.firing.tolist() == [False, True, True]
    assert page_1h.long_burn[1] == pytest.approx(6 / 3600 / 1e-4)
    assert page_1h.short_burn[1] == pytest.approx(6 / 300 / 1e-4)
    assert page_6h.firing.tolist() == [False, False, True]  # needs 12.96 s in 6 h
    assert ticket.firing.tolist() == [False, False, True]  # needs 25.92 s in 3 d (and 2.16 s in 6 h)


def test_page_stops_once_the_short_window_is_clean() -> None:
    t0 = JUNE + 10 * 86_400 * S
    tl = outage_from(t0, 60, t0 + 86_400 * S)
    at = t0 + np.array([60 + 299, 60 + 301], dtype=np.int64) * S
    page_1h = evaluate_burn_rates(tl, at)[0]
    assert page_1h.long_burn[1] > 14.4  # the hour still holds 60 s of down
    assert page_1h.firing.tolist() == [True, False]


def test_single_short_blip_fires_nothing() -> None:
    t0 = JUNE + 10 * 86_400 * S
    tl = outage_from(t0, 3, t0 + 4 * 86_400 * S)
    # Every second around the blip, every minute for the three days after it.
    offsets_s = np.concatenate([np.arange(-600, 7200), np.arange(7200, 4 * 86_400, 60)]).astype(np.int64)
    at = t0 + offsets_s * S
    for evaluation in evaluate_burn_rates(tl, at):
        assert not evaluation.firing.any(), evaluation.alert
    assert evaluate_burn_rates(tl, at)[0].short_burn.max() > 14.4  # only the short window burns


def test_unknown_time_burns_budget_only_when_asked() -> None:
    t0 = JUNE + 10 * 86_400 * S
    tl = Timeline(
        "bus",
        np.array([t0 - 86_400 * S, t0, t0 + 600 * S]),
        np.array([State.UP, State.UNKNOWN, State.UP], dtype=np.int8),
        np.zeros(3, dtype=np.int8),
        t0 + 86_400 * S,
    )
    at = [t0 + 300 * S]
    assert not evaluate_burn_rates(tl, at)[0].firing[0]
    assert evaluate_burn_rates(tl, at, count_unknown=True)[0].firing[0]


def test_burn_rate_is_weighted_by_load_share() -> None:
    t0 = JUNE + 10 * 86_400 * S
    end = t0 + 86_400 * S
    healthy = [step(f"rack-{i}", [(0, State.UP)], end) for i in range(3)]
    loads = [Load(tl) for tl in [*healthy, outage_from(t0, 600, end)]]
    page_1h = evaluate_burn_rates(loads, [t0 + 20 * S, t0 + 60 * S])[0]
    # A quarter of the load down for 20 s is 5 s of budget in the hour: below 5.184 s.
    assert page_1h.long_burn == pytest.approx([0.25 * 20 / 3600 / 1e-4, 0.25 * 60 / 3600 / 1e-4])
    assert page_1h.firing.tolist() == [False, True]


def test_year_basis_allows_5256_minutes() -> None:
    year_start = datetime_ns(datetime(2022, 1, 1, tzinfo=UTC))
    year_end = datetime_ns(datetime(2023, 1, 1, tzinfo=UTC))
    tl = Timeline("bus", np.array([year_start]), np.zeros(1, dtype=np.int8), np.zeros(1, dtype=np.int8), year_end)
    (year,) = summarize(tl, [year_start, year_end], basis=CalendarBasis.YEAR_365, target=0.9999)
    assert year.allowed_down_s == pytest.approx(52.56 * 60)
    assert year.met is True


# ---------------------------------------------------------------- burn-rate shares, checked against at()


@settings(max_examples=200, deadline=None)
@given(
    specs=st.lists(
        st.tuples(
            st.integers(0, 50),  # first start
            st.lists(st.tuples(st.integers(1, 20), st.sampled_from(list(State))), min_size=0, max_size=8),
            st.integers(1, 30),  # last segment length
            st.floats(0.01, 5.0),  # share
        ),
        min_size=1,
        max_size=5,
    ),
    count_unknown=st.booleans(),
)
def test_bad_share_matches_evaluating_each_timeline_on_the_grid(
    specs: list[tuple[int, list[tuple[int, State]], int, float]], count_unknown: bool
) -> None:
    timelines, shares = [], []
    for k, (first, segments, tail, share) in enumerate(specs):
        starts, states, t = [], [], first
        for length, state in segments:
            starts.append(t)
            states.append(int(state))
            t += length
        end = t + tail if segments else first + tail
        codes = np.array(states, dtype=np.int8)
        timelines.append(Timeline(f"t{k}", np.array(starts, dtype=np.int64), codes, np.zeros_like(codes), end))
        shares.append(share)
    grid = np.unique(np.concatenate([tl.start_ns for tl in timelines] + [np.array([tl.end_ns for tl in timelines])]))
    bad = [State.DOWN, State.UNKNOWN] if count_unknown else [State.DOWN]
    want = np.zeros(grid.size)
    for tl, share in zip(timelines, shares, strict=True):
        at_grid, _ = tl.at(grid)
        want += share * np.isin(at_grid, bad)
    got = _bad_share_on_grid(grid, timelines, shares, count_unknown=count_unknown)
    np.testing.assert_allclose(got, want, atol=1e-9)
