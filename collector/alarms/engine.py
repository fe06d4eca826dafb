"""Alarm evaluation as batches arrive: rule instances, on/off delays, staleness; no clock inside."""

from __future__ import annotations

import logging
import statistics
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from collector.alarms.rules import (
    Combination,
    Leaf,
    Override,
    Rate,
    Rule,
    Scalar,
    Stale,
    State,
    Threshold,
    is_glob,
    matches,
)
from models.telemetry import Batch, Event, Point

log = logging.getLogger(__name__)

GOOD: Final = "good"
# Report period assumed for staleness until two batches of a device have been seen.
DEFAULT_PERIOD_S: Final = 60.0
_INTERVALS_KEPT: Final = 9

Key = tuple[str, str, str, str]  # site, device, rule id, subject
PeriodsOf = Callable[[str], Mapping[str, float]]  # model id -> point name -> report period (s)


@dataclass(frozen=True, slots=True)
class Signal:
    """A debounced change of one rule instance: raise (active) or clear."""

    active: bool
    site: str
    device: str
    rule: Rule
    subject: str
    ts: float
    value: Scalar | None = None
    unit: str = ""
    message: str = ""
    model: str = ""
    kind: str = ""
    cause: str = "batch"  # batch | event | tick

    @property
    def key(self) -> Key:
        """(site, device, rule id, subject): one alarm instance."""
        return (self.site, self.device, self.rule.id, self.subject)


# ---------------------------------------------------------------- sources and contexts


@dataclass(frozen=True, slots=True)
class _Source:
    """Where a value comes from: a point, or one column of one table row."""

    point: str
    table: str = ""
    row: str = ""

    @property
    def label(self) -> str:
        return f"{self.table}[{self.row}].{self.point}" if self.table else self.point


class _Ctx:
    """What one evaluation sees: the batch (None on a tick) and the time."""

    __slots__ = ("_any_good", "device", "points", "tables", "ts")

    def __init__(self, device: _Device, ts: float, batch: Batch | None) -> None:
        self.device = device
        self.ts = ts
        self.points: Mapping[str, Point] | None = batch.points if batch is not None else None
        self.tables: Mapping[str, Mapping[str, Mapping[str, Point]]] | None = (
            batch.tables if batch is not None else None
        )
        self._any_good: bool | None = None

    @property
    def any_good(self) -> bool:
        """Whether the batch carries at least one good value (the device answered)."""
        if self._any_good is None:
            self._any_good = _any_good(self.points, self.tables)
        return self._any_good

    def get(self, src: _Source) -> Point | None:
        """The point of a source in this batch, if present."""
        if not src.table:
            return self.points.get(src.point) if self.points is not None else None
        if self.tables is None:
            return None
        row = self.tables.get(src.table, {}).get(src.row)
        return row.get(src.point) if row is not None else None

    def value(self, src: _Source) -> tuple[bool, Scalar | None]:
        """(known, value): known is False when the source says nothing now (keep the state).

        A table row missing from a batch in which the device answered means the row is
        gone (an alarm-table entry removed): known, with no value.
        """
        p = self.get(src)
        if p is not None:
            return (True, p.value) if p.quality == GOOD else (False, None)
        if src.table and self.points is not None and self.any_good:
            return True, None
        return False, None


def _any_good(
    points: Mapping[str, Point] | None, tables: Mapping[str, Mapping[str, Mapping[str, Point]]] | None
) -> bool:
    if points is not None and any(p.quality == GOOD for p in points.values()):
        return True
    if tables is not None:
        return any(p.quality == GOOD for rows in tables.values() for row in rows.values() for p in row.values())
    return False


def _number(value: Scalar | None) -> float | None:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return None
    return float(value)


# ---------------------------------------------------------------- leaf evaluators


