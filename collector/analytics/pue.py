"""PUE, DCiE, partial PUE and CUE from metered energy over stated periods (ISO/IEC 30134-2).

PUE is a ratio of energies over one period, E_facility / E_IT, each summed
over its meters. A period whose meters do not all cover it well enough is
*incomplete*: its ``pue`` is None (NaN in a series) so that it cannot be
reported as if it were sound, while ``pue_measured`` still gives the ratio of
what was measured, for diagnosis. Longer periods are built by summing the
energies of shorter ones (never by averaging their ratios), so an annual PUE
is the ratio of the annual sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import TYPE_CHECKING, Final, Literal

import numpy as np
import numpy.typing as npt

from collector.analytics.energy import as_edges_ns

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from decimal import Decimal

    from collector.analytics.energy import BinnedEnergy

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

DEFAULT_MIN_COVERAGE: Final = 0.99


class Category(IntEnum):
    """PUE category: where IT energy is metered (The Green Grid, ISO/IEC 30134-2)."""

    PEAK_DEMAND = 0  # Green Grid only: peak kW, utility meter over UPS output
    BASIC = 1  # UPS output
    INTERMEDIATE = 2  # PDU output
    ADVANCED = 3  # IT equipment input


class Role(StrEnum):
    """What a meter measures in the PUE balance."""

    FACILITY = "facility"  # a facility input feed (utility, generator)
    IT_UPS_OUTPUT = "it_ups_output"
    IT_PDU_OUTPUT = "it_pdu_output"
    IT_INPUT = "it_input"
    COOLING = "cooling"  # a cooling sub-meter (chillers, towers, pumps, CRAH)
    POWER_CHAIN = "power_chain"  # losses of the power chain (UPS, transformers, PDU)


IT_ROLE: Final[Mapping[Category, Role]] = {
    Category.BASIC: Role.IT_UPS_OUTPUT,
    Category.INTERMEDIATE: Role.IT_PDU_OUTPUT,
    Category.ADVANCED: Role.IT_INPUT,
}


@dataclass(frozen=True, slots=True)
class EmissionFactor:
    """A grid emission factor and where it comes from (never a constant in code)."""

    kg_per_kwh: Decimal
    source: str


@dataclass(frozen=True, slots=True)
class MeterEnergy:
    """One meter's energy over a period and the fraction of the period it covers."""

    meter_id: str
    role: Role
    energy_kwh: float
    coverage: float


@dataclass(frozen=True, slots=True, eq=False)
class MeterTable:
    """Energy and coverage per meter (rows) and bin (columns) over common bins."""

    meter_ids: tuple[str, ...]
    roles: tuple[Role, ...]
    edges_ns: IntArray
    energy_kwh: FloatArray
    coverage: FloatArray

    def __post_init__(self) -> None:
        """Check that the arrays agree with the meters and the bins."""
        shape = (len(self.meter_ids), self.edges_ns.size - 1)
        if len(self.roles) != shape[0] or self.energy_kwh.shape != shape or self.coverage.shape != shape:
            msg = f"energy_kwh and coverage must have shape {shape} (meters, bins)"
            raise ValueError(msg)

    @classmethod
    def from_binned(cls, meters: Sequence[tuple[str, Role, BinnedEnergy]]) -> MeterTable:
        """Stack per-meter binned energies that share the same bins."""
        if not meters:
            msg = "at least one meter is needed"
            raise ValueError(msg)
        edges = meters[0][2].edges_ns
        if any(not np.array_equal(b.edges_ns, edges) for _, _, b in meters):
            msg = "all meters must be binned on the same edges"
            raise ValueError(msg)
        return cls(
            meter_ids=tuple(m for m, _, _ in meters),
            roles=tuple(r for _, r, _ in meters),
            edges_ns=edges,
            energy_kwh=np.stack([b.energy_kwh for _, _, b in meters]),
            coverage=np.stack([b.coverage for _, _, b in meters]),
        )

    def rebin(self, edges_ns: npt.ArrayLike) -> MeterTable:
        """Sum into coarser bins whose boundaries are all boundaries of this table.

        Energies add; coverage is the time-weighted mean of the fine bins, which
        is the covered fraction of the coarse bin.
        """
        new = as_edges_ns(edges_ns)
        pos = np.searchsorted(self.edges_ns, new)
        if pos[-1] >= self.edges_ns.size or not np.array_equal(self.edges_ns[pos], new):
            msg = "the new edges must be a subset of the table's edges"
            raise ValueError(msg)
        lo, hi = int(pos[0]), int(pos[-1])
        starts = pos[:-1] - lo
        fine_ns = np.diff(self.edges_ns[lo : hi + 1]).astype(np.float64)
        energy = np.add.reduceat(self.energy_kwh[:, lo:hi], starts, axis=1)
        covered = np.add.reduceat(self.coverage[:, lo:hi] * fine_ns, starts, axis=1)
        return MeterTable(
            meter_ids=self.meter_ids,
            roles=self.roles,
            edges_ns=new,
            energy_kwh=energy,
            coverage=covered / np.diff(new).astype(np.float64),
        )


