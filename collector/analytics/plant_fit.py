"""Chiller-plant component models fitted from logged telemetry by robust least squares.

Pure functions over numpy arrays: no I/O, no clock. The optimiser predicts plant
power only with what is fitted here (and the plant's nameplate), never with
the simulator's coefficients.

Models (each a linear combination of fixed features, fitted with scipy's
``least_squares`` under a soft-L1 loss, then refitted without the samples
whose residual exceeds ``outlier_sigma`` robust standard deviations):

- ``chiller``: power per running chiller over its rated capacity, in the
  EnergyPlus electric-EIR structure: ``A(L,E) + B(L,E)·x + C(L,E)·x²`` with
  ``A``, ``B``, ``C`` biquadratic in the leaving chilled-water temperature
  ``L`` and the (head-pressure floored) entering condenser-water temperature
  ``E``, ``x`` the part-load ratio on rated capacity, and below the minimum
  unloading ratio the compressor cycling (power proportional to load);
- ``economiser``: plate exchanger conductance ``ε·C_min`` (kW/K) as a
  quadratic in both flow ratios, from the heat it moves;
- ``tower_approach``: tower leaving water minus wet-bulb, K, against wet-bulb,
  range, water-flow ratio and fan speed (through ``1/(speed + 0.15)``, a
  liquid-to-gas-ratio-like term that stays finite with the fans off);
- ``tower_fan``: fan power against speed cubed (linear below the minimum
  speed, where fans cycle) and condenser flow;
- ``chw_pump`` and ``cw_pump``: power against flow ratio, ``r, r², r³``;
- ``it_inlet``: IT inlet minus chilled-water supply temperature against
  chilled-water flow ratio and IT load;
- ``load_factor``: chilled-water load per kW of IT.

Each fit reports R², RMSE, residual quantiles, samples used and rejected, and
the range of every input it saw; :class:`PlantFit` sums them up as a status
(``ok``, ``sparse``, ``noisy`` or ``stale``) with the reasons.
"""

from __future__ import annotations

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
FREE_SPEED_OFFSET: Final = 0.15
"""Added to the fan speed in the tower's liquid-to-gas term, so that it stays finite with the fans off."""

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

    @property
    def design_load_kw(self) -> float:
        """Cooling capacity of the duty chillers, kW."""
        return self.duty_chillers * self.chiller_capacity_kw


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

    """

    outlier_sigma: float = 4.0
    min_samples: int = 200
    min_r2: float = 0.8
    max_age_s: float = 1800.0
    coverage_quantile: float = 0.002


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
# Feature maps (shared by fitting and prediction)
# ---------------------------------------------------------------------------


def _broadcast(*arrays: npt.ArrayLike) -> list[FloatArray]:
    """The arrays as float64, broadcast to one shape."""
    return [
        np.asarray(a, dtype=np.float64) for a in np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in arrays))
    ]


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


def economiser_features(chw_ratio: FloatArray, cw_ratio: FloatArray, driving_k: FloatArray) -> FloatArray:
    """Features of the exchanger's duty: conductance(flows) x (return - tower water)."""
    a, b, driving_k = _broadcast(chw_ratio, cw_ratio, driving_k)
    cols = [np.ones_like(a), a, b, a * b, a * a, b * b]
    return np.stack([c * driving_k for c in cols], axis=-1)


def economiser_conductance_features(chw_ratio: FloatArray, cw_ratio: FloatArray) -> FloatArray:
    """Features of the exchanger conductance alone (kW/K)."""
    return economiser_features(chw_ratio, cw_ratio, np.ones_like(chw_ratio))


def tower_features(wet_bulb_c: FloatArray, range_k: FloatArray, cw_ratio: FloatArray, speed: FloatArray) -> FloatArray:
    """Features of the tower approach."""
    wet_bulb_c, range_k, cw_ratio, speed = _broadcast(wet_bulb_c, range_k, cw_ratio, speed)
    t = (wet_bulb_c - 15.0) / 10.0
    r = (range_k - 5.0) / 3.0
    u = 1.0 / (np.clip(speed, 0.0, 1.0) + FREE_SPEED_OFFSET)
    w = cw_ratio
    cols = [np.ones_like(t), t, t * t, r, r * r, t * r, u, u * u, u * t, u * r, w, w * u, w * t, w * r, u * t * t]
    return np.stack(cols, axis=-1)