class _Eval:
    """Evaluates one leaf over its sources: True active, False clear, None no information.

    With `table` set (a table column inside an all/any), the sources are that column of
    every row the batch has.
    """

    __slots__ = ("last", "sources", "table")

    def __init__(self, sources: list[_Source], table: tuple[str, str] | None = None) -> None:
        self.sources = sources
        self.table = table
        self.last: tuple[_Source, Scalar | None] | None = None

    def current(self, ctx: _Ctx) -> list[_Source]:
        """The sources to look at now."""
        if self.table is None:
            return self.sources
        if ctx.tables is None:
            return []
        table, column = self.table
        return [_Source(column, table, row) for row in ctx.tables.get(table, {})]

    def __call__(self, ctx: _Ctx, active: bool) -> bool | None:
        out: bool | None = None
        for src in self.current(ctx):
            known, value = ctx.value(src)
            if not known:
                continue
            hit = self.test(src, value, ctx.ts, active)
            if hit is None:
                continue
            if hit:
                self.last = (src, value)
                return True
            out = False
            if self.last is None or self.last[0] is src or self.last[0] == src:
                self.last = (src, value)
        return out

    def test(self, src: _Source, value: Scalar | None, ts: float, active: bool) -> bool | None:
        """Whether one value makes the condition true."""
        raise NotImplementedError

    def rebind(self, sources: list[_Source]) -> None:
        """New sources after the device's shape changed."""
        self.sources = sources


class _ThresholdEval(_Eval):
    __slots__ = ("above", "below", "h", "plain")

    def __init__(self, leaf: Threshold, sources: list[_Source], table: tuple[str, str] | None = None) -> None:
        self.plain = False
        super().__init__(sources, table)
        self.above = leaf.above
        self.below = leaf.below
        self.h = leaf.hysteresis
        self.rebind(sources)

    def rebind(self, sources: list[_Source]) -> None:
        """New sources; whether they are all plain points (the inlined path)."""
        super().rebind(sources)
        self.plain = self.table is None and not any(src.table for src in sources)

    def test(self, src: _Source, value: Scalar | None, ts: float, active: bool) -> bool | None:  # noqa: ARG002
        v = _number(value)
        if v is None:
            return None if value is not None else False
        h = self.h if active else 0.0
        if self.above is not None and v > self.above - h:
            return True
        return self.below is not None and v < self.below + h

    def __call__(self, ctx: _Ctx, active: bool) -> bool | None:
        """_Eval.__call__, inlined for points (most rules): the same answers, a few times faster."""
        points = ctx.points
        if not self.plain or points is None:
            return super().__call__(ctx, active)
        h = self.h if active else 0.0
        above = None if self.above is None else self.above - h
        below = None if self.below is None else self.below + h
        out: bool | None = None
        last = self.last
        for src in self.sources:
            p = points.get(src.point)
            if p is None or p.quality != GOOD:
                continue  # says nothing now
            value = p.value
            kind = type(value)
            if kind is float or kind is int:
                v = float(value)  # type: ignore[arg-type]
            elif value is None:
                out = False  # a good point without a value: not over the limit
                if last is None or last[0] is src or last[0] == src:
                    self.last = last = (src, value)
                continue
            else:
                continue  # text or a flag: no number to compare
            if (above is not None and v > above) or (below is not None and v < below):
                self.last = (src, value)
                return True
            out = False
            if last is None or last[0] is src or last[0] == src:
                self.last = last = (src, value)
        return out


def _tag(value: Scalar) -> tuple[str, Scalar]:
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", float(value))
    return ("s", value)


class _StateEval(_Eval):
    __slots__ = ("flags", "not_values", "patterns", "values")

    def __init__(self, leaf: State, sources: list[_Source], table: tuple[str, str] | None = None) -> None:
        super().__init__(sources, table)
        self.values = frozenset(_tag(v) for v in leaf.values)
        self.not_values = frozenset(_tag(v) for v in leaf.not_values)
        self.flags = frozenset(leaf.flags)
        self.patterns = list(leaf.patterns)

    def test(self, src: _Source, value: Scalar | None, ts: float, active: bool) -> bool | None:  # noqa: ARG002
        if value is None:
            return False
        tagged = _tag(value)
        if self.values and tagged in self.values:
            return True
        if self.not_values and tagged not in self.not_values:
            return True
        if self.flags and isinstance(value, str) and not self.flags.isdisjoint(value.split(",")):
            return True
        if self.patterns and isinstance(value, str):
            return matches(self.patterns, value)
        return False


