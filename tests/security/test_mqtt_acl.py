"""MQTT over TLS with passwords and an ACL: agents publish and read only their own topics, only the collector commands.

One broker, one agent (a `dcim-agent run` process polling a simulated pump) and a stand-in
collector (a client logged in as collector-1) serve every test of the module. Commands that
the broker refuses never reach the agent (the broker logs the refusal); commands the agent
refuses (sender not allowed, limits) change nothing at the device and are audited.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from models import catalog, telemetry
from simulators.modbus import ThreadedSimulator
from tests.agent.agent_helpers import AgentProcess, base_sections, start_agent, write_config
from tests.security.helpers import (
    PASSWORDS,
    SITE,
    Client,
    SecureBroker,
    binary_or_skip,
    read_audit,
    start_secure_broker,
    wait,
)

pytestmark = [pytest.mark.servers, pytest.mark.timeout(180)]

AGENT = "edge-01"
CMD = telemetry.command_topic(SITE, AGENT)
RESULT = telemetry.command_result_topic(SITE, AGENT)
POINT = "speed_setpoint"  # pump-modbus: writable, 25..100 %, at most 10 % a step


@dataclass
class Site:
    secure: SecureBroker
    sim: ThreadedSimulator
    agent: AgentProcess
    collector: Client
    audit: Path
    folder: Path

    def value(self) -> Any:
        """What the device serves for the point now (read inside the simulator)."""
        return self.sim.call(lambda s: s.unit(1).reading(POINT).value)

    def command(self, **fields: Any) -> telemetry.CommandResult:
        """Publish a command as the collector and wait for the agent's answer."""
        cmd: dict[str, Any] = {
            "id": uuid.uuid4().hex,
            "device": "pump-1",
            "point": POINT,
            "expires": time.time() + 60,
            "by": "collector-1",
        }
        cmd.update(fields)
        assert self.collector.publish(CMD, telemetry.encode(telemetry.Command(**cmd))).value == 0
        return self.result(cmd["id"])

    def result(self, cmd_id: str) -> telemetry.CommandResult:
        while True:
            topic, payload = self.collector.next_message()
            if topic == RESULT:
                result = telemetry.decode_as(telemetry.CommandResult, payload)
                if result.id == cmd_id:
                    return result

    def audited(self, cmd_id: str) -> dict[str, Any]:
        wait(lambda: any(r["id"] == cmd_id for r in read_audit(self.audit)), f"audit record of {cmd_id}")
        return next(r for r in read_audit(self.audit) if r["id"] == cmd_id)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("secure-site")
    secure = start_secure_broker(binary_or_skip("mosquitto"), folder)
    sim = ThreadedSimulator(catalog.load("pump-modbus"))
    sim.start()
    (folder / "mqtt.secret").write_text(PASSWORDS[AGENT] + "\n")
    audit = folder / "audit.jsonl"
    sections = base_sections(
        folder,
        secure.url,
        mqtt={"username": AGENT, "password_file": str(folder / "mqtt.secret"), "ca_file": str(secure.certs.ca)},
        commands={"audit_log": str(audit), "allowed_senders": ["collector-1"]},
    )
    config = write_config(folder / "agent.toml", sections, [{"id": "pump-1", "model": "pump-modbus", "port": sim.port}])
    collector = Client(secure, "collector-1", "dcim-collector-collector-1").start()
    assert collector.subscribe(f"dcim/v1/{SITE}/#")[0].value == 1
    agent = start_agent(config, folder / "agent.log")
    try:
        wait(
            lambda: (folder / "agent.log").exists() and "mqtt connected" in (folder / "agent.log").read_text(),
            "the agent",
        )
        yield Site(secure, sim, agent, collector, audit, folder)
        assert agent.terminate() == 0, agent.output()
    finally:
        agent.kill()
        collector.stop()
        sim.stop()
        secure.stop()
    assert "Traceback" not in agent.output()


def test_the_agent_publishes_over_tls_and_the_collector_commands(site: Site) -> None:
    deadline = time.monotonic() + 60
    while True:  # the agent's telemetry reaches the collector
        topic, payload = site.collector.next_message()
        if topic == telemetry.telemetry_topic(SITE, AGENT, "pump-1"):
            assert telemetry.decode_batch(payload).device == "pump-1"
            break
        assert time.monotonic() < deadline
    before = site.value()
    target = float(before) + 5.0 if float(before) <= 90 else float(before) - 5.0
    result = site.command(value=target)
    assert result.ok, result
    assert site.value() == pytest.approx(target, abs=0.05)
    record = site.audited(result.id)
    assert record["outcome"] == "written"
    assert record["by"] == "collector-1"


