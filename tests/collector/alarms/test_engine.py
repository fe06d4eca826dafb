"""The evaluation engine: every rule kind, hysteresis, on/off delays, staleness, tables, events."""

from __future__ import annotations

from typing import Any

import pydantic
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from collector.alarms.engine import Engine, Signal, _Ctx, _Device, _Eval, _Source, _ThresholdEval
from collector.alarms.rules import Override, Threshold
from tests.collector.alarms.helpers import SITE, T0, batch, event, rule


def run(engine: Engine, series: list[tuple[float, dict[str, Any]]], **kw: Any) -> list[tuple[float, bool, str]]:
    """Feed batches; (ts, active, subject) of every signal."""
    out: list[tuple[float, bool, str]] = []
    for ts, points in series:
        out += [(s.ts, s.active, s.subject) for s in engine.on_batch(batch(ts, points, **kw))]
    return out


def threshold(**cond: Any) -> Engine:
    spec = {"id": "temp_high", "condition": {"type": "threshold", "point": "temp", **cond}}
    return Engine([rule(spec)])


# ---------------------------------------------------------------- threshold and hysteresis


def test_threshold_raises_above_and_clears_only_past_the_hysteresis() -> None:
    engine = threshold(above=27.0, hysteresis=1.0)
    values = [26.0, 27.0, 27.5, 26.5, 26.1, 25.9, 27.2]
    signals = run(engine, [(T0 + 10 * i, {"temp": v}) for i, v in enumerate(values)])
    # 27.0 is not above 27; 26.5 and 26.1 are inside the 1.0 band; 25.9 clears; 27.2 raises again
    assert signals == [(T0 + 20, True, "temp"), (T0 + 50, False, "temp"), (T0 + 60, True, "temp")]


def test_threshold_band_below_and_above() -> None:
    engine = threshold(above=27.0, below=18.0, hysteresis=0.5)
    values = [20.0, 17.9, 18.3, 18.6, 27.1, 26.4]
    signals = run(engine, [(T0 + 10 * i, {"temp": v}) for i, v in enumerate(values)])
    assert [(ts - T0, active) for ts, active, _ in signals] == [(10, True), (30, False), (40, True), (50, False)]


def test_failed_read_holds_the_state_and_never_reads_as_zero() -> None:
    engine = threshold(below=18.0)
    signals = run(engine, [(T0, {"temp": 21.0}), (T0 + 10, {"temp": "!timeout"}), (T0 + 20, {"temp": 21.0})])
    assert signals == []
    engine = threshold(above=27.0)
    signals = run(engine, [(T0, {"temp": 30.0}), (T0 + 10, {"temp": "!timeout"}), (T0 + 20, {"temp": 30.0})])
    assert signals == [(T0, True, "temp")]


# ---------------------------------------------------------------- delays


def test_single_spike_raises_nothing_with_an_on_delay() -> None:
    engine = Engine(
        [rule({"id": "t", "on_delay_s": 60, "condition": {"type": "threshold", "point": "temp", "above": 27}})]
    )
    spikes = [22, 35, 22, 22, 40, 22, 22]
    assert run(engine, [(T0 + 10 * i, {"temp": v}) for i, v in enumerate(spikes)]) == []
    # Sustained: true from T0+100; raised at the first sample at least 60 s later.
    sustained = [(T0 + 100 + 10 * i, {"temp": 30}) for i in range(8)]
    assert run(engine, sustained) == [(T0 + 160, True, "temp")]


def test_single_dip_does_not_clear_with_an_off_delay() -> None:
    engine = Engine(
        [rule({"id": "t", "off_delay_s": 30, "condition": {"type": "threshold", "point": "temp", "above": 27}})]
    )
    values = [30, 20, 30, 20, 30, 20, 20, 20, 20]
    signals = run(engine, [(T0 + 10 * i, {"temp": v}) for i, v in enumerate(values)])
    # raised at once; dips at 10 and 30 are single; from 50 on it stays low and clears 30 s later
    assert signals == [(T0, True, "temp"), (T0 + 80, False, "temp")]


# ---------------------------------------------------------------- state / enumeration