@dataclass(frozen=True, slots=True)
class PueResult:
    """PUE and derived metrics for one stated period and category.

    ``pue``, ``dcie_pct`` and ``cue_kg_per_kwh`` are None unless ``complete``;
    a partial PUE is None unless its own sub-meters and the IT meters cover
    the period. ``coverage`` is the lowest coverage among the facility and IT
    meters; ``incomplete_meters`` lists those below the minimum.
    """

    start_ns: int
    end_ns: int
    category: Category
    facility_kwh: float
    it_kwh: float
    pue: float | None
    pue_measured: float | None
    dcie_pct: float | None
    ppue_cooling: float | None
    ppue_power_chain: float | None
    cue_kg_per_kwh: float | None
    emission_factor_source: str | None
    coverage: float
    complete: bool
    incomplete_meters: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, eq=False)
class PueSeries:
    """PUE for consecutive periods; arrays have one entry per period, NaN where not reportable."""

    category: Category
    edges_ns: IntArray
    facility_kwh: FloatArray
    it_kwh: FloatArray
    cooling_kwh: FloatArray
    power_chain_kwh: FloatArray
    pue: FloatArray
    pue_measured: FloatArray
    dcie_pct: FloatArray
    ppue_cooling: FloatArray
    ppue_power_chain: FloatArray
    cue_kg_per_kwh: FloatArray
    emission_factor_source: str | None
    coverage: FloatArray
    complete: BoolArray
    incomplete_meters: tuple[tuple[str, ...], ...]

    def __len__(self) -> int:
        """Return the number of periods."""
        return int(self.pue.size)

    def period(self, index: int) -> PueResult:
        """Return period ``index`` as a scalar result, None for what is not reportable."""

        def opt(values: FloatArray) -> float | None:
            value = float(values[index])
            return None if math.isnan(value) else value

        return PueResult(
            start_ns=int(self.edges_ns[index]),
            end_ns=int(self.edges_ns[index + 1]),
            category=self.category,
            facility_kwh=float(self.facility_kwh[index]),
            it_kwh=float(self.it_kwh[index]),
            pue=opt(self.pue),
            pue_measured=opt(self.pue_measured),
            dcie_pct=opt(self.dcie_pct),
            ppue_cooling=opt(self.ppue_cooling),
            ppue_power_chain=opt(self.ppue_power_chain),
            cue_kg_per_kwh=opt(self.cue_kg_per_kwh),
            emission_factor_source=self.emission_factor_source,
            coverage=float(self.coverage[index]),
            complete=bool(self.complete[index]),
            incomplete_meters=self.incomplete_meters[index],
        )


def _choose_category(roles: Sequence[Role], category: Category | None) -> Category:
    """Use the requested category, or the most detailed one the IT meters allow."""
    present = {c for c, r in IT_ROLE.items() if r in roles}
    if category is None:
        if not present:
            msg = "no IT meter (UPS output, PDU output or IT input) among the meters"
            raise ValueError(msg)
        return max(present)
    if category == Category.PEAK_DEMAND:
        msg = "category 0 is a ratio of peak demand: use peak_demand_pue()"
        raise ValueError(msg)
    if category not in present:
        msg = f"no {IT_ROLE[category].value} meter for category {int(category)}"
        raise ValueError(msg)
    return category


def _ratio(numerator: FloatArray, denominator: FloatArray) -> FloatArray:
    """Elementwise ratio, NaN where the denominator is not positive."""
    out = np.full(numerator.shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0.0)
    return out


