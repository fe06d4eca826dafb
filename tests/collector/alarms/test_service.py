"""The alarm service: publish and retain, webhooks, maintenance suppression, restarts, CLI acks."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collector import cli
from collector.alarms.service import AlarmService
from collector.alarms.settings import AlarmsSection
from models.telemetry import Batch, Event
from tests.collector.alarms.helpers import SITE, T0, batch, event
from tests.collector.alarms.webhook_server import Receiver, webhook_receiver

RULES: list[dict[str, Any]] = [
    {
        "id": "ups_on_battery",
        "severity": "critical",
        "events": ["upsTrapOnBattery"],
        "off_delay_s": 5,
        "condition": {"type": "state", "point": "output_source", "values": ["battery"]},
    },
    {
        "id": "inlet_hot",
        "severity": "minor",
        "condition": {"type": "threshold", "point": "temp", "above": 27.0},
    },
]


class Published:
    """Collects what the service publishes, as an MQTT client would send it."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.retained: dict[str, bytes] = {}

    def __call__(self, topic: str, payload: bytes, *, retain: bool) -> None:
        self.messages.append((topic, payload, retain))
        if retain:
            if payload:
                self.retained[topic] = payload
            else:
                self.retained.pop(topic, None)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(p) for t, p, r in self.messages if t == f"dcim/v1/{SITE}/alarm" and not r]


def section(tmp_path: Path, rx: Receiver | None = None, **extra: Any) -> AlarmsSection:
    data: dict[str, Any] = {"defaults": False, "rules": RULES, "reraise_window_s": 300, **extra}
    if rx is not None:
        data["webhooks"] = [
            {"name": "ops", "url": rx.url, "backoff_s": 0.01, "transitions": ["raised", "acknowledged", "cleared"]}
        ]
    return AlarmsSection.model_validate(data)


@pytest.fixture
def rx() -> Iterator[Receiver]:
    with webhook_receiver() as receiver:
        yield receiver


def test_raise_publishes_event_and_retained_state_and_notifies_once(tmp_path: Path, rx: Receiver) -> None:
    pub = Published()
    svc = AlarmService(section(tmp_path, rx), base_dir=tmp_path, publish=pub, now=T0)
    assert svc.on_batch(batch(T0, {"output_source": "normal"}, device="ups-1")) == []
    (raised,) = svc.on_batch(batch(T0 + 10, {"output_source": "battery"}, device="ups-1"))
    for i in range(2, 6):  # still on battery: nothing new
        assert svc.on_batch(batch(T0 + 10 * i, {"output_source": "battery"}, device="ups-1")) == []
    topic = f"dcim/v1/{SITE}/alarm/{raised.alarm.id}"
    assert json.loads(pub.retained[topic])["state"] == "raised"
    assert [e["type"] for e in pub.events()] == ["raised"]
    assert svc.notifier.wait_idle(20)
    assert [b["type"] for b in rx.wait_for(1)] == ["raised"]

    cleared = svc.on_batch(batch(T0 + 60, {"output_source": "normal"}, device="ups-1"))
    assert cleared == []  # off-delay 5 s: one normal sample does not clear
    (cleared_t,) = svc.on_batch(batch(T0 + 70, {"output_source": "normal"}, device="ups-1"))
    assert cleared_t.type == "cleared"
    assert topic not in pub.retained  # the empty retained message removed it
    assert [e["type"] for e in pub.events()] == ["raised", "cleared"]
    assert svc.notifier.wait_idle(20)
    svc.close()
    assert [b["type"] for b in rx.bodies] == ["raised", "cleared"]
    assert rx.attempts == 2
    assert svc.stats()["alarm_transitions"] == 2


def test_trap_event_raises_before_the_next_poll(tmp_path: Path) -> None:
    pub = Published()
    svc = AlarmService(section(tmp_path), base_dir=tmp_path, publish=pub, now=T0)
    svc.on_batch(batch(T0, {"output_source": "normal"}, device="ups-1"))
    (t,) = svc.on_event(event(T0 + 1, "trap", device="ups-1", trap="upsTrapOnBattery"))
    assert (t.type, t.alarm.rule, t.alarm.severity) == ("raised", "ups_on_battery", "critical")
    assert svc.on_batch(batch(T0 + 10, {"output_source": "battery"}, device="ups-1")) == []
    svc.close()


