"""Tests of the chiller-plant physics: components, weather, load, whole-plant balance and speed."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from models.plant import (
    CHW_PUMP,
    CP_WATER_KJ_KG_K,
    CW_PUMP,
    DEFAULT_PARAMS,
    FANS_AT_MAX,
    HOURS_PER_YEAR,
    ChillerParams,
    Conditions,
    Decisions,
    PlantResult,
    TowerParams,
    Violation,
    chiller_cop,
    chiller_operation,
    counterflow_effectiveness,
    evaluate,
    humidity_ratio,
    it_inlet_offset_k,
    it_load_kw,
    parse_weather_csv,
    pump_kw,
    tower_airflow_for_approach,
    tower_approach_k,
    tower_cells_in_use,
    weather_year,
    wet_bulb_c,
)

DESIGN_IT_KW = 11000.0
DESIGN_Q_KW = 1.04 * DESIGN_IT_KW


def design_chw_flow_ratio(q_kw: float | np.ndarray, delta_t_k: float = 6.0) -> np.ndarray:
    """Chilled-water flow ratio giving ``delta_t_k`` at load ``q_kw``."""
    return np.asarray(q_kw) / (CP_WATER_KJ_KG_K * delta_t_k * CHW_PUMP.design_flow_kg_s)


@pytest.fixture(scope="module")
def year() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hours, wet-bulb and IT load of the reference year."""
    weather = weather_year()
    return weather.hours, weather.wet_bulb_c, it_load_kw(weather.hours)


# --------------------------------------------------------------------------- chillers


LEAVING = np.linspace(7.22, 16.0, 45)[:, np.newaxis]
ENTERING = np.linspace(12.78, 32.0, 97)[np.newaxis, :]


@pytest.mark.parametrize("fraction", [0.1, 0.19, 0.3, 0.456, 0.6, 0.8, 0.9])
def test_raw_curves_cop_rises_with_leaving_and_falls_with_entering(fraction: float) -> None:
    # Without the head-pressure floor, the bare curves over the clamped box.
    bare = dataclasses.replace(ChillerParams(), entering_floor_c=-100.0, min_lift_k=-100.0)
    cop = chiller_cop(fraction * bare.capacity_ref_kw, LEAVING, ENTERING, bare)
    assert np.all(np.isfinite(cop))
    assert np.all(cop > 1.0)
    assert np.all(np.diff(cop, axis=0) > 0.0)
    assert np.all(np.diff(cop, axis=1) < 0.0)


@pytest.mark.parametrize("fraction", [0.15, 0.5, 0.9])
def test_floored_cop_rises_with_leaving_and_never_rises_with_entering(fraction: float) -> None:
    cop = chiller_cop(fraction * 3500.0, LEAVING, ENTERING)
    assert np.all(np.diff(cop, axis=0) > 0.0)
    assert np.all(np.diff(cop, axis=1) <= 0.0)
    # Below the floor the entering temperature no longer matters.
    assert chiller_cop(1750.0, 10.0, 5.0) == pytest.approx(chiller_cop(1750.0, 10.0, 14.0))


def test_chiller_cycling_and_part_load() -> None:
    p = ChillerParams()
    full = chiller_operation(3000.0, 1, 7.0, 29.4)
    capacity = float(full.capacity_kw)
    # Below the minimum part load the power scales linearly (cycling).
    low = chiller_operation(0.1 * capacity, 1, 7.0, 29.4)
    at_min = chiller_operation(p.plr_min * capacity, 1, 7.0, 29.4)
    assert float(low.power_kw) == pytest.approx(float(at_min.power_kw) * 0.1 / p.plr_min)
    # Load shared equally: two chillers at half the load each.
    two = chiller_operation(6000.0, 2, 7.0, 29.4)
    assert float(two.power_kw) == pytest.approx(2.0 * float(full.power_kw))
    assert float(two.plr) == pytest.approx(float(full.plr))
    assert float(chiller_operation(3000.0, 0, 7.0, 29.4).power_kw) == 0.0


