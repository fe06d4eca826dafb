"""Analytics inputs from the store: meter energies per period and device state timelines.

The glue between the store (series of readings) and the pure analytics
functions. Energy per meter and period is taken from what the jobs stored
(measurement ``meter_energy``, per day and per hour) where that covers the
period fully, and integrated from the raw readings otherwise, so that a
year's report reads a few hundred thousand stored values instead of every
reading, and late data (coverage below 1) is always picked up from the raw
series.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta, tzinfo
from typing import Final

import numpy as np
import numpy.typing as npt

from collector.analytics.availability import (
    PDU_PHASE_LOAD_STATES,
    UPS_DOWN_ALARMS,
    Cause,
    Load,
    State,
    Timeline,
    breaker_states,
    combine_redundant,
    combine_series,
    states_from_names,
    timeline_from_samples,
    ups_states,
)
from collector.analytics.energy import (
    NS_PER_S,
    BinnedEnergy,
    calendar_edges_ns,
    counter_energy_binned,
    integrate_power_binned,
)
from collector.analytics.pue import Category, EmissionFactor, MeterTable
from collector.analytics_config import AvailabilitySection, MeterSpec, PueSection, StatusDevice
from collector.store import Store

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Int8Array = npt.NDArray[np.int8]

METER_ENERGY: Final = "meter_energy"  # derived: energy_kwh and coverage per meter, tag period = hour | day
HOUR_NS: Final = 3600 * NS_PER_S
DAY_NS: Final = 24 * HOUR_NS
_FULL: Final = 1.0 - 1e-9  # a stored period is trusted only when fully covered


# ---------------------------------------------------------------- calendar


def day_edges(first: date, last: date, tz: tzinfo) -> IntArray:
    """Boundaries of the local days from ``first`` to ``last`` inclusive."""
    return calendar_edges_ns(first, last + timedelta(days=1), unit="day", tz=tz)


def hour_edges(edges_ns: IntArray) -> IntArray:
    """Every hour boundary inside coarser boundaries (local days start on the hour)."""
    start, end = int(edges_ns[0]), int(edges_ns[-1])
    hours = start + np.arange((end - start) // HOUR_NS + 1, dtype=np.int64) * HOUR_NS
    return np.union1d(hours, edges_ns).astype(np.int64)


def month_starts_within(edges_ns: IntArray, tz: tzinfo, first: date, last: date) -> IntArray:
    """Boundaries of calendar months (clipped to the range) among day boundaries."""
    months = [first]
    current = date(first.year + (first.month == 12), first.month % 12 + 1, 1)
    while current <= last:
        months.append(current)
        current = date(current.year + (current.month == 12), current.month % 12 + 1, 1)
    starts = [calendar_edges_ns(m, m + timedelta(days=1), unit="day", tz=tz)[0] for m in months]
    return np.array([*starts, int(edges_ns[-1])], dtype=np.int64)


# ---------------------------------------------------------------- energy


def emission_factor(section: PueSection) -> EmissionFactor | None:
    """The configured emission factor, with its source."""
    if section.emission_factor is None or section.emission_factor_source is None:
        return None
    return EmissionFactor(kg_per_kwh=section.emission_factor, source=section.emission_factor_source)


def category(section: PueSection) -> Category | None:
    """The configured PUE category (None: the most detailed the meters allow)."""
    return None if section.category is None else Category(section.category)


def raw_energy(store: Store, meter: MeterSpec, section: PueSection, edges_ns: IntArray) -> BinnedEnergy:
    """Energy per bin integrated from the meter's raw readings."""
    around = round(max(section.lookaround_s, section.max_gap_s if meter.source == "power" else 0.0) * NS_PER_S)
    ts, values = store.read_series(
        meter.measurement,
        meter.device,
        meter.point,
        int(edges_ns[0]) - around,
        int(edges_ns[-1]) + around + 1,
        table=meter.table,
        index=meter.index,
    )
    if meter.source == "counter":
        return counter_energy_binned(ts, values, edges_ns, wrap=meter.wrap_kwh, max_power_kw=section.max_power_kw)
    return integrate_power_binned(ts, values, edges_ns, max_gap_s=section.max_gap_s)


