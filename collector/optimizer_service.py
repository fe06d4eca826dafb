"""The chiller-plant optimiser job: gather telemetry, refit, decide, publish and (closed loop) command.

Every ``interval_s`` the job reads the plant's recent telemetry from the
store, asks :mod:`collector.analytics.optimizer` for the best setpoints by the
models :mod:`collector.analytics.plant_fit` fitted (refitted every
``refit_interval_s`` on ``history_days`` of 5-minute bins), and publishes the
recommendation with its predicted saving, retained, on the ``[optimizer]``
topic (default ``dcim/v1/{site}/optimizer``); it is also stored as the
``optimizer`` measurement.

In ``closed-loop`` mode it then sends wire-format commands to the agent that
owns the plant devices (chilled-water setpoint to every chiller, leaving-water
setpoint to every tower, speed setpoint to every pump), each move limited by
``[optimizer.rate]``; the agent checks every point's limits and audits each
write. It falls back to the site's baseline setpoints (still at the rate
limits, so the agent accepts every step) when the warmest IT inlet is within
``fallback_inlet_margin_k`` of the limit, when the plant data is older than
``max_data_age_s``, when the fit is not ``ok`` (sparse, noisy or stale data),
or when no recommendation can be made. Command results from the agent are
counted and published with the next decision.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from collector.analytics import optimizer as opt
from collector.analytics.plant_fit import FitSettings, Nameplate, PlantFit, PlantSamples, fit_plant
from collector.config import CollectorConfig
from collector.optimizer_config import OptimizerSection
from collector.store import Store, StoreError
from models import telemetry

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
NS_PER_S: Final = 1_000_000_000
M3H_TO_KG_S: Final = 1000.0 / 3600.0
ECONOMISER_WARMING_K: Final = 0.75  # condenser water warming this much through the exchanger: it is in service
DEADBAND: Final = 0.05  # moves smaller than this are not sent


class Publish(Protocol):
    """Hands a message to the MQTT client (QoS 1)."""

    def __call__(self, topic: str, payload: bytes, *, retain: bool) -> None:
        """Publish one message."""


def settings_of(section: OptimizerSection) -> opt.OptimizerSettings:
    """Optimiser settings from the [optimizer] section."""
    lim = section.limits
    return opt.OptimizerSettings(
        inlet_limit_c=section.inlet_limit_c,
        inlet_margin_k=section.inlet_margin_k,
        inlet_sigma=section.inlet_sigma,
        chw_supply_min_c=lim.chw_supply_min_c,
        chw_supply_max_c=lim.chw_supply_max_c,
        cw_setpoint_min_c=lim.cw_setpoint_min_c,
        cw_setpoint_max_c=lim.cw_setpoint_max_c,
        chw_flow_min=lim.chw_pump_min_pct / 100.0,
        cw_flow_min=lim.cw_pump_min_pct / 100.0,
        evaporator_flow_min=lim.evaporator_flow_min,
        condenser_flow_min=lim.condenser_flow_min,
        condenser_flow_max=lim.condenser_flow_max,
        max_plr=lim.max_plr,
    )


def nameplate_of(section: OptimizerSection) -> Nameplate:
    """The plant nameplate from the [optimizer.nameplate] section."""
    n = section.nameplate
    return Nameplate(
        chillers=n.chillers,
        duty_chillers=n.duty_chillers,
        chiller_capacity_kw=n.chiller_capacity_kw,
        chw_design_flow_kg_s=n.chw_design_flow_kg_s,
        cw_design_flow_kg_s=n.cw_design_flow_kg_s,
        min_unloading=n.min_unloading,
        condenser_floor_c=n.condenser_floor_c,
        min_lift_k=n.min_lift_k,
        tower_min_speed=n.tower_min_speed,
        tower_cells=n.tower_cells,
        tower_cell_min_flow_kg_s=n.tower_cell_min_flow_kg_s,
    )


def baseline_of(section: OptimizerSection) -> opt.Setpoints:
    """The site's baseline setpoints."""
    b = section.baseline
    return opt.Setpoints(b.chw_supply_c, b.cw_setpoint_c, b.chw_pump_pct, b.cw_pump_pct)


# ---------------------------------------------------------------------------
# Reading the store
# ---------------------------------------------------------------------------