def test_maintenance_suppresses_notifications_until_it_ends(tmp_path: Path, rx: Receiver) -> None:
    pub = Published()
    window = {"name": "swap", "devices": ["ups-*"], "start": "2025-11-30T00:00:00Z", "end": "2025-11-30T01:00:00Z"}
    start = 1_764_460_800.0  # 2025-11-30T00:00:00Z
    svc = AlarmService(section(tmp_path, rx, maintenance=[window]), base_dir=tmp_path, publish=pub, now=start)
    (raised,) = svc.on_batch(batch(start + 60, {"output_source": "battery"}, device="ups-1"))
    (other,) = svc.on_batch(batch(start + 60, {"output_source": "battery"}, device="other-1"))
    assert (raised.alarm.suppressed, raised.alarm.maintenance) == (True, "swap")
    assert not other.alarm.suppressed
    assert [e["alarm"]["suppressed"] for e in pub.events()] == [True, False]  # still published and stored
    assert svc.notifier.wait_idle(20)
    assert [b["alarm"]["device"] for b in rx.wait_for(1)] == ["other-1"]
    assert svc.tick(start + 1800) == []  # still inside the window
    # the window ends with the UPS still on battery: the held-back notification goes out now
    (late,) = svc.tick(start + 3601)
    assert (late.type, late.alarm.id, late.alarm.suppressed) == ("unsuppressed", raised.alarm.id, False)
    assert svc.notifier.wait_idle(20)
    bodies = rx.wait_for(2)
    assert [(b["type"], b["alarm"]["device"]) for b in bodies] == [("raised", "other-1"), ("unsuppressed", "ups-1")]
    svc.close()


def test_maintenance_alarm_cleared_inside_the_window_notifies_nobody(tmp_path: Path, rx: Receiver) -> None:
    window = {"devices": ["ups-*"], "days": ["sun"], "at": "00:00", "duration_min": 60}
    start = 1_764_460_800.0  # a Sunday, 00:00 UTC
    svc = AlarmService(section(tmp_path, rx, maintenance=[window]), base_dir=tmp_path, now=start)
    svc.on_batch(batch(start + 60, {"output_source": "battery"}, device="ups-1"))
    svc.on_batch(batch(start + 70, {"output_source": "normal"}, device="ups-1"))
    (cleared,) = svc.on_batch(batch(start + 80, {"output_source": "normal"}, device="ups-1"))
    assert cleared.type == "cleared"
    svc.tick(start + 4000)
    assert svc.notifier.wait_idle(20)
    assert [t.type for t in svc.store.history(cleared.alarm.id)] == ["raised", "cleared"]
    svc.close()
    assert rx.attempts == 0


def test_restart_keeps_active_alarms_without_raising_them_again(tmp_path: Path) -> None:
    pub1 = Published()
    svc = AlarmService(section(tmp_path), base_dir=tmp_path, publish=pub1, now=T0)
    (raised,) = svc.on_batch(batch(T0, {"temp": 30.0}, device="rack-1"))
    svc.close()

    pub2 = Published()
    svc2 = AlarmService(section(tmp_path), base_dir=tmp_path, publish=pub2, now=T0 + 100)
    assert [a.id for a in svc2.active()] == [raised.alarm.id]
    assert svc2.on_batch(batch(T0 + 110, {"temp": 31.0}, device="rack-1")) == []
    (cleared,) = svc2.on_batch(batch(T0 + 120, {"temp": 20.0}, device="rack-1"))
    assert (cleared.type, cleared.alarm.id) == ("cleared", raised.alarm.id)
    # and inside the re-raise window it is the same alarm again, across the restart
    (again,) = svc2.on_batch(batch(T0 + 130, {"temp": 30.0}, device="rack-1"))
    assert (again.type, again.alarm.id, again.alarm.count) == ("reraised", raised.alarm.id, 2)
    svc2.close()