def test_another_agent_cannot_impersonate_read_or_command(site: Site) -> None:
    rogue = Client(site.secure, "edge-02", "rogue-edge-02").start()
    try:
        before = site.value()
        fake = telemetry.Batch(
            site=SITE,
            agent=AGENT,
            device="pump-1",
            model="pump-modbus",
            kind="pump",
            seq=1,
            ts=time.time(),
            points={"speed": telemetry.Point(0.0, "%")},
        )
        forged = telemetry.Command(
            id="forged-" + uuid.uuid4().hex,
            device="pump-1",
            point=POINT,
            value=25.0,
            expires=time.time() + 60,
            by="collector-1",
        )
        assert (
            str(rogue.publish(telemetry.telemetry_topic(SITE, AGENT, "pump-1"), telemetry.encode(fake)))
            == "Not authorized"
        )
        assert str(rogue.publish(CMD, telemetry.encode(forged))) == "Not authorized"
        # It may subscribe to another agent's commands and telemetry, but receives none of them.
        rogue.subscribe(CMD)
        rogue.subscribe(f"dcim/v1/{SITE}/{AGENT}/+/telemetry")
        rogue.subscribe(telemetry.command_topic(SITE, "edge-02"))
        probe = site.command(value=1000.0)  # refused by the agent's limits: delivered, changes nothing
        assert not probe.ok
        sentinel = telemetry.Command(id="sentinel", device="x", point="y", value=1.0, expires=time.time() + 60)
        assert site.collector.publish(telemetry.command_topic(SITE, "edge-02"), telemetry.encode(sentinel)).value == 0
        topic, _ = rogue.next_message()
        assert topic == telemetry.command_topic(SITE, "edge-02"), f"edge-02 read {topic}"
        # The forged command never reached the agent: not carried out, not in its audit log.
        assert all(r["id"] != forged.id for r in read_audit(site.audit))
        assert site.value() == before
        log = site.secure.log.read_text(errors="replace")
        assert f"Denied PUBLISH from rogue-edge-02 (d0, q1, r0, m2, '{CMD}'" in log
    finally:
        rogue.stop()


def test_an_agent_cannot_command_any_agent(site: Site) -> None:
    probe = Client(site.secure, AGENT, "edge-01-probe").start()  # the agent's own credentials
    try:
        cmd = telemetry.Command(
            id="self-" + uuid.uuid4().hex,
            device="pump-1",
            point=POINT,
            value=30.0,
            expires=time.time() + 60,
            by="collector-1",
        )
        for agent in (AGENT, "edge-02"):
            assert str(probe.publish(telemetry.command_topic(SITE, agent), telemetry.encode(cmd))) == "Not authorized"
    finally:
        probe.stop()
    assert all(r["id"] != cmd.id for r in read_audit(site.audit))


def test_a_wrong_password_is_turned_away(site: Site) -> None:
    guess = PASSWORDS["edge-01"]  # another user's password
    wrong = Client(site.secure, "edge-02", "wrong-password", password=guess).start()
    try:
        assert wrong.connect_reason is not None
        assert wrong.connect_reason.is_failure
    finally:
        wrong.stop()


def test_a_sender_not_allowed_changes_nothing_and_is_audited(site: Site) -> None:
    before = site.value()
    result = site.command(value=float(before) + 1.0, by="mallory")
    assert not result.ok
    assert result.outcome == "refused"
    assert "allowed_senders" in result.reason
    assert site.value() == before
    record = site.audited(result.id)
    assert (record["outcome"], record["by"], record["ok"]) == ("refused", "mallory", False)
    assert "allowed_senders" in record["reason"]


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"value": 1000.0}, "is outside [25, 100]"),
        ({"value": 0.0}, "is outside [25, 100]"),
        ({"step": 30.0}, "exceeds max_step 10"),
        ({"point": "speed"}, "not writable"),
        ({"point": "no_such_point"}, "no point"),
        ({"device": "no-such-device"}, "unknown device"),
        ({"expires": 1_000_000_000.0}, "expired"),
        ({"value": None}, "carries no value"),
    ],
    ids=[
        "above-max",
        "below-min",
        "too-big-a-step",
        "read-only-point",
        "unknown-point",
        "unknown-device",
        "expired",
        "no-value",
    ],
)
def test_commands_outside_the_limits_change_nothing_and_are_audited(
    site: Site, fields: dict[str, Any], reason: str
) -> None:
    before = site.value()
    if "step" in fields:
        step = fields.pop("step")
        fields["value"] = float(before) + step if float(before) + step <= 100 else float(before) - step
    result = site.command(**fields)
    assert not result.ok, result
    assert result.outcome == "refused"
    assert reason in result.reason.lower(), result.reason
    assert site.value() == before
    record = site.audited(result.id)
    assert (record["outcome"], record["ok"]) == ("refused", False)
    assert record["reason"] == result.reason