def derived_tags(site: str, meter: MeterSpec, period: str) -> dict[str, str]:
    """Tags of a meter's stored energy per period."""
    return {"site": site, "meter": meter.id, "period": period}


def _stored(
    store: Store, site: str, meter: MeterSpec, period: str, starts_ns: IntArray, *, end_ns: int
) -> tuple[FloatArray, FloatArray]:
    """Stored energy and coverage for periods starting at ``starts_ns`` (NaN where none is stored)."""
    energy = np.full(starts_ns.size, np.nan)
    coverage = np.full(starts_ns.size, np.nan)
    tags = derived_tags(site, meter, period)
    for field, out in (("energy_kwh", energy), ("coverage", coverage)):
        ts, values = store.read_series(METER_ENERGY, None, field, int(starts_ns[0]), end_ns, tags=tags)
        pos = np.searchsorted(starts_ns, ts)
        hit = (pos < starts_ns.size) & (starts_ns[np.minimum(pos, starts_ns.size - 1)] == ts)
        out[pos[hit]] = values[hit]
    return energy, coverage


def _runs(mask: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """Half-open index ranges of the True runs of a mask."""
    padded = np.concatenate(([False], mask, [False])).astype(np.int8)
    change = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b)) for a, b in zip(change[::2], change[1::2], strict=True)]


def _raw_fill(
    store: Store,
    meter: MeterSpec,
    section: PueSection,
    edges_ns: IntArray,
    *,
    need: npt.NDArray[np.bool_],
    energy: FloatArray,
    coverage: FloatArray,
) -> None:
    """Fill the bins flagged in ``need`` from raw readings, one read per run of bins."""
    for a, b in _runs(need):
        binned = raw_energy(store, meter, section, edges_ns[a : b + 1])
        energy[a:b] = binned.energy_kwh
        coverage[a:b] = binned.coverage


def meter_energy(
    store: Store,
    site: str,
    meter: MeterSpec,
    section: PueSection,
    edges_ns: IntArray,
    *,
    period: str | None,
    use_stored: bool = True,
) -> tuple[FloatArray, FloatArray]:
    """One meter's energy (kWh) and coverage per bin.

    ``period`` names the bins ("day", "hour", or None for other bins). With
    ``use_stored`` a bin is taken from the stored energy of its period when
    that covers it fully; day bins not so covered are built from stored
    hours, and whatever is still missing is integrated from raw readings.
    """
    n = edges_ns.size - 1
    energy, coverage = np.full(n, np.nan), np.full(n, np.nan)
    if use_stored and period is not None:
        stored_e, stored_c = _stored(store, site, meter, period, edges_ns[:-1], end_ns=int(edges_ns[-1]))
        full = stored_c >= _FULL
        energy[full], coverage[full] = stored_e[full], stored_c[full]
    need = np.isnan(coverage)
    if not need.any():
        return energy, coverage
    if use_stored and period == "day":
        for a, b in _runs(need):
            hours = hour_edges(edges_ns[a : b + 1])
            h_energy, h_cov = meter_energy(store, site, meter, section, hours, period="hour")
            table = MeterTable((meter.id,), (meter.role,), hours, h_energy.reshape(1, -1), h_cov.reshape(1, -1)).rebin(
                edges_ns[a : b + 1]
            )
            energy[a:b], coverage[a:b] = table.energy_kwh[0], table.coverage[0]
        return energy, coverage
    _raw_fill(store, meter, section, edges_ns, need=need, energy=energy, coverage=coverage)
    return energy, coverage


def meter_table(
    store: Store,
    site: str,
    section: PueSection,
    edges_ns: IntArray,
    *,
    period: str | None,
    use_stored: bool = True,
) -> MeterTable:
    """Energy and coverage of every configured meter over common bins."""
    rows = [
        meter_energy(store, site, m, section, edges_ns, period=period, use_stored=use_stored) for m in section.meters
    ]
    return MeterTable(
        meter_ids=tuple(m.id for m in section.meters),
        roles=tuple(m.role for m in section.meters),
        edges_ns=edges_ns,
        energy_kwh=np.stack([e for e, _ in rows]),
        coverage=np.stack([c for _, c in rows]),
    )


