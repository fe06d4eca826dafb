"""dcim-collector report pue | availability: tables, JSON, CSV and PNG charts from the store."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import numpy as np

from collector import analytics_data as data
from collector import config as collector_config
from collector.analytics.availability import AvailabilitySummary, Load, Outage, summarize
from collector.analytics.energy import NS_PER_S, calendar_edges_ns
from collector.analytics.pue import Category, PueSeries, pue_report
from collector.analytics_config import AvailabilitySection, PueSection
from collector.store import Store, StoreError, create_store
from models.errors import ConfigError

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2

CATEGORY_NAMES: Final = {
    Category.BASIC: "1 basic (UPS output)",
    Category.INTERMEDIATE: "2 intermediate (PDU output)",
    Category.ADVANCED: "3 advanced (IT equipment input)",
}
DEFAULT_THRESHOLD: Final = 1.30
DEFAULT_CAP: Final = 1.40
DAILY_ROWS_MAX: Final = 31  # the text table lists days for spans up to a month, months beyond
HISTORY_MONTHS: Final = 12  # months shown in the availability chart
_DATE_RE: Final = re.compile(r"^(\d{4})-(\d{2})(?:-(\d{2}))?$")
_MONTH_RE: Final = re.compile(r"^(\d{4})-(\d{2})$")


class UsageError(Exception):
    """A bad command-line value; the message names the flag."""


# ---------------------------------------------------------------- dates


def parse_date(value: str, flag: str, *, end: bool) -> date:
    """YYYY-MM-DD, or YYYY-MM (its first day, or with ``end`` its last day)."""
    match = _DATE_RE.match(value)
    if not match:
        raise UsageError(f"{flag} {value!r}: expected YYYY-MM-DD or YYYY-MM")
    try:
        first = date(int(match[1]), int(match[2]), int(match[3] or 1))
    except ValueError:
        raise UsageError(f"{flag} {value!r}: not a date") from None
    if match[3] is not None or not end:
        return first
    return next_month(first) - timedelta(days=1)


def parse_month(value: str, flag: str = "--month") -> date:
    """YYYY-MM as the first day of the month."""
    match = _MONTH_RE.match(value)
    if not match:
        raise UsageError(f"{flag} {value!r}: expected YYYY-MM")
    try:
        return date(int(match[1]), int(match[2]), 1)
    except ValueError:
        raise UsageError(f"{flag} {value!r}: not a month") from None


def next_month(first: date) -> date:
    """The first day of the following month."""
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)


def local_iso(ns: int, tz: tzinfo) -> str:
    """A timestamp as local ISO 8601 with its offset, to the second."""
    return datetime.fromtimestamp(ns / NS_PER_S, tz=tz).isoformat(timespec="seconds")


def _num(value: float, digits: int) -> float | None:
    """A float for JSON, rounded; None for NaN."""
    return None if math.isnan(value) else round(value, digits)


# ---------------------------------------------------------------- PUE


@dataclass(frozen=True, slots=True)
class PueReport:
    """PUE per day, per month (clipped to the range) and for the whole range."""

    site: str
    tz: tzinfo
    first: date
    last: date
    section: PueSection
    daily: PueSeries
    monthly: PueSeries
    total: PueSeries
    day_labels: tuple[str, ...]
    month_labels: tuple[str, ...]

    @property
    def total_label(self) -> str:
        """The range as first..last."""
        return f"{self.first.isoformat()}..{self.last.isoformat()}"


def build_pue_report(
    store: Store,
    site: str,
    section: PueSection,
    tz: tzinfo,
    *,
    first: date,
    last: date,
    use_stored: bool = True,
) -> PueReport:
    """PUE for every day from ``first`` to ``last`` (inclusive), each month and the whole range."""
    if last < first:
        raise UsageError(f"--to {last} is before --from {first}")
    days = data.day_edges(first, last, tz)
    months = data.month_starts_within(days, tz, first, last)
    table = data.meter_table(store, site, section, days, period="day", use_stored=use_stored)
    series = pue_report(
        table,
        {"daily": days, "monthly": months, "total": days[[0, -1]]},
        category=data.category(section),
        min_coverage=section.min_coverage,
        emission_factor=data.emission_factor(section),
    )
    day_labels = tuple((first + timedelta(days=i)).isoformat() for i in range(days.size - 1))
    month_labels = []
    for i in range(months.size - 1):
        lo = datetime.fromtimestamp(int(months[i]) / NS_PER_S, tz=tz).date()
        hi = datetime.fromtimestamp(int(months[i + 1]) / NS_PER_S, tz=tz).date() - timedelta(days=1)
        whole = lo.day == 1 and (hi + timedelta(days=1)).day == 1
        month_labels.append(f"{lo:%Y-%m}" if whole else f"{lo.isoformat()}..{hi.isoformat()}")
    return PueReport(
        site=site,
        tz=tz,
        first=first,
        last=last,
        section=section,
        daily=series["daily"],
        monthly=series["monthly"],
        total=series["total"],
        day_labels=day_labels,
        month_labels=tuple(month_labels),
    )


def pue_row(series: PueSeries, i: int, label: str, tz: tzinfo) -> dict[str, Any]:
    """One period of a PUE series as a JSON object."""
    return {
        "period": label,
        "start": local_iso(int(series.edges_ns[i]), tz),
        "end": local_iso(int(series.edges_ns[i + 1]), tz),
        "facility_kwh": _num(float(series.facility_kwh[i]), 3),
        "it_kwh": _num(float(series.it_kwh[i]), 3),
        "cooling_kwh": _num(float(series.cooling_kwh[i]), 3),
        "power_chain_kwh": _num(float(series.power_chain_kwh[i]), 3),
        "pue": _num(float(series.pue[i]), 6),
        "pue_measured": _num(float(series.pue_measured[i]), 6),
        "dcie_pct": _num(float(series.dcie_pct[i]), 4),
        "ppue_cooling": _num(float(series.ppue_cooling[i]), 6),
        "ppue_power_chain": _num(float(series.ppue_power_chain[i]), 6),
        "cue_kg_per_kwh": _num(float(series.cue_kg_per_kwh[i]), 6),
        "coverage": _num(float(series.coverage[i]), 6),
        "complete": bool(series.complete[i]),
        "incomplete_meters": list(series.incomplete_meters[i]),
    }


def pue_json(report: PueReport) -> dict[str, Any]:
    """The report as one JSON object."""
    section = report.section
    factor = data.emission_factor(section)
    return {
        "report": "pue",
        "site": report.site,
        "timezone": str(report.tz),
        "from": report.first.isoformat(),
        "to": report.last.isoformat(),
        "category": int(report.total.category),
        "category_name": CATEGORY_NAMES[report.total.category],
        "min_coverage": section.min_coverage,
        "emission_factor": None
        if factor is None
        else {"kg_per_kwh": float(factor.kg_per_kwh), "source": factor.source},
        "total": pue_row(report.total, 0, report.total_label, report.tz),
        "monthly": [pue_row(report.monthly, i, m, report.tz) for i, m in enumerate(report.month_labels)],
        "daily": [pue_row(report.daily, i, d, report.tz) for i, d in enumerate(report.day_labels)],
    }


PUE_CSV_COLUMNS: Final = (
    "level",
    "period",
    "start",
    "end",
    "facility_kwh",
    "it_kwh",
    "cooling_kwh",
    "power_chain_kwh",
    "pue",
    "pue_measured",
    "dcie_pct",
    "ppue_cooling",
    "ppue_power_chain",
    "cue_kg_per_kwh",
    "coverage",
    "complete",
    "incomplete_meters",
)


def pue_csv(report: PueReport) -> str:
    """The report as CSV: one row per day, per month and for the total (column ``level``)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(PUE_CSV_COLUMNS)
    doc = pue_json(report)
    for level, rows in (("day", doc["daily"]), ("month", doc["monthly"]), ("total", [doc["total"]])):
        for row in rows:
            cells = {**row, "level": level, "incomplete_meters": ";".join(row["incomplete_meters"])}
            writer.writerow(["" if cells[c] is None else cells[c] for c in PUE_CSV_COLUMNS])
    return out.getvalue()


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], *, left: frozenset[int] = frozenset({0})
) -> list[str]:
    """Columns aligned: those in ``left`` to the left, numbers to the right."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        parts = [c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(parts).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def pue_text(report: PueReport) -> str:
    """The report as a readable table."""
    doc = pue_json(report)
    factor = doc["emission_factor"]
    lines = [
        f"PUE report, site {report.site}, {report.total_label} ({report.tz}), energy-based (ISO/IEC 30134-2)",
        (
            f"category {doc['category_name']}; a period is complete when every facility and IT meter covers "
            f"at least {report.section.min_coverage:.0%} of it"
        ),
    ]
    if factor is not None:
        lines.append(f"emission factor {factor['kg_per_kwh']} kg CO2/kWh ({factor['source']})")
    headers = (
        "period",
        "facility kWh",
        "IT kWh",
        "PUE",
        "pPUE cool",
        "pPUE chain",
        "DCiE %",
        "CUE",
        "coverage",
        "note",
    )

    def row(r: dict[str, Any]) -> list[str]:
        note = ""
        if not r["complete"]:
            measured = _fmt(r["pue_measured"], ".4f")
            note = f"INCOMPLETE (measured {measured}; short: {', '.join(r['incomplete_meters']) or 'IT energy'})"
        return [
            r["period"],
            _fmt(r["facility_kwh"], ",.1f"),
            _fmt(r["it_kwh"], ",.1f"),
            _fmt(r["pue"], ".4f"),
            _fmt(r["ppue_cooling"], ".4f"),
            _fmt(r["ppue_power_chain"], ".4f"),
            _fmt(r["dcie_pct"], ".2f"),
            _fmt(r["cue_kg_per_kwh"], ".4f"),
            f"{r['coverage']:.2%}" if r["coverage"] is not None else "-",
            note,
        ]

    detail = doc["daily"] if len(doc["daily"]) <= DAILY_ROWS_MAX else doc["monthly"]
    lines.append("")
    lines += _table(headers, [row(r) for r in detail], left=frozenset({0, 9}))
    lines.append("")
    lines += _table(headers, [row(doc["total"])], left=frozenset({0, 9}))
    lines.append("(the total is the ratio of the summed energies, not a mean of the ratios above)")
    return "\n".join(lines) + "\n"


def _figure(width_in: float, height_in: float, rows: int = 1) -> tuple[Any, Any]:
    """A matplotlib figure on the Agg backend (no display needed)."""
    import matplotlib as mpl  # noqa: PLC0415  (loaded only when a chart is asked for)

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt.subplots(rows, 1, figsize=(width_in, height_in), dpi=100, squeeze=False)


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt  # noqa: PLC0415

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)


def plot_pue(report: PueReport, path: Path, *, threshold: float = DEFAULT_THRESHOLD, cap: float = DEFAULT_CAP) -> None:
    """Daily PUE with the contract's threshold (bonus below) and cap (penalty above): 1000x500 px."""
    fig, axes = _figure(10, 5)
    ax = axes[0][0]
    days = np.array([datetime.fromisoformat(d) for d in report.day_labels])
    pue = report.daily.pue
    measured = np.where(report.daily.complete, np.nan, report.daily.pue_measured)
    ax.plot(days, pue, marker="o", markersize=3, linewidth=1.2, color="tab:blue", label="daily PUE (complete days)")
    if np.isfinite(measured).any():
        ax.plot(days, measured, "x", color="tab:gray", label="incomplete day (measured only)")
    ax.axhline(threshold, color="tab:green", linestyle="--", label=f"{threshold:.2f}: bonus below")
    ax.axhline(cap, color="tab:red", linestyle="--", label=f"{cap:.2f}: penalty above")
    total = report.total.period(0)
    title = f"Daily PUE, {report.site}, {report.total_label}"
    if total.pue is not None:
        title += f"  (period PUE {total.pue:.3f})"
    ax.set_title(title)
    ax.set_ylabel("PUE (energy)")
    finite = np.concatenate([pue[np.isfinite(pue)], measured[np.isfinite(measured)], [threshold, cap]])
    ax.set_ylim(max(1.0, float(finite.min()) - 0.05), float(finite.max()) + 0.05)
    ax.grid(visible=True, alpha=0.3)
    ax.legend(loc="upper right", fontsize="small")
    import matplotlib.dates as mdates  # noqa: PLC0415

    ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))  # type: ignore[no-untyped-call]
    fig.autofmt_xdate()
    fig.tight_layout()
    _save(fig, path)