# --------------------------------------------------------------------------- tower


def test_yorkcalc_design_approach() -> None:
    # 25.6 °C wet-bulb, 35 → 29.4 °C, design water and air flow.
    approach = float(tower_approach_k(25.6, 35.0 - 29.4, 1.0))
    assert approach == pytest.approx(3.8, abs=0.3)


def test_yorkcalc_approach_falls_with_airflow() -> None:
    lg = 0.9 / np.linspace(0.2, 1.0, 41)  # water ratio 0.9, rising air flow
    for twb in (-10.0, 5.0, 15.0, 25.0):
        approach = tower_approach_k(twb, 5.0, lg)
        assert np.all(np.diff(approach) < 0.0)


def test_fan_speed_solution_matches_bisection() -> None:
    rng = np.random.default_rng(3)
    twb = rng.uniform(-5.0, 26.0, 200)
    range_k = rng.uniform(2.0, 8.0, 200)
    water = rng.uniform(0.75, 1.25, 200)
    target_air = rng.uniform(0.25, 0.95, 200)
    target_approach = tower_approach_k(twb, range_k, water / target_air)
    # Plain bisection on air flow, as the specification describes.
    low = np.full(200, 0.2)
    high = np.ones(200)
    for _ in range(60):
        mid = 0.5 * (low + high)
        too_warm = tower_approach_k(twb, range_k, water / mid) > target_approach
        low = np.where(too_warm, mid, low)
        high = np.where(too_warm, high, mid)
    solved = tower_airflow_for_approach(twb, range_k, water, target_approach)
    assert np.allclose(solved, 0.5 * (low + high), atol=1e-9)
    assert np.allclose(solved, target_air, atol=1e-9)


def test_cells_in_use_and_fan_power() -> None:
    tower = TowerParams()
    assert tower_cells_in_use(689.0).item() == 6
    assert tower_cells_in_use(172.25).item() == 1
    assert tower_cells_in_use(50.0).item() == 1
    assert tower_cells_in_use(4 * 0.75 * 137.9 + 0.01).item() == 4
    assert tower.fan_design_kw == pytest.approx(160.0, abs=5.0)


# --------------------------------------------------------------------------- pumps, exchangers


def test_pump_design_powers() -> None:
    assert CHW_PUMP.design_kw == pytest.approx(201.0, abs=0.5)
    assert CW_PUMP.design_kw == pytest.approx(241.5, abs=0.5)
    assert float(pump_kw(1.0, CHW_PUMP)) == pytest.approx(201.0, abs=1.5)
    assert float(pump_kw(1.0, CW_PUMP)) == pytest.approx(242.0, abs=1.5)
    # Part load follows the Appendix G curves.
    assert float(pump_kw(0.5, CHW_PUMP)) == pytest.approx(
        CHW_PUMP.design_kw * (0.0205 * 0.5 + 0.4101 * 0.25 + 0.5753 * 0.125)
    )


def test_counterflow_effectiveness_limits() -> None:
    eps, c_min = counterflow_effectiveness(1000.0, 500.0, 2000.0)
    assert float(c_min) == 500.0
    assert 0.0 < float(eps) < 1.0
    # Balanced limit is continuous with its neighbours.
    balanced, _ = counterflow_effectiveness(1000.0, 1000.0, 1000.0)
    near, _ = counterflow_effectiveness(1000.0, 1000.0, 1000.001)
    assert float(balanced) == pytest.approx(0.5)  # NTU / (1 + NTU) with NTU = 1
    assert float(near) == pytest.approx(float(balanced), abs=1e-5)
    # Infinite other stream: ε = 1 - exp(-NTU).
    single, _ = counterflow_effectiveness(1000.0, 1000.0, 1e12)
    assert float(single) == pytest.approx(1.0 - np.exp(-1.0), abs=1e-6)


