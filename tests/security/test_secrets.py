"""Secrets never appear in what the agent and the collector print, log (at debug level) or audit.

Passwords, an InfluxDB password, an SNMP community and SNMPv3 keys live in files (the
community in the configuration, where SNMP puts it); the programs run with debug logging,
succeed, fail on wrong credentials, and report configuration mistakes. None of the
secrets, nor the HTTP basic-auth string made from one, may show up anywhere.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import pytest

from models import catalog, telemetry
from simulators.modbus import ThreadedSimulator
from simulators.snmp import SnmpSimulator, V3User
from tests.agent.agent_helpers import VENV_BIN, base_sections, write_config
from tests.security.helpers import (
    PASSWORDS,
    SITE,
    Client,
    SecureBroker,
    binary_or_skip,
    start_secure_broker,
    wait,
)
from tests.support import servers

pytestmark = [pytest.mark.servers, pytest.mark.timeout(240)]

COMMUNITY = "c0mmunity-Str1ng-zq"
AUTH_KEY = "v3-auth-Key-hx81"
PRIV_KEY = "v3-priv-Key-pw27"
INFLUX_PASSWORD = "influx-Pw-m4x9"
WRONG = "wr0ng-Guess-ab12"


def secrets() -> list[str]:
    basic = base64.b64encode(f"admin:{INFLUX_PASSWORD}".encode()).decode()
    return [*PASSWORDS.values(), COMMUNITY, AUTH_KEY, PRIV_KEY, INFLUX_PASSWORD, WRONG, basic]


def assert_clean(where: str, text: str) -> None:
    leaked = [s for s in secrets() if s in text]
    assert not leaked, f"{where} shows {leaked}"


class SnmpAgents:
    """SNMP simulators (v2c with a private community; v3 authPriv) on a thread of their own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        model = catalog.load("ups-rfc1628")
        self.v2c = SnmpSimulator(model, speed=0.0, community=COMMUNITY, v3_users=[])
        self.v3 = SnmpSimulator(model, speed=0.0, v3_users=[V3User("ops", "SHA-256", AUTH_KEY, "AES", PRIV_KEY)])

    def __enter__(self) -> Self:
        self.thread.start()
        for sim in (self.v2c, self.v3):
            asyncio.run_coroutine_threadsafe(sim.start(), self.loop).result(30)
        return self

    def __exit__(self, *_exc: object) -> None:
        for sim in (self.v2c, self.v3):
            asyncio.run_coroutine_threadsafe(sim.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def run(*args: str, cwd: Path) -> str:
    """A CLI command's stdout and stderr together."""
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=cwd, check=False)
    return proc.stdout + proc.stderr


