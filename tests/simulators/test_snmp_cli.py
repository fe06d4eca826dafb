"""dcim-sim device serves an SNMP model; dcim-agent poll-once --json reads it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.snmp import free_udp_port

BIN = Path(sys.executable).parent


def test_sim_device_and_poll_once_json(tmp_path: Path) -> None:
    port = free_udp_port()
    sim = subprocess.Popen(
        [str(BIN / "dcim-sim"), "device", "pdu-apc-rpdu2", "--port", str(port), "--seed", "7"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert sim.stdout is not None
        assert sim.stdout.readline().strip() == f"ready snmp pdu-apc-rpdu2 on 127.0.0.1:{port}"
        config = tmp_path / "agent.toml"
        config.write_text(
            '[agent]\nid = "edge-01"\nsite = "lab"\n'
            f'[[devices]]\nid = "pdu-a1"\nmodel = "pdu-apc-rpdu2"\nport = {port}\n',
            encoding="utf-8",
        )
        out = subprocess.run(
            [str(BIN / "dcim-agent"), "poll-once", "--config", str(config), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.kill(sim.pid, signal.SIGTERM)
        sim.wait(timeout=10)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert obj["device"] == "pdu-a1"
    assert obj["model"] == "pdu-apc-rpdu2"
    assert obj["points"]["load_state"] == {"value": "normal", "unit": "", "quality": "good"}
    assert obj["points"]["power"]["unit"] == "kW"
    assert len(obj["tables"]["outlet"]) == 24
    assert obj["tables"]["outlet"]["24"]["energy"]["quality"] == "good"
    assert sim.returncode == 0
