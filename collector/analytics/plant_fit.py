"""Chiller-plant component models fitted from logged telemetry by robust least squares.

Pure functions over numpy arrays: no I/O, no clock. The optimiser predicts plant
power only with what is fitted here (and the plant's nameplate), never with
the simulator's coefficients.

Every model is fitted with scipy's ``least_squares`` under a soft-L1 loss, then
refitted without the samples whose residual exceeds ``outlier_sigma`` robust
standard deviations. Where textbook physics gives the structure, the model has
that structure and only its few physical constants are fitted:

- ``chiller``: power per running chiller over its rated capacity, in the
  EnergyPlus electric-EIR structure: ``A(L,E) + B(L,E)·x + C(L,E)·x²`` with
  ``A``, ``B``, ``C`` biquadratic in the leaving chilled-water temperature
  ``L`` and the (head-pressure floored) entering condenser-water temperature
  ``E``, ``x`` the part-load ratio on rated capacity, and below the minimum
  unloading ratio the compressor cycling (power proportional to load);
- ``economiser``: a counterflow plate exchanger (ε-NTU) whose thermal
  resistance is a wall term plus one film term per side, each film scaling
  with its flow to the power -0.8; fitted from the heat it moves;
- ``tower_approach``: tower leaving water minus wet-bulb, in the structure of
  the YorkCalc correlation: all 27 products of powers 0-2 of wet-bulb, range
  and liquid-to-gas ratio (water per wetted cell over fan speed), fitted on
  samples with the fans at or above their minimum speed (below it they cycle,
  which is not modelled). When the nameplate gives the towers' cell staging
  the water per wetted cell is known; otherwise the towers are treated as one
  and every term is also multiplied by the condenser flow;
- ``tower_fan``: fan power against speed cubed (linear below the minimum
  speed, where fans cycle), times the cells wetted (or the flow when unknown);
- ``chw_pump`` and ``cw_pump``: power against flow ratio, ``r, r², r³``;
- ``it_inlet``: IT inlet minus chilled-water supply temperature, from one
  aggregate counterflow cooling coil (ε-NTU) between the chilled water and an
  air stream that warms by a fixed rise across the IT equipment; its UA, the
  rise and the supply-air-to-inlet offset are fitted. A linear model in the
  chilled-water flow and the load stands in where the coil fits clearly
  worse (an error bound over 1.5 times the linear model's, plus 0.02 K);
- ``load_factor``: chilled-water load per kW of IT.

The IT load is averaged over ``it_smoothing_s`` before fitting where its
meters' noise is a sizeable part of its spread: a noisy input flattens what
least squares learns of its effect (errors in variables), and no residual
shows that.

Each fit reports R², RMSE, residual quantiles, samples used and rejected, the
range of every input it saw, and an **error bound**: the residuals binned by
the model's main input, and in each bin the mean residual's magnitude plus
``error_z`` standard errors. Measurement noise averages out of it; a model
that is wrong somewhere shows there. The chiller and tower models also record
their joint :class:`Coverage` (which combinations of inputs were seen, and for
the towers a local error bound in each). :class:`PlantFit` sums the fits up as
a status (``ok``, ``sparse``, ``noisy`` or ``stale``) with the reasons.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from scipy.optimize import least_squares

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

CP_WATER_KJ_KG_K: Final = 4.186
"""Specific heat of water, kJ/(kg·K)."""
NS_PER_S: Final = 1_000_000_000
FILM_EXPONENT: Final = 0.8
"""Film conductance of a plate exchanger grows with flow to this power (turbulent flow)."""
SAMPLE_FIELDS: Final = (
    "wet_bulb_c",
    "it_kw",
    "chw_supply_c",
    "chw_return_c",
    "chw_flow_ratio",
    "cw_flow_ratio",
    "cw_entering_chiller_c",
    "tower_leaving_c",
    "tower_entering_c",
    "chillers_running",
    "economiser_on",
    "chiller_kw",
    "tower_fan_kw",
    "tower_fan_speed",
    "chw_pump_kw",
    "cw_pump_kw",
    "it_inlet_c",
)
"""Plant-level series the fit reads, one value per sample (NaN where unknown).

Temperatures in °C; powers in kW; flow ratios and the fan speed as fractions of
design (0-1); ``chillers_running`` a count; ``economiser_on`` 0 or 1;
``it_inlet_c`` the warmest IT inlet reported.
"""

ESSENTIAL: Final = ("load_factor", "chiller", "tower_approach", "tower_fan", "chw_pump", "cw_pump", "it_inlet")
"""Models without which no recommendation is made; ``economiser`` is optional."""


@dataclass(frozen=True, slots=True)
class Nameplate:
    """What the site knows about its plant without measuring it (not fitted).

    Attributes:
        chillers: Chillers installed.
        duty_chillers: Chillers the design flows are shared among.
        chiller_capacity_kw: Rated cooling capacity of one chiller, kW.
        chw_design_flow_kg_s: Design chilled-water flow of the plant, kg/s.
        cw_design_flow_kg_s: Design condenser-water flow of the plant, kg/s.
        min_unloading: Part-load ratio below which the compressors cycle.
        condenser_floor_c: Head-pressure control: the chillers never see
            condenser water colder than this, °C.
        min_lift_k: Head-pressure control: nor less than this above the
            chilled-water supply, K.
        tower_min_speed: Lowest fan speed before the fans cycle (fraction).
        tower_cells: Cooling-tower cells installed (0: unknown, the towers
            are modelled as one).
        tower_cell_min_flow_kg_s: Condenser flow each wetted cell needs: the
            towers wet as many cells as get at least this much each (at
            least one, at most ``tower_cells``), kg/s (0: unknown).

    """

    chillers: int
    duty_chillers: int
    chiller_capacity_kw: float
    chw_design_flow_kg_s: float
    cw_design_flow_kg_s: float
    min_unloading: float = 0.2
    condenser_floor_c: float = 13.0
    min_lift_k: float = 4.0
    tower_min_speed: float = 0.2
    tower_cells: int = 0
    tower_cell_min_flow_kg_s: float = 0.0

    @property
    def design_load_kw(self) -> float:
        """Cooling capacity of the duty chillers, kW."""
        return self.duty_chillers * self.chiller_capacity_kw

    @property
    def knows_tower_cells(self) -> bool:
        """Whether the towers' cell staging is known."""
        return self.tower_cells > 0 and self.tower_cell_min_flow_kg_s > 0.0

    def cell_step(self) -> float:
        """Condenser flow ratio per additional wetted cell (inf when the staging is unknown)."""
        if not self.knows_tower_cells:
            return math.inf
        return self.tower_cell_min_flow_kg_s / self.cw_design_flow_kg_s

    def cells_wetted(self, cw_flow_ratio: npt.ArrayLike) -> FloatArray:
        """Tower cells wetted at a condenser flow ratio (1 when the staging is unknown)."""
        r = np.asarray(cw_flow_ratio, dtype=np.float64)
        if not self.knows_tower_cells:
            return np.ones_like(r)
        result: FloatArray = np.clip(np.floor(r / self.cell_step()), 1.0, float(self.tower_cells))
        return result

    def water_per_cell(self, cw_flow_ratio: npt.ArrayLike) -> FloatArray:
        """Flow per wetted cell over the cell's minimum (1 when the staging is unknown)."""
        r = np.asarray(cw_flow_ratio, dtype=np.float64)
        if not self.knows_tower_cells:
            return np.ones_like(r)
        result: FloatArray = r / (self.cells_wetted(r) * self.cell_step())
        return result


