"""The demo's ending: the collector's reports (run as processes), the day's chart and the summary.

PUE before and after the optimiser comes from the energy counters the agent
read (received over MQTT), with the untouched twin's physics as the
like-for-like comparison; availability and the PUE of the whole day from the
collector's own reports; the settlement projection from ``dcim-collector
settle`` on energies extrapolated to a year.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from simulators.demo_config import CURRENCY, TARIFF, it_capacity_kw
from simulators.demo_view import fmt

if TYPE_CHECKING:
    from simulators.demo import Demo

HOURS_PER_YEAR: Final = 8760.0
REPORT_TIMEOUT_S: Final = 180.0


Completed = subprocess.CompletedProcess[str]


def run_all(commands: dict[str, list[str]], timeout_s: float = REPORT_TIMEOUT_S) -> dict[str, Completed]:
    """Run commands side by side; their results by name."""
    procs = {
        name: subprocess.Popen(  # noqa: S603  (our own console scripts, arguments built here)
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL
        )
        for name, args in commands.items()
    }
    results = {}
    for name, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate(timeout=timeout_s)
        results[name] = subprocess.CompletedProcess(commands[name], proc.returncode, out, err)
    return results


def _last_json(result: Completed) -> dict[str, Any] | None:
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    try:
        doc = json.loads(lines[-1]) if lines else None
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or den is None or den <= 0 else num / den


def collector_reports(demo: Demo, windows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``report pue`` and ``report availability`` (with charts) and ``settle`` on each window, as JSON."""
    out = demo.out
    collector = demo.collector_command()
    config = str(out / "collector.toml")
    first = datetime.fromtimestamp(demo.marks.day_start_wall, tz=UTC).date()
    last = datetime.fromtimestamp(demo.marks.end_wall, tz=UTC).date()
    commands = {
        "pue": [
            *(*collector, "report", "pue", "--config", config, "--from", first.isoformat(), "--to", last.isoformat()),
            *("--json", "--plot", str(out / "pue.png")),
        ],
        "availability": [
            *(*collector, "report", "availability", "--config", config, "--month", f"{last:%Y-%m}"),
            *("--json", "--plot", str(out / "availability.png")),
        ],
    }
    for name, window in windows.items():
        if window.get("it_kwh") and window.get("facility_kwh") and window.get("hours"):
            scale = HOURS_PER_YEAR / window["hours"]
            commands[f"settle_{name}"] = [
                *collector,
                "settle",
                "--it-kwh",
                f"{window['it_kwh'] * scale:.3f}",
                "--facility-kwh",
                f"{window['facility_kwh'] * scale:.3f}",
                "--tariff",
                f"{TARIFF}",
                "--currency",
                CURRENCY,
                "--capacity-kw",
                f"{it_capacity_kw(demo.loaded):.1f}",
                "--hours",
                f"{HOURS_PER_YEAR:.0f}",
                "--json",
            ]
    docs: dict[str, Any] = {}
    for name, result in run_all(commands).items():
        doc = _last_json(result)
        # `report pue` exits 1 for an incomplete day: the store holds minutes of wall-clock readings.
        if doc is None or result.returncode not in (0, 1):
            docs[name] = {"error": (result.stderr or result.stdout).strip()[-2000:], "exit": result.returncode}
        else:
            docs[name] = doc
        (out / f"{name.replace('_', '-')}.json").write_text(json.dumps(docs[name], indent=2) + "\n", encoding="utf-8")
    return docs