def test_economiser_approach_at_design_is_about_two_kelvin() -> None:
    c_chw = CHW_PUMP.design_flow_kg_s * CP_WATER_KJ_KG_K
    c_cw = CW_PUMP.design_flow_kg_s * CP_WATER_KJ_KG_K
    eps, c_min = counterflow_effectiveness(DEFAULT_PARAMS.economiser.ua_kw_k, c_chw, c_cw)
    # Full design load through the exchanger: chilled-water drop Q / C_chw.
    drop = DESIGN_Q_KW / c_chw
    inlet_difference = DESIGN_Q_KW / float(eps * c_min)
    assert inlet_difference - drop == pytest.approx(2.0, abs=0.2)


def test_it_inlet_at_design() -> None:
    # Design point: 11,000 kW IT, 6 K chilled-water ΔT and a 12.5 °C supply
    # (the supply at which the 1,022 kW/K coil gives the 22 °C design inlet).
    offset = float(it_inlet_offset_k(design_chw_flow_ratio(DESIGN_Q_KW), DESIGN_Q_KW))
    assert 12.5 + offset == pytest.approx(22.0, abs=0.5)
    # Less chilled water makes the coil warmer.
    assert float(it_inlet_offset_k(0.4, DESIGN_Q_KW)) > offset + 1.0


# --------------------------------------------------------------------------- weather and load


def test_weather_matches_expected_statistics(year: tuple[np.ndarray, ...]) -> None:
    weather = weather_year()
    assert weather.dry_bulb_c.shape == (HOURS_PER_YEAR,)
    assert float(weather.dry_bulb_c.mean()) == pytest.approx(12.6, abs=0.5)
    assert float(weather.wet_bulb_c.max()) == pytest.approx(26.5, abs=0.7)
    assert int(np.count_nonzero(weather.wet_bulb_c < 10.0)) == pytest.approx(4600, abs=250)
    assert np.all(weather.wet_bulb_c <= weather.dry_bulb_c + 1e-9)
    # July is hot and humid, January cold and dry.
    july = slice(181 * 24, 212 * 24)
    assert float(weather.wet_bulb_c[july].mean()) > 20.0
    assert float(weather.dry_bulb_c[: 31 * 24].mean()) < 0.0


def test_weather_subset_equals_full_year() -> None:
    full = weather_year()
    hours = np.array([0, 13, 4000, 8759])
    part = weather_year(hours=hours)
    assert np.allclose(part.dry_bulb_c, full.dry_bulb_c[hours])
    assert np.allclose(part.wet_bulb_c, full.wet_bulb_c[hours])


def test_wet_bulb_against_psychrometric_chart() -> None:
    # 30 °C at 50 % RH, sea level: 22.0 °C wet-bulb (ASHRAE chart).
    w = humidity_ratio(30.0, 0.5, 101.325)
    assert float(wet_bulb_c(30.0, w, 101.325)) == pytest.approx(22.0, abs=0.2)
    # Saturated air: wet-bulb equals dry-bulb, also below freezing.
    for t in (-10.0, 0.5, 20.0):
        assert float(wet_bulb_c(t, humidity_ratio(t, 1.0), 100.0)) == pytest.approx(t, abs=1e-6)
    # Dry air is much colder at the wick.
    assert float(wet_bulb_c(30.0, 0.0)) < 12.0


def test_it_load_profile() -> None:
    monday_9 = float(it_load_kw(9.0))
    assert monday_9 == pytest.approx(DESIGN_IT_KW)
    assert float(it_load_kw(15.0)) == pytest.approx(DESIGN_IT_KW * 1.03)
    assert float(it_load_kw(3.0)) == pytest.approx(DESIGN_IT_KW * 0.97)
    saturday_15 = 5 * 24 + 15.0
    assert float(it_load_kw(saturday_15)) == pytest.approx(DESIGN_IT_KW * 1.03 * 0.98)
    assert float(it_load_kw(saturday_15 + 7 * 24)) == pytest.approx(float(it_load_kw(saturday_15)))
    assert float(it_load_kw(4 * 24 + 15.0)) == pytest.approx(DESIGN_IT_KW * 1.03)