def fan_speed_term(speed: FloatArray, plate: Nameplate) -> FloatArray:
    """Fan power per unit of full-speed power: speed³, and linear (cycling) below the minimum speed."""
    s = np.clip(speed, 0.0, 1.0)
    low = plate.tower_min_speed
    result: FloatArray = np.where(s >= low, s**3, s * low * low)
    return result


def fan_features(speed: FloatArray, cw_ratio: FloatArray, plate: Nameplate) -> FloatArray:
    """Features of tower fan power."""
    speed, cw_ratio = _broadcast(speed, cw_ratio)
    s3 = fan_speed_term(speed, plate)
    return np.stack([s3, s3 * cw_ratio], axis=-1)


def pump_features(ratio: FloatArray) -> FloatArray:
    """Features of pump power (affinity laws with losses: r, r², r³)."""
    return np.stack([ratio, ratio * ratio, ratio**3], axis=-1)


def inlet_features(chw_ratio: FloatArray, it_fraction: FloatArray) -> FloatArray:
    """Features of IT inlet minus chilled-water supply temperature."""
    chw_ratio, q = _broadcast(chw_ratio, it_fraction)
    inv = 1.0 / np.maximum(chw_ratio, 0.05)
    return np.stack([np.ones_like(inv), inv, inv * inv, q, q * inv], axis=-1)


