"""The optimiser: constraints met on the true plant, savings against the baseline, refusals, rate limits."""

from __future__ import annotations

import dataclasses
import math
from functools import cache

import numpy as np
import pytest

from collector.analytics import optimizer as opt
from collector.analytics.plant_fit import PlantFit, fit_plant
from models import plant
from tests.collector.analytics.plant_data import NAMEPLATE, telemetry

P = plant.DEFAULT_PARAMS
STAGED = dataclasses.replace(
    NAMEPLATE,
    tower_cells=P.tower.cells,
    tower_cell_min_flow_kg_s=P.tower.min_cell_flow_fraction * P.tower.cell_flow_kg_s,
)

BASELINE = opt.Setpoints(chw_supply_c=7.0, cw_setpoint_c=29.4, chw_pump_pct=80.0, cw_pump_pct=80.0)


@cache
def fitted() -> PlantFit:
    return fit_plant(telemetry(days=10, seed=11), NAMEPLATE)


@cache
def staged() -> PlantFit:
    return fit_plant(telemetry(days=10, seed=11), STAGED)


def _true_plant(batch: opt.Batch, twb: np.ndarray, it: np.ndarray) -> plant.PlantResult:
    setpoint = np.where(batch.fans_at_max, plant.FANS_AT_MAX, batch.cw_setpoint_c)
    decisions = plant.Decisions(
        batch.chw_supply_c,
        setpoint,
        batch.chw_flow_ratio,
        batch.cw_flow_ratio,
        batch.economiser_on,
        batch.chillers_running,
    )
    return plant.evaluate(decisions, plant.Conditions(twb, it))


def test_decisions_meet_every_constraint_on_the_true_plant_and_beat_fixed_setpoints() -> None:
    fit = fitted()
    st = opt.OptimizerSettings()
    twb = np.array([-5.0, 2.0, 8.0, 14.0, 19.0, 22.0])
    it = np.full(twb.size, 11_000.0)
    batch = opt.optimize_batch(fit, twb, it, st)
    assert batch.ok.all(), batch.reason
    assert np.all(batch.it_inlet_c <= st.inlet_cap_c(fit, batch.chw_flow_ratio) + 1e-9)
    assert np.all(batch.plr <= st.max_plr + 1e-9)
    assert np.all((batch.chw_supply_c >= 7.0) & (batch.chw_supply_c <= 16.0))
    assert np.all((batch.chw_flow_ratio >= 0.3 - 1e-9) & (batch.chw_flow_ratio <= 1.0 + 1e-9))
    truth = _true_plant(batch, twb, it)
    assert truth.feasible.all(), truth.violations
    assert np.all(truth.it_inlet_c <= 27.0)
    fixed = plant.evaluate(plant.Decisions(7.0, 29.4, 0.8, 1.0, False, 4), plant.Conditions(twb, it))
    assert truth.plant_kw.sum() < 0.6 * fixed.plant_kw.sum()
    # The prediction is close to what the true plant draws.
    np.testing.assert_allclose(batch.plant_kw.sum(), truth.plant_kw.sum(), rtol=0.1)


def test_conditions_outside_the_fitted_range_get_no_recommendation() -> None:
    fit = fitted()
    rec = opt.recommend(fit, 35.0, 11_000.0, BASELINE)
    assert not rec.ok
    assert "outside the fitted range" in rec.reason
    assert rec.setpoints is None
    rec = opt.recommend(fit, 15.0, 3_000.0, BASELINE)
    assert not rec.ok
    assert "IT load" in rec.reason


def test_an_unusable_fit_gives_no_recommendation() -> None:
    s = telemetry(days=2, seed=12)
    stale = fit_plant(s, NAMEPLATE, now_ns=int(s.ts_ns.max()) + 86_400 * 1_000_000_000)
    rec = opt.recommend(stale, 15.0, 11_000.0, BASELINE)
    assert not rec.ok
    assert "stale" in rec.reason
    assert math.isnan(rec.plant_kw)