def latest_value(store: Store, measurement: str, device: str, point: str, *, now_ns: int, max_age_s: float) -> float:
    """The latest good value of a point no older than ``max_age_s``, else NaN."""
    _, values = store.read_series(measurement, device, point, now_ns - round(max_age_s * NS_PER_S), now_ns + 1)
    good = np.isfinite(values)
    return float(values[good][-1]) if good.any() else float("nan")


# ---------------------------------------------------------------- availability


def _aligned_flags(ts: IntArray, hits: Sequence[IntArray]) -> FloatArray:
    """1.0 at the times in ``ts`` that appear in any of ``hits``, else 0.0."""
    if not hits:
        return np.zeros(ts.size)
    return np.isin(ts, np.concatenate(hits)).astype(np.float64)


def _ups_alarm_flags(store: Store, dev: StatusDevice, ts: IntArray, lo_ns: int, hi_ns: int) -> dict[str, FloatArray]:
    """Per-sample flags of the down alarms, from the rows of the RFC 1628 alarm table.

    An alarm is present at a poll when a row of that poll names it; the table
    has no rows when no alarm is present, so absence is read from the poll
    times of the output source.
    """
    measurement = dev.resolved_measurement
    rows = [
        k.index
        for k in store.list_series(measurement, device=dev.device)
        if k.table == dev.alarms_table and k.index is not None
    ]
    present: dict[str, list[IntArray]] = {name: [] for name in UPS_DOWN_ALARMS}
    for index in rows:
        r_ts, names = store.read_text(
            measurement, dev.device, dev.alarm_column, lo_ns, hi_ns, table=dev.alarms_table, index=index
        )
        labels = np.array([n or "" for n in names], dtype=str)
        for name, hits in present.items():
            hits.append(r_ts[labels == name])
    return {name: _aligned_flags(ts, hits) for name, hits in present.items()}


def _ups_flag_states(store: Store, dev: StatusDevice, lo_ns: int, hi_ns: int) -> tuple[IntArray, Int8Array, Int8Array]:
    """States of an APC-style UPS from its online, on_battery and on_bypass flags."""
    m = dev.resolved_measurement
    ts, battery = store.read_series(m, dev.device, dev.point or "on_battery", lo_ns, hi_ns)

    def aligned(point: str) -> FloatArray:
        p_ts, p_values = store.read_series(m, dev.device, point, lo_ns, hi_ns)
        out = np.full(ts.size, np.nan)
        if p_ts.size:
            pos = np.clip(np.searchsorted(p_ts, ts), 0, p_ts.size - 1)
            hit = p_ts[pos] == ts
            out[hit] = p_values[pos[hit]]
        return out

    online, bypass = aligned("online"), aligned("on_bypass")
    state = np.full(ts.size, State.DOWN, dtype=np.int8)
    cause = np.full(ts.size, Cause.OUTPUT_OFF, dtype=np.int8)
    for flag, code, why in (
        (online, State.UP, Cause.NONE),
        (bypass, State.DEGRADED, Cause.ON_BYPASS),
        (battery, State.DEGRADED, Cause.ON_BATTERY),
    ):
        on = np.nan_to_num(flag, nan=0.0) != 0.0
        state[on], cause[on] = code, why
    missing = np.isnan(battery) | np.isnan(online) | np.isnan(bypass)
    state[missing], cause[missing] = State.UNKNOWN, Cause.NO_DATA
    return ts, state, cause


def _pdu_timeline(store: Store, dev: StatusDevice, lo_ns: int, end_ns: int, max_gap_s: float) -> Timeline:
    """A PDU's timeline from its load state: the device-level point, or every row of a table in series."""
    m, point = dev.resolved_measurement, dev.resolved_point
    rows: list[tuple[str | None, str | None]] = [(dev.table, dev.index)]
    if dev.table is not None and dev.index is None:
        found = sorted({k.index for k in store.list_series(m, device=dev.device) if k.table == dev.table and k.index})
        rows = [(dev.table, index) for index in found] or [(dev.table, "")]
    parts = []
    for table, index in rows:
        ts, names = store.read_text(m, dev.device, point, lo_ns, end_ns, table=table, index=index)
        state, cause = states_from_names(np.array([n or "" for n in names], dtype=str), PDU_PHASE_LOAD_STATES)
        name = dev.device if table is None else f"{dev.device}/{table}/{index}"
        parts.append(timeline_from_samples(name, ts, state, cause, max_gap_s=max_gap_s, end_ns=end_ns))
    if len(parts) == 1:
        only = parts[0]
        return Timeline(dev.device, only.start_ns, only.state, only.cause, only.end_ns)
    return combine_series(dev.device, parts)


