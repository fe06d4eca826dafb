"""Helpers for the agent runtime tests: an MQTT subscriber, certificates, simulator and agent processes."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from models import telemetry
from tests.support import servers
from tests.support.servers import Mosquitto, free_port

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
WAIT_S = 60.0


@dataclass
class Message:
    """One received MQTT message."""

    topic: str
    payload: bytes
    retain: bool


@dataclass
class Subscriber:
    """A paho client on its own thread collecting everything under a topic filter.

    With `persistent=True` it keeps its session across broker restarts, so messages
    published while it reconnects are queued for it by the broker.
    """

    host: str
    port: int
    topic: str = "dcim/v1/#"
    persistent: bool = False
    client_id: str = "test-subscriber"
    tls: tuple[str, str, str] | None = None  # CA, client certificate, client key
    username: str | None = None
    password: str | None = None
    messages: queue.Queue[Message] = field(default_factory=queue.Queue)
    received: list[Message] = field(default_factory=list)
    _subscribed: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv311,
            clean_session=not self.persistent,
        )
        self.client.reconnect_delay_set(1, 1)
        if self.tls is not None:
            ca, cert, key = self.tls
            self.client.tls_set(ca_certs=ca, certfile=cert, keyfile=key)
        if self.username is not None:
            self.client.username_pw_set(self.username, self.password)
        self.client.on_connect = lambda c, *_a: c.subscribe(self.topic, qos=1)
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.on_message = lambda _c, _u, m: self.messages.put(Message(m.topic, bytes(m.payload), m.retain))

    def start(self) -> Subscriber:
        self.client.connect_async(self.host, self.port)
        self.client.loop_start()
        assert self._subscribed.wait(WAIT_S), "the test subscriber could not subscribe"
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def wait_for(self, done: Callable[[list[Message]], bool], timeout_s: float = WAIT_S, what: str = "") -> None:
        """Collect messages until done(received) holds; fail after timeout_s."""
        deadline = time.monotonic() + timeout_s
        while not done(self.received):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what or 'messages'}; got {len(self.received)}")
            with suppress(queue.Empty):
                self.received.append(self.messages.get(timeout=min(left, 1.0)))

    def batches(self, device: str | None = None) -> list[telemetry.Batch]:
        """Decoded telemetry batches received so far (optionally of one device)."""
        out = []
        for m in self.received:
            if m.topic.endswith("/telemetry"):
                b = telemetry.decode_batch(m.payload)
                if device is None or b.device == device:
                    out.append(b)
        return out

    def statuses(self) -> list[telemetry.Status]:
        return [
            telemetry.decode_as(telemetry.Status, m.payload)
            for m in self.received
            if m.topic.count("/") == 4 and m.topic.endswith("/status")
        ]


@dataclass(frozen=True)
class Certs:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all PEM files."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certs(folder: Path) -> Certs:
    """Generate a throw-away PKI with the openssl command."""
    if shutil.which("openssl") is None:
        message = "the openssl command is not installed (Debian package openssl)"
        if servers.servers_required():
            pytest.fail(message)
        pytest.skip(message)
    folder.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=dcim test CA",
        cwd=folder,
    )
    (folder / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, cn in (("server", "127.0.0.1"), ("client", "edge-01")):
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={cn}",
            cwd=folder,
        )
        extra = ["-extfile", "server.ext"] if name == "server" else []
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "2",
            *extra,
            cwd=folder,
        )
    for p in folder.iterdir():
        p.chmod(0o644)  # the broker may drop root privileges before reading them
    return Certs(
        folder / "ca.crt", folder / "server.crt", folder / "server.key", folder / "client.crt", folder / "client.key"
    )


def password_file(folder: Path, user: str, password: str) -> Path:
    """A Mosquitto password file."""
    path = folder / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(path), user, password], check=True, timeout=30, capture_output=True
    )
    path.chmod(0o644)
    return path


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> None:
    if proc.poll() is not None:
        return
    os.kill(proc.pid, sig)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout_s)


@dataclass
class Simulator:
    """A `dcim-sim device` process."""

    model: str
    port: int
    proc: subprocess.Popen[bytes]
    ready_line: str

    def stop(self) -> None:
        _stop(self.proc)


def start_simulator(model: str, port: int | None = None, seed: int = 1, udp: bool = False) -> Simulator:
    """Start a simulated device and wait for its ready line."""
    import socket  # noqa: PLC0415

    port = port or free_port(socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    proc = subprocess.Popen(
        [str(VENV_BIN / "dcim-sim"), "device", model, "--port", str(port), "--seed", str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert proc.stdout is not None
    result: queue.Queue[bytes] = queue.Queue()
    threading.Thread(target=lambda: result.put(proc.stdout.readline()), daemon=True).start()  # type: ignore[union-attr]
    try:
        line = result.get(timeout=WAIT_S).decode().strip()
    except queue.Empty:
        _stop(proc, signal.SIGKILL)
        raise AssertionError(f"dcim-sim device {model} printed no ready line") from None
    if not line.startswith("ready"):
        _stop(proc, signal.SIGKILL)
        raise AssertionError(f"dcim-sim device {model}: {line!r} (exit {proc.poll()})")
    return Simulator(model, port, proc, line)


@contextmanager
def simulators(*models: str, udp: bool = False) -> Iterator[list[Simulator]]:
    """Simulated devices for the duration of a with-block."""
    started: list[Simulator] = []
    try:
        started.extend(start_simulator(model, udp=udp) for model in models)
        yield started
    finally:
        for sim in started:
            sim.stop()


@dataclass
class AgentProcess:
    """A `dcim-agent run` process with its stderr in a file."""

    proc: subprocess.Popen[bytes]
    log: Path

    def terminate(self) -> int:
        _stop(self.proc)
        return self.proc.returncode

    def kill(self) -> None:
        _stop(self.proc, signal.SIGKILL)

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_agent(config: Path, log: Path, env: dict[str, str] | None = None) -> AgentProcess:
    """Start `dcim-agent run --config FILE` (stopped by the test through its PID)."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.Popen(
        [str(VENV_BIN / "dcim-agent"), "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
        env=full_env,
        cwd=config.parent,
        start_new_session=True,
    )
    return AgentProcess(proc, log)