class _RateEval(_Eval):
    __slots__ = ("fall", "history", "rise", "window")

    def __init__(self, leaf: Rate, sources: list[_Source], table: tuple[str, str] | None = None) -> None:
        super().__init__(sources, table)
        self.rise = leaf.rise_per_min
        self.fall = leaf.fall_per_min
        self.window = leaf.window_s
        self.history: dict[_Source, deque[tuple[float, float]]] = {}

    def test(self, src: _Source, value: Scalar | None, ts: float, active: bool) -> bool | None:  # noqa: ARG002
        v = _number(value)
        if v is None:
            return None
        hist = self.history.get(src)
        if hist is None:
            hist = self.history[src] = deque()
        if hist and ts <= hist[-1][0]:
            return None
        hist.append((ts, v))
        # Keep the newest sample at least window_s old as the reference (or just the previous one).
        while len(hist) > 2 and ts - hist[1][0] >= self.window:
            hist.popleft()
        t0, v0 = hist[0]
        if len(hist) < 2 or ts - t0 < self.window or ts <= t0:
            return None
        per_min = (v - v0) / (ts - t0) * 60.0
        if self.rise is not None and per_min > self.rise:
            return True
        return self.fall is not None and per_min < -self.fall


class _StaleEval(_Eval):
    """Stale: no good value for factor x the source's report period."""

    __slots__ = ("age_of", "factor", "leaf", "min_s", "period_s")

    def __init__(self, leaf: Stale, sources: list[_Source], table: tuple[str, str] | None = None) -> None:
        super().__init__(sources, table)
        self.leaf = leaf
        self.factor = leaf.factor
        self.period_s = leaf.period_s
        self.min_s = leaf.min_s
        self.age_of: dict[str, str] = {}
        self.rebind(sources)

    def rebind(self, sources: list[_Source]) -> None:
        """New sources, and the age point of each."""
        super().rebind(sources)
        self.age_of = {}
        for src in sources:
            name = self.leaf.age_source(src.point) if not src.table else None
            if name is not None:
                self.age_of[src.point] = name

    def __call__(self, ctx: _Ctx, active: bool) -> bool | None:  # noqa: ARG002
        dev = ctx.device
        out: bool | None = None
        for src in self.current(ctx):
            if src.point == "*":
                last = dev.last_good_any
                period = self.period_s or dev.period()
            else:
                if ctx.points is not None:
                    self._observe(ctx, src)
                last = dev.last_good.get(src, dev.first_ts)
                period = self.period_s or dev.period_of(src.point)
            if last is None:
                continue
            age = ctx.ts - last
            if age > max(self.factor * period, self.min_s):
                self.last = (src, round(age, 3))
                return True
            out = False
        return out

    def _observe(self, ctx: _Ctx, src: _Source) -> None:
        """Note when the source last reported: from its age point, else from a good value."""
        dev = ctx.device
        age_name = self.age_of.get(src.point) if self.age_of else None
        if age_name is not None and ctx.points is not None and age_name in ctx.points:
            age = ctx.points[age_name]
            seconds = _number(age.value) if age.quality == GOOD else None
            if seconds is not None:
                dev.last_good[src] = ctx.ts - max(seconds, 0.0)
            return
        p = ctx.get(src)
        if p is not None and p.quality == GOOD:
            dev.last_good[src] = ctx.ts

    def test(self, *_: object) -> bool | None:  # pragma: no cover
        """Not used: staleness depends on time, not on one value."""
        raise AssertionError("stale conditions are evaluated by __call__")


_EVALS: Final[dict[type[Leaf], Callable[..., _Eval]]] = {
    Threshold: _ThresholdEval,
    State: _StateEval,
    Rate: _RateEval,
    Stale: _StaleEval,
}


# ---------------------------------------------------------------- instances


