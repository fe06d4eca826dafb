"""Availability of the power environment: state timelines, redundancy, monthly budgets, burn rates.

A device's history is a :class:`Timeline`, a step function of states: state
``i`` holds from ``start_ns[i]`` to the next start (the last one to
``end_ns``); before the first start and from ``end_ns`` on, the state is
UNKNOWN. Status samples become a timeline through description tables
(status name -> state and cause), so that what counts as down is data, not
branches. Timelines combine in series (worst state wins) and in redundancy
groups (N+1, A/B feeds). A site is a set of *loads*, each with the timeline
of the power path it sees and its share of the IT load, so that a breaker
trip on a single-corded rack counts as down in proportion to that rack.

Availability = 1 - down / period, with the period taken from a calendar
basis setting. UNKNOWN time (no data) is reported separately and is never
counted as up: a month whose unknown time could hide a budget overrun has
``met`` = None rather than True.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum, StrEnum
from typing import Final

import numpy as np
import numpy.typing as npt

from collector.analytics.energy import NS_PER_S, as_edges_ns

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Int8Array = npt.NDArray[np.int8]
BoolArray = npt.NDArray[np.bool_]


class State(IntEnum):
    """State of a device or of a load's power path; the value orders severity (worst is largest)."""

    UP = 0
    REDUNDANCY_LOST = 1  # degraded: one side of a redundant pair or group lost
    DEGRADED = 2  # on battery, on bypass, overloaded: still feeding, unprotected
    UNKNOWN = 3  # no data: never counted as up
    DOWN = 4


class Cause(IntEnum):
    """Why a segment of a timeline is in its state."""

    NONE = 0
    NO_DATA = 1
    OUTPUT_SOURCE_NONE = 2
    OUTPUT_OFF = 3
    SYSTEM_OFF = 4
    ON_BATTERY = 5
    ON_BYPASS = 6
    OTHER_SOURCE = 7
    BREAKER_TRIP = 8
    OVERLOAD = 9
    REDUNDANCY_LOST = 10


StateTable = Mapping[str, tuple[State, Cause]]

# upsOutputSource names (RFC 1628). Booster and reducer are voltage regulation
# on mains, still protected; "other" says nothing certain about the output.
UPS_OUTPUT_SOURCE_STATES: Final[StateTable] = {
    "normal": (State.UP, Cause.NONE),
    "booster": (State.UP, Cause.NONE),
    "reducer": (State.UP, Cause.NONE),
    "battery": (State.DEGRADED, Cause.ON_BATTERY),
    "bypass": (State.DEGRADED, Cause.ON_BYPASS),
    "none": (State.DOWN, Cause.OUTPUT_SOURCE_NONE),
    "other": (State.UNKNOWN, Cause.OTHER_SOURCE),
}

# upsWellKnownAlarms that mean the load has lost power, whatever the output source says.
UPS_DOWN_ALARMS: Final[Mapping[str, Cause]] = {
    "upsOutputOff": Cause.OUTPUT_OFF,
    "upsSystemOff": Cause.SYSTEM_OFF,
}

# rPDU2 phase load state names: an overloaded phase is one step from a trip.
PDU_PHASE_LOAD_STATES: Final[StateTable] = {
    "lowLoad": (State.UP, Cause.NONE),
    "normal": (State.UP, Cause.NONE),
    "nearOverload": (State.UP, Cause.NONE),
    "overload": (State.DEGRADED, Cause.OVERLOAD),
}

_N_STATES = len(State)
_KNOWN_STATES = (State.UP, State.REDUNDANCY_LOST, State.DEGRADED, State.DOWN)
_CARRYING_STATES = (State.UP, State.REDUNDANCY_LOST, State.DEGRADED)
_S_PER_DAY = 86_400


def states_from_names(names: npt.ArrayLike | Sequence[str | None], table: StateTable) -> tuple[Int8Array, Int8Array]:
    """Per-sample state and cause codes from enumeration names through a description table.

    A name missing from the table (a failed read arrives as None or NaN) is
    UNKNOWN with cause NO_DATA, never UP.
    """
    values = np.asarray(names)
    if values.dtype.kind != "U":
        # Compared as fixed-width text the lookups run in C; a failed read
        # (None, NaN) becomes text that matches no name.
        values = values.astype(str)
    state = np.full(values.shape, State.UNKNOWN, dtype=np.int8)
    cause = np.full(values.shape, Cause.NO_DATA, dtype=np.int8)
    for name, (code, why) in table.items():  # over the table, a handful of names
        hit = values == name
        state[hit] = code
        cause[hit] = why
    return state, cause


