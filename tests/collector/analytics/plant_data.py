"""Noisy plant telemetry from the true plant model, for the optimiser's tests (the optimiser never sees the model)."""

from __future__ import annotations

import numpy as np

from collector.analytics.plant_fit import Nameplate, PlantSamples
from models import plant

P = plant.DEFAULT_PARAMS
START_NS = 1_700_000_000 * 1_000_000_000
NAMEPLATE = Nameplate(
    chillers=P.chiller.count,
    duty_chillers=P.chiller.duty_count,
    chiller_capacity_kw=P.chiller.capacity_ref_kw,
    chw_design_flow_kg_s=P.chw_pump.design_flow_kg_s,
    cw_design_flow_kg_s=P.cw_pump.design_flow_kg_s,
)


def random_decisions(rng: np.random.Generator, twb: np.ndarray, it: np.ndarray) -> dict[str, np.ndarray]:
    """Feasible random operating points (rejection sampling on the true plant)."""
    size = twb.size
    chosen = {
        k: np.full(size, np.nan)
        for k in (
            "chw_supply_c",
            "cw_setpoint_c",
            "chw_flow_ratio",
            "cw_flow_ratio",
            "economiser_on",
            "chillers_running",
        )
    }
    found = np.zeros(size, dtype=bool)
    for _ in range(30):
        n = rng.integers(0, 6, size).astype(float)
        econ = np.where(n == 0, 1.0, (rng.random(size) < 0.5).astype(float))
        chw = rng.uniform(np.maximum(0.3, 0.075 * n), 1.0)
        cw_lo = np.where(n > 0, np.maximum(0.25, 0.125 * n), 0.25)
        cw_hi = np.where(n > 0, np.minimum(1.0, 0.3125 * n), 1.0)
        dec = {
            "chw_supply_c": rng.uniform(7.0, 16.0, size),
            "cw_setpoint_c": np.minimum(twb + rng.uniform(-2.0, 14.0, size), 32.0),
            "chw_flow_ratio": chw,
            "cw_flow_ratio": rng.uniform(cw_lo, np.maximum(cw_lo, cw_hi)),
            "economiser_on": econ,
            "chillers_running": n,
        }
        res = plant.evaluate(plant.Decisions(**dec), plant.Conditions(twb, it))
        ok = res.feasible & ~found
        for k, v in dec.items():
            chosen[k][ok] = v[ok]
        found |= ok
        if found.all():
            break
    # Where nothing random was safe, the plant runs flat out (cold water, full flows, every chiller).
    safe: dict[str, float] = {
        "chw_supply_c": 7.0,
        "cw_setpoint_c": plant.FANS_AT_MAX,
        "chw_flow_ratio": 1.0,
        "cw_flow_ratio": 1.0,
        "economiser_on": 0.0,
        "chillers_running": 5.0,
    }
    for k, fallback in safe.items():
        chosen[k][~found] = fallback
    return chosen


def telemetry(
    days: int = 8,
    seed: int = 0,
    temp_noise_k: float = 0.2,
    rel_noise: float = 0.02,
    step_s: float = 300.0,
) -> PlantSamples:
    """``days`` days spread over the year of ``step_s`` telemetry of the plant run at random safe points."""
    rng = np.random.default_rng(seed)
    per_day = int(86_400 / step_s)
    starts = np.floor(np.linspace(0, 365, days, endpoint=False)) * 24.0
    hours = (starts[:, None] + np.arange(per_day) * step_s / 3600.0).ravel()
    twb = plant.weather_year(hours=hours).wet_bulb_c
    it = plant.it_load_kw(hours)
    dec = random_decisions(rng, twb, it)
    res = plant.evaluate(plant.Decisions(**dec), plant.Conditions(twb, it))

    def temp(x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=float) + rng.normal(0.0, temp_noise_k, hours.size)

    def rel(x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=float) * (1.0 + rng.normal(0.0, rel_noise, hours.size))

    columns = {
        "wet_bulb_c": temp(twb),
        "it_kw": rel(it),
        "chw_supply_c": temp(res.chw_supply_c),
        "chw_return_c": temp(res.chw_return_c),
        "chw_flow_ratio": rel(dec["chw_flow_ratio"]),
        "cw_flow_ratio": rel(dec["cw_flow_ratio"]),
        "cw_entering_chiller_c": temp(res.cw_entering_chiller_c),
        "tower_leaving_c": temp(res.tower_leaving_c),
        "tower_entering_c": temp(res.tower_entering_c),
        "chillers_running": dec["chillers_running"],
        "economiser_on": dec["economiser_on"],
        "chiller_kw": rel(res.chiller_kw),
        "tower_fan_kw": rel(res.tower_fan_kw),
        "tower_fan_speed": rel(res.tower_airflow_ratio),
        "chw_pump_kw": rel(res.chw_pump_kw),
        "cw_pump_kw": rel(res.cw_pump_kw),
        "it_inlet_c": temp(res.it_inlet_c),
    }
    ts = START_NS + np.arange(hours.size, dtype=np.int64) * int(step_s * 1e9)
    return PlantSamples.from_mapping(ts, columns)