@dataclass(frozen=True, slots=True)
class FitSettings:
    """Thresholds of the fit and of its verdict.

    Attributes:
        outlier_sigma: Samples further than this many robust standard
            deviations from the first fit are dropped before the final fit.
        min_samples: Fewest usable samples for each essential model.
        min_r2: Lowest acceptable R² of each essential model.
        max_age_s: Data whose newest sample is older than this is stale.
        coverage_quantile: Fraction cut from each end when recording the
            range of conditions covered (so single strays do not widen it).
        error_bins: Bins of the main input the residuals are averaged in for
            the error bound.
        error_z: Standard errors of a bin's mean residual added to its
            magnitude in the error bound.
        it_smoothing_s: The IT load is averaged over a centred window this
            long before fitting (0: not at all). It changes slowly while its
            meters are noisy next to its variation, and a noisy input flattens
            what a least-squares fit learns of its effect.
        it_smoothing_noise: ... but only where its noise (estimated from
            successive samples) is at least this fraction of its spread:
            where the load itself moves more between samples than its meters
            err (samples far apart in the load's time), smoothing would blur
            it more than it cleans it.
        coverage_bins: Most cells per input of the joint-coverage grids of
            the chiller and tower models.
        coverage_min_count: Samples a grid cell needs to count as seen.

    """

    outlier_sigma: float = 4.0
    min_samples: int = 200
    min_r2: float = 0.8
    max_age_s: float = 1800.0
    coverage_quantile: float = 0.002
    error_bins: int = 8
    error_z: float = 2.0
    it_smoothing_s: float = 3600.0
    it_smoothing_noise: float = 0.25
    coverage_bins: int = 6
    coverage_min_count: int = 3


@dataclass(frozen=True, slots=True)
class PlantSamples:
    """Aligned plant-level samples (see :data:`SAMPLE_FIELDS`)."""

    ts_ns: IntArray
    columns: Mapping[str, FloatArray]

    @classmethod
    def from_mapping(cls, ts_ns: npt.ArrayLike, columns: Mapping[str, npt.ArrayLike]) -> PlantSamples:
        """Samples from arrays of equal length; fields left out are all NaN."""
        ts = np.asarray(ts_ns, dtype=np.int64).ravel()
        unknown = sorted(set(columns) - set(SAMPLE_FIELDS))
        if unknown:
            raise ValueError(f"unknown plant sample fields: {', '.join(unknown)}")
        cols: dict[str, FloatArray] = {}
        for name in SAMPLE_FIELDS:
            if name in columns:
                values = np.asarray(columns[name], dtype=np.float64).ravel()
                if values.size != ts.size:
                    raise ValueError(f"field {name!r} has {values.size} values for {ts.size} times")
                cols[name] = values
            else:
                cols[name] = np.full(ts.size, np.nan)
        return cls(ts, cols)

    def __len__(self) -> int:
        return int(self.ts_ns.size)

    def __getitem__(self, name: str) -> FloatArray:
        return self.columns[name]


# ---------------------------------------------------------------------------
# Physics and feature maps (shared by fitting and prediction)
# ---------------------------------------------------------------------------


def _broadcast(*arrays: npt.ArrayLike) -> list[FloatArray]:
    """The arrays as float64, broadcast to one shape."""
    return [
        np.asarray(a, dtype=np.float64) for a in np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in arrays))
    ]


def counterflow_conductance_kw_k(
    ua_kw_k: npt.ArrayLike, c_a_kw_k: npt.ArrayLike, c_b_kw_k: npt.ArrayLike
) -> FloatArray:
    """Counterflow exchanger ε·C_min, kW/K: the heat moved per kelvin between the two inlets (ε-NTU)."""
    ua, ca, cb = _broadcast(ua_kw_k, c_a_kw_k, c_b_kw_k)
    ca = np.maximum(ca, 1e-12)
    cb = np.maximum(cb, 1e-12)
    c_min = np.minimum(ca, cb)
    c_r = c_min / np.maximum(ca, cb)
    ntu = np.maximum(ua, 0.0) / c_min
    x = np.exp(-ntu * (1.0 - c_r))
    balanced = np.abs(1.0 - c_r) < 1e-9
    eps = np.where(balanced, ntu / (1.0 + ntu), (1.0 - x) / np.where(balanced, 1.0, 1.0 - c_r * x))
    result: FloatArray = eps * c_min
    return result


def _biquad(leaving_c: FloatArray, entering_c: FloatArray) -> list[FloatArray]:
    """Biquadratic terms in centred, scaled temperatures (for conditioning)."""
    lv = (leaving_c - 10.0) / 5.0
    en = (entering_c - 22.0) / 8.0
    return [np.ones_like(lv), lv, lv * lv, en, en * en, lv * en]


def effective_entering_c(leaving_c: FloatArray, entering_c: FloatArray, plate: Nameplate) -> FloatArray:
    """Condenser water the compressor acts on: at least the head-pressure floor and the minimum lift."""
    result: FloatArray = np.maximum(entering_c, np.maximum(plate.condenser_floor_c, leaving_c + plate.min_lift_k))
    return result


def chiller_features(plr: FloatArray, leaving_c: FloatArray, entering_c: FloatArray, plate: Nameplate) -> FloatArray:
    """Features of per-chiller power over rated capacity (columns last)."""
    plr, leaving_c, entering_c = _broadcast(plr, leaving_c, entering_c)
    x = np.maximum(plr, 0.0)
    xc = np.maximum(x, plate.min_unloading)
    cycling = np.minimum(x / plate.min_unloading, 1.0)
    phi = _biquad(leaving_c, effective_entering_c(leaving_c, entering_c, plate))
    cols = [p * cycling for p in phi] + [p * xc * cycling for p in phi] + [p * xc * xc * cycling for p in phi]
    return np.stack(cols, axis=-1)


