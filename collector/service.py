"""The collector service behind ``dcim-collector run``: ingest, writer, self-metrics, sd_notify."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from typing import Any, Final

import numpy as np

from collector import http as dashboard_http
from collector import jobs as analytics_jobs
from collector import sdnotify
from collector.alarms.hook import EvaluatingStore, run_ticks
from collector.alarms.service import AlarmService
from collector.config import CollectorConfig, LoadedConfig
from collector.ingest import Ingest, Metrics, Writer
from collector.mqtt import Subscriber, Token
from collector.store import METRICS_MEASUREMENT, Store, StoreError, create_store

log = logging.getLogger(__name__)

# Rates and gauges written as the collector's own measurement each metrics interval.
_COUNTERS: Final = (
    "received_messages",
    "received_values",
    "rejected",
    "duplicates",
    "seq_resets",
    "dead_letters",
    "written_messages",
    "written_values",
    "writes",
    "write_errors",
    "store_rejects",
    "queue_full",
)


class JsonFormatter(logging.Formatter):
    """One JSON object per log record (for journald and log shippers)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON line."""
        data: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("device", "agent", "topic", "elapsed_ms"):
            if key in record.__dict__:
                data[key] = record.__dict__[key]
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def configure_logging(config: CollectorConfig, verbose: bool = False) -> None:
    """Log as the [collector] section says: text to stderr, or JSON lines to stdout."""
    level = logging.DEBUG if verbose else getattr(logging, config.collector.log_level.upper())
    if config.collector.log_format == "json":
        handler: logging.Handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(JsonFormatter())
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


class Collector:
    """One running collector: MQTT subscriber → ingest queue → writer → store.

    ``store`` replaces the configured store (tests use it to share one store object).
    """

    def __init__(self, loaded: LoadedConfig, store: Store | None = None, http: str | None = None) -> None:
        self.loaded = loaded
        self.http = http  # dashboard: `run --http HOST:PORT` (collector/http.py)
        cfg = loaded.config
        self.config = cfg
        self.store = store or create_store(cfg.store)
        self.metrics = Metrics()
        self.client_id = cfg.mqtt.client_id or f"dcim-collector-{cfg.collector.id}"
        self.subscriber = Subscriber(
            cfg.mqtt,
            client_id=self.client_id,
            site=cfg.collector.site,
            receive_maximum=cfg.ingest.queue_max_messages,
            on_message=self._on_message,
            on_subscribed=self._on_subscribed,
        )
        self.ingest = Ingest(cfg.collector.id, cfg.collector.site, cfg.ingest, self.subscriber, self.metrics)
        # Alarms (collector/alarms, docs/alarms.md): evaluated on what the store has just taken.
        self.alarms: AlarmService | None = None
        writer_store: Store = self.store
        if cfg.alarms.enabled:
            self.alarms = AlarmService(
                cfg.alarms,
                base_dir=loaded.path.parent,
                store_path=cfg.store.path if cfg.store.kind == "sqlite" else None,
                timezone=cfg.collector.timezone,
                publish=self.subscriber.publish,
            )
            writer_store = EvaluatingStore(self.store, self.alarms)
        self.writer = Writer(self.ingest, writer_store)
        self.stop_event = asyncio.Event()
        self.ready = asyncio.Event()
        self.subscribed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: tuple[float, dict[str, Any]] | None = None

    def _on_message(self, topic: str, payload: bytes, token: Token) -> bool:
        return self.ingest.offer(topic, payload, token)

    def _on_subscribed(self) -> None:
        """From paho's thread: the subscriptions are in place (after each connect)."""
        sdnotify.notify(f"STATUS=subscribed to {', '.join(self.subscriber.filters)}")
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.subscribed.set)

    def stop(self) -> None:
        """Ask the service to stop (thread-unsafe: call from the event loop)."""
        self.stop_event.set()

    async def run(self, handle_signals: bool = False) -> int:
        """Run until stop() (or SIGTERM/SIGINT when handle_signals); 0 on a clean stop."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop_event.set)
        try:
            await asyncio.to_thread(self.store.open)
        except StoreError as exc:
            # Start anyway: messages wait unacknowledged in the broker until the store answers.
            log.warning("store %r is not available yet: %s", self.store, exc)
        writer = asyncio.create_task(self.writer.run(), name="collector-writer")
        metrics = asyncio.create_task(self._metrics_loop(), name="collector-metrics")
        watchdog = asyncio.create_task(self._watchdog_loop(), name="collector-watchdog")
        tasks = [metrics, watchdog]
        if self.alarms is not None:  # alarms: staleness, maintenance ends, CLI acknowledgements
            tasks.append(asyncio.create_task(run_ticks(self.alarms, self.config.alarms.tick_s), name="alarm-ticks"))
        # Analytics jobs (collector/jobs.py, docs/reports.md): energy and PUE, availability, burn rates, settlement.
        analytics = analytics_jobs.start(self.config, self.store, publish=self.subscriber.publish)
        # Chiller-plant optimiser (collector/optimizer_service.py, docs/optimizer.md).
        optimizer = None
        if self.config.optimizer is not None and self.config.optimizer.mode != "off":
            # Imported only when used: the optimiser brings scipy (start-up time and memory).
            from collector import optimizer_service  # noqa: PLC0415

            optimizer = optimizer_service.start(self.config, self.store, publish=self.subscriber.publish)
        # Read-only web dashboard (collector/http.py, docs/cli-dcim-collector.md): `run --http HOST:PORT`.
        self.optimizer = optimizer
        dashboard = dashboard_http.start(self, self.http)
        self.subscriber.start()
        log.info(
            "collector %s for site %s: broker %s:%d, store %r, subscribed to %s",
            self.config.collector.id,
            self.config.collector.site,
            self.subscriber.host,
            self.subscriber.port,
            self.store,
            ", ".join(self.subscriber.filters),
        )
        sdnotify.notify("READY=1", f"STATUS=collector {self.config.collector.id} started")
        self.ready.set()
        stopper = asyncio.create_task(self.stop_event.wait())
        done, _ = await asyncio.wait({writer, stopper}, return_when=asyncio.FIRST_COMPLETED)
        code = 0
        if writer in done and writer.exception() is not None:
            log.error("the writer failed", exc_info=writer.exception())
            code = 1
        await self._shutdown(writer)
        stopper.cancel()
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._write_metrics()
        analytics_jobs.stop(analytics)
        if optimizer is not None:
            from collector import optimizer_service  # noqa: PLC0415

            optimizer_service.stop(optimizer)
        await asyncio.to_thread(dashboard_http.stop, dashboard)
        self.subscriber.stop()
        await asyncio.to_thread(self.store.close)
        if self.alarms is not None:
            await asyncio.to_thread(self.alarms.close)
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        log.info("collector %s stopped", self.config.collector.id)
        return code

    async def _shutdown(self, writer: asyncio.Task[None]) -> None:
        """Stop taking messages, write what is queued (for a bounded time), keep the rest unacknowledged."""
        sdnotify.notify("STOPPING=1")
        self.subscriber.stop_receiving()
        self.ingest.queue.close()
        if not writer.done():
            try:
                await asyncio.wait_for(asyncio.shield(writer), timeout=self.config.ingest.drain_timeout_s)
            except TimeoutError:
                log.warning(
                    "store did not take the queued messages within %.0f s; %d stay unacknowledged in the broker",
                    self.config.ingest.drain_timeout_s,
                    len(self.ingest.queue),
                )
                self.writer.stop()
                with contextlib.suppress(Exception):
                    await writer

    # ------------------------------------------------------------ self-metrics

    def metrics_fields(self) -> dict[str, float]:
        """The current self-metrics: totals, rates per second since the last call, queue and latency."""
        now = time.monotonic()
        snap = self.metrics.snapshot()
        fields: dict[str, float] = {f"{k}_total": float(snap[k]) for k in _COUNTERS}
        if self._previous is not None:
            then, prev = self._previous
            span = max(now - then, 1e-9)
            fields["messages_per_s"] = (snap["received_messages"] - prev["received_messages"]) / span
            fields["values_per_s"] = (snap["received_values"] - prev["received_values"]) / span
            fields["written_values_per_s"] = (snap["written_values"] - prev["written_values"]) / span
            writes = snap["writes"] - prev["writes"]
            if writes > 0:
                fields["write_latency_ms"] = (snap["write_s_total"] - prev["write_s_total"]) / writes * 1000.0
        fields["write_latency_max_ms"] = snap["write_s_max"] * 1000.0
        fields["queue_depth"] = float(len(self.ingest.queue))
        fields["queue_capacity"] = float(self.ingest.queue.capacity)
        fields["store_up"] = 1.0 if snap["store_up"] else 0.0
        fields["mqtt_connected"] = 1.0 if self.subscriber.connected.is_set() else 0.0
        self._previous = (now, snap)
        return fields

    async def _write_metrics(self) -> dict[str, float]:
        fields = self.metrics_fields()
        tags = {"site": self.config.collector.site, "collector": self.config.collector.id}
        stamp = np.array([time.time_ns()], dtype=np.int64)
        columns = {k: np.array([v]) for k, v in fields.items()}
        try:
            await asyncio.to_thread(self.store.write_derived, METRICS_MEASUREMENT, tags, stamp, columns)
        except StoreError as exc:
            log.debug("self-metrics not stored: %s", exc)
        return fields

    async def _metrics_loop(self) -> None:
        interval = self.config.ingest.metrics_interval_s
        self.metrics_fields()
        while True:
            await asyncio.sleep(interval)
            f = await self._write_metrics()
            summary = (
                f"{f.get('messages_per_s', 0.0):.0f} msg/s, {f.get('values_per_s', 0.0):.0f} values/s, "
                f"queue {f['queue_depth']:.0f}/{f['queue_capacity']:.0f}, "
                f"rejected {f['rejected_total']:.0f}, duplicates {f['duplicates_total']:.0f}, "
                f"store {'up' if f['store_up'] else 'DOWN'}, mqtt {'up' if f['mqtt_connected'] else 'DOWN'}"
            )
            log.info("ingest: %s", summary)
            sdnotify.notify(f"STATUS={summary}")

    async def _watchdog_loop(self) -> None:
        interval = sdnotify.watchdog_interval_s()
        if interval is None:
            return
        stuck_after = 3 * self.config.store.timeout_s + self.config.ingest.retry_max_s
        while True:
            since = self.writer.in_write_since
            # Only while the writer makes progress: a store call hanging beyond its timeouts is a hang.
            if since is None or time.monotonic() - since < stuck_after:
                sdnotify.notify("WATCHDOG=1")
            await asyncio.sleep(interval)


def run(loaded: LoadedConfig, http: str | None = None) -> int:
    """Run the collector in this process until SIGTERM or SIGINT (with the dashboard on ``http``)."""
    collector = Collector(loaded, http=http)
    return asyncio.run(collector.run(handle_signals=True))
