"""Helpers for SNMP tests: devices from inline configs, simulators on free UDP ports."""

from __future__ import annotations

import socket
from pathlib import Path

from agent import config as agent_config
from agent.config import Device
from tests.support.servers import free_port

V3_AUTH_KEY = "test-auth-passphrase"
V3_PRIV_KEY = "test-priv-passphrase"


def free_udp_port() -> int:
    """A UDP port nobody listens on right now."""
    return free_port(socket.SOCK_DGRAM)


def make_devices(
    tmp_path: Path, *devices: tuple[str, str, int, str], timeout_s: float = 1.0, retries: int = 0
) -> list[Device]:
    """Devices from (id, model, port, snmp inline table or "") through the real config loader."""
    lines = ['[agent]\nid = "edge-test"\nsite = "lab"\n', f"[defaults]\ntimeout_s = {timeout_s}\nretries = {retries}\n"]
    for device_id, model, port, snmp in devices:
        lines.append(f'[[devices]]\nid = "{device_id}"\nmodel = "{model}"\nhost = "127.0.0.1"\nport = {port}\n')
        if snmp:
            lines.append(f"snmp = {snmp}\n")
    path = tmp_path / f"agent-{len(list(tmp_path.glob('agent-*.toml')))}.toml"
    path.write_text("".join(lines), encoding="utf-8")
    return list(agent_config.load(path).devices)


def make_device(tmp_path: Path, model: str, port: int, snmp: str = "", **kwargs: float) -> Device:
    """One device (id "dev")."""
    return make_devices(tmp_path, ("dev", model, port, snmp), **kwargs)[0]  # type: ignore[arg-type]


def v3_options(tmp_path: Path, user: str = "dcim", auth: str = "SHA-256", priv: str = "AES") -> str:
    """An snmp inline table for SNMPv3 authPriv with key files written to tmp_path."""
    auth_file = tmp_path / "auth.key"
    priv_file = tmp_path / "priv.key"
    auth_file.write_text(V3_AUTH_KEY + "\n", encoding="utf-8")
    priv_file.write_text(V3_PRIV_KEY + "\n", encoding="utf-8")
    return (
        f'{{ version = "3", user = "{user}", auth = "{auth}", auth_key_file = "{auth_file}", '
        f'priv = "{priv}", priv_key_file = "{priv_file}" }}'
    )