def device_timeline(store: Store, dev: StatusDevice, start_ns: int, end_ns: int, max_gap_s: float) -> Timeline:
    """A device's state timeline over [start_ns, end_ns) from its stored status points.

    Samples from ``max_gap_s`` before the start are read so that the state at
    the start is known; no data is UNKNOWN, never UP.
    """
    lo = start_ns - round(max_gap_s * NS_PER_S)
    m, point = dev.resolved_measurement, dev.resolved_point
    if dev.type == "ups":
        ts, names = store.read_text(m, dev.device, point, lo, end_ns)
        alarms = _ups_alarm_flags(store, dev, ts, lo, end_ns)
        state, cause = ups_states(np.array([n or "" for n in names], dtype=str), alarms)
        return timeline_from_samples(dev.device, ts, state, cause, max_gap_s=max_gap_s, end_ns=end_ns)
    if dev.type == "ups-flags":
        ts, state, cause = _ups_flag_states(store, dev, lo, end_ns)
        return timeline_from_samples(dev.device, ts, state, cause, max_gap_s=max_gap_s, end_ns=end_ns)
    if dev.type == "pdu":
        return _pdu_timeline(store, dev, lo, end_ns, max_gap_s)
    ts, flags = store.read_series(m, dev.device, point, lo, end_ns, table=dev.table, index=dev.index)
    state, cause = breaker_states(flags)
    return timeline_from_samples(dev.device, ts, state, cause, max_gap_s=max_gap_s, end_ns=end_ns)


@dataclass(frozen=True, slots=True)
class Site:
    """The loads of a site and the device timelines behind them."""

    loads: tuple[Load, ...]
    devices: Mapping[str, Timeline]


def site_loads(section: AvailabilitySection, devices: Mapping[str, Timeline]) -> Site:
    """The configured loads, each with the timeline of its power path.

    Without [[availability.loads]] the site is one load that needs every
    device and group that is not itself a member of a group.
    """
    groups = {g.id: g for g in section.groups}
    built: dict[str, Timeline] = dict(devices)

    def node(ident: str) -> Timeline:
        if ident not in built:
            g = groups[ident]
            built[ident] = combine_redundant(ident, [node(m) for m in g.members], needed=g.needed)
        return built[ident]

    def behind(ident: str) -> set[str]:
        if ident in groups:
            return set().union(*(behind(m) for m in groups[ident].members))
        return {ident}

    def path(name: str, idents: Sequence[str]) -> Timeline:
        parts = [node(i) for i in idents]
        return combine_series(name, parts)

    specs = section.loads
    loads: list[Load] = []
    if not specs:
        members = {m for g in section.groups for m in g.members}
        top = [d.device for d in section.devices if d.device not in members]
        top += [g.id for g in section.groups if g.id not in members]
        timeline = path("power-environment", top)
        loads.append(Load(timeline, 1.0, tuple(devices[d] for d in sorted(devices))))
        return Site(tuple(loads), devices)
    for spec in specs:
        idents = (*spec.path, *spec.feed_a, *spec.feed_b)
        involved = sorted(set().union(*(behind(i) for i in idents)))
        if spec.path:
            timeline = path(spec.id, spec.path)
        else:
            a, b = path(f"{spec.id}/a", spec.feed_a), path(f"{spec.id}/b", spec.feed_b)
            timeline = combine_redundant(spec.id, [a, b], needed=1)
        loads.append(Load(timeline, spec.weight, tuple(devices[d] for d in involved)))
    return Site(tuple(loads), devices)


def read_site(store: Store, section: AvailabilitySection, start_ns: int, end_ns: int) -> Site:
    """Timelines of every configured device over [start_ns, end_ns), combined into loads."""
    devices = {d.device: device_timeline(store, d, start_ns, end_ns, section.max_gap_s) for d in section.devices}
    return site_loads(section, devices)
