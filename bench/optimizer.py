"""Chiller-plant optimiser benchmark: cases A, B, C, O and R over the reference year.

* A, B, C and R come from ``bench/plant_cases.py`` (fixed setpoints, the
  Guideline 36 economiser, good rules, and the reference optimum found by a
  refined search on the true plant model).
* **O** is the collector's optimiser (``collector.analytics.optimizer``): it
  never sees the plant model. It is trained on 30 days of 5-minute telemetry
  (one day about every twelve, across the year) logged from the true plant
  while the plant was run through varied, safe operating points (a
  commissioning-style identification schedule: every 30 minutes a random
  staging, economiser state, supply temperature and pump speeds, and a
  condenser-water setpoint between what the towers give at full fan speed
  and 8 K above it, unsafe draws rejected), with 0.2 K noise on every
  temperature and 2 % on every power, flow and speed. Its nameplate holds
  sizes and the towers' cell staging (cells installed, minimum flow per
  wetted cell), never a curve. Its fitted models then choose every hour's
  decisions, and those decisions are evaluated on the true plant.

Prints a table; with ``--json`` the last line is one JSON object keyed "A",
"B", "C", "O" and "R" (each with ``plant_mwh``, ``pue``, ``hours_over_27``,
``max_inlet_c``). ``--no-reference`` skips R (the slow one); ``--quick``
evaluates every 24th hour only, for smoke runs; ``--no-staging`` leaves the
tower cell staging out of the nameplate.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))
_BENCH = Path(__file__).resolve().parent
if str(_BENCH) not in sys.path:
    # Last, so that a script here never shadows a package of the repository.
    sys.path.append(str(_BENCH))

import plant_cases  # noqa: E402

from collector.analytics import optimizer as opt  # noqa: E402
from collector.analytics.plant_fit import Nameplate, PlantFit, PlantSamples, fit_plant  # noqa: E402
from models import plant  # noqa: E402

FloatArray = npt.NDArray[np.float64]

SAMPLE_S = 300
TEMP_NOISE_K = 0.2
REL_NOISE = 0.02
HOLD_SAMPLES = 6  # the identification schedule holds each operating point for 30 minutes
EXPLORE_TRIES = 20  # random draws per operating point before falling back to case C's rules
EXPLORE_ECONOMISER_ONLY = 0.3  # share of draws that try the economiser alone
EXPLORE_SETPOINT_ABOVE_FLAT_OUT_K = 8.0  # condenser setpoints drawn up to this far above what full fan speed gives
YEAR_START_NS = 1_640_995_200 * 1_000_000_000  # any fixed epoch: the fit only needs increasing times


def reference_nameplate(params: plant.PlantParams = plant.DEFAULT_PARAMS, *, cells: bool = True) -> Nameplate:
    """The plant's nameplate as a site would configure it (sizes and the tower cell staging, not curves)."""
    return Nameplate(
        chillers=params.chiller.count,
        duty_chillers=params.chiller.duty_count,
        chiller_capacity_kw=params.chiller.capacity_ref_kw,
        chw_design_flow_kg_s=params.chw_pump.design_flow_kg_s,
        cw_design_flow_kg_s=params.cw_pump.design_flow_kg_s,
        tower_min_speed=params.tower.min_airflow_ratio,
        tower_cells=params.tower.cells if cells else 0,
        tower_cell_min_flow_kg_s=params.tower.min_cell_flow_fraction * params.tower.cell_flow_kg_s if cells else 0.0,
    )


def training_days(days: int, spread: bool) -> FloatArray:
    """Start hours of the logged days: spread evenly over the year, or consecutive from mid-June."""
    if spread:
        return np.floor(np.linspace(0, 365, days, endpoint=False)) * 24.0
    return (166 + np.arange(days, dtype=np.float64)) * 24.0


