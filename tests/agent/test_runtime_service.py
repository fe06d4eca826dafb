"""The systemd unit and the example configuration that ship with the agent."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from pydantic import BaseModel

from agent import config as agent_config
from tests.agent.agent_helpers import REPO, VENV_BIN

UNIT = REPO / "systemd" / "dcim-agent.service"
EXAMPLE = REPO / "configs" / "agent.example.toml"


def _directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_the_unit_is_a_sandboxed_notify_service_with_a_watchdog() -> None:
    d = _directives(UNIT.read_text())
    assert d["Type"] == ["notify"]
    assert int(d["WatchdogSec"][0]) > 0
    assert d["Restart"] == ["on-failure"]
    assert d["DynamicUser"] == ["yes"]
    assert d["StateDirectory"] == ["dcim-agent"]
    assert d["ProtectSystem"] == ["strict"]
    assert d["NoNewPrivileges"] == ["yes"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["ExecStart"][0].endswith("dcim-agent run --config /etc/dcim/agent.toml")


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / "dcim-agent.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/dcim-agent", str(VENV_BIN / "dcim-agent")))
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False)
    problems = [line for line in done.stderr.splitlines() if "dcim-agent.service" in line]
    assert problems == [], done.stderr


def test_the_example_configuration_passes_check_config() -> None:
    done = subprocess.run(
        [str(VENV_BIN / "dcim-agent"), "check-config", "--config", str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "ok: agent edge-01 at site bj-dx" in done.stdout


def _keys(model: type[BaseModel]) -> set[str]:
    return set(model.model_fields)


@pytest.mark.parametrize(
    ("section", "model"),
    [
        ("agent", agent_config.AgentSection),
        ("mqtt", agent_config.MqttSection),
        ("spool", agent_config.SpoolSection),
        ("defaults", agent_config.DefaultsSection),
        ("commands", agent_config.CommandsSection),
        ("traps", agent_config.TrapsSection),
        ("devices", agent_config.DeviceConfig),
        ("snmp", agent_config.SnmpOptions),
        ("modbus", agent_config.ModbusOptions),
        ("bacnet", agent_config.BacnetOptions),
    ],
)
def test_the_example_names_every_key(section: str, model: type[BaseModel]) -> None:
    text = EXAMPLE.read_text()
    missing = sorted(k for k in _keys(model) if k not in text)
    assert missing == [], f"[{section}] keys missing from {EXAMPLE.name}: {missing}"