def pue_series(
    table: MeterTable,
    *,
    category: Category | None = None,
    min_coverage: float = DEFAULT_MIN_COVERAGE,
    emission_factor: EmissionFactor | None = None,
) -> PueSeries:
    """PUE and derived metrics for every bin of ``table``.

    Facility energy is the sum of the ``FACILITY`` meters; IT energy the sum
    of the meters of the category's IT role (by default the most detailed
    category present; IT meters of other roles are ignored, so levels are
    never mixed or double counted). A bin is complete when every facility
    and IT meter covers at least ``min_coverage`` of it and IT energy is
    positive. A configured meter with no data has coverage 0, which makes
    the bins it misses incomplete.
    """
    if not 0.0 <= min_coverage <= 1.0:
        msg = "min_coverage must be between 0 and 1"
        raise ValueError(msg)
    cat = _choose_category(table.roles, category)
    roles = np.array([r.value for r in table.roles])

    def rows(role: Role) -> BoolArray:
        return np.asarray(roles == role.value, dtype=np.bool_)

    facility_rows, it_rows = rows(Role.FACILITY), rows(IT_ROLE[cat])
    if not facility_rows.any():
        msg = "no facility meter among the meters"
        raise ValueError(msg)
    energy, coverage = table.energy_kwh, table.coverage
    low = ~(coverage >= min_coverage)  # a NaN coverage is not enough coverage
    n_bins = energy.shape[1]

    def total(mask: BoolArray) -> FloatArray:
        return energy[mask].sum(axis=0) if mask.any() else np.full(n_bins, np.nan)

    def all_covered(mask: BoolArray) -> BoolArray:
        return np.asarray(~low[mask].any(axis=0), dtype=np.bool_)

    facility_kwh, it_kwh = total(facility_rows), total(it_rows)
    required = facility_rows | it_rows
    it_ok = all_covered(it_rows) & (it_kwh > 0.0)
    complete = it_ok & all_covered(facility_rows)
    measured = _ratio(facility_kwh, it_kwh)
    pue = np.where(complete, measured, np.nan)

    cooling_rows, chain_rows = rows(Role.COOLING), rows(Role.POWER_CHAIN)
    cooling_kwh, chain_kwh = total(cooling_rows), total(chain_rows)
    ppue_cooling = np.where(it_ok & all_covered(cooling_rows), _ratio(it_kwh + cooling_kwh, it_kwh), np.nan)
    ppue_chain = np.where(it_ok & all_covered(chain_rows), _ratio(it_kwh + chain_kwh, it_kwh), np.nan)
    factor = float(emission_factor.kg_per_kwh) if emission_factor is not None else math.nan

    ids = np.array(table.meter_ids, dtype=object)
    short = required[:, None] & low
    flagged = set(np.flatnonzero(short.any(axis=0)).tolist())
    incomplete = tuple(tuple(str(m) for m in ids[short[:, j]]) if j in flagged else () for j in range(n_bins))
    return PueSeries(
        category=cat,
        edges_ns=table.edges_ns,
        facility_kwh=facility_kwh,
        it_kwh=it_kwh,
        cooling_kwh=cooling_kwh,
        power_chain_kwh=chain_kwh,
        pue=pue,
        pue_measured=measured,
        dcie_pct=np.where(complete, _ratio(100.0 * it_kwh, facility_kwh), np.nan),
        ppue_cooling=ppue_cooling,
        ppue_power_chain=ppue_chain,
        cue_kg_per_kwh=factor * pue,
        emission_factor_source=emission_factor.source if emission_factor is not None else None,
        coverage=coverage[required].min(axis=0),
        complete=complete,
        incomplete_meters=incomplete,
    )


def compute_pue(
    meters: Sequence[MeterEnergy],
    start_ns: int,
    end_ns: int,
    *,
    category: Category | None = None,
    min_coverage: float = DEFAULT_MIN_COVERAGE,
    emission_factor: EmissionFactor | None = None,
) -> PueResult:
    """PUE for one period from each meter's energy and coverage over that period.

    List every configured meter: a meter that has no data must be given with
    coverage 0, otherwise the period cannot be seen to be incomplete.
    """
    if not meters:
        msg = "at least one meter is needed"
        raise ValueError(msg)
    table = MeterTable(
        meter_ids=tuple(m.meter_id for m in meters),
        roles=tuple(m.role for m in meters),
        edges_ns=as_edges_ns([start_ns, end_ns]),
        energy_kwh=np.array([[m.energy_kwh] for m in meters], dtype=np.float64),
        coverage=np.array([[m.coverage] for m in meters], dtype=np.float64),
    )
    series = pue_series(table, category=category, min_coverage=min_coverage, emission_factor=emission_factor)
    return series.period(0)


def pue_report(
    table: MeterTable,
    periods: Mapping[str, npt.ArrayLike],
    *,
    category: Category | None = None,
    min_coverage: float = DEFAULT_MIN_COVERAGE,
    emission_factor: EmissionFactor | None = None,
) -> dict[str, PueSeries]:
    """PUE series for several period lengths at once (e.g. daily, monthly, annual).

    ``periods`` maps a name to bin boundaries that are all boundaries of
    ``table``; each series is computed from energies summed into those bins.
    """
    return {
        name: pue_series(
            table.rebin(edges),
            category=category,
            min_coverage=min_coverage,
            emission_factor=emission_factor,
        )
        for name, edges in periods.items()
    }


@dataclass(frozen=True, slots=True)
class LivePue:
    """Ratio of instantaneous power: a dashboard value, never a reportable PUE."""

    ratio: float | None
    facility_kw: float
    it_kw: float
    label: Literal["live"] = "live"


def live_pue_kw(facility_kw: float, it_kw: float) -> LivePue:
    """Facility power over IT power now, labelled live; None when IT power is not positive."""
    valid = math.isfinite(facility_kw) and math.isfinite(it_kw) and it_kw > 0.0
    return LivePue(ratio=facility_kw / it_kw if valid else None, facility_kw=facility_kw, it_kw=it_kw)


def peak_demand_pue(facility_peak_kw: float, it_peak_kw: float) -> float | None:
    """Category 0 PUE (The Green Grid only): peak facility demand over peak UPS output, in kW.

    It is a ratio of demands, not of energies, and is reported as category 0
    alongside the month it covers; None when the IT peak is not positive.
    """
    valid = math.isfinite(facility_peak_kw) and math.isfinite(it_peak_kw) and it_peak_kw > 0.0
    return facility_peak_kw / it_peak_kw if valid else None
