"""Lifecycle: raise, acknowledge, clear, re-raise window; and its SQLite store across processes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from collector.alarms.engine import Signal
from collector.alarms.lifecycle import (
    AlarmError,
    AlarmNotFoundError,
    AlarmState,
    Lifecycle,
    Transition,
    TransitionType,
    acknowledge,
)
from collector.alarms.store import AlarmStore
from tests.collector.alarms.helpers import SITE, T0, rule

RULE = rule({"id": "on_battery", "severity": "critical", "condition": {"type": "state", "point": "s", "values": [1]}})


def sig(active: bool, ts: float, device: str = "ups-1", subject: str = "s", window: float | None = None) -> Signal:
    r = RULE if window is None else RULE.model_copy(update={"reraise_window_s": window})
    return Signal(active=active, site=SITE, device=device, rule=r, subject=subject, ts=ts, message="UPS on battery")


def test_raise_acknowledge_clear() -> None:
    life = Lifecycle(reraise_window_s=300)
    raised = life.apply(sig(True, T0))
    assert raised is not None
    assert (raised.type, raised.alarm.state, raised.alarm.severity) == ("raised", "raised", "critical")
    assert life.apply(sig(True, T0 + 5)) is None  # already active: nothing new
    acked = life.acknowledge(raised.alarm.id, "alice", "generator starting", T0 + 10)
    assert (acked.type, acked.alarm.state, acked.alarm.acked_by, acked.alarm.ack_comment) == (
        "acknowledged",
        "acknowledged",
        "alice",
        "generator starting",
    )
    with pytest.raises(AlarmError, match="already acknowledged by alice"):
        life.acknowledge(raised.alarm.id, "bob", "", T0 + 11)
    cleared = life.apply(sig(False, T0 + 60))
    assert cleared is not None
    assert (cleared.type, cleared.alarm.state, cleared.alarm.acked, cleared.alarm.cleared_ts) == (
        "cleared",
        "cleared",
        True,
        T0 + 60,
    )
    assert life.apply(sig(False, T0 + 70)) is None
    assert not life.active


def test_acknowledging_needs_a_name_and_works_on_cleared_alarms() -> None:
    life = Lifecycle()
    raised = life.apply(sig(True, T0))
    assert raised is not None
    with pytest.raises(AlarmError, match="needs a name"):
        acknowledge(raised.alarm, "  ", "", T0)
    life.apply(sig(False, T0 + 10))
    late = life.acknowledge(raised.alarm.id, "bob", "seen", T0 + 20)
    assert (late.alarm.state, late.alarm.acked) == ("cleared", True)


def test_reraise_inside_the_window_reopens_the_same_alarm() -> None:
    life = Lifecycle(reraise_window_s=300)
    first = life.apply(sig(True, T0))
    assert first is not None
    life.acknowledge(first.alarm.id, "alice", "", T0 + 1)
    life.apply(sig(False, T0 + 10))
    again = life.apply(sig(True, T0 + 200))
    assert again is not None
    assert again.type is TransitionType.RERAISED
    assert again.alarm.id == first.alarm.id
    assert (again.alarm.count, again.alarm.state, again.alarm.acked) == (2, "raised", False)
    life.apply(sig(False, T0 + 210))
    # outside the window: a new alarm
    new = life.apply(sig(True, T0 + 210 + 301))
    assert new is not None
    assert new.type is TransitionType.RAISED
    assert new.alarm.id != first.alarm.id
    assert new.alarm.count == 1


def test_per_rule_reraise_window_and_other_subjects_are_separate() -> None:
    life = Lifecycle(reraise_window_s=300)
    a = life.apply(sig(True, T0, window=0))
    life.apply(sig(False, T0 + 1, window=0))
    b = life.apply(sig(True, T0 + 2, window=0))
    assert a is not None
    assert b is not None
    assert b.type is TransitionType.RAISED
    other = life.apply(sig(True, T0 + 3, device="ups-2"))
    assert other is not None
    assert other.alarm.id not in (a.alarm.id, b.alarm.id)


def test_maintenance_marks_the_alarm_suppressed_and_unsuppress_notifies_later() -> None:
    life = Lifecycle()
    t = life.apply(sig(True, T0), maintenance="battery swap")
    assert t is not None
    assert (t.alarm.suppressed, t.alarm.maintenance) == (True, "battery swap")
    u = life.unsuppress(t.alarm.id, T0 + 100)
    assert u is not None
    assert (u.type, u.alarm.suppressed) == ("unsuppressed", False)
    assert life.unsuppress(t.alarm.id, T0 + 101) is None


def test_transition_json_round_trip() -> None:
    t = Lifecycle().apply(sig(True, T0))
    assert t is not None
    back = Transition.from_json(t.to_json())
    assert back == t


# ---------------------------------------------------------------- store


def test_store_records_lists_and_acknowledges_by_prefix(tmp_path: Path) -> None:
    store = AlarmStore(tmp_path / "alarms.sqlite")
    life = Lifecycle()
    ts = [life.apply(sig(True, T0 + i, device=f"ups-{i}")) for i in range(3)]
    stored = store.record([t for t in ts if t is not None])
    assert [t.alarm.device for t in stored] == ["ups-0", "ups-1", "ups-2"]
    assert len(store.alarms(active_only=True)) == 3
    target = stored[1].alarm
    acked = store.acknowledge(target.id[:6], "alice", "on it", T0 + 50)
    assert (acked.alarm.id, acked.alarm.acked_by, acked.alarm.state) == (target.id, "alice", "acknowledged")
    with pytest.raises(AlarmError, match="already acknowledged"):
        store.acknowledge(target.id, "bob", "", T0 + 51)
    with pytest.raises(AlarmNotFoundError, match="no alarm"):
        store.acknowledge("ffffffffffff", "bob", "", T0)
    with pytest.raises(AlarmNotFoundError, match="not an alarm id"):
        store.acknowledge("zz", "bob", "", T0)
    with pytest.raises(AlarmNotFoundError, match="ambiguous"):
        store.find(_common_prefix(store))
    history = store.history(target.id)
    assert [t.type for t in history] == ["raised", "acknowledged"]
    store.close()


def _common_prefix(store: AlarmStore) -> str:
    """A one-digit prefix shared by two alarms, made if need be by storing more alarms."""
    life = Lifecycle()
    i = 100
    while True:
        ids = [a.id for a in store.alarms()]
        for digit in "0123456789abcdef":
            if sum(1 for x in ids if x.startswith(digit)) > 1:
                return digit
        t = life.apply(sig(True, T0 + i, device=f"filler-{i}"))
        assert t is not None
        store.record([t])
        i += 1


def test_acknowledgement_from_another_process_survives_the_services_clear(tmp_path: Path) -> None:
    path = tmp_path / "alarms.sqlite"
    service_side, cli_side = AlarmStore(path), AlarmStore(path)
    life = Lifecycle()
    raised = life.apply(sig(True, T0))
    assert raised is not None
    service_side.record([raised])
    cli_side.acknowledge(raised.alarm.id, "carol", "ack from the CLI", T0 + 5)
    cleared = life.apply(sig(False, T0 + 10))  # the service's in-memory copy knows nothing of the ack
    assert cleared is not None
    assert not cleared.alarm.acked
    (merged,) = service_side.record([cleared])
    assert (merged.alarm.state, merged.alarm.acked_by) == (AlarmState.CLEARED, "carol")
    assert service_side.find(raised.alarm.id).acked_by == "carol"
    # the outbox: every transition, in order, until marked published
    pending = service_side.unpublished()
    assert [t.type for _, t in pending] == ["raised", "acknowledged", "cleared"]
    service_side.mark_published([seq for seq, _ in pending[:2]])
    assert [t.type for _, t in cli_side.unpublished()] == ["cleared"]
    service_side.close()
    cli_side.close()


def test_store_prunes_old_cleared_alarms(tmp_path: Path) -> None:
    store = AlarmStore(tmp_path / "a.sqlite")
    life = Lifecycle()
    old = life.apply(sig(True, T0, device="old"))
    old_clear = life.apply(sig(False, T0 + 1, device="old"))
    live = life.apply(sig(True, T0, device="live"))
    assert old is not None
    assert old_clear is not None
    assert live is not None
    stored = store.record([old, old_clear, live])
    store.mark_published([seq for seq, _ in store.unpublished()])
    assert store.prune(T0 + 1000) == 1
    assert [a.device for a in store.alarms()] == ["live"]
    assert store.history(stored[0].alarm.id) == []
    store.close()


def test_alarm_dict_round_trip() -> None:
    t = Lifecycle().apply(sig(True, T0))
    assert t is not None
    alarm = dataclasses.replace(t.alarm, value=12.5)
    assert type(alarm).from_dict(alarm.to_dict()) == alarm
