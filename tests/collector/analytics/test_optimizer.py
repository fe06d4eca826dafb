"""The optimiser: constraints met on the true plant, savings against the baseline, refusals, rate limits."""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest

from collector.analytics import optimizer as opt
from collector.analytics.plant_fit import PlantFit, fit_plant
from models import plant
from tests.collector.analytics.plant_data import NAMEPLATE, telemetry

BASELINE = opt.Setpoints(chw_supply_c=7.0, cw_setpoint_c=29.4, chw_pump_pct=80.0, cw_pump_pct=80.0)


@cache
def fitted() -> PlantFit:
    return fit_plant(telemetry(days=10, seed=11), NAMEPLATE)


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
    assert np.all(batch.it_inlet_c <= st.inlet_cap_c(fit) + 1e-9)
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
    supply_60 = st.inlet_cap_c(fit) - (float(at_60.it_inlet_c) - 10.0)  # the warmest safe supply at 60 %
    warm = opt.Setpoints(supply_60, 25.0, 60.0, 80.0)
    slow = opt.limit_moves(fit, st, warm, opt.Setpoints(supply_60, 25.0, 30.0, 80.0), limits, 11_000.0)
    assert slow.chw_pump_pct == pytest.approx(50.0)
    pred = opt.predict_plant(fit, st, 15.0, 11_000.0, slow.chw_supply_c, 1.0, 0.5, 0.8, 0.0, 4)
    assert float(pred.it_inlet_c) <= st.inlet_cap_c(fit) + 1e-6
    assert slow.chw_supply_c < supply_60 - 0.5


def test_a_tighter_margin_gives_a_cooler_inlet() -> None:
    fit = fitted()
    loose = opt.optimize_batch(fit, [18.0], [11_000.0], opt.OptimizerSettings(inlet_margin_k=0.5))
    tight = opt.optimize_batch(fit, [18.0], [11_000.0], opt.OptimizerSettings(inlet_margin_k=2.5))
    assert loose.ok[0]
    assert tight.ok[0]
    assert tight.it_inlet_c[0] < loose.it_inlet_c[0] - 1.0
    assert tight.plant_kw[0] >= loose.plant_kw[0]