def _flags(values: npt.ArrayLike) -> BoolArray:
    """Return True where a flag is set; a missing (NaN) flag is not set."""
    arr = np.asarray(values, dtype=np.float64)
    return np.asarray(np.nan_to_num(arr, nan=0.0) != 0.0, dtype=np.bool_)


def ups_states(
    output_source: npt.ArrayLike | Sequence[str | None],
    alarms: Mapping[str, npt.ArrayLike] | None = None,
    *,
    source_table: StateTable = UPS_OUTPUT_SOURCE_STATES,
    down_alarms: Mapping[str, Cause] = UPS_DOWN_ALARMS,
) -> tuple[Int8Array, Int8Array]:
    """Per-sample UPS state from upsOutputSource names and alarm flags.

    ``alarms`` maps an alarm name to a per-sample flag array (bool, or float
    with NaN for not read). A set down-alarm makes the sample DOWN even when
    the output source claims otherwise: the load has no power.
    """
    state, cause = states_from_names(output_source, source_table)
    for alarm, why in down_alarms.items():
        if alarms is not None and alarm in alarms:
            flag = _flags(alarms[alarm])
            if flag.shape != state.shape:
                msg = f"alarm {alarm} has {flag.size} samples, output_source {state.size}"
                raise ValueError(msg)
            state[flag] = State.DOWN
            cause[flag] = why
    return state, cause


def breaker_states(tripped: npt.ArrayLike) -> tuple[Int8Array, Int8Array]:
    """Per-sample state of a breaker or phase feeding a load: tripped is DOWN, NaN is UNKNOWN."""
    arr = np.asarray(tripped, dtype=np.float64)
    set_or_missing = (arr != 0.0).view(np.int8)  # NaN compares unequal: set right below
    state = set_or_missing * np.int8(State.DOWN)
    cause = set_or_missing * np.int8(Cause.BREAKER_TRIP)
    missing = np.isnan(arr)
    if missing.any():
        state[missing] = State.UNKNOWN
        cause[missing] = Cause.NO_DATA
    return state, cause


@dataclass(frozen=True, slots=True, eq=False)
class Timeline:
    """Step function of states for one device, group or load (see the module docstring)."""

    name: str
    start_ns: IntArray
    state: Int8Array
    cause: Int8Array
    end_ns: int

    def __post_init__(self) -> None:
        """Check the segment arrays agree and are ordered."""
        n = self.start_ns.size
        if self.state.size != n or self.cause.size != n:
            msg = f"timeline {self.name}: start_ns, state and cause must have the same length"
            raise ValueError(msg)
        if np.any(self.start_ns[1:] <= self.start_ns[:-1]) or (n and self.start_ns[-1] >= self.end_ns):
            msg = f"timeline {self.name}: segment starts must increase and precede end_ns"
            raise ValueError(msg)

    def at(self, t_ns: npt.ArrayLike) -> tuple[Int8Array, Int8Array]:
        """State and cause at the given times."""
        t = np.asarray(t_ns, dtype=np.int64)
        if self.start_ns.size == 0:
            return (
                np.full(t.shape, State.UNKNOWN, dtype=np.int8),
                np.full(t.shape, Cause.NO_DATA, dtype=np.int8),
            )
        k = np.searchsorted(self.start_ns, t, side="right") - 1
        valid = (k >= 0) & (t < self.end_ns)
        kc = np.clip(k, 0, self.start_ns.size - 1)
        state = np.where(valid, self.state[kc], State.UNKNOWN).astype(np.int8)
        cause = np.where(valid, self.cause[kc], Cause.NO_DATA).astype(np.int8)
        return state, cause

    def segment_end_ns(self) -> IntArray:
        """End of each segment."""
        return np.append(self.start_ns[1:], self.end_ns).astype(np.int64)


