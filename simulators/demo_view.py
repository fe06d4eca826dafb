"""What the demo reads over MQTT, and the live terminal dashboard (or plain lines) it shows from it.

The demo reads the system as any MQTT client could: telemetry batches, agent
events, command results, alarm transitions and the collector's retained
analytics and optimiser results, all under ``dcim/v1/{site}/#``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from models import telemetry, units
from simulators.demo_config import HISTORY_AGENT

if TYPE_CHECKING:
    from simulators.demo import Demo

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
EVENTS_SHOWN: Final = 8
STALE_S: Final = 5.0
_STYLES: Final = {"critical": "bold red", "major": "red", "minor": "yellow", "warning": "yellow", "info": ""}


def fmt(value: Any, digits: int) -> str:
    """A number with thousands separators, or '-' when there is none."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{float(value):,.{digits}f}"


def _short(value: Any) -> str:
    """A value as read back: float32 registers give 29.399999618530273 for 29.4."""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


@dataclass
class DeviceView:
    """The latest batch of one device."""

    id: str
    kind: str
    model: str
    ts: float = 0.0
    good: int = 0
    total: int = 0
    polls: int = 0


def ups_state(points: dict[str, telemetry.Point]) -> str | None:
    """The UPS's output: normal, battery, bypass or none, from an RFC 1628 or APC-style batch (None: unread)."""
    source = points.get("output_source")
    if source is not None:
        return str(source.value) if source.quality == "good" else None
    flags = {k: points[k].value for k in ("online", "on_battery", "on_bypass") if k in points}
    if not flags or any(v is None for v in flags.values()):
        return None
    if flags.get("on_battery"):
        return "battery"
    if flags.get("on_bypass"):
        return "bypass"
    return "normal" if flags.get("online") else "none"


@dataclass
class Observed:
    """Everything the demo has read from the broker."""

    site: str
    devices: dict[str, DeviceView] = field(default_factory=dict)
    power_kw: dict[str, float] = field(default_factory=dict)  # latest power of meters and PDUs
    counters: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # "device:point" -> (ts, kWh)
    meter_power: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # meter -> (ts, kW)
    ups: dict[str, str] = field(default_factory=dict)
    analytics: dict[str, dict[str, Any]] = field(default_factory=dict)
    optimizer: dict[str, Any] | None = None
    events: deque[tuple[float, str, str]] = field(default_factory=lambda: deque(maxlen=200))
    commands: dict[str, int] = field(default_factory=dict)  # outcome -> count
    messages: int = 0

    def event(self, severity: str, text: str, ts: float | None = None) -> None:
        """Note something that happened."""
        self.events.append((time.time() if ts is None else ts, severity, text))

    def on_message(self, topic: str, payload: bytes) -> None:
        """One message from the site's topics."""
        self.messages += 1
        parts = topic.split("/")
        try:
            if topic.endswith("/telemetry"):
                self._batch(telemetry.decode_batch(payload))
            elif topic.endswith("/cmd/result"):
                self._result(telemetry.decode_as(telemetry.CommandResult, payload))
            elif topic.endswith("/event"):
                ev = telemetry.decode_as(telemetry.Event, payload)
                self.event(ev.severity, f"{ev.device}: {ev.message or ev.type}", ev.ts)
            elif len(parts) == 5 and parts[3] == "analytics" and payload:
                self.analytics[parts[4]] = json.loads(payload)
            elif len(parts) == 4 and parts[3] == "optimizer" and payload:
                self.optimizer = json.loads(payload)
            elif len(parts) == 4 and parts[3] == "alarm" and payload:
                self._alarm(json.loads(payload))
        except (telemetry.TelemetryError, ValueError, KeyError, TypeError) as exc:
            log.debug("demo: ignored a message on %s: %s", topic, exc)

    def _batch(self, batch: telemetry.Batch) -> None:
        if batch.agent == HISTORY_AGENT:
            return
        view = self.devices.setdefault(batch.device, DeviceView(batch.device, batch.kind, batch.model))
        rows = [p for table in batch.tables.values() for row in table.values() for p in row.values()]
        points = [*batch.points.values(), *rows]
        view.ts = batch.ts
        view.total = len(points)
        view.good = sum(1 for p in points if p.quality == "good")
        view.polls += 1
        for name, point in batch.points.items():
            if point.counter and point.unit == "kWh" and isinstance(point.value, int | float):
                self.counters.setdefault(f"{batch.device}:{name}", []).append((batch.ts, float(point.value)))
        power_point = {"meter": "total_power", "pdu": "power"}.get(batch.kind)
        power = batch.points.get(power_point) if power_point else None
        if power is not None:
            if isinstance(power.value, int | float) and not isinstance(power.value, bool):
                kw = units.convert(float(power.value), power.unit, "kW")
                self.power_kw[batch.device] = kw
                if batch.kind == "meter":
                    self.meter_power.setdefault(batch.device, []).append((batch.ts, kw))
            else:  # a failed read: the last value is not shown as if it were current
                self.power_kw.pop(batch.device, None)
        if batch.kind == "ups":
            state = ups_state(batch.points)
            before = self.ups.get(batch.device)
            if state and state != before:
                self.ups[batch.device] = state
                if before is not None:
                    severity = "info" if state == "normal" else "critical" if state == "none" else "major"
                    self.event(severity, f"{batch.device}: output {before} -> {state}", batch.ts)

    def _result(self, result: telemetry.CommandResult) -> None:
        self.commands[result.outcome] = self.commands.get(result.outcome, 0) + 1
        if result.ok:
            change = f"{_short(result.before)} -> {_short(result.after)}"
            self.event("info", f"wrote {result.device}.{result.point}: {change}", result.ts)
        else:
            self.event("warning", f"refused {result.device}.{result.point}: {result.reason}", result.ts)

    def _alarm(self, doc: dict[str, Any]) -> None:
        alarm = doc.get("alarm") or {}
        kind = doc.get("type", "")
        if kind in ("raised", "cleared", "reraised"):
            severity = str(alarm.get("severity", "info")) if kind != "cleared" else "info"
            self.event(severity, f"alarm {kind}: {alarm.get('device')}: {alarm.get('message')}", doc.get("ts"))

    def live_pue(self, pdus: Sequence[str], feeds: Sequence[str]) -> float | None:
        """Facility over IT power from the latest meter and PDU readings (a live ratio, not a PUE)."""
        facility = [self.power_kw.get(m) for m in feeds]
        it = [self.power_kw.get(p) for p in pdus]
        if any(v is None for v in (*facility, *it)):
            return None
        it_kw = sum(v for v in it if v is not None)
        return sum(v for v in facility if v is not None) / it_kw if it_kw > 0 else None

    def counter_at(self, key: str, at: float, clock: Callable[[FloatArray], FloatArray]) -> float | None:
        """A counter's value at time ``at`` on ``clock`` (which maps read times to it); None well outside its reads.

        The demo's clock is the simulated one: a read's wall time is mapped to
        the simulated time the site served then, so that counters polled at
        different moments of a second (at hundreds of simulated seconds per
        second) are compared at the same simulated instant.
        """
        rows = self.counters.get(key)
        if not rows:
            return None
        times = clock(np.array([r[0] for r in rows], dtype=np.float64))
        slack = np.median(np.diff(times)) if times.size > 1 else 0.0
        if at < times[0] - slack or at > times[-1] + slack:
            return None
        return float(np.interp(at, times, np.array([r[1] for r in rows], dtype=np.float64)))


