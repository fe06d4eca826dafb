"""Agent configuration: check-config accepts good files and names file, key and reason otherwise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent import config

MODEL = """
id = "meter-local"
kind = "meter"
protocol = "modbus"
[[points]]
name = "active_power"
unit = "W"
register = "input"
address = 52
type = "float32"
"""

GOOD = """
[agent]
id = "edge-01"
site = "bj-dx"

[mqtt]
url = "mqtt://127.0.0.1:1883"

[spool]
path = "spool.sqlite"
max_mb = 64
when_full = "drop-oldest"

[defaults]
interval_s = 10
timeout_s = 2.0
retries = 1

[[devices]]
id = "meter-main"
model = "meter-local.toml"
host = "127.0.0.1"
port = 5020
modbus = { unit = 1, framer = "tcp" }
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "meter-local.toml").write_text(MODEL)
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_good_config_loads(tmp_path: Path) -> None:
    loaded = config.load(write(tmp_path, GOOD))
    device = loaded.device("meter-main")
    assert device.model.id == "meter-local"
    assert device.interval_s == 10
    assert device.port == 5020
    result = check_config(tmp_path / "agent.toml")
    assert result.returncode == 0, result.stderr
    assert "meter-main" in result.stdout


@pytest.mark.parametrize(
    ("change", "key", "reason"),
    [
        (("max_mb = 64", "max_mb = -1"), "spool.max_mb", "greater than 0"),
        (('when_full = "drop-oldest"', 'when_full = "explode"'), "spool.when_full", "drop-oldest"),
        (("port = 5020", 'port = 5020\ncolour = "red"'), "devices[0] (meter-main).colour", "unknown key"),
        (('url = "mqtt://127.0.0.1:1883"', 'url = "http://x"'), "mqtt.url", "mqtt:// or mqtts://"),
        (
            ('modbus = { unit = 1, framer = "tcp" }', 'snmp = { version = "2c" }'),
            "devices[0] (meter-main).snmp",
            "speaks modbus, not snmp",
        ),
        (
            ('model = "meter-local.toml"', 'model = "no-such-model"'),
            "devices[0] (meter-main).model",
            "no catalog model 'no-such-model'",
        ),
        (('id = "edge-01"', 'id = "edge/01"'), "agent.id", "not a valid id"),
        (('[agent]\nid = "edge-01"\nsite = "bj-dx"\n', ""), "agent", "required key is missing"),
        (('framer = "tcp"', 'framer = "rtu"'), "devices[0] (meter-main).modbus", "needs 'serial'"),
    ],
)
def test_broken_config_names_file_key_reason_and_exits_2(
    tmp_path: Path, change: tuple[str, str], key: str, reason: str
) -> None:
    assert change[0] in GOOD
    path = write(tmp_path, GOOD.replace(*change))
    result = check_config(path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert str(path) in result.stderr
    assert key in result.stderr
    assert reason in result.stderr


def test_duplicate_device_ids(tmp_path: Path) -> None:
    text = GOOD + GOOD[GOOD.index("[[devices]]") :]
    result = check_config(write(tmp_path, text))
    assert result.returncode == 2
    assert "devices[1].id: 'meter-main' is already used by devices[0]" in result.stderr


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    missing = check_config(tmp_path / "nope.toml")
    assert missing.returncode == 2
    assert "nope.toml: file not found" in missing.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[agent\nid=")
    result = check_config(bad)
    assert result.returncode == 2
    assert "not valid TOML" in result.stderr


def test_every_cli_has_help() -> None:
    for module in ("agent.cli", "collector.cli", "simulators.cli"):
        result = subprocess.run(
            [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0
        assert "usage:" in result.stdout
