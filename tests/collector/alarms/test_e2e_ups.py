"""End to end: SNMP UPS simulator → dcim-agent → Mosquitto → collector alarms → webhook.

Mains fails in the simulator: a critical `ups_on_battery` alarm is raised within one poll
interval (or at once through the trap) and a webhook receives it exactly once; mains back
clears it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from models import catalog, telemetry
from tests.collector.alarms.webhook_server import Receiver, webhook_receiver
from tests.collector.conftest import Subscription, running_collector, sqlite_store, write_config
from tests.support.servers import Mosquitto, free_port

pytestmark = [pytest.mark.servers, pytest.mark.timeout(120)]

if importlib.util.find_spec("agent.runtime") is None or importlib.util.find_spec("simulators.snmp") is None:
    pytest.skip("the agent runtime or the SNMP simulator is not in this build", allow_module_level=True)

from simulators.snmp import SnmpSimulator  # noqa: E402  (after the skip: needs the simulator)

SITE = "bj-dx"
AGENT = "edge-01"
DEVICE = "ups-a1"


@pytest.fixture
def rx() -> Iterator[Receiver]:
    with webhook_receiver() as receiver:
        yield receiver


def agent_config(tmp_path: Path, broker: Mosquitto, sim_port: int, interval_s: float, trap_port: int | None) -> Path:
    traps = f'[traps]\nenabled = true\nhost = "127.0.0.1"\nport = {trap_port}\n' if trap_port else ""
    path = tmp_path / "agent.toml"
    path.write_text(
        f"""
[agent]
id = "{AGENT}"
site = "{SITE}"
[mqtt]
url = "{broker.url}"
[spool]
path = "{tmp_path / "spool.sqlite"}"
[commands]
audit_log = "{tmp_path / "audit.jsonl"}"
[defaults]
interval_s = {interval_s}
timeout_s = 1.0
retries = 0
{traps}
[[devices]]
id = "{DEVICE}"
model = "ups-rfc1628"
host = "127.0.0.1"
port = {sim_port}
snmp = {{ version = "2c", community = "public" }}
""",
        encoding="utf-8",
    )
    return path


def collector_config(tmp_path: Path, broker: Mosquitto, rx: Receiver) -> Path:
    path = write_config(tmp_path / "collector.toml", broker, sqlite_store(tmp_path / "store.sqlite"))
    with path.open("a", encoding="utf-8") as fh:
        fh.write(
            f"""
[alarms]
tick_s = 0.5

[[alarms.overrides]]
rule = "ups_on_battery"
off_delay_s = 1.0

[[alarms.webhooks]]
name = "ops"
url = "{rx.url}"
severities = ["critical"]
backoff_s = 0.05
"""
        )
    return path


def start_agent(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_agent(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def first_batch(watch: Subscription) -> telemetry.Batch:
    return telemetry.decode_batch(watch.get(timeout_s=60)[1])


def trap_event(watch: Subscription) -> telemetry.Event:
    while True:
        event = telemetry.decode_as(telemetry.Event, watch.get(timeout_s=60)[1])
        if event.data.get("trap") == "upsTrapOnBattery":
            return event


def ups_hooks(rx: Receiver) -> list[tuple[str, str, str]]:
    return [
        (b["type"], b["alarm"]["severity"], b["alarm"]["device"])
        for b in rx.bodies
        if b["alarm"]["rule"] == "ups_on_battery"
    ]


async def test_mains_failure_raises_within_one_poll_and_mains_back_clears(
    mosquitto: Mosquitto, rx: Receiver, tmp_path: Path
) -> None:
    interval_s = 1.0
    telemetry_watch = Subscription(mosquitto, telemetry.telemetry_topic(SITE, AGENT, DEVICE), "telemetry-watch")
    async with (
        SnmpSimulator(catalog.load("ups-rfc1628"), speed=0.0) as sim,
        running_collector(collector_config(tmp_path, mosquitto, rx)) as collector,
    ):
        agent = start_agent(agent_config(tmp_path, mosquitto, sim.port, interval_s, None), tmp_path / "agent.log")
        try:
            await asyncio.to_thread(first_batch, telemetry_watch)  # the agent polls and publishes
            t_fail = time.time()
            sim.fail_mains()
            (raised,) = await asyncio.to_thread(rx.wait_for, 1, 60)
            alarm: dict[str, Any] = raised["alarm"]
            assert (raised["type"], alarm["rule"], alarm["severity"], alarm["device"]) == (
                "raised",
                "ups_on_battery",
                "critical",
                DEVICE,
            )
            # raised by the first read after the failure: within one poll interval (plus that read)
            assert t_fail - interval_s < alarm["raised_ts"] <= t_fail + interval_s + 1.0
            sim.restore_mains()
            bodies = await asyncio.to_thread(rx.wait_for, 2, 60)
            assert (bodies[1]["type"], bodies[1]["alarm"]["id"]) == ("cleared", alarm["id"])
            assert collector.alarms is not None
            assert [a.rule for a in collector.alarms.active()] == []
        finally:
            await asyncio.to_thread(stop_agent, agent)
            telemetry_watch.close()
    # the collector stopped after delivering everything queued: exactly once each
    assert ups_hooks(rx) == [("raised", "critical", DEVICE), ("cleared", "critical", DEVICE)]


async def test_trap_raises_before_the_next_scheduled_poll(mosquitto: Mosquitto, rx: Receiver, tmp_path: Path) -> None:
    interval_s = 30.0  # the next scheduled poll is far away: only the trap can be this quick
    trap_port = free_port(socket.SOCK_DGRAM)
    telemetry_watch = Subscription(mosquitto, telemetry.telemetry_topic(SITE, AGENT, DEVICE), "telemetry-watch")
    event_watch = Subscription(mosquitto, telemetry.event_topic(SITE, AGENT, DEVICE), "event-watch")
    async with (
        SnmpSimulator(catalog.load("ups-rfc1628"), speed=0.0) as sim,
        running_collector(collector_config(tmp_path, mosquitto, rx)),
    ):
        sim.add_trap_target("127.0.0.1", trap_port, community="public")
        agent = start_agent(agent_config(tmp_path, mosquitto, sim.port, interval_s, trap_port), tmp_path / "agent.log")
        try:
            first = await asyncio.to_thread(first_batch, telemetry_watch)
            sim.fail_mains()
            event = await asyncio.to_thread(trap_event, event_watch)
            (raised,) = await asyncio.to_thread(rx.wait_for, 1, 60)
        finally:
            await asyncio.to_thread(stop_agent, agent)
            telemetry_watch.close()
            event_watch.close()
    alarm = raised["alarm"]
    assert (alarm["rule"], alarm["severity"]) == ("ups_on_battery", "critical")
    # raised by the trap event (or the poll it triggered at once), not by the schedule
    assert first.ts < event.ts < first.ts + interval_s
    assert first.ts < alarm["raised_ts"] < first.ts + interval_s
    assert ups_hooks(rx) == [("raised", "critical", DEVICE)]