# ---------------------------------------------------------------- availability


@dataclass(frozen=True, slots=True)
class AvailabilityReport:
    """One month's availability for the site and for each load, and its outages."""

    site: str
    tz: tzinfo
    month: date
    section: AvailabilitySection
    site_summary: AvailabilitySummary
    loads: tuple[tuple[str, float, AvailabilitySummary], ...]
    in_progress: bool
    as_of_ns: int | None


def _so_far(summary: AvailabilitySummary, future_s: float) -> AvailabilitySummary:
    """A month still running: the time to come is not unknown, and the verdict waits unless already missed."""
    if future_s <= 0:
        return summary
    unknown = max(summary.unknown_s - future_s, 0.0)
    met = False if summary.down_s > summary.allowed_down_s else None
    return replace(
        summary,
        unknown_s=unknown,
        availability_if_unknown_down=1.0 - (summary.down_s + unknown) / summary.period_s,
        met=met,
    )


def _month_edges(first: date, months: int, tz: tzinfo) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Boundaries of ``months`` calendar months starting with ``first``."""
    last = first
    for _ in range(months):
        last = next_month(last)
    return calendar_edges_ns(first, last, unit="month", tz=tz)


def summarize_months(
    store: Store, section: AvailabilitySection, tz: tzinfo, *, first: date, months: int, now_ns: int
) -> list[AvailabilitySummary]:
    """Site availability for consecutive months (a running month judged so far)."""
    edges = _month_edges(first, months, tz)
    end = min(int(edges[-1]), now_ns)
    if end <= int(edges[0]):
        raise UsageError(f"{first:%Y-%m} has not started yet")
    site = data.read_site(store, section, int(edges[0]), end)
    summaries = summarize(list(site.loads), edges, basis=section.basis, target=section.target)
    return [
        _so_far(s, max(s.end_ns - max(now_ns, s.start_ns), 0) / NS_PER_S) if s.end_ns > now_ns else s for s in summaries
    ]


def build_availability_report(
    store: Store, site_id: str, section: AvailabilitySection, tz: tzinfo, *, month: date, now_ns: int
) -> AvailabilityReport:
    """Availability of ``month`` (as of ``now_ns`` when it is still running)."""
    edges = _month_edges(month, 1, tz)
    start, end = int(edges[0]), int(edges[1])
    if now_ns <= start:
        raise UsageError(f"--month {month:%Y-%m} has not started yet")
    read_end = min(end, now_ns)
    site = data.read_site(store, section, start, read_end)
    future_s = (end - read_end) / NS_PER_S

    def one(loads: Sequence[Load]) -> AvailabilitySummary:
        (summary,) = summarize(list(loads), edges, basis=section.basis, target=section.target)
        return _so_far(summary, future_s)

    weights = np.array([load.weight for load in site.loads], dtype=np.float64)
    shares = weights / weights.sum() if weights.sum() > 0 else weights
    per_load = tuple(
        (load.timeline.name, float(share), one([Load(load.timeline, 1.0, load.devices)]))
        for load, share in zip(site.loads, shares, strict=True)
    )
    return AvailabilityReport(
        site=site_id,
        tz=tz,
        month=month,
        section=section,
        site_summary=one(site.loads),
        loads=per_load,
        in_progress=read_end < end,
        as_of_ns=read_end if read_end < end else None,
    )


def budget_text(seconds: float) -> str:
    """Seconds as 'M min S s' (negative when over budget)."""
    sign = "-" if seconds < 0 else ""
    whole = round(abs(seconds))
    return f"{sign}{whole // 60} min {whole % 60:02d} s"


def _summary_json(s: AvailabilitySummary) -> dict[str, Any]:
    return {
        "availability": round(s.availability, 9),
        "availability_if_unknown_down": round(s.availability_if_unknown_down, 9),
        "up_min": round(s.up_s / 60, 4),
        "down_min": round(s.down_min, 4),
        "degraded_min": round(s.degraded_min, 4),
        "redundancy_lost_min": round(s.redundancy_lost_min, 4),
        "unknown_min": round(s.unknown_min, 4),
        "down_s": round(s.down_s, 3),
        "allowed_down_s": round(s.allowed_down_s, 3),
        "allowed_down_min": round(s.allowed_down_s / 60, 4),
        "remaining_budget_s": round(s.remaining_budget_s, 3),
        "remaining_budget_min": round(s.remaining_budget_s / 60, 4),
        "remaining_budget": budget_text(s.remaining_budget_s),
        "met": s.met,
    }


def _outage_json(o: Outage, tz: tzinfo) -> dict[str, Any]:
    return {
        "start": local_iso(o.start_ns, tz),
        "end": local_iso(o.end_ns, tz),
        "duration_s": round(o.duration_s, 3),
        "causes": list(o.causes),
        "devices": list(o.devices),
        "load": o.load,
        "load_share": round(o.load_share, 6),
    }


def availability_json(report: AvailabilityReport) -> dict[str, Any]:
    """The report as one JSON object."""
    s = report.site_summary
    return {
        "report": "availability",
        "site": report.site,
        "timezone": str(report.tz),
        "month": f"{report.month:%Y-%m}",
        "basis": str(s.basis),
        "period_s": s.period_s,
        "target": float(s.target),
        "in_progress": report.in_progress,
        "as_of": None if report.as_of_ns is None else local_iso(report.as_of_ns, report.tz),
        **_summary_json(s),
        "loads": [
            {"load": name, "share": round(share, 6), **_summary_json(summary)} for name, share, summary in report.loads
        ],
        "outages": [_outage_json(o, report.tz) for o in s.outages],
    }


AVAILABILITY_CSV_COLUMNS: Final = (
    "load",
    "share",
    "availability",
    "down_min",
    "degraded_min",
    "redundancy_lost_min",
    "unknown_min",
    "allowed_down_min",
    "remaining_budget_s",
    "met",
)


def availability_csv(report: AvailabilityReport) -> str:
    """The report as CSV: the site (load ``*``) and each load."""
    doc = availability_json(report)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["month", *AVAILABILITY_CSV_COLUMNS])
    rows = [{**doc, "load": "*", "share": 1.0}, *doc["loads"]]
    for row in rows:
        writer.writerow([doc["month"], *("" if row[c] is None else row[c] for c in AVAILABILITY_CSV_COLUMNS)])
    return out.getvalue()


def availability_text(report: AvailabilityReport) -> str:
    """The report as readable text."""
    doc = availability_json(report)
    s = report.site_summary
    verdict = {True: "MET", False: "MISSED", None: "not decided"}[s.met]
    if report.in_progress and s.met is None:
        verdict = "on track so far" if s.remaining_budget_s >= 0 else "MISSED"
    lines = [
        f"Power-environment availability, site {report.site}, {doc['month']} ({report.tz})"
        + (f", so far (as of {doc['as_of']})" if report.in_progress else ""),
        (
            f"target {float(s.target):.4%} over a {s.basis} month ({s.period_s / 86400:g} days): "
            f"at most {budget_text(s.allowed_down_s)} down"
        ),
        "",
        f"availability          {s.availability:.6%}   ({verdict})",
        f"down                  {budget_text(s.down_s)}   (load-weighted)",
        f"remaining budget      {budget_text(s.remaining_budget_s)}",
        f"degraded              {s.degraded_min:.1f} min   (on battery, on bypass, overload)",
        f"redundancy lost       {s.redundancy_lost_min:.1f} min",
        (
            f"unknown (no data)     {s.unknown_min:.1f} min   (never counted as up; "
            f"if all down: {s.availability_if_unknown_down:.6%})"
        ),
        "",
    ]
    load_rows = [
        [
            name,
            f"{share:.1%}",
            f"{summary.availability:.6%}",
            f"{summary.down_min:.2f}",
            f"{summary.degraded_min:.1f}",
            f"{summary.redundancy_lost_min:.1f}",
            f"{summary.unknown_min:.1f}",
        ]
        for name, share, summary in report.loads
    ]
    lines += _table(("load", "share", "availability", "down min", "degraded", "red. lost", "unknown"), load_rows)
    lines.append("")
    if s.outages:
        outage_rows = [
            [
                local_iso(o.start_ns, report.tz),
                local_iso(o.end_ns, report.tz),
                f"{o.duration_s:.0f} s",
                o.load,
                f"{o.load_share:.1%}",
                ", ".join(o.causes),
                ", ".join(o.devices),
            ]
            for o in s.outages
        ]
        lines += _table(
            ("start", "end", "duration", "load", "share", "cause", "devices"),
            outage_rows,
            left=frozenset({0, 1, 3, 5, 6}),
        )
    else:
        lines.append("no outages")
    return "\n".join(lines) + "\n"


def plot_availability(report: AvailabilityReport, history: Sequence[AvailabilitySummary], path: Path) -> None:
    """Monthly down time against the budget, and the month's outage timeline: 1000x700 px.

    Unknown time (no data) is drawn on top of the down time, cut at the top of
    the chart; a month without data is labelled so, never shown as available.
    """
    import matplotlib.dates as mdates  # noqa: PLC0415

    fig, axes = _figure(10, 7, rows=2)
    top, bottom = axes[0][0], axes[1][0]
    history = history or [report.site_summary]
    labels = [datetime.fromtimestamp(s.start_ns / NS_PER_S, tz=report.tz).strftime("%Y-%m") for s in history]
    down = np.array([s.down_min for s in history])
    unknown = np.array([s.unknown_min for s in history])
    allowed = np.array([s.allowed_down_s / 60 for s in history])
    ceiling = max(float(down.max()), float(allowed.max())) * 1.6
    x = np.arange(len(history))
    colors = ["tab:red" if s.met is False else "tab:blue" for s in history]
    top.bar(x, down, color=colors, label="down (min)")
    top.bar(x, np.minimum(unknown, ceiling), bottom=down, color="lightgray", hatch="//", label="unknown: no data (min)")
    top.step(
        np.append(x, x[-1] + 1) - 0.5,
        np.append(allowed, allowed[-1]),
        where="post",
        color="tab:red",
        linestyle="--",
        label=f"budget at {float(report.site_summary.target):.2%}",
    )
    for xi, s in zip(x, history, strict=True):
        if s.up_s + s.down_s + s.degraded_s + s.redundancy_lost_s <= 0:
            text = "no data"
        else:
            text = f"{s.availability:.4%}" + ("" if s.met is not None else "?")
        top.annotate(text, (xi, min(s.down_min, ceiling * 0.85)), ha="center", va="bottom", fontsize=7)
    top.set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
    top.set_ylabel("minutes per month")
    top.set_ylim(0, ceiling)
    top.set_title(f"Monthly availability against the downtime budget, {report.site} ('?': unknown time decides)")
    top.legend(loc="upper left", fontsize="small")
    top.grid(visible=True, axis="y", alpha=0.3)

    s = report.site_summary
    loads = [name for name, _, _ in report.loads] or ["(none)"]
    month_start = datetime.fromtimestamp(s.start_ns / NS_PER_S, tz=report.tz)
    month_end = datetime.fromtimestamp(s.end_ns / NS_PER_S, tz=report.tz)
    visible = (month_end - month_start) / 250  # short outages still show as a bar
    for o in s.outages:
        start = datetime.fromtimestamp(o.start_ns / NS_PER_S, tz=report.tz)
        row = loads.index(o.load) if o.load in loads else 0
        bottom.barh(row, max(timedelta(seconds=o.duration_s), visible), left=start, height=0.5, color="tab:red")
        bottom.annotate(
            f"{o.duration_s / 60:.1f} min ({', '.join(o.devices)})", (start, row + 0.3), fontsize=7, color="tab:red"
        )
    bottom.set_xlim(month_start, month_end)
    bottom.set_ylim(-0.7, len(loads) - 0.3)
    bottom.set_yticks(range(len(loads)), loads, fontsize=8)
    bottom.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d", tz=report.tz))  # type: ignore[no-untyped-call]
    bottom.set_title(f"Outages in {report.month:%Y-%m}: {len(s.outages)}, down {budget_text(s.down_s)} (load-weighted)")
    bottom.grid(visible=True, axis="x", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


# ---------------------------------------------------------------- command


def _open_store(loaded: collector_config.LoadedConfig) -> Store:
    store = create_store(loaded.config.store)
    store.open()
    return store


def _section_missing(path: Path, name: str, command: str) -> ConfigError:
    return ConfigError(path, [(name, f"the [{name}] section is missing; `{command}` needs it")])


def _err(message: str) -> None:
    sys.stderr.write(message + "\n")


def _emit(text: str, path: str | None = None) -> None:
    sys.stdout.write(text)
    if path is not None:
        _err(f"chart written to {path}")


def cmd_report_pue(args: argparse.Namespace) -> int:
    """dcim-collector report pue."""
    loaded = collector_config.load(args.config)
    cfg = loaded.config
    if cfg.pue is None:
        raise _section_missing(loaded.path, "pue", "report pue")
    first = parse_date(args.date_from, "--from", end=False)
    last = parse_date(args.date_to, "--to", end=True)
    tz = ZoneInfo(cfg.collector.timezone)
    store = _open_store(loaded)
    try:
        report = build_pue_report(
            store,
            cfg.collector.site,
            cfg.pue,
            tz,
            first=first,
            last=last,
            use_stored=getattr(args, "source", "auto") != "raw",
        )
    finally:
        store.close()
    if args.plot:
        contract = cfg.contract
        threshold = float(contract.threshold) if contract else DEFAULT_THRESHOLD
        cap = float(contract.cap) if contract else DEFAULT_CAP
        plot_pue(report, Path(args.plot), threshold=threshold, cap=cap)
    if args.json:
        _emit(json.dumps(pue_json(report)) + "\n", args.plot)
    elif args.csv:
        _emit(pue_csv(report), args.plot)
    else:
        _emit(pue_text(report), args.plot)
    return EXIT_OK if report.total.complete[0] else EXIT_FAILED


def cmd_report_availability(args: argparse.Namespace) -> int:
    """dcim-collector report availability."""
    loaded = collector_config.load(args.config)
    cfg = loaded.config
    if cfg.availability is None:
        raise _section_missing(loaded.path, "availability", "report availability")
    month = parse_month(args.month)
    tz = ZoneInfo(cfg.collector.timezone)
    now_ns = time.time_ns()
    store = _open_store(loaded)
    try:
        report = build_availability_report(store, cfg.collector.site, cfg.availability, tz, month=month, now_ns=now_ns)
        history: list[AvailabilitySummary] = []
        if args.plot:
            first = month
            for _ in range(HISTORY_MONTHS - 1):
                first = date(first.year - (first.month == 1), (first.month - 2) % 12 + 1, 1)
            history = summarize_months(store, cfg.availability, tz, first=first, months=HISTORY_MONTHS, now_ns=now_ns)
    finally:
        store.close()
    if args.plot:
        plot_availability(report, history, Path(args.plot))
    if args.json:
        _emit(json.dumps(availability_json(report)) + "\n", args.plot)
    elif args.csv:
        _emit(availability_csv(report), args.plot)
    else:
        _emit(availability_text(report), args.plot)
    s = report.site_summary
    missed = s.met is False or (s.met is None and not report.in_progress)
    return EXIT_FAILED if missed else EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    """dcim-collector report pue | availability; usage errors exit 2, store failures 1."""
    if getattr(args, "json", False) and getattr(args, "csv", False):
        _err("dcim-collector report: give --json or --csv, not both")
        return EXIT_USAGE
    try:
        if args.report == "pue":
            return cmd_report_pue(args)
        return cmd_report_availability(args)
    except UsageError as exc:
        _err(f"dcim-collector report {args.report}: {exc}")
        return EXIT_USAGE
    except StoreError as exc:
        _err(f"dcim-collector report {args.report}: store: {exc}")
        return EXIT_FAILED
