"""Plant model fitting: accuracy on noisy telemetry, outlier rejection, and honest verdicts on bad data."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from collector.analytics.plant_fit import (
    FitSettings,
    PlantFit,
    PlantSamples,
    chiller_features,
    fit_plant,
    predict,
    pump_features,
)
from models import plant
from tests.collector.analytics.plant_data import NAMEPLATE, telemetry

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