# ---------------------------------------------------------------- rendering


def status_line(demo: Demo) -> str:
    """One plain line of the state (when standard output is not a terminal)."""
    o = demo.observed
    pue = o.live_pue(demo.pdus, demo.feeds)
    plant = sum(o.power_kw.get(m, math.nan) for m in demo.plant_meters)
    avail = o.analytics.get("availability", {})
    opt = o.optimizer or {}
    rec = opt.get("recommendation") or {}
    ups = " ".join(f"{k} {v}" for k, v in sorted(o.ups.items()))
    mode = opt.get("mode", demo.optimizer_mode or "off")
    return (
        f"[{demo.sim_clock()}] live PUE {fmt(pue, 3)}  plant {fmt(plant, 1)} kW (twin {demo.twin.plant_kw:.1f})  "
        f"UPS {ups}  budget left {avail.get('remaining_budget', '-')}  optimiser {mode}"
        f"{' (fallback)' if opt.get('fallback') else ''}, predicted saving {fmt(rec.get('predicted_saving_kw'), 2)} kW"
    )


def _devices(o: Observed) -> Table:
    table = Table(expand=True, box=None, padding=(0, 1), show_edge=False)
    for col in ("device", "kind", "health", "age"):
        table.add_column(col, no_wrap=True)
    now = time.time()
    for dev in sorted(o.devices.values(), key=lambda d: d.id):
        age = now - dev.ts
        if age > STALE_S:
            health = Text("stale", style="yellow")
        elif dev.good == dev.total:
            health = Text(f"ok {dev.good}/{dev.total}", style="green")
        else:
            health = Text(f"{dev.total - dev.good} bad of {dev.total}", style="red")
        table.add_row(dev.id, dev.kind, health, f"{age:4.1f} s")
    return table


