"""Plant model fitting: accuracy on noisy telemetry, outlier rejection, and honest verdicts on bad data."""

from __future__ import annotations

import dataclasses
from functools import cache

import numpy as np
import pytest

from collector.analytics.plant_fit import (
    Coverage,
    FitSettings,
    PlantFit,
    PlantSamples,
    chiller_features,
    economiser_conductance_kw_k,
    fit_plant,
    inlet_error_bound_k,
    inlet_offset_k,
    noise_to_spread,
    predict,
    pump_features,
    time_smoothed,
    tower_fan_kw,
    tower_leaving_c,
)
from models import plant
from tests.collector.analytics.plant_data import NAMEPLATE, random_decisions, telemetry

NS = 1_000_000_000


@cache
def good_fit() -> PlantFit:
    return fit_plant(telemetry(), NAMEPLATE)


def test_a_fit_from_ordinary_noisy_telemetry_is_ok_and_reports_its_quality() -> None:
    fit = good_fit()
    assert fit.status == "ok", fit.problems
    assert fit.usable
    for name in ("chiller", "tower_approach", "tower_fan", "chw_pump", "cw_pump", "it_inlet", "economiser"):
        m = fit.model(name)
        assert m.fitted, (name, m.problem)
        assert m.r2 > 0.9, (name, m.r2)
        assert m.samples > 200
    assert fit.load_factor == pytest.approx(1.04, rel=0.01)
    lo, hi = fit.model("tower_approach").ranges["wet_bulb_c"]
    assert lo < 0.0
    assert hi > 20.0
    report = fit.to_json()
    assert report["status"] == "ok"
    assert set(report["models"]["chiller"]) >= {"r2", "rmse", "residual_p95", "samples", "rejected", "ranges"}


def test_the_chiller_model_tracks_the_true_curves_where_it_was_fitted() -> None:
    m = good_fit().model("chiller")
    leaving = np.array([8.0, 10.0, 12.0, 14.0])
    for entering, plr in ((20.0, 0.5), (26.0, 0.7), (29.0, 0.9)):
        truth = plant.chiller_operation(plr * 3500.0, 1, leaving, entering).power_kw / 3500.0
        fitted = predict(m, chiller_features(np.full(4, plr), leaving, np.full(4, entering), NAMEPLATE))
        np.testing.assert_allclose(fitted, truth, rtol=0.05)
        assert np.all(np.diff(fitted) < 0), "COP must rise with the chilled-water temperature"


def test_pump_fit_matches_the_part_load_curve() -> None:
    m = good_fit().model("chw_pump")
    r = np.array([0.4, 0.7, 1.0])
    np.testing.assert_allclose(predict(m, pump_features(r)), plant.pump_kw(r, plant.CHW_PUMP), rtol=0.03)