def chart(demo: Demo, path: Path) -> None:
    """The day on simulated time: PUE and plant power of the site against its twin, and the setpoints held."""
    import matplotlib as mpl  # noqa: PLC0415  (only for the chart)

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    s = demo.samples
    t0 = demo.marks.day_start_sim
    hours = np.array([(x.sim_s - t0) / 3600.0 for x in s])
    with np.errstate(invalid="ignore", divide="ignore"):
        pue = np.array([x.facility_kw / x.it_kw if x.it_kw > 0 else np.nan for x in s])
        twin_pue = np.array([x.twin_facility_kw / x.twin_it_kw if x.twin_it_kw > 0 else np.nan for x in s])
    fig, axes = plt.subplots(3, 1, figsize=(10, 9), dpi=100, sharex=True)
    plan = demo.plan
    for ax in axes:
        ax.axvspan(plan.outage_at_s / 3600, (plan.outage_at_s + plan.outage_s) / 3600, color="tab:red", alpha=0.15)
        ax.axvline(plan.switch_at_s / 3600, color="tab:purple", linestyle="--")
        ax.grid(visible=True, alpha=0.3)
    axes[0].plot(hours, twin_pue, color="tab:gray", label="untouched twin")
    axes[0].plot(hours, pue, color="tab:blue", label="site")
    finite = np.concatenate([pue[np.isfinite(pue)], twin_pue[np.isfinite(twin_pue)]])
    if finite.size:
        lo, hi = np.percentile(finite, [1, 99])
        axes[0].set_ylim(max(1.0, lo - 0.03), hi + 0.03)
    axes[0].set_ylabel("facility / IT power")
    axes[0].set_title(
        f"Site {demo.site_id}, simulated day from {demo.sim_start():%Y-%m-%d %H:%M} UTC "
        "(red: mains failure; dashed: optimiser to closed loop)",
        fontsize="medium",
    )
    axes[1].plot(hours, [x.twin_plant_kw for x in s], color="tab:gray", label="untouched twin")
    axes[1].plot(hours, [x.plant_kw for x in s], color="tab:orange", label="site")
    walls = [x.wall for x in s]
    sims = [x.sim_s for x in s]
    for meter, rows in demo.observed.meter_power.items():
        if meter in demo.plant_meters and rows:
            at = np.interp([r[0] for r in rows], walls, sims, left=np.nan, right=np.nan)
            label = f"{meter}, as polled"
            axes[1].plot((at - t0) / 3600, [r[1] for r in rows], ".", markersize=2, color="tab:brown", label=label)
    axes[1].set_ylabel("plant power, kW")
    axes[2].plot(hours, [x.chw_supply_sp for x in s], color="tab:blue", label="chilled-water supply setpoint")
    axes[2].plot(hours, [x.cw_sp for x in s], color="tab:green", label="condenser-water setpoint")
    axes[2].set_ylabel("°C")
    axes[2].set_xlabel("simulated hours")
    for ax in axes:
        ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)


def _physics(demo: Demo, start_sim: float, end_sim: float) -> dict[str, float]:
    """Energies of the site's and the twin's physics between two simulated times (their own kWh counters)."""
    s = demo.samples
    sims = np.array([x.sim_s for x in s])
    out = {}
    for key in ("it", "facility", "plant", "twin_it", "twin_facility", "twin_plant"):
        cumulative = np.array([x.energy[key] for x in s])
        out[f"{key}_kwh"] = float(np.interp(end_sim, sims, cumulative) - np.interp(start_sim, sims, cumulative))
    return out


def window(demo: Demo, name: str, sims: tuple[float, float]) -> dict[str, Any]:
    """One period of simulated time: energies measured through the pipeline, and the physics' (site and twin)."""
    measured = demo.energies(*sims)
    physics = _physics(demo, *sims)
    return {
        "name": name,
        "hours": (sims[1] - sims[0]) / 3600.0,
        **measured,
        "pue": _ratio(measured["facility_kwh"], measured["it_kwh"]),
        "physics_pue": _ratio(physics["facility_kwh"], physics["it_kwh"]),
        "physics_plant_kwh": physics["plant_kwh"],
        "physics_it_kwh": physics["it_kwh"],
        "physics_facility_kwh": physics["facility_kwh"],
        "twin_pue": _ratio(physics["twin_facility_kwh"], physics["twin_it_kwh"]),
        "twin_plant_kwh": physics["twin_plant_kwh"],
        "twin_it_kwh": physics["twin_it_kwh"],
        "twin_facility_kwh": physics["twin_facility_kwh"],
    }