def _yorkcalc_terms(wet_bulb_c: FloatArray, range_k: FloatArray, lg: FloatArray) -> FloatArray:
    """The 27 YorkCalc-structure terms in centred, scaled wet-bulb, range and liquid-to-gas ratio."""
    t = (wet_bulb_c - 10.0) / 10.0
    r = (range_k - 5.0) / 5.0
    g = (lg - 3.0) / 3.0
    tp = (np.ones_like(t), t, t * t)
    rp = (np.ones_like(r), r, r * r)
    gp = (np.ones_like(g), g, g * g)
    return np.stack([gk * rj * ti for gk in gp for rj in rp for ti in tp], axis=-1)


def tower_features(
    wet_bulb_c: npt.ArrayLike, range_k: npt.ArrayLike, cw_ratio: npt.ArrayLike, speed: npt.ArrayLike, plate: Nameplate
) -> FloatArray:
    """Features of the tower approach (columns last).

    The liquid-to-gas ratio is water per wetted cell over fan speed (floored
    at the minimum speed). Without the cell staging every term is also taken
    times the condenser flow ratio.
    """
    twb, rng, w2, s = _broadcast(wet_bulb_c, range_k, cw_ratio, speed)
    lg = plate.water_per_cell(w2) / np.maximum(np.minimum(s, 1.0), plate.tower_min_speed)
    phi = _yorkcalc_terms(twb, rng, lg)
    if plate.knows_tower_cells:
        return phi
    return np.concatenate([phi, phi * w2[..., np.newaxis]], axis=-1)


def fan_speed_term(speed: FloatArray, plate: Nameplate) -> FloatArray:
    """Fan power per unit of full-speed power: speed³, and linear (cycling) below the minimum speed."""
    s = np.clip(speed, 0.0, 1.0)
    low = plate.tower_min_speed
    result: FloatArray = np.where(s >= low, s**3, s * low * low)
    return result


def fan_features(speed: FloatArray, cw_ratio: FloatArray, plate: Nameplate) -> FloatArray:
    """Features of tower fan power: per-cell power times the cells wetted (or the flow when unknown)."""
    speed, cw_ratio = _broadcast(speed, cw_ratio)
    s3 = fan_speed_term(speed, plate)
    if plate.knows_tower_cells:
        return np.stack([s3 * plate.cells_wetted(cw_ratio)], axis=-1)
    return np.stack([s3, s3 * cw_ratio], axis=-1)


def pump_features(ratio: FloatArray) -> FloatArray:
    """Features of pump power (affinity laws with losses: r, r², r³)."""
    return np.stack([ratio, ratio * ratio, ratio**3], axis=-1)


def inlet_features(chw_ratio: FloatArray, it_fraction: FloatArray) -> FloatArray:
    """Features of the linear stand-in for IT inlet minus chilled-water supply temperature."""
    chw_ratio, q = _broadcast(chw_ratio, it_fraction)
    inv = 1.0 / np.maximum(chw_ratio, 0.05)
    return np.stack([np.ones_like(inv), inv, inv * inv, q, q * inv], axis=-1)


def _coil_offset_k(params: FloatArray, chw_ratio: FloatArray, load_kw: FloatArray, plate: Nameplate) -> FloatArray:
    """IT inlet minus chilled-water supply from the coil: ``Q/(ε·C_min) - rise + offset``.

    ``params`` are (UA in MW/K, air rise across the IT equipment in K, supply
    air to IT inlet offset in K); the air capacity rate is ``Q / rise``.
    """
    ua_kw_k = params[0] * 1000.0
    rise = params[1]
    q = np.maximum(load_kw, 1e-6)
    c_w = np.maximum(chw_ratio, 1e-3) * plate.chw_design_flow_kg_s * CP_WATER_KJ_KG_K
    g = counterflow_conductance_kw_k(ua_kw_k, q / rise, c_w)
    result: FloatArray = q / np.maximum(g, 1e-9) - rise + params[2]
    return result


def _exchanger_ua_kw_k(params: FloatArray, chw_ratio: FloatArray, cw_ratio: FloatArray) -> FloatArray:
    """Plate exchanger UA, kW/K: 1/UA = wall + hot film / r1^0.8 + cold film / r2^0.8 (params in 1e-4 K/kW)."""
    r1 = np.maximum(chw_ratio, 1e-3)
    r2 = np.maximum(cw_ratio, 1e-3)
    resistance = 1e-4 * (params[0] + params[1] * r1**-FILM_EXPONENT + params[2] * r2**-FILM_EXPONENT)
    result: FloatArray = 1.0 / np.maximum(resistance, 1e-12)
    return result


def _economiser_conductance(
    params: FloatArray, chw_ratio: FloatArray, cw_ratio: FloatArray, plate: Nameplate
) -> FloatArray:
    c1 = np.maximum(chw_ratio, 1e-3) * plate.chw_design_flow_kg_s * CP_WATER_KJ_KG_K
    c2 = np.maximum(cw_ratio, 1e-3) * plate.cw_design_flow_kg_s * CP_WATER_KJ_KG_K
    return counterflow_conductance_kw_k(_exchanger_ua_kw_k(params, chw_ratio, cw_ratio), c1, c2)