class _Instance:
    """One rule on one subject of one device: debounced state and pending change."""

    __slots__ = ("active", "combine", "evals", "hold_until", "pending_since", "rule", "subject")

    def __init__(self, rule: Rule, subject: str, evals: list[_Eval], combine: str = "any") -> None:
        self.rule = rule
        self.subject = subject
        self.evals = evals
        self.combine = combine
        self.active = False
        self.pending_since: float | None = None
        self.hold_until: float | None = None

    def condition(self, ctx: _Ctx) -> bool | None:
        """The raw condition now, with the debounced state as the hysteresis reference."""
        if len(self.evals) == 1:
            return self.evals[0](ctx, self.active)
        results = [e(ctx, self.active) for e in self.evals]
        if self.combine == "all":
            if False in results:
                return False
            return None if None in results else True
        if True in results:
            return True
        return None if None in results else False

    def step(self, cond: bool | None, ts: float) -> bool:
        """Apply the on/off delay; True when the debounced state flips."""
        if cond is None:
            return False
        if cond == self.active:
            self.pending_since = None
            return False
        if self.active and self.hold_until is not None and ts < self.hold_until:
            return False
        delay = self.rule.on_delay_s if cond else self.rule.off_delay_s
        if delay > 0:
            if self.pending_since is None:
                self.pending_since = ts
                return False
            if ts - self.pending_since < delay:
                return False
        self.active = cond
        self.pending_since = None
        self.hold_until = None
        return True

    def last_value(self) -> tuple[_Source | None, Scalar | None]:
        """The source and value behind the latest decision."""
        for e in self.evals:
            if e.last is not None:
                return e.last
        return None, None


@dataclass(slots=True)
class _Device:
    site: str
    device: str
    model: str | None = None
    kind: str | None = None
    first_ts: float | None = None
    last_ts: float | None = None
    last_good_any: float | None = None
    lag: float = 0.0  # arrival minus batch time of the newest batch (0 without an arrival time)
    intervals: deque[float] = field(default_factory=lambda: deque(maxlen=_INTERVALS_KEPT))
    periods: Mapping[str, float] = field(default_factory=dict)
    last_good: dict[_Source, float] = field(default_factory=dict)
    rules: list[Rule] = field(default_factory=list)
    shape: tuple[frozenset[str], frozenset[str]] | None = None
    bound: list[_Instance] = field(default_factory=list)  # evaluated on every batch
    tables: list[tuple[Rule, Leaf]] = field(default_factory=list)  # per-row rules
    instances: dict[tuple[str, str], _Instance] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    cached_period: float | None = None

    def period(self) -> float:
        """The device's report period: the median of recent intervals between batches."""
        if self.cached_period is None:
            self.cached_period = statistics.median(self.intervals) if self.intervals else DEFAULT_PERIOD_S
        return self.cached_period

    def period_of(self, point: str) -> float:
        """A point's own report period (model `period_s`), else the device's."""
        return self.periods.get(point) or self.period()


# ---------------------------------------------------------------- the engine


def _no_periods(model: str) -> Mapping[str, float]:  # noqa: ARG001
    return {}