def _power(demo: Demo) -> Table:
    o = demo.observed
    twin = demo.twin
    pue = o.live_pue(demo.pdus, demo.feeds)
    twin_pue = twin.facility_kw / twin.it_kw if twin.it_kw > 0 else None
    plant = sum(o.power_kw.get(m, math.nan) for m in demo.plant_meters)
    it_kw = sum(o.power_kw.get(p, math.nan) for p in demo.pdus)
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim")
    table.add_column(justify="right", style="bold")
    table.add_column(style="dim")
    table.add_row("live PUE", fmt(pue, 3), f"twin {fmt(twin_pue, 3)}")
    table.add_row("IT load", f"{fmt(it_kw, 1)} kW", "")
    table.add_row("plant power", f"{fmt(plant, 1)} kW", f"twin {twin.plant_kw:.1f} kW")
    table.add_row("collector", fmt(o.analytics.get("pue_live", {}).get("ratio"), 3), "live ratio")
    for ups, state in sorted(o.ups.items()):
        table.add_row(ups, Text(state, style="green" if state == "normal" else "bold red"), "")
    return table


def _budget(o: Observed) -> Table:
    avail = o.analytics.get("availability", {})
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim")
    table.add_column(justify="right", style="bold")
    if not avail:
        table.add_row("availability", "waiting for the collector")
        return table
    table.add_row("availability", f"{avail.get('availability', 0.0) * 100:.5f} %")
    table.add_row("budget left", str(avail.get("remaining_budget", "-")))
    table.add_row("of", f"{fmt(avail.get('allowed_down_min'), 2)} min")
    table.add_row("down", f"{fmt(avail.get('down_s'), 1)} s")
    table.add_row("degraded", f"{fmt(avail.get('degraded_min'), 2)} min")
    table.add_row("outages", str(len(avail.get("outages", []))))
    return table


def _optimiser(demo: Demo) -> Text:
    o = demo.observed
    opt = o.optimizer or {}
    if demo.optimizer_mode is None:
        return Text("not part of this collector: the demo runs without it", style="yellow")
    if not opt:
        return Text(f"{demo.optimizer_mode}: waiting for the first decision", style="dim")
    rec = opt.get("recommendation") or {}
    sp = rec.get("setpoints") or {}
    held = demo.samples[-1] if demo.samples else None
    reasons = "; ".join(opt.get("reasons") or [])
    return Text.assemble(
        (str(opt.get("mode")), "bold"),
        ("  fallback to baseline: " + reasons[:100] if opt.get("fallback") else "", "yellow"),
        "\nrecommends: chilled water ",
        (f"{fmt(sp.get('chw_supply_c'), 1)} °C", "bold"),
        ", condenser water ",
        (f"{fmt(sp.get('cw_setpoint_c'), 1)} °C", "bold"),
        f", pumps {fmt(sp.get('chw_pump_pct'), 0)} % / {fmt(sp.get('cw_pump_pct'), 0)} %",
        f"\npredicted plant {fmt(rec.get('predicted_plant_kw'), 2)} kW against "
        f"{fmt(rec.get('baseline_plant_kw'), 2)} kW at the baseline setpoints: saving ",
        (f"{fmt(rec.get('predicted_saving_kw'), 2)} kW ({fmt(rec.get('predicted_saving_pct'), 1)} %)", "bold green"),
        "\nthe plant holds: chilled water "
        f"{fmt(held.chw_supply_sp if held else None, 1)} °C, condenser water {fmt(held.cw_sp if held else None, 1)} °C"
        f" · setpoint writes {sum(o.commands.values())}",
    )


def _events(o: Observed) -> Table:
    table = Table.grid(padding=(0, 1))
    table.add_column(style="dim", no_wrap=True)
    table.add_column()
    for ts, severity, text in list(o.events)[-EVENTS_SHOWN:]:
        when = datetime.fromtimestamp(ts, tz=UTC).strftime("%H:%M:%S")
        table.add_row(when, Text(text, style=_STYLES.get(severity, "")))
    return table


def render(demo: Demo) -> RenderableType:
    """The live dashboard."""
    plan = demo.plan
    share = min(1.0, max(0.0, demo.elapsed_s() / plan.span_s))
    head = Text.assemble(
        ("dcim-edge demo", "bold"),
        f"  site {demo.site_id} · simulated {demo.sim_clock()} UTC · {demo.speed():.0f}x · ",
        (f"{share:5.1%}", "bold"),
        f" of {plan.span_s / 3600:.0f} h · web dashboard {demo.dashboard_url}",
    )
    width = 60
    bar = Text("█" * int(width * share) + "░" * (width - int(width * share)), style="cyan")
    grid = Table.grid(expand=True, padding=(0, 1))
    grid.add_column(ratio=5)
    grid.add_column(ratio=3)
    grid.add_column(ratio=3)
    grid.add_row(
        Panel(_devices(demo.observed), title=f"devices ({len(demo.observed.devices)})", border_style="blue"),
        Panel(_power(demo), title="power and PUE", border_style="blue"),
        Panel(_budget(demo.observed), title="availability this month", border_style="blue"),
    )
    return Group(
        head,
        bar,
        grid,
        Panel(_optimiser(demo), title="chiller-plant optimiser", border_style="magenta"),
        Panel(_events(demo.observed), title="recent events (wall clock, UTC)", border_style="blue"),
    )