def test_a_recommendation_reports_its_saving_against_the_baseline() -> None:
    rec = opt.recommend(fitted(), 12.0, 11_000.0, BASELINE)
    assert rec.ok, rec.reason
    data = rec.to_json()
    assert data["predicted_saving_kw"] > 0
    assert data["baseline_plant_kw"] > data["predicted_plant_kw"]
    assert set(data["setpoints"]) == {"chw_supply_c", "cw_setpoint_c", "chw_pump_pct", "cw_pump_pct"}
    assert data["predicted_it_inlet_c"] <= 27.0


def test_moves_are_rate_limited_and_the_supply_waits_for_the_pumps() -> None:
    fit = fitted()
    st = opt.OptimizerSettings()
    limits = opt.RateLimits(chw_supply_k=1.0, cw_setpoint_k=2.0, pump_pct=10.0)
    current = opt.Setpoints(10.0, 29.4, 80.0, 80.0)
    target = opt.Setpoints(15.5, 20.0, 40.0, 50.0)
    step = opt.limit_moves(fit, st, current, target, limits, 11_000.0)
    assert step.chw_supply_c <= 11.0 + 1e-9
    assert step.cw_setpoint_c == pytest.approx(27.4)
    assert step.chw_pump_pct == pytest.approx(70.0)
    assert step.cw_pump_pct == pytest.approx(70.0)
    # At a warm supply, cutting the pump speed forces the supply down so the inlet stays safe.
    at_60 = opt.predict_plant(fit, st, 15.0, 11_000.0, 10.0, 1.0, 0.6, 0.8, 0.0, 4)
    supply_60 = float(st.inlet_cap_c(fit, 0.6)) - (float(at_60.it_inlet_c) - 10.0)  # the warmest safe supply at 60 %
    warm = opt.Setpoints(supply_60, 25.0, 60.0, 80.0)
    slow = opt.limit_moves(fit, st, warm, opt.Setpoints(supply_60, 25.0, 30.0, 80.0), limits, 11_000.0)
    assert slow.chw_pump_pct == pytest.approx(50.0)
    pred = opt.predict_plant(fit, st, 15.0, 11_000.0, slow.chw_supply_c, 1.0, 0.5, 0.8, 0.0, 4)
    assert float(pred.it_inlet_c) <= float(st.inlet_cap_c(fit, 0.5)) + 1e-6
    assert slow.chw_supply_c < supply_60 - 0.5


def test_a_tighter_margin_gives_a_cooler_inlet() -> None:
    fit = fitted()
    loose = opt.optimize_batch(fit, [18.0], [11_000.0], opt.OptimizerSettings(inlet_margin_k=0.5))
    tight = opt.optimize_batch(fit, [18.0], [11_000.0], opt.OptimizerSettings(inlet_margin_k=2.5))
    assert loose.ok[0]
    assert tight.ok[0]
    assert tight.it_inlet_c[0] < loose.it_inlet_c[0] - 1.0
    assert tight.plant_kw[0] >= loose.plant_kw[0]


def test_the_inlet_cap_follows_the_error_bound_at_the_chosen_flow() -> None:
    fit = fitted()
    st = opt.OptimizerSettings(inlet_margin_k=0.1, inlet_sigma=2.0)
    flows = np.array([0.35, 0.6, 0.95])
    bound = fit.model("it_inlet").bound_at(flows)
    np.testing.assert_allclose(st.inlet_cap_c(fit, flows), 27.0 - 0.1 - 2.0 * bound)
    assert float(st.inlet_cap_c(fit)) == pytest.approx(27.0 - 0.1 - 2.0 * fit.model("it_inlet").error_bound)


