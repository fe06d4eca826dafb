"""A Mosquitto with TLS, passwords and a per-agent ACL, and MQTT clients that log in to it."""

from __future__ import annotations

import json
import queue
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from tests.agent.agent_helpers import Certs, make_certs
from tests.support import servers
from tests.support.servers import free_port

SITE = "bj-dx"
WAIT_S = 30.0
PASSWORDS = {"edge-01": "edge-01-Pw!x7", "edge-02": "edge-02-Pw!k9", "collector-1": "collector-Pw!q3"}

# Each agent publishes only its own telemetry, events, status and command results, and reads
# only its own commands; only the collector reads everything and writes commands.
ACL = f"""\
pattern write dcim/v1/{SITE}/%u/+/telemetry
pattern write dcim/v1/{SITE}/%u/+/event
pattern write dcim/v1/{SITE}/%u/status
pattern write dcim/v1/{SITE}/%u/cmd/result
pattern read dcim/v1/{SITE}/%u/cmd

user collector-1
topic read dcim/v1/{SITE}/#
topic write dcim/v1/{SITE}/+/cmd
topic write dcim/v1/dead-letter
topic write dcim/v1/{SITE}/analytics/#
topic write dcim/v1/{SITE}/alarm
"""


@dataclass
class SecureBroker:
    """Mosquitto with a TLS listener, a password file and the ACL above."""

    broker: servers.Mosquitto
    tls_port: int
    certs: Certs
    folder: Path

    @property
    def url(self) -> str:
        return f"mqtts://127.0.0.1:{self.tls_port}"

    @property
    def log(self) -> Path:
        return self.broker.log

    def stop(self) -> None:
        self.broker.stop()


def start_secure_broker(mosquitto_bin: str, folder: Path) -> SecureBroker:
    """Certificates, passwords and ACL in `folder`, and the broker."""
    certs = make_certs(folder / "pki")
    passwd = folder / "passwd"
    for n, (user, password) in enumerate(PASSWORDS.items()):
        args = ["mosquitto_passwd", "-b", *([] if n else ["-c"]), str(passwd), user, password]
        subprocess.run(args, check=True, timeout=30, capture_output=True)
    passwd.chmod(0o644)
    acl = folder / "acl"
    acl.write_text(ACL)
    acl.chmod(0o644)
    tls_port = free_port()
    broker = servers.start_mosquitto(
        mosquitto_bin,
        folder / "broker",
        extra_conf=(
            "allow_anonymous false\n"
            f"password_file {passwd}\n"
            f"acl_file {acl}\n"
            "log_type debug\n"  # Mosquitto reports refused publishes ("Denied PUBLISH") at debug level
            f"listener {tls_port} 127.0.0.1\n"
            f"cafile {certs.ca}\ncertfile {certs.server_cert}\nkeyfile {certs.server_key}\n"
        ),
    )
    servers.wait_tcp("127.0.0.1", tls_port, broker.proc, 30, broker.log)
    return SecureBroker(broker, tls_port, certs, folder)


@dataclass
class Client:
    """A paho MQTT 5 client over TLS, logged in as `user`, recording what it gets."""

    secure: SecureBroker
    user: str
    client_id: str
    password: str | None = None
    messages: queue.Queue[tuple[str, bytes]] = field(default_factory=queue.Queue)
    pubacks: dict[int, ReasonCode] = field(default_factory=dict)
    subacks: dict[int, list[ReasonCode]] = field(default_factory=dict)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _connected: threading.Event = field(default_factory=threading.Event)
    connect_reason: ReasonCode | None = None

    def start(self, wait: bool = True) -> Client:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        context = ssl.create_default_context(cafile=str(self.secure.certs.ca))
        self.client.tls_set_context(context)
        self.client.username_pw_set(self.user, PASSWORDS[self.user] if self.password is None else self.password)
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda _c, _u, m: self.messages.put((m.topic, bytes(m.payload)))
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.connect("127.0.0.1", self.secure.tls_port)
        self.client.loop_start()
        if wait:
            assert self._connected.wait(WAIT_S), f"{self.user} could not connect"
        return self

    def _on_connect(self, _c: object, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
        self.connect_reason = reason
        self._connected.set()

    def _on_publish(self, _c: object, _u: object, mid: int, reason: ReasonCode, _p: object) -> None:
        with self._cond:
            self.pubacks[mid] = reason
            self._cond.notify_all()

    def _on_subscribe(self, _c: object, _u: object, mid: int, reasons: list[ReasonCode], _p: object) -> None:
        with self._cond:
            self.subacks[mid] = reasons
            self._cond.notify_all()

    def publish(self, topic: str, payload: bytes) -> ReasonCode:
        """Publish at QoS 1 and return the broker's PUBACK reason."""
        info = self.client.publish(topic, payload, qos=1)
        with self._cond:
            assert self._cond.wait_for(lambda: info.mid in self.pubacks, WAIT_S), f"no PUBACK for {topic}"
            return self.pubacks[info.mid]

    def subscribe(self, topic: str) -> list[ReasonCode]:
        _, mid = self.client.subscribe(topic, qos=1)
        assert mid is not None
        with self._cond:
            assert self._cond.wait_for(lambda: mid in self.subacks, WAIT_S), f"no SUBACK for {topic}"
            return self.subacks[mid]

    def next_message(self, timeout_s: float = WAIT_S) -> tuple[str, bytes]:
        return self.messages.get(timeout=timeout_s)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def read_audit(path: Path) -> list[dict[str, Any]]:
    """The agent's audit log records."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait(condition: Any, what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)  # re-check a file or a condition other processes change


def binary_or_skip(name: str) -> str:
    """A server binary, for module-scoped fixtures (skip, or fail in CI, when missing)."""
    import pytest  # noqa: PLC0415

    path = servers.find_binary(name)
    if path is None:
        message = f"{name} is not installed; {servers.INSTALL_HINT}"
        if servers.servers_required():
            pytest.fail(message)
        pytest.skip(message)
    return path
