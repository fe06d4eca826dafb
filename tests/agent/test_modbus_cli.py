"""The command line end to end: `dcim-sim device` serves, `dcim-agent poll-once --json` and `write` read it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from models import catalog
from tests.support.servers import free_port

BIN = Path(sys.executable).parent


@contextmanager
def sim_device(model: str, port: int) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [str(BIN / "dcim-sim"), "device", model, "--port", str(port), "--seed", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == f"ready modbus {model} on 127.0.0.1:{port}\n", proc.stderr.read() if proc.stderr else ""
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)


def agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "dcim-agent"), *args], capture_output=True, text=True, timeout=60, check=False)


def write_config(path: Path, devices: list[tuple[str, str, int]]) -> Path:
    lines = ["[agent]", 'id = "edge-01"', 'site = "bj-dx"', "", "[defaults]", "timeout_s = 1.0", "retries = 0"]
    for device_id, model, port in devices:
        lines += ["", "[[devices]]", f'id = "{device_id}"', f'model = "{model}"', 'host = "127.0.0.1"',
                  f"port = {port}", 'modbus = { unit = 1, framer = "tcp" }']
    path.write_text("\n".join(lines) + "\n")
    return path


def test_poll_once_json_prints_the_contract_format(tmp_path: Path) -> None:
    meter_port, ups_port, dead_port = free_port(), free_port(), free_port()
    config = write_config(
        tmp_path / "agent.toml",
        [("meter-main", "meter-sdm630", meter_port), ("ups-a1", "ups-apc-modbus", ups_port),
         ("gone", "pump-modbus", dead_port)],
    )
    with sim_device("meter-sdm630", meter_port), sim_device("ups-apc-modbus", ups_port):
        done = agent("poll-once", "--config", str(config), "--json")
        only = agent("poll-once", "--config", str(config), "--json", "--device", "meter-main")
    assert done.returncode == 1, done.stderr  # one device did not answer
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [o["device"] for o in lines] == ["meter-main", "ups-a1", "gone"]
    meter, ups, gone = lines
    assert meter["model"] == "meter-sdm630"
    assert isinstance(meter["ts"], float)
    model = catalog.load("meter-sdm630")
    assert set(meter["points"]) == {p.name for p in model.points}
    assert meter["points"]["l1_voltage"]["unit"] == "V"
    assert meter["points"]["l1_voltage"]["quality"] == "good"
    assert 200 < meter["points"]["l1_voltage"]["value"] < 260
    assert ups["points"]["status"] == {"value": "online", "unit": "", "quality": "good"}
    assert ups["points"]["transfer_reason"]["value"] == "acceptable_input"
    assert ups["points"]["model"]["value"] == "Smart-UPS SRT 10000"
    assert {p["quality"] for p in gone["points"].values()} == {"comm_error"}
    assert all(p["value"] is None for p in gone["points"].values())
    assert only.returncode == 0, only.stderr
    assert [json.loads(line)["device"] for line in only.stdout.splitlines()] == ["meter-main"]


def test_write_command_writes_and_reads_back(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path / "agent.toml", [("pump-1", "pump-modbus", port)])
    with sim_device("pump-modbus", port):
        ok = agent("write", "--config", str(config), "--device", "pump-1", "--point", "speed_setpoint",
                   "--value", "80")
        refused = agent("write", "--config", str(config), "--device", "pump-1", "--point", "speed_setpoint",
                        "--value", "100")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("pump-1.speed_setpoint: written: before 78.0 after 80.0 %")
    assert refused.returncode == 1
    assert "max_step" in refused.stderr


def test_sim_device_stops_cleanly_on_sigterm_and_fails_on_a_busy_port() -> None:
    port = free_port()
    with sim_device("gateway-nbiot", port) as proc:
        busy = subprocess.run(
            [str(BIN / "dcim-sim"), "device", "gateway-nbiot", "--port", str(port)],
            capture_output=True, text=True, timeout=60, check=False,
        )
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    assert busy.returncode == 1
    assert busy.stdout == ""
    assert f"127.0.0.1:{port}" in busy.stderr