# ---------------------------------------------------------------------------
# Robust fitting
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Coverage:
    """Where in the joint space of a model's inputs it saw data: an occupancy grid.

    The range of each input alone does not say that every combination was
    seen: a polynomial can be far off in a corner the data never reached.

    Attributes:
        keys: The inputs, in grid order.
        lo: Lower edge of each input's grid, in its unit.
        hi: Upper edge of each input's grid.
        occupied: True for each grid cell holding at least ``min_count`` samples.
        bound: The model's local error bound in each cell, in its unit: the
            cell's mean residual in magnitude plus ``z`` standard errors
            (with the residuals' overall spread); inf where not occupied.

    """

    keys: tuple[str, ...]
    lo: tuple[float, ...]
    hi: tuple[float, ...]
    occupied: BoolArray
    bound: FloatArray

    @classmethod
    def of(
        cls,
        samples: Mapping[str, FloatArray],
        bins: int,
        min_count: int,
        residuals: FloatArray | None = None,
        z: float = 2.0,
    ) -> Coverage:
        """The occupancy of samples (finite rows only) on a grid between their extremes.

        At most ``bins`` cells per input, fewer where there are too few
        samples to fill them (about ``2·min_count`` a cell if spread evenly),
        so that a short history is not judged on a grid it could never fill.
        With the model's ``residuals`` (one per sample) each cell also gets a
        local error bound.
        """
        keys = tuple(samples)
        data = np.stack([samples[k] for k in keys], axis=-1)
        resid = np.zeros(data.shape[0]) if residuals is None else np.asarray(residuals, dtype=np.float64)
        finite = np.all(np.isfinite(data), axis=1) & np.isfinite(resid)
        data, resid = data[finite], resid[finite]
        bins = max(2, min(bins, int((data.shape[0] / (2.0 * max(min_count, 1))) ** (1.0 / len(keys)))))
        lo = data.min(axis=0) if data.size else np.zeros(len(keys))
        hi = data.max(axis=0) if data.size else np.ones(len(keys))
        shape = (bins,) * len(keys)
        grid = cls(keys, tuple(lo.tolist()), tuple(hi.tolist()), np.zeros(shape, dtype=np.bool_), np.zeros(shape))
        index = grid._flat_index([data[:, i] for i in range(len(keys))])
        counts = np.bincount(index, minlength=bins ** len(keys))
        sums = np.bincount(index, weights=resid, minlength=bins ** len(keys))
        spread = float(np.sqrt(np.mean(resid**2))) if resid.size else 0.0
        occupied = counts >= min_count
        mean = sums / np.maximum(counts, 1)
        bound = np.where(occupied, np.abs(mean) + z * spread / np.sqrt(np.maximum(counts, 1)), np.inf)
        return cls(keys, grid.lo, grid.hi, occupied.reshape(shape), bound.reshape(shape))

    def _flat_index(self, values: list[FloatArray]) -> IntArray:
        bins = self.occupied.shape[0] if self.occupied.ndim else 1
        index = np.zeros(np.broadcast(*values).shape, dtype=np.int64)
        for v, lo, hi in zip(values, self.lo, self.hi, strict=True):
            cell = np.floor((v - lo) / max(hi - lo, 1e-12) * bins)
            index = index * bins + np.clip(np.nan_to_num(cell, nan=0.0), 0, bins - 1).astype(np.int64)
        return index

    def inside(self, values: Mapping[str, FloatArray]) -> BoolArray:
        """Whether each point (inputs broadcast; beyond the extremes counts as the edge cell) lies in a seen cell."""
        result: BoolArray = self.occupied.ravel()[self._flat_index([np.asarray(values[k]) for k in self.keys])]
        return result

    def local_bound(self, values: Mapping[str, FloatArray]) -> FloatArray:
        """The local error bound at each point (inf outside the seen cells)."""
        result: FloatArray = self.bound.ravel()[self._flat_index([np.asarray(values[k]) for k in self.keys])]
        return result


@dataclass(frozen=True)
class ComponentFit:
    """One fitted component model and its quality.

    Attributes:
        name: Model name (``chiller``, ``tower_approach``, ...).
        coef: Fitted coefficients (of the features, or the physical constants).
        r2: Coefficient of determination on the samples kept.
        rmse: Root-mean-square residual on the samples kept, in ``unit``.
        residual_p95: 95th percentile of the absolute residual, in ``unit``.
        unit: Unit of the modelled quantity.
        samples: Samples used in the final fit.
        rejected: Samples dropped as outliers.
        ranges: Range of each input covered by the samples kept.
        problem: Why the model could not be fitted ("" when it was).
        form: ``linear`` (features times ``coef``) or the physical form
            (``exchanger``, ``coil``).
        bound_key: The input the error bound is binned by.
        bound_edges: Edges of its bins.
        bound_values: Error bound in each bin, in ``unit``.
        coverage: Where in the joint space of its inputs the model saw data
            (None: not recorded).

    """

    name: str
    coef: FloatArray
    r2: float
    rmse: float
    residual_p95: float
    unit: str
    samples: int
    rejected: int
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    problem: str = ""
    form: str = "linear"
    bound_key: str = ""
    bound_edges: tuple[float, ...] = ()
    bound_values: tuple[float, ...] = ()
    coverage: Coverage | None = None

    @property
    def fitted(self) -> bool:
        """Whether there are coefficients to predict with."""
        return not self.problem

    @property
    def error_bound(self) -> float:
        """The largest error bound over the bins, in ``unit`` (NaN when unknown)."""
        return max(self.bound_values) if self.bound_values else math.nan

    def bound_at(self, values: npt.ArrayLike) -> FloatArray:
        """The error bound at values of :attr:`bound_key` (the nearest bin outside them), in ``unit``."""
        x = np.asarray(values, dtype=np.float64)
        if not self.bound_values:
            return np.full(x.shape, math.nan)
        edges = np.asarray(self.bound_edges[1:-1], dtype=np.float64)
        index = np.searchsorted(edges, x, side="right")
        result: FloatArray = np.asarray(self.bound_values, dtype=np.float64)[index]
        return result

    def to_json(self) -> dict[str, Any]:
        """The fit quality as JSON-ready data."""
        return {
            "form": self.form,
            "r2": _round(self.r2, 4),
            "rmse": _round(self.rmse, 4),
            "residual_p95": _round(self.residual_p95, 4),
            "error_bound": _round(self.error_bound, 4),
            "unit": self.unit,
            "samples": self.samples,
            "rejected": self.rejected,
            "ranges": {k: [_round(lo, 3), _round(hi, 3)] for k, (lo, hi) in self.ranges.items()},
            "problem": self.problem or None,
        }


def _round(x: float, nd: int) -> float | None:
    return round(x, nd) if math.isfinite(x) else None


def _unfitted(
    name: str, unit: str, n_coef: int, problem: str, *, samples: int = 0, form: str = "linear"
) -> ComponentFit:
    return ComponentFit(name, np.zeros(n_coef), math.nan, math.nan, math.nan, unit, samples, 0, {}, problem, form=form)