# ---------------------------------------------------------------------------
# Robust fitting
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ComponentFit:
    """One fitted component model and its quality.

    Attributes:
        name: Model name (``chiller``, ``tower_approach``, ...).
        coef: Fitted coefficients of the model's features.
        r2: Coefficient of determination on the samples kept.
        rmse: Root-mean-square residual on the samples kept, in ``unit``.
        residual_p95: 95th percentile of the absolute residual, in ``unit``.
        unit: Unit of the modelled quantity.
        samples: Samples used in the final fit.
        rejected: Samples dropped as outliers.
        ranges: Range of each input covered by the samples kept.
        problem: Why the model could not be fitted ("" when it was).

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

    @property
    def fitted(self) -> bool:
        """Whether there are coefficients to predict with."""
        return not self.problem

    def to_json(self) -> dict[str, Any]:
        """The fit quality as JSON-ready data."""
        return {
            "r2": _round(self.r2, 4),
            "rmse": _round(self.rmse, 4),
            "residual_p95": _round(self.residual_p95, 4),
            "unit": self.unit,
            "samples": self.samples,
            "rejected": self.rejected,
            "ranges": {k: [_round(lo, 3), _round(hi, 3)] for k, (lo, hi) in self.ranges.items()},
            "problem": self.problem or None,
        }


def _round(x: float, nd: int) -> float | None:
    return round(x, nd) if math.isfinite(x) else None


def _unfitted(name: str, unit: str, n_features: int, problem: str, samples: int = 0) -> ComponentFit:
    return ComponentFit(name, np.zeros(n_features), math.nan, math.nan, math.nan, unit, samples, 0, {}, problem)


def robust_linear_fit(  # noqa: PLR0917  (vectorised kernels take the whole state)
    name: str,
    features: FloatArray,
    target: FloatArray,
    inputs: Mapping[str, FloatArray],
    settings: FitSettings,
    unit: str,
) -> ComponentFit:
    """Fit ``target ≈ features @ coef`` robustly and report the quality.

    Ordinary least squares gives the start; scipy's ``least_squares`` with a
    soft-L1 loss (scale from the median absolute deviation) gives a fit that
    a minority of bad samples cannot drag; samples beyond ``outlier_sigma``
    robust standard deviations are then dropped and the fit repeated.
    """
    n_features = features.shape[1]
    good = np.isfinite(target) & np.all(np.isfinite(features), axis=1)
    for values in inputs.values():
        good &= np.isfinite(values)
    count = int(np.count_nonzero(good))
    if count < max(settings.min_samples, 3 * n_features):
        return _unfitted(name, unit, n_features, f"{count} usable samples, fewer than needed", count)
    x_all, y_all = features[good], target[good]
    scale = np.maximum(np.sqrt(np.mean(x_all * x_all, axis=0)), 1e-12)
    xs = x_all / scale
    coef0, *_ = np.linalg.lstsq(xs, y_all, rcond=None)
    kept = np.ones(count, dtype=np.bool_)
    coef = coef0
    for _ in range(2):
        xk, yk = xs[kept], y_all[kept]
        resid0 = yk - xk @ coef
        mad = float(np.median(np.abs(resid0 - np.median(resid0)))) * 1.4826
        f_scale = max(mad, 1e-9 * (float(np.std(yk)) + 1e-12), 1e-12)
        result = least_squares(lambda c, xk=xk, yk=yk: xk @ c - yk, coef, loss="soft_l1", f_scale=f_scale, method="trf")
        coef = np.asarray(result.x, dtype=np.float64)
        resid = y_all - xs @ coef
        sigma = float(np.median(np.abs(resid[kept] - np.median(resid[kept])))) * 1.4826
        new_kept = np.abs(resid) <= settings.outlier_sigma * max(sigma, 1e-12)
        if np.array_equal(new_kept, kept):
            break
        kept = new_kept
        if int(np.count_nonzero(kept)) < 3 * n_features:
            return _unfitted(name, unit, n_features, "too few samples left after outlier rejection", count)
    resid = (y_all - xs @ coef)[kept]
    yk = y_all[kept]
    ss_tot = float(np.sum((yk - yk.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 else math.nan
    q = settings.coverage_quantile
    ranges = {}
    for key, values in inputs.items():
        v = values[good][kept]
        ranges[key] = (float(np.quantile(v, q)), float(np.quantile(v, 1.0 - q)))
    return ComponentFit(
        name=name,
        coef=coef / scale,
        r2=r2,
        rmse=float(np.sqrt(np.mean(resid**2))),
        residual_p95=float(np.quantile(np.abs(resid), 0.95)),
        unit=unit,
        samples=int(np.count_nonzero(kept)),
        rejected=count - int(np.count_nonzero(kept)),
        ranges=ranges,
    )


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
    it_frac = it / p.design_load_kw

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
    models["chiller"] = robust_linear_fit(
        "chiller",
        chiller_features(plr, leaving, entering, p),
        y,
        {"plr": plr, "chw_supply_c": leaving, "cw_entering_c": entering},
        st,
        "kW/kW rated",
    )

    # Economiser: duty = conductance(flows) x (return - tower water), unthrottled samples only.
    driving = s["chw_return_c"] - s["tower_leaving_c"]
    econ_ok = (s["economiser_on"] > 0.5) & running & (econ_kw < 0.95 * total) & (driving > 0.5)
    models["economiser"] = robust_linear_fit(
        "economiser",
        economiser_features(s["chw_flow_ratio"], s["cw_flow_ratio"], driving)[econ_ok],
        econ_kw[econ_ok],
        {"chw_flow_ratio": s["chw_flow_ratio"][econ_ok], "cw_flow_ratio": s["cw_flow_ratio"][econ_ok]},
        st,
        "kW",
    )

    # Towers: approach against wet-bulb, range, flow and fan speed; fan power against speed.
    approach = s["tower_leaving_c"] - s["wet_bulb_c"]
    range_k = s["tower_entering_c"] - s["tower_leaving_c"]
    speed = s["tower_fan_speed"]
    models["tower_approach"] = robust_linear_fit(
        "tower_approach",
        tower_features(s["wet_bulb_c"], range_k, s["cw_flow_ratio"], speed),
        approach,
        {"wet_bulb_c": s["wet_bulb_c"], "range_k": range_k, "cw_flow_ratio": s["cw_flow_ratio"], "fan_speed": speed},
        st,
        "K",
    )
    models["tower_fan"] = robust_linear_fit(
        "tower_fan",
        fan_features(speed, s["cw_flow_ratio"], p),
        s["tower_fan_kw"],
        {"fan_speed": speed, "cw_flow_ratio": s["cw_flow_ratio"]},
        st,
        "kW",
    )

    # Pumps.
    for loop in ("chw", "cw"):
        r = s[f"{loop}_flow_ratio"]
        models[f"{loop}_pump"] = robust_linear_fit(
            f"{loop}_pump", pump_features(r), s[f"{loop}_pump_kw"], {f"{loop}_flow_ratio": r}, st, "kW"
        )

    # IT inlet above the chilled-water supply.
    models["it_inlet"] = robust_linear_fit(
        "it_inlet",
        inlet_features(s["chw_flow_ratio"], it_frac),
        s["it_inlet_c"] - s["chw_supply_c"],
        {"chw_flow_ratio": s["chw_flow_ratio"], "it_kw": it, "chw_supply_c": s["chw_supply_c"]},
        st,
        "K",
    )

    status, problems = _verdict(models, st, int(valid_ts.size), last, judged)
    return PlantFit(p, models, load_factor, status, tuple(problems), len(s), first, last, judged)


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


PredictFn = Callable[[FloatArray], FloatArray]


def predict(model: ComponentFit, features: FloatArray) -> FloatArray:
    """The fitted model's value for a block of features (columns last)."""
    result: FloatArray = features @ model.coef
    return result