def test_state_values_not_values_flags_patterns_and_bools() -> None:
    engine = Engine(
        [
            rule({"id": "src", "condition": {"type": "state", "point": "output_source", "values": ["battery"]}}),
            rule({"id": "mode", "condition": {"type": "state", "point": "mode", "not_values": ["auto", "manual"]}}),
            rule({"id": "bits", "condition": {"type": "state", "point": "status", "flags": ["on_battery"]}}),
            rule({"id": "text", "condition": {"type": "state", "point": "descr", "patterns": ["*Bad"]}}),
            rule({"id": "leak", "condition": {"type": "state", "point": "leak", "values": [True]}}),
        ]
    )
    normal = {"output_source": "normal", "mode": "auto", "status": "online", "descr": "ok", "leak": False}
    fault = {
        "output_source": "battery",
        "mode": "local",
        "status": "on_battery,online",
        "descr": "tempBad",
        "leak": True,
    }
    s1 = engine.on_batch(batch(T0, normal))
    s2 = engine.on_batch(batch(T0 + 10, fault))
    s3 = engine.on_batch(batch(T0 + 20, normal))
    assert s1 == []
    assert sorted(s.rule.id for s in s2 if s.active) == ["bits", "leak", "mode", "src", "text"]
    assert sorted(s.rule.id for s in s3 if not s.active) == ["bits", "leak", "mode", "src", "text"]


def test_state_bool_true_does_not_match_number_one() -> None:
    engine = Engine([rule({"id": "b", "condition": {"type": "state", "point": "x", "values": [True]}})])
    assert engine.on_batch(batch(T0, {"x": 1})) == []
    assert [s.active for s in engine.on_batch(batch(T0 + 1, {"x": True}))] == [True]


# ---------------------------------------------------------------- rate of change


def test_rate_of_change_between_samples() -> None:
    engine = Engine(
        [rule({"id": "r", "condition": {"type": "rate", "point": "temp", "rise_per_min": 2.0, "fall_per_min": 5.0}})]
    )
    # one sample per minute: +1, +3 (raise), +1 (clear), -6 (raise), 0 (clear)
    values = [20, 21, 24, 25, 19, 19]
    signals = run(engine, [(T0 + 60 * i, {"temp": v}) for i, v in enumerate(values)])
    assert [(int(ts - T0), active) for ts, active, _ in signals] == [
        (120, True),
        (180, False),
        (240, True),
        (300, False),
    ]


def test_rate_over_a_window_ignores_jitter() -> None:
    cond = {"type": "rate", "point": "temp", "rise_per_min": 1.0, "window_s": 300}
    engine = Engine([rule({"id": "r", "condition": cond})])
    # noisy +-1 every 10 s but flat over five minutes: nothing; then a steady 2 degC/min rise
    noisy = [(T0 + 10 * i, {"temp": 20 + (1 if i % 2 else -1)}) for i in range(60)]
    assert run(engine, noisy) == []
    rising = [(T0 + 600 + 10 * i, {"temp": 20 + 2 * (10 * i) / 60}) for i in range(40)]
    signals = run(engine, rising)
    assert signals
    assert signals[0][1] is True
    # the same noise judged between consecutive samples (12 degC/min) would have raised
    between = Engine([rule({"id": "r", "condition": {**cond, "window_s": 0}})])
    assert run(between, noisy)[0] == (T0 + 10, True, "temp")


# ---------------------------------------------------------------- staleness


def test_device_not_answering_judged_against_the_batch_interval() -> None:
    engine = Engine([rule({"id": "gone", "condition": {"type": "stale", "point": "*", "factor": 3.0}})])
    assert run(engine, [(T0 + 10 * i, {"x": 1.0}) for i in range(5)]) == []
    last = T0 + 40
    assert engine.tick(last + 29) == []  # 3 x 10 s not yet passed
    raised = engine.tick(last + 31)
    assert [(s.active, s.cause, s.subject) for s in raised] == [(True, "tick", "")]
    assert isinstance(raised[0].value, float)
    assert raised[0].value > 30
    assert engine.tick(last + 40) == []  # no duplicate
    cleared = engine.on_batch(batch(last + 50, {"x": 1.0}))
    assert [(s.active, s.cause) for s in cleared] == [(False, "batch")]