def _compressed(name: str, start: IntArray, state: Int8Array, cause: Int8Array, end_ns: int) -> Timeline:
    """Timeline with zero-length segments dropped and equal neighbours merged."""
    length = np.append(start[1:], end_ns) - start
    keep = length > 0
    start, state, cause = start[keep], state[keep], cause[keep]
    change = np.ones(start.size, dtype=np.bool_)
    change[1:] = (state[1:] != state[:-1]) | (cause[1:] != cause[:-1])
    return Timeline(name, start[change], state[change], cause[change], end_ns)


def timeline_from_samples(
    name: str,
    ts_ns: npt.ArrayLike,
    state: npt.ArrayLike,
    cause: npt.ArrayLike | None = None,
    *,
    max_gap_s: float,
    end_ns: int,
) -> Timeline:
    """Timeline from per-sample states, each valid until the next sample or ``max_gap_s``.

    A sample's state holds until the next sample, but for at most
    ``max_gap_s`` (its staleness limit, a little more than the poll period):
    beyond that the state is UNKNOWN until the next sample. Samples at or
    after ``end_ns`` (the end of what the caller has fetched) are ignored.
    """
    if max_gap_s <= 0.0:
        msg = "max_gap_s must be positive"
        raise ValueError(msg)
    ts = np.asarray(ts_ns, dtype=np.int64)
    st = np.asarray(state, dtype=np.int8)
    if cause is None:
        ca = np.where(st == State.UNKNOWN, Cause.NO_DATA, Cause.NONE).astype(np.int8)
    else:
        ca = np.asarray(cause, dtype=np.int8)
    if ts.ndim != 1 or st.shape != ts.shape or ca.shape != ts.shape:
        msg = f"timeline {name}: ts_ns, state and cause must be 1-D arrays of the same length"
        raise ValueError(msg)
    if ts.size and ts[-1] >= end_ns:
        before_end = ts < end_ns
        ts, st, ca = ts[before_end], st[before_end], ca[before_end]
    if ts.size == 0:
        empty = np.zeros(0, dtype=np.int8)
        return Timeline(name, np.zeros(0, dtype=np.int64), empty, empty, end_ns)
    dt_ns = np.diff(ts)
    if dt_ns.size and dt_ns.min() < 0:
        msg = f"timeline {name}: ts_ns must be non-decreasing"
        raise ValueError(msg)

    gap_ns = round(max_gap_s * NS_PER_S)
    # Built in place (a year of minutes is half a million samples per device): no temporaries.
    goes_stale = np.empty(ts.size, dtype=np.bool_)
    np.greater(dt_ns, gap_ns, out=goes_stale[:-1])
    goes_stale[-1] = end_ns - ts[-1] > gap_ns
    # A segment starts at the first sample, at a change of state or cause, and
    # at the first sample after a gap; an UNKNOWN segment starts where a
    # sample goes stale before the next one arrives. Runs of equal samples
    # collapse here, so only the (few) segment starts are sorted and merged.
    new_segment = np.empty(ts.size, dtype=np.bool_)
    new_segment[0] = True
    later = new_segment[1:]
    np.not_equal(st[1:], st[:-1], out=later)
    later |= ca[1:] != ca[:-1]
    later |= goes_stale[:-1]
    stale_ns = ts[goes_stale] + gap_ns
    start = np.concatenate((ts[new_segment], stale_ns))
    order = np.argsort(start, kind="stable")
    codes = np.concatenate((st[new_segment], np.full(stale_ns.size, State.UNKNOWN, dtype=np.int8)))
    causes = np.concatenate((ca[new_segment], np.full(stale_ns.size, Cause.NO_DATA, dtype=np.int8)))
    return _compressed(name, start[order], codes[order], causes[order], end_ns)


def _on_common_grid(members: Sequence[Timeline]) -> tuple[IntArray, Int8Array, Int8Array, int]:
    """Evaluate timelines at the union of their change points: (grid, states, causes, end)."""
    if not members:
        msg = "at least one timeline is needed"
        raise ValueError(msg)
    end_ns = max(m.end_ns for m in members)
    points = np.unique(np.concatenate([m.start_ns for m in members] + [np.array([m.end_ns for m in members])]))
    grid = points[points < end_ns].astype(np.int64)
    pairs = [m.at(grid) for m in members]
    return grid, np.stack([s for s, _ in pairs]), np.stack([c for _, c in pairs]), end_ns


