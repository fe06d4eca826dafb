"""Through real Mosquitto: batches and traps published as an agent would, the collector running.

A UPS going on battery raises a critical alarm, published on the site's alarm topic and
retained while active, and a webhook receives it exactly once; mains back clears it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collector import cli
from models import telemetry
from tests.collector.alarms.webhook_server import Receiver, webhook_receiver
from tests.collector.conftest import Publisher, Subscription, running_collector, sqlite_store, write_config
from tests.support.servers import Mosquitto

pytestmark = [pytest.mark.servers, pytest.mark.timeout(120)]

SITE = "bj-dx"
AGENT = "edge-01"


@pytest.fixture
def rx() -> Iterator[Receiver]:
    with webhook_receiver() as receiver:
        yield receiver


def ups_batch(device: str, seq: int, ts: float, source: str) -> telemetry.Batch:
    return telemetry.Batch(
        site=SITE,
        agent=AGENT,
        device=device,
        model="ups-rfc1628",
        kind="ups",
        seq=seq,
        ts=ts,
        points={
            "output_source": telemetry.Point(source, ""),
            "battery_status": telemetry.Point("normal", ""),
            "battery_charge": telemetry.Point(100, "%"),
        },
    )


def alarm_config(tmp_path: Path, broker: Mosquitto, rx: Receiver) -> Path:
    path = write_config(tmp_path / "collector.toml", broker, sqlite_store(tmp_path / "store.sqlite"))
    with path.open("a", encoding="utf-8") as fh:
        fh.write(
            f"""
[alarms]
tick_s = 0.2

[[alarms.webhooks]]
name = "ops"
url = "{rx.url}"
severities = ["critical"]
backoff_s = 0.05
"""
        )
    return path


def _next_event(watch: Subscription, kind: str) -> dict[str, Any]:
    while True:
        topic, payload = watch.get(timeout_s=30)
        if topic == f"dcim/v1/{SITE}/alarm":
            body: dict[str, Any] = json.loads(payload)
            if body["type"] == kind:
                return body


async def next_event(watch: Subscription, kind: str) -> dict[str, Any]:
    """The next transition of that type on the alarm topic (retained-state messages skipped)."""
    return await asyncio.to_thread(_next_event, watch, kind)


async def publish(publisher: Publisher, batches: list[telemetry.Batch]) -> None:
    """Publish as an agent would (QoS 1), without blocking the collector's event loop."""
    await asyncio.to_thread(publisher.publish_batches, batches)


async def test_ups_on_battery_alarm_through_mosquitto(
    mosquitto: Mosquitto, rx: Receiver, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = alarm_config(tmp_path, mosquitto, rx)
    watch = Subscription(mosquitto, f"dcim/v1/{SITE}/alarm/#", "alarm-watch")
    publisher = Publisher(mosquitto)
    t = float(int(time.time()))
    try:
        async with running_collector(config) as collector:
            assert collector.alarms is not None
            await publish(publisher, [ups_batch("ups-a1", 1, t, "normal"), ups_batch("ups-a1", 2, t + 10, "battery")])
            raised = await next_event(watch, "raised")
            alarm = raised["alarm"]
            assert (alarm["device"], alarm["rule"], alarm["severity"], alarm["raised_ts"]) == (
                "ups-a1",
                "ups_on_battery",
                "critical",
                t + 10,  # the read that saw it: the first poll on battery
            )
            (hook,) = await asyncio.to_thread(rx.wait_for, 1)
            assert (hook["type"], hook["alarm"]["id"]) == ("raised", alarm["id"])

            # a dashboard (re)starting now sees what is active, from the retained state
            dashboard = await asyncio.to_thread(Subscription, mosquitto, f"dcim/v1/{SITE}/alarm/+", "dashboard")
            topic, payload = await asyncio.to_thread(dashboard.get, 10)
            dashboard.close()
            assert topic == f"dcim/v1/{SITE}/alarm/{alarm['id']}"
            assert json.loads(payload)["state"] == "raised"
            capsys.readouterr()
            assert cli.main(["alarms", "list", "--config", str(config), "--active", "--json"]) == 0
            assert [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()] == [alarm["id"]]

            # still on battery: nothing new; then mains back for longer than the 10 s off-delay
            await publish(
                publisher,
                [
                    ups_batch("ups-a1", 3, t + 20, "battery"),
                    ups_batch("ups-a1", 4, t + 30, "normal"),
                    ups_batch("ups-a1", 5, t + 40, "normal"),
                ],
            )
            cleared = await next_event(watch, "cleared")
            assert (cleared["alarm"]["id"], cleared["alarm"]["cleared_ts"]) == (alarm["id"], t + 40)
            # the retained state is removed with an empty retained message
            topic, payload = await asyncio.to_thread(watch.get, 10)
            assert (topic, payload) == (f"dcim/v1/{SITE}/alarm/{alarm['id']}", b"")

            # a trap published by an agent raises at once, before any poll of that UPS
            trap = telemetry.Event(
                site=SITE,
                agent=AGENT,
                device="ups-b1",
                type="trap",
                ts=t + 50,
                severity="major",
                message="UPS is on battery",
                data={"trap": "upsTrapOnBattery"},
            )
            info = publisher.publish(telemetry.event_topic(SITE, AGENT, "ups-b1"), telemetry.encode(trap))
            await asyncio.to_thread(info.wait_for_publish, 10)
            by_trap = await next_event(watch, "raised")
            assert (by_trap["alarm"]["device"], by_trap["alarm"]["rule"], by_trap["alarm"]["raised_ts"]) == (
                "ups-b1",
                "ups_on_battery",
                t + 50,
            )
            await asyncio.to_thread(rx.wait_for, 3)
    finally:
        publisher.close()
        watch.close()
    # the collector has stopped and delivered what it queued: each transition exactly once
    assert [(b["type"], b["alarm"]["device"]) for b in rx.bodies] == [
        ("raised", "ups-a1"),
        ("cleared", "ups-a1"),
        ("raised", "ups-b1"),
    ]
    assert rx.attempts == 3
