"""Read-only web dashboard of ``dcim-collector run --http HOST:PORT``: one offline HTML page and a JSON API.

The server runs in a thread of the collector process (stdlib ``http.server``),
reads the store through the collector's own store object (thread-safe) and the
running service's state (alarms, optimiser, ingest counters), and never
writes anything. It listens on loopback only: put a reverse proxy with
authentication in front of it to show it elsewhere.

Endpoints (GET or HEAD; anything else is 405):

- ``/``: the dashboard, a self-contained page (inline CSS and JavaScript,
  charts drawn as inline SVG; no CDN, works offline), refreshing itself;
- ``/api``: the list of endpoints;
- ``/api/pue?minutes=M``: the live ratio of facility to IT power over time
  (labelled ``live``: a ratio of kW, not a reportable PUE) and the latest
  energy-based PUE of each period the analytics jobs stored;
- ``/api/plant?minutes=M``: the plant's (cooling meters') power over time, kW;
- ``/api/availability``: the month so far against its downtime budget;
- ``/api/outages``: the month's outages;
- ``/api/optimizer``: the chiller-plant optimiser's state and recommendation;
- ``/api/alarms``: active alarms, most urgent first;
- ``/api/devices``: every device seen in the store, its last read and health;
- ``/api/status``: the collector's own counters (MQTT, store, queue).

Series endpoints cover the last ``minutes`` (default 60, at most 31 days),
starting at the first reading inside that window, in at most 120 bins.
Answers are cached for ``CACHE_S`` so that many open pages cost the store
little.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Final, Protocol
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from collector import reports
from collector.analytics.energy import NS_PER_S
from collector.analytics.pue import IT_ROLE, Category, Role
from collector.analytics_config import MeterSpec, PueSection
from collector.config import CollectorConfig
from collector.store import METRICS_MEASUREMENT, RESERVED_MEASUREMENTS, Store, StoreError
from models import catalog
from models.errors import ConfigError

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

CACHE_S: Final = 2.0
BINS: Final = 120
DEFAULT_MINUTES: Final = 60.0
MAX_MINUTES: Final = 31 * 24 * 60.0
REQUEST_TIMEOUT_S: Final = 10.0
DEVICE_LOOKBACK_S: Final = 24 * 3600.0
DEFAULT_STALE_S: Final = 120.0
HEALTH_CANDIDATES: Final = 4  # numeric points tried, in model order, for a device's last read
# Measurements that are analytics results, not devices.
DERIVED: Final = frozenset(
    {"meter_energy", "pue", "pue_live", "availability", "burn_rate", "settlement", METRICS_MEASUREMENT}
)
LOOPBACK_NAMES: Final = frozenset({"localhost"})


class HttpAddressError(ValueError):
    """A bad --http value; the message says why."""


class DashboardError(OSError):
    """The dashboard cannot listen on the address it was given."""


def parse_address(value: str) -> tuple[str, int]:
    """HOST:PORT (``[::1]:PORT`` for IPv6) on a loopback address; HttpAddressError otherwise."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise HttpAddressError(f"--http {value!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    host = host.removeprefix("[").removesuffix("]")
    try:
        port = int(port_text)
    except ValueError:
        raise HttpAddressError(f"--http {value!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise HttpAddressError(f"--http {value!r}: port {port} is not between 0 and 65535")
    if host.lower() not in LOOPBACK_NAMES:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            raise HttpAddressError(f"--http {value!r}: {host!r} is not an IP address or localhost") from None
        if not loopback:
            raise HttpAddressError(
                f"--http {value!r}: the dashboard listens on loopback only (127.0.0.1, ::1, localhost); "
                "put a reverse proxy with authentication in front of it to show it elsewhere"
            )
    return host, port


# ---------------------------------------------------------------- what the dashboard reads from the service


class Service(Protocol):
    """What the dashboard reads from the running collector (collector.service.Collector)."""

    config: CollectorConfig
    store: Store


def _num(value: float, digits: int = 4) -> float | None:
    """A float for JSON, rounded; None for NaN and infinities."""
    return round(value, digits) if math.isfinite(value) else None


def _iso(ns: int, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(ns / NS_PER_S, tz=tz).isoformat(timespec="seconds")


def _binned_mean(ts: IntArray, values: FloatArray, edges: IntArray) -> FloatArray:
    """Mean of the good values in each bin [edges[i], edges[i+1]); NaN for a bin without any."""
    good = np.isfinite(values)
    ts, values = ts[good], values[good]
    idx = np.searchsorted(edges, ts, side="right") - 1
    inside = (idx >= 0) & (idx < edges.size - 1)
    n = edges.size - 1
    sums = np.bincount(idx[inside], weights=values[inside], minlength=n).astype(np.float64)
    counts = np.bincount(idx[inside], minlength=n).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1.0), np.nan)


def _binned(ts: IntArray, values: FloatArray, edges: IntArray) -> FloatArray:
    """Mean per bin; a bin without a reading takes the meter's last reading before its end, if recent.

    Recent: within three of the meter's usual intervals between readings. The
    last reading may be a failed one (NaN): a gap then stays a gap, never the
    value before it.
    """
    mean = _binned_mean(ts, values, edges)
    if ts.size == 0:
        return mean
    usual = float(np.median(np.diff(ts))) if ts.size > 1 else 0.0
    idx = np.searchsorted(ts, edges[1:], side="left") - 1
    safe = np.clip(idx, 0, None)
    recent = (idx >= 0) & (edges[1:] - ts[safe] <= 3.0 * usual)
    return np.where(np.isfinite(mean), mean, np.where(recent, values[safe], np.nan))


def _it_role(section: PueSection) -> Role:
    """The IT role the PUE counts: the configured category's, or the most detailed present."""
    if section.category is not None:
        return IT_ROLE[Category(section.category)]
    roles = {m.role for m in section.meters}
    return next(IT_ROLE[c] for c in sorted(IT_ROLE, reverse=True) if IT_ROLE[c] in roles)


def _health_points(model_id: str) -> tuple[str, ...]:
    """Numeric points of a catalog model whose latest read tells whether the device answers (first few)."""
    try:
        model = catalog.load(model_id)
    except (ConfigError, OSError, ValueError, KeyError):
        return ()
    names = [
        p.name for p in model.points if p.unit and p.enum is None and p.bits is None and p.type != "string"
    ]
    return tuple(names[:HEALTH_CANDIDATES])


class DashboardData:
    """The answers of the JSON API, computed from the store and the service's state."""

    def __init__(self, service: Service, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.service = service
        self.config = service.config
        self.store = service.store
        self.site = self.config.collector.site
        self.tz = ZoneInfo(self.config.collector.timezone)
        self.clock_ns = clock_ns
        self._cache: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        self._health_points: dict[str, tuple[str, ...]] = {}

    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        """compute() at most once every CACHE_S per key."""
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and now - hit[0] < CACHE_S:
                return hit[1]
        value = compute()
        with self._lock:
            self._cache[key] = (now, value)
        return value

    # ------------------------------------------------------------ series

    def _edges(self, meters: Sequence[MeterSpec], points: Sequence[str], minutes: float) -> IntArray | None:
        """Bin edges from the time every meter has a reading inside the window up to now (None without)."""
        now = self.clock_ns()
        start = now - round(minutes * 60 * NS_PER_S)
        first = start
        for meter, point in zip(meters, points, strict=True):
            ts, _ = self.store.read_series(
                meter.measurement, meter.device, point, start, now + 1, table=meter.table, index=meter.index
            )
            if not ts.size:
                return None  # a sum missing one of its meters would not be the site's
            first = max(first, int(ts[0]))
        if first >= now:
            return None
        n = max(1, min(BINS, (now - first) // NS_PER_S))
        return np.linspace(first, now + 1, int(n) + 1).astype(np.int64)

    def _sum_of(self, meters: Sequence[MeterSpec], edges: IntArray) -> FloatArray:
        """Sum over meters of each meter's mean live power per bin (NaN where any meter has none)."""
        total = np.zeros(edges.size - 1)
        for meter in meters:
            assert meter.live_point is not None  # noqa: S101  (callers pass meters with a live point)
            ts, values = self.store.read_series(
                meter.measurement,
                meter.device,
                meter.live_point,
                int(edges[0]),
                int(edges[-1]),
                table=meter.table,
                index=meter.index,
            )
            total += _binned(ts, values, edges)
        return total

    def _energy_kw_of(self, meters: Sequence[MeterSpec], edges: IntArray) -> FloatArray:
        """Sum over meters of their mean power per bin from energy counters (kWh per hour)."""
        total = np.zeros(edges.size - 1)
        for meter in meters:
            ts, values = self.store.read_series(
                meter.measurement,
                meter.device,
                meter.point,
                int(edges[0]),
                int(edges[-1]),
                table=meter.table,
                index=meter.index,
            )
            good = np.isfinite(values)
            ts, values = ts[good], values[good]
            if ts.size < 2:
                total += np.nan
                continue
            # Power between consecutive readings, assigned to the bin of the later one (resets dropped).
            dt_h = np.diff(ts).astype(np.float64) / (3600 * NS_PER_S)
            de = np.diff(values)
            kw = np.where((de >= 0) & (dt_h > 0), de / np.where(dt_h > 0, dt_h, 1.0), np.nan)
            total += _binned_mean(ts[1:], kw, edges)
        return total

    def pue(self, minutes: float) -> dict[str, Any]:
        """The live ratio over time and the latest stored period PUEs."""
        section = self.config.pue
        out: dict[str, Any] = {"site": self.site, "label": "live", "minutes": minutes, "series": [], "latest": None}
        if section is None:
            out["problem"] = "no [pue] section in the collector's configuration"
            return out
        it_role = _it_role(section)
        facility = [m for m in section.meters if m.role == Role.FACILITY]
        it = [m for m in section.meters if m.role == it_role]
        live = all(m.live_point for m in (*facility, *it))
        out["source"] = "live_point" if live else "counter"
        points = [(m.live_point or m.point) if live else m.point for m in (*facility, *it)]
        edges = self._edges([*facility, *it], points, minutes)
        if edges is not None:
            if live:
                fac_kw, it_kw = self._sum_of(facility, edges), self._sum_of(it, edges)
            else:
                fac_kw, it_kw = self._energy_kw_of(facility, edges), self._energy_kw_of(it, edges)
            with np.errstate(invalid="ignore", divide="ignore"):
                ratio = np.where(it_kw > 0, fac_kw / np.where(it_kw > 0, it_kw, 1.0), np.nan)
            mids = (edges[:-1] + edges[1:]) // 2
            series = [
                {"ts": round(int(t) / NS_PER_S, 3), "ratio": _num(r), "facility_kw": _num(f, 3), "it_kw": _num(i, 3)}
                for t, r, f, i in zip(mids, ratio, fac_kw, it_kw, strict=True)
                if math.isfinite(r)
            ]
            out["series"] = series
            out["latest"] = series[-1] if series else None
        out["periods"] = self._stored_pue()
        return out

    def _stored_pue(self) -> dict[str, Any]:
        """The latest stored energy-based PUE per period (hour, day, month, year) from the analytics jobs."""
        now = self.clock_ns()
        lookback = {"hour": 2 * 86400, "day": 3 * 86400, "month": 32 * 86400, "year": 367 * 86400}
        out: dict[str, Any] = {}
        for period, back_s in lookback.items():
            tags = {"site": self.site, "period": period}
            try:
                ts, pue = self.store.read_series("pue", None, "pue_measured", now - back_s * NS_PER_S, now, tags=tags)
                _, complete = self.store.read_series(
                    "pue", None, "complete", now - back_s * NS_PER_S, now, tags=tags
                )
            except StoreError:
                continue
            if ts.size:
                done = bool(complete[-1] == 1.0) if complete.size == ts.size else False
                out[period] = {"start": _iso(int(ts[-1]), self.tz), "pue": _num(float(pue[-1])), "complete": done}
        return out

    def plant(self, minutes: float) -> dict[str, Any]:
        """The cooling meters' power over time, kW."""
        section = self.config.pue
        out: dict[str, Any] = {"site": self.site, "minutes": minutes, "series": [], "latest": None, "meters": []}
        cooling = [] if section is None else [m for m in section.meters if m.role == Role.COOLING]
        if not cooling:
            out["problem"] = "no [[pue.meters]] with role 'cooling' in the collector's configuration"
            return out
        out["meters"] = [m.id for m in cooling]
        live = all(m.live_point for m in cooling)
        out["source"] = "live_point" if live else "counter"
        points = [(m.live_point or m.point) if live else m.point for m in cooling]
        edges = self._edges(cooling, points, minutes)
        if edges is None:
            return out
        kw = self._sum_of(cooling, edges) if live else self._energy_kw_of(cooling, edges)
        mids = (edges[:-1] + edges[1:]) // 2
        series = [
            {"ts": round(int(t) / NS_PER_S, 3), "plant_kw": _num(v, 3)}
            for t, v in zip(mids, kw, strict=True)
            if math.isfinite(v)
        ]
        out["series"] = series
        out["latest"] = series[-1] if series else None
        return out

    # ------------------------------------------------------------ availability

    def _availability_doc(self) -> dict[str, Any] | None:
        section = self.config.availability
        if section is None:
            return None
        now = self.clock_ns()
        month = datetime.fromtimestamp(now / NS_PER_S, tz=self.tz).date().replace(day=1)
        report = reports.build_availability_report(self.store, self.site, section, self.tz, month=month, now_ns=now)
        return reports.availability_json(report)

    def availability(self) -> dict[str, Any]:
        """The month so far: availability, down time, budget and what is left of it."""
        doc = self.cached("availability-doc", self._availability_doc)
        if doc is None:
            return {"site": self.site, "problem": "no [availability] section in the collector's configuration"}
        budget = doc["allowed_down_s"]
        left = doc["remaining_budget_s"]
        return {
            **{k: v for k, v in doc.items() if k not in ("outages", "loads")},
            "budget_left_fraction": None if not budget else round(max(left, 0.0) / budget, 6),
            "outages": len(doc["outages"]),
        }

    def outages(self) -> dict[str, Any]:
        """The month's outages, oldest first."""
        doc = self.cached("availability-doc", self._availability_doc)
        if doc is None:
            return {"site": self.site, "outages": [], "problem": "no [availability] section"}
        return {"site": self.site, "month": doc["month"], "outages": doc["outages"]}

    # ------------------------------------------------------------ service state

    def optimizer(self) -> dict[str, Any]:
        """The optimiser's last decision: from the running service, else the latest one stored.

        ``available`` is false when no optimiser runs for this site; ``summary``
        holds the figures the page shows (mode, fallback, recommended setpoints,
        predicted plant power and saving against the baseline setpoints).
        """
        running = getattr(self.service, "optimizer", None)
        service = getattr(running, "service", None)
        last = getattr(service, "last", None)
        if last is not None:
            doc: dict[str, Any] = last.to_json(getattr(service, "outcomes", None))
            summary = _optimizer_summary(doc)
            return {"site": self.site, "available": True, "source": "service", "summary": summary, **doc}
        stored = self.cached("optimizer-stored", self._stored_optimizer)
        if stored is not None:
            return {"site": self.site, "available": True, "source": "store", "summary": stored, **stored}
        section = self.config.optimizer
        mode = "off" if section is None else section.mode
        return {"site": self.site, "available": False, "mode": mode, "summary": {"mode": mode}}

    def _stored_optimizer(self) -> dict[str, Any] | None:
        """The latest decision another collector (or an earlier run) stored as the ``optimizer`` measurement."""
        now = self.clock_ns()
        best: dict[str, Any] | None = None
        for mode in ("advisory", "closed-loop"):
            tags = {"site": self.site, "mode": mode}
            row: dict[str, Any] = {"mode": mode}
            stamp = None
            for name in STORED_OPTIMIZER_FIELDS:
                try:
                    ts, values = self.store.read_series(
                        "optimizer", None, name, now - 86400 * NS_PER_S, now + 1, tags=tags
                    )
                except StoreError:
                    continue
                if ts.size:
                    stamp = int(ts[-1]) if stamp is None else max(stamp, int(ts[-1]))
                    row[name] = _num(float(values[-1]), 2)
            if stamp is None:
                continue
            row["ts"] = round(stamp / NS_PER_S, 3)
            if "fallback" in row:
                row["fallback"] = row["fallback"] == 1.0
            if best is None or row["ts"] > best["ts"]:
                best = row
        return best

    def alarms(self) -> dict[str, Any]:
        """Active alarms, most urgent first."""
        service = getattr(self.service, "alarms", None)
        if service is None:
            return {"site": self.site, "enabled": False, "alarms": []}
        rows = [
            {
                "id": a.id,
                "device": a.device,
                "rule": a.rule,
                "subject": a.subject,
                "severity": str(a.severity),
                "state": str(a.state),
                "message": a.message,
                "raised": _iso(round(a.raised_ts * NS_PER_S), self.tz),
                "acked": a.acked,
                "value": a.value,
                "unit": a.unit,
            }
            for a in service.active()
        ]
        return {"site": self.site, "enabled": True, "alarms": rows}

    def status(self) -> dict[str, Any]:
        """The collector's counters: MQTT connection, store, queue, messages."""
        out: dict[str, Any] = {
            "site": self.site,
            "collector": self.config.collector.id,
            "store": self.config.store.kind,
            "time": _iso(self.clock_ns(), self.tz),
            "timezone": str(self.tz),
        }
        metrics = getattr(self.service, "metrics", None)
        if metrics is not None:
            snap = metrics.snapshot()
            for key in ("received_messages", "written_messages", "rejected", "duplicates", "write_errors"):
                if key in snap:
                    out[key] = snap[key]
            out["store_up"] = bool(snap.get("store_up", False))
        subscriber = getattr(self.service, "subscriber", None)
        if subscriber is not None:
            out["mqtt_connected"] = subscriber.connected.is_set()
            out["mqtt_subscribed"] = subscriber.subscribed.is_set()
        return out

    # ------------------------------------------------------------ devices

    def devices(self) -> dict[str, Any]:
        """Every device with readings in the store: kind, model, agent, last read and health."""
        now = self.clock_ns()
        section = self.config.availability
        stale_s = section.max_gap_s if section is not None else DEFAULT_STALE_S
        seen: dict[str, dict[str, Any]] = {}
        for key in self.store.list_series():
            if key.measurement in RESERVED_MEASUREMENTS or key.measurement in DERIVED or key.table is not None:
                continue
            device = key.device
            if device is None:
                continue
            row = seen.setdefault(
                device, {"device": device, "kind": key.measurement, "model": key.tag("model") or "", "agents": set()}
            )
            row["agents"].add(key.tag("agent") or "")
        active: dict[str, int] = {}
        alarms = getattr(self.service, "alarms", None)
        if alarms is not None:
            for alarm in alarms.active():
                active[alarm.device] = active.get(alarm.device, 0) + 1
        rows = []
        for device, row in sorted(seen.items()):
            row["agent"] = ", ".join(sorted(a for a in row.pop("agents") if a))
            model = row["model"]
            if model not in self._health_points:
                self._health_points[model] = _health_points(model)
            row.update({"point": None, "last_read": None, "age_s": None, "health": "unknown"})
            for point in self._health_points[model]:
                try:
                    ts, values = self.store.read_series(
                        row["kind"], device, point, now - round(DEVICE_LOOKBACK_S * NS_PER_S), now + 1
                    )
                except StoreError:
                    continue
                if not ts.size:
                    continue
                age = (now - int(ts[-1])) / NS_PER_S
                row.update(point=point, last_read=_iso(int(ts[-1]), self.tz), age_s=round(max(age, 0.0), 1))
                if age > stale_s:
                    row["health"] = "stale"
                elif not math.isfinite(float(values[-1])):
                    row["health"] = "failing"
                else:
                    row["health"] = "ok"
                break
            row["alarms"] = active.get(device, 0)
            rows.append(row)
        return {"site": self.site, "stale_after_s": stale_s, "devices": rows}


STORED_OPTIMIZER_FIELDS: Final = (
    "fallback",
    "predicted_plant_kw",
    "baseline_plant_kw",
    "predicted_saving_kw",
    "recommended_chw_supply_c",
    "recommended_cw_setpoint_c",
    "recommended_chw_pump_pct",
    "recommended_cw_pump_pct",
)


def _optimizer_summary(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The headline figures of an optimiser decision (the ``optimizer`` topic's payload)."""
    rec = doc.get("recommendation") or {}
    setpoints = rec.get("setpoints") or {}
    out: dict[str, Any] = {
        "mode": doc.get("mode"),
        "fallback": doc.get("fallback"),
        "reasons": "; ".join(doc.get("reasons") or []) or None,
        "predicted_plant_kw": rec.get("predicted_plant_kw"),
        "baseline_plant_kw": rec.get("baseline_plant_kw"),
        "predicted_saving_kw": rec.get("predicted_saving_kw"),
        "predicted_saving_pct": rec.get("predicted_saving_pct"),
    }
    out.update({f"recommended_{k}": v for k, v in setpoints.items()})
    return out


# ---------------------------------------------------------------- HTTP


def _minutes(query: Mapping[str, list[str]]) -> float:
    values = query.get("minutes")
    if not values:
        return DEFAULT_MINUTES
    try:
        minutes = float(values[-1])
    except ValueError:
        raise ValueError(f"minutes={values[-1]!r} is not a number") from None
    if not 0 < minutes <= MAX_MINUTES or not math.isfinite(minutes):
        raise ValueError(f"minutes={values[-1]!r} is not between 0 and {MAX_MINUTES:g}")
    return minutes


ENDPOINTS: Final[dict[str, str]] = {
    "/": "the dashboard (HTML)",
    "/api/pue?minutes=M": "live facility/IT power ratio over time and the latest stored PUE per period",
    "/api/plant?minutes=M": "plant (cooling meters) power over time, kW",
    "/api/availability": "the month so far against its downtime budget",
    "/api/outages": "the month's outages",
    "/api/optimizer": "the chiller-plant optimiser's state and recommendation",
    "/api/alarms": "active alarms",
    "/api/devices": "devices, their last read and health",
    "/api/status": "the collector's own counters",
}


class _Handler(BaseHTTPRequestHandler):
    """GET and HEAD only; JSON answers, errors as {"error": ...}."""

    server: DashboardServer
    timeout = REQUEST_TIMEOUT_S
    server_version = "dcim-collector"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (the stdlib's signature)
        """Requests go to the debug log, not to stderr."""
        if log.isEnabledFor(logging.DEBUG):
            log.debug("dashboard %s: %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str, extra: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, doc: Any) -> None:
        body = json.dumps(doc, allow_nan=False, default=str).encode()
        self._send(status, body, "application/json; charset=utf-8")

    def _route(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        data = self.server.data
        path = url.path.rstrip("/") or "/"
        if path == "/":
            self._send(
                HTTPStatus.OK,
                page(),
                "text/html; charset=utf-8",
                {
                    "Content-Security-Policy": (
                        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                        "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'"
                    )
                },
            )
            return
        if path == "/api":
            self._json(HTTPStatus.OK, {"endpoints": ENDPOINTS})
            return
        routes: dict[str, Callable[[], Any]] = {
            "/api/pue": lambda: data.cached(f"pue:{_minutes(query)}", lambda: data.pue(_minutes(query))),
            "/api/plant": lambda: data.cached(f"plant:{_minutes(query)}", lambda: data.plant(_minutes(query))),
            "/api/availability": data.availability,
            "/api/outages": data.outages,
            "/api/optimizer": data.optimizer,
            "/api/alarms": data.alarms,
            "/api/devices": lambda: data.cached("devices", data.devices),
            "/api/status": data.status,
        }
        handler = routes.get(path)
        if handler is None:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint {url.path!r}; see /api"})
            return
        try:
            doc = handler()
        except ValueError as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
        except (StoreError, reports.UsageError) as exc:
            log.warning("dashboard %s: %s", path, exc)
            self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"store: {exc}"})
        except Exception:  # one failing endpoint must not take the page (or the collector) down
            log.exception("dashboard %s failed", path)
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error; see the collector's log"})
        else:
            self._json(HTTPStatus.OK, doc)

    def do_GET(self) -> None:
        """Serve the page or an API answer."""
        self._route()

    def do_HEAD(self) -> None:
        """Like GET, without the body."""
        self._route()

    def _refuse(self) -> None:
        self._send(
            HTTPStatus.METHOD_NOT_ALLOWED,
            json.dumps({"error": "read-only: GET and HEAD only"}).encode(),
            "application/json; charset=utf-8",
            {"Allow": "GET, HEAD"},
        )

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse  # noqa: N815


class DashboardServer(ThreadingHTTPServer):
    """The dashboard's HTTP server (one thread per request, daemon threads)."""

    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], data: DashboardData) -> None:
        self.data = data
        host = address[0]
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__(address, _Handler)


class Dashboard:
    """The running dashboard: start() binds and serves in a thread, stop() shuts it down."""

    def __init__(self, service: Service, host: str, port: int) -> None:
        self.data = DashboardData(service)
        self.host = host
        self.requested_port = port
        self.server: DashboardServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the chosen one when 0 was asked for)."""
        if self.server is None:
            return self.requested_port
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        """Where the page is."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        """Bind (DashboardError naming the address when it cannot) and serve in a daemon thread."""
        try:
            self.server = DashboardServer((self.host, self.requested_port), self.data)
        except OSError as exc:
            raise DashboardError(f"--http {self.host}:{self.requested_port}: cannot listen: {exc}") from exc
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.5}, name="dashboard", daemon=True
        )
        self._thread.start()
        log.info("dashboard on %s (read-only)", self.url)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self.server is None:
            return
        self.server.shutdown()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=REQUEST_TIMEOUT_S)
        self.server = None


def start(service: Service, address: str | None) -> Dashboard | None:
    """Start the dashboard for ``--http HOST:PORT`` (None without one)."""
    if not address:
        return None
    host, port = parse_address(address)
    dashboard = Dashboard(service, host, port)
    dashboard.start()
    return dashboard


def stop(dashboard: Dashboard | None) -> None:
    """Stop a dashboard started by :func:`start`."""
    if dashboard is not None:
        with contextlib.suppress(OSError):
            dashboard.stop()


# ---------------------------------------------------------------- the page


def page() -> bytes:
    """The dashboard page (package data ``collector/dashboard.html``), read once."""
    global _PAGE  # noqa: PLW0603  (a cache of one read-only file)
    if _PAGE is None:
        _PAGE = resources.files("collector").joinpath(PAGE_FILE).read_bytes()
    return _PAGE


PAGE_FILE: Final = "dashboard.html"
_PAGE: bytes | None = None