def test_gross_outliers_are_rejected_and_do_not_drag_the_fit() -> None:
    clean = telemetry(days=6, seed=3)
    columns = dict(clean.columns)
    dirty = columns["chiller_kw"].copy()
    rng = np.random.default_rng(9)
    bad = rng.choice(dirty.size, dirty.size // 50, replace=False)
    dirty[bad] *= 4.0  # a meter glitch in 2 % of the samples
    columns["chiller_kw"] = dirty
    fit_clean = fit_plant(clean, NAMEPLATE)
    fit_dirty = fit_plant(PlantSamples(clean.ts_ns, columns), NAMEPLATE)
    m_clean, m_dirty = fit_clean.model("chiller"), fit_dirty.model("chiller")
    assert m_dirty.rejected >= len(bad) * 0.8
    x = chiller_features(
        np.array([0.4, 0.6, 0.8]), np.array([9.0, 12.0, 14.0]), np.array([20.0, 25.0, 28.0]), NAMEPLATE
    )
    np.testing.assert_allclose(predict(m_dirty, x), predict(m_clean, x), rtol=0.03)


def test_noisy_data_is_reported_as_noisy() -> None:
    fit = fit_plant(telemetry(days=6, seed=4, temp_noise_k=3.0, rel_noise=0.3), NAMEPLATE)
    assert fit.status == "noisy"
    assert not fit.usable
    assert any("R²" in p for p in fit.problems)


def test_sparse_data_is_reported_as_sparse() -> None:
    s = telemetry(days=1, seed=5)
    few = PlantSamples(s.ts_ns[:60], {k: v[:60] for k, v in s.columns.items()})
    fit = fit_plant(few, NAMEPLATE)
    assert fit.status == "sparse"
    assert any("usable samples" in p for p in fit.problems)


def test_missing_series_make_the_fit_sparse() -> None:
    s = telemetry(days=2, seed=6)
    columns = dict(s.columns)
    columns["it_inlet_c"] = np.full(len(s), np.nan)  # the inlet sensors never reported
    fit = fit_plant(PlantSamples(s.ts_ns, columns), NAMEPLATE)
    assert fit.status == "sparse"
    assert any(p.startswith("it_inlet") for p in fit.problems)


def test_stale_data_is_reported_as_stale() -> None:
    s = telemetry(days=2, seed=7)
    last = int(s.ts_ns.max())
    fresh = fit_plant(s, NAMEPLATE, now_ns=last + 60 * NS)
    stale = fit_plant(s, NAMEPLATE, now_ns=last + 3 * 3600 * NS, settings=FitSettings(max_age_s=1800))
    assert fresh.status == "ok", fresh.problems
    assert stale.status == "stale"
    assert "old" in stale.problems[0]


# ---------------------------------------------------------------------------
# Physical structures, error bounds and coverage
# ---------------------------------------------------------------------------

P = plant.DEFAULT_PARAMS
STAGED = dataclasses.replace(
    NAMEPLATE,
    tower_cells=P.tower.cells,
    tower_cell_min_flow_kg_s=P.tower.min_cell_flow_fraction * P.tower.cell_flow_kg_s,
)


@cache
def staged_fit() -> PlantFit:
    return fit_plant(telemetry(), STAGED)


def _true_operating_points(seed: int, days: int = 4) -> tuple[dict[str, np.ndarray], plant.PlantResult]:
    """Noise-free random safe operating points of the true plant over a few days spread across the year."""
    rng = np.random.default_rng(seed)
    hours = (np.floor(np.linspace(0, 365, days, endpoint=False))[:, None] * 24 + np.arange(0, 24, 0.5)).ravel()
    twb = plant.weather_year(hours=hours).wet_bulb_c
    it = plant.it_load_kw(hours)
    dec = random_decisions(rng, twb, it)
    res = plant.evaluate(plant.Decisions(**dec), plant.Conditions(twb, it))
    return {"wet_bulb_c": twb, "it_kw": it, **dec}, res


def test_with_the_cell_staging_known_the_tower_model_tracks_the_true_towers() -> None:
    points, res = _true_operating_points(seed=31)
    twb, r2 = points["wet_bulb_c"], points["cw_flow_ratio"]
    range_k = res.tower_entering_c - res.tower_leaving_c
    errors = {}
    for name, fit in (("staged", staged_fit()), ("unstaged", good_fit())):
        m = fit.model("tower_approach")
        assert m.coverage is not None
        lo, hi = m.ranges["wet_bulb_c"]
        seen = m.coverage.inside(
            {
                "wet_bulb_c": np.clip(twb, lo, hi),
                "range_k": range_k,
                "cw_flow_ratio": r2,
                "fan_speed": res.tower_airflow_ratio,
            }
        )
        assert seen.mean() > 0.7, name
        predicted = tower_leaving_c(fit, twb, range_k, r2, res.tower_airflow_ratio)
        errors[name] = float(np.sqrt(np.mean((predicted - res.tower_leaving_c)[seen] ** 2)))
    assert errors["staged"] < 0.3, errors
    # Without the staging the water per wetted cell is unknown, and the towers are far less predictable.
    assert errors["unstaged"] > 2.0 * errors["staged"], errors


def test_the_exchanger_and_fan_models_follow_the_true_plant() -> None:
    fit = staged_fit()
    m = fit.model("economiser")
    assert m.form == "exchanger"
    r1, r2 = np.meshgrid(np.linspace(0.4, 1.0, 4), np.linspace(0.5, 1.0, 4))
    c1 = r1 * P.chw_pump.design_flow_kg_s * plant.CP_WATER_KJ_KG_K
    c2 = r2 * P.cw_pump.design_flow_kg_s * plant.CP_WATER_KJ_KG_K
    eps, c_min = plant.counterflow_effectiveness(P.economiser.ua_kw_k, c1, c2)
    np.testing.assert_allclose(economiser_conductance_kw_k(fit, r1, r2), eps * c_min, rtol=0.04)
    speed = np.array([0.4, 0.7, 1.0])
    for r in (0.5, 0.8, 1.0):
        cells = plant.tower_cells_in_use(r * P.cw_pump.design_flow_kg_s)
        truth = plant.tower_fan_kw(speed, cells)
        np.testing.assert_allclose(tower_fan_kw(fit, speed, np.full(3, r)), truth, rtol=0.05)


def test_the_coil_model_predicts_the_inlet_where_it_matters_and_bounds_its_error() -> None:
    fit = good_fit()
    m = fit.model("it_inlet")
    assert m.form == "coil"
    flows = np.linspace(0.35, 1.0, 14)
    for it in (10_700.0, 11_000.0, 11_300.0):
        truth = plant.it_inlet_offset_k(flows, P.load.chw_load_factor * it)
        np.testing.assert_allclose(inlet_offset_k(fit, flows, np.full(flows.size, it)), truth, atol=0.1)
    # Sensor noise (0.2 K on inlet and supply) averages out of the bound: it is far below the RMSE.
    assert 0.0 < m.error_bound < 0.1
    assert m.error_bound < 0.5 * m.rmse


def test_the_error_bound_grows_where_the_model_is_wrong() -> None:
    s = telemetry()
    columns = dict(s.columns)
    low_flow = columns["chw_flow_ratio"] < 0.45
    # A hot spot that only shows at low flows: no smooth coil or linear model follows it.
    columns["it_inlet_c"] = columns["it_inlet_c"] + np.where(low_flow, 0.8, 0.0)
    fit = fit_plant(PlantSamples(s.ts_ns, columns), NAMEPLATE)
    m = fit.model("it_inlet")
    assert m.bound_key == "chw_flow_ratio"
    low, high = m.bound_at([0.35, 0.9])
    assert low > 0.15
    assert low > 2.0 * high
    assert inlet_error_bound_k(fit, 0.35) == pytest.approx(low)


def test_the_it_load_is_smoothed_over_time_and_gaps_stay_gaps() -> None:
    ts = np.arange(10, dtype=np.int64) * 300 * NS
    values = np.array([1.0, 3.0, 1.0, 3.0, np.nan, 3.0, 1.0, 3.0, 1.0, 3.0])
    out = time_smoothed(ts[::-1].copy(), values[::-1].copy(), 600.0)[::-1]  # order of samples does not matter
    assert np.isnan(out[4])
    assert out[1] == pytest.approx(5.0 / 3.0)
    assert out[3] == pytest.approx(2.0)  # the gap's neighbour averages what it has
    assert out[0] == pytest.approx(2.0)
    np.testing.assert_array_equal(time_smoothed(ts, values, 0.0), values)


def test_coverage_records_which_combinations_were_seen() -> None:
    rng = np.random.default_rng(3)
    x = rng.uniform(0.0, 1.0, 4000)
    y = rng.uniform(0.0, 1.0, 4000)
    keep = (x < 0.5) | (y < 0.5)  # an L: the corner x, y > 0.5 never seen
    cover = Coverage.of({"x": x[keep], "y": y[keep]}, bins=4, min_count=3)
    inside = cover.inside({"x": np.array([0.2, 0.9, 0.9, 0.2, -5.0]), "y": np.array([0.9, 0.2, 0.9, 0.2, 0.2])})
    assert inside.tolist() == [True, True, False, True, True]  # far outside counts as the edge cell
    assert staged_fit().model("chiller").coverage is not None


def test_the_it_load_is_smoothed_only_where_its_noise_matters() -> None:
    rng = np.random.default_rng(8)
    five_min = np.arange(2016, dtype=np.int64) * 300 * NS  # a week of 5-minute samples
    daily = 11_000.0 * (1.0 + 0.03 * np.sin(2.0 * np.pi * five_min / NS / 86_400.0))
    noisy = daily * (1.0 + rng.normal(0.0, 0.02, daily.size))
    assert noise_to_spread(five_min, noisy) > 0.4  # meter noise as large as the daily swing: smooth it
    hourly = five_min[::12]  # the same load logged hourly, clean: it moves more between samples than it errs
    assert noise_to_spread(hourly, daily[::12]) < 0.25
    assert noise_to_spread(five_min[:2], daily[:2]) == 0.0
