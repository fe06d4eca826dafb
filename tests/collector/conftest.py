"""Collector test support: VictoriaMetrics (a v2 write sink), batches, publishers, running collectors."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from collector import config as collector_config
from collector.service import Collector
from models import telemetry
from tests.support import servers

SITE = "bj-dx"
AGENT = "edge-01"
VM_BINARY = "victoria-metrics"
T0 = 1_764_450_000.0  # a fixed read time (2025-11-29) so stored timestamps are predictable


# ---------------------------------------------------------------- VictoriaMetrics


@dataclass
class VictoriaMetrics:
    """A running VictoriaMetrics single-node server (accepts the InfluxDB v2 write API)."""

    host: str
    port: int
    workdir: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        """HTTP base URL."""
        return f"http://{self.host}:{self.port}"

    def export(self, match: str) -> list[dict[str, Any]]:
        """Flush and export the raw samples of the series matching a selector (JSON lines)."""
        with urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10):  # noqa: S310
            pass
        data = urllib.parse.urlencode({"match[]": match}).encode()
        with urllib.request.urlopen(f"{self.url}/api/v1/export", data=data, timeout=10) as resp:  # noqa: S310
            return [json.loads(line) for line in resp.read().splitlines() if line.strip()]

    def stop(self) -> None:
        """Stop the server by its PID."""
        servers.stop(self.proc)


def start_victoria_metrics(binary: str, workdir: Path) -> VictoriaMetrics:
    """Start VictoriaMetrics on a free loopback port with its data in workdir."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = servers.free_port()
    log = workdir / "victoria-metrics.log"
    proc = subprocess.Popen(
        [
            binary,
            f"-storageDataPath={workdir / 'data'}",
            f"-httpListenAddr=127.0.0.1:{port}",
            "-retentionPeriod=100y",
            "-loggerLevel=ERROR",
        ],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = VictoriaMetrics("127.0.0.1", port, workdir, proc)
    deadline = time.monotonic() + servers.STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"victoria-metrics exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=1) as resp:  # noqa: S310
                if resp.status == 200:
                    return server
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)  # polling for readiness
    servers.stop(proc)
    raise RuntimeError(f"victoria-metrics did not answer /health within {servers.STARTUP_TIMEOUT_S}s")


@pytest.fixture
def victoria_metrics(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    """A fresh VictoriaMetrics for one test (skip, or fail under DCIM_REQUIRE_SERVERS, if missing)."""
    binary = servers.find_binary(VM_BINARY)
    if binary is None:
        message = f"{VM_BINARY} is not installed; install it with: sudo apt-get install -y victoria-metrics"
        if servers.servers_required():
            pytest.fail(message)
        pytest.skip(message)
    server = start_victoria_metrics(binary, tmp_path / "vm")
    try:
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------- a broker that keeps its sessions


def persistent_conf() -> str:
    """Extra Mosquitto configuration so that its persistence file is written when run as root.

    Started as root, Mosquitto switches to the ``mosquitto`` user, which cannot write into a
    private temporary directory: its sessions would not survive a restart.
    """
    if os.geteuid() != 0 or "user root" in servers.mosquitto_conf(1883, Path("/nonexistent")):
        return ""  # not root, or the shared configuration already sees to it
    return "user root\n"


@pytest.fixture
def broker(mosquitto_bin: str, tmp_path: Path) -> Iterator[servers.Mosquitto]:
    """A Mosquitto broker whose sessions and queues survive its restart."""
    b = servers.start_mosquitto(mosquitto_bin, tmp_path / "broker", extra_conf=persistent_conf())
    try:
        yield b
    finally:
        b.stop()


# ---------------------------------------------------------------- batches


def make_batch(
    seq: int,
    *,
    device: str = "meter-1",
    agent: str = AGENT,
    site: str = SITE,
    kind: str = "meter",
    model: str = "meter-sdm630",
    points: int = 10,
    ts: float | None = None,
    failed: tuple[str, ...] = (),
) -> telemetry.Batch:
    """A meter batch whose values encode (seq, point) so a test can check every stored value."""
    pts = {f"p{j}": telemetry.Point(float(seq * 1000 + j), "kW") for j in range(points)}
    for name in failed:
        pts[name] = telemetry.Point(None, "kW", "timeout")
    return telemetry.Batch(
        site=site,
        agent=agent,
        device=device,
        model=model,
        kind=kind,
        seq=seq,
        ts=T0 + seq if ts is None else ts,
        points=pts,
    )


def topic_of(batch: telemetry.Batch) -> str:
    """The telemetry topic of a batch."""
    return telemetry.telemetry_topic(batch.site, batch.agent, batch.device)


class Publisher:
    """A paho client publishing QoS 1 and waiting for the broker's acknowledgements."""

    def __init__(self, broker: servers.Mosquitto, client_id: str = "test-publisher") -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        self.client.max_inflight_messages_set(1000)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes) -> mqtt.MQTTMessageInfo:
        """Publish one message at QoS 1."""
        return self.client.publish(topic, payload, qos=1)

    def publish_batches(self, batches: list[telemetry.Batch]) -> None:
        """Publish batches and wait until the broker has them all."""
        infos = [self.publish(topic_of(b), telemetry.encode(b)) for b in batches]
        for info in infos:
            info.wait_for_publish(timeout=30)
            assert info.is_published()

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(mosquitto: servers.Mosquitto) -> Iterator[Publisher]:
    """A connected QoS 1 publisher."""
    pub = Publisher(mosquitto)
    try:
        yield pub
    finally:
        pub.close()