def test_restart_clears_alarms_of_removed_rules(tmp_path: Path) -> None:
    svc = AlarmService(section(tmp_path), base_dir=tmp_path, now=T0)
    (raised,) = svc.on_batch(batch(T0, {"temp": 30.0}, device="rack-1"))
    svc.close()
    only_ups = AlarmsSection.model_validate({"defaults": False, "rules": RULES[:1]})
    pub = Published()
    svc2 = AlarmService(only_ups, base_dir=tmp_path, publish=pub, now=T0 + 10)
    assert svc2.active() == []
    assert [(e["type"], e["comment"]) for e in pub.events()] == [("cleared", "rule removed")]
    assert svc2.store.find(raised.alarm.id).state == "cleared"
    svc2.close()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """dcim-collector alarms ... in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "collector.cli", "alarms", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _cli_here(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """dcim-collector alarms ... in this process (faster, for read-only checks)."""
    capsys.readouterr()
    code = cli.main(["alarms", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_ack_from_the_cli_in_another_process_is_published_and_notified(
    tmp_path: Path, rx: Receiver, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # relative paths in the configuration are from the working directory
    cfg = tmp_path / "collector.toml"
    cfg.write_text(
        f"""
[collector]
id = "c1"
site = "{SITE}"
timezone = "Asia/Shanghai"

[alarms]
defaults = false
db = "state/alarms.sqlite"

[[alarms.rules]]
id = "inlet_hot"
severity = "minor"
message = "{{device}}: {{point}} at {{value}} {{unit}}"
condition = {{ type = "threshold", point = "temp", above = 27.0 }}