def _error_bins(
    resid: FloatArray, key_values: FloatArray, settings: FitSettings
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Residuals binned by quantiles of an input: edges, and per bin ``|mean| + z·SE``."""
    bins = max(1, min(settings.error_bins, resid.size // 50))
    edges = np.quantile(key_values, np.linspace(0.0, 1.0, bins + 1))
    edges = np.unique(edges)
    if edges.size < 2:
        edges = np.array([float(key_values.min()), float(key_values.max())])
    index = np.clip(np.searchsorted(edges[1:-1], key_values, side="right"), 0, edges.size - 2)
    values = []
    for b in range(edges.size - 1):
        r = resid[index == b]
        if r.size < 2:
            values.append(float(np.abs(resid).mean()))
            continue
        values.append(abs(float(r.mean())) + settings.error_z * float(r.std(ddof=1)) / math.sqrt(r.size))
    return tuple(float(e) for e in edges), tuple(values)


def _quality(  # noqa: PLR0917  (one record of everything a fit reports)
    name: str,
    unit: str,
    coef: FloatArray,
    y: FloatArray,
    resid: FloatArray,
    inputs: Mapping[str, FloatArray],
    kept: BoolArray,
    settings: FitSettings,
    *,
    form: str,
    bound_key: str,
) -> ComponentFit:
    """A fitted model's record: quality, ranges and error bound over the samples kept."""
    rk, yk = resid[kept], y[kept]
    ss_tot = float(np.sum((yk - yk.mean()) ** 2))
    r2 = 1.0 - float(np.sum(rk**2)) / ss_tot if ss_tot > 0 else math.nan
    q = settings.coverage_quantile
    ranges = {key: (float(np.quantile(v[kept], q)), float(np.quantile(v[kept], 1.0 - q))) for key, v in inputs.items()}
    key = bound_key if bound_key in inputs else next(iter(inputs))
    edges, values = _error_bins(rk, inputs[key][kept], settings)
    return ComponentFit(
        name=name,
        coef=coef,
        r2=r2,
        rmse=float(np.sqrt(np.mean(rk**2))),
        residual_p95=float(np.quantile(np.abs(rk), 0.95)),
        unit=unit,
        samples=int(np.count_nonzero(kept)),
        rejected=int(kept.size - np.count_nonzero(kept)),
        ranges=ranges,
        form=form,
        bound_key=key,
        bound_edges=edges,
        bound_values=values,
    )


def _usable(target: FloatArray, inputs: Mapping[str, FloatArray], extra: BoolArray | None = None) -> BoolArray:
    good = np.isfinite(target)
    for values in inputs.values():
        good &= np.isfinite(values)
    if extra is not None:
        good &= extra
    return good


def _mad_sigma(resid: FloatArray) -> float:
    return float(np.median(np.abs(resid - np.median(resid)))) * 1.4826


def robust_linear_fit(  # noqa: PLR0917  (a fit takes the whole problem)
    name: str,
    features: FloatArray,
    target: FloatArray,
    inputs: Mapping[str, FloatArray],
    settings: FitSettings,
    unit: str,
    *,
    bound_key: str = "",
) -> ComponentFit:
    """Fit ``target ≈ features @ coef`` robustly and report the quality.

    Ordinary least squares gives the start; scipy's ``least_squares`` with a
    soft-L1 loss (scale from the median absolute deviation) gives a fit that
    a minority of bad samples cannot drag; samples beyond ``outlier_sigma``
    robust standard deviations are then dropped and the fit repeated.
    """
    n_features = features.shape[1]
    good = _usable(target, inputs, np.all(np.isfinite(features), axis=1))
    count = int(np.count_nonzero(good))
    if count < max(settings.min_samples, 3 * n_features):
        return _unfitted(name, unit, n_features, f"{count} usable samples, fewer than needed", samples=count)
    x_all, y_all = features[good], target[good]
    scale = np.maximum(np.sqrt(np.mean(x_all * x_all, axis=0)), 1e-12)
    xs = x_all / scale
    coef, *_ = np.linalg.lstsq(xs, y_all, rcond=None)
    kept = np.ones(count, dtype=np.bool_)
    for _ in range(2):
        xk, yk = xs[kept], y_all[kept]
        f_scale = max(_mad_sigma(yk - xk @ coef), 1e-9 * (float(np.std(yk)) + 1e-12), 1e-12)
        result = least_squares(
            lambda c, xk=xk, yk=yk: xk @ c - yk,
            coef,
            jac=lambda _c, xk=xk, _yk=yk: xk,
            loss="soft_l1",
            f_scale=f_scale,
            method="trf",
        )
        coef = np.asarray(result.x, dtype=np.float64)
        resid = y_all - xs @ coef
        new_kept = np.abs(resid) <= settings.outlier_sigma * max(_mad_sigma(resid[kept]), 1e-12)
        if np.array_equal(new_kept, kept):
            break
        kept = new_kept
        if int(np.count_nonzero(kept)) < 3 * n_features:
            return _unfitted(name, unit, n_features, "too few samples left after outlier rejection", samples=count)
    resid = y_all - xs @ coef
    used = {k: v[good] for k, v in inputs.items()}
    return _quality(name, unit, coef / scale, y_all, resid, used, kept, settings, form="linear", bound_key=bound_key)


def robust_nonlinear_fit(  # noqa: PLR0917  (a fit takes the whole problem)
    name: str,
    model: Callable[[FloatArray, IntArray], FloatArray],
    starts: list[FloatArray],
    bounds: tuple[FloatArray, FloatArray],
    target: FloatArray,
    inputs: Mapping[str, FloatArray],
    settings: FitSettings,
    unit: str,
    *,
    form: str,
    valid: BoolArray | None = None,
    bound_key: str = "",
) -> ComponentFit:
    """Fit ``target ≈ model(params, rows)`` robustly (soft-L1, then outlier rejection) from the best start.

    ``model`` predicts the target of the given sample rows (indices into the
    full arrays) for a parameter vector.
    """
    n_params = starts[0].size
    good = _usable(target, inputs, valid)
    count = int(np.count_nonzero(good))
    if count < max(settings.min_samples, 3 * n_params):
        return _unfitted(name, unit, n_params, f"{count} usable samples, fewer than needed", samples=count, form=form)
    rows = np.flatnonzero(good)
    y = target[good]

    def solve(p0: FloatArray, sel: IntArray, f_scale: float, loss: str) -> tuple[FloatArray, float]:
        res = least_squares(
            lambda p: model(p, rows[sel]) - y[sel], p0, bounds=bounds, loss=loss, f_scale=f_scale, method="trf"
        )
        return np.asarray(res.x, dtype=np.float64), float(res.cost)

    everything = np.arange(count)
    best = min((solve(p, everything, 1.0, "linear") for p in starts), key=lambda pc: pc[1])
    params = best[0]
    if not np.all(np.isfinite(params)):
        return _unfitted(name, unit, n_params, "the fit did not converge", samples=count, form=form)
    kept = np.ones(count, dtype=np.bool_)
    for _ in range(2):
        sel = np.flatnonzero(kept)
        f_scale = max(_mad_sigma(model(params, rows[sel]) - y[sel]), 1e-9)
        params, _ = solve(params, sel, f_scale, "soft_l1")
        resid = model(params, rows) - y
        new_kept = np.abs(resid) <= settings.outlier_sigma * max(_mad_sigma(resid[kept]), 1e-12)
        if np.array_equal(new_kept, kept):
            break
        kept = new_kept
        if int(np.count_nonzero(kept)) < 3 * n_params:
            return _unfitted(
                name, unit, n_params, "too few samples left after outlier rejection", samples=count, form=form
            )
    resid = y - model(params, rows)
    used = {k: v[good] for k, v in inputs.items()}
    return _quality(name, unit, params, y, resid, used, kept, settings, form=form, bound_key=bound_key)


def noise_to_spread(ts_ns: IntArray, values: FloatArray) -> float:
    """Noise of a series (robust spread of successive differences, over √2) over its robust spread (0 if flat)."""
    x = values[np.argsort(ts_ns, kind="stable")]
    x = x[np.isfinite(x)]
    if x.size < 3:
        return 0.0
    d = np.diff(x)
    noise = _mad_sigma(d) / math.sqrt(2.0)
    spread = _mad_sigma(x)
    return noise / spread if spread > 0.0 else 0.0


def time_smoothed(ts_ns: IntArray, values: FloatArray, window_s: float) -> FloatArray:
    """Mean of the finite values within ±window/2 of each sample's time (NaN stays NaN)."""
    if window_s <= 0.0 or values.size == 0:
        return values
    order = np.argsort(ts_ns, kind="stable")
    ts = ts_ns[order]
    x = values[order]
    finite = np.isfinite(x)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, x, 0.0))])
    counts = np.concatenate([[0], np.cumsum(finite)])
    half = round(window_s * NS_PER_S / 2)
    lo = np.searchsorted(ts, ts - half, side="left")
    hi = np.searchsorted(ts, ts + half, side="right")
    n = counts[hi] - counts[lo]
    mean = (sums[hi] - sums[lo]) / np.maximum(n, 1)
    smoothed = np.where(finite & (n > 0), mean, np.nan)
    result = np.empty_like(values)
    result[order] = smoothed
    return result


