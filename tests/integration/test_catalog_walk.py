"""Every catalog model: served by `dcim-sim device`, read back by `dcim-agent poll-once --json`.

This drives both programs only through their command-line contracts, as software
outside the project would, over real sockets on loopback.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from models import catalog
from models.schema import Protocol
from tests.support.servers import free_port

# Points a model deliberately reports as unavailable by default (the simulated device
# has nothing there, like a real one): none today; listed here so an exception is explicit.
EXPECTED_NOT_GOOD: dict[str, set[str]] = {}


@pytest.fixture(params=catalog.catalog_ids())
def served(request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    model_id: str = request.param
    model = catalog.load(model_id)
    kind = socket.SOCK_STREAM if model.protocol is Protocol.MODBUS else socket.SOCK_DGRAM
    port = free_port(kind)
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulators.cli", "device", model_id, "--port", str(port), "--seed", "7"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the simulator says it is ready
        assert line.startswith(f"ready {model.protocol} {model_id}"), (line, proc.stderr.read() if proc.stderr else "")
        yield model_id, port
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def agent_config(tmp_path: Path, model_id: str, port: int) -> Path:
    model = catalog.load(model_id)
    options = {
        Protocol.MODBUS: 'modbus = { unit = 1, framer = "tcp" }',
        Protocol.SNMP: 'snmp = { version = "2c", community = "public" }',
        Protocol.BACNET: f"bacnet = {{ device_instance = {int(model.bacnet.get('device_instance', 1001))} }}",
    }[model.protocol]
    path = tmp_path / "agent.toml"
    path.write_text(
        f"""
[agent]
id = "edge-test"
site = "lab"
[defaults]
timeout_s = 3.0
retries = 1
[[devices]]
id = "dut"
model = "{model_id}"
host = "127.0.0.1"
port = {port}
{options}
"""
    )
    return path


def test_catalog_model_round_trips_through_the_clis(served: tuple[str, int], tmp_path: Path) -> None:
    model_id, port = served
    model = catalog.load(model_id)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent.cli",
            "poll-once",
            "--config",
            str(agent_config(tmp_path, model_id, port)),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert obj["device"] == "dut"
    assert obj["model"] == model_id
    assert set(obj["points"]) == {p.name for p in model.points}
    bad = {
        name: p["quality"]
        for name, p in obj["points"].items()
        if p["quality"] != "good" and name not in EXPECTED_NOT_GOOD.get(model_id, set())
    }
    assert bad == {}
    for point in model.points:
        got = obj["points"][point.name]
        assert got["unit"] == point.unit
        assert got["value"] is not None
    for table in model.tables:
        rows = obj.get("tables", {}).get(table.name, {})
        if table.rows and not table.volatile:
            assert set(rows) >= set(table.rows), table.name
