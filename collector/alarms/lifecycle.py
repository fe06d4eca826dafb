"""Alarm lifecycle: raised, acknowledged (by whom, why), cleared; re-raise window; severities."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import msgspec

from collector.alarms.engine import Key, Signal
from collector.alarms.rules import Scalar, Severity

WIRE_VERSION: Final = 1
DEFAULT_RERAISE_WINDOW_S: Final = 300.0


class AlarmError(ValueError):
    """A lifecycle step that is not allowed (unknown alarm, already acknowledged, ...)."""


class AlarmNotFoundError(AlarmError):
    """No alarm has that id (or the id prefix is ambiguous, or not an id at all)."""


class AlarmState(StrEnum):
    """Where an alarm is in its life."""

    RAISED = "raised"
    ACKNOWLEDGED = "acknowledged"
    CLEARED = "cleared"


class TransitionType(StrEnum):
    """What happened to an alarm."""

    RAISED = "raised"  # a new alarm
    RERAISED = "reraised"  # the same alarm again, inside its re-raise window
    ACKNOWLEDGED = "acknowledged"
    CLEARED = "cleared"
    UNSUPPRESSED = "unsuppressed"  # raised during maintenance, still active after it


@dataclass(frozen=True, slots=True)
class Alarm:
    """One alarm: a rule on a subject of a device, from raise to clear."""

    id: str
    site: str
    device: str
    rule: str
    subject: str
    severity: Severity
    state: AlarmState
    message: str
    raised_ts: float
    updated_ts: float
    value: Scalar | None = None
    unit: str = ""
    model: str = ""
    kind: str = ""
    acked: bool = False
    acked_by: str = ""
    acked_ts: float | None = None
    ack_comment: str = ""
    cleared_ts: float | None = None
    count: int = 1  # raises, re-raises inside the window included
    suppressed: bool = False  # raised during maintenance: no notifications
    maintenance: str = ""  # the maintenance window that suppressed it

    @property
    def active(self) -> bool:
        """Raised or acknowledged, not cleared."""
        return self.state is not AlarmState.CLEARED

    @property
    def key(self) -> Key:
        """(site, device, rule, subject)."""
        return (self.site, self.device, self.rule, self.subject)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready mapping."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Alarm:
        """Inverse of :meth:`to_dict`."""
        return msgspec.convert(data, cls)


@dataclass(frozen=True, slots=True)
class Transition:
    """One step of an alarm's life, with the alarm as it is after the step."""

    type: TransitionType
    ts: float
    alarm: Alarm
    by: str = ""
    comment: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The published and stored form (wire version `v`)."""
        return {
            "v": WIRE_VERSION,
            "type": self.type.value,
            "ts": self.ts,
            "by": self.by,
            "comment": self.comment,
            "alarm": self.alarm.to_dict(),
        }

    def to_json(self) -> bytes:
        """JSON bytes of :meth:`to_dict`."""
        return msgspec.json.encode(self.to_dict())

    @classmethod
    def from_json(cls, payload: bytes) -> Transition:
        """Inverse of :meth:`to_json`."""
        data = msgspec.json.decode(payload)
        return cls(
            type=TransitionType(data["type"]),
            ts=float(data["ts"]),
            alarm=Alarm.from_dict(data["alarm"]),
            by=data.get("by", ""),
            comment=data.get("comment", ""),
        )


def alarm_id(key: Key, raised_ts: float) -> str:
    """A short stable id: 12 hex digits of a hash of the instance and the raise time."""
    text = "/".join(key) + f"/{raised_ts!r}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def acknowledge(alarm: Alarm, by: str, comment: str, ts: float) -> Transition:
    """Acknowledge an alarm (active, or cleared but never acknowledged)."""
    by = by.strip()
    if not by:
        raise AlarmError("an acknowledgement needs a name (--by)")
    if alarm.acked:
        when = f" at {alarm.acked_ts}" if alarm.acked_ts is not None else ""
        raise AlarmError(f"alarm {alarm.id} is already acknowledged by {alarm.acked_by}{when}")
    state = AlarmState.ACKNOWLEDGED if alarm.active else AlarmState.CLEARED
    acked = dataclasses.replace(
        alarm, state=state, acked=True, acked_by=by, acked_ts=ts, ack_comment=comment, updated_ts=ts
    )
    return Transition(TransitionType.ACKNOWLEDGED, ts, acked, by=by, comment=comment)


class Lifecycle:
    """In-memory alarms of the engine's instances: turns signals into transitions.

    A signal that raises an instance whose alarm cleared less than the rule's re-raise
    window ago reopens that alarm (a "reraised" transition, same id, count + 1) instead
    of creating a new one.
    """

    def __init__(self, reraise_window_s: float = DEFAULT_RERAISE_WINDOW_S) -> None:
        self.reraise_window_s = reraise_window_s
        self.active: dict[Key, Alarm] = {}
        self.recent: dict[Key, Alarm] = {}  # cleared, still inside their re-raise window
        self._by_id: dict[str, Key] = {}

    def window_of(self, signal: Signal) -> float:
        """The re-raise window of the signal's rule."""
        w = signal.rule.reraise_window_s
        return self.reraise_window_s if w is None else w

    def apply(self, signal: Signal, maintenance: str = "") -> Transition | None:
        """The transition a signal causes (None when it changes nothing).

        `maintenance` names the maintenance window covering the device now, if any: an
        alarm raised inside one is marked suppressed.
        """
        key = signal.key
        if signal.active:
            if key in self.active:
                return None
            previous = self.recent.pop(key, None)
            if previous is not None and signal.ts - (previous.cleared_ts or 0.0) <= self.window_of(signal):
                alarm = dataclasses.replace(
                    previous,
                    state=AlarmState.RAISED,
                    severity=signal.rule.severity,
                    message=signal.message,
                    value=signal.value,
                    unit=signal.unit,
                    updated_ts=signal.ts,
                    cleared_ts=None,
                    acked=False,
                    acked_by="",
                    acked_ts=None,
                    ack_comment="",
                    count=previous.count + 1,
                    suppressed=bool(maintenance) or previous.suppressed,
                    maintenance=maintenance or previous.maintenance,
                )
                kind = TransitionType.RERAISED
            else:
                alarm = Alarm(
                    id=alarm_id(key, signal.ts),
                    site=signal.site,
                    device=signal.device,
                    rule=signal.rule.id,
                    subject=signal.subject,
                    severity=signal.rule.severity,
                    state=AlarmState.RAISED,
                    message=signal.message,
                    raised_ts=signal.ts,
                    updated_ts=signal.ts,
                    value=signal.value,
                    unit=signal.unit,
                    model=signal.model,
                    kind=signal.kind,
                    suppressed=bool(maintenance),
                    maintenance=maintenance,
                )
                kind = TransitionType.RAISED
            self._track(alarm)
            return Transition(kind, signal.ts, alarm)
        current = self.active.get(key)
        if current is None:
            return None
        cleared = dataclasses.replace(
            current, state=AlarmState.CLEARED, cleared_ts=signal.ts, updated_ts=signal.ts, value=signal.value
        )
        self._track(cleared)
        return Transition(TransitionType.CLEARED, signal.ts, cleared)

    def acknowledge(self, alarm_id: str, by: str, comment: str, ts: float) -> Transition:
        """Acknowledge an alarm this lifecycle holds."""
        alarm = self.get(alarm_id)
        if alarm is None:
            raise AlarmError(f"no active or recent alarm {alarm_id}")
        transition = acknowledge(alarm, by, comment, ts)
        self._track(transition.alarm)
        return transition

    def unsuppress(self, alarm_id: str, ts: float) -> Transition | None:
        """An alarm raised during maintenance that outlived it: notify now."""
        alarm = self.get(alarm_id)
        if alarm is None or not alarm.active or not alarm.suppressed:
            return None
        alarm = dataclasses.replace(alarm, suppressed=False, updated_ts=ts)
        self._track(alarm)
        return Transition(TransitionType.UNSUPPRESSED, ts, alarm)

    def get(self, alarm_id: str) -> Alarm | None:
        """An active or recently cleared alarm by id."""
        key = self._by_id.get(alarm_id)
        if key is None:
            return None
        alarm = self.active.get(key) or self.recent.get(key)
        return alarm if alarm is not None and alarm.id == alarm_id else None

    def update(self, alarm: Alarm) -> None:
        """Take a newer copy of an alarm (e.g. acknowledged from another process)."""
        held = self.active.get(alarm.key) or self.recent.get(alarm.key)
        if held is not None and held.id == alarm.id:
            self._track(alarm)

    def load(self, alarms: list[Alarm]) -> None:
        """Alarms from the store after a restart: active ones and recently cleared ones."""
        for alarm in sorted(alarms, key=lambda a: a.updated_ts):
            self._track(alarm)

    def prune(self, now: float) -> None:
        """Forget cleared alarms whose re-raise window has passed (the longest window is kept)."""
        for key, alarm in list(self.recent.items()):
            if now - (alarm.cleared_ts or 0.0) > max(self.reraise_window_s, _MAX_RULE_WINDOW_S):
                del self.recent[key]
                self._by_id.pop(alarm.id, None)

    def _track(self, alarm: Alarm) -> None:
        held = self.active.get(alarm.key) or self.recent.get(alarm.key)
        if held is not None and held.id != alarm.id:
            self._by_id.pop(held.id, None)
        if alarm.active:
            self.active[alarm.key] = alarm
            self.recent.pop(alarm.key, None)
        else:
            self.active.pop(alarm.key, None)
            self.recent[alarm.key] = alarm
        self._by_id[alarm.id] = alarm.key


# Cleared alarms are remembered this long at least, so per-rule windows longer than the
# default still find them.
_MAX_RULE_WINDOW_S: Final = 24 * 3600.0