def combine_series(name: str, members: Sequence[Timeline]) -> Timeline:
    """Timeline of a path that needs every member (critical devices in series): the worst state."""
    grid, states, causes, end_ns = _on_common_grid(members)
    worst = states.argmax(axis=0)
    columns = np.arange(grid.size)
    return _compressed(name, grid, states[worst, columns], causes[worst, columns], end_ns)


def combine_redundant(name: str, members: Sequence[Timeline], *, needed: int) -> Timeline:
    """Timeline of a redundant group that needs ``needed`` of its members (N+1, 2N, A/B feeds).

    A member carries load when UP, DEGRADED or REDUNDANCY_LOST. The group is
    UP with at least ``needed + 1`` members UP; REDUNDANCY_LOST with fewer
    but ``needed`` UP; DEGRADED when it depends on degraded members; UNKNOWN
    when whether enough members carry depends on members without data; DOWN
    otherwise. A member without data is never counted as providing redundancy.
    """
    if not 1 <= needed < len(members):
        msg = f"group {name}: needed must be between 1 and {len(members) - 1} (fewer than the members)"
        raise ValueError(msg)
    grid, states, causes, end_ns = _on_common_grid(members)
    carrying = np.isin(states, _CARRYING_STATES).sum(axis=0)
    healthy = (states == State.UP).sum(axis=0)
    unknown = (states == State.UNKNOWN).sum(axis=0)
    enough = carrying >= needed
    state = np.select(
        [enough & (healthy > needed), enough & (healthy == needed), enough, carrying + unknown >= needed],
        [State.UP, State.REDUNDANCY_LOST, State.DEGRADED, State.UNKNOWN],
        State.DOWN,
    ).astype(np.int8)
    columns = np.arange(grid.size)
    # The cause shown is the worst member's among those still carrying when
    # the group is degraded, and the worst member's overall when it is down.
    carrying_severity = np.where(np.isin(states, _CARRYING_STATES), states, -1)
    worst_carrying = causes[carrying_severity.argmax(axis=0), columns]
    worst = causes[states.argmax(axis=0), columns]
    cause = np.select(
        [state == State.UP, state == State.REDUNDANCY_LOST, state == State.DEGRADED, state == State.UNKNOWN],
        [Cause.NONE, Cause.REDUNDANCY_LOST, worst_carrying, Cause.NO_DATA],
        worst,
    ).astype(np.int8)
    return _compressed(name, grid, state, cause, end_ns)


def combine_dual_feed(name: str, feed_a: Timeline, feed_b: Timeline) -> Timeline:
    """Timeline of a dual-corded load: one feed lost is REDUNDANCY_LOST, both DOWN."""
    return combine_redundant(name, [feed_a, feed_b], needed=1)


def _cumulative_state_ns(timeline: Timeline, t_ns: IntArray) -> IntArray:
    """Time spent in each state from the timeline's first start up to each time, (len(t), states).

    Only time inside segments is counted, so UNKNOWN time before the first
    start or after the end is missing here: callers derive UNKNOWN as the
    rest of a window.
    """
    out = np.zeros((t_ns.size, _N_STATES), dtype=np.int64)
    n = timeline.start_ns.size
    if n == 0:
        return out
    length = timeline.segment_end_ns() - timeline.start_ns
    onehot = (timeline.state[:, None] == np.arange(_N_STATES)[None, :]).astype(np.int64)
    cum = np.vstack([np.zeros((1, _N_STATES), dtype=np.int64), np.cumsum(onehot * length[:, None], axis=0)])
    k = np.searchsorted(timeline.start_ns, t_ns, side="right") - 1
    kc = np.clip(k, 0, n - 1)
    within = np.clip(t_ns - timeline.start_ns[kc], 0, length[kc])
    out = np.asarray(cum[kc] + onehot[kc] * within[:, None], dtype=np.int64)
    out[k < 0] = 0
    return out


class CalendarBasis(StrEnum):
    """Period length against which downtime is budgeted (a setting: no standard fixes it)."""

    DAYS_30 = "30-day"
    AVERAGE_MONTH = "30.44-day"
    ACTUAL = "actual"
    YEAR_365 = "365-day"


_BASIS_S: Final[Mapping[CalendarBasis, Decimal]] = {
    CalendarBasis.DAYS_30: Decimal(30 * _S_PER_DAY),
    CalendarBasis.AVERAGE_MONTH: Decimal("30.44") * _S_PER_DAY,
    CalendarBasis.YEAR_365: Decimal(365 * _S_PER_DAY),
}