[[alarms.webhooks]]
name = "ops"
url = "{rx.url}"
transitions = ["raised", "acknowledged"]
"""
    )
    from collector import config as collector_config  # noqa: PLC0415

    loaded = collector_config.load(cfg)
    pub = Published()
    svc = AlarmService(loaded.config.alarms, publish=pub, timezone="Asia/Shanghai", now=T0)
    assert (tmp_path / "state" / "alarms.sqlite").is_file()
    (raised,) = svc.on_batch(batch(T0, {"temp": 30.0}, device="rack-1", units={"temp": "degC"}))
    svc.on_batch(batch(T0, {"temp": 20.0}, device="rack-2"))

    code, out, err = _cli_here(capsys, "list", "--config", str(cfg), "--active", "--json")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["id"], r["state"], r["message"]) for r in rows] == [
        (raised.alarm.id, "raised", "rack-1: temp at 30.0 degC")
    ]
    code, out, _ = _cli_here(capsys, "list", "--config", str(cfg))
    assert code == 0
    assert out.splitlines()[0].split()[:4] == ["ID", "SEVERITY", "STATE", "ACK"]
    assert raised.alarm.id in out
    assert "2025-11-30 05:00:00" in out  # raise time in the collector's time zone

    acked = _cli("ack", raised.alarm.id[:5], "--config", str(cfg), "--by", "alice", "--comment", "fan replaced")
    assert acked.returncode == 0, acked.stderr
    assert acked.stdout.startswith(f"acknowledged {raised.alarm.id} by alice")
    code, _, err = _cli_here(capsys, "ack", raised.alarm.id, "--config", str(cfg), "--by", "bob")
    assert (code, "already acknowledged by alice" in err) == (1, True)
    code, _, err = _cli_here(capsys, "ack", "abcdef123456", "--config", str(cfg), "--by", "bob")
    assert (code, "no alarm abcdef123456" in err) == (2, True)

    svc.tick(T0 + 5)  # the running service publishes what the CLI stored
    assert [e["type"] for e in pub.events()] == ["raised", "acknowledged"]
    state = json.loads(pub.retained[f"dcim/v1/{SITE}/alarm/{raised.alarm.id}"])
    assert (state["state"], state["acked_by"], state["ack_comment"]) == ("acknowledged", "alice", "fan replaced")
    assert svc.notifier.wait_idle(20)
    assert [b["type"] for b in rx.wait_for(2)] == ["raised", "acknowledged"]
    # the service knows of the acknowledgement: its clear keeps it
    (cleared,) = svc.on_batch(batch(T0 + 10, {"temp": 20.0}, device="rack-1"))
    assert (cleared.alarm.acked_by, cleared.alarm.state) == ("alice", "cleared")
    svc.close()
    assert _cli_here(capsys, "list", "--config", str(cfg), "--active")[1].strip() == "no active alarms"


def test_cli_without_a_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[collector]\nid = "c1"\nsite = "s"\n')
    assert _cli_here(capsys, "list", "--config", str(cfg), "--json")[:2] == (0, "")
    assert _cli_here(capsys, "ack", "abc", "--config", str(cfg), "--by", "x")[0] == 2
    assert not (tmp_path / "alarms.sqlite").exists()
    code, _, err = _cli_here(capsys, "list", "--config", str(tmp_path / "missing.toml"))
    assert (code, "file not found" in err) == (2, True)


def test_restart_clears_table_row_and_event_alarms_when_their_time_comes(tmp_path: Path) -> None:
    rules = [
        {
            "id": "ups_alarm",
            "severity": "major",
            "condition": {"type": "state", "point": "alarms.descr", "patterns": ["*"]},
        },
        {"id": "auth_failure", "severity": "warning", "events": ["authenticationFailure"], "hold_s": 300},
    ]
    sec = AlarmsSection.model_validate({"defaults": False, "rules": rules})
    svc = AlarmService(sec, base_dir=tmp_path, now=T0)
    (row,) = svc.on_batch(batch(T0, {"x": 1}, device="ups-1", tables={"alarms": {"7": {"descr": "fanFailure"}}}))
    (auth,) = svc.on_event(event(T0, "trap", device="ups-1", trap="authenticationFailure"))
    assert (row.alarm.subject, auth.alarm.rule) == ("alarms[7].descr", "auth_failure")
    svc.close()

    svc2 = AlarmService(sec, base_dir=tmp_path, now=T0 + 10)
    assert len(svc2.active()) == 2
    (gone,) = svc2.on_batch(batch(T0 + 20, {"x": 1}, device="ups-1"))  # the row is no longer in the table
    assert (gone.type, gone.alarm.id) == ("cleared", row.alarm.id)
    assert svc2.tick(T0 + 299) == []
    (expired,) = svc2.tick(T0 + 301)
    assert (expired.type, expired.alarm.id) == ("cleared", auth.alarm.id)
    svc2.close()


def test_default_paths_follow_the_sqlite_store_or_the_working_directory(tmp_path: Path) -> None:
    from collector.alarms.settings import alarm_paths  # noqa: PLC0415

    default = AlarmsSection()
    assert alarm_paths(default, store_path=tmp_path / "data" / "store.sqlite") == (
        tmp_path / "data" / "alarms.sqlite",
        tmp_path / "data" / "alarms-webhooks.deadletter.jsonl",
    )
    assert alarm_paths(default, base=tmp_path) == (
        tmp_path / "alarms.sqlite",
        tmp_path / "alarms-webhooks.deadletter.jsonl",
    )
    explicit = AlarmsSection.model_validate({"db": "/var/lib/x/a.sqlite", "dead_letter": "dl.jsonl"})
    assert alarm_paths(explicit, store_path=Path("s.sqlite"), base=tmp_path) == (
        Path("/var/lib/x/a.sqlite"),
        tmp_path / "dl.jsonl",
    )


def test_a_whole_write_evaluated_at_once_gives_the_transitions_of_one_by_one(tmp_path: Path) -> None:
    # A backlog write holds many batches of one device: raise, clear and raise again in one group.
    readings = ["normal", "battery", "battery", "normal", "normal", "normal", "battery", "normal"]
    messages: list[Batch | Event] = [
        batch(T0 + 10 * i, {"output_source": s}, device="ups-1") for i, s in enumerate(readings)
    ]
    messages.insert(3, event(T0 + 25, "upsTrapOnBattery", device="ups-2"))

    one_pub = Published()
    one = AlarmService(section(tmp_path / "one"), base_dir=tmp_path / "one", publish=one_pub, now=T0)
    singly = []
    for m in messages:
        singly += one.on_batch(m) if isinstance(m, Batch) else one.on_event(m)

    group_pub = Published()
    group = AlarmService(section(tmp_path / "group"), base_dir=tmp_path / "group", publish=group_pub, now=T0)
    together = group.on_messages(messages)

    assert [(t.type, t.alarm.device, t.alarm.state) for t in together] == [
        (t.type, t.alarm.device, t.alarm.state) for t in singly
    ]
    assert [t.type for t in together if t.alarm.device == "ups-1"] == ["raised", "cleared", "reraised"]
    assert group_pub.messages == one_pub.messages
    assert sorted((a.device, a.state, a.count) for a in group.active()) == sorted(
        (a.device, a.state, a.count) for a in one.active()
    )
    # The lifecycle holds the newest state of each alarm, not an older one of the same write.
    assert {a.device for a in group.active()} == {"ups-1", "ups-2"}
    one.close()
    group.close()