# ---------------------------------------------------------------------------
# The plant fit
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PlantFit:
    """Every component model, the load factor, and the verdict on the data.

    Attributes:
        nameplate: The plant's nameplate the models are normalised with.
        models: Component fits by name.
        load_factor: Chilled-water load per kW of IT.
        status: ``ok``, ``sparse`` (too little data), ``noisy`` (a model fits
            too poorly) or ``stale`` (the newest sample is too old).
        problems: Why the status is not ``ok``.
        samples: Samples offered.
        first_ns: Time of the oldest sample (0 with none).
        last_ns: Time of the newest sample (0 with none).
        fitted_at_ns: The time the fit was judged at.

    """

    nameplate: Nameplate
    models: dict[str, ComponentFit]
    load_factor: float
    status: str
    problems: tuple[str, ...]
    samples: int
    first_ns: int
    last_ns: int
    fitted_at_ns: int

    @property
    def usable(self) -> bool:
        """Whether the optimiser may recommend from this fit."""
        return self.status == "ok"

    def model(self, name: str) -> ComponentFit:
        """A component fit by name."""
        return self.models[name]

    def to_json(self) -> dict[str, Any]:
        """Status, problems and every model's quality as JSON-ready data."""
        return {
            "status": self.status,
            "problems": list(self.problems),
            "samples": self.samples,
            "first": self.first_ns / NS_PER_S if self.samples else None,
            "last": self.last_ns / NS_PER_S if self.samples else None,
            "load_factor": _round(self.load_factor, 4),
            "models": {name: m.to_json() for name, m in self.models.items()},
        }