DEFAULT_TARGET: Final = Decimal("0.9999")
# The 30.44-day average month gives 4.38 min at 99.99 %, the "under 4.4
# minutes a month" the source facility's contract states.
DEFAULT_BASIS: Final = CalendarBasis.AVERAGE_MONTH


def _decimal(value: Decimal | float | str) -> Decimal:
    """Decimal from a setting; floats through their shortest repr so 0.9999 stays 0.9999."""
    return value if isinstance(value, Decimal) else Decimal(str(value))


@dataclass(frozen=True, slots=True, eq=False)
class Load:
    """A load: the timeline of the power path it sees, its share of IT load, and its devices.

    ``weight`` may be in any unit (kW, racks): weights are normalised over
    the loads of a computation. ``devices`` are the device timelines behind
    the path, used only to name the devices in an outage.
    """

    timeline: Timeline
    weight: float = 1.0
    devices: tuple[Timeline, ...] = ()


@dataclass(frozen=True, slots=True)
class Outage:
    """A stretch of DOWN for one load, clipped to the summarised period."""

    start_ns: int
    end_ns: int
    duration_s: float
    causes: tuple[str, ...]
    devices: tuple[str, ...]
    load: str
    load_share: float


@dataclass(frozen=True, slots=True)
class AvailabilitySummary:
    """Load-weighted state time over one period and its standing against the downtime budget.

    Times are in seconds, weighted by load share. ``availability`` is
    1 - down / period; ``availability_if_unknown_down`` also counts UNKNOWN
    time as down. ``met`` is True when even unknown time counted as down
    stays within the budget, False when down time alone exceeds it, and
    None when only the unknown time decides. ``remaining_budget_s`` is
    negative once the budget is exceeded.
    """

    start_ns: int
    end_ns: int
    basis: CalendarBasis
    period_s: float
    target: Decimal
    up_s: float
    down_s: float
    degraded_s: float
    redundancy_lost_s: float
    unknown_s: float
    availability: float
    availability_if_unknown_down: float
    allowed_down_s: float
    remaining_budget_s: float
    met: bool | None
    outages: tuple[Outage, ...]

    @property
    def down_min(self) -> float:
        """Down time in minutes."""
        return self.down_s / 60.0

    @property
    def degraded_min(self) -> float:
        """Degraded time (on battery, on bypass, overload) in minutes."""
        return self.degraded_s / 60.0

    @property
    def redundancy_lost_min(self) -> float:
        """Redundancy-lost time in minutes."""
        return self.redundancy_lost_s / 60.0

    @property
    def unknown_min(self) -> float:
        """Time without data in minutes."""
        return self.unknown_s / 60.0


def _as_loads(loads: Timeline | Sequence[Load]) -> tuple[Sequence[Load], FloatArray]:
    """Return the loads and their normalised weights."""
    items: Sequence[Load] = [Load(loads)] if isinstance(loads, Timeline) else loads
    if not items:
        msg = "at least one load is needed"
        raise ValueError(msg)
    weights = np.array([item.weight for item in items], dtype=np.float64)
    if np.any(weights < 0.0) or weights.sum() <= 0.0:
        msg = "load weights must be non-negative with a positive sum"
        raise ValueError(msg)
    return items, weights / weights.sum()


def _down_runs(timeline: Timeline) -> list[tuple[int, int, tuple[str, ...]]]:
    """Maximal stretches of DOWN: (start, end, causes)."""
    down = timeline.state == State.DOWN
    if not down.any():
        return []
    first = down & ~np.concatenate(([False], down[:-1]))
    last = down & ~np.concatenate((down[1:], [False]))
    seg_end = timeline.segment_end_ns()
    first_idx, last_idx = np.flatnonzero(first), np.flatnonzero(last)
    return [
        (
            int(timeline.start_ns[i]),
            int(seg_end[j]),
            tuple(Cause(int(c)).name.lower() for c in np.unique(timeline.cause[i : j + 1])),
        )
        for i, j in zip(first_idx, last_idx, strict=True)
    ]


