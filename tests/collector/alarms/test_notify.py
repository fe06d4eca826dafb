"""Webhooks over real HTTP (retries, dead letters, filters) and maintenance windows."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from collector.alarms.engine import Signal
from collector.alarms.lifecycle import Lifecycle, Transition, TransitionType
from collector.alarms.notify import Maintenance, Notifier
from collector.alarms.settings import MaintenanceWindow, Webhook
from tests.collector.alarms.helpers import SITE, T0, rule
from tests.collector.alarms.webhook_server import webhook_receiver
from tests.support.servers import free_port


def transition(severity: str = "critical", site: str = SITE, device: str = "ups-1") -> Transition:
    r = rule({"id": "on_battery", "severity": severity, "condition": {"type": "state", "point": "s", "values": [1]}})
    t = Lifecycle().apply(Signal(active=True, site=site, device=device, rule=r, subject="s", ts=T0, message="m"))
    assert t is not None
    return t


def hook(url: str, **kw: Any) -> Webhook:
    return Webhook.model_validate({"name": "ops", "url": url, "backoff_s": 0.01, **kw})


def dead_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_webhook_gets_the_transition_as_json_exactly_once(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret\n")
    with webhook_receiver() as rx:
        hooks = [hook(rx.url, token_file="token", headers={"X-Site": "bj"})]  # noqa: S106  (a file name)
        notifier = Notifier(hooks, tmp_path / "dead.jsonl", tmp_path)
        t = transition()
        assert notifier.submit(t) == 1
        assert notifier.wait_idle(20)
        notifier.close()
        (body,) = rx.wait_for(1)
    assert body["type"] == "raised"
    assert body["alarm"]["id"] == t.alarm.id
    assert body["alarm"]["severity"] == "critical"
    assert rx.attempts == 1
    assert rx.headers[0]["Authorization"] == "Bearer s3cret"
    assert rx.headers[0]["X-Site"] == "bj"
    assert rx.headers[0]["Content-Type"] == "application/json"
    assert (notifier.sent, notifier.failed) == (1, 0)
    assert dead_lines(tmp_path / "dead.jsonl") == []


def test_webhook_retries_server_errors_then_delivers(tmp_path: Path) -> None:
    with webhook_receiver() as rx:
        rx.statuses = [503, 502]
        notifier = Notifier([hook(rx.url, retries=3)], tmp_path / "dead.jsonl")
        notifier.submit(transition())
        assert notifier.wait_idle(20)
        notifier.close()
        rx.wait_for(1)
    assert rx.attempts == 3
    assert [d.attempts for d in notifier.deliveries] == [3]
    assert notifier.deliveries[0].ok


def test_webhook_dead_letter_after_retries_and_no_retry_on_client_errors(tmp_path: Path) -> None:
    dead = tmp_path / "dead.jsonl"
    with webhook_receiver() as rx:
        rx.statuses = [500, 500, 500, 400]
        notifier = Notifier([hook(rx.url, retries=2)], dead)
        t = transition()
        notifier.submit(t)
        assert notifier.wait_idle(20)
        assert rx.attempts == 3
        notifier.submit(dataclasses.replace(t, type=TransitionType.CLEARED))
        assert notifier.wait_idle(20)
        notifier.close()
    assert rx.attempts == 4  # the 400 was not retried
    lines = dead_lines(dead)
    assert [(d["attempts"], d["error"][:8], d["transition"]["type"]) for d in lines] == [
        (3, "HTTP 500", "raised"),
        (1, "HTTP 400", "cleared"),
    ]
    assert lines[0]["webhook"] == "ops"
    assert lines[0]["transition"]["alarm"]["id"] == t.alarm.id
    assert notifier.failed == 2


def test_webhook_unreachable_ends_in_the_dead_letter_log(tmp_path: Path) -> None:
    dead = tmp_path / "dead.jsonl"
    notifier = Notifier([hook(f"http://127.0.0.1:{free_port()}/nobody", retries=1, timeout_s=2)], dead)
    notifier.submit(transition())
    assert notifier.wait_idle(20)
    notifier.close()
    (line,) = dead_lines(dead)
    assert line["attempts"] == 2
    assert "Connection" in line["error"] or "refused" in line["error"]


def test_webhook_filters_by_severity_site_transition_and_suppression() -> None:
    h = hook("http://127.0.0.1:1/x", severities=["critical", "major"], sites=["bj-*"], transitions=["raised"])
    assert Notifier.wants(h, transition("critical"))
    assert not Notifier.wants(h, transition("minor"))
    assert not Notifier.wants(h, transition(site="sh-1"))
    t = transition()
    assert not Notifier.wants(h, dataclasses.replace(t, type=TransitionType.CLEARED))
    assert not Notifier.wants(h, dataclasses.replace(t, type=TransitionType.RERAISED))
    suppressed = dataclasses.replace(t, alarm=dataclasses.replace(t.alarm, suppressed=True))
    assert not Notifier.wants(h, suppressed)
    assert Notifier.wants(h, dataclasses.replace(t, type=TransitionType.UNSUPPRESSED))


# ---------------------------------------------------------------- maintenance windows


def ts(text: str, tz: str = "Asia/Shanghai") -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp()


def test_one_off_window_in_the_collector_time_zone_per_device_and_room() -> None:
    windows = [
        MaintenanceWindow.model_validate(
            {"name": "ups swap", "devices": ["ups-a*"], "start": "2026-12-01T22:00:00", "end": "2026-12-02T02:00:00"}
        ),
        MaintenanceWindow.model_validate(
            {"name": "hall", "rooms": ["hall-2"], "start": "2026-12-05T10:00:00+00:00", "end": "2026-12-05T11:00:00Z"}
        ),
    ]
    m = Maintenance(windows, {"hall-2": ["pdu-2*"]}, "Asia/Shanghai")
    assert m.covering("ups-a1", ts("2026-12-01T23:30:00")) == "ups swap"
    assert m.covering("ups-a1", ts("2026-12-02T02:00:00")) == ""
    assert m.covering("ups-b1", ts("2026-12-01T23:30:00")) == ""
    assert m.covering("pdu-21", ts("2026-12-05T18:30:00")) == "hall"  # 10:30 UTC
    assert m.covering("pdu-31", ts("2026-12-05T18:30:00")) == ""


def test_weekly_window_across_midnight() -> None:
    window = MaintenanceWindow.model_validate({"devices": ["*"], "days": ["sat"], "at": "23:00", "duration_min": 180})
    m = Maintenance([window], {}, "Asia/Shanghai")
    # 2026-12-05 is a Saturday
    assert m.covering("x", ts("2026-12-05T22:59:00")) == ""
    assert m.covering("x", ts("2026-12-05T23:30:00")) == "maintenance"
    assert m.covering("x", ts("2026-12-06T01:59:00")) == "maintenance"
    assert m.covering("x", ts("2026-12-06T02:00:00")) == ""
    assert m.covering("x", ts("2026-12-12T23:10:00")) == "maintenance"
    assert m.covering("x", ts("2026-12-09T23:10:00")) == ""


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"days": ["sat"], "at": "01:00", "duration_min": 60}, "needs 'devices' or 'rooms'"),
        ({"devices": ["a"], "start": "2026-01-01T00:00:00"}, "needs both 'start' and 'end'"),
        ({"devices": ["a"], "start": "2026-01-02T00:00:00", "end": "2026-01-01T00:00:00"}, "must be after"),
        ({"devices": ["a"], "days": ["sat"]}, "needs 'days', 'at' and 'duration_min'"),
        (
            {"devices": ["a"], "days": ["sat"], "at": "01:00", "duration_min": 1, "start": "2026-01-01T00:00:00"},
            "either",
        ),
    ],
)
def test_bad_maintenance_windows_are_refused(spec: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        MaintenanceWindow.model_validate(spec)