def _exploration(
    rng: np.random.Generator, twb: FloatArray, it: FloatArray, params: plant.PlantParams, tries: int = EXPLORE_TRIES
) -> tuple[plant.Decisions, plant.PlantResult]:
    """Random safe operating points (one per element): rejection-sampled until feasible."""
    b = params.bounds
    size = twb.size
    chosen: dict[str, FloatArray] = {}
    found = np.zeros(size, dtype=np.bool_)
    per_evap = b.evaporator_flow_min / params.chiller.duty_count
    per_cond = 1.0 / params.chiller.duty_count
    for _ in range(tries):
        # The economiser alone is tried as often as EXPLORE_ECONOMISER_ONLY; otherwise 1 to all chillers.
        n = np.where(
            rng.random(size) < EXPLORE_ECONOMISER_ONLY,
            0.0,
            rng.integers(1, params.chiller.count + 1, size).astype(np.float64),
        )
        econ = np.where(n == 0, 1.0, (rng.random(size) < 0.5).astype(np.float64))
        supply = rng.uniform(b.chw_supply_min_c, b.chw_supply_max_c, size)
        chw_low = np.maximum(b.chw_flow_ratio_min, per_evap * n)
        chw = rng.uniform(chw_low, 1.0)
        cw_low = np.where(n > 0, np.maximum(b.cw_flow_ratio_min, b.condenser_flow_min * per_cond * n), 0.25)
        cw_high = np.where(n > 0, np.minimum(1.0, b.condenser_flow_max * per_cond * n), 1.0)
        cw = rng.uniform(cw_low, np.maximum(cw_low, cw_high))
        dec = {
            "chw_supply_c": supply,
            "cw_setpoint_c": np.full(size, plant.FANS_AT_MAX),
            "chw_flow_ratio": chw,
            "cw_flow_ratio": cw,
            "economiser_on": econ,
            "chillers_running": n,
        }
        # The condenser setpoint between what the towers give flat out and a few kelvin above,
        # so that the fans run anywhere from full speed down to their minimum.
        flat_out = plant.evaluate(plant.Decisions(**dec), plant.Conditions(twb, it), params).tower_leaving_c
        dec["cw_setpoint_c"] = np.minimum(
            flat_out + rng.uniform(-0.5, EXPLORE_SETPOINT_ABOVE_FLAT_OUT_K, size), b.cw_setpoint_max_c
        )
        res = plant.evaluate(plant.Decisions(**dec), plant.Conditions(twb, it), params)
        ok = res.feasible & ~found
        for k, v in dec.items():
            chosen.setdefault(k, np.full(size, np.nan))
            chosen[k][ok] = v[ok]
        found |= ok
        if found.all():
            break
    # Whatever found nothing safe in time runs as case C would.
    if not found.all():
        fallback = plant_cases.case_c(plant.Conditions(twb, it), params)
        for k, values in chosen.items():
            values[~found] = np.asarray(getattr(fallback, k), dtype=np.float64)[~found]
    decisions = plant.Decisions(**chosen)
    return decisions, plant.evaluate(decisions, plant.Conditions(twb, it), params)


