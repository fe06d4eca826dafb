"""Scheduled analytics jobs: read the store, call the pure analytics, write results back and publish them.

Each job is a plain method taking the time to compute for (``now_ns``), so
that tests and back-fills can run it for any moment; :func:`start` puts them
on an apscheduler ``AsyncIOScheduler`` in the collector's event loop, which
runs them in the loop's worker threads (they block on the store).

What they write (measurements of the store, tag ``site``):

- ``meter_energy`` (tags ``meter``, ``period`` hour | day): ``energy_kwh``,
  ``coverage``; what the PUE report and settlement read instead of raw data;
- ``pue`` (tag ``period`` hour | day | month | year, at the period start):
  energies, ``pue`` (complete periods only), ``pue_measured``, partial PUEs,
  DCiE, CUE, ``coverage``, ``complete``; month and year are to date;
- ``pue_live``: ``ratio``, ``facility_kw``, ``it_kw`` (a live ratio, not a PUE);
- ``availability`` (tag ``period`` = month): the month so far against its budget;
- ``burn_rate`` (tags ``severity``, ``window``): ``long_burn``, ``short_burn``, ``firing``;
- ``settlement`` (tags ``year``, ``basis`` to_date | projected): the contract's numbers.

Results are published retained as JSON on ``<publish_prefix>/<name>``; a
burn-rate alert that starts or stops firing is published as a wire-format
event of the device ``power-environment`` from this collector.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta
from typing import Any, Final, Protocol
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from collector import analytics_data as data
from collector import reports
from collector.analytics.availability import AvailabilitySummary, BurnRateAlert, evaluate_burn_rates
from collector.analytics.energy import NS_PER_S
from collector.analytics.pue import IT_ROLE, PueSeries, Role, live_pue_kw, pue_series
from collector.analytics.settlement import Settlement
from collector.analytics_config import PueSection
from collector.config import CollectorConfig
from collector.settle_store import StoreSettlement, settle_year, settlement_json
from collector.store import Store, StoreError
from models import telemetry

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

HOUR_NS: Final = data.HOUR_NS
BURN_EVENT_DEVICE: Final = "power-environment"
BURN_EVENT_TYPE: Final = "availability_burn_rate"
_SEVERITY: Final[Mapping[str, str]] = {"page": "critical", "ticket": "major"}


class Publish(Protocol):
    """Hands a message to the MQTT client (QoS 1); raises when it cannot."""

    def __call__(self, topic: str, payload: bytes, *, retain: bool) -> None:
        """Publish one message."""


def _fields(series: PueSeries) -> dict[str, FloatArray]:
    """The stored fields of a PUE series."""
    return {
        "facility_kwh": series.facility_kwh,
        "it_kwh": series.it_kwh,
        "cooling_kwh": series.cooling_kwh,
        "power_chain_kwh": series.power_chain_kwh,
        "pue": series.pue,
        "pue_measured": series.pue_measured,
        "dcie_pct": series.dcie_pct,
        "ppue_cooling": series.ppue_cooling,
        "ppue_power_chain": series.ppue_power_chain,
        "cue_kg_per_kwh": series.cue_kg_per_kwh,
        "coverage": series.coverage,
        "complete": series.complete.astype(np.float64),
        "category": np.full(series.pue.size, float(series.category)),
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _settlement_fields(s: Settlement) -> dict[str, FloatArray]:
    values = {
        k: float(v) for k, v in s.as_dict().items() if k not in {"currency", "load_condition_met"} and v is not None
    }
    if s.load_condition_met is not None:
        values["load_condition_met"] = float(s.load_condition_met)
    return {k: np.array([v]) for k, v in values.items()}


class AnalyticsJobs:
    """The analytics of one collector over its store. Thread-safe: one job runs at a time."""

    def __init__(self, config: CollectorConfig, store: Store, publish: Publish | None = None) -> None:
        self.config = config
        self.store = store
        self.publish = publish
        self.site = config.collector.site
        self.tz = ZoneInfo(config.collector.timezone)
        self.prefix = config.jobs.publish_prefix.format(site=self.site)
        self.publish_errors = 0
        self._firing: dict[tuple[str, int, int], bool] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------ helpers

    def _send(self, name: str, doc: Mapping[str, Any]) -> None:
        """Publish a result retained on <prefix>/<name>; a failure is logged and counted, never raised."""
        if self.publish is None:
            return
        try:
            self.publish(f"{self.prefix}/{name}", json.dumps(doc).encode(), retain=True)
        except Exception:  # the MQTT side's failure must not lose the stored result
            self.publish_errors += 1
            log.exception("could not publish %s/%s", self.prefix, name)

    def _local_day_start(self, now_ns: int) -> tuple[date, int]:
        """The local date of ``now_ns`` and its midnight in ns."""
        today = datetime.fromtimestamp(now_ns / NS_PER_S, tz=self.tz).date()
        return today, int(data.day_edges(today, today, self.tz)[0])

    def _hour_floor(self, now_ns: int) -> int:
        """The start of the local hour holding ``now_ns``."""
        _, midnight = self._local_day_start(now_ns)
        return midnight + (now_ns - midnight) // HOUR_NS * HOUR_NS

    def _write(self, name: str, tags: Mapping[str, str], ts: IntArray, fields: Mapping[str, FloatArray]) -> None:
        self.store.write_derived(name, {"site": self.site, **tags}, ts, fields)

    # ------------------------------------------------------------ energy and PUE

    def energy_job(self, now_ns: int) -> dict[str, PueSeries]:
        """Energy per meter and PUE for the last whole hours, the days they complete, the month and year to date.

        Hours are recomputed from raw readings for ``recompute_hours`` back, so
        that data arriving late (an agent replaying its spool) is counted.
        """
        section = self.config.pue
        if section is None:
            return {}
        with self._lock:
            end = self._hour_floor(now_ns)
            hours = end - np.arange(self.config.jobs.recompute_hours, -1, -1, dtype=np.int64) * HOUR_NS
            out = {"hour": self._store_period(section, hours, "hour", use_stored=False)}
            first_day = datetime.fromtimestamp(int(hours[0]) / NS_PER_S, tz=self.tz).date()
            today, midnight = self._local_day_start(now_ns)
            if first_day < today:
                days = data.day_edges(first_day, today - timedelta(days=1), self.tz)
                out["day"] = self._store_period(section, days, "day", use_stored=True)
            out.update(self._to_date(section, today, midnight))
        summary = {name: reports.pue_row(s, len(s) - 1, name, self.tz) for name, s in out.items()}
        self._send("pue", summary)
        return out

    def _store_period(self, section: PueSection, edges: IntArray, period: str, *, use_stored: bool) -> PueSeries:
        """Meter energies and PUE per bin, written to the store."""
        table = data.meter_table(self.store, self.site, section, edges, period=period, use_stored=use_stored)
        starts = edges[:-1]
        for i, meter in enumerate(section.meters):
            self.store.write_derived(
                data.METER_ENERGY,
                data.derived_tags(self.site, meter, period),
                starts,
                {"energy_kwh": table.energy_kwh[i], "coverage": table.coverage[i]},
            )
        series = pue_series(
            table,
            category=data.category(section),
            min_coverage=section.min_coverage,
            emission_factor=data.emission_factor(section),
        )
        self._write("pue", {"period": period}, starts, _fields(series))
        return series

    def _to_date(self, section: PueSection, today: date, midnight: int) -> dict[str, PueSeries]:
        """PUE of the month and the year up to the last midnight (from stored days)."""
        year_start = date(today.year, 1, 1)
        if today == year_start:
            return {}
        days = data.day_edges(year_start, today - timedelta(days=1), self.tz)
        table = data.meter_table(self.store, self.site, section, days, period="day")
        month_start = today.replace(day=1)
        out: dict[str, PueSeries] = {}
        spans = [("year", year_start)] + ([("month", month_start)] if month_start < today else [])
        for period, first in spans:
            start = int(data.day_edges(first, first, self.tz)[0])
            series = pue_series(
                table.rebin(np.array([start, midnight], dtype=np.int64)),
                category=data.category(section),
                min_coverage=section.min_coverage,
                emission_factor=data.emission_factor(section),
            )
            self._write("pue", {"period": period}, np.array([start], dtype=np.int64), _fields(series))
            out[f"{period}_to_date"] = series
        return out

    def live_job(self, now_ns: int) -> float | None:
        """The live kW ratio from the meters' live points (labelled live: not a reportable PUE)."""
        section = self.config.pue
        if section is None:
            return None
        category = data.category(section)
        roles = {m.role for m in section.meters}
        if category is not None:
            it_role = IT_ROLE[category]
        else:
            it_role = next(IT_ROLE[c] for c in sorted(IT_ROLE, reverse=True) if IT_ROLE[c] in roles)
        totals = {"facility": 0.0, "it": 0.0}
        counted = 0
        for meter in section.meters:
            if meter.live_point is None or meter.role not in {Role.FACILITY, it_role}:
                continue
            value = data.latest_value(
                self.store,
                meter.measurement,
                meter.device,
                meter.live_point,
                now_ns=now_ns,
                max_age_s=self.config.jobs.live_interval_s * 2,
            )
            totals["facility" if meter.role == Role.FACILITY else "it"] += value
            counted += 1
        if counted == 0:
            return None
        live = live_pue_kw(totals["facility"], totals["it"])
        ratio = float("nan") if live.ratio is None else live.ratio
        stamp = np.array([now_ns], dtype=np.int64)
        self._write(
            "pue_live",
            {},
            stamp,
            {"ratio": np.array([ratio]), "facility_kw": np.array([live.facility_kw]), "it_kw": np.array([live.it_kw])},
        )
        self._send(
            "pue_live",
            {
                "label": live.label,
                "ratio": live.ratio,
                "facility_kw": _finite(live.facility_kw),
                "it_kw": _finite(live.it_kw),
                "ts": now_ns / NS_PER_S,
            },
        )
        return live.ratio

    # ------------------------------------------------------------ availability

    def availability_job(self, now_ns: int) -> AvailabilitySummary | None:
        """The month so far against its downtime budget."""
        section = self.config.availability
        if section is None:
            return None
        today, _ = self._local_day_start(now_ns)
        report = reports.build_availability_report(
            self.store, self.site, section, self.tz, month=today.replace(day=1), now_ns=now_ns
        )
        s = report.site_summary
        met = math.nan if s.met is None else float(s.met)
        self._write(
            "availability",
            {"period": "month"},
            np.array([s.start_ns], dtype=np.int64),
            {
                "availability": np.array([s.availability]),
                "down_s": np.array([s.down_s]),
                "degraded_s": np.array([s.degraded_s]),
                "redundancy_lost_s": np.array([s.redundancy_lost_s]),
                "unknown_s": np.array([s.unknown_s]),
                "allowed_down_s": np.array([s.allowed_down_s]),
                "remaining_budget_s": np.array([s.remaining_budget_s]),
                "met": np.array([met]),
                "outages": np.array([float(len(s.outages))]),
            },
        )
        self._send("availability", reports.availability_json(report))
        return s

    def burn_rate_job(self, now_ns: int) -> list[telemetry.Event]:
        """Evaluate the burn-rate alerts now; publish an event when one starts or stops firing."""
        section = self.config.availability
        if section is None:
            return []
        alerts = [
            BurnRateAlert(a.severity, a.long_window_s, a.short_window_s, a.burn_rate) for a in section.burn_alerts
        ]
        longest = max(a.long_window_s for a in alerts)
        site = data.read_site(self.store, section, now_ns - longest * NS_PER_S, now_ns + 1)
        evaluations = evaluate_burn_rates(
            list(site.loads),
            [now_ns],
            target=section.target,
            alerts=alerts,
            count_unknown=section.count_unknown_in_burn,
        )
        events = []
        stamp = np.array([now_ns], dtype=np.int64)
        for ev in evaluations:
            alert = ev.alert
            firing = bool(ev.firing[0])
            window = f"{alert.long_window_s}s/{alert.short_window_s}s"
            self._write(
                "burn_rate",
                {"severity": alert.severity, "window": window},
                stamp,
                {"long_burn": ev.long_burn, "short_burn": ev.short_burn, "firing": ev.firing.astype(np.float64)},
            )
            key = (alert.severity, alert.long_window_s, alert.short_window_s)
            if self._firing.get(key, False) == firing:
                continue
            self._firing[key] = firing
            events.append(
                self._burn_event(
                    alert,
                    window,
                    firing=firing,
                    long_burn=float(ev.long_burn[0]),
                    short_burn=float(ev.short_burn[0]),
                    now_ns=now_ns,
                )
            )
        for event in events:
            self._publish_event(event)
        return events

    def _burn_event(
        self, alert: BurnRateAlert, window: str, *, firing: bool, long_burn: float, short_burn: float, now_ns: int
    ) -> telemetry.Event:
        state = "firing" if firing else "resolved"
        return telemetry.Event(
            site=self.site,
            agent=self.config.collector.id,
            device=BURN_EVENT_DEVICE,
            type=BURN_EVENT_TYPE,
            ts=now_ns / NS_PER_S,
            severity=_SEVERITY.get(alert.severity, "major") if firing else "info",  # type: ignore[arg-type]
            message=(
                f"{alert.severity} alert {state}: the downtime budget burns at {long_burn:.1f}x over "
                f"{alert.long_window_s} s and {short_burn:.1f}x over {alert.short_window_s} s "
                f"(threshold {alert.burn_rate:g}x)"
            ),
            data={
                "state": state,
                "alert": alert.severity,
                "window": window,
                "long_window_s": alert.long_window_s,
                "short_window_s": alert.short_window_s,
                "threshold": alert.burn_rate,
                "long_burn": round(long_burn, 3),
                "short_burn": round(short_burn, 3),
            },
        )

    def _publish_event(self, event: telemetry.Event) -> None:
        log.warning("availability burn rate: %s", event.message, extra={"device": event.device})
        if self.publish is None:
            return
        topic = telemetry.event_topic(event.site, event.agent, event.device)
        try:
            self.publish(topic, telemetry.encode(event), retain=False)
        except Exception:  # counted and logged; the next change is published again
            self.publish_errors += 1
            log.exception("could not publish the burn-rate event")

    # ------------------------------------------------------------ settlement

    def settlement_job(self, now_ns: int) -> StoreSettlement | None:
        """The year to date and its projection, from the stored meter energies."""
        if self.config.pue is None or self.config.contract is None:
            return None
        today, _ = self._local_day_start(now_ns)
        if today == date(today.year, 1, 1):
            return None
        try:
            result = settle_year(
                self.store, self.site, self.config.pue, self.config.contract, self.tz, year=today.year, now_ns=now_ns
            )
        except reports.UsageError as exc:  # nothing to settle yet (no whole day, no IT energy)
            log.info("settlement job: %s", exc)
            return None
        stamp = np.array([result.start_ns], dtype=np.int64)
        year = str(result.year)
        self._write("settlement", {"year": year, "basis": "to_date"}, stamp, _settlement_fields(result.settlement))
        if result.projected is not None:
            self._write("settlement", {"year": year, "basis": "projected"}, stamp, _settlement_fields(result.projected))
        self._send("settlement", settlement_json(result, self.tz))
        return result

    # ------------------------------------------------------------ running

    def run(self, name: str, job: Callable[[int], object]) -> None:
        """Run a job for the current time; its errors are logged, not raised (the next run tries again)."""
        started = time.monotonic()
        try:
            job(time.time_ns())
        except StoreError as exc:
            log.warning("analytics job %s: store: %s", name, exc)
        except Exception:  # a bug in one job must not stop the others or the collector
            log.exception("analytics job %s failed", name)
        else:
            log.debug("analytics job %s done", name, extra={"elapsed_ms": (time.monotonic() - started) * 1000})


