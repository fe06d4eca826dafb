"""Benchmark baselines A, B, C and the reference optimum R on the true chiller-plant model.

Each case is a function from hourly conditions to hourly :class:`Decisions`;
:func:`run_case` evaluates them on the plant and :func:`annual_summary`
reduces a year to the benchmark figures. Run as a script to print the table
(``--json`` adds one JSON object as the last line, ``--no-reference`` skips R).

The cases, per the plant specification:

* **A** fixed: 7 °C supply, 29.4 °C condenser-water setpoint, chilled-water
  flow for a 6 K ΔT, one condenser pump per running chiller, no economiser;
  the fewest chillers that carry the load (stage up at PLR 1).
* **B** A plus the Guideline 36 economiser enable.
* **C** good rules: highest supply temperature with IT inlet ≤ 26 °C,
  condenser-water setpoint clamp(wet-bulb + 4, 13, 29.4), stage up at PLR 0.8,
  economiser per Guideline 36.
* **R** reference optimum: per hour, every discrete choice (economiser on/off x
  0-5 chillers), a coarse grid over the four continuous setpoints, then
  pattern-search refinement repeated until it stops improving.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    # Run as a script or imported from bench/: make the repository importable.
    sys.path.insert(0, str(_ROOT))

from models.plant import (  # noqa: E402  (import follows the sys.path fix above)
    CP_WATER_KJ_KG_K,
    DEFAULT_PARAMS,
    FANS_AT_MAX,
    Conditions,
    Decisions,
    PlantParams,
    PlantResult,
    Violation,
    counterflow_effectiveness,
    evaluate,
    it_inlet_offset_k,
    it_load_kw,
    tower_cells_in_use,
    weather_year,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

FIXED_CHW_SUPPLY_C = 7.0
"""Case A/B chilled-water supply, °C."""
FIXED_CW_SETPOINT_C = 29.4
"""Case A/B condenser-water setpoint, °C (and the upper clamp of case C)."""
DESIGN_CHW_DELTA_T_K = 6.0
"""Chilled-water ΔT that sets the pump flow in cases A, B and C, K."""
G36_ENABLE_MARGIN_K = 2.0
"""Economiser enable: return above predicted exchanger leaving + this, K."""
RULE_INLET_TARGET_C = 26.0
"""Case C keeps the IT inlet at or below this, °C."""
RULE_CW_APPROACH_K = 4.0
"""Case C condenser-water setpoint = wet-bulb + this (clamped), K."""
RULE_CW_MIN_C = 13.0
"""Case C lower clamp of the condenser-water setpoint, °C."""
RULE_STAGE_UP_PLR = 0.8
"""Case C stages a chiller up above this part-load ratio."""
ECONOMISER_ONLY_MARGIN_K = 0.05
"""Margin below the tower temperature at which the economiser alone carries the load, K."""


# ---------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------


def default_conditions(params: PlantParams = DEFAULT_PARAMS) -> Conditions:
    """The reference year: Beijing weather and the specified IT load, 8,760 hours."""
    weather = weather_year()
    return Conditions(wet_bulb_c=weather.wet_bulb_c, it_kw=it_load_kw(weather.hours, params.load))


def _arrays(conditions: Conditions) -> tuple[FloatArray, FloatArray]:
    twb = np.asarray(conditions.wet_bulb_c, dtype=np.float64)
    it = np.asarray(conditions.it_kw, dtype=np.float64)
    twb, it = np.broadcast_arrays(twb, it)
    return twb, it


def _chw_load_kw(it_kw: FloatArray, params: PlantParams) -> FloatArray:
    result: FloatArray = params.load.chw_load_factor * it_kw
    return result


def _flow_for_delta_t(chw_load_kw: FloatArray, params: PlantParams) -> FloatArray:
    """Chilled-water flow ratio that gives the design ΔT, within its bounds."""
    ratio = chw_load_kw / (CP_WATER_KJ_KG_K * DESIGN_CHW_DELTA_T_K * params.chw_pump.design_flow_kg_s)
    result: FloatArray = np.clip(ratio, params.bounds.chw_flow_ratio_min, 1.0)
    return result


def _pumps_per_chiller_ratio(running: FloatArray | IntArray, params: PlantParams) -> FloatArray:
    """Condenser flow ratio with one design-flow pump per running chiller (capped at design)."""
    n = np.asarray(running, dtype=np.float64)
    result: FloatArray = np.clip(n / params.chiller.duty_count, params.bounds.cw_flow_ratio_min, 1.0)
    return result


def _economiser_cw_ratio(running: FloatArray | IntArray, params: PlantParams) -> FloatArray:
    """Condenser flow with the economiser in service: design flow when it runs alone."""
    n = np.asarray(running, dtype=np.float64)
    result: FloatArray = np.where(n > 0, _pumps_per_chiller_ratio(n, params), 1.0)
    return result


def g36_economiser_enable(
    conditions: Conditions,
    chw_supply_c: FloatArray,
    chw_flow_ratio: FloatArray,
    params: PlantParams = DEFAULT_PARAMS,
) -> BoolArray:
    """ASHRAE Guideline 36 waterside-economiser enable.

    Enabled when the chilled-water return is more than 2 K above the predicted
    exchanger leaving temperature. The prediction is the exchanger's
    unthrottled leaving temperature with the towers at full speed and design
    condenser flow through the exchanger, carrying the exchanger's own heat.
    """
    twb, it = _arrays(conditions)
    probe = evaluate(
        Decisions(
            chw_supply_c=chw_supply_c,
            cw_setpoint_c=FANS_AT_MAX,
            chw_flow_ratio=chw_flow_ratio,
            cw_flow_ratio=1.0,
            economiser_on=True,
            chillers_running=0,
        ),
        Conditions(twb, it),
        params,
    )
    c_chw = chw_flow_ratio * params.chw_pump.design_flow_kg_s * CP_WATER_KJ_KG_K
    predicted_leaving = probe.chw_return_c - probe.economiser_capacity_kw / c_chw
    result: BoolArray = probe.chw_return_c > predicted_leaving + G36_ENABLE_MARGIN_K
    return result


def _economiser_only_tower_c(
    chw_return_c: FloatArray,
    chw_load_kw: FloatArray,
    chw_flow_ratio: FloatArray,
    cw_flow_ratio: FloatArray,
    params: PlantParams,
) -> FloatArray:
    """Tower leaving °C at which the exchanger alone carries the whole load."""
    c_chw = chw_flow_ratio * params.chw_pump.design_flow_kg_s * CP_WATER_KJ_KG_K
    c_cw = cw_flow_ratio * params.cw_pump.design_flow_kg_s * CP_WATER_KJ_KG_K
    eps, c_min = counterflow_effectiveness(params.economiser.ua_kw_k, c_chw, c_cw)
    result: FloatArray = chw_return_c - chw_load_kw / (eps * c_min) - ECONOMISER_ONLY_MARGIN_K
    return result


def _rule_decisions(
    conditions: Conditions,
    *,
    chw_supply_c: FloatArray,
    cw_setpoint_c: FloatArray,
    chw_flow_ratio: FloatArray,
    economiser_on: BoolArray,
    stage_up_plr: float,
    params: PlantParams,
) -> Decisions:
    """Stage chillers for a rule-based case: the fewest that keep PLR ≤ ``stage_up_plr``.

    With the economiser on, the condenser-water setpoint drops to the tower
    temperature at which the exchanger carries the whole load (unreachable
    setpoints run the fans flat out, maximising free cooling), and zero
    chillers is chosen whenever the exchanger then carries everything.
    """
    twb, it = _arrays(conditions)
    q = _chw_load_kw(it, params)
    running = np.arange(params.chiller.count + 1, dtype=np.float64)[:, np.newaxis]
    cw_ratio = np.where(
        economiser_on,
        _economiser_cw_ratio(running, params),
        _pumps_per_chiller_ratio(running, params),
    )
    chw_return = chw_supply_c + q / (chw_flow_ratio * params.chw_pump.design_flow_kg_s * CP_WATER_KJ_KG_K)
    setpoint = np.where(
        economiser_on,
        np.minimum(
            cw_setpoint_c,
            _economiser_only_tower_c(chw_return, q, chw_flow_ratio, cw_ratio, params),
        ),
        cw_setpoint_c,
    )
    options = Decisions(chw_supply_c, setpoint, chw_flow_ratio, cw_ratio, economiser_on, running)
    result = evaluate(options, Conditions(twb, it), params)
    short = (result.violations & np.uint8(Violation.ECONOMISER_SHORT)) != 0
    acceptable = np.where(running > 0, result.chiller_plr <= stage_up_plr, ~short)
    # The fewest acceptable; all of them if none is (the plant's best effort).
    fewest = np.where(acceptable.any(axis=0), acceptable.argmax(axis=0), params.chiller.count)
    hours = np.arange(twb.size)
    return Decisions(
        chw_supply_c=np.broadcast_to(chw_supply_c, twb.shape).astype(np.float64),
        cw_setpoint_c=setpoint[fewest, hours],
        chw_flow_ratio=np.broadcast_to(chw_flow_ratio, twb.shape).astype(np.float64),
        cw_flow_ratio=cw_ratio[fewest, hours],
        economiser_on=np.broadcast_to(economiser_on, twb.shape).copy(),
        chillers_running=fewest.astype(np.int64),
    )


# ---------------------------------------------------------------------------
# Rule-based cases
# ---------------------------------------------------------------------------


def case_a(conditions: Conditions, params: PlantParams = DEFAULT_PARAMS) -> Decisions:
    """Case A: fixed setpoints, no economiser, fewest chillers with PLR ≤ 1."""
    twb, it = _arrays(conditions)
    supply = np.full(twb.shape, FIXED_CHW_SUPPLY_C)
    return _rule_decisions(
        conditions,
        chw_supply_c=supply,
        cw_setpoint_c=np.full(twb.shape, FIXED_CW_SETPOINT_C),
        chw_flow_ratio=_flow_for_delta_t(_chw_load_kw(it, params), params),
        economiser_on=np.zeros(twb.shape, dtype=np.bool_),
        stage_up_plr=1.0,
        params=params,
    )


def case_b(conditions: Conditions, params: PlantParams = DEFAULT_PARAMS) -> Decisions:
    """Case B: case A plus the Guideline 36 economiser enable."""
    twb, it = _arrays(conditions)
    supply = np.full(twb.shape, FIXED_CHW_SUPPLY_C)
    flow = _flow_for_delta_t(_chw_load_kw(it, params), params)
    return _rule_decisions(
        conditions,
        chw_supply_c=supply,
        cw_setpoint_c=np.full(twb.shape, FIXED_CW_SETPOINT_C),
        chw_flow_ratio=flow,
        economiser_on=g36_economiser_enable(conditions, supply, flow, params),
        stage_up_plr=1.0,
        params=params,
    )


def case_c(conditions: Conditions, params: PlantParams = DEFAULT_PARAMS) -> Decisions:
    """Case C: good rules (warmest supply for a 26 °C inlet, tracking condenser setpoint)."""
    twb, it = _arrays(conditions)
    q = _chw_load_kw(it, params)
    flow = _flow_for_delta_t(q, params)
    b = params.bounds
    supply = np.clip(
        RULE_INLET_TARGET_C - it_inlet_offset_k(flow, q, params),
        b.chw_supply_min_c,
        b.chw_supply_max_c,
    )
    setpoint = np.clip(twb + RULE_CW_APPROACH_K, RULE_CW_MIN_C, FIXED_CW_SETPOINT_C)
    return _rule_decisions(
        conditions,
        chw_supply_c=supply,
        cw_setpoint_c=setpoint,
        chw_flow_ratio=flow,
        economiser_on=g36_economiser_enable(conditions, supply, flow, params),
        stage_up_plr=RULE_STAGE_UP_PLR,
        params=params,
    )


# ---------------------------------------------------------------------------
# Reference optimum
# ---------------------------------------------------------------------------

# Unit-cube coordinates of the continuous decisions, in this order: chilled-
# water supply (as a fraction of its feasible span), condenser-water setpoint,
# chilled-water flow, condenser-water flow (within the piece's span).
_N_VARS = 4
_GRID_SUPPLY = (1.0,)
_GRID_SETPOINT = (0.0, 0.25, 0.5, 0.75, 1.0)
_GRID_CHW_FLOW = (0.0, 0.4, 1.0)
_GRID_CW_FLOW = (0.0, 1.0)
# First poll step of the pattern search per coordinate.
_INITIAL_STEP = np.array([0.25, 0.125, 0.2, 0.25])
_MIN_STEP_SCALE = 2.0**-14
_INFEASIBLE_KW = 1.0e6
_SETPOINT_TIE_BREAK_KW_K = 1.0e-4
_REFINED_PIECES = 6
_CHUNK_ELEMENTS = 400_000


@dataclass(frozen=True)
class _Points:
    """Search points, one (hour, piece) each: flat arrays of equal length.

    A piece fixes the economiser state, the chillers running and the span of
    condenser flow over which the number of wetted tower cells is constant.
    """

    hour: IntArray
    economiser_on: BoolArray
    running: FloatArray
    cw_low: FloatArray
    cw_high: FloatArray

    def take(self, index: IntArray) -> _Points:
        """The points at ``index``."""
        return _Points(
            self.hour[index],
            self.economiser_on[index],
            self.running[index],
            self.cw_low[index],
            self.cw_high[index],
        )


def _pieces(params: PlantParams) -> list[tuple[bool, int, float, float]]:
    """Discrete choices on which plant power is continuous in the setpoints.

    Economiser on/off x chillers running x tower cells wetted. The cell count
    steps with condenser flow and each step changes the fan power
    discontinuously, so a local search must not cross it: each piece is a
    condenser-flow span with a constant cell count, inside the flow bounds
    per running chiller. Returns ``(economiser_on, running, cw_low, cw_high)``.
    """
    b = params.bounds
    tower = params.tower
    design = params.cw_pump.design_flow_kg_s
    per_condenser = params.condenser_design_flow_kg_s / design
    cell_step = tower.min_cell_flow_fraction * tower.cell_flow_kg_s / design
    pieces: list[tuple[bool, int, float, float]] = []
    for econ in (False, True):
        for n in range(params.chiller.count + 1):
            if n == 0 and not econ:
                continue  # nothing would carry the load
            low, high = b.cw_flow_ratio_min, 1.0
            if n > 0:
                low = max(low, n * b.condenser_flow_min * per_condenser)
                high = min(high, n * b.condenser_flow_max * per_condenser)
            for cells in range(1, tower.cells + 1):
                # Nudged inside so that rounding cannot land on the next cell count.
                cell_low = cells * cell_step * (1 + 1e-9) if cells > 1 else 0.0
                cell_high = (cells + 1) * cell_step * (1 - 1e-9) if cells < tower.cells else 1.0
                span = (max(low, cell_low), min(high, cell_high))
                if span[0] > span[1]:
                    continue
                counted = tower_cells_in_use(np.array(span) * design, tower)
                if np.all(counted == cells):
                    pieces.append((econ, n, span[0], span[1]))
    return pieces


def _decode(
    u: FloatArray,
    points: _Points,
    twb: FloatArray,
    it: FloatArray,
    params: PlantParams,
) -> Decisions:
    """Map unit-cube coordinates ``u[..., 4]`` to decisions that meet every bound.

    Bounds that depend on the discrete choice are built in, so only the PLR
    limit and, with no chiller, the tower reaching the economiser-only
    temperature can still fail: the evaporator flow per running chiller, the
    piece's condenser-flow span, the supply span capped where the IT inlet
    reaches its limit at that flow, and (with no chiller) a setpoint span
    capped at the tower temperature that lets the exchanger carry the load.
    """
    b = params.bounds
    n = points.running
    per_evaporator = b.evaporator_flow_min * params.evaporator_design_flow_kg_s
    chw_min = np.maximum(b.chw_flow_ratio_min, n * per_evaporator / params.chw_pump.design_flow_kg_s)
    chw_flow = chw_min + u[..., 2] * (1.0 - chw_min)
    cw_flow = points.cw_low + u[..., 3] * (points.cw_high - points.cw_low)
    q = _chw_load_kw(it, params)
    # A nanokelvin inside the limit, so that rounding never reports 27.000000000000004 °C.
    supply_max = np.clip(
        params.air_side.inlet_limit_c - 1e-9 - it_inlet_offset_k(chw_flow, q, params),
        b.chw_supply_min_c,
        b.chw_supply_max_c,
    )
    supply = b.chw_supply_min_c + u[..., 0] * (supply_max - b.chw_supply_min_c)
    setpoint_min = twb - b.cw_setpoint_below_wet_bulb_k
    c_chw = chw_flow * params.chw_pump.design_flow_kg_s * CP_WATER_KJ_KG_K
    alone = _economiser_only_tower_c(supply + q / c_chw, q, chw_flow, cw_flow, params) + ECONOMISER_ONLY_MARGIN_K
    setpoint_max = np.where(
        n > 0,
        b.cw_setpoint_max_c,
        np.clip(alone - 1e-6, setpoint_min, b.cw_setpoint_max_c),
    )
    setpoint = setpoint_min + u[..., 1] * (setpoint_max - setpoint_min)
    return Decisions(supply, setpoint, chw_flow, cw_flow, points.economiser_on, n)


def _objective(
    u: FloatArray,
    points: _Points,
    twb: FloatArray,
    it: FloatArray,
    params: PlantParams,
) -> FloatArray:
    """Plant kW, or a large penalty growing with the violation where infeasible.

    A setpoint the tower does not hold (fans flat out below it, or fans off
    above it) changes nothing, which leaves a direct search on a plateau; a
    tie-break of ``_SETPOINT_TIE_BREAK_KW_K`` per kelvin of mismatch slopes the
    plateau towards the temperature the tower actually delivers.
    """
    decisions = _decode(u, points, twb, it, params)
    result = evaluate(decisions, Conditions(twb, it), params)
    plr_excess = np.maximum(result.chiller_plr - 1.0, 0.0)
    unmet = np.where(points.running > 0, 0.0, result.chiller_load_kw / result.chw_load_kw)
    penalty = np.where(
        result.violations != 0,
        _INFEASIBLE_KW * (1.0 + plr_excess + np.maximum(unmet, 0.0)),
        0.0,
    )
    mismatch = np.abs(result.tower_leaving_c - np.asarray(decisions.cw_setpoint_c))
    out: FloatArray = result.plant_kw + penalty + _SETPOINT_TIE_BREAK_KW_K * mismatch
    return out


def _grid_search(twb: FloatArray, it: FloatArray, params: PlantParams) -> tuple[FloatArray, FloatArray, _Points]:
    """Coarse grid over the continuous decisions for every piece and hour.

    Returns ``(best_u, best_value, points)`` with one point per (hour, piece),
    hour-major.
    """
    pieces = _pieces(params)
    hours = twb.size
    points = _Points(
        hour=np.repeat(np.arange(hours, dtype=np.int64), len(pieces)),
        economiser_on=np.tile(np.array([c[0] for c in pieces]), hours),
        running=np.tile(np.array([float(c[1]) for c in pieces]), hours),
        cw_low=np.tile(np.array([c[2] for c in pieces]), hours),
        cw_high=np.tile(np.array([c[3] for c in pieces]), hours),
    )
    grid = (
        np.array(np.meshgrid(_GRID_SUPPLY, _GRID_SETPOINT, _GRID_CHW_FLOW, _GRID_CW_FLOW, indexing="ij"))
        .reshape(_N_VARS, -1)
        .T
    )
    best_u = np.zeros((points.hour.size, _N_VARS))
    best_value = np.full(points.hour.size, np.inf)
    chunk = max(1, _CHUNK_ELEMENTS // len(grid))
    for start in range(0, points.hour.size, chunk):
        idx = np.arange(start, min(start + chunk, points.hour.size))
        sub = points.take(idx)
        values = _objective(grid[:, np.newaxis, :], sub, twb[sub.hour], it[sub.hour], params)
        arg = values.argmin(axis=0)
        best_u[idx] = grid[arg]
        best_value[idx] = values[arg, np.arange(arg.size)]
    return best_u, best_value, points


def _poll_directions(count: int, rng: np.random.Generator | None) -> FloatArray:
    """Poll directions of shape ``(2·n, count, n)``.

    Without ``rng``: the compass ±e_i. With it: ± the columns of a random
    Householder reflection per point, an orthonormal basis that changes every
    iteration (as in mesh-adaptive direct search), so that the search is not
    stuck where a constraint or a kink runs obliquely to the axes.
    """
    eye = np.eye(_N_VARS)
    if rng is None:
        basis = np.broadcast_to(eye, (count, _N_VARS, _N_VARS))
    else:
        v = rng.standard_normal((count, _N_VARS))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        basis = eye - 2.0 * v[:, :, np.newaxis] * v[:, np.newaxis, :]
    result: FloatArray = np.concatenate([basis, -basis], axis=1).transpose(1, 0, 2)
    return result


def _pattern_search(
    u: FloatArray,
    value: FloatArray,
    points: _Points,
    twb: FloatArray,
    it: FloatArray,
    *,
    scale: float,
    params: PlantParams,
    rng: np.random.Generator | None = None,
) -> tuple[FloatArray, FloatArray]:
    """Vectorised direct search in the unit cube, one independent search per point.

    Each iteration polls ``u ± step·d`` over the directions of
    :func:`_poll_directions` (clipped to the cube) and moves to the best
    improvement; without one the step halves. A point stops when its step
    falls below ``_MIN_STEP_SCALE`` of the initial step.
    """
    u = u.copy()
    value = value.copy()
    steps = np.full(u.shape[0], scale)
    active = np.flatnonzero(steps >= _MIN_STEP_SCALE)
    chunk = max(1, _CHUNK_ELEMENTS // (2 * _N_VARS))
    while active.size:
        for start in range(0, active.size, chunk):
            idx = active[start : start + chunk]
            sub = points.take(idx)
            moves = _poll_directions(idx.size, rng) * _INITIAL_STEP
            trial = np.clip(u[idx] + moves * steps[idx, np.newaxis], 0.0, 1.0)
            values = _objective(trial, sub, twb[sub.hour], it[sub.hour], params)
            arg = values.argmin(axis=0)
            best = values[arg, np.arange(idx.size)]
            # Relative tolerance: an improvement below it is rounding, not progress.
            better = best < value[idx] - 1e-12 * np.abs(value[idx])
            moved = idx[better]
            u[moved] = trial[arg[better], np.flatnonzero(better)]
            value[moved] = best[better]
            steps[idx[~better]] *= 0.5
        active = active[steps[active] >= _MIN_STEP_SCALE]
    return u, value


def _best_per_hour(value: FloatArray, hour: IntArray, hours: int) -> FloatArray:
    """Lowest value of each hour over its points."""
    best = np.full(hours, np.inf)
    np.minimum.at(best, hour, value)
    return best


def case_r(
    conditions: Conditions,
    params: PlantParams = DEFAULT_PARAMS,
    *,
    refined_pieces: int = _REFINED_PIECES,
    contender_margin: float = 0.01,
    tolerance: float = 1e-7,
    max_rounds: int = 10,
    seed: int = 0,
) -> Decisions:
    """Case R: the reference optimum of plant power, hour by hour, on the true model.

    1. The discrete choices are split into pieces on which plant power is
       continuous (see :func:`_pieces`); each gets a coarse grid over the
       continuous decisions (1 x 5 x 3 x 2 points in the unit cube).
    2. The ``refined_pieces`` best pieces of each hour are refined by a
       compass search from their best grid point.
    3. The pieces within ``contender_margin`` of their hour's best go through
       rounds of random-basis direct search followed by compass search, from
       a smaller step, until a round lowers the sum of the hourly optima by
       less than ``tolerance`` (relative).

    Every hour is independent (steady state), so minimising each hour's plant
    power minimises the year's energy and PUE. The random bases come from a
    seeded generator, so the result is reproducible.
    """
    twb, it = _arrays(conditions)
    rng = np.random.default_rng(seed)
    u, value, points = _grid_search(twb, it, params)
    per_hour = value.reshape(twb.size, -1)
    order = np.argsort(per_hour, axis=1)[:, :refined_pieces]
    chosen = (np.arange(twb.size)[:, np.newaxis] * per_hour.shape[1] + order).ravel()
    chosen = chosen[value[chosen] < _INFEASIBLE_KW]
    u[chosen], value[chosen] = _pattern_search(
        u[chosen], value[chosen], points.take(chosen), twb, it, scale=1.0, params=params
    )
    hour_best = _best_per_hour(value, points.hour, twb.size)
    contenders = chosen[value[chosen] <= hour_best[points.hour[chosen]] * (1.0 + contender_margin)]
    sub = points.take(contenders)
    u_sub, v_sub = u[contenders], value[contenders]
    for _ in range(max_rounds):
        before = float(_best_per_hour(v_sub, sub.hour, twb.size).sum())
        u_sub, v_sub = _pattern_search(u_sub, v_sub, sub, twb, it, scale=0.25, params=params, rng=rng)
        u_sub, v_sub = _pattern_search(u_sub, v_sub, sub, twb, it, scale=0.25, params=params)
        after = float(_best_per_hour(v_sub, sub.hour, twb.size).sum())
        if before - after <= tolerance * abs(after):
            break
    u[contenders], value[contenders] = u_sub, v_sub
    per_hour = value.reshape(twb.size, -1)
    best = per_hour.argmin(axis=1) + np.arange(twb.size) * per_hour.shape[1]
    best_points = points.take(best)
    decisions = _decode(u[best], best_points, twb, it, params)
    return Decisions(
        chw_supply_c=np.asarray(decisions.chw_supply_c, dtype=np.float64),
        cw_setpoint_c=np.asarray(decisions.cw_setpoint_c, dtype=np.float64),
        chw_flow_ratio=np.asarray(decisions.chw_flow_ratio, dtype=np.float64),
        cw_flow_ratio=np.asarray(decisions.cw_flow_ratio, dtype=np.float64),
        economiser_on=best_points.economiser_on.copy(),
        chillers_running=best_points.running.astype(np.int64),
    )


# ---------------------------------------------------------------------------
# Running and reporting
# ---------------------------------------------------------------------------

CASES = {"A": case_a, "B": case_b, "C": case_c, "R": case_r}
"""Benchmark strategies by name."""


def run_case(
    name: str,
    conditions: Conditions | None = None,
    params: PlantParams = DEFAULT_PARAMS,
) -> PlantResult:
    """Decisions of case ``name`` evaluated on the true plant for ``conditions``."""
    cond = conditions if conditions is not None else default_conditions(params)
    return evaluate(CASES[name](cond, params), cond, params)


def annual_summary(results: PlantResult) -> dict[str, float | int]:
    """Benchmark figures of an hourly year.

    Returns:
        ``plant_mwh`` (chillers, tower fans and both pumps), ``pue`` (ΣE_facility
        / ΣE_IT over the hours, each hour one hour long), ``hours_over_27``
        (hours with IT inlet above 27 °C) and ``max_inlet_c``.
    """
    return {
        "plant_mwh": float(np.sum(results.plant_kw)) / 1000.0,
        "pue": float(np.sum(results.facility_kw) / np.sum(results.it_kw)),
        "hours_over_27": int(np.count_nonzero(results.it_inlet_c > 27.0)),
        "max_inlet_c": float(np.max(results.it_inlet_c)),
    }


def main(argv: list[str] | None = None) -> int:
    """Print the benchmark table (and, with ``--json``, a JSON line last)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    parser.add_argument("--no-reference", action="store_true", help="skip case R")
    args = parser.parse_args(argv)

    conditions = default_conditions()
    names = ["A", "B", "C"] + ([] if args.no_reference else ["R"])
    summaries: dict[str, dict[str, float | int]] = {}
    print(f"{'case':<5}{'plant MWh':>12}{'PUE':>8}{'h>27°C':>8}{'max inlet °C':>14}{'s':>8}")
    for name in names:
        started = time.perf_counter()
        summary = annual_summary(run_case(name, conditions))
        elapsed = time.perf_counter() - started
        summaries[name] = summary
        print(
            f"{name:<5}{summary['plant_mwh']:>12.1f}{summary['pue']:>8.4f}"
            f"{summary['hours_over_27']:>8d}{summary['max_inlet_c']:>14.2f}{elapsed:>8.1f}",
            flush=True,
        )
    if args.json:
        print(json.dumps(summaries))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