def training_telemetry(
    days: int = 30, seed: int = 1, spread: bool = True, params: plant.PlantParams = plant.DEFAULT_PARAMS
) -> PlantSamples:
    """Noisy 5-minute telemetry of the true plant run through an identification schedule."""
    rng = np.random.default_rng(seed)
    per_day = 86_400 // SAMPLE_S
    starts = training_days(days, spread)
    hours = (starts[:, np.newaxis] + np.arange(per_day) * SAMPLE_S / 3600.0).ravel()
    weather = plant.weather_year(hours=hours)
    twb = weather.wet_bulb_c
    it = plant.it_load_kw(hours, params.load)
    blocks = int(np.ceil(hours.size / HOLD_SAMPLES))
    # Draw one operating point per 30-minute block, at the block's first conditions.
    first = np.arange(blocks) * HOLD_SAMPLES
    decisions, _ = _exploration(rng, twb[first], it[first], params)
    held = {
        k: np.repeat(np.asarray(getattr(decisions, k), dtype=np.float64), HOLD_SAMPLES)[: hours.size]
        for k in (
            "chw_supply_c",
            "cw_setpoint_c",
            "chw_flow_ratio",
            "cw_flow_ratio",
            "economiser_on",
            "chillers_running",
        )
    }
    res = plant.evaluate(plant.Decisions(**held), plant.Conditions(twb, it), params)

    def temp(x: FloatArray) -> FloatArray:
        return np.asarray(x, dtype=np.float64) + rng.normal(0.0, TEMP_NOISE_K, hours.size)

    def rel(x: FloatArray) -> FloatArray:
        return np.asarray(x, dtype=np.float64) * (1.0 + rng.normal(0.0, REL_NOISE, hours.size))

    columns = {
        "wet_bulb_c": temp(twb),
        "it_kw": rel(it),
        "chw_supply_c": temp(res.chw_supply_c),
        "chw_return_c": temp(res.chw_return_c),
        "chw_flow_ratio": rel(held["chw_flow_ratio"]),
        "cw_flow_ratio": rel(held["cw_flow_ratio"]),
        "cw_entering_chiller_c": temp(res.cw_entering_chiller_c),
        "tower_leaving_c": temp(res.tower_leaving_c),
        "tower_entering_c": temp(res.tower_entering_c),
        "chillers_running": held["chillers_running"],
        "economiser_on": held["economiser_on"],
        "chiller_kw": rel(res.chiller_kw),
        "tower_fan_kw": rel(res.tower_fan_kw),
        "tower_fan_speed": rel(res.tower_airflow_ratio),
        "chw_pump_kw": rel(res.chw_pump_kw),
        "cw_pump_kw": rel(res.cw_pump_kw),
        "it_inlet_c": temp(res.it_inlet_c),
    }
    ts = YEAR_START_NS + np.round(hours * 3600.0).astype(np.int64) * 1_000_000_000
    return PlantSamples.from_mapping(ts, columns)


def train(days: int = 30, seed: int = 1, spread: bool = True, *, staging: bool = True) -> PlantFit:
    """Fit the optimiser's models on the identification telemetry."""
    samples = training_telemetry(days, seed, spread)
    return fit_plant(samples, reference_nameplate(cells=staging))


def decision_ms(fit: PlantFit, conditions: plant.Conditions, count: int = 24) -> list[float]:
    """Wall time of single decisions (``recommend``, as the collector makes them), ms."""
    twb = np.asarray(conditions.wet_bulb_c, dtype=np.float64)
    it = np.asarray(conditions.it_kw, dtype=np.float64)
    baseline = opt.Setpoints(chw_supply_c=10.0, cw_setpoint_c=29.4, chw_pump_pct=80.0, cw_pump_pct=80.0)
    out = []
    for i in np.linspace(0, twb.size - 1, count).astype(int):
        rec = opt.recommend(fit, float(twb[i]), float(it[i]), baseline)
        out.append(rec.seconds * 1000.0)
    return out


def case_o(
    fit: PlantFit, conditions: plant.Conditions, settings: opt.OptimizerSettings | None = None
) -> tuple[plant.Decisions, opt.Batch]:
    """The optimiser's decisions for every hour (fallback hours run case C's rules)."""
    twb = np.asarray(conditions.wet_bulb_c, dtype=np.float64)
    it = np.asarray(conditions.it_kw, dtype=np.float64)
    batch = opt.optimize_batch(fit, twb, it, settings or opt.OptimizerSettings())
    fallback = plant_cases.case_c(conditions)
    use = batch.ok
    setpoint = np.where(batch.fans_at_max, plant.FANS_AT_MAX, batch.cw_setpoint_c)

    def pick(ours: FloatArray, theirs: npt.ArrayLike) -> FloatArray:
        return np.where(use, ours, np.asarray(theirs, dtype=np.float64))

    decisions = plant.Decisions(
        chw_supply_c=pick(batch.chw_supply_c, fallback.chw_supply_c),
        cw_setpoint_c=pick(setpoint, fallback.cw_setpoint_c),
        chw_flow_ratio=pick(batch.chw_flow_ratio, fallback.chw_flow_ratio),
        cw_flow_ratio=pick(batch.cw_flow_ratio, fallback.cw_flow_ratio),
        economiser_on=pick(batch.economiser_on.astype(np.float64), fallback.economiser_on),
        chillers_running=pick(batch.chillers_running.astype(np.float64), fallback.chillers_running),
    )
    return decisions, batch