def _binned(store: Store, measurement: str, device: str, point: str, edges: npt.NDArray[np.int64]) -> FloatArray:
    """Mean of a stored series in each bin (NaN where it has no good value)."""
    ts, values = store.read_series(measurement, device, point, int(edges[0]), int(edges[-1]))
    bins = edges.size - 1
    good = np.isfinite(values)
    idx = np.searchsorted(edges, ts[good], side="right") - 1
    keep = (idx >= 0) & (idx < bins)
    sums = np.bincount(idx[keep], weights=values[good][keep], minlength=bins)
    counts = np.bincount(idx[keep], minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        result: FloatArray = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return result


def _stack(rows: list[FloatArray]) -> FloatArray:
    return np.vstack(rows) if rows else np.empty((0, 0))


def _nan_reduce(fn: Callable[..., FloatArray], block: FloatArray) -> FloatArray:
    """A NaN-ignoring reduction over devices that gives NaN (not a warning) where all are NaN."""
    any_good = np.isfinite(block).any(axis=0)
    filled = np.where(np.isfinite(block), block, 0.0 if fn is np.nansum else np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: masked just below
        out = fn(filled, axis=0) if any_good.any() else np.full(block.shape[1], np.nan)
    return np.where(any_good, out, np.nan)


def gather(store: Store, section: OptimizerSection, start_ns: int, end_ns: int) -> PlantSamples:
    """Plant-level samples (:data:`plant_fit.SAMPLE_FIELDS`) binned from the stored device series."""
    step = round(section.sample_s * NS_PER_S)
    edges = np.arange(start_ns, end_ns + 1, step, dtype=np.int64)
    if edges.size < 2:
        edges = np.array([start_ns, end_ns], dtype=np.int64)
    d = section.devices
    plate = section.nameplate

    def block(measurement: str, devices: list[str], point: str) -> FloatArray:
        return _stack([_binned(store, measurement, dev, point, edges) for dev in devices])

    supply = block("chiller", d.chillers, "chw_supply_temp")
    running = block("chiller", d.chillers, "running")
    on = np.isfinite(running) & (running >= 0.5)
    with np.errstate(invalid="ignore", divide="ignore"):
        chw_supply = np.where(
            on.any(axis=0), np.nansum(np.where(on, supply, 0.0), axis=0) / np.maximum(on.sum(axis=0), 1), np.nan
        )
    cw_entering = _nan_reduce(np.nanmean, block("chiller", d.chillers, "cw_supply_temp"))
    tower_leaving = _nan_reduce(np.nanmean, block("tower", d.towers, "leaving_water_temperature"))
    columns: dict[str, FloatArray] = {
        "wet_bulb_c": _nan_reduce(np.nanmean, block("tower", d.towers, "wet_bulb_temperature")),
        "chw_supply_c": chw_supply,
        "chw_return_c": _nan_reduce(np.nanmean, block("chiller", d.chillers, "chw_return_temp")),
        "cw_entering_chiller_c": cw_entering,
        "tower_leaving_c": tower_leaving,
        "tower_entering_c": _nan_reduce(np.nanmean, block("tower", d.towers, "entering_water_temperature")),
        "chillers_running": np.where(np.isfinite(running).any(axis=0), on.sum(axis=0).astype(np.float64), np.nan),
        "chiller_kw": _nan_reduce(np.nansum, block("chiller", d.chillers, "power")),
        "tower_fan_kw": _nan_reduce(np.nansum, block("tower", d.towers, "fan_power")),
        "tower_fan_speed": _nan_reduce(np.nanmean, block("tower", d.towers, "fan_speed")) / 100.0,
        "chw_pump_kw": _nan_reduce(np.nansum, block("pump", d.chw_pumps, "power")),
        "cw_pump_kw": _nan_reduce(np.nansum, block("pump", d.cw_pumps, "power")),
        "chw_flow_ratio": _nan_reduce(np.nansum, block("pump", d.chw_pumps, "flow"))
        * M3H_TO_KG_S
        / plate.chw_design_flow_kg_s,
        "cw_flow_ratio": _nan_reduce(np.nansum, block("pump", d.cw_pumps, "flow"))
        * M3H_TO_KG_S
        / plate.cw_design_flow_kg_s,
    }
    it_rows = [_binned(store, s.measurement, s.device, s.field, edges) * s.scale for s in d.it_power]
    # The IT load needs every part of the sum: a missing one would look like a smaller load.
    it_block = _stack(it_rows)
    columns["it_kw"] = np.where(np.isfinite(it_block).all(axis=0), np.nansum(it_block, axis=0), np.nan)
    inlet_rows = [
        _binned(store, sensor.measurement, sensor.device, f, edges) for sensor in d.inlet_sensors for f in sensor.fields
    ]
    columns["it_inlet_c"] = _nan_reduce(np.nanmax, _stack(inlet_rows))
    warming = cw_entering - tower_leaving
    columns["economiser_on"] = np.where(
        np.isfinite(warming), (warming > ECONOMISER_WARMING_K).astype(np.float64), np.nan
    )
    return PlantSamples.from_mapping(edges[:-1] + step // 2, columns)


# ---------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------


@dataclass
class Outcomes:
    """Command answers received from the agent."""

    sent: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    last_refusal: str = ""
    pending: dict[str, tuple[str, str, float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "sent": self.sent,
            "answers": dict(self.answers),
            "pending": len(self.pending),
            "last_refusal": self.last_refusal or None,
        }


@dataclass(frozen=True)
class Decision:
    """What one run of the job decided."""

    ts_ns: int
    mode: str
    fallback: bool
    reasons: list[str]
    recommendation: opt.Recommendation | None
    commanded: opt.Setpoints | None
    current: opt.Setpoints | None
    wet_bulb_c: float
    it_kw: float
    inlet_c: float
    data_age_s: float
    fit: PlantFit | None
    commands: list[telemetry.Command] = field(default_factory=list)

    def to_json(self, outcomes: Outcomes | None = None) -> dict[str, Any]:
        """The payload published on the optimizer topic."""

        def num(x: float, nd: int = 2) -> float | None:
            return round(x, nd) if math.isfinite(x) else None

        fit = self.fit
        return {
            "ts": self.ts_ns / NS_PER_S,
            "mode": self.mode,
            "fallback": self.fallback,
            "reasons": self.reasons,
            "conditions": {
                "wet_bulb_c": num(self.wet_bulb_c),
                "it_kw": num(self.it_kw, 1),
                "it_inlet_max_c": num(self.inlet_c),
                "data_age_s": num(self.data_age_s, 0),
            },
            "recommendation": self.recommendation.to_json() if self.recommendation is not None else None,
            "current_setpoints": self.current.to_json() if self.current is not None else None,
            "commanded_setpoints": self.commanded.to_json() if self.commanded is not None else None,
            "fit": fit.to_json() if fit is not None else None,
            "commands": outcomes.to_json() if outcomes is not None else None,
        }


class OptimizerService:
    """The optimiser's scheduled work; thread-safe (runs in the scheduler's worker threads)."""

    def __init__(
        self,
        config: CollectorConfig,
        store: Store,
        publish: Publish | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        if config.optimizer is None:
            raise ValueError("the configuration has no [optimizer] section")
        self.config = config
        self.section: OptimizerSection = config.optimizer
        self.site = config.collector.site
        self.store = store
        self.publish = publish
        self.clock_ns = clock_ns
        self.settings = settings_of(self.section)
        self.nameplate = nameplate_of(self.section)
        self.baseline = baseline_of(self.section)
        self.rate = opt.RateLimits(
            self.section.rate.chw_supply_k, self.section.rate.cw_setpoint_k, self.section.rate.pump_pct
        )
        self.fit: PlantFit | None = None
        self.outcomes = Outcomes()
        self.last: Decision | None = None
        self._lock = threading.Lock()
        self.topic = self.section.topic.format(site=self.site)

    # ------------------------------------------------------------ fitting

    def refit(self, now_ns: int | None = None) -> PlantFit:
        """Fit the plant models on the last ``history_days`` of telemetry."""
        now = self.clock_ns() if now_ns is None else now_ns
        start = now - round(self.section.history_days * 86_400 * NS_PER_S)
        samples = gather(self.store, self.section, start, now)
        fit = fit_plant(
            samples,
            self.nameplate,
            now_ns=now,
            settings=FitSettings(
                min_samples=self.section.min_samples,
                min_r2=self.section.min_r2,
                max_age_s=self.section.max_data_age_s,
            ),
        )
        with self._lock:
            self.fit = fit
        log.info(
            "optimizer: refit on %d samples: %s%s",
            len(samples),
            fit.status,
            ": " + "; ".join(fit.problems) if fit.problems else "",
        )
        return fit

    # ------------------------------------------------------------ deciding

    def _latest(self, measurement: str, devices: list[str], point: str, now_ns: int) -> float:
        """Mean of the devices' latest good values within max_data_age_s (NaN when none)."""
        start = now_ns - round(self.section.max_data_age_s * NS_PER_S)
        values = []
        for dev in devices:
            _, v = self.store.read_series(measurement, dev, point, start, now_ns + 1)
            v = v[np.isfinite(v)]
            if v.size:
                values.append(float(v[-1]))
        return float(np.mean(values)) if values else math.nan

    def current_setpoints(self, now_ns: int) -> opt.Setpoints | None:
        """The setpoints the plant holds now, read back from telemetry (None when unknown)."""
        d = self.section.devices
        sp = opt.Setpoints(
            self._latest("chiller", d.chillers, d.chiller_setpoint, now_ns),
            self._latest("tower", d.towers, d.tower_setpoint, now_ns),
            self._latest("pump", d.chw_pumps, d.pump_setpoint, now_ns),
            self._latest("pump", d.cw_pumps, d.pump_setpoint, now_ns),
        )
        values = (sp.chw_supply_c, sp.cw_setpoint_c, sp.chw_pump_pct, sp.cw_pump_pct)
        return sp if all(math.isfinite(v) for v in values) else None

    def decide(self, now_ns: int | None = None) -> Decision:
        """One decision: recommend, publish, and in closed loop command (or fall back)."""
        now = self.clock_ns() if now_ns is None else now_ns
        section = self.section
        with self._lock:
            fit = self.fit
        if fit is None or (now - fit.fitted_at_ns) / NS_PER_S >= section.refit_interval_s:
            fit = self.refit(now)
        window = max(section.max_data_age_s, 3 * section.sample_s)
        recent = gather(self.store, section, now - round(window * NS_PER_S), now)
        known = np.flatnonzero(np.isfinite(recent["wet_bulb_c"]) & np.isfinite(recent["it_kw"]))
        twb = it = math.nan
        age = math.inf
        if known.size:
            i = int(known[-1])
            twb, it = float(recent["wet_bulb_c"][i]), float(recent["it_kw"][i])
            age = max(0.0, (now - int(recent.ts_ns[i])) / NS_PER_S - section.sample_s / 2)
        inlets = recent["it_inlet_c"][np.isfinite(recent["it_inlet_c"])]
        inlet = float(inlets[-1]) if inlets.size else math.nan
        reasons: list[str] = []
        if not known.size:
            reasons.append(f"no wet-bulb and IT load in the last {window:.0f} s: plant data is stale")
        if not fit.usable:
            reasons.append(f"fit is {fit.status}: " + "; ".join(fit.problems))
        if math.isnan(inlet):
            reasons.append("no IT inlet temperature reported recently")
        elif inlet >= section.inlet_limit_c - section.fallback_inlet_margin_k:
            reasons.append(
                f"IT inlet {inlet:.2f} °C is within {section.fallback_inlet_margin_k:g} K "
                f"of the {section.inlet_limit_c:g} °C limit"
            )
        rec = opt.recommend(fit, twb, it, self.baseline, self.settings) if known.size else None
        if rec is not None and not rec.ok:
            reasons.append(f"no recommendation: {rec.reason}")
        fallback = bool(reasons)
        current = self.current_setpoints(now)
        commanded: opt.Setpoints | None = None
        commands: list[telemetry.Command] = []
        if section.mode == "closed-loop":
            target = self.baseline if fallback or rec is None or rec.setpoints is None else rec.setpoints
            start = current or self.baseline
            if fit.usable and math.isfinite(it):
                commanded = opt.limit_moves(fit, self.settings, start, target, self.rate, it)
            else:
                commanded = _step_only(start, target, self.rate)
            commanded = self._clamp(commanded)
            if current is not None:
                commanded = _within_rate(commanded, current, self.rate)
            commands = self._send(commanded, current, now)
        decision = Decision(
            now, section.mode, fallback, reasons, rec, commanded, current, twb, it, inlet, age, fit, commands
        )
        self.last = decision
        self._report(decision)
        return decision

    def _clamp(self, sp: opt.Setpoints) -> opt.Setpoints:
        lim = self.section.limits
        return opt.Setpoints(
            round(min(max(sp.chw_supply_c, lim.chw_supply_min_c), lim.chw_supply_max_c), 1),
            round(min(max(sp.cw_setpoint_c, lim.cw_setpoint_min_c), lim.cw_setpoint_max_c), 1),
            round(min(max(sp.chw_pump_pct, lim.chw_pump_min_pct), 100.0), 1),
            round(min(max(sp.cw_pump_pct, lim.cw_pump_min_pct), 100.0), 1),
        )

    def _send(self, target: opt.Setpoints, current: opt.Setpoints | None, now_ns: int) -> list[telemetry.Command]:
        """Commands for every setpoint point that has to move."""
        d = self.section.devices
        plan: list[tuple[str, str, float, float]] = []
        now_of = current or opt.Setpoints(math.nan, math.nan, math.nan, math.nan)
        for devices, point, value, before in (
            (d.chillers, d.chiller_setpoint, target.chw_supply_c, now_of.chw_supply_c),
            (d.towers, d.tower_setpoint, target.cw_setpoint_c, now_of.cw_setpoint_c),
            (d.chw_pumps, d.pump_setpoint, target.chw_pump_pct, now_of.chw_pump_pct),
            (d.cw_pumps, d.pump_setpoint, target.cw_pump_pct, now_of.cw_pump_pct),
        ):
            if math.isfinite(before) and abs(value - before) < DEADBAND:
                continue
            plan += [(dev, point, value, before) for dev in devices]
        expires = now_ns / NS_PER_S + self.section.command_ttl_s
        topic = telemetry.command_topic(self.site, d.agent)
        out = []
        for dev, point, value, _ in plan:
            cmd = telemetry.Command(
                id=f"opt-{uuid.uuid4().hex[:12]}",
                device=dev,
                point=point,
                value=value,
                expires=expires,
                by=self.section.sender,
            )
            out.append(cmd)
            if self.publish is None:
                continue
            try:
                self.publish(topic, telemetry.encode(cmd), retain=False)
            except Exception:
                log.exception("optimizer: could not publish command %s for %s.%s", cmd.id, dev, point)
                continue
            with self._lock:
                self.outcomes.sent += 1
                self.outcomes.pending[cmd.id] = (dev, point, value)
        return out

    def on_result(self, result: telemetry.CommandResult) -> None:
        """Count an agent's answer to one of our commands."""
        with self._lock:
            if self.outcomes.pending.pop(result.id, None) is None:
                return
            self.outcomes.answers[result.outcome] += 1
            if not result.ok:
                self.outcomes.last_refusal = f"{result.device}.{result.point}: {result.reason}"
        if not result.ok:
            log.warning(
                "optimizer: command %s for %s.%s %s: %s",
                result.id,
                result.device,
                result.point,
                result.outcome,
                result.reason,
            )

    def on_message(self, _topic: str, payload: bytes) -> None:
        """An MQTT message on the command-result topic."""
        try:
            result = telemetry.decode_as(telemetry.CommandResult, payload)
        except telemetry.TelemetryError as exc:
            log.warning("optimizer: undecodable command result: %s", exc)
            return
        self.on_result(result)

    def _report(self, decision: Decision) -> None:
        with self._lock:
            payload = decision.to_json(self.outcomes)
        if decision.fallback:
            log.warning("optimizer: falling back to baseline: %s", "; ".join(decision.reasons))
        rec = decision.recommendation
        fields: dict[str, FloatArray] = {
            "fallback": np.array([1.0 if decision.fallback else 0.0]),
            "wet_bulb_c": np.array([decision.wet_bulb_c]),
            "it_kw": np.array([decision.it_kw]),
        }
        if rec is not None:
            fields.update(
                predicted_plant_kw=np.array([rec.plant_kw]),
                baseline_plant_kw=np.array([rec.baseline_kw]),
                predicted_saving_kw=np.array([rec.saving_kw]),
                predicted_it_inlet_c=np.array([rec.it_inlet_c]),
                decision_ms=np.array([rec.seconds * 1000.0]),
            )
            if rec.setpoints is not None:
                fields.update({f"recommended_{k}": np.array([v]) for k, v in rec.setpoints.to_json().items()})
        if decision.commanded is not None:
            fields.update({f"commanded_{k}": np.array([v]) for k, v in decision.commanded.to_json().items()})
        try:
            self.store.write_derived(
                "optimizer",
                {"site": self.site, "mode": decision.mode},
                np.array([decision.ts_ns], dtype=np.int64),
                fields,
            )
        except StoreError as exc:
            log.warning("optimizer: result not stored: %s", exc)
        if self.publish is not None:
            try:
                self.publish(self.topic, _json_bytes(payload), retain=True)
            except Exception:
                log.exception("optimizer: could not publish the recommendation")


def _within_rate(sp: opt.Setpoints, current: opt.Setpoints, rate: opt.RateLimits) -> opt.Setpoints:
    """Pull each move that rounding pushed past its rate limit back towards the current value, 0.1 at a time.

    Devices report setpoints at their own precision (15.3 °C in a BACnet float32 reads back as
    15.3000002) and the agent judges ``max_step`` against that reading, so a full-rate move rounded
    to 0.1 (15.3000002 - 1 K -> 14.3) would exceed ``max_step`` by the representation error and
    be refused.
    """

    def fit(value: float, now: float, most: float) -> float:
        if not math.isfinite(now):
            return value
        towards = 0.1 if value < now else -0.1
        for _ in range(100):
            if abs(value - now) <= most:
                break
            value = round(value + towards, 1)
        return value

    return opt.Setpoints(
        fit(sp.chw_supply_c, current.chw_supply_c, rate.chw_supply_k),
        fit(sp.cw_setpoint_c, current.cw_setpoint_c, rate.cw_setpoint_k),
        fit(sp.chw_pump_pct, current.chw_pump_pct, rate.pump_pct),
        fit(sp.cw_pump_pct, current.cw_pump_pct, rate.pump_pct),
    )


def _step_only(current: opt.Setpoints, target: opt.Setpoints, rate: opt.RateLimits) -> opt.Setpoints:
    """Rate-limited moves without a model (the fit is unusable): supply down and pumps up first are safe."""

    def step(now: float, goal: float, most: float) -> float:
        return now + max(-most, min(most, goal - now))

    return opt.Setpoints(
        step(current.chw_supply_c, target.chw_supply_c, rate.chw_supply_k),
        step(current.cw_setpoint_c, target.cw_setpoint_c, rate.cw_setpoint_k),
        step(current.chw_pump_pct, target.chw_pump_pct, rate.pump_pct),
        step(current.cw_pump_pct, target.cw_pump_pct, rate.pump_pct),
    )


def _json_bytes(data: Mapping[str, Any]) -> bytes:
    import json  # noqa: PLC0415

    return json.dumps(data, default=str, allow_nan=False).encode()


# ---------------------------------------------------------------------------
# Scheduling (collector service hook)
# ---------------------------------------------------------------------------


@dataclass
class Running:
    """What :func:`start` started: the scheduler and the command-result subscriber."""

    service: OptimizerService
    scheduler: Any
    watcher: Any | None


def start(config: CollectorConfig, store: Store, publish: Publish | None = None) -> Running | None:
    """Schedule the optimiser in the running event loop (None when there is no [optimizer] or mode is off)."""
    section = config.optimizer
    if section is None or section.mode == "off":
        return None
    from apscheduler.schedulers.asyncio import AsyncIOScheduler  # noqa: PLC0415

    service = OptimizerService(config, store, publish)

    def run(name: str, job: Callable[[], object]) -> None:
        try:
            job()
        except StoreError as exc:
            log.warning("optimizer %s: store: %s", name, exc)
        except Exception:  # a bug in a job must not stop the collector
            log.exception("optimizer %s failed", name)

    scheduler = AsyncIOScheduler(timezone=config.collector.timezone)
    common: dict[str, Any] = {"max_instances": 1, "coalesce": True, "misfire_grace_time": 300}
    scheduler.add_job(run, "interval", args=["refit", service.refit], seconds=section.refit_interval_s, **common)
    scheduler.add_job(run, "interval", args=["decide", service.decide], seconds=section.interval_s, **common)
    scheduler.start()
    watcher = None
    if section.mode == "closed-loop":
        watcher = _watch_results(config, service)
    log.info(
        "optimizer scheduled: %s mode, every %.0f s, refit every %.0f s",
        section.mode,
        section.interval_s,
        section.refit_interval_s,
    )
    return Running(service, scheduler, watcher)


def _watch_results(config: CollectorConfig, service: OptimizerService) -> Any:
    """A second MQTT session subscribed to the agent's command results (clean, QoS 1)."""
    from collector.mqtt import Subscriber  # noqa: PLC0415

    assert config.optimizer is not None  # noqa: S101
    agent = config.optimizer.devices.agent
    holder: dict[str, Subscriber] = {}

    def on_message(topic: str, payload: bytes, token: tuple[int, int, int]) -> bool:
        service.on_message(topic, payload)
        holder["sub"].ack(token)
        return True

    client_id = (config.mqtt.client_id or f"dcim-collector-{config.collector.id}") + "-optimizer"
    sub = Subscriber(
        config.mqtt, client_id=client_id, site=config.collector.site, receive_maximum=100, on_message=on_message
    )
    sub.filters = [telemetry.command_result_topic(config.collector.site, agent)]
    holder["sub"] = sub
    sub.start()
    return sub


def stop(running: Running | None) -> None:
    """Stop what :func:`start` started."""
    if running is None:
        return
    running.scheduler.shutdown(wait=False)
    if running.watcher is not None:
        running.watcher.stop()


# ---------------------------------------------------------------------------
# dcim-collector optimize
# ---------------------------------------------------------------------------


def cmd_optimize(config: CollectorConfig, store: Store, *, as_json: bool, now_ns: int | None = None) -> int:
    """Print the current recommendation, predicted plant power and saving; 0 when there is one, else 1.

    Nothing is commanded or published: the decision is advisory whatever the configured mode.
    """
    import sys  # noqa: PLC0415

    if config.optimizer is None:
        sys.stderr.write("the configuration has no [optimizer] section\n")
        return 2
    advisory = config.model_copy(update={"optimizer": config.optimizer.model_copy(update={"mode": "advisory"})})
    service = OptimizerService(advisory, store, publish=None)
    decision = service.decide(now_ns)
    data = decision.to_json()
    if as_json:
        sys.stdout.write(_json_bytes(data).decode() + "\n")
        return 0 if not decision.fallback else 1
    rec = decision.recommendation
    c = data["conditions"]
    lines = [
        (
            f"site {service.site}: wet-bulb {c['wet_bulb_c']} °C, IT load {c['it_kw']} kW, "
            f"warmest inlet {c['it_inlet_max_c']} °C"
        ),
    ]
    if decision.fit is not None:
        problems = f" ({'; '.join(decision.fit.problems)})" if decision.fit.problems else ""
        lines.append(f"fit: {decision.fit.status}{problems}")
    if rec is not None and rec.ok and rec.setpoints is not None:
        j = rec.to_json()
        sp = j["setpoints"]
        econ = "on" if rec.economiser_on else "off"
        lines.append(
            f"recommended: chilled-water supply {sp['chw_supply_c']} °C, "
            f"condenser-water setpoint {sp['cw_setpoint_c']} °C, chilled-water pumps {sp['chw_pump_pct']} %, "
            f"condenser-water pumps {sp['cw_pump_pct']} %, economiser {econ}, {rec.chillers_running} chillers"
        )
        lines.append(
            f"predicted plant power {j['predicted_plant_kw']} kW (IT inlet {j['predicted_it_inlet_c']} °C); "
            f"baseline {j['baseline_plant_kw']} kW; "
            f"saving {j['predicted_saving_kw']} kW ({j['predicted_saving_pct']} %)"
        )
    if decision.fallback:
        lines.append("no recommendation, run at the baseline setpoints: " + "; ".join(decision.reasons))
    sys.stdout.write("\n".join(lines) + "\n")
    return 0 if not decision.fallback else 1
