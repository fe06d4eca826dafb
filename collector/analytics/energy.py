"""Interval energy from meter series: counters with resets and wraps, and integrated power.

A series is two arrays of the same length: int64 nanoseconds since the Unix
epoch (UTC, non-decreasing) and float64 values with NaN for a missing read.
Bins are given as an array of ``n + 1`` strictly increasing boundaries; bin
``i`` spans ``[edges_ns[i], edges_ns[i + 1])``.

Energy between two consecutive usable samples (a *pair*) is apportioned to the
bins it overlaps by the power shape assumed inside the pair: constant for a
counter, linear for power samples (the trapezoid). Bins are therefore additive:
the energy of a month is the sum of the energies of its days, whatever the
sampling.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

NS_PER_S = 1_000_000_000
S_PER_H = 3600
_NS_PER_H = NS_PER_S * S_PER_H
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MONTHS_PER_YEAR = 12

CalendarUnit = Literal["day", "month", "year"]


@dataclass(frozen=True, slots=True)
class EnergyResult:
    """Energy over one interval, the share of it the data covers, and what was found.

    ``coverage`` is the fraction of the interval spanned by usable sample
    pairs: time before the first sample, after the last one, across a gap
    longer than the limit (power) or across a reset (counter) is not covered.
    ``resets``, ``wraps`` and ``gaps`` count events observed in the interval,
    each at the time of the sample that revealed it.
    """

    energy_kwh: float
    coverage: float
    resets: int = 0
    wraps: int = 0
    gaps: int = 0


@dataclass(frozen=True, slots=True, eq=False)
class BinnedEnergy:
    """Energy per bin for one meter; arrays have one entry per bin."""

    edges_ns: IntArray
    energy_kwh: FloatArray
    coverage: FloatArray
    resets: IntArray
    wraps: IntArray
    gaps: IntArray

    def __len__(self) -> int:
        """Return the number of bins."""
        return int(self.energy_kwh.size)

    def result(self, index: int) -> EnergyResult:
        """Return bin ``index`` as a scalar result."""
        return EnergyResult(
            energy_kwh=float(self.energy_kwh[index]),
            coverage=float(self.coverage[index]),
            resets=int(self.resets[index]),
            wraps=int(self.wraps[index]),
            gaps=int(self.gaps[index]),
        )


def as_edges_ns(edges_ns: npt.ArrayLike) -> IntArray:
    """Return bin boundaries as int64, checking there is at least one bin and they increase."""
    edges = np.asarray(edges_ns, dtype=np.int64)
    if edges.ndim != 1 or edges.size < 2:
        msg = "edges_ns must be a 1-D array of at least two boundaries"
        raise ValueError(msg)
    if np.any(edges[1:] <= edges[:-1]):
        msg = "edges_ns must be strictly increasing"
        raise ValueError(msg)
    return edges


def _usable_samples(ts_ns: npt.ArrayLike, values: npt.ArrayLike) -> tuple[IntArray, FloatArray, IntArray]:
    """Drop missing values and check the time order of what is left: (ts, values, diff of ts)."""
    ts = np.asarray(ts_ns, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    if ts.ndim != 1 or ts.shape != v.shape:
        msg = "ts_ns and values must be 1-D arrays of the same length"
        raise ValueError(msg)
    finite = np.isfinite(v)
    if not finite.all():
        ts, v = ts[finite], v[finite]
    dt_ns = np.diff(ts)
    if (dt_ns < 0).any():
        msg = "ts_ns must be non-decreasing"
        raise ValueError(msg)
    return ts, v, dt_ns


def _count_in_bins(event_ns: IntArray, edges: IntArray) -> IntArray:
    """Count events per bin; events outside every bin are ignored."""
    n_bins = edges.size - 1
    idx = np.searchsorted(edges, event_ns, side="right") - 1
    inside = (idx >= 0) & (idx < n_bins)
    return np.bincount(idx[inside], minlength=n_bins).astype(np.int64)


def _bin_pairs(
    ts: IntArray,
    dt_ns: IntArray,
    edges: IntArray,
    *,
    pair_kwh: FloatArray,
    bad: npt.NDArray[np.intp],
    power_kw: FloatArray | None,
) -> tuple[FloatArray, FloatArray]:
    """Energy and covered fraction per bin.

    ``pair_kwh[j]`` is the energy between samples ``j`` and ``j + 1`` (zero
    for the pairs listed in ``bad``, which are not covered). Power inside a
    pair is constant when ``power_kw`` is None (a counter), else linear from
    ``power_kw[j]`` to ``power_kw[j + 1]`` (the trapezoid).

    Cumulative energy and covered time are known at every sample; at a bin
    boundary inside a pair, the part of that pair before the boundary is
    added. Differences at the boundaries give the bins. Only the cumulative
    energy needs a pass over all pairs: covered time is elapsed time minus
    the (few) bad pairs, and everything else is evaluated at the boundaries.
    """
    n = ts.size
    bin_ns = np.diff(edges)
    if n < 2:
        return np.zeros(bin_ns.size), np.zeros(bin_ns.size)
    cum_kwh = np.cumsum(pair_kwh)  # cum_kwh[j]: pairs 0..j

    # k: the last sample at or before each boundary. A boundary strictly inside
    # pair k has 0 <= k <= n - 2 and ts[k] <= edge < ts[k + 1], so dt_ns[k] > 0.
    k = np.searchsorted(ts, edges, side="right") - 1
    pair = np.clip(k, 0, n - 2)
    inside = (k >= 0) & (k < n - 1)
    pair_is_bad = np.isin(pair, bad)
    usable = inside & ~pair_is_bad
    tau_ns = np.where(inside, edges - ts[pair], 0)
    tau_s = tau_ns / NS_PER_S
    dt_s = np.maximum(dt_ns[pair], 1) / NS_PER_S
    if power_kw is None:
        part_kwh = pair_kwh[pair] * (tau_s / dt_s)
    else:
        p0, p1 = power_kw[pair], power_kw[pair + 1]
        part_kwh = (p0 * tau_s + (p1 - p0) * tau_s * tau_s / (2.0 * dt_s)) / S_PER_H
    kwh_at = np.where(k >= 1, cum_kwh[np.clip(k - 1, 0, n - 2)], 0.0) + np.where(usable, part_kwh, 0.0)

    # Covered time to a boundary: elapsed time since the first sample, less
    # the bad pairs wholly before it (those with index < k), less the part of
    # pair k before the boundary when that pair is bad. Integer nanoseconds.
    cum_bad_ns = np.concatenate(([0], np.cumsum(dt_ns[bad])))
    bad_before_ns = cum_bad_ns[np.searchsorted(bad, np.maximum(k, 0))]
    elapsed_ns = np.clip(edges, ts[0], ts[-1]) - ts[0]
    ns_at = elapsed_ns - bad_before_ns - np.where(inside & pair_is_bad, tau_ns, 0)
    return np.diff(kwh_at), np.diff(ns_at) / bin_ns


def counter_energy_binned(
    ts_ns: npt.ArrayLike,
    values_kwh: npt.ArrayLike,
    edges_ns: npt.ArrayLike,
    *,
    wrap: float | None = None,
    max_power_kw: float | None = None,
) -> BinnedEnergy:
    """Energy per bin from a monotonic energy counter (kWh).

    Energy is the sum of non-negative increments between consecutive non-NaN
    samples. A decrease starts a new run: the pair across it contributes
    nothing and is not covered (a reset by a user, a replaced meter). With
    ``wrap`` (the counter modulus in kWh, e.g. ``2**32 * 0.1`` for a
    Counter32 in 0.1 kWh) a decrease is taken as a wrap when going forward
    round the modulus is the shorter way (serial-number arithmetic), and the
    wrapped increment is counted. With ``max_power_kw`` any increment that
    would need a higher mean power is discarded like a reset, which stops a
    glitch or a reset mistaken for a wrap from adding huge energy.
    """
    if wrap is not None and wrap <= 0.0:
        msg = "wrap must be positive"
        raise ValueError(msg)
    ts, v, dt_ns = _usable_samples(ts_ns, values_kwh)
    edges = as_edges_ns(edges_ns)
    n_bins = edges.size - 1
    zeros = np.zeros(n_bins, dtype=np.int64)
    if ts.size < 2:
        return BinnedEnergy(edges, np.zeros(n_bins), np.zeros(n_bins), zeros, zeros, zeros)

    inc = np.diff(v)
    # Decreases are rare: decide wrap or reset on that subset only.
    decrease = np.flatnonzero(inc < 0.0)
    wrapped = decrease[:0]
    bad = decrease
    if wrap is not None and decrease.size:
        forward = inc[decrease] + wrap
        is_wrap = (v[decrease] < wrap) & (v[decrease + 1] >= 0.0) & (forward < wrap / 2.0)
        wrapped, bad = decrease[is_wrap], decrease[~is_wrap]
        inc[wrapped] = forward[is_wrap]
    if max_power_kw is not None:
        # Prefilter against the shortest pair's allowance, then check the few
        # candidates against their own duration.
        candidates = np.flatnonzero(inc > max_power_kw * dt_ns.min() / _NS_PER_H)
        too_fast = candidates[inc[candidates] > max_power_kw * dt_ns[candidates] / _NS_PER_H]
        bad = np.union1d(bad, too_fast)
        wrapped = np.setdiff1d(wrapped, too_fast)
    inc[bad] = 0.0

    energy, coverage = _bin_pairs(ts, dt_ns, edges, pair_kwh=inc, bad=bad, power_kw=None)
    return BinnedEnergy(
        edges_ns=edges,
        # Rounding in the cumulative sum must not surface as a negative bin.
        energy_kwh=np.maximum(energy, 0.0),
        coverage=coverage,
        resets=_count_in_bins(ts[bad + 1], edges),
        wraps=_count_in_bins(ts[wrapped + 1], edges),
        gaps=zeros,
    )


def counter_energy(
    ts_ns: npt.ArrayLike,
    values_kwh: npt.ArrayLike,
    start_ns: int,
    end_ns: int,
    *,
    wrap: float | None = None,
    max_power_kw: float | None = None,
) -> EnergyResult:
    """Energy from ``start_ns`` to ``end_ns`` from a monotonic counter (kWh).

    See :func:`counter_energy_binned`. Pass samples from before and after the
    interval as well: the pairs that straddle its ends are apportioned.
    """
    binned = counter_energy_binned(ts_ns, values_kwh, [start_ns, end_ns], wrap=wrap, max_power_kw=max_power_kw)
    return binned.result(0)


def integrate_power_binned(
    ts_ns: npt.ArrayLike,
    power_kw: npt.ArrayLike,
    edges_ns: npt.ArrayLike,
    *,
    max_gap_s: float,
) -> BinnedEnergy:
    """Energy per bin by trapezoid integration of power samples (kW).

    NaN samples are dropped; consecutive remaining samples further apart than
    ``max_gap_s`` are not bridged: that time contributes no energy and no
    coverage, and the gap is counted.
    """
    if max_gap_s <= 0.0:
        msg = "max_gap_s must be positive"
        raise ValueError(msg)
    ts, p, dt_ns = _usable_samples(ts_ns, power_kw)
    edges = as_edges_ns(edges_ns)
    n_bins = edges.size - 1
    zeros = np.zeros(n_bins, dtype=np.int64)
    if ts.size < 2:
        return BinnedEnergy(edges, np.zeros(n_bins), np.zeros(n_bins), zeros, zeros, zeros)

    bad = np.flatnonzero(dt_ns > round(max_gap_s * NS_PER_S))
    pair_kwh = (p[:-1] + p[1:]) * (dt_ns * (0.5 / _NS_PER_H))
    pair_kwh[bad] = 0.0
    energy, coverage = _bin_pairs(ts, dt_ns, edges, pair_kwh=pair_kwh, bad=bad, power_kw=p)
    return BinnedEnergy(
        edges_ns=edges,
        energy_kwh=energy,
        coverage=coverage,
        resets=zeros,
        wraps=zeros,
        gaps=_count_in_bins(ts[bad + 1], edges),
    )


def integrate_power(
    ts_ns: npt.ArrayLike,
    power_kw: npt.ArrayLike,
    start_ns: int,
    end_ns: int,
    *,
    max_gap_s: float,
) -> EnergyResult:
    """Energy from ``start_ns`` to ``end_ns`` by trapezoid integration of power (kW).

    See :func:`integrate_power_binned`.
    """
    return integrate_power_binned(ts_ns, power_kw, [start_ns, end_ns], max_gap_s=max_gap_s).result(0)


def datetime_ns(moment: datetime) -> int:
    """Return an aware datetime as integer nanoseconds since the Unix epoch."""
    if moment.tzinfo is None:
        msg = "datetime must be timezone-aware"
        raise ValueError(msg)
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1000


def calendar_edges_ns(first: date, last: date, *, unit: CalendarUnit, tz: tzinfo = UTC) -> IntArray:
    """Boundaries at local midnight of each day, month or year start from ``first`` to ``last``.

    Both dates are included and must be aligned to ``unit`` (the first of a
    month for ``"month"``, 1 January for ``"year"``). Months and days follow
    the site's calendar, so a month in UTC+8 starts at 16:00 UTC the day before.
    """
    aligned = {
        "day": True,
        "month": first.day == 1 and last.day == 1,
        "year": (first.month, first.day, last.month, last.day) == (1, 1, 1, 1),
    }[unit]
    if not aligned or last <= first:
        msg = f"first and last must be increasing dates aligned to a {unit}"
        raise ValueError(msg)
    days: list[date] = []
    current = first
    while current <= last:
        days.append(current)
        if unit == "day":
            current += timedelta(days=1)
        elif unit == "month":
            carry, month0 = divmod(current.month, _MONTHS_PER_YEAR)
            current = date(current.year + carry, month0 + 1, 1)
        else:
            current = date(current.year + 1, 1, 1)
    return np.array([datetime_ns(datetime(d.year, d.month, d.day, tzinfo=tz)) for d in days], dtype=np.int64)