class Engine:
    """Evaluates rules for every device as its batches and events arrive.

    Pure: time comes from each batch's `ts`, each event's `ts` or the `now` given to
    :meth:`tick`. Batches older than the newest already seen for a device (replays) are
    counted and skipped: alarms describe the present.
    """

    def __init__(
        self,
        rules: Iterable[Rule],
        overrides: Iterable[Override] = (),
        periods: PeriodsOf = _no_periods,
    ) -> None:
        self.rules = list(rules)
        self.overrides = list(overrides)
        self._periods = periods
        self._devices: dict[tuple[str, str], _Device] = {}
        self.batches = 0
        self.skipped = 0

    # -------------------------------------------------------- inputs

    def on_batch(self, batch: Batch, received: float | None = None) -> list[Signal]:
        """Evaluate every rule instance of the batch's device; debounced changes out.

        `received` is when the batch arrived (wall clock). Staleness is judged on the device's
        own time line: a backlog worked off after an outage arrives late but steadily, and its
        devices are not stale while it does; they are once it stops for long enough.
        """
        dev = self._device(batch.site, batch.device)
        ts = batch.ts
        if dev.last_ts is not None and ts <= dev.last_ts:
            self.skipped += 1
            return []
        dev.lag = received - ts if received is not None else 0.0
        if dev.model != batch.model or dev.kind != batch.kind:
            dev.model, dev.kind = batch.model, batch.kind
            dev.periods = self._periods(batch.model)
            self._resolve(dev)
        shape = (frozenset(batch.points), frozenset(batch.tables))
        if shape != dev.shape:
            dev.shape = shape
            self._bind(dev, batch)
        if dev.last_ts is not None:
            dev.intervals.append(ts - dev.last_ts)
            dev.cached_period = None
        else:
            dev.first_ts = ts
        dev.last_ts = ts
        self.batches += 1
        ctx = _Ctx(dev, ts, batch)
        if ctx.any_good:
            dev.last_good_any = ts
        out = [self._signal(dev, inst, ts, "batch") for inst in dev.bound if inst.step(inst.condition(ctx), ts)]
        if dev.tables:
            self._table_rows(dev, ctx, out)
        if dev.instances:
            self._expire_holds(dev, ts, out)
        return out

    def on_event(self, event: Event) -> list[Signal]:
        """An agent event (a trap): raise or clear the rules that list its type."""
        dev = self._device(event.site, event.device)
        if not dev.rules:
            self._resolve(dev)
        out: list[Signal] = []
        names = event_names(event)
        for rule in dev.rules:
            raises = not names.isdisjoint(rule.events)
            if not raises and names.isdisjoint(rule.clear_events):
                continue
            inst = self._instance(dev, rule, rule.subject)
            if raises:
                hold = rule.hold_s if rule.hold_s is not None else 0.0
                inst.hold_until = max(inst.hold_until or 0.0, event.ts + hold)
                inst.pending_since = None
                if not inst.active:
                    inst.active = True
                    out.append(self._signal(dev, inst, event.ts, "event", note=event.message))
            elif inst.active:
                inst.active = False
                inst.pending_since = None
                inst.hold_until = None
                out.append(self._signal(dev, inst, event.ts, "event", note=event.message))
        return out

    def tick(self, now: float) -> list[Signal]:
        """Judge staleness and event holds at `now` for devices whose batches stopped."""
        out: list[Signal] = []
        for dev in self._devices.values():
            # The device's time now: its newest batch's time plus the time since it arrived.
            at = now - dev.lag
            if dev.last_ts is not None and at > dev.last_ts:
                ctx = _Ctx(dev, at, None)
                out.extend(
                    self._signal(dev, inst, at, "tick")
                    for inst in dev.bound
                    if any(isinstance(e, _StaleEval) for e in inst.evals) and inst.step(inst.condition(ctx), at)
                )
            self._expire_holds(dev, now, out)
        return out

    def seed(
        self,
        site: str,
        device: str,
        rule_id: str,
        subject: str,
        *,
        model: str = "",
        kind: str = "",
        since: float | None = None,
    ) -> bool:
        """Mark an instance active (an alarm still active when the collector restarted).

        `since` is when it was last raised (its `hold_s` counts from there). False when no
        rule of that id applies to the device any more.
        """
        dev = self._device(site, device)
        if model and kind and (dev.model, dev.kind) != (model, kind):
            dev.model, dev.kind = model, kind
            dev.periods = self._periods(model)
            self._resolve(dev)
        elif not dev.rules:
            self._resolve(dev)
        rule = next((r for r in dev.rules if r.id == rule_id), None)
        if rule is None:
            return False
        inst = self._instance(dev, rule, subject)
        inst.active = True
        if rule.hold_s is not None and since is not None:
            inst.hold_until = since + rule.hold_s
        return True

    def active(self) -> list[Key]:
        """Keys of every instance whose debounced state is active."""
        return [
            (dev.site, dev.device, rule_id, subject)
            for dev in self._devices.values()
            for (rule_id, subject), inst in dev.instances.items()
            if inst.active
        ]

    # -------------------------------------------------------- binding

    def _device(self, site: str, device: str) -> _Device:
        dev = self._devices.get((site, device))
        if dev is None:
            dev = self._devices[(site, device)] = _Device(site, device)
        return dev

    def _resolve(self, dev: _Device) -> None:
        """The device's rules with overrides applied (a broken override is logged and skipped)."""
        rules: list[Rule] = []
        for rule in self.rules:
            resolved = rule
            for ov in self.overrides:
                if ov.covers(rule.id, dev.site, dev.device, dev.model, dev.kind):
                    try:
                        resolved = ov.apply(resolved)
                    except ValueError as exc:
                        log.warning("override of rule %s for device %s not applied: %s", rule.id, dev.device, exc)
            if resolved.applies(dev.site, dev.device, dev.model, dev.kind):
                rules.append(resolved)
        dev.rules = rules
        for key, inst in list(dev.instances.items()):
            new = next((r for r in rules if r.id == key[0]), None)
            if new is None:
                del dev.instances[key]
            elif new != inst.rule:
                inst.rule = new
                inst.evals = []  # rebuilt by the next binding
        dev.shape = None

    def _instance(self, dev: _Device, rule: Rule, subject: str, evals: list[_Eval] | None = None) -> _Instance:
        inst = dev.instances.get((rule.id, subject))
        if inst is None:
            combine = rule.condition.type if isinstance(rule.condition, Combination) else "any"
            inst = dev.instances[(rule.id, subject)] = _Instance(rule, subject, evals or [], combine)
        elif evals is not None and not inst.evals:
            inst.evals = evals
        return inst

    def _bind(self, dev: _Device, batch: Batch) -> None:
        """Turn the device's rules into instances over the points this batch shape has."""
        names = list(batch.points)
        dev.units = {n: p.unit for n, p in batch.points.items()}
        bound: list[_Instance] = []
        tables: list[tuple[Rule, Leaf]] = []
        for rule in dev.rules:
            cond = rule.condition
            if cond is None:
                continue
            if isinstance(cond, Combination):
                evals = _combination(cond, names, batch)
                if evals:
                    inst = self._instance(dev, rule, "")
                    inst.evals = evals
                    bound.append(inst)
            elif "." in cond.point:
                tables.append((rule, cond))
            elif isinstance(cond, Stale) and cond.point == "*":
                bound.append(self._instance(dev, rule, "", [_StaleEval(cond, [_Source("*")])]))
            else:
                for src in self._sources(cond, names, batch):
                    inst = self._instance(dev, rule, src.point)
                    if not inst.evals:
                        inst.evals = [_EVALS[type(cond)](cond, [src])]
                    bound.append(inst)
        dev.bound = bound
        dev.tables = tables

    @staticmethod
    def _sources(leaf: Leaf, names: list[str], batch: Batch) -> list[_Source]:
        sel = leaf.point
        if "." in sel:
            table, column = sel.split(".", 1)
            return [_Source(column, table, row) for row in batch.tables.get(table, {})]
        if sel == "*":
            return [_Source("*")]
        if is_glob(sel):
            return [_Source(n) for n in names if matches([sel], n)]
        return [_Source(sel)] if sel in batch.points else []

    def _table_rows(self, dev: _Device, ctx: _Ctx, out: list[Signal]) -> None:
        """Rules on table columns: one instance per row, a vanished row evaluates as clear."""
        assert ctx.tables is not None  # noqa: S101  (only called with a batch)
        for rule, leaf in dev.tables:
            table, column = leaf.point.split(".", 1)
            rows = ctx.tables.get(table, {})
            seen: set[str] = set()
            for row in rows:
                subject = f"{table}[{row}].{column}"
                seen.add(subject)
                inst = self._instance(dev, rule, subject)
                if not inst.evals:
                    inst.evals = [_EVALS[type(leaf)](leaf, [_Source(column, table, row)])]
                if inst.step(inst.condition(ctx), ctx.ts):
                    out.append(self._signal(dev, inst, ctx.ts, "batch"))
            prefix = f"{table}["
            for (rule_id, subject), inst in list(dev.instances.items()):
                if rule_id == rule.id and subject not in seen and subject.startswith(prefix):
                    if not inst.evals:  # seeded after a restart: the row is known only by its subject
                        row = subject[len(prefix) : subject.rindex("]")]
                        inst.evals = [_EVALS[type(leaf)](leaf, [_Source(column, table, row)])]
                    if inst.step(inst.condition(ctx), ctx.ts):
                        out.append(self._signal(dev, inst, ctx.ts, "batch"))
                    if not inst.active and inst.pending_since is None:
                        del dev.instances[(rule_id, subject)]

    def _expire_holds(self, dev: _Device, now: float, out: list[Signal]) -> None:
        """Clear event-raised instances that no batch judges once their hold has passed."""
        for inst in dev.instances.values():
            if (
                inst.active
                and inst.hold_until is not None
                and now >= inst.hold_until
                and (inst.rule.condition is None or (inst.rule.hold_s is not None and not inst.evals))
            ):
                inst.active = False
                inst.hold_until = None
                out.append(self._signal(dev, inst, now, "tick"))

    def _signal(self, dev: _Device, inst: _Instance, ts: float, cause: str, note: str = "") -> Signal:
        src, value = inst.last_value() if cause != "event" else (None, None)
        unit = dev.units.get(src.point, "") if src is not None and not src.table else ""
        if isinstance(inst.evals[0] if inst.evals else None, _StaleEval):
            unit = "s"
        return Signal(
            active=inst.active,
            site=dev.site,
            device=dev.device,
            rule=inst.rule,
            subject=inst.subject,
            ts=ts,
            value=value,
            unit=unit,
            message=render(
                inst.rule,
                site=dev.site,
                device=dev.device,
                subject=inst.subject,
                value=value,
                unit=unit,
                model=dev.model,
                kind=dev.kind,
            )
            + (f" ({note})" if note else ""),
            model=dev.model or "",
            kind=dev.kind or "",
            cause=cause,
        )