def _chiller_load_kw(s: PlantSamples, plate: Nameplate) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Total chilled-water load, economiser duty and chiller load, kW, from temperatures and flows."""
    c_chw = s["chw_flow_ratio"] * plate.chw_design_flow_kg_s * CP_WATER_KJ_KG_K
    c_cw = s["cw_flow_ratio"] * plate.cw_design_flow_kg_s * CP_WATER_KJ_KG_K
    total = c_chw * (s["chw_return_c"] - s["chw_supply_c"])
    econ_on = s["economiser_on"] > 0.5
    econ = np.where(econ_on, c_cw * (s["cw_entering_chiller_c"] - s["tower_leaving_c"]), 0.0)
    econ = np.where(np.isfinite(s["economiser_on"]), econ, np.nan)
    return total, econ, total - econ


def _fit_economiser(
    s: PlantSamples, p: Nameplate, econ_kw: FloatArray, usable: BoolArray, st: FitSettings
) -> ComponentFit:
    """The plate exchanger (ε-NTU, film resistances) from the heat it moved on unthrottled samples."""
    r1, r2 = s["chw_flow_ratio"], s["cw_flow_ratio"]
    driving = s["chw_return_c"] - s["tower_leaving_c"]

    def model(params: FloatArray, rows: IntArray) -> FloatArray:
        result: FloatArray = _economiser_conductance(params, r1[rows], r2[rows], p) * driving[rows]
        return result

    zero = np.zeros(3)
    return robust_nonlinear_fit(
        "economiser",
        model,
        [np.array([2.0, 0.5, 0.5]), np.array([0.5, 2.0, 2.0])],
        (zero, np.full(3, np.inf)),
        np.where(usable, econ_kw, np.nan),
        {"chw_flow_ratio": r1, "cw_flow_ratio": r2},
        st,
        "kW",
        form="exchanger",
        valid=np.isfinite(driving),
        bound_key="cw_flow_ratio",
    )


def _fit_towers(s: PlantSamples, p: Nameplate, inputs: Mapping[str, FloatArray], st: FitSettings) -> ComponentFit:
    """Tower approach on the samples with the fans at or above their minimum speed."""
    speed = inputs["fan_speed"]
    approach = np.where(speed >= p.tower_min_speed, s["tower_leaving_c"] - s["wet_bulb_c"], np.nan)
    features = tower_features(inputs["wet_bulb_c"], inputs["range_k"], inputs["cw_flow_ratio"], speed, p)
    # The approaches seen are recorded too: a prediction far outside them is an extrapolation.
    seen = {**inputs, "approach_k": approach}
    return robust_linear_fit("tower_approach", features, approach, seen, st, "K", bound_key="fan_speed")


def fit_plant(
    samples: PlantSamples,
    nameplate: Nameplate,
    now_ns: int | None = None,
    settings: FitSettings | None = None,
) -> PlantFit:
    """Fit every component model from plant samples and judge the result.

    Args:
        samples: Aligned plant-level samples.
        nameplate: The plant's nameplate.
        now_ns: The time to judge staleness at (default: the newest sample).
        settings: Fit thresholds.

    """
    st = settings or FitSettings()
    p = nameplate
    s = samples
    valid_ts = s.ts_ns[np.isfinite(s["it_kw"])] if len(s) else s.ts_ns
    first = int(valid_ts.min()) if valid_ts.size else 0
    last = int(valid_ts.max()) if valid_ts.size else 0
    judged = now_ns if now_ns is not None else last
    models: dict[str, ComponentFit] = {}

    total, econ_kw, chiller_load = _chiller_load_kw(s, p)
    it = s["it_kw"]
    if noise_to_spread(s.ts_ns, it) >= st.it_smoothing_noise:
        it = time_smoothed(s.ts_ns, it, st.it_smoothing_s)

    # Load factor: chilled-water load per kW of IT (median of the ratio, robust to noise).
    ratio = total / it
    ok = np.isfinite(ratio) & (it > 0.05 * p.design_load_kw)
    models["load_factor"] = robust_linear_fit(
        "load_factor", np.ones((int(np.count_nonzero(ok)), 1)), ratio[ok], {"it_kw": it[ok]}, st, "kW/kW"
    )
    load_factor = float(models["load_factor"].coef[0]) if models["load_factor"].fitted else math.nan

    # Chillers: power per running chiller over rated capacity. The chiller load is the
    # chilled-water load (load factor x IT, steadier than a flow x ΔT product) less the economiser.
    if math.isfinite(load_factor):
        chiller_load = load_factor * it - np.where(np.isfinite(econ_kw), econ_kw, np.nan)
    n = s["chillers_running"]
    running = np.isfinite(n) & (n >= 1) & (s["chiller_kw"] > 0)
    n_safe = np.where(running, n, 1.0)
    plr = np.where(running, chiller_load / (n_safe * p.chiller_capacity_kw), np.nan)
    leaving = s["chw_supply_c"]
    entering = s["cw_entering_chiller_c"]
    y = np.where(running, s["chiller_kw"] / (n_safe * p.chiller_capacity_kw), np.nan)
    chiller_inputs = {"plr": plr, "chw_supply_c": leaving, "cw_entering_c": effective_entering_c(leaving, entering, p)}
    models["chiller"] = _with_coverage(
        robust_linear_fit(
            "chiller",
            chiller_features(plr, leaving, entering, p),
            y,
            chiller_inputs,
            st,
            "kW/kW rated",
            bound_key="plr",
        ),
        chiller_inputs,
        y,
        st,
    )

    # Economiser: unthrottled samples only (with chillers running, and carrying less than the load).
    driving = s["chw_return_c"] - s["tower_leaving_c"]
    econ_ok = (s["economiser_on"] > 0.5) & running & (econ_kw < 0.95 * total) & (driving > 0.5)
    models["economiser"] = _fit_economiser(s, p, econ_kw, econ_ok, st)

    # Towers: approach against wet-bulb, range, water per cell and fan speed; fan power against speed.
    tower_inputs = {
        "wet_bulb_c": s["wet_bulb_c"],
        "range_k": s["tower_entering_c"] - s["tower_leaving_c"],
        "cw_flow_ratio": s["cw_flow_ratio"],
        "fan_speed": s["tower_fan_speed"],
    }
    towers = _fit_towers(s, p, tower_inputs, st)
    approach = s["tower_leaving_c"] - s["wet_bulb_c"]
    features = tower_features(
        tower_inputs["wet_bulb_c"], tower_inputs["range_k"], tower_inputs["cw_flow_ratio"], tower_inputs["fan_speed"], p
    )
    residuals = approach - features @ towers.coef if towers.fitted else None
    models["tower_approach"] = _with_coverage(towers, tower_inputs, approach, st, residuals)
    speed = s["tower_fan_speed"]
    models["tower_fan"] = robust_linear_fit(
        "tower_fan",
        fan_features(speed, s["cw_flow_ratio"], p),
        s["tower_fan_kw"],
        {"fan_speed": speed, "cw_flow_ratio": s["cw_flow_ratio"]},
        st,
        "kW",
        bound_key="fan_speed",
    )

    # Pumps.
    for loop in ("chw", "cw"):
        r = s[f"{loop}_flow_ratio"]
        models[f"{loop}_pump"] = robust_linear_fit(
            f"{loop}_pump", pump_features(r), s[f"{loop}_pump_kw"], {f"{loop}_flow_ratio": r}, st, "kW"
        )

    # IT inlet above the chilled-water supply: the coil, or the linear stand-in where it fits better.
    models["it_inlet"] = _fit_inlet(s, it, p, load_factor, st)

    status, problems = _verdict(models, st, int(valid_ts.size), last, judged)
    return PlantFit(p, models, load_factor, status, tuple(problems), len(s), first, last, judged)


def _with_coverage(
    m: ComponentFit,
    inputs: Mapping[str, FloatArray],
    target: FloatArray,
    st: FitSettings,
    residuals: FloatArray | None = None,
) -> ComponentFit:
    """The fit with the joint coverage of the samples it could use (and local error bounds from its residuals)."""
    if not m.fitted:
        return m
    usable = _usable(target, inputs)
    cover = Coverage.of(
        {k: v[usable] for k, v in inputs.items()},
        st.coverage_bins,
        st.coverage_min_count,
        None if residuals is None else residuals[usable],
        st.error_z,
    )
    return dataclasses.replace(m, coverage=cover)


def _fit_inlet(s: PlantSamples, it: FloatArray, p: Nameplate, load_factor: float, st: FitSettings) -> ComponentFit:
    """IT inlet above supply: the coil model, unless the linear stand-in fits clearly better."""
    r1 = s["chw_flow_ratio"]
    target = s["it_inlet_c"] - s["chw_supply_c"]
    inputs = {"chw_flow_ratio": r1, "it_kw": it, "chw_supply_c": s["chw_supply_c"]}
    linear = robust_linear_fit(
        "it_inlet",
        inlet_features(r1, it / p.design_load_kw),
        target,
        inputs,
        st,
        "K",
        bound_key="chw_flow_ratio",
    )
    if not math.isfinite(load_factor):
        return linear
    load = load_factor * it

    def model(params: FloatArray, rows: IntArray) -> FloatArray:
        return _coil_offset_k(params, r1[rows], load[rows], p)

    design_ua_mw_k = p.design_load_kw / 1000.0 / 10.0
    coil = robust_nonlinear_fit(
        "it_inlet",
        model,
        [np.array([design_ua_mw_k * k, rise, 1.0]) for k in (0.5, 1.0, 2.0) for rise in (8.0, 14.0)],
        (np.array([1e-3, 0.5, -20.0]), np.array([1e3, 60.0, 20.0])),
        target,
        inputs,
        st,
        "K",
        form="coil",
        bound_key="chw_flow_ratio",
    )
    if not coil.fitted or (linear.fitted and not coil.error_bound <= linear.error_bound * 1.5 + 0.02):
        return linear
    return coil


def _verdict(
    models: Mapping[str, ComponentFit], st: FitSettings, count: int, last_ns: int, now_ns: int
) -> tuple[str, list[str]]:
    """The status of a fit and the reasons, worst first (stale, sparse, noisy)."""
    stale: list[str] = []
    sparse: list[str] = []
    noisy: list[str] = []
    if count == 0:
        sparse.append("no samples with an IT load")
    elif (now_ns - last_ns) / NS_PER_S > st.max_age_s:
        stale.append(f"newest sample is {(now_ns - last_ns) / NS_PER_S:.0f} s old (limit {st.max_age_s:.0f} s)")
    for name in ESSENTIAL:
        m = models[name]
        if not m.fitted:
            sparse.append(f"{name}: {m.problem}")
        elif name != "load_factor" and not (m.r2 >= st.min_r2):
            noisy.append(f"{name}: R² {m.r2:.3f} below {st.min_r2:.2f} (RMSE {m.rmse:.3g} {m.unit})")
    for status, reasons in (("stale", stale), ("sparse", sparse), ("noisy", noisy)):
        if reasons:
            return status, stale + sparse + noisy
    return "ok", []


# ---------------------------------------------------------------------------
# Prediction
# ---------------------------------------------------------------------------


def predict(model: ComponentFit, features: FloatArray) -> FloatArray:
    """A linear model's value for a block of features (columns last)."""
    result: FloatArray = features @ model.coef
    return result


