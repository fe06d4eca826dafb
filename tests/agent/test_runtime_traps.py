"""An SNMP trap becomes an event (through the spool) and an immediate poll of its device."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from agent import config as agent_config
from agent.runtime import Runtime
from models import telemetry
from tests.agent.agent_helpers import Subscriber, base_sections, simulators, wait_until, write_config
from tests.support.servers import Mosquitto, free_port

pytestmark = pytest.mark.servers


async def test_a_trap_is_published_and_polls_its_device_at_once(mosquitto: Mosquitto, tmp_path: Path) -> None:
    snmptrap = shutil.which("snmptrap")
    if snmptrap is None:
        pytest.skip("snmptrap (Debian package snmp) is not installed")
    trap_port = free_port(socket.SOCK_DGRAM)
    sub = Subscriber(mosquitto.host, mosquitto.port).start()
    with simulators("ups-rfc1628", udp=True) as (ups,):
        devices: list[dict[str, object]] = [
            {"id": "ups-1", "model": "ups-rfc1628", "port": ups.port, "interval_s": 3600, "snmp": {"version": "2c"}}
        ]
        sections = base_sections(
            tmp_path, mosquitto.url, traps={"enabled": True, "host": "127.0.0.1", "port": trap_port}
        )
        runtime = Runtime(agent_config.load(write_config(tmp_path / "agent.toml", sections, devices)))
        task = asyncio.create_task(runtime.run())
        try:
            await asyncio.wait_for(runtime.running.wait(), 30)
            await wait_until(lambda: runtime.state("ups-1").polls_ok + runtime.state("ups-1").polls_failed == 1)
            assert runtime.traps is not None
            done = await asyncio.to_thread(
                subprocess.run,
                [snmptrap, "-v", "2c", "-c", "public", f"127.0.0.1:{trap_port}", "", "1.3.6.1.2.1.33.2.1"],
                capture_output=True,
                timeout=30,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            await wait_until(lambda: runtime.state("ups-1").polls_ok >= 2, what="a poll triggered by the trap")
            assert runtime.state("ups-1").starts == runtime.state("ups-1").starts[:1]  # not a scheduled one
        finally:
            runtime.stop()
            assert await asyncio.wait_for(task, 60) == 0
    event_topic = telemetry.event_topic("bj-dx", "edge-01", "ups-1")
    sub.wait_for(lambda r: any(m.topic == event_topic for m in r), what="the trap event")
    sub.stop()
    event = telemetry.decode_as(telemetry.Event, next(m.payload for m in sub.received if m.topic == event_topic))
    assert event.type == "trap"
    assert event.severity == "major"
    assert event.data["trap"] == "upsTrapOnBattery"