def test_a_backlog_arriving_late_but_steadily_is_not_stale_until_it_stops() -> None:
    # The collector works off 10 minutes of a device's batches (every 10 s) in 20 s of wall time.
    engine = Engine([rule({"id": "gone", "condition": {"type": "stale", "point": "*", "factor": 3.0}})])
    wall = T0 + 600.0
    for i in range(60):
        received = wall + i / 3
        assert engine.on_batch(batch(T0 + 10 * i, {"x": 1.0}), received) == []
        assert engine.tick(received + 0.1) == []  # its newest batch arrived a moment ago: not stale
    last_arrival = wall + 59 / 3
    # Then nothing more arrives: stale once three periods pass without a batch.
    assert engine.tick(last_arrival + 29) == []
    raised = engine.tick(last_arrival + 31)
    assert [(s.active, s.cause) for s in raised] == [(True, "tick")]
    assert raised[0].ts == T0 + 590 + 31  # on the device's own time line


def test_an_agent_clock_behind_the_collectors_is_not_taken_for_silence() -> None:
    engine = Engine([rule({"id": "gone", "condition": {"type": "stale", "point": "*", "factor": 3.0}})])
    skew = 120.0  # the agent's clock is two minutes behind
    for i in range(5):
        assert engine.on_batch(batch(T0 + 10 * i, {"x": 1.0}), T0 + 10 * i + skew) == []
    assert engine.tick(T0 + 40 + skew + 5) == []
    assert [s.active for s in engine.tick(T0 + 40 + skew + 31)] == [True]


def test_device_answering_with_failed_reads_only_is_not_answering() -> None:
    engine = Engine([rule({"id": "gone", "condition": {"type": "stale", "point": "*", "factor": 2.0}})])
    series = [(T0, {"x": 1.0}), (T0 + 10, {"x": 1.0})] + [(T0 + 10 * i, {"x": "!timeout"}) for i in (2, 3, 4)]
    # last good value at T0 + 10; 2 x 10 s later (T0 + 30) is the limit, T0 + 40 is past it
    assert run(engine, series) == [(T0 + 40, True, "")]


def test_staleness_uses_each_points_own_report_period() -> None:
    periods = {"slow": 900.0}
    engine = Engine(
        [rule({"id": "stale", "condition": {"type": "stale", "point": "*low", "factor": 2.0}})],
        periods=lambda model: periods if model == "test-model" else {},
    )
    # polled every 10 s; the slow point only has a good value at T0. 2 x 900 s is the limit.
    series = [(T0, {"slow": 1.0})] + [(T0 + 10 * i, {"slow": "!not_available"}) for i in range(1, 181)]
    assert run(engine, series) == []  # up to T0 + 1800: not yet stale
    assert run(engine, [(T0 + 1810, {"slow": "!not_available"})]) == [(T0 + 1810, True, "slow")]


def test_gateway_sensor_age_point_gives_staleness() -> None:
    cond = {"type": "stale", "point": "s*_temperature", "factor": 3.0, "age_point": "{stem}_age"}
    engine = Engine(
        [rule({"id": "silent", "condition": cond})],
        periods=lambda _m: {"s01_temperature": 900.0, "s02_temperature": 300.0},
    )
    # The gateway re-serves the last report every poll: the value is good, the age tells.
    ages = [(100, 100), (1500, 400), (2600, 950), (2800, 1000)]
    out = []
    for i, (age1, age2) in enumerate(ages):
        points = {"s01_temperature": 22.0, "s01_age": age1, "s02_temperature": 23.0, "s02_age": age2}
        out += [(s.subject, s.active) for s in engine.on_batch(batch(T0 + 10 * i, points))]
    # s02: 950 s > 3 x 300; s01: 2800 s > 2700 s
    assert out == [("s02_temperature", True), ("s01_temperature", True)]
    # and judged on ticks, after the last batch, from the last known report time
    engine2 = Engine([rule({"id": "silent", "condition": cond})], periods=lambda _m: {"s01_temperature": 900.0})
    engine2.on_batch(batch(T0, {"s01_temperature": 22.0, "s01_age": 2000}))
    assert engine2.tick(T0 + 600) == []
    assert [s.subject for s in engine2.tick(T0 + 701)] == ["s01_temperature"]


# ---------------------------------------------------------------- combinations


def test_all_combination_with_on_delay() -> None:
    cond = {
        "type": "all",
        "conditions": [
            {"type": "state", "point": "run_command", "values": [True]},
            {"type": "state", "point": "running", "values": [False]},
        ],
    }
    engine = Engine([rule({"id": "trip", "on_delay_s": 30, "condition": cond})])
    series = [
        (T0, {"run_command": False, "running": False}),
        (T0 + 10, {"run_command": True, "running": False}),  # starting
        (T0 + 20, {"run_command": True, "running": True}),
        (T0 + 30, {"run_command": True, "running": False}),  # tripped
        (T0 + 40, {"run_command": True, "running": False}),
        (T0 + 50, {"run_command": True, "running": False}),
        (T0 + 60, {"run_command": True, "running": False}),
        (T0 + 70, {"run_command": False, "running": False}),
    ]
    assert run(engine, series) == [(T0 + 60, True, ""), (T0 + 70, False, "")]