def chiller_kw_per_rated(fit: PlantFit, plr: FloatArray, leaving_c: FloatArray, entering_c: FloatArray) -> FloatArray:
    """Power per running chiller over its rated capacity (≥ 0); the chiller features' sum, without building them."""
    p = fit.nameplate
    c = fit.model("chiller").coef
    x = np.maximum(plr, 0.0)
    xc = np.maximum(x, p.min_unloading)
    cycling = np.minimum(x / p.min_unloading, 1.0)
    lv = (leaving_c - 10.0) / 5.0
    en = (effective_entering_c(leaving_c, entering_c, p) - 22.0) / 8.0

    def biquad(k: int) -> FloatArray:
        result: FloatArray = c[k] + lv * (c[k + 1] + c[k + 2] * lv + c[k + 5] * en) + en * (c[k + 3] + c[k + 4] * en)
        return result

    result: FloatArray = np.maximum(cycling * (biquad(0) + xc * (biquad(6) + xc * biquad(12))), 0.0)
    return result


def economiser_conductance_kw_k(fit: PlantFit, chw_ratio: FloatArray, cw_ratio: FloatArray) -> FloatArray:
    """The exchanger's ε·C_min, kW/K (0 without an economiser model)."""
    m = fit.model("economiser")
    r1, r2 = _broadcast(chw_ratio, cw_ratio)
    if not m.fitted:
        return np.zeros_like(r1)
    return _economiser_conductance(m.coef, r1, r2, fit.nameplate)


def _yorkcalc_value(coef: FloatArray, wet_bulb_c: FloatArray, range_k: FloatArray, lg: FloatArray) -> FloatArray:
    """Σ coef·term over the 27 terms of :func:`_yorkcalc_terms`, by nested Horner steps (no feature block)."""
    t = (wet_bulb_c - 10.0) / 10.0
    r = (range_k - 5.0) / 5.0
    g = (lg - 3.0) / 3.0
    c = coef.reshape(3, 3, 3)  # [power of g][power of r][power of t]
    total = np.zeros_like(t)
    for k in (2, 1, 0):
        in_r = np.zeros_like(t)
        for j in (2, 1, 0):
            in_r = in_r * r + (c[k, j, 0] + t * (c[k, j, 1] + c[k, j, 2] * t))
        total = total * g + in_r
    return total


def tower_approach_k(
    fit: PlantFit, wet_bulb_c: FloatArray, range_k: FloatArray, cw_ratio: FloatArray, speed: FloatArray
) -> FloatArray:
    """The fitted approach (≥ 0), K, evaluated without building the feature block."""
    m = fit.model("tower_approach")
    p = fit.nameplate
    twb, rng, w2, s = _broadcast(wet_bulb_c, range_k, cw_ratio, speed)
    lg = p.water_per_cell(w2) / np.maximum(np.minimum(s, 1.0), p.tower_min_speed)
    total = _yorkcalc_value(m.coef[:27], twb, rng, lg)
    if not p.knows_tower_cells:
        total += _yorkcalc_value(m.coef[27:54], twb, rng, lg) * w2
    result: FloatArray = np.maximum(total, 0.0)
    return result


def tower_leaving_c(
    fit: PlantFit,
    wet_bulb_c: FloatArray,
    range_k: FloatArray,
    cw_ratio: FloatArray,
    speed: FloatArray,
    *,
    extrapolate: bool = True,
) -> FloatArray:
    """Tower leaving water, °C, at a fan speed; conservative (warm) outside the fitted wet-bulb range.

    Beyond the hottest wet-bulb fitted the approach is held (it shrinks as air
    gets warmer) or extrapolated along its slope there if that grows; below
    the coldest the leaving water is held at the edge's (colder air does not
    warm the water at a set fan speed).
    """
    twb, rng, w2, s = _broadcast(wet_bulb_c, range_k, cw_ratio, speed)
    if not extrapolate:
        return twb + tower_approach_k(fit, twb, rng, w2, s)
    lo, hi = fit.model("tower_approach").ranges.get("wet_bulb_c", (-math.inf, math.inf))
    t = np.clip(twb, lo, hi)
    approach = tower_approach_k(fit, t, rng, w2, s)
    leaving = t + approach
    hot = twb > hi
    if bool(np.any(hot)):
        below = tower_approach_k(fit, np.full_like(t, hi - 1.0), rng, w2, s)
        slope = np.maximum(approach - below, 0.0)  # approach gained per kelvin near the edge, if it grows
        leaving = np.where(hot, twb + approach + slope * (twb - hi), leaving)
    return leaving


def tower_fan_kw(fit: PlantFit, speed: FloatArray, cw_ratio: FloatArray) -> FloatArray:
    """Tower fan power, kW (≥ 0)."""
    p = fit.nameplate
    c = fit.model("tower_fan").coef
    s3 = fan_speed_term(speed, p)
    value = s3 * c[0] * p.cells_wetted(cw_ratio) if p.knows_tower_cells else s3 * (c[0] + c[1] * cw_ratio)
    result: FloatArray = np.maximum(value, 0.0)
    return result


def pump_kw(fit: PlantFit, loop: str, ratio: FloatArray) -> FloatArray:
    """Pump power of the ``chw`` or ``cw`` loop, kW (≥ 0)."""
    c = fit.model(f"{loop}_pump").coef
    result: FloatArray = np.maximum(ratio * (c[0] + ratio * (c[1] + ratio * c[2])), 0.0)
    return result


def inlet_offset_k(fit: PlantFit, chw_ratio: npt.ArrayLike, it_kw: npt.ArrayLike) -> FloatArray:
    """Predicted IT inlet minus chilled-water supply, K."""
    m = fit.model("it_inlet")
    r1, it = _broadcast(chw_ratio, it_kw)
    if m.form == "coil":
        return _coil_offset_k(m.coef, r1, fit.load_factor * it, fit.nameplate)
    return predict(m, inlet_features(r1, it / fit.nameplate.design_load_kw))


def inlet_error_bound_k(fit: PlantFit, chw_ratio: npt.ArrayLike) -> FloatArray:
    """The inlet model's error bound at a chilled-water flow ratio, K (0 when unknown)."""
    bound = fit.model("it_inlet").bound_at(chw_ratio)
    result: FloatArray = np.where(np.isfinite(bound), bound, 0.0)
    return result