def _run_o(fit: PlantFit, conditions: plant.Conditions) -> tuple[plant.PlantResult, str]:
    """Case O on the true plant, and a line on its fallbacks, violations and decision time."""
    decisions, batch = case_o(fit, conditions)
    result = plant.evaluate(decisions, conditions)
    n_fallback = int(np.count_nonzero(~batch.ok))
    violations = int(np.count_nonzero(result.violations))
    single = decision_ms(fit, conditions)
    line = (
        f"O: {n_fallback} of {batch.ok.size} hours fell back to case C; "
        f"{violations} hours violated a plant constraint; "
        f"decision time {batch.seconds / batch.ok.size * 1000:.2f} ms per hour in batch, "
        f"{np.median(single):.0f} ms median (max {max(single):.0f} ms) for one decision"
    )
    return result, line


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table (and a JSON line last with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    parser.add_argument("--no-reference", action="store_true", help="skip case R")
    parser.add_argument("--quick", action="store_true", help="every 24th hour only (smoke run)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the training telemetry")
    parser.add_argument("--train-days", type=int, default=30, help="days of training telemetry")
    parser.add_argument(
        "--contiguous",
        action="store_true",
        help="train on consecutive summer days instead of days spread over the year",
    )
    parser.add_argument(
        "--no-staging", action="store_true", help="leave the tower cell staging out of the optimiser's nameplate"
    )
    args = parser.parse_args(argv)

    full = plant_cases.default_conditions()
    if args.quick:
        idx = np.arange(0, plant.HOURS_PER_YEAR, 24)
        conditions = plant.Conditions(np.asarray(full.wet_bulb_c)[idx], np.asarray(full.it_kw)[idx])
    else:
        conditions = full
    scale = plant.HOURS_PER_YEAR / np.asarray(conditions.wet_bulb_c).size

    started = time.perf_counter()
    samples = training_telemetry(args.train_days, args.seed, not args.contiguous)
    fit = fit_plant(samples, reference_nameplate(cells=not args.no_staging))
    fit_s = time.perf_counter() - started
    print(f"training: {len(samples)} samples over {args.train_days} days, fit {fit_s:.1f} s, status {fit.status}")
    for name, m in fit.models.items():
        print(
            f"  {name:<15} {m.form:<9} R² {m.r2:7.4f}  RMSE {m.rmse:9.4g}  bound {m.error_bound:8.3g} {m.unit:<12}"
            f" n {m.samples:6d}  rejected {m.rejected}"
        )
    for problem in fit.problems:
        print(f"  problem: {problem}")

    summaries: dict[str, dict[str, float | int]] = {}
    extra: dict[str, str] = {}
    names = ["A", "B", "C", "O"] + ([] if args.no_reference else ["R"])
    print(f"{'case':<5}{'plant MWh':>12}{'PUE':>8}{'h>27°C':>8}{'max inlet °C':>14}{'s':>8}")
    for name in names:
        t0 = time.perf_counter()
        if name == "O":
            result, extra["O"] = _run_o(fit, conditions)
        else:
            result = plant.evaluate(plant_cases.CASES[name](conditions), conditions)
        summary = plant_cases.annual_summary(result)
        summary["plant_mwh"] = float(summary["plant_mwh"]) * scale
        summary["hours_over_27"] = round(int(summary["hours_over_27"]) * scale)
        summaries[name] = summary
        print(
            f"{name:<5}{summary['plant_mwh']:>12.1f}{summary['pue']:>8.4f}"
            f"{summary['hours_over_27']:>8d}{summary['max_inlet_c']:>14.2f}{time.perf_counter() - t0:>8.1f}",
            flush=True,
        )
    for line in extra.values():
        print(line)
    o, a, c = summaries["O"]["plant_mwh"], summaries["A"]["plant_mwh"], summaries["C"]["plant_mwh"]
    print(f"O vs C: {100.0 * (o - c) / c:+.1f} %")
    if "R" in summaries:
        r = summaries["R"]["plant_mwh"]
        print(f"O vs R: {100.0 * (o - r) / r:+.2f} %; O captures {100.0 * (a - o) / (a - r):.1f} % of the A→R saving")
    if args.json:
        print(json.dumps(summaries))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