def test_any_combination_covers_models_with_different_point_names() -> None:
    cond = {
        "type": "any",
        "conditions": [
            {"type": "state", "point": "output_source", "values": ["battery"]},
            {"type": "state", "point": "on_battery", "values": [True]},
        ],
    }
    engine = Engine([rule({"id": "ups_on_battery", "condition": cond})])
    a = run(engine, [(T0, {"output_source": "battery"}), (T0 + 10, {"output_source": "normal"})], device="a")
    b = run(engine, [(T0, {"on_battery": True}), (T0 + 10, {"on_battery": False})], device="b")
    assert a == b == [(T0, True, ""), (T0 + 10, False, "")]


# ---------------------------------------------------------------- tables


def test_table_rows_are_instances_and_vanished_rows_clear() -> None:
    cond = {"type": "state", "point": "alarms.descr", "not_values": ["testInProgress"]}
    engine = Engine([rule({"id": "ups_alarm", "condition": cond})])
    ups = {"output_source": "normal"}
    s1 = engine.on_batch(
        batch(T0, ups, tables={"alarms": {"3": {"descr": "fanFailure"}, "4": {"descr": "testInProgress"}}})
    )
    assert [(s.subject, s.active, s.value) for s in s1] == [("alarms[3].descr", True, "fanFailure")]
    # the alarm table is empty: the agent sends no table at all; row 3 is gone
    s2 = engine.on_batch(batch(T0 + 10, ups))
    assert [(s.subject, s.active) for s in s2] == [("alarms[3].descr", False)]
    # a device that did not answer says nothing about its rows
    engine.on_batch(batch(T0 + 20, ups, tables={"alarms": {"5": {"descr": "generalFault"}}}))
    assert engine.on_batch(batch(T0 + 30, {"output_source": "!timeout"})) == []


# ---------------------------------------------------------------- events


def test_trap_raises_at_once_and_the_poll_clears_after_the_off_delay() -> None:
    cond = {"type": "state", "point": "output_source", "values": ["battery"]}
    engine = Engine(
        [
            rule(
                {
                    "id": "on_batt",
                    "off_delay_s": 15,
                    "events": ["upsTrapOnBattery"],
                    "condition": cond,
                    "on_delay_s": 60,
                }
            )
        ]
    )
    engine.on_batch(batch(T0, {"output_source": "normal"}))
    raised = engine.on_event(event(T0 + 3, "trap", trap="upsTrapOnBattery"))
    assert [(s.active, s.cause, s.subject) for s in raised] == [(True, "event", "output_source")]
    assert engine.on_event(event(T0 + 4, "trap", trap="upsTrapOnBattery")) == []
    assert engine.on_batch(batch(T0 + 10, {"output_source": "battery"})) == []
    assert engine.on_batch(batch(T0 + 20, {"output_source": "normal"})) == []
    cleared = engine.on_batch(batch(T0 + 40, {"output_source": "normal"}))
    assert [(s.active, s.ts) for s in cleared] == [(False, T0 + 40)]


def test_event_only_rule_with_hold_and_clear_events() -> None:
    engine = Engine(
        [
            rule({"id": "auth", "events": ["authenticationFailure"], "hold_s": 300}),
            rule(
                {
                    "id": "fan",
                    "events": ["upsTrapAlarmEntryAdded:fanFailure"],
                    "clear_events": ["upsTrapAlarmEntryRemoved:fanFailure"],
                }
            ),
        ]
    )
    assert [s.rule.id for s in engine.on_event(event(T0, "trap", trap="authenticationFailure"))] == ["auth"]
    assert engine.tick(T0 + 299) == []
    assert [(s.rule.id, s.active) for s in engine.tick(T0 + 300)] == [("auth", False)]
    added = engine.on_event(event(T0, "trap", trap="upsTrapAlarmEntryAdded", alarm="fanFailure"))
    other = engine.on_event(event(T0 + 1, "trap", trap="upsTrapAlarmEntryRemoved", alarm="onBattery"))
    removed = engine.on_event(event(T0 + 2, "trap", trap="upsTrapAlarmEntryRemoved", alarm="fanFailure"))
    assert [(s.rule.id, s.active) for s in added + other + removed] == [("fan", True), ("fan", False)]