def summarise(demo: Demo) -> dict[str, Any]:
    """Everything the summary says, as data; runs the reports and draws the chart."""
    m = demo.marks
    plan = demo.plan
    t0 = m.day_start_sim
    before = window(demo, "before", (t0, t0 + plan.switch_at_s))
    after = window(demo, "after", (t0 + plan.switch_at_s, t0 + plan.span_s))
    day = window(demo, "day", (t0, t0 + plan.span_s))
    twin = {"it_kwh": after["twin_it_kwh"], "facility_kwh": after["twin_facility_kwh"], "hours": after["hours"]}
    docs = collector_reports(demo, {"day": day, "closed_loop": after, "twin": twin})
    chart(demo, demo.out / "demo-day.png")
    racks = len(demo.loaded.scenario.racks)
    dark_s = sum(
        (b.sim_s - a.sim_s) * a.racks_down / racks for a, b in zip(demo.samples, demo.samples[1:], strict=False)
    )
    saving = after["twin_plant_kwh"] - after["physics_plant_kwh"]
    avail = docs.get("availability", {})
    down_wall = avail.get("down_s") if isinstance(avail.get("down_s"), int | float) else None
    return {
        "site": demo.site_id,
        "simulated_start": (demo.sim_start() + timedelta(seconds=t0)).isoformat(),
        "simulated_hours": plan.span_s / 3600.0,
        "wall_s": m.end_wall - m.day_start_wall,
        "speed": plan.speed,
        "capacity_kw": it_capacity_kw(demo.loaded),
        "optimizer": demo.optimizer_mode is not None,
        "optimizer_last": demo.observed.optimizer,
        "commands": demo.observed.commands,
        "before": before,
        "after": after,
        "day": day,
        "plant_saving_kwh": saving,
        "plant_saving_pct": 100.0 * saving / after["twin_plant_kwh"] if after["twin_plant_kwh"] > 0 else None,
        "outage": {
            "simulated_s": plan.outage_s,
            "speed": plan.outage_speed,
            "wall_s": None if m.outage_wall is None else m.outage_wall[1] - m.outage_wall[0],
            "racks_dark_simulated_s": dark_s,
            "collector_down_wall_s": down_wall,
            "collector_down_simulated_s": None if down_wall is None else down_wall * plan.outage_speed,
        },
        "reports": docs,
        "counters": {
            key: {
                "reads": len(rows),
                "first_sim_s": float(demo.sim_times(np.array([rows[0][0]]))[0]) - t0,
                "last_sim_s": float(demo.sim_times(np.array([rows[-1][0]]))[0]) - t0,
            }
            for key, rows in sorted(demo.observed.counters.items())
            if rows
        },
        "messages_seen": demo.observed.messages,
        "web_dashboard": demo.dashboard_url,
    }


def _pue_rows(s: dict[str, Any]) -> list[str]:
    rows = []
    for key, label in (
        ("before", "before: first half, optimiser advisory"),
        ("after", "after: second half, optimiser in closed loop"),
        ("day", "whole day"),
    ):
        w = s[key]
        strong = "**" if key != "day" else ""
        rows.append(
            f"| {label} | {strong}{fmt(w['pue'], 3)}{strong} | {fmt(w['facility_kwh'], 1)} | {fmt(w['it_kwh'], 1)} "
            f"| {fmt(w['plant_kwh'], 2)} | {fmt(w['twin_pue'], 3)} | {fmt(w['twin_plant_kwh'], 2)} |"
        )
    return rows


def _settle_rows(reports: dict[str, Any]) -> list[str]:
    rows = []
    for key, label in (
        ("settle_day", "the demo day, x 365"),
        ("settle_closed_loop", "the closed-loop half, all year"),
        ("settle_twin", "the same half without the optimiser (twin)"),
    ):
        doc = reports.get(key)
        if not doc or "error" in doc:
            reason = (doc or {}).get("error", "no energies to settle")
            rows.append(f"| {label} | - | - | - | - | {reason[:60]} |")
            continue
        met = {True: "met", False: "not met", None: "unknown"}[doc.get("load_condition_met")]
        currency = doc.get("currency", CURRENCY)
        rows.append(
            f"| {label} | {doc['pue']} | {fmt(doc['facility_kwh'], 0)} | {doc['bonus']} {currency} "
            f"| {doc['penalty']} {currency} | {met} |"
        )
    return rows


