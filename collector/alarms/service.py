"""The collector's alarm service: engine, lifecycle, store, MQTT publishing and webhooks together."""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Protocol

import msgspec

from collector.alarms.engine import Engine, PeriodsOf, Signal
from collector.alarms.lifecycle import Alarm, AlarmState, Lifecycle, Transition, TransitionType
from collector.alarms.notify import Maintenance, Notifier
from collector.alarms.settings import AlarmsSection, alarm_paths
from collector.alarms.store import AlarmStore
from models import catalog
from models.errors import ConfigError
from models.telemetry import Batch, Event, alarm_topic

log = logging.getLogger(__name__)


class Publish(Protocol):
    """Hands a message to the MQTT client (QoS 1); raises when it cannot."""

    def __call__(self, topic: str, payload: bytes, *, retain: bool) -> None:
        """Publish one message."""


PRUNE_EVERY_S: Final = 3600.0
_ENCODE: Final = msgspec.json.Encoder()


@functools.cache
def catalog_periods(model_id: str) -> Mapping[str, float]:
    """Report periods (`period_s`) of a catalog model's points; empty for unknown models."""
    try:
        model = catalog.load(model_id)
    except (ConfigError, OSError, ValueError):
        return {}
    return {p.name: p.period_s for p in model.points if p.period_s is not None}


def retained_topic(site: str, alarm_id: str) -> str:
    """Where an active alarm's state is retained: dcim/v1/{site}/alarm/{id}."""
    return f"{alarm_topic(site)}/{alarm_id}"


