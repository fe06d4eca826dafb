"""The site simulator's mains failure: both UPSes (UPS-MIB and APC Modbus) raise, then clear.

`dcim-sim site` serves the demo site (every device on its own free port), `dcim-agent run`
polls it, the collector evaluates the default rules; mains failure and restore go through
the site's control API.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from models import telemetry
from tests.collector.alarms.webhook_server import Receiver, webhook_receiver
from tests.collector.conftest import Subscription, running_collector, sqlite_store
from tests.support.servers import Mosquitto, free_port, stop

pytestmark = [pytest.mark.servers, pytest.mark.slow, pytest.mark.timeout(180)]

if importlib.util.find_spec("simulators.site") is None or importlib.util.find_spec("agent.runtime") is None:
    pytest.skip("the site simulator or the agent runtime is not in this build", allow_module_level=True)

from simulators.site import agent_config_for, load_scenario  # noqa: E402  (after the skip)

DEMO = Path(__file__).resolve().parents[3] / "configs" / "sites" / "demo.toml"
INTERVAL_S = 1.0


@pytest.fixture
def rx() -> Iterator[Receiver]:
    with webhook_receiver() as receiver:
        yield receiver


def scenario(tmp_path: Path) -> Path:
    """The demo site at real-time speed, every device and the control API on free ports."""
    text = DEMO.read_text(encoding="utf-8")
    text = re.sub(r"(?m)^speed = [0-9.]+", "speed = 1.0", text)
    text = re.sub(r"(?m)^(\s*)port = \d+", lambda m: f"{m.group(1)}port = {free_port()}", text)
    path = tmp_path / "site.toml"
    path.write_text(text, encoding="utf-8")
    return path


def spawn(args: list[str], log: Path, *, ready_line: bool = False) -> subprocess.Popen[bytes]:
    """python -m ARGS in its own session; stdout piped when it prints a ready line."""
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        stdout=subprocess.PIPE if ready_line else log.open("ab"),
        stderr=log.open("ab"),
        start_new_session=True,
    )


def control(base: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(  # noqa: S310  (loopback control API)
        base + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
        return json.loads(resp.read() or b"null")


def ups_hooks(rx: Receiver) -> list[tuple[str, str]]:
    return sorted((b["alarm"]["device"], b["type"]) for b in rx.bodies if b["alarm"]["rule"] == "ups_on_battery")


async def test_site_mains_failure_raises_and_clears_both_ups_alarms(
    mosquitto: Mosquitto, rx: Receiver, tmp_path: Path
) -> None:
    site_file = scenario(tmp_path)
    loaded = load_scenario(site_file)
    site_id = loaded.scenario.site.id
    upses = sorted(u.id for u in loaded.scenario.upses)
    sim = spawn(["simulators.cli", "site", "--scenario", str(site_file)], tmp_path / "site.log", ready_line=True)
    agent: subprocess.Popen[bytes] | None = None
    try:
        assert sim.stdout is not None
        ready = (await asyncio.to_thread(sim.stdout.readline)).decode()
        assert ready.startswith("ready site"), ready + (tmp_path / "site.log").read_text()
        match = re.search(r"control on (http://\S+?),", ready)
        assert match, ready
        base = match.group(1)

        agent_cfg = tmp_path / "agent.toml"
        agent_cfg.write_text(
            agent_config_for(
                loaded,
                mosquitto.url,
                interval_s=INTERVAL_S,
                timeout_s=1.0,
                retries=0,
                spool_path=str(tmp_path / "spool.sqlite"),
                audit_log=str(tmp_path / "audit.jsonl"),
            ),
            encoding="utf-8",
        )
        collector_cfg = tmp_path / "collector.toml"
        collector_cfg.write_text(
            f"""
[collector]
id = "c1"
site = "{site_id}"
[mqtt]
url = "{mosquitto.url}"
[store]
{sqlite_store(tmp_path / "store.sqlite")}
[alarms]
tick_s = 0.5
[[alarms.overrides]]
rule = "ups_on_battery"
off_delay_s = 1.0
[[alarms.webhooks]]
name = "ops"
url = "{rx.url}"
severities = ["critical"]
transitions = ["raised", "cleared"]
""",
            encoding="utf-8",
        )
        watch = [Subscription(mosquitto, f"dcim/v1/{site_id}/+/{ups}/telemetry", f"watch-{ups}") for ups in upses]
        async with running_collector(collector_cfg):
            agent = spawn(["agent.cli", "run", "--config", str(agent_cfg)], tmp_path / "agent.log")
            for w in watch:  # both UPSes are being polled and published
                telemetry.decode_batch((await asyncio.to_thread(w.get, 60))[1])
                w.close()
            t_fail = time.time()
            event = (await asyncio.to_thread(control, base, "POST", "/events", {"kind": "mains_failure"}))["event"]

            def raised() -> bool:
                return {d for d, t in ups_hooks(rx) if t == "raised"} == set(upses)

            await _wait(rx, raised)
            await asyncio.to_thread(control, base, "DELETE", f"/events/{event['id']}")

            def cleared() -> bool:
                return {d for d, t in ups_hooks(rx) if t == "cleared"} == set(upses)

            await _wait(rx, cleared)
            os.kill(agent.pid, signal.SIGTERM)
            await asyncio.to_thread(agent.wait, 60)
    finally:
        if agent is not None and agent.poll() is None:
            os.kill(agent.pid, signal.SIGTERM)
            agent.wait(timeout=60)
        stop(sim)
    assert ups_hooks(rx) == sorted([(u, "raised") for u in upses] + [(u, "cleared") for u in upses])
    for body in rx.bodies:
        if body["alarm"]["rule"] == "ups_on_battery" and body["type"] == "raised":
            # the first poll after the failure saw it: within one interval (plus that poll)
            assert body["alarm"]["raised_ts"] <= t_fail + INTERVAL_S + 1.0


async def _wait(rx: Receiver, done: Any, timeout_s: float = 60.0) -> None:
    """Wait for webhook deliveries until done() holds."""

    def block() -> None:
        with rx.cond:
            if not rx.cond.wait_for(done, timeout=timeout_s):
                raise AssertionError(f"webhooks so far: {[(b['type'], b['alarm']['rule']) for b in rx.bodies]}")

    await asyncio.to_thread(block)
