"""Chiller-plant setpoint optimiser: minimise plant power predicted by the fitted models.

Pure and vectorised (numpy): no I/O, no clock. Given a :class:`PlantFit`, the
outdoor wet-bulb and the IT load, it chooses the chilled-water supply
temperature, the tower fan speed (sent to the towers as the leaving-water
setpoint it is predicted to give), both pump flow ratios, the economiser and
the number of chillers, subject to:

- IT inlet ≤ limit - margin - ``inlet_sigma`` x the inlet model's error bound
  at the chosen chilled-water flow (estimated from the fit's residuals);
- part-load ratio of each running chiller ≤ ``max_plr``;
- evaporator flow per running chiller ≥ its minimum, condenser flow per
  running chiller within its range, pump flows within their bounds;
- no chiller only where the economiser is predicted to carry the whole load
  with ``economiser_margin`` to spare, with the tower water taken warmer by
  the tower model's error bound (or its local bound there, if larger);
- the tower-chiller coupling settled, and an economiser in service cooling;
- every model input inside the range the model was fitted on (jointly, for
  the chiller and tower inputs, and the predicted approach inside the range
  seen), except the wet-bulb, where the tower prediction is made
  conservative up to ``wet_bulb_tolerance_k`` beyond it: conditions further
  out give no recommendation (and say why) instead of an extrapolation.

Search: the discrete choices (economiser x chillers running x, where the
nameplate gives the tower staging, tower cells wetted) are split into pieces
on which predicted power is continuous. Each piece gets a coarse grid over
the four continuous decisions (in a unit cube whose bounds already include
the flow and inlet constraints), then the best pieces are refined by a
vectorised compass search, step halving until it is finer than
``refine_step`` of each span. Candidates are evaluated as numpy blocks, for
one decision (tens of milliseconds) or for a year of hours at once (the
benchmark).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from collector.analytics.plant_fit import (
    CP_WATER_KJ_KG_K,
    ComponentFit,
    PlantFit,
    chiller_kw_per_rated,
    economiser_conductance_kw_k,
    inlet_error_bound_k,
    inlet_offset_k,
    pump_kw,
    tower_fan_kw,
    tower_leaving_c,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

_N_VARS: Final = 4  # supply (within its feasible span), fan speed, chilled-water flow, condenser-water flow
_GRID: Final = (
    (1.0,),
    (0.0, 0.35, 0.7, 1.0),
    (0.0, 0.33, 0.67, 1.0),
    (0.0, 0.5, 1.0),
)
_TOWER_ITERATIONS: Final = 5
_SETTLED_K: Final = 0.05  # the tower water may still move this much after the last pass
_INFEASIBLE: Final = 1.0e9
_CHUNK_ELEMENTS: Final = 200_000


@dataclass(frozen=True, slots=True)
class OptimizerSettings:
    """Constraints and search settings.

    Attributes:
        inlet_limit_c: Hard IT inlet limit, °C.
        inlet_margin_k: Kept below the limit, K.
        inlet_sigma: Further multiples of the inlet model's error bound (at
            the chosen chilled-water flow) kept below the limit.
        chw_supply_min_c: Lowest chilled-water supply setpoint, °C.
        chw_supply_max_c: Highest chilled-water supply setpoint, °C.
        cw_setpoint_min_c: Lowest condenser-water setpoint the towers accept, °C.
        cw_setpoint_max_c: Highest condenser-water setpoint, °C.
        chw_flow_min: Lowest chilled-water flow ratio.
        cw_flow_min: Lowest condenser-water flow ratio.
        evaporator_flow_min: Lowest evaporator flow per running chiller, of its design.
        condenser_flow_min: Lowest condenser flow per running chiller, of its design.
        condenser_flow_max: Highest condenser flow per running chiller, of its design.
        max_plr: Highest part-load ratio (on rated capacity) of a running chiller.
        economiser_margin: Spare capacity the economiser needs to run with no chiller.
        use_economiser: Whether the economiser may be recommended.
        max_chillers: Chillers available (default: all installed).
        wet_bulb_tolerance_k: How far beyond the fitted wet-bulb range a condition may lie.
        load_tolerance: How far (fraction) beyond the fitted IT load range a condition may lie.
        refine_pieces: Discrete choices refined by the compass search per decision.
        refine_step: The compass search stops below this step (fraction of each span).

    """

    inlet_limit_c: float = 27.0
    inlet_margin_k: float = 0.1
    inlet_sigma: float = 1.0
    chw_supply_min_c: float = 7.0
    chw_supply_max_c: float = 16.0
    cw_setpoint_min_c: float = -50.0
    cw_setpoint_max_c: float = 32.0
    chw_flow_min: float = 0.30
    cw_flow_min: float = 0.25
    evaporator_flow_min: float = 0.3
    condenser_flow_min: float = 0.5
    condenser_flow_max: float = 1.25
    max_plr: float = 0.9
    economiser_margin: float = 0.05
    use_economiser: bool = True
    max_chillers: int | None = None
    wet_bulb_tolerance_k: float = 4.0
    load_tolerance: float = 0.05
    refine_pieces: int = 4
    refine_step: float = 0.002

    def inlet_cap_c(self, fit: PlantFit, chw_flow_ratio: npt.ArrayLike | None = None) -> FloatArray:
        """The highest predicted IT inlet a recommendation may have at a chilled-water flow, °C.

        Without a flow, the cap at the least accurate flow (the lowest cap).
        """
        m = fit.model("it_inlet")
        if chw_flow_ratio is None:
            bound = np.asarray(m.error_bound if math.isfinite(m.error_bound) else 0.0)
        else:
            bound = inlet_error_bound_k(fit, chw_flow_ratio)
        result: FloatArray = np.asarray(self.inlet_limit_c - self.inlet_margin_k - self.inlet_sigma * bound)
        return result


# ---------------------------------------------------------------------------
# Prediction
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    """What the fitted models predict for a block of candidates (all arrays broadcast)."""

    plant_kw: FloatArray
    chiller_kw: FloatArray
    tower_fan_kw: FloatArray
    chw_pump_kw: FloatArray
    cw_pump_kw: FloatArray
    it_inlet_c: FloatArray
    tower_leaving_c: FloatArray
    economiser_kw: FloatArray
    plr: FloatArray
    feasible: BoolArray
    excess: FloatArray  # how far from feasible (0 when feasible), to steer the search


def _range(m: ComponentFit, key: str, default: tuple[float, float]) -> tuple[float, float]:
    return m.ranges.get(key, default)


def _outside(values: FloatArray, m: ComponentFit, key: str) -> FloatArray:
    """How far values lie outside the range ``m`` was fitted on (0 inside)."""
    lo, hi = _range(m, key, (-math.inf, math.inf))
    result: FloatArray = np.maximum(lo - values, 0.0) + np.maximum(values - hi, 0.0)
    return result


def predict_plant(  # noqa: PLR0917, PLR0915  (one physical chain reads best in one place)
    fit: PlantFit,
    st: OptimizerSettings,
    wet_bulb_c: npt.ArrayLike,
    it_kw: npt.ArrayLike,
    chw_supply_c: npt.ArrayLike,
    fan_speed: npt.ArrayLike,
    chw_flow_ratio: npt.ArrayLike,
    cw_flow_ratio: npt.ArrayLike,
    economiser_on: npt.ArrayLike,
    chillers_running: npt.ArrayLike,
) -> Prediction:
    """Predicted plant power, IT inlet and feasibility of decisions (everything broadcasts).

    The tower leaving temperature and the chillers are coupled (heat rejected
    sets the tower range, the tower water sets the chillers' lift); a few
    fixed-point passes settle it.
    """
    p = fit.nameplate
    twb, it, ts, fan, r1, r2, econ_f, n = np.broadcast_arrays(
        *(
            np.asarray(v, dtype=np.float64)
            for v in (
                wet_bulb_c,
                it_kw,
                chw_supply_c,
                fan_speed,
                chw_flow_ratio,
                cw_flow_ratio,
                economiser_on,
                chillers_running,
            )
        )
    )
    econ = econ_f > 0.5
    q = fit.load_factor * it
    c1 = np.maximum(r1 * p.chw_design_flow_kg_s * CP_WATER_KJ_KG_K, 1e-9)
    c2 = np.maximum(r2 * p.cw_design_flow_kg_s * CP_WATER_KJ_KG_K, 1e-9)
    t_return = ts + q / c1
    m_econ = fit.model("economiser")
    g = np.where(econ, economiser_conductance_kw_k(fit, r1, r2), 0.0)
    has = n > 0
    n_safe = np.maximum(n, 1.0)
    m_ch = fit.model("chiller")
    m_tw = fit.model("tower_approach")
    t_tower = twb + 4.0
    q_econ = np.zeros_like(ts)
    q_ch = q
    entering = t_tower
    plr = q / (n_safe * p.chiller_capacity_kw)
    p_ch = np.zeros_like(ts)
    range_k = np.zeros_like(ts)
    settled = t_tower
    for i in range(_TOWER_ITERATIONS + 1):
        # Everything downstream of the tower water; the last pass only makes it agree with the final tower water.
        q_econ = np.minimum(g * (t_return - t_tower), q)
        q_ch = q - q_econ
        entering = t_tower + q_econ / c2
        plr = np.maximum(q_ch, 0.0) / (n_safe * p.chiller_capacity_kw)
        per = chiller_kw_per_rated(fit, plr, ts, entering)
        p_ch = np.where(has, n * p.chiller_capacity_kw * per, 0.0)
        rejected = q_econ + np.where(has, q_ch, 0.0) + p_ch
        range_k = rejected / c2
        settled = tower_leaving_c(fit, twb, range_k, r2, fan)
        if i < _TOWER_ITERATIONS:
            t_tower = settled
    p_fan = tower_fan_kw(fit, fan, r2)
    p_chw = pump_kw(fit, "chw", r1)
    p_cw = pump_kw(fit, "cw", r2)
    inlet = ts + inlet_offset_k(fit, r1, it)
    plant_kw = p_ch + p_fan + p_chw + p_cw

    # Constraints, as excesses (0 where met) so that the search can tell near from far.
    excess = np.maximum(inlet - st.inlet_cap_c(fit, r1), 0.0)
    # The tower-chiller coupling must have settled, and an economiser in service must cool, not heat.
    excess += np.maximum(np.abs(settled - t_tower) - _SETTLED_K, 0.0)
    excess += np.where(econ, np.maximum(t_tower - t_return, 0.0), 0.0)
    excess += np.where(has, np.maximum(plr - st.max_plr, 0.0) * 10.0, 0.0)
    # With no chiller the exchanger must carry the load even if the towers run warmer than predicted,
    # by the larger of the tower model's error bound and its local bound where it runs.
    lo_twb, hi_twb = _range(m_tw, "wet_bulb_c", (-math.inf, math.inf))
    tower_at = {"wet_bulb_c": np.clip(twb, lo_twb, hi_twb), "range_k": range_k, "cw_flow_ratio": r2, "fan_speed": fan}
    tower_bound = np.full_like(ts, m_tw.error_bound if math.isfinite(m_tw.error_bound) else 0.0)
    if m_tw.coverage is not None:
        tower_bound = np.maximum(tower_bound, np.where(has, 0.0, m_tw.coverage.local_bound(tower_at)))
    carried = g * (t_return - t_tower - np.where(np.isfinite(tower_bound), tower_bound, 1e3))
    shortfall = np.maximum(q * (1.0 + st.economiser_margin) - carried, 0.0) / np.maximum(q, 1.0)
    excess += np.where(has, 0.0, np.where(econ, shortfall * 10.0, 10.0))
    excess += np.maximum(st.cw_setpoint_min_c - t_tower, 0.0) + np.maximum(t_tower - st.cw_setpoint_max_c, 0.0)
    # Stay inside what the models were fitted on.
    effective = np.maximum(entering, np.maximum(p.condenser_floor_c, ts + p.min_lift_k))
    excess += np.where(has, _outside(effective, m_ch, "cw_entering_c"), 0.0)
    _, plr_hi = _range(m_ch, "plr", (0.0, math.inf))
    excess += np.where(has, np.maximum(plr - plr_hi, 0.0) * 10.0, 0.0)
    excess += _outside(range_k, m_tw, "range_k")
    excess += _outside(
        t_tower - np.maximum(twb, _range(m_tw, "wet_bulb_c", (-math.inf, math.inf))[0]), m_tw, "approach_k"
    )
    # ... and inside the combinations of inputs they saw (a polynomial can be far off in an unseen corner).
    if m_tw.coverage is not None:
        excess += np.where(m_tw.coverage.inside(tower_at), 0.0, 1.0)
    if m_ch.coverage is not None:
        seen = m_ch.coverage.inside({"plr": plr, "chw_supply_c": ts, "cw_entering_c": effective})
        excess += np.where(has & ~seen, 1.0, 0.0)
    if m_econ.fitted:
        excess += (
            np.where(econ, _outside(r1, m_econ, "chw_flow_ratio") + _outside(r2, m_econ, "cw_flow_ratio"), 0.0) * 10.0
        )
    else:
        excess += np.where(econ, 10.0, 0.0)
    excess = np.where(np.isfinite(excess) & np.isfinite(plant_kw), excess, _INFEASIBLE)
    return Prediction(
        plant_kw=plant_kw,
        chiller_kw=p_ch,
        tower_fan_kw=p_fan,
        chw_pump_kw=p_chw,
        cw_pump_kw=p_cw,
        it_inlet_c=inlet,
        tower_leaving_c=t_tower,
        economiser_kw=np.where(econ, q_econ, 0.0),
        plr=np.where(has, plr, 0.0),
        feasible=excess <= 1e-9,
        excess=excess,
    )


# ---------------------------------------------------------------------------
# Coverage of conditions
# ---------------------------------------------------------------------------


def condition_problems(fit: PlantFit, st: OptimizerSettings, wet_bulb_c: FloatArray, it_kw: FloatArray) -> list[str]:
    """Why no recommendation can be made for each condition ("" where one can)."""
    out = [""] * wet_bulb_c.size
    if not fit.usable:
        reason = f"fit is {fit.status}: " + "; ".join(fit.problems)
        return [reason] * wet_bulb_c.size
    wlo, whi = fit.model("tower_approach").ranges.get("wet_bulb_c", (-math.inf, math.inf))
    llo, lhi = fit.model("it_inlet").ranges.get("it_kw", (0.0, math.inf))
    tol_w = st.wet_bulb_tolerance_k
    for i, (w, load) in enumerate(zip(wet_bulb_c.tolist(), it_kw.tolist(), strict=True)):
        if not (math.isfinite(w) and math.isfinite(load)):
            out[i] = "wet-bulb or IT load unknown"
        elif not wlo - tol_w <= w <= whi + tol_w:
            out[i] = f"wet-bulb {w:.1f} °C is outside the fitted range {wlo:.1f} to {whi:.1f} °C"
        elif not llo * (1.0 - st.load_tolerance) <= load <= lhi * (1.0 + st.load_tolerance):
            out[i] = f"IT load {load:.0f} kW is outside the fitted range {llo:.0f} to {lhi:.0f} kW"
    return out


# ---------------------------------------------------------------------------
# Search
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pieces:
    """Discrete choices with their condenser-flow spans, flattened with their conditions (one search point each)."""

    hour: IntArray
    econ: FloatArray
    n: FloatArray
    cw_lo: FloatArray
    cw_hi: FloatArray

    def take(self, index: IntArray) -> _Pieces:
        return _Pieces(self.hour[index], self.econ[index], self.n[index], self.cw_lo[index], self.cw_hi[index])


@dataclass(frozen=True)
class _Bounds:
    """Spans of the continuous decisions that depend on the discrete choice."""

    supply_lo: float
    supply_hi: float
    fan_lo: float
    fan_hi: float
    chw_lo: float
    chw_hi: float
    cw_lo: float
    cw_hi: float


def _static_bounds(fit: PlantFit, st: OptimizerSettings) -> _Bounds:
    """Decision bounds from the settings, narrowed to the ranges the models were fitted on."""

    def cover(model: str, key: str) -> tuple[float, float]:
        return fit.model(model).ranges.get(key, (-math.inf, math.inf))

    s_lo = max(st.chw_supply_min_c, cover("chiller", "chw_supply_c")[0], cover("it_inlet", "chw_supply_c")[0])
    s_hi = min(st.chw_supply_max_c, cover("chiller", "chw_supply_c")[1], cover("it_inlet", "chw_supply_c")[1])
    # Fans cycling below their minimum speed are not modelled.
    f_lo = max(
        fit.nameplate.tower_min_speed, cover("tower_approach", "fan_speed")[0], cover("tower_fan", "fan_speed")[0]
    )
    f_hi = min(1.0, cover("tower_approach", "fan_speed")[1], cover("tower_fan", "fan_speed")[1])
    c1 = [cover(m, "chw_flow_ratio") for m in ("chw_pump", "it_inlet")]
    c2 = [cover(m, "cw_flow_ratio") for m in ("cw_pump", "tower_approach", "tower_fan")]
    return _Bounds(
        s_lo,
        s_hi,
        f_lo,
        f_hi,
        max(st.chw_flow_min, *(c[0] for c in c1)),
        min(1.0, *(c[1] for c in c1)),
        max(st.cw_flow_min, *(c[0] for c in c2)),
        min(1.0, *(c[1] for c in c2)),
    )


def _choices(fit: PlantFit, st: OptimizerSettings, b: _Bounds) -> list[tuple[float, float, float, float]]:
    """(economiser, chillers, lowest and highest condenser flow) of every piece searched.

    A piece is a discrete choice and, where the nameplate gives the tower
    staging, a span of condenser flow with one number of cells wetted: fan
    power and tower approach jump between cell counts, so a local search must
    not cross one.
    """
    p = fit.nameplate
    count = p.chillers if st.max_chillers is None else min(st.max_chillers, p.chillers)
    econ_ok = st.use_economiser and fit.model("economiser").fitted and fit.model("economiser").r2 >= 0.5
    discrete = [(0.0, float(k)) for k in range(1, count + 1)]
    if econ_ok:
        discrete += [(1.0, float(k)) for k in range(count + 1)]
    per_duty = 1.0 / p.duty_chillers
    step = p.cell_step()
    out: list[tuple[float, float, float, float]] = []
    for econ, n in discrete:
        lo, hi = b.cw_lo, b.cw_hi
        if n > 0:
            lo = max(lo, st.condenser_flow_min * per_duty * n)
            hi = min(hi, st.condenser_flow_max * per_duty * n)
        if lo > hi:
            continue
        if not math.isfinite(step):
            out.append((econ, n, lo, hi))
            continue
        for cells in range(1, p.tower_cells + 1):
            # Nudged inside so that rounding cannot land on the next cell count.
            cell_lo = cells * step * (1.0 + 1e-9) if cells > 1 else -math.inf
            cell_hi = (cells + 1) * step * (1.0 - 1e-9) if cells < p.tower_cells else math.inf
            span = (max(lo, cell_lo), min(hi, cell_hi))
            if span[0] <= span[1]:
                out.append((econ, n, span[0], span[1]))
    return out


def _decode(  # noqa: PLR0917  (vectorised kernels take the whole state)
    u: FloatArray, pieces: _Pieces, it: FloatArray, fit: PlantFit, st: OptimizerSettings, b: _Bounds
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    """Unit-cube coordinates → (supply, fan speed, chw flow, cw flow, span excess)."""
    p = fit.nameplate
    n = pieces.n
    per_duty = 1.0 / p.duty_chillers
    chw_lo = np.maximum(b.chw_lo, st.evaporator_flow_min * per_duty * n)
    chw = chw_lo + u[..., 2] * np.maximum(b.chw_hi - chw_lo, 0.0)
    cw = pieces.cw_lo + u[..., 3] * (pieces.cw_hi - pieces.cw_lo)
    supply_hi = np.minimum(b.supply_hi, st.inlet_cap_c(fit, chw) - inlet_offset_k(fit, chw, it))
    supply = b.supply_lo + u[..., 0] * np.maximum(supply_hi - b.supply_lo, 0.0)
    fan = b.fan_lo + u[..., 1] * (b.fan_hi - b.fan_lo)
    span_excess = np.maximum(chw_lo - b.chw_hi, 0.0) + np.maximum(b.supply_lo - supply_hi, 0.0)
    return supply, fan, chw, cw, span_excess


def _objective(  # noqa: PLR0917  (vectorised kernels take the whole state)
    u: FloatArray, pieces: _Pieces, twb: FloatArray, it: FloatArray, fit: PlantFit, st: OptimizerSettings, b: _Bounds
) -> tuple[FloatArray, Prediction, tuple[FloatArray, ...]]:
    h = pieces.hour
    supply, fan, chw, cw, span_excess = _decode(u, pieces, it[h], fit, st, b)
    pred = predict_plant(fit, st, twb[h], it[h], supply, fan, chw, cw, pieces.econ, pieces.n)
    excess = pred.excess + span_excess
    value = np.where(excess > 1e-9, _INFEASIBLE * (1.0 + np.minimum(excess, 1e3)), pred.plant_kw)
    return value, pred, (supply, fan, chw, cw)


def _search(
    fit: PlantFit, st: OptimizerSettings, twb: FloatArray, it: FloatArray, b: _Bounds
) -> tuple[FloatArray, _Pieces, FloatArray]:
    """Best unit-cube point and value per (hour, piece) after grid and compass search."""
    choices = _choices(fit, st, b)
    hours = twb.size
    k = len(choices)
    table = np.array(choices, dtype=np.float64).reshape(-1, 4)
    pieces = _Pieces(
        hour=np.repeat(np.arange(hours, dtype=np.int64), k),
        econ=np.tile(table[:, 0], hours),
        n=np.tile(table[:, 1], hours),
        cw_lo=np.tile(table[:, 2], hours),
        cw_hi=np.tile(table[:, 3], hours),
    )
    grid = np.array(np.meshgrid(*_GRID, indexing="ij")).reshape(_N_VARS, -1).T
    values, _, _ = _objective(grid[:, np.newaxis, :], pieces, twb, it, fit, st, b)
    arg = values.argmin(axis=0)
    u = grid[arg]
    best = values[arg, np.arange(arg.size)]
    # Refine the most promising pieces of each hour.
    per_hour = best.reshape(hours, k)
    keep = min(st.refine_pieces, k)
    order = np.argsort(per_hour, axis=1)[:, :keep]
    chosen = (np.arange(hours)[:, np.newaxis] * k + order).ravel()
    chosen = chosen[best[chosen] < _INFEASIBLE]
    sub = pieces.take(chosen)
    u_sub, v_sub = _compass(u[chosen], best[chosen], sub, twb, it, fit, st, b)
    u[chosen] = u_sub
    best[chosen] = v_sub
    return u, pieces, best


def _compass(  # noqa: PLR0917  (vectorised kernels take the whole state)
    u: FloatArray,
    value: FloatArray,
    pieces: _Pieces,
    twb: FloatArray,
    it: FloatArray,
    fit: PlantFit,
    st: OptimizerSettings,
    b: _Bounds,
) -> tuple[FloatArray, FloatArray]:
    """Vectorised compass search in the unit cube: poll ±step on each axis, halve on failure."""
    u = u.copy()
    value = value.copy()
    step = np.full(u.shape[0], 0.25)
    directions = np.concatenate([np.eye(_N_VARS), -np.eye(_N_VARS)])[:, np.newaxis, :]
    active = np.arange(u.shape[0])
    for _ in range(200):
        if active.size == 0:
            break
        sub = pieces.take(active)
        trial = np.clip(u[active] + directions * step[active, np.newaxis], 0.0, 1.0)
        values, _, _ = _objective(trial, sub, twb, it, fit, st, b)
        arg = values.argmin(axis=0)
        best = values[arg, np.arange(active.size)]
        better = best < value[active] - 1e-9 * np.abs(value[active])
        moved = active[better]
        u[moved] = trial[arg[better], np.flatnonzero(better)]
        value[moved] = best[better]
        step[active[~better]] *= 0.5
        active = active[step[active] >= st.refine_step]
    return u, value


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """Recommendations for a block of conditions (one element each).

    ``ok`` is False where no recommendation is made; ``reason`` then says why
    and the decision arrays hold NaN (counts: 0).
    """

    ok: BoolArray
    reason: list[str]
    chw_supply_c: FloatArray
    cw_setpoint_c: FloatArray
    fans_at_max: BoolArray
    fan_speed: FloatArray
    chw_flow_ratio: FloatArray
    cw_flow_ratio: FloatArray
    economiser_on: BoolArray
    chillers_running: IntArray
    plant_kw: FloatArray
    chiller_kw: FloatArray
    tower_fan_kw: FloatArray
    chw_pump_kw: FloatArray
    cw_pump_kw: FloatArray
    it_inlet_c: FloatArray
    plr: FloatArray
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def optimize_batch(
    fit: PlantFit, wet_bulb_c: npt.ArrayLike, it_kw: npt.ArrayLike, settings: OptimizerSettings | None = None
) -> Batch:
    """The best decisions for each (wet-bulb, IT load) pair, by the fitted models."""
    st = settings or OptimizerSettings()
    started = time.perf_counter()
    twb_all = np.atleast_1d(np.asarray(wet_bulb_c, dtype=np.float64)).ravel()
    it_all = np.atleast_1d(np.asarray(it_kw, dtype=np.float64)).ravel()
    size = twb_all.size
    reasons = condition_problems(fit, st, twb_all, it_all)
    nan = np.full(size, np.nan)
    out: dict[str, Any] = {
        "chw_supply_c": nan.copy(),
        "cw_setpoint_c": nan.copy(),
        "fan_speed": nan.copy(),
        "chw_flow_ratio": nan.copy(),
        "cw_flow_ratio": nan.copy(),
        "plant_kw": nan.copy(),
        "chiller_kw": nan.copy(),
        "tower_fan_kw": nan.copy(),
        "chw_pump_kw": nan.copy(),
        "cw_pump_kw": nan.copy(),
        "it_inlet_c": nan.copy(),
        "plr": nan.copy(),
        "economiser_on": np.zeros(size, dtype=np.bool_),
        "chillers_running": np.zeros(size, dtype=np.int64),
    }
    todo = np.array([i for i, r in enumerate(reasons) if not r], dtype=np.int64)
    if todo.size:
        b = _static_bounds(fit, st)
        pieces = len(_choices(fit, st, b))
        if pieces == 0:
            for i in todo.tolist():
                reasons[i] = "no operating point meets every constraint inside the fitted ranges"
        per = max(1, _CHUNK_ELEMENTS // (max(pieces, 1) * int(np.prod([len(g) for g in _GRID]))))
        for start in range(0, todo.size if pieces else 0, per):
            idx = todo[start : start + per]
            _solve_chunk(fit, st, twb_all[idx], it_all[idx], b, idx, out, reasons)
    ok = np.array([not r for r in reasons], dtype=np.bool_)
    fans_max = ok & (out["fan_speed"] >= _static_bounds(fit, st).fan_hi - 1e-6) if todo.size else np.zeros(size, bool)
    return Batch(
        ok=ok,
        reason=reasons,
        fans_at_max=np.asarray(fans_max, dtype=np.bool_),
        seconds=time.perf_counter() - started,
        **out,
    )


def _solve_chunk(  # noqa: PLR0917  (vectorised kernels take the whole state)
    fit: PlantFit,
    st: OptimizerSettings,
    twb: FloatArray,
    it: FloatArray,
    b: _Bounds,
    idx: IntArray,
    out: dict[str, Any],
    reasons: list[str],
) -> None:
    u, pieces, value = _search(fit, st, twb, it, b)
    k = value.size // twb.size
    per_hour = value.reshape(twb.size, k)
    best = per_hour.argmin(axis=1) + np.arange(twb.size) * k
    chosen = pieces.take(best)
    _, pred, (supply, fan, chw, cw) = _objective(u[best], chosen, twb, it, fit, st, b)
    feasible = value[best] < _INFEASIBLE
    for j, i in enumerate(idx.tolist()):
        if not feasible[j]:
            reasons[i] = "no operating point meets every constraint inside the fitted ranges"
    f = feasible
    out["chw_supply_c"][idx[f]] = supply[f]
    out["fan_speed"][idx[f]] = fan[f]
    out["chw_flow_ratio"][idx[f]] = chw[f]
    out["cw_flow_ratio"][idx[f]] = cw[f]
    out["cw_setpoint_c"][idx[f]] = pred.tower_leaving_c[f]
    out["economiser_on"][idx[f]] = chosen.econ[f] > 0.5
    out["chillers_running"][idx[f]] = chosen.n[f].astype(np.int64)
    for key in ("plant_kw", "chiller_kw", "tower_fan_kw", "chw_pump_kw", "cw_pump_kw", "it_inlet_c", "plr"):
        out[key][idx[f]] = getattr(pred, key)[f]


# ---------------------------------------------------------------------------
# One decision: recommendation, baseline, rate limits
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Setpoints:
    """The setpoints a plant is driven by.

    Attributes:
        chw_supply_c: Chilled-water supply setpoint, °C.
        cw_setpoint_c: Tower leaving-water setpoint, °C.
        chw_pump_pct: Chilled-water pump speed, % (flow ratio x 100).
        cw_pump_pct: Condenser-water pump speed, %.

    """

    chw_supply_c: float
    cw_setpoint_c: float
    chw_pump_pct: float
    cw_pump_pct: float

    def to_json(self) -> dict[str, float]:
        """JSON-ready, rounded."""
        return {
            "chw_supply_c": round(self.chw_supply_c, 2),
            "cw_setpoint_c": round(self.cw_setpoint_c, 2),
            "chw_pump_pct": round(self.chw_pump_pct, 1),
            "cw_pump_pct": round(self.cw_pump_pct, 1),
        }


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Largest move of each setpoint per decision."""

    chw_supply_k: float = 1.0
    cw_setpoint_k: float = 2.0
    pump_pct: float = 10.0


def predict_at_setpoints(  # noqa: PLR0917  (vectorised kernels take the whole state)
    fit: PlantFit,
    st: OptimizerSettings,
    wet_bulb_c: float,
    it_kw: float,
    setpoints: Setpoints,
    economiser_on: bool | None = None,
) -> tuple[float, float, int, bool]:
    """Predicted plant kW, IT inlet °C, chillers and economiser for the plant held at ``setpoints``.

    The towers hold the condenser-water setpoint with the lowest fan speed
    that reaches it (full speed if none does); the fewest chillers within
    ``max_plr`` run; the economiser runs where it lowers the prediction
    (unless ``economiser_on`` says otherwise). NaN power when nothing fits.
    """
    b = _static_bounds(fit, st)
    fans = np.linspace(b.fan_lo, b.fan_hi, 41)
    counts = np.arange(1, fit.nameplate.chillers + 1, dtype=np.float64)
    econs = [False, True] if economiser_on is None else [economiser_on]
    best = (math.nan, math.nan, 0, False)
    for econ in econs:
        if econ and not fit.model("economiser").fitted:
            continue
        pred = predict_plant(
            fit,
            st,
            wet_bulb_c,
            it_kw,
            setpoints.chw_supply_c,
            fans[:, np.newaxis],
            setpoints.chw_pump_pct / 100.0,
            setpoints.cw_pump_pct / 100.0,
            float(econ),
            counts[np.newaxis, :],
        )
        reach = pred.tower_leaving_c <= setpoints.cw_setpoint_c + 0.05
        fan_i = np.where(reach.any(axis=0), reach.argmax(axis=0), fans.size - 1)
        cols = np.arange(counts.size)
        plr = pred.plr[fan_i, cols]
        ok = plr <= st.max_plr + 1e-9
        j = int(np.argmax(ok)) if ok.any() else counts.size - 1
        kw = float(pred.plant_kw[fan_i[j], j])
        if math.isfinite(kw) and (math.isnan(best[0]) or kw < best[0]):
            best = (kw, float(pred.it_inlet_c[fan_i[j], j]), int(counts[j]), econ)
    return best


def limit_moves(  # noqa: PLR0917  (vectorised kernels take the whole state)
    fit: PlantFit,
    st: OptimizerSettings,
    current: Setpoints,
    target: Setpoints,
    limits: RateLimits,
    it_kw: float,
) -> Setpoints:
    """Move from ``current`` towards ``target`` by at most the rate limits, and stay safe on the way.

    A slower pump with a warmer supply could overshoot the inlet limit while
    the pump is still catching up, so the supply is lowered as far as the
    inlet model needs at the limited pump speed.
    """

    def step(now: float, goal: float, most: float) -> float:
        return now + max(-most, min(most, goal - now))

    chw_pct = step(current.chw_pump_pct, target.chw_pump_pct, limits.pump_pct)
    cw_pct = step(current.cw_pump_pct, target.cw_pump_pct, limits.pump_pct)
    supply = step(current.chw_supply_c, target.chw_supply_c, limits.chw_supply_k)
    chw = np.array([chw_pct / 100.0])
    safe = st.inlet_cap_c(fit, chw) - inlet_offset_k(fit, chw, np.array([it_kw]))
    supply = min(supply, float(safe[0]))
    supply = max(supply, st.chw_supply_min_c)
    cw = step(current.cw_setpoint_c, target.cw_setpoint_c, limits.cw_setpoint_k)
    return Setpoints(supply, cw, chw_pct, cw_pct)


@dataclass(frozen=True)
class Recommendation:
    """One decision: what to set, what it is predicted to draw, and against what.

    ``ok`` False means no recommendation (``reason`` says why): the plant
    should run at its baseline setpoints.
    """

    ok: bool
    reason: str
    setpoints: Setpoints | None
    economiser_on: bool
    chillers_running: int
    fan_speed: float
    plant_kw: float
    it_inlet_c: float
    baseline_kw: float
    baseline_inlet_c: float
    seconds: float
    components_kw: dict[str, float] = field(default_factory=dict)

    @property
    def saving_kw(self) -> float:
        """Predicted plant power saved against the baseline setpoints, kW."""
        return self.baseline_kw - self.plant_kw

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""

        def num(x: float, nd: int = 1) -> float | None:
            return round(x, nd) if math.isfinite(x) else None

        saving = self.saving_kw
        return {
            "ok": self.ok,
            "reason": self.reason or None,
            "setpoints": self.setpoints.to_json() if self.setpoints is not None else None,
            "economiser_on": self.economiser_on if self.ok else None,
            "chillers_running": self.chillers_running if self.ok else None,
            "fan_speed_pct": num(100.0 * self.fan_speed),
            "predicted_plant_kw": num(self.plant_kw),
            "predicted_it_inlet_c": num(self.it_inlet_c, 2),
            "baseline_plant_kw": num(self.baseline_kw),
            "baseline_it_inlet_c": num(self.baseline_inlet_c, 2),
            "predicted_saving_kw": num(saving),
            "predicted_saving_pct": num(100.0 * saving / self.baseline_kw)
            if math.isfinite(saving) and self.baseline_kw > 0
            else None,
            "components_kw": {k: num(v) for k, v in self.components_kw.items()},
            "decision_ms": round(self.seconds * 1000.0, 2),
        }


def recommend(
    fit: PlantFit,
    wet_bulb_c: float,
    it_kw: float,
    baseline: Setpoints,
    settings: OptimizerSettings | None = None,
) -> Recommendation:
    """The recommendation for now, with its prediction and the baseline's."""
    st = settings or OptimizerSettings()
    started = time.perf_counter()
    batch = optimize_batch(fit, [wet_bulb_c], [it_kw], st)
    base_kw, base_inlet = math.nan, math.nan
    if fit.usable and math.isfinite(wet_bulb_c) and math.isfinite(it_kw):
        base_kw, base_inlet, _, _ = predict_at_setpoints(fit, st, wet_bulb_c, it_kw, baseline)
    if not batch.ok[0]:
        return Recommendation(
            ok=False,
            reason=batch.reason[0],
            setpoints=None,
            economiser_on=False,
            chillers_running=0,
            fan_speed=math.nan,
            plant_kw=math.nan,
            it_inlet_c=math.nan,
            baseline_kw=base_kw,
            baseline_inlet_c=base_inlet,
            seconds=time.perf_counter() - started,
        )
    fans_max = bool(batch.fans_at_max[0])
    cw_sp = float(batch.cw_setpoint_c[0])
    if fans_max:
        cw_sp = max(st.cw_setpoint_min_c, wet_bulb_c - 2.0)  # unreachable on purpose: fans flat out
    setpoints = Setpoints(
        chw_supply_c=float(batch.chw_supply_c[0]),
        cw_setpoint_c=min(max(cw_sp, st.cw_setpoint_min_c), st.cw_setpoint_max_c),
        chw_pump_pct=100.0 * float(batch.chw_flow_ratio[0]),
        cw_pump_pct=100.0 * float(batch.cw_flow_ratio[0]),
    )
    return Recommendation(
        ok=True,
        reason="",
        setpoints=setpoints,
        economiser_on=bool(batch.economiser_on[0]),
        chillers_running=int(batch.chillers_running[0]),
        fan_speed=float(batch.fan_speed[0]),
        plant_kw=float(batch.plant_kw[0]),
        it_inlet_c=float(batch.it_inlet_c[0]),
        baseline_kw=base_kw,
        baseline_inlet_c=base_inlet,
        seconds=time.perf_counter() - started,
        components_kw={
            "chillers": float(batch.chiller_kw[0]),
            "tower_fans": float(batch.tower_fan_kw[0]),
            "chw_pumps": float(batch.chw_pump_kw[0]),
            "cw_pumps": float(batch.cw_pump_kw[0]),
        },
    )