def start(config: CollectorConfig, store: Store, publish: Publish | None = None) -> Any | None:
    """Schedule the analytics jobs in the running event loop; the scheduler, or None when disabled."""
    if not config.jobs.enabled or (config.pue is None and config.availability is None):
        return None
    from apscheduler.schedulers.asyncio import AsyncIOScheduler  # noqa: PLC0415  (only for `run`)

    jobs = AnalyticsJobs(config, store, publish)
    settings = config.jobs
    scheduler = AsyncIOScheduler(timezone=config.collector.timezone)
    common: dict[str, Any] = {"max_instances": 1, "coalesce": True, "misfire_grace_time": 300}
    if config.pue is not None:
        scheduler.add_job(jobs.run, "cron", args=["energy", jobs.energy_job], minute=settings.energy_minute, **common)
        if any(m.live_point for m in config.pue.meters):
            scheduler.add_job(
                jobs.run, "interval", args=["live", jobs.live_job], seconds=settings.live_interval_s, **common
            )
        if config.contract is not None:
            scheduler.add_job(
                jobs.run,
                "cron",
                args=["settlement", jobs.settlement_job],
                hour=settings.settlement_hour,
                minute=(settings.energy_minute + 10) % 60,
                **common,
            )
    if config.availability is not None:
        scheduler.add_job(
            jobs.run,
            "interval",
            args=["availability", jobs.availability_job],
            seconds=settings.availability_interval_s,
            **common,
        )
        scheduler.add_job(
            jobs.run,
            "interval",
            args=["burn-rate", jobs.burn_rate_job],
            seconds=settings.burn_rate_interval_s,
            **common,
        )
    scheduler.start()
    log.info("analytics jobs scheduled: %s", ", ".join(str(j.args[0]) for j in scheduler.get_jobs()))
    return scheduler


def stop(scheduler: Any | None) -> None:
    """Stop the scheduler started by :func:`start` (running jobs finish in their threads)."""
    if scheduler is not None:
        scheduler.shutdown(wait=False)
