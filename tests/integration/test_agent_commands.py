"""Commands through the broker to a running agent: written, read back, answered, audited; refusals untouched."""

from __future__ import annotations

import json
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from models import telemetry
from tests.agent.agent_helpers import Subscriber, base_sections, simulators, start_agent, write_config
from tests.support.servers import Mosquitto

pytestmark = pytest.mark.servers

SITE, AGENT = "bj-dx", "edge-01"


def _send(broker: Mosquitto, command: telemetry.Command) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="collector-cmd", protocol=mqtt.MQTTv311)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        info = client.publish(telemetry.command_topic(SITE, AGENT), telemetry.encode(command), qos=1)
        info.wait_for_publish(timeout=30)
        assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def _results(sub: Subscriber) -> dict[str, telemetry.CommandResult]:
    out = {}
    for m in sub.received:
        if m.topic == telemetry.command_result_topic(SITE, AGENT):
            result = telemetry.decode_as(telemetry.CommandResult, m.payload)
            out[result.id] = result
    return out


def test_commands_are_carried_out_answered_and_audited(mosquitto: Mosquitto, tmp_path: Path) -> None:
    sub = Subscriber(mosquitto.host, mosquitto.port).start()
    with simulators("pump-modbus") as (pump,):
        devices: list[dict[str, object]] = [
            {"id": "pump-1", "model": "pump-modbus", "port": pump.port, "interval_s": 0.3}
        ]
        config = write_config(tmp_path / "agent.toml", base_sections(tmp_path, mosquitto.url), devices)
        agent = start_agent(config, tmp_path / "agent.log")
        try:
            sub.wait_for(lambda _r: len(sub.batches("pump-1")) >= 2, what="telemetry")
            before = sub.batches("pump-1")[-1].points["speed_setpoint"].value
            assert isinstance(before, float)
            target = before + 5.0 if before + 5.0 <= 100.0 else before - 5.0
            expires = time.time() + 60
            _send(
                mosquitto,
                telemetry.Command(
                    id="ok-1", device="pump-1", point="speed_setpoint", value=target, expires=expires, by="optimizer"
                ),
            )
            _send(mosquitto, telemetry.Command(id="no-1", device="pump-1", point="flow", value=1.0, expires=expires))
            _send(
                mosquitto,
                telemetry.Command(
                    id="old-1", device="pump-1", point="speed_setpoint", value=target, expires=time.time() - 1
                ),
            )
            sub.wait_for(lambda _r: {"ok-1", "no-1", "old-1"} <= set(_results(sub)), what="three answers")
            results = _results(sub)
            # The new value shows up in telemetry read after the write.
            written_at = time.time()
            sub.wait_for(
                lambda _r: any(b.ts > written_at for b in sub.batches("pump-1")), what="telemetry after the write"
            )
            after = next(b for b in sub.batches("pump-1") if b.ts > written_at).points["speed_setpoint"].value
            assert agent.terminate() == 0, agent.output()
        finally:
            agent.kill()
            sub.stop()
    ok = results["ok-1"]
    assert (ok.ok, ok.outcome) == (True, "written")
    assert ok.before == pytest.approx(before)
    assert ok.after == pytest.approx(target)
    assert after == pytest.approx(target)
    assert (results["no-1"].ok, results["no-1"].outcome) == (False, "refused")
    assert "not writable" in results["no-1"].reason
    assert "expired" in results["old-1"].reason
    audit = {r["id"]: r for r in map(json.loads, (tmp_path / "audit.jsonl").read_text().splitlines())}
    assert {i: r["outcome"] for i, r in audit.items()} == {"ok-1": "written", "no-1": "refused", "old-1": "refused"}
    assert audit["ok-1"]["by"] == "optimizer"
    assert audit["ok-1"]["before"] == pytest.approx(before)
    assert audit["ok-1"]["after"] == pytest.approx(target)