def start(args: list[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args, stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True, env=dict(os.environ)
    )


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    return proc.returncode


@pytest.fixture
def influx_with_auth(tmp_path: Path) -> Iterator[servers.InfluxDB]:
    influx = servers.start_influxdb(binary_or_skip("influxd"), tmp_path / "influxdb")
    try:
        influx.query(f"CREATE USER admin WITH PASSWORD '{INFLUX_PASSWORD}' WITH ALL PRIVILEGES", method="POST")
        influx.stop()
        conf = influx.workdir / "influxdb.conf"
        conf.write_text(
            conf.read_text().replace("[http]\n  enabled = true\n", "[http]\n  enabled = true\n  auth-enabled = true\n")
        )
        influx.start()
        yield influx
    finally:
        influx.stop()


def _write_secrets(folder: Path) -> None:
    for name, text in {
        "agent.secret": PASSWORDS["edge-01"],
        "collector.secret": PASSWORDS["collector-1"],
        "influx.secret": INFLUX_PASSWORD,
        "auth.key": AUTH_KEY,
        "priv.key": PRIV_KEY,
        "wrong.secret": WRONG,
    }.items():
        (folder / name).write_text(text + "\n")


def _agent_config(folder: Path, secure: SecureBroker, snmp: SnmpAgents, pump_port: int) -> Path:
    v3 = {
        "version": "3",
        "user": "ops",
        "auth": "SHA-256",
        "auth_key_file": str(folder / "auth.key"),
        "priv": "AES",
        "priv_key_file": str(folder / "priv.key"),
    }
    v2c = {"version": "2c", "community": COMMUNITY}
    wrong_v3 = {**v3, "priv_key_file": str(folder / "wrong.secret")}
    devices: list[dict[str, object]] = [
        {"id": "ups-v2c", "model": "ups-rfc1628", "port": snmp.v2c.port, "snmp": v2c},
        {"id": "ups-v3", "model": "ups-rfc1628", "port": snmp.v3.port, "snmp": v3},
        {"id": "ups-v3-wrong", "model": "ups-rfc1628", "port": snmp.v3.port, "snmp": wrong_v3},
        {"id": "pump-1", "model": "pump-modbus", "port": pump_port},
    ]
    mqtt: dict[str, object] = {
        "username": "edge-01",
        "password_file": str(folder / "agent.secret"),
        "ca_file": str(secure.certs.ca),
    }
    sections = base_sections(
        folder,
        secure.url,
        mqtt=mqtt,
        agent={"log_level": "debug"},
        defaults={"interval_s": 0.5, "timeout_s": 0.5, "retries": 0},
    )
    return write_config(folder / "agent.toml", sections, devices)


def _collector_config(folder: Path, secure: SecureBroker, influx: servers.InfluxDB) -> Path:
    path = folder / "collector.toml"
    path.write_text(
        "\n".join(
            [
                f'[collector]\nid = "collector-1"\nsite = "{SITE}"\nlog_level = "debug"\n',
                f'[mqtt]\nurl = "{secure.url}"\nusername = "collector-1"',
                f'password_file = "{folder / "collector.secret"}"\nca_file = "{secure.certs.ca}"\n',
                f'[store]\nkind = "influxdb"\nurl = "{influx.url}"\nusername = "admin"',
                f'password_file = "{folder / "influx.secret"}"\ntimeout_s = 2.0\n',
                "[ingest]\nmetrics_interval_s = 0.5\n",
            ]
        )
    )
    return path


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _command_audited(secure: SecureBroker, audit: Path) -> None:
    """A command sent with the collector's credentials, refused by limits, and audited by the agent."""
    operator = Client(secure, "collector-1", "secrets-operator").start()
    try:
        cmd = telemetry.Command(
            id=uuid.uuid4().hex,
            device="pump-1",
            point="speed_setpoint",
            value=1000.0,
            expires=time.time() + 60,
            by="collector-1",
        )
        operator.publish(telemetry.command_topic(SITE, "edge-01"), telemetry.encode(cmd))
        wait(lambda: cmd.id in _text(audit), "the audited command")
    finally:
        operator.stop()


def _run_services(
    folder: Path, agent_toml: Path, collector_toml: Path, influx: servers.InfluxDB, secure: SecureBroker
) -> None:
    """Agent and collector with debug logging until telemetry is stored and a command audited."""
    collector = start([*COLLECTOR_CLI, "run", "--config", str(collector_toml)], folder / "collector.log", folder)
    agent = start([*AGENT_CLI, "run", "--config", str(agent_toml)], folder / "agent.log", folder)
    try:

        def stored() -> bool:
            try:
                return _count(influx, 'SELECT count(*) FROM "ups"') > 0
            except OSError:
                return False

        wait(stored, "telemetry stored with the InfluxDB password", 90)
        _command_audited(secure, folder / "audit.jsonl")
        assert stop(agent) == 0
        assert stop(collector) == 0
    finally:
        stop(agent)
        stop(collector)


def _run_with_wrong_passwords(folder: Path, agent_toml: Path, collector_toml: Path) -> None:
    (folder / "agent.secret").write_text(WRONG + "\n")
    (folder / "influx.secret").write_text(WRONG + "\n")
    agent = start([*AGENT_CLI, "run", "--config", str(agent_toml)], folder / "agent-wrong.log", folder)
    collector = start([*COLLECTOR_CLI, "run", "--config", str(collector_toml)], folder / "collector-wrong.log", folder)
    try:
        wait(lambda: "refused the connection" in _text(folder / "agent-wrong.log"), "the broker's refusal")
        wait(lambda: "401 authorization failed" in _text(folder / "collector-wrong.log"), "InfluxDB's refusal")
    finally:
        stop(agent)
        stop(collector)


AGENT_CLI = [str(VENV_BIN / "dcim-agent"), "-v"]
COLLECTOR_CLI = [sys.executable, "-m", "collector.cli", "-v"]


def test_no_secret_is_printed_logged_or_audited(tmp_path: Path, influx_with_auth: servers.InfluxDB) -> None:
    influx = influx_with_auth
    secure = start_secure_broker(binary_or_skip("mosquitto"), tmp_path / "mqtt")
    _write_secrets(tmp_path)
    out: dict[str, str] = {}
    pump = ThreadedSimulator(catalog.load("pump-modbus"))
    pump.start()
    try:
        with SnmpAgents() as snmp:
            agent_toml = _agent_config(tmp_path, secure, snmp, pump.port)
            collector_toml = _collector_config(tmp_path, secure, influx)
            out["agent check-config"] = run(*AGENT_CLI, "check-config", "--config", str(agent_toml), cwd=tmp_path)
            out["collector check-config"] = run(
                *COLLECTOR_CLI, "check-config", "--config", str(collector_toml), cwd=tmp_path
            )
            out["agent poll-once"] = run(*AGENT_CLI, "poll-once", "--config", str(agent_toml), cwd=tmp_path)
            out["agent poll-once --json"] = run(
                *AGENT_CLI, "poll-once", "--json", "--config", str(agent_toml), cwd=tmp_path
            )
            _run_services(tmp_path, agent_toml, collector_toml, influx, secure)
            _run_with_wrong_passwords(tmp_path, agent_toml, collector_toml)
    finally:
        pump.stop()
        secure.stop()
    for name in ("agent.log", "collector.log", "audit.jsonl", "agent-wrong.log", "collector-wrong.log"):
        out[name] = _text(tmp_path / name)
    # A secret put where it does not belong is named as a key, never echoed.
    misplaced = tmp_path / "misplaced.toml"
    misplaced.write_text(
        agent_toml.read_text().replace("[mqtt]\n", f'[mqtt]\npassword = "{PASSWORDS["edge-01"]}"\n')
        + f'\n[[devices]]\nid = "bad"\nmodel = "ups-rfc1628"\nsnmp = {{ community = 42, user = "{AUTH_KEY}" }}\n'
    )
    out["check-config, misplaced secrets"] = run(*AGENT_CLI, "check-config", "--config", str(misplaced), cwd=tmp_path)
    assert "mqtt.password: unknown key" in out["check-config, misplaced secrets"]
    assert "ok:" in out["agent check-config"]
    assert "ok:" in out["collector check-config"]
    assert '"ups-v3"' in out["agent poll-once --json"]
    assert "DEBUG" in out["agent.log"]
    assert "ups-v3-wrong" in out["agent.log"]  # the failing v3 device is reported...
    for where, text in out.items():
        assert text.strip(), f"{where} printed nothing"
        assert_clean(where, text)  # ...and nothing shows a secret


def _count(influx: servers.InfluxDB, q: str) -> int:
    """Rows an InfluxQL query returns, asked with the admin credentials."""
    params = urllib.parse.urlencode({"db": "dcim", "q": q, "u": "admin", "p": INFLUX_PASSWORD})
    with urllib.request.urlopen(f"{influx.url}/query?{params}", timeout=10) as resp:  # noqa: S310
        answer = json.loads(resp.read())
    return sum(len(series["values"]) for series in answer["results"][0].get("series", []))