# ---------------------------------------------------------------- replays, overrides, scope


def test_replayed_older_batches_are_skipped() -> None:
    engine = threshold(above=27.0)
    assert run(engine, [(T0 + 100, {"temp": 20.0})]) == []
    assert run(engine, [(T0 + 50, {"temp": 30.0}), (T0 + 100, {"temp": 30.0})]) == []
    assert engine.skipped == 2


def test_overrides_per_device_change_limits_or_disable() -> None:
    base = rule({"id": "inlet", "condition": {"type": "threshold", "point": "temp", "above": 27.0}})
    engine = Engine(
        [base],
        overrides=[
            Override(rule="inlet", devices=["hot-*"], above=35.0),
            Override(rule="in*", devices=["ignored"], enabled=False),
        ],
    )
    signals: list[Signal] = []
    for dev in ("rack-1", "hot-1", "ignored"):
        signals += engine.on_batch(batch(T0, {"temp": 30.0}, device=dev))
    assert [s.device for s in signals] == ["rack-1"]
    assert [s.device for s in engine.on_batch(batch(T0 + 1, {"temp": 36.0}, device="hot-1"))] == ["hot-1"]


def test_rule_scope_by_kind_and_model() -> None:
    cond = {"type": "threshold", "point": "temp", "above": 27.0}
    engine = Engine(
        [
            rule({"id": "k", "kinds": ["gateway"], "condition": cond}),
            rule({"id": "m", "models": ["special"], "condition": cond}),
        ]
    )
    s1 = engine.on_batch(batch(T0, {"temp": 30.0}, device="a", kind="gateway"))
    s2 = engine.on_batch(batch(T0, {"temp": 30.0}, device="b", kind="chiller", model="special"))
    s3 = engine.on_batch(batch(T0, {"temp": 30.0}, device="c", kind="chiller"))
    assert [s.rule.id for s in s1] == ["k"]
    assert [s.rule.id for s in s2] == ["m"]
    assert s3 == []


def test_message_template() -> None:
    spec = {
        "id": "temp_high",
        "message": "{device}: {point} at {value} {unit} ({label}) {nope}",
        "labels": {"30.5": "hot"},
        "condition": {"type": "threshold", "point": "temp", "above": 27},
    }
    engine = Engine([rule(spec)])
    (s,) = engine.on_batch(batch(T0, {"temp": 30.5}, units={"temp": "degC"}, device="rack-9"))
    assert s.message == "rack-9: temp at 30.5 degC (hot) {nope}"


# ---------------------------------------------------------------- the inlined threshold path

_VALUES = st.one_of(
    st.floats(-50, 50, allow_nan=False),
    st.integers(-50, 50),
    st.booleans(),
    st.sampled_from(["on", "!timeout", None]),
)


@settings(max_examples=300, deadline=None)
@given(
    above=st.one_of(st.none(), st.floats(-20, 20)),
    below=st.one_of(st.none(), st.floats(-20, 20)),
    hysteresis=st.sampled_from([0.0, 0.5, 3.0]),
    rounds=st.lists(st.dictionaries(st.sampled_from(["a", "b", "c"]), _VALUES, max_size=3), min_size=1, max_size=6),
)
def test_inlined_threshold_answers_like_the_generic_evaluation(
    above: float | None, below: float | None, hysteresis: float, rounds: list[dict[str, Any]]
) -> None:
    assume(above is not None or below is not None)
    try:
        leaf = Threshold(type="threshold", point="a", above=above, below=below, hysteresis=hysteresis)
    except pydantic.ValidationError:
        assume(False)
        raise
    sources = [_Source("a"), _Source("b"), _Source("c")]
    fast, generic = _ThresholdEval(leaf, sources), _ThresholdEval(leaf, sources)
    assert fast.plain
    device = _Device(SITE, "dev-1")
    active = False
    for i, points in enumerate(rounds):
        ctx = _Ctx(device, T0 + i, batch(T0 + i, points))
        got = fast(ctx, active)
        want = _Eval.__call__(generic, ctx, active)
        assert got == want
        assert fast.last == generic.last
        active = bool(got) if got is not None else active