def _outages(load: Load, share: float, edges: IntArray) -> list[list[Outage]]:
    """Outages of one load, clipped to each bin."""
    per_bin: list[list[Outage]] = [[] for _ in range(edges.size - 1)]
    runs = _down_runs(load.timeline)
    if not runs:
        return per_bin
    run_start = np.array([r[0] for r in runs], dtype=np.int64)
    run_end = np.array([r[1] for r in runs], dtype=np.int64)
    # A device is named when it was down at some time during the run.
    probe = np.concatenate((run_start, run_end))
    involved = []
    for device in load.devices:
        down_ns = _cumulative_state_ns(device, probe)[:, State.DOWN]
        involved.append(down_ns[len(runs) :] > down_ns[: len(runs)])
    for r, (start, end, causes) in enumerate(runs):
        names = tuple(d.name for d, hit in zip(load.devices, involved, strict=True) if hit[r]) or (load.timeline.name,)
        first_bin = max(int(np.searchsorted(edges, start, side="right")) - 1, 0)
        for b in range(first_bin, edges.size - 1):
            lo, hi = max(start, int(edges[b])), min(end, int(edges[b + 1]))
            if lo >= hi:
                break
            per_bin[b].append(Outage(lo, hi, (hi - lo) / NS_PER_S, causes, names, load.timeline.name, share))
    return per_bin


def summarize(
    loads: Timeline | Sequence[Load],
    edges_ns: npt.ArrayLike,
    *,
    basis: CalendarBasis = DEFAULT_BASIS,
    target: Decimal | float | str = DEFAULT_TARGET,
) -> list[AvailabilitySummary]:
    """Availability summary for each bin (e.g. each calendar month) of a set of loads.

    A bare timeline is one load carrying everything. State times are
    load-weighted sums; time outside a load's timeline is UNKNOWN.
    """
    edges = as_edges_ns(edges_ns)
    items, shares = _as_loads(loads)
    target_d = _decimal(target)
    if not Decimal(0) < target_d < Decimal(1):
        msg = "target must be between 0 and 1"
        raise ValueError(msg)
    bin_ns = np.diff(edges)
    weighted = np.zeros((bin_ns.size, _N_STATES), dtype=np.float64)
    outages: list[list[Outage]] = [[] for _ in range(bin_ns.size)]
    for item, share in zip(items, shares, strict=True):
        spent = np.diff(_cumulative_state_ns(item.timeline, edges), axis=0)
        spent[:, State.UNKNOWN] = bin_ns - spent[:, list(_KNOWN_STATES)].sum(axis=1)
        weighted += share * spent
        for b, found in enumerate(_outages(item, float(share), edges)):
            outages[b].extend(found)
    weighted /= NS_PER_S

    summaries = []
    for b in range(bin_ns.size):
        actual = Decimal(int(bin_ns[b])) / NS_PER_S
        period = _BASIS_S.get(basis, actual)
        allowed = float(period * (1 - target_d))
        down, unknown = float(weighted[b, State.DOWN]), float(weighted[b, State.UNKNOWN])
        met = False if down > allowed else (True if down + unknown <= allowed else None)
        summaries.append(
            AvailabilitySummary(
                start_ns=int(edges[b]),
                end_ns=int(edges[b + 1]),
                basis=basis,
                period_s=float(period),
                target=target_d,
                up_s=float(weighted[b, State.UP]),
                down_s=down,
                degraded_s=float(weighted[b, State.DEGRADED]),
                redundancy_lost_s=float(weighted[b, State.REDUNDANCY_LOST]),
                unknown_s=unknown,
                availability=1.0 - down / float(period),
                availability_if_unknown_down=1.0 - (down + unknown) / float(period),
                allowed_down_s=allowed,
                remaining_budget_s=allowed - down,
                met=met,
                outages=tuple(sorted(outages[b], key=lambda o: (o.start_ns, o.load))),
            )
        )
    return summaries


@dataclass(frozen=True, slots=True)
class BurnRateAlert:
    """A multiwindow burn-rate alert: fires when both windows burn faster than ``burn_rate``."""

    severity: str
    long_window_s: int
    short_window_s: int
    burn_rate: float


DEFAULT_BURN_RATE_ALERTS: Final[tuple[BurnRateAlert, ...]] = (
    BurnRateAlert("page", 3600, 300, 14.4),
    BurnRateAlert("page", 6 * 3600, 1800, 6.0),
    BurnRateAlert("ticket", 3 * _S_PER_DAY, 6 * 3600, 1.0),
)