def seqs(batches: list[telemetry.Batch]) -> list[int]:
    """Sequence numbers in arrival order."""
    return [b.seq for b in batches]


def unique_in_order(values: list[int]) -> list[int]:
    """The values with later repeats removed (duplicates from replays)."""
    seen: set[int] = set()
    out = []
    for v in values:
        if v not in seen:
            seen.add(v)
            out.append(v)
    return out


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(path: Path, sections: dict[str, dict[str, object]], devices: list[dict[str, object]]) -> Path:
    """Write an agent configuration file from plain dicts."""
    lines: list[str] = []
    for name, keys in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in keys.items())
        lines.append("")
    for device in devices:
        lines.append("[[devices]]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in device.items())
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def base_sections(tmp_path: Path, broker_url: str, **overrides: dict[str, object]) -> dict[str, dict[str, object]]:
    """[agent], [mqtt], [spool], [commands] for a test agent in tmp_path."""
    sections: dict[str, dict[str, object]] = {
        "agent": {"id": "edge-01", "site": "bj-dx", "health_interval_s": 1.0, "log_level": "info"},
        "mqtt": {"url": broker_url, "reconnect_max_s": 1, "keepalive_s": 5},
        "spool": {"path": str(tmp_path / "spool.sqlite"), "max_mb": 16, "replay_per_s": 1000.0},
        "commands": {"audit_log": str(tmp_path / "audit.jsonl")},
    }
    for name, keys in overrides.items():
        sections.setdefault(name, {}).update(keys)
    return sections


async def wait_until(predicate: Callable[[], bool], timeout_s: float = WAIT_S, what: str = "") -> None:
    """Wait (on the event loop) until predicate() holds; fail after timeout_s."""
    import asyncio  # noqa: PLC0415

    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or 'a condition'}")
        await asyncio.sleep(0.02)  # re-check the condition; other tasks run meanwhile


def start_broker(mosquitto_bin: str, workdir: Path, extra_conf: str = "") -> Mosquitto:
    """A Mosquitto whose sessions and queues survive stop() and start().

    The shared configuration already keeps a root-started broker running as root, so
    it can write its persistence file in a root-owned temporary folder.
    """
    return servers.start_mosquitto(mosquitto_bin, workdir, extra_conf=extra_conf)