class AlarmService:
    """Alarms for one collector.

    Call :meth:`on_batch` for every decoded batch after the store write, :meth:`on_event`
    for every agent event, and :meth:`tick` every `tick_s` seconds. Each returns the
    transitions it caused, already stored, published through `publish` (the transition
    on dcim/v1/{site}/alarm; the alarm retained on dcim/v1/{site}/alarm/{id} while active,
    an empty retained message once cleared) and queued for the webhooks.

    Blocking (SQLite on transitions, a few ms): call it from a worker thread, not the event
    loop. Thread-safe.
    """

    def __init__(
        self,
        section: AlarmsSection,
        *,
        base_dir: Path = Path(),
        store_path: Path | None = None,
        timezone: str = "UTC",
        publish: Publish | None = None,
        periods: PeriodsOf = catalog_periods,
        now: float | None = None,
    ) -> None:
        self.section = section
        self.publish = publish
        db, dead_letter = alarm_paths(section, store_path=store_path, base=base_dir)
        self.store = AlarmStore(db)
        self.engine = Engine(section.all_rules(), section.overrides, periods)
        self.lifecycle = Lifecycle(section.reraise_window_s)
        self.maintenance = Maintenance(section.maintenance, section.rooms, timezone)
        self.notifier = Notifier(section.webhooks, dead_letter, base_dir)
        self._lock = threading.RLock()
        self._last_prune = 0.0
        self.transitions = 0
        self.publish_errors = 0
        self._restore(time.time() if now is None else now)

    # -------------------------------------------------------- inputs

    def on_batch(self, batch: Batch) -> list[Transition]:
        """Evaluate a batch; the transitions it caused."""
        with self._lock:
            return self._apply(self.engine.on_batch(batch, time.time()))

    def on_messages(self, messages: Sequence[object]) -> list[Transition]:
        """Evaluate the batches and events of one store write together; the transitions they caused.

        The same transitions, in the same order, as on_batch and on_event one message at a
        time, but recorded in one transaction and published in one pass. A message the engine
        fails on is logged with its device and skipped; the others are evaluated.
        """
        with self._lock:
            signals: list[Signal] = []
            received = time.time()
            for message in messages:
                try:
                    if isinstance(message, Batch):
                        signals += self.engine.on_batch(message, received)
                    elif isinstance(message, Event):
                        signals += self.engine.on_event(message)
                except Exception:
                    log.exception(
                        "alarm evaluation failed for a message from device %s", getattr(message, "device", "?")
                    )
            return self._apply(signals)

    def on_event(self, event: Event) -> list[Transition]:
        """Take an agent event (an SNMP trap) as alarm input."""
        with self._lock:
            return self._apply(self.engine.on_event(event))

    def tick(self, now: float | None = None) -> list[Transition]:
        """Periodic work: staleness without batches, maintenance ends, acknowledgements from the CLI."""
        now = time.time() if now is None else now
        with self._lock:
            out = self._apply(self.engine.tick(now), flush=False)
            unsuppressed = []
            for alarm in list(self.lifecycle.active.values()):
                if alarm.suppressed and not self.maintenance.covering(alarm.device, now):
                    t = self.lifecycle.unsuppress(alarm.id, now)
                    if t is not None:
                        unsuppressed.append(t)
            if unsuppressed:
                out += self._record(unsuppressed)
            self.lifecycle.prune(now)
            self._flush()
            if now - self._last_prune > PRUNE_EVERY_S:
                self._last_prune = now
                gone = self.store.prune(now - self.section.retention_days * 86400.0)
                if gone:
                    log.info("alarm database: %d old cleared alarms removed", gone)
            return out

    def ack(self, alarm_id: str, by: str, comment: str = "", now: float | None = None) -> Transition:
        """Acknowledge an alarm (id or unique prefix); AlarmError when that is not possible."""
        now = time.time() if now is None else now
        with self._lock:
            transition = self.store.acknowledge(alarm_id, by, comment, now)
            self._flush()
            return transition

    def active(self) -> list[Alarm]:
        """Active alarms, most urgent first (for a dashboard)."""
        with self._lock:
            alarms = list(self.lifecycle.active.values())
        alarms.sort(key=lambda a: (a.severity.rank, -a.raised_ts))
        return alarms

    def stats(self) -> dict[str, float]:
        """Counters for the collector's self-metrics."""
        with self._lock:
            return {
                "alarms_active": float(len(self.lifecycle.active)),
                "alarm_transitions": float(self.transitions),
                "alarm_batches": float(self.engine.batches),
                "alarm_batches_skipped": float(self.engine.skipped),
                "alarm_publish_errors": float(self.publish_errors),
                "webhooks_sent": float(self.notifier.sent),
                "webhooks_failed": float(self.notifier.failed),
            }

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver queued webhooks, then close the database."""
        self.notifier.close(timeout_s)
        self.store.close()

    # -------------------------------------------------------- internals

    def _restore(self, now: float) -> None:
        """Reload active and recent alarms after a restart; clear those whose rule is gone."""
        window = max(self.section.reraise_window_s, *(r.reraise_window_s or 0.0 for r in self.engine.rules))
        alarms = self.store.alarms(since_ts=now - window)
        self.lifecycle.load(alarms)
        orphans: list[Signal] = []
        rules = {r.id: r for r in self.engine.rules}
        for alarm in alarms:
            if not alarm.active:
                continue
            site, device, rule_id, subject = alarm.key
            if self.engine.seed(
                site, device, rule_id, subject, model=alarm.model, kind=alarm.kind, since=alarm.updated_ts
            ):
                continue
            rule = rules.get(alarm.rule)
            if rule is None:
                log.warning("alarm %s: rule %s no longer exists: clearing it", alarm.id, alarm.rule)
                self._clear_orphan(alarm, now)
                continue
            orphans.append(
                Signal(
                    active=False,
                    site=alarm.site,
                    device=alarm.device,
                    rule=rule,
                    subject=alarm.subject,
                    ts=now,
                    message=alarm.message,
                    cause="tick",
                )
            )
        self._apply(orphans)
        self._flush()

    def _clear_orphan(self, alarm: Alarm, now: float) -> None:
        cleared = dataclasses.replace(alarm, state=AlarmState.CLEARED, cleared_ts=now, updated_ts=now)
        self._record([Transition(TransitionType.CLEARED, now, cleared, by="collector", comment="rule removed")])

    def _apply(self, signals: list[Signal], flush: bool = True) -> list[Transition]:
        if not signals:
            return []
        transitions = []
        for s in signals:
            maintenance = self.maintenance.covering(s.device, s.ts) if s.active else ""
            t = self.lifecycle.apply(s, maintenance)
            if t is not None:
                transitions.append(t)
        out = self._record(transitions)
        if flush and out:
            self._flush()
        return out

    def _record(self, transitions: list[Transition]) -> list[Transition]:
        if not transitions:
            return []
        stored = self.store.record(transitions)
        # The lifecycle holds each alarm as its last transition left it; the store may have
        # added to it (an acknowledgement made elsewhere). Take the newest copy of each alarm.
        newest = {t.alarm.id: t.alarm for t in stored}
        for alarm in newest.values():
            self.lifecycle.update(alarm)
        for t in stored:
            log.info(
                "alarm %s %s: %s %s (%s)",
                t.alarm.id,
                t.type.value,
                t.alarm.severity.value,
                t.alarm.message,
                "suppressed by maintenance" if t.alarm.suppressed else t.alarm.device,
            )
        self.transitions += len(stored)
        return stored

    def _flush(self) -> None:
        """Publish and notify every stored transition not yet published, in order."""
        while True:
            pending = self.store.unpublished()
            if not pending:
                return
            done: list[int] = []
            try:
                for seq, t in pending:
                    self._publish(t)
                    if t.type is TransitionType.ACKNOWLEDGED:
                        self.lifecycle.update(t.alarm)
                    self.notifier.submit(t)
                    done.append(seq)
            except Exception:  # the client's failure must not stop alarm evaluation
                self.publish_errors += 1
                log.exception("alarm transitions could not be published; they stay queued")
                return
            finally:
                self.store.mark_published(done)

    def _publish(self, t: Transition) -> None:
        if self.publish is None:
            return
        site = t.alarm.site
        self.publish(alarm_topic(site), t.to_json(), retain=False)
        retained: bytes = b""
        if t.alarm.active:
            state: dict[str, Any] = {"v": 1, **t.alarm.to_dict()}
            retained = _ENCODE.encode(state)
        self.publish(retained_topic(site, t.alarm.id), retained, retain=True)
