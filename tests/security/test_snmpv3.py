"""SNMPv3 authPriv: wrong keys, an unknown user or a weaker security level get nothing back, and keys stay secret.

Against our simulator and against Net-SNMP's snmpd (an agent that is not ours).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.drivers.snmp import SnmpDriver
from models import catalog
from simulators.snmp import SnmpSimulator, V3User
from tests.support import servers
from tests.support.snmp import free_udp_port, make_device

pytestmark = pytest.mark.timeout(120)

USER = "netops"
AUTH_KEY = "auth-Secret-4711"
PRIV_KEY = "priv-Secret-0815"

HOST_MODEL = """
id = "secure-host"
kind = "generic"
protocol = "snmp"
description = "sysDescr and sysContact of any SNMP agent"

[[points]]
name = "sys_descr"
oid = "1.3.6.1.2.1.1.1.0"
type = "string"

[[points]]
name = "sys_contact"
oid = "1.3.6.1.2.1.1.4.0"
type = "string"
"""


@dataclass(frozen=True)
class Agent:
    port: int
    model: str  # catalog id or model file


@pytest.fixture(params=["simulator", "snmpd"])
async def snmp_agent(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Agent]:
    if request.param == "simulator":
        user = V3User(USER, "SHA-256", AUTH_KEY, "AES", PRIV_KEY)
        async with SnmpSimulator(catalog.load("ups-rfc1628"), speed=0.0, v3_users=[user]) as sim:
            yield Agent(sim.port, "ups-rfc1628")
        return
    snmpd = servers.find_binary("snmpd")
    if snmpd is None:
        message = "snmpd is not installed (Debian package snmpd)"
        if servers.servers_required():
            pytest.fail(message)
        pytest.skip(message)
    port = free_udp_port()
    conf = tmp_path / "snmpd.conf"
    conf.write_text(
        f"agentaddress udp:127.0.0.1:{port}\nsyscontact ops@example.com\n"
        f'createUser {USER} SHA-256 "{AUTH_KEY}" AES "{PRIV_KEY}"\nrouser {USER} authpriv\n',
        encoding="utf-8",
    )
    (tmp_path / "persist").mkdir()
    env = {**os.environ, "SNMP_PERSISTENT_DIR": str(tmp_path / "persist"), "MIBS": ""}
    proc = await asyncio.create_subprocess_exec(
        snmpd, "-f", "-Lo", "-C", "-c", str(conf), "-p", str(tmp_path / "snmpd.pid"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            while "NET-SNMP version" not in (line := (await proc.stdout.readline()).decode(errors="replace")):
                assert line, "snmpd exited"
        model = tmp_path / "secure-host.toml"
        model.write_text(HOST_MODEL, encoding="utf-8")
        yield Agent(port, str(model))
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), timeout=10)


def _options(tmp_path: Path, user: str, auth: str | None, priv: str | None, *, auth_key: str, priv_key: str) -> str:
    (tmp_path / "auth.key").write_text(auth_key + "\n", encoding="utf-8")
    (tmp_path / "priv.key").write_text(priv_key + "\n", encoding="utf-8")
    parts = ['version = "3"', f'user = "{user}"']
    if auth:
        parts += [f'auth = "{auth}"', f'auth_key_file = "{tmp_path / "auth.key"}"']
    if priv:
        parts += [f'priv = "{priv}"', f'priv_key_file = "{tmp_path / "priv.key"}"']
    return "{ " + ", ".join(parts) + " }"


CASES = {
    "wrong-auth-key": (USER, "SHA-256", "AES", "not-the-auth-key", PRIV_KEY),
    "wrong-priv-key": (USER, "SHA-256", "AES", AUTH_KEY, "not-the-priv-key"),
    "unknown-user": ("mallory", "SHA-256", "AES", AUTH_KEY, PRIV_KEY),
    "wrong-auth-protocol": (USER, "SHA-512", "AES", AUTH_KEY, PRIV_KEY),
    "no-privacy": (USER, "SHA-256", None, AUTH_KEY, PRIV_KEY),
}


async def test_the_right_keys_read_the_agent(snmp_agent: Agent, tmp_path: Path) -> None:
    device = make_device(
        tmp_path,
        snmp_agent.model,
        snmp_agent.port,
        _options(tmp_path, USER, "SHA-256", "AES", auth_key=AUTH_KEY, priv_key=PRIV_KEY),
    )
    driver = SnmpDriver()
    try:
        result = await driver.poll(device)
    finally:
        await driver.close()
    assert result.error is None
    assert result.good > 0


@pytest.mark.parametrize("case", list(CASES))
async def test_wrong_credentials_get_nothing(
    snmp_agent: Agent, tmp_path: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    user, auth, priv, auth_key, priv_key = CASES[case]
    device = make_device(
        tmp_path,
        snmp_agent.model,
        snmp_agent.port,
        _options(tmp_path, user, auth, priv, auth_key=auth_key, priv_key=priv_key),
        timeout_s=0.5,
    )
    driver = SnmpDriver()
    caplog.set_level(logging.DEBUG)
    try:
        results = [await driver.poll(device) for _ in range(2)]
    finally:
        await driver.close()
    for result in results:
        # Refused as a whole (an authentication failure), or object by object (snmpd's access control
        # refuses authNoPriv for an authPriv user): either way nothing is read.
        assert result.error is None or device.id in result.error
        assert result.good == 0, case
        assert all(r.value is None and not r.quality.good for r in result.points.values())
        assert all(r.value is None for rows in result.tables.values() for row in rows.values() for r in row.values())
    said = caplog.text + " ".join(r.error or "" for r in results)
    for secret in {AUTH_KEY, PRIV_KEY, auth_key, priv_key}:
        assert secret not in said
