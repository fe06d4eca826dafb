"""The agent process over MQTT with TLS (CA, client certificate) and a password from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.agent.agent_helpers import (
    Subscriber,
    base_sections,
    make_certs,
    password_file,
    simulators,
    start_agent,
    start_broker,
    write_config,
)

pytestmark = pytest.mark.servers

USER, PASSWORD = "edge-01", "tr0ub4dor&3"


def test_agent_publishes_over_tls_with_a_password(mosquitto_bin: str, tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "pki")
    passwd = password_file(tmp_path / "pki", USER, PASSWORD)
    broker = start_broker(
        mosquitto_bin,
        tmp_path / "broker",
        f"cafile {certs.ca}\ncertfile {certs.server_cert}\nkeyfile {certs.server_key}\nrequire_certificate true\n"
        f"allow_anonymous false\npassword_file {passwd}\n",
    )
    tls = (str(certs.ca), str(certs.client_cert), str(certs.client_key))
    sub = Subscriber(broker.host, broker.port, tls=tls, username=USER, password=PASSWORD).start()
    try:
        with simulators("meter-sdm630") as (meter,):
            devices: list[dict[str, object]] = [
                {"id": "meter-1", "model": "meter-sdm630", "port": meter.port, "interval_s": 0.3}
            ]
            sections = base_sections(
                tmp_path,
                f"mqtts://{broker.host}:{broker.port}",
                mqtt={
                    "username": USER,
                    "ca_file": str(certs.ca),
                    "cert_file": str(certs.client_cert),
                    "key_file": str(certs.client_key),
                },
            )
            config = write_config(tmp_path / "agent.toml", sections, devices)
            agent = start_agent(config, tmp_path / "agent.log", {"DCIM_MQTT_PASSWORD": PASSWORD})
            try:
                sub.wait_for(lambda _r: len(sub.batches("meter-1")) >= 2, what="batches over TLS")
                sub.wait_for(lambda _r: any(s.state == "online" for s in sub.statuses()), what="online status")
                assert agent.terminate() == 0, agent.output()
                # The offline status is its last message: everything before it has arrived.
                sub.wait_for(lambda _r: any(s.state == "offline" for s in sub.statuses()), what="offline status")
            finally:
                agent.kill()
        # Without the password the broker turns the agent away; nothing is published.
        bad = start_agent(config, tmp_path / "bad.log", {"DCIM_MQTT_PASSWORD": "wrong"})
        try:
            log = tmp_path / "bad.log"
            sub.received.clear()
            refused = "broker refused the connection"
            sub.wait_for(lambda _r: refused in log.read_text(errors="replace"), what="the refusal in the log")
            assert bad.terminate() == 0
        finally:
            bad.kill()
        assert not sub.batches()
    finally:
        sub.stop()
        broker.stop()