def summary_text(s: dict[str, Any], out: Path) -> str:
    """The summary as Markdown."""
    a = s["after"]
    reports = s["reports"]
    total = reports.get("pue", {}).get("total") or {}
    avail = reports.get("availability", {})
    o = s["outage"]
    lines = [
        f"# dcim-edge demo: site {s['site']}",
        "",
        (
            f"{s['simulated_hours']:.0f} simulated hours from {s['simulated_start'][:16]} UTC in "
            f"{s['wall_s'] / 60:.1f} minutes: 16 simulated devices polled over Modbus, SNMP and BACnet by the agent, "
            f"{s['messages_seen']:,} MQTT messages, stored by the collector in SQLite."
        ),
        "",
        "## PUE before and after the optimiser",
        "",
        (
            "From the facility meter's and the PDUs' kWh counters as the agent read them (energy-based PUE). "
            "The twin is the site's physics stepped alongside with the baseline setpoints and the same outage."
        ),
        "",
        "| period | PUE | facility kWh | IT kWh | plant kWh | twin PUE | twin plant kWh |",
        "|---|---|---|---|---|---|---|",
        *_pue_rows(s),
        "",
    ]
    if not s["optimizer"]:
        lines.append("This collector has no chiller-plant optimiser: both halves ran at the baseline setpoints.")
    else:
        writes = sum(s["commands"].values())
        lines.append(
            "The halves differ in weather and load (night and morning against afternoon and evening) and the mains "
            "failure falls in the first, so the twin is the like-for-like comparison for the second half: the plant "
            f"drew {fmt(a['physics_plant_kwh'], 2)} kWh with the optimiser against {fmt(a['twin_plant_kwh'], 2)} kWh "
            f"without, **{fmt(s['plant_saving_kwh'], 2)} kWh less ({fmt(s['plant_saving_pct'], 1)} %)**, "
            f"through {writes} setpoint writes the agent checked against the device models' limits."
        )
    lines += [
        "",
        (
            f"The collector's report over the same dates (`dcim-collector report pue`) measured PUE "
            f"{fmt(total.get('pue_measured'), 3)} from {fmt(total.get('facility_kwh'), 1)} kWh facility and "
            f"{fmt(total.get('it_kwh'), 1)} kWh IT energy, and leaves the day's PUE open (incomplete): its store holds "
            "minutes of wall-clock readings, not a day."
        )
        if total
        else f"The collector's PUE report failed: {reports.get('pue', {}).get('error', 'no answer')}",
        "",
        "## Availability with the outage",
        "",
        (
            f"One mains failure of {o['simulated_s'] / 60:.0f} simulated minutes, played at {o['speed']:.0f}x "
            f"({fmt(o['wall_s'], 1)} s) so that the agent's one-second polls see every UPS state. The UPS batteries "
            f"carried the racks, then ran flat: the racks were without power for "
            f"{o['racks_dark_simulated_s'] / 60:.1f} simulated minutes (load-weighted)."
        ),
    ]
    if "availability" in avail:
        equivalent = o["collector_down_simulated_s"]
        lines += [
            "",
            (
                f"The collector's availability report for {avail.get('month')} "
                f"(target {avail.get('target', 0) * 100:.2f} %). "
                "Its timestamps are wall-clock: the outage counts for the seconds it lasted here."
            ),
            "",
            f"- availability so far: {avail['availability'] * 100:.5f} %",
            (
                f"- down: {fmt(avail.get('down_s'), 1)} s, load-weighted (at the outage's {o['speed']:.0f}x: about "
                f"{fmt(None if equivalent is None else equivalent / 60, 1)} simulated minutes)"
            ),
            f"- degraded (on battery): {fmt(avail.get('degraded_min'), 2)} min",
            f"- budget left this month: {avail.get('remaining_budget')} of {fmt(avail.get('allowed_down_min'), 2)} min",
            f"- outages: {len(avail.get('outages', []))}",
        ]
        if equivalent is not None and avail.get("allowed_down_s"):
            verdict = "would exhaust" if equivalent > avail["allowed_down_s"] else "would use"
            lines.append(
                f"- at real speed this outage {verdict} "
                f"{min(999.0, 100 * equivalent / avail['allowed_down_s']):.0f} % of the month's budget"
            )
    else:
        lines.append(f"The collector's availability report failed: {avail.get('error', 'no answer')}")
    lines += [
        "",
        "## Contract settlement projection",
        "",
        (
            f"`dcim-collector settle` on the energies extrapolated to a year (cap 1.40, threshold 1.30, rates 10 %, "
            f"tariff {TARIFF} {CURRENCY}/kWh, contracted capacity {s['capacity_kw']:.0f} kW: the racks' design load):"
        ),
        "",
        "| basis | PUE | facility kWh/year | bonus | penalty | load condition |",
        "|---|---|---|---|---|---|",
        *_settle_rows(reports),
        "",
        "## Files",
        "",
        *(f"- `{out / name}`: {what}" for name, what in _FILES),
        "",
    ]
    return "\n".join(lines)


_FILES: Final[Sequence[tuple[str, str]]] = (
    ("summary.md", "this summary (summary.json: the same as data)"),
    ("demo-day.png", "the day on simulated time: the site against its twin, the setpoints"),
    ("pue.png", "the collector's PUE chart (`report pue --plot`)"),
    ("availability.png", "the collector's availability chart (`report availability --plot`)"),
    ("pue.json", "the collector's answers: pue.json, availability.json, settle-*.json"),
    ("store.sqlite", "the collector's store"),
    ("collector.toml", "the generated configurations (and agent.toml)"),
    ("logs", "the agent's, the collector's and the demo's logs"),
)