def _combination(cond: Combination, names: list[str], batch: Batch) -> list[_Eval]:
    """Evaluators of a flat all/any over the leaves this device has.

    An "any" ignores leaves on points the device does not have (one rule can cover models
    with different point names); an "all" missing a leaf does not apply at all.
    """
    evals: list[_Eval] = []
    for leaf in cond.conditions:
        if "." in leaf.point:
            table, column = leaf.point.split(".", 1)
            present = table in batch.tables
            make = _EVALS[type(leaf)](leaf, [], (table, column))
        else:
            sources = Engine._sources(leaf, names, batch)  # noqa: SLF001
            present = bool(sources)
            make = _EVALS[type(leaf)](leaf, sources)
        if not present:
            if cond.type == "all":
                return []
            continue
        evals.append(make)
    return evals


def event_names(event: Event) -> frozenset[str]:
    """The names rules can list for an event: its type, its trap, and "trap:alarm"."""
    names = {event.type}
    trap = event.data.get("trap")
    if isinstance(trap, str) and trap:
        names.add(trap)
        alarm = event.data.get("alarm")
        if isinstance(alarm, str) and alarm:
            names.add(f"{trap}:{alarm}")
    return frozenset(names)


class _Blank(dict[str, object]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def render(
    rule: Rule,
    *,
    site: str,
    device: str,
    subject: str,
    value: Scalar | None,
    unit: str,
    model: str | None = None,
    kind: str | None = None,
) -> str:
    """The rule's message for one instance (unknown placeholders are left as they are)."""
    label = rule.labels.get(str(value), str(value)) if value is not None else ""
    row = ""
    point = subject
    if "[" in subject:
        row = subject[subject.index("[") + 1 : subject.index("]")]
        point = subject.rsplit(".", 1)[-1]
    text = rule.message or (rule.description or rule.id.replace("_", " "))
    if isinstance(value, float):
        value = round(value, 3)
    values = _Blank(
        site=site,
        device=device,
        model=model or "",
        kind=kind or "",
        rule=rule.id,
        subject=subject,
        point=point,
        row=row,
        value="" if value is None else value,
        unit=unit,
        label=label,
    )
    try:
        return text.format_map(values)
    except (ValueError, IndexError, AttributeError):
        return text