# --------------------------------------------------------------------------- CSV weather


def test_parse_weather_csv_round_trip() -> None:
    text = "# test data\nhour,dry_bulb_c,wet_bulb_c\n0,20.5,15.0\n1, 21.0 ,16.25\n\n2,-3,-4.5\n"
    weather = parse_weather_csv(text, "w.csv")
    assert np.array_equal(weather.dry_bulb_c, [20.5, 21.0, -3.0])
    assert np.array_equal(weather.wet_bulb_c, [15.0, 16.25, -4.5])
    assert np.array_equal(weather.hours, [0.0, 1.0, 2.0])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("dry_bulb_c,wet\n1,2\n", "w.csv line 1: header lacks column 'wet_bulb_c'"),
        ("dry_bulb_c,wet_bulb_c\n1,0\n2\n", "w.csv line 3: expected 2 fields, got 1"),
        ("dry_bulb_c,wet_bulb_c\n1,0\n\n2,x\n", "w.csv line 4: not a number: 'x'"),
        ("dry_bulb_c,wet_bulb_c\n1,0\n2,nan\n", "w.csv line 3: non-finite value"),
        ("dry_bulb_c,wet_bulb_c\n1,0\n2,5\n", "w.csv line 3: wet-bulb above dry-bulb"),
        ("# nothing\n", "w.csv: no header and data rows found"),
    ],
)
def test_parse_weather_csv_errors_name_file_and_line(text: str, message: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        parse_weather_csv(text, "w.csv")
    assert str(excinfo.value) == message


# --------------------------------------------------------------------------- whole plant


def case_a_decisions(it_kw: np.ndarray, running: int = 4) -> Decisions:
    """Benchmark case A: 7 °C, 29.4 °C, ΔT 6 K, one condenser pump per chiller."""
    return Decisions(
        chw_supply_c=7.0,
        cw_setpoint_c=29.4,
        chw_flow_ratio=design_chw_flow_ratio(1.04 * it_kw),
        cw_flow_ratio=min(running / 4.0, 1.0),
        economiser_on=False,
        chillers_running=running,
    )


def test_case_a_annual_pue(year: tuple[np.ndarray, ...]) -> None:
    _, twb, it = year
    result = evaluate(case_a_decisions(it), Conditions(twb, it))
    assert np.all(result.violations == 0)
    pue = float(result.facility_kw.sum() / result.it_kw.sum())
    assert 1.25 <= pue <= 1.36
    # Three chillers cannot carry the load at these setpoints, so four is the fewest.
    three = evaluate(case_a_decisions(it, 3), Conditions(twb, it))
    assert np.all(three.violations & Violation.PLR_OVER_ONE)


def test_energy_balance(year: tuple[np.ndarray, ...]) -> None:
    _, twb, it = year
    rng = np.random.default_rng(11)
    k = 40
    decisions = Decisions(
        chw_supply_c=rng.uniform(7.0, 16.0, (k, 1)),
        cw_setpoint_c=rng.uniform(5.0, 32.0, (k, 1)),
        chw_flow_ratio=rng.uniform(0.3, 1.0, (k, 1)),
        cw_flow_ratio=rng.uniform(0.25, 1.0, (k, 1)),
        economiser_on=rng.uniform(size=(k, 1)) > 0.5,
        chillers_running=rng.integers(1, 6, (k, 1)),
    )
    r = evaluate(decisions, Conditions(twb[::24], it[::24]))
    q = r.chw_load_kw
    # Rejected = economiser duty + chiller load + chiller power = Q + P.
    assert np.allclose(r.heat_rejected_kw, q + r.chiller_kw, rtol=1e-12)
    assert np.allclose(r.economiser_kw + r.chiller_load_kw, q, rtol=1e-12)
    # Water-side balance at the tower and on the chilled-water loop.
    c_cw = np.asarray(decisions.cw_flow_ratio) * CW_PUMP.design_flow_kg_s * CP_WATER_KJ_KG_K
    assert np.allclose((r.tower_entering_c - r.tower_leaving_c) * c_cw, r.heat_rejected_kw)
    c_chw = np.asarray(decisions.chw_flow_ratio) * CHW_PUMP.design_flow_kg_s * CP_WATER_KJ_KG_K
    assert np.allclose((r.chw_return_c - r.chw_supply_c) * c_chw, q)
    # Condenser water picks up the economiser duty before the condensers.
    assert np.allclose((r.cw_entering_chiller_c - r.tower_leaving_c) * c_cw, r.economiser_kw)
    # Plant and facility add up.
    assert np.allclose(r.plant_kw, r.chiller_kw + r.tower_fan_kw + r.chw_pump_kw + r.cw_pump_kw)
    assert np.allclose(r.facility_kw, r.it_kw * 1.09 + r.plant_kw)


def test_tower_state_is_self_consistent(year: tuple[np.ndarray, ...]) -> None:
    _, twb, it = year
    hours = slice(0, None, 97)
    decisions = Decisions(12.0, FANS_AT_MAX, 0.6, 0.75, True, 3)
    r = evaluate(decisions, Conditions(twb[hours], it[hours]))
    assert np.all(r.tower_airflow_ratio == 1.0)
    cells = r.tower_cells
    water = np.clip(0.75 * 689.0 / (cells * 137.9), 0.75, 1.25)
    approach = tower_approach_k(twb[hours], r.heat_rejected_kw / (0.75 * 689.0 * CP_WATER_KJ_KG_K), water)
    assert np.allclose(r.tower_leaving_c, twb[hours] + approach, atol=1e-7)
    full_fans = cells * TowerParams().cell_fan_design_kw
    assert np.allclose(r.tower_fan_kw, full_fans)


def test_tower_control_regimes() -> None:
    conditions = Conditions(wet_bulb_c=np.array([24.0, 24.0, -5.0, -5.0]), it_kw=DESIGN_IT_KW)
    setpoints = np.array([20.0, 30.0, 32.0, FANS_AT_MAX])
    r = evaluate(Decisions(10.0, setpoints, 0.9, 1.0, False, 4), conditions)
    # Unreachable: fans flat out, water warmer than asked.
    assert r.tower_airflow_ratio[0] == 1.0
    assert r.tower_leaving_c[0] > 20.0
    # Reachable in summer: fans modulate to hold the setpoint exactly.
    assert 0.2 < r.tower_airflow_ratio[1] < 1.0
    assert r.tower_leaving_c[1] == pytest.approx(30.0, abs=1e-9)
    # Winter with a warm setpoint: fans slow or off, water never warmer than asked.
    assert r.tower_airflow_ratio[2] < 0.5
    assert r.tower_leaving_c[2] <= 32.0 + 1e-9
    assert r.tower_fan_kw[2] < r.tower_fan_kw[3]
    # Colder condenser water helps the chillers.
    assert r.chiller_kw[3] < r.chiller_kw[2]


def test_economiser_carries_winter_load_without_chillers() -> None:
    conditions = Conditions(wet_bulb_c=-5.0, it_kw=DESIGN_IT_KW)
    r = evaluate(Decisions(14.0, FANS_AT_MAX, 0.6, 1.0, True, 0), conditions)
    assert r.violations.item() == 0
    assert r.economiser_kw.item() == pytest.approx(DESIGN_Q_KW)
    assert r.chiller_kw.item() == 0.0
    assert r.heat_rejected_kw.item() == pytest.approx(DESIGN_Q_KW)
    # The same in summer leaves load unmet.
    summer = evaluate(Decisions(14.0, FANS_AT_MAX, 0.6, 1.0, True, 0), Conditions(24.0, DESIGN_IT_KW))
    assert summer.violations.item() & Violation.ECONOMISER_SHORT


@pytest.mark.parametrize(
    ("decision", "flag"),
    [
        ({"chw_supply_c": 16.0, "chw_flow_ratio": 0.3}, Violation.INLET_OVER_LIMIT),
        ({"chillers_running": 2, "cw_flow_ratio": 0.5}, Violation.PLR_OVER_ONE),
        ({"chillers_running": 5, "chw_flow_ratio": 0.32, "cw_flow_ratio": 1.0}, Violation.EVAPORATOR_FLOW_LOW),
        ({"chillers_running": 1, "cw_flow_ratio": 1.0}, Violation.CONDENSER_FLOW_OUT_OF_RANGE),
        ({"chillers_running": 0, "economiser_on": False}, Violation.ECONOMISER_SHORT),
        ({"chw_supply_c": 18.0}, Violation.DECISION_OUT_OF_RANGE),
        ({"cw_flow_ratio": 0.1}, Violation.DECISION_OUT_OF_RANGE),
    ],
)
def test_violation_flags(decision: dict[str, float], flag: Violation) -> None:
    base = {
        "chw_supply_c": 10.0,
        "cw_setpoint_c": 27.0,
        "chw_flow_ratio": 0.95,
        "cw_flow_ratio": 1.0,
        "economiser_on": False,
        "chillers_running": 4,
    }
    conditions = Conditions(wet_bulb_c=22.0, it_kw=DESIGN_IT_KW)
    assert evaluate(Decisions(**base), conditions).violations.item() == 0
    violations = evaluate(Decisions(**{**base, **decision}), conditions).violations.item()
    assert violations & flag


def test_vectorised_equals_scalar_loop(year: tuple[np.ndarray, ...]) -> None:
    _, twb, it = year
    rng = np.random.default_rng(5)
    n = 60
    hours = rng.integers(0, HOURS_PER_YEAR, n)
    columns = {
        "chw_supply_c": rng.uniform(7.0, 16.0, n),
        "cw_setpoint_c": np.where(rng.uniform(size=n) < 0.2, FANS_AT_MAX, rng.uniform(0.0, 32.0, n)),
        "chw_flow_ratio": rng.uniform(0.3, 1.0, n),
        "cw_flow_ratio": rng.uniform(0.25, 1.0, n),
        "economiser_on": rng.uniform(size=n) < 0.5,
        "chillers_running": rng.integers(0, 6, n),
    }
    together = evaluate(Decisions(**columns), Conditions(twb[hours], it[hours]))
    for i in range(n):
        alone = evaluate(
            Decisions(**{k: v[i] for k, v in columns.items()}),
            Conditions(twb[hours[i]], it[hours[i]]),
        )
        for field in dataclasses.fields(PlantResult):
            a = np.asarray(getattr(alone, field.name))
            b = np.asarray(getattr(together, field.name))[i]
            assert a.shape == ()
            assert np.allclose(a, b, rtol=1e-9, atol=1e-9), field.name


def test_candidates_axis_broadcasts(year: tuple[np.ndarray, ...]) -> None:
    _, twb, it = year
    supply = np.array([[8.0], [12.0], [15.0]])
    r = evaluate(Decisions(supply, 25.0, 0.8, 0.9, True, 3), Conditions(twb[:48], it[:48]))
    assert r.plant_kw.shape == (3, 48)
    row = evaluate(Decisions(12.0, 25.0, 0.8, 0.9, True, 3), Conditions(twb[:48], it[:48]))
    assert np.allclose(r.plant_kw[1], row.plant_kw)
    # A warmer supply never costs more here.
    assert np.all(np.diff(r.plant_kw, axis=0) <= 1e-9)


def test_whole_year_is_fast(year: tuple[np.ndarray, ...]) -> None:
    _, twb, it = year
    decisions = Decisions(10.0, 24.0, 0.7, 0.8, True, 3)
    evaluate(decisions, Conditions(twb, it))  # warm caches
    started = time.perf_counter()
    evaluate(decisions, Conditions(twb, it))
    assert time.perf_counter() - started < 1.0
