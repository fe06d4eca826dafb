"""The agent's own telemetry: per-device poll health, spool, MQTT and memory, as batches of device "agent"."""

from __future__ import annotations

import os
import resource
import sys
from dataclasses import dataclass

from agent.config import HEALTH_DEVICE_ID
from agent.spool import SpoolStats
from models import telemetry

HEALTH_DEVICE = HEALTH_DEVICE_ID  # the pseudo-device id; no configured device may use it
HEALTH_MODEL = "dcim-agent"
HEALTH_KIND = "generic"
DEVICES_TABLE = "devices"
# Rows per batch, so that a thousand devices stay far below the wire format's payload limit.
ROWS_PER_BATCH = 200
MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class DeviceHealth:
    """How polling one device goes."""

    device: str
    polls_ok: int = 0  # polls with at least one good point
    polls_failed: int = 0  # polls without any good point, or with a device-level error
    missed: int = 0  # scheduled polls that did not start (the previous one still ran, or the loop was late)
    latency_ms: float | None = None  # duration of the last poll
    points_good: int = 0  # in the last poll
    points_bad: int = 0
    last_error: str = ""  # of the last failed poll; "" once a poll succeeds


@dataclass(frozen=True, slots=True)
class AgentHealth:
    """A snapshot of the whole agent."""

    uptime_s: float
    devices: tuple[DeviceHealth, ...]
    spool: SpoolStats
    mqtt_connected: bool
    published: int  # batches acknowledged by the broker since start
    replayed: int  # batches sent from the backlog since start
    commands_ok: int
    commands_refused: int
    memory_rss_bytes: int | None
    spool_failed: int = 0  # batches the spool could not store (disk full, I/O error): lost, since start

    @property
    def failing(self) -> int:
        """Devices whose last poll failed."""
        return sum(1 for d in self.devices if d.last_error)


def memory_rss_bytes() -> int | None:
    """Resident memory of this process (Linux /proc), else the peak from getrusage."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:  # noqa: PTH123  (a tiny procfs read)
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _p(value: telemetry.Scalar, unit: str = "", *, counter: bool = False) -> telemetry.Point:
    if value is None:
        return telemetry.Point(None, unit, "not_available", counter)
    return telemetry.Point(value, unit, "good", counter)


def _agent_points(h: AgentHealth) -> dict[str, telemetry.Point]:
    rss = h.memory_rss_bytes
    return {
        "uptime": _p(round(h.uptime_s, 3), "s"),
        "memory_rss": _p(None if rss is None else round(rss / MB, 3), "MiB"),
        "devices": _p(len(h.devices), "count"),
        "devices_failing": _p(h.failing, "count"),
        "polls_missed": _p(sum(d.missed for d in h.devices), "count", counter=True),
        "mqtt_connected": _p(h.mqtt_connected),
        "published": _p(h.published, "count", counter=True),
        "replayed": _p(h.replayed, "count", counter=True),
        "spool_depth": _p(h.spool.depth, "count"),
        "spool_size": _p(round(h.spool.bytes / MB, 3), "MiB"),
        "spool_max": _p(round(h.spool.max_bytes / MB, 3), "MiB"),
        "spool_dropped": _p(h.spool.dropped, "count", counter=True),
        "spool_dropped_oldest": _p(h.spool.dropped_oldest, "count", counter=True),
        "spool_dropped_newest": _p(h.spool.dropped_newest, "count", counter=True),
        "spool_failed": _p(h.spool_failed, "count", counter=True),
        "commands_ok": _p(h.commands_ok, "count", counter=True),
        "commands_refused": _p(h.commands_refused, "count", counter=True),
    }


def _device_row(d: DeviceHealth) -> telemetry.Row:
    return {
        "latency": _p(None if d.latency_ms is None else round(d.latency_ms, 3), "ms"),
        "polls_ok": _p(d.polls_ok, "count", counter=True),
        "polls_failed": _p(d.polls_failed, "count", counter=True),
        "missed": _p(d.missed, "count", counter=True),
        "points_good": _p(d.points_good, "count"),
        "points_bad": _p(d.points_bad, "count"),
        "last_error": _p(d.last_error),
    }


def health_batch(site: str, agent: str, ts: float, health: AgentHealth, *, part: int, seq: int) -> telemetry.Batch:
    """Health batch number `part` of this snapshot (see batch_count); part 0 carries the agent's points."""
    chunk = health.devices[part * ROWS_PER_BATCH : (part + 1) * ROWS_PER_BATCH]
    return telemetry.Batch(
        site=site,
        agent=agent,
        device=HEALTH_DEVICE,
        model=HEALTH_MODEL,
        kind=HEALTH_KIND,
        seq=seq,
        ts=ts,
        points=_agent_points(health) if part == 0 else {},
        tables={DEVICES_TABLE: {d.device: _device_row(d) for d in chunk}} if chunk else {},
    )


def batch_count(health: AgentHealth) -> int:
    """How many batches to_batches makes for this snapshot."""
    return max(1, -(-len(health.devices) // ROWS_PER_BATCH))


def status_line(health: AgentHealth) -> str:
    """A one-line summary for systemd's STATUS=."""
    n = len(health.devices)
    rss = health.memory_rss_bytes
    return (
        f"{n} devices, {n - health.failing} ok, {health.failing} failing; "
        f"mqtt {'connected' if health.mqtt_connected else 'DISCONNECTED'}; "
        f"spool {health.spool.depth} batches, {health.spool.dropped} dropped"
        f"{f', {health.spool_failed} NOT SPOOLED' if health.spool_failed else ''}; "
        f"rss {'?' if rss is None else f'{rss / MB:.0f} MB'}"
    )