@dataclass(frozen=True, slots=True, eq=False)
class BurnRateEvaluation:
    """Burn rates of both windows and whether the alert fires, at each evaluation time."""

    alert: BurnRateAlert
    eval_ns: IntArray
    long_burn: FloatArray
    short_burn: FloatArray
    firing: BoolArray


def _bad_share_on_grid(
    grid: IntArray, timelines: Sequence[Timeline], shares: FloatArray | Sequence[float], *, count_unknown: bool
) -> FloatArray:
    """The summed share of the timelines that are bad (DOWN, or UNKNOWN too) on each grid interval.

    The grid holds every segment start and end of every timeline. Each bad segment adds its
    share where it starts and takes it back where it ends (a difference array), so the cost
    is in the segments, not in timelines x grid. Outside a timeline its state is UNKNOWN.
    """
    bad_states = [State.DOWN, State.UNKNOWN] if count_unknown else [State.DOWN]
    delta = np.zeros(grid.size + 1, dtype=np.float64)
    for timeline, share in zip(timelines, shares, strict=True):
        starts = timeline.start_ns
        if starts.size == 0:
            if count_unknown:
                delta[0] += share
            continue
        ends = timeline.segment_end_ns()
        bad = np.isin(timeline.state, bad_states)
        np.add.at(delta, np.searchsorted(grid, starts[bad]), share)
        np.add.at(delta, np.searchsorted(grid, ends[bad]), -share)
        if count_unknown:  # before the first segment and from the end on
            delta[0] += share
            delta[np.searchsorted(grid, starts[0])] -= share
            delta[np.searchsorted(grid, timeline.end_ns)] += share
    return np.asarray(np.cumsum(delta[:-1]), dtype=np.float64)


def evaluate_burn_rates(
    loads: Timeline | Sequence[Load],
    eval_ns: npt.ArrayLike,
    *,
    target: Decimal | float | str = DEFAULT_TARGET,
    alerts: Sequence[BurnRateAlert] = DEFAULT_BURN_RATE_ALERTS,
    count_unknown: bool = False,
) -> tuple[BurnRateEvaluation, ...]:
    """Evaluate burn-rate alerts at the given times (window ending at each time).

    Error ratio of a window = load-weighted down time in it / its length;
    burn rate = error ratio / (1 - target). UNKNOWN time does not consume the
    budget and so is not an error here unless ``count_unknown`` (data loss
    deserves its own alert); either way it is never taken as up time.
    """
    t = np.asarray(eval_ns, dtype=np.int64)
    items, shares = _as_loads(loads)
    budget = float(1 - _decimal(target))
    windows_s = sorted({w for a in alerts for w in (a.long_window_s, a.short_window_s)})
    # The load-weighted error share is a step function over the union of the
    # loads' change points, so its integral is piecewise linear there: one
    # interpolation gives the cumulative error time at every evaluation time
    # and every window start.
    grid = np.unique(
        np.concatenate([i.timeline.start_ns for i in items] + [np.array([i.timeline.end_ns for i in items])])
    )
    share_on_grid = _bad_share_on_grid(grid, [i.timeline for i in items], shares, count_unknown=count_unknown)
    # Outside every timeline all loads are UNKNOWN.
    outside = 1.0 if count_unknown else 0.0
    origin = int(grid[0])
    x = (grid - origin).astype(np.float64)
    cum = np.concatenate(([0.0], np.cumsum(share_on_grid[:-1] * np.diff(x))))
    query = np.concatenate([t] + [t - w * NS_PER_S for w in windows_s])
    q = (query - origin).astype(np.float64)
    bad_ns = np.interp(q, x, cum) + outside * (np.maximum(q - x[-1], 0.0) + np.minimum(q, 0.0))
    at_end = bad_ns[: t.size]

    def burn(window_s: int) -> FloatArray:
        i = windows_s.index(window_s) + 1
        in_window = at_end - bad_ns[i * t.size : (i + 1) * t.size]
        return np.asarray(in_window / (window_s * NS_PER_S) / budget, dtype=np.float64)

    results = []
    for alert in alerts:
        long_burn, short_burn = burn(alert.long_window_s), burn(alert.short_window_s)
        firing = (long_burn > alert.burn_rate) & (short_burn > alert.burn_rate)
        results.append(BurnRateEvaluation(alert, t, long_burn, short_burn, firing))
    return tuple(results)