def test_with_the_tower_staging_known_decisions_are_safe_and_cheaper() -> None:
    hours = np.arange(5, 8760, 8760 // 16)
    twb = plant.weather_year(hours=hours.astype(float)).wet_bulb_c
    it = plant.it_load_kw(hours)
    energy = {}
    for name, fit in (("staged", staged()), ("unstaged", fitted())):
        batch = opt.optimize_batch(fit, twb, it)
        assert batch.ok.all(), batch.reason
        truth = _true_plant(batch, twb, it)
        assert truth.feasible.all(), (name, truth.violations)
        assert np.all(truth.it_inlet_c <= 27.0)
        energy[name] = float(truth.plant_kw.sum())
    # Knowing which cells are wetted lets the optimiser trade pump, fan and tower water properly.
    assert energy["staged"] < energy["unstaged"]


def test_wet_bulbs_a_little_beyond_the_fitted_range_are_extrapolated_safely() -> None:
    fit = staged()
    lo, hi = fit.model("tower_approach").ranges["wet_bulb_c"]
    st = opt.OptimizerSettings(wet_bulb_tolerance_k=4.0)
    twb = np.array([lo - 3.0, lo - 1.0, hi + 1.0, hi + 3.0])
    it = np.full(twb.size, 11_000.0)
    batch = opt.optimize_batch(fit, twb, it, st)
    assert batch.ok.all(), batch.reason
    truth = _true_plant(batch, twb, it)
    assert truth.feasible.all(), truth.violations
    assert np.all(truth.it_inlet_c <= 27.0)
    # The towers are predicted no colder than the true ones give.
    assert np.all(batch.cw_setpoint_c[~batch.fans_at_max] >= truth.tower_leaving_c[~batch.fans_at_max] - 0.3)
    refused = opt.optimize_batch(fit, [lo - 5.0, hi + 5.0], [11_000.0, 11_000.0], st)
    assert not refused.ok.any()
    assert all("outside the fitted range" in r for r in refused.reason)


def test_combinations_the_towers_never_ran_at_are_not_recommended() -> None:
    fit = staged()
    m = fit.model("tower_approach")
    assert m.coverage is not None
    blind = dataclasses.replace(fit, models={**fit.models, "tower_approach": dataclasses.replace(m, coverage=None)})
    st = opt.OptimizerSettings()
    # Candidates across the fitted ranges of wet-bulb, fan speed and condenser flow.
    twb, fan, cw = (
        g.ravel()
        for g in np.meshgrid(
            np.linspace(*m.ranges["wet_bulb_c"], 6),
            np.linspace(*m.ranges["fan_speed"], 6),
            np.linspace(*m.ranges["cw_flow_ratio"], 6),
            indexing="ij",
        )
    )
    guarded = opt.predict_plant(fit, st, twb, 11_000.0, 12.0, fan, 0.6, cw, 1.0, 3)
    unguarded = opt.predict_plant(blind, st, twb, 11_000.0, 12.0, fan, 0.6, cw, 1.0, 3)
    extra = guarded.excess - unguarded.excess
    np.testing.assert_allclose(guarded.tower_leaving_c, unguarded.tower_leaving_c)
    # Only the coverage guard tells them apart, and it rules some combinations out.
    ruled_out = np.isclose(extra, 1.0)
    assert np.all(ruled_out | np.isclose(extra, 0.0))
    assert 0 < np.count_nonzero(ruled_out) < extra.size
    # What the optimiser recommends lies where the towers were seen.
    batch = opt.optimize_batch(fit, np.array([-5.0, 5.0, 15.0, 22.0]), np.full(4, 11_000.0), st)
    assert batch.ok.all()
    check = opt.predict_plant(
        fit,
        st,
        np.array([-5.0, 5.0, 15.0, 22.0]),
        11_000.0,
        batch.chw_supply_c,
        batch.fan_speed,
        batch.chw_flow_ratio,
        batch.cw_flow_ratio,
        batch.economiser_on,
        batch.chillers_running,
    )
    assert check.feasible.all()


def test_settings_that_leave_nothing_to_search_give_no_recommendation() -> None:
    # No economiser, and a condenser flow per chiller no pump can give: not one piece to search.
    st = opt.OptimizerSettings(use_economiser=False, condenser_flow_min=9.0, condenser_flow_max=10.0)
    batch = opt.optimize_batch(fitted(), [10.0, 15.0], [11_000.0, 11_000.0], st)
    assert not batch.ok.any()
    assert all("no operating point" in r for r in batch.reason)
