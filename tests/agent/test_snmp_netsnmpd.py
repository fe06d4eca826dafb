"""Our driver reads an SNMP agent that is not ours: Net-SNMP's snmpd, v2c and v3 authPriv."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.drivers.snmp import SnmpDriver
from models.quality import Quality
from tests.support.servers import find_binary
from tests.support.snmp import free_udp_port, make_device

SNMPD = find_binary("snmpd")
pytestmark = pytest.mark.skipif(SNMPD is None, reason="Debian package snmpd is not installed")

HOST_MODEL = """
id = "netsnmp-host"
kind = "generic"
protocol = "snmp"
description = "a Linux host's MIB-II, as Net-SNMP serves it"

[[points]]
name = "sys_descr"
oid = "1.3.6.1.2.1.1.1.0"
type = "string"

[[points]]
name = "sys_object_id"
oid = "1.3.6.1.2.1.1.2.0"

[[points]]
name = "sys_uptime"
unit = "s"
oid = "1.3.6.1.2.1.1.3.0"

[[points]]
name = "sys_contact"
oid = "1.3.6.1.2.1.1.4.0"
type = "string"

[[points]]
name = "sys_location"
oid = "1.3.6.1.2.1.1.6.0"
type = "string"

[[points]]
name = "not_there"
oid = "1.3.6.1.4.1.99999.1.0"

[[tables]]
name = "interface"
index_name = "if_index"

[[tables.columns]]
name = "descr"
oid = "1.3.6.1.2.1.2.2.1.2"
type = "string"

[[tables.columns]]
name = "type"
oid = "1.3.6.1.2.1.2.2.1.3"
enum = { 1 = "other", 6 = "ethernetCsmacd", 24 = "softwareLoopback" }

[[tables.columns]]
name = "mtu"
oid = "1.3.6.1.2.1.2.2.1.4"

[[tables.columns]]
name = "in_octets"
oid = "1.3.6.1.2.1.2.2.1.10"
counter = true

[[tables]]
name = "interface_x"
index_name = "if_index"

[[tables.columns]]
name = "name"
oid = "1.3.6.1.2.1.31.1.1.1.1"
type = "string"

[[tables.columns]]
name = "hc_in_octets"
oid = "1.3.6.1.2.1.31.1.1.1.6"
counter = true

[[tables]]
name = "ip_address"
index_name = "address"

[[tables.columns]]
name = "address"
oid = "1.3.6.1.2.1.4.20.1.1"

[[tables.columns]]
name = "if_index"
oid = "1.3.6.1.2.1.4.20.1.2"
"""


@pytest.fixture
async def snmpd(tmp_path: Path) -> AsyncIterator[int]:
    assert SNMPD is not None
    port = free_udp_port()
    conf = tmp_path / "snmpd.conf"
    conf.write_text(
        f"agentaddress udp:127.0.0.1:{port}\n"
        "rocommunity public 127.0.0.1\n"
        "syscontact ops@example.com\n"
        "syslocation lab room 1\n"
        'createUser netops SHA-256 "netops-auth-key" AES "netops-priv-key"\n'
        "rouser netops authpriv\n",
        encoding="utf-8",
    )
    persistent = tmp_path / "persist"
    persistent.mkdir()
    env = {**os.environ, "SNMP_PERSISTENT_DIR": str(persistent), "MIBS": ""}
    proc = await asyncio.create_subprocess_exec(
        SNMPD,
        "-f",
        "-Lo",
        "-C",
        "-c",
        str(conf),
        "-p",
        str(tmp_path / "snmpd.pid"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(30):
            while True:
                line = (await proc.stdout.readline()).decode(errors="replace")
                if not line:
                    pytest.fail(f"snmpd exited: {''.join(seen)}")
                seen.append(line)
                if "NET-SNMP version" in line:
                    break
        yield port
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), timeout=10)


@pytest.mark.parametrize("version", ["2c", "3"])
async def test_driver_reads_net_snmp_snmpd(snmpd: int, tmp_path: Path, version: str) -> None:
    model_file = tmp_path / "netsnmp-host.toml"
    model_file.write_text(HOST_MODEL, encoding="utf-8")
    if version == "3":
        (tmp_path / "a.key").write_text("netops-auth-key\n", encoding="utf-8")
        (tmp_path / "p.key").write_text("netops-priv-key\n", encoding="utf-8")
        snmp = (
            f'{{ version = "3", user = "netops", auth = "SHA-256", auth_key_file = "{tmp_path / "a.key"}", '
            f'priv = "AES", priv_key_file = "{tmp_path / "p.key"}" }}'
        )
    else:
        snmp = '{ version = "2c", community = "public" }'
    device = make_device(tmp_path, str(model_file), snmpd, snmp, timeout_s=2.0)
    driver = SnmpDriver()
    try:
        first = await driver.poll(device)
        second = await driver.poll(device)
    finally:
        await driver.close()
    for result in (first, second):
        assert result.error is None
        points = result.points
        assert "Linux" in str(points["sys_descr"].value)
        assert points["sys_object_id"].value == "1.3.6.1.4.1.8072.3.2.10"  # Net-SNMP on Linux
        assert isinstance(points["sys_uptime"].value, float)
        assert points["sys_contact"].value == "ops@example.com"
        assert points["sys_location"].value == "lab room 1"
        assert points["not_there"].quality is Quality.NO_SUCH_OBJECT
        loopback = next(row for row in result.tables["interface"].values() if row["descr"].value == "lo")
        assert loopback["type"].value == "softwareLoopback"
        assert isinstance(loopback["mtu"].value, int)
        assert isinstance(loopback["in_octets"].value, int)
        assert any(row["name"].value == "lo" for row in result.tables["interface_x"].values())
        assert all(r["hc_in_octets"].quality.good for r in result.tables["interface_x"].values())
        addresses = result.tables["ip_address"]
        assert addresses["127.0.0.1"]["address"].value == "127.0.0.1"  # IpAddress, and an IP row index
    assert second.points["sys_uptime"].value >= first.points["sys_uptime"].value  # type: ignore[operator]
    assert second.requests < first.requests  # rows cached: no walks the second time