class Subscription:
    """A paho client collecting the messages of one topic filter (e.g. the dead-letter topic)."""

    def __init__(self, broker: servers.Mosquitto, topic_filter: str, client_id: str = "test-subscriber") -> None:
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        subscribed: queue.Queue[bool] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        self.client.on_message = lambda _c, _u, m: self.messages.put((m.topic, bytes(m.payload)))
        self.client.on_subscribe = lambda *_a: subscribed.put(True)
        self.client.on_connect = lambda c, *_a: c.subscribe(topic_filter, qos=1)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert subscribed.get(timeout=10)

    def get(self, timeout_s: float = 10.0) -> tuple[str, bytes]:
        """The next message."""
        return self.messages.get(timeout=timeout_s)

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


# ---------------------------------------------------------------- collector configurations


def write_config(
    path: Path,
    broker: servers.Mosquitto,
    store: str,
    *,
    collector_id: str = "collector-1",
    mqtt_extra: str = "",
    ingest: str = "",
) -> Path:
    """A collector configuration file with the given [store] body."""
    path.write_text(
        f"""
[collector]
id = "{collector_id}"
site = "{SITE}"

[mqtt]
url = "{broker.url}"
{mqtt_extra}

[store]
{store}

[ingest]
metrics_interval_s = 0.5
retry_max_s = 0.5
{ingest}
""",
        encoding="utf-8",
    )
    return path


def sqlite_store(path: Path) -> str:
    """A [store] body for SQLite."""
    return f'kind = "sqlite"\npath = "{path}"'


def influx_store(influx: servers.InfluxDB, timeout_s: float = 2.0) -> str:
    """A [store] body for InfluxDB over the v1 API."""
    return f'kind = "influxdb"\nurl = "{influx.url}"\napi = "v1"\ndatabase = "dcim"\ntimeout_s = {timeout_s}'


def influx_rows(influx: servers.InfluxDB, q: str) -> list[dict[str, Any]]:
    """The rows of an InfluxQL answer as dicts of column to value, times in ns (tags included with GROUP BY)."""
    url = f"{influx.url}/query?db=dcim&epoch=ns&q={urllib.parse.quote(q)}"
    with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310
        answer = json.loads(resp.read())
    rows: list[dict[str, Any]] = []
    for series in answer["results"][0].get("series", []):
        tags = series.get("tags", {})
        rows.extend({**tags, **dict(zip(series["columns"], values, strict=True))} for values in series["values"])
    return rows


def poll_until(what: str, predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Poll a condition until it holds, from synchronous code (fail naming it after timeout_s)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)  # polling a condition with a deadline, not a stand-in for sync


async def wait_until(what: str, predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Poll a condition until it holds (fail naming it after timeout_s)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)  # polling a condition with a deadline, not a stand-in for sync


@contextlib.asynccontextmanager
async def running_collector(config_path: Path) -> AsyncIterator[Collector]:
    """A collector running in this event loop, subscribed; stopped cleanly on exit."""
    collector = Collector(collector_config.load(config_path))
    task = asyncio.create_task(collector.run())
    try:
        await asyncio.wait_for(collector.subscribed.wait(), timeout=30)
        yield collector
    finally:
        collector.stop()
        await asyncio.wait_for(task, timeout=60)


# ---------------------------------------------------------------- a collector process


class NotifySocket:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.received: list[str] = []
        self._matched: set[tuple[int, str]] = set()

    def wait_for(self, needle: str, timeout_s: float = 30.0) -> str:
        """Block until a notification containing needle arrives; return it.

        Notifications already received count too (READY and STATUS may arrive in either
        order, or in one datagram), each matched at most once per needle.
        """
        matched = self._matched
        for index, data in enumerate(self.received):
            if needle in data and (index, needle) not in matched:
                matched.add((index, needle))
                return data
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no sd_notify message with {needle!r}; got {self.received}")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536).decode()
            except TimeoutError:
                continue
            self.received.append(data)
            if needle in data:
                matched.add((len(self.received) - 1, needle))
                return data

    def close(self) -> None:
        """Close and remove the socket."""
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class CollectorProcess:
    """``dcim-collector run`` as a child process, started and stopped by its own PID."""

    def __init__(self, config: Path, workdir: Path, name: str = "collector", env: dict[str, str] | None = None) -> None:
        self.config = config
        self.env = env or {}
        self.workdir = workdir
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self.notify: NotifySocket | None = None
        self.starts = 0

    def start(self) -> None:
        """Start and wait until it is subscribed."""
        self.starts += 1
        sock_path = self.workdir / f"{self.name}-{self.starts}.notify"
        self.notify = NotifySocket(sock_path)
        env = {**os.environ, **self.env, "NOTIFY_SOCKET": str(sock_path)}
        log = (self.workdir / f"{self.name}.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "collector.cli", "run", "--config", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        self.notify.wait_for("READY=1")
        self.notify.wait_for("STATUS=subscribed")

    def stop(self) -> int:
        """SIGTERM and wait; the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=60)
        self._close_notify()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: no chance to finish anything."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self._close_notify()

    def _close_notify(self) -> None:
        if self.notify is not None:
            self.notify.close()
            self.notify = None

    def log(self) -> str:
        """What it logged."""
        return (self.workdir / f"{self.name}.log").read_text(errors="replace")
