"""Start real Mosquitto and InfluxDB processes on free loopback ports, stop them by PID."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REQUIRE_ENV = "DCIM_REQUIRE_SERVERS"
INSTALL_HINT = "install them with: sudo apt-get install -y mosquitto influxdb"
STARTUP_TIMEOUT_S = 30.0


_HANDED_OUT: set[int] = set()


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port nobody listens on right now (TCP by default, or UDP), never one handed out before.

    The kernel may give the same ephemeral port again once the probing socket is closed; a test that
    asks for two ports in a row must get two different ones, so ports handed out are remembered.
    """
    for _ in range(1000):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no loopback port left that was not handed out already")


def free_port_both() -> int:
    """A loopback port free for both TCP and UDP right now, never one handed out before."""
    for _ in range(1000):
        port = free_port(socket.SOCK_STREAM)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free for both TCP and UDP")


def find_binary(name: str, *extra_dirs: str) -> str | None:
    """A server binary on PATH or in the sbin folders Debian puts them in."""
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/local/sbin", "/sbin", *extra_dirs):
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def servers_required() -> bool:
    """Whether a missing server must fail the run (CI) rather than skip."""
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


def wait_tcp(host: str, port: int, proc: subprocess.Popen[bytes], timeout_s: float, log: Path) -> None:
    """Block until host:port accepts a connection, or fail with the server's log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)  # polling a port that is not yet open; not a stand-in for sync
    raise RuntimeError(
        f"{proc.args!r} did not listen on {host}:{port} within {timeout_s}s:\n{log.read_text(errors='replace')}"
    )


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """Stop a server we started, by its own PID: TERM, then KILL."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout_s)


@dataclass
class Mosquitto:
    """A running Mosquitto broker."""

    host: str
    port: int
    workdir: Path
    proc: subprocess.Popen[bytes]
    extra_conf: str = ""
    binary: str = "mosquitto"

    @property
    def url(self) -> str:
        """mqtt:// URL of the broker."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def log(self) -> Path:
        """The broker's log file."""
        return self.workdir / "mosquitto.log"

    def stop(self) -> None:
        """Stop the broker (its persistence file is written on a clean stop)."""
        stop(self.proc)

    def kill(self) -> None:
        """Kill the broker without letting it save anything."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def start(self) -> None:
        """(Re)start the broker on the same port with the same configuration and data."""
        if self.proc.poll() is None:
            return
        self.proc = _spawn_mosquitto(self.binary, self.workdir)
        wait_tcp(self.host, self.port, self.proc, STARTUP_TIMEOUT_S, self.log)


def mosquitto_conf(port: int, workdir: Path, extra: str = "") -> str:
    """A broker configuration for tests: loopback only, persistent, large queues."""
    # Run as root (CI), Mosquitto drops to its own user and then cannot write its
    # persistence file in a root-owned temporary folder, losing sessions on restart.
    user = "user root\n" if os.geteuid() == 0 else ""
    return (
        f"{user}listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        "persistence true\n"
        f"persistence_location {workdir}/\n"
        # The no-loss guarantee needs large queues for offline persistent sessions.
        "max_queued_messages 1000000\n"
        "max_queued_bytes 0\n"
        "max_inflight_messages 0\n"
        f"log_dest file {workdir}/mosquitto.log\n"
        "log_type error\nlog_type warning\nlog_type notice\n"
        f"{extra}"
    )


def _spawn_mosquitto(binary: str, workdir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [binary, "-c", str(workdir / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "mosquitto.stderr").open("ab"),
        start_new_session=True,
    )


def start_mosquitto(binary: str, workdir: Path, extra_conf: str = "", port: int | None = None) -> Mosquitto:
    """Start Mosquitto on a free loopback port in workdir."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    (workdir / "mosquitto.conf").write_text(mosquitto_conf(port, workdir, extra_conf))
    proc = _spawn_mosquitto(binary, workdir)
    broker = Mosquitto("127.0.0.1", port, workdir, proc, extra_conf, binary)
    wait_tcp(broker.host, port, proc, STARTUP_TIMEOUT_S, workdir / "mosquitto.stderr")
    return broker


@dataclass
class InfluxDB:
    """A running InfluxDB 1.x server."""

    host: str
    port: int
    workdir: Path
    proc: subprocess.Popen[bytes]
    binary: str = "influxd"
    databases: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        """HTTP base URL."""
        return f"http://{self.host}:{self.port}"

    def query(self, q: str, db: str | None = None, method: str = "GET") -> bytes:
        """Run InfluxQL and return the raw JSON answer."""
        params = {"q": q}
        if db:
            params["db"] = db
        data = urllib.parse.urlencode(params)
        if method == "POST":
            req = urllib.request.Request(f"{self.url}/query", data=data.encode(), method="POST")  # noqa: S310
        else:
            req = urllib.request.Request(f"{self.url}/query?{data}")  # noqa: S310
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
            body: bytes = resp.read()
            return body

    def stop(self) -> None:
        """Stop the server."""
        stop(self.proc, timeout_s=20)

    def start(self) -> None:
        """(Re)start on the same port and data."""
        if self.proc.poll() is None:
            return
        self.proc = _spawn_influxd(self.binary, self.workdir)
        _wait_influx(self.url, self.proc, self.workdir)


def influxd_conf(port: int, workdir: Path) -> str:
    """A minimal InfluxDB 1.x configuration on loopback."""
    return f"""
reporting-disabled = true
bind-address = "127.0.0.1:{free_port()}"
[meta]
  dir = "{workdir}/meta"
[data]
  dir = "{workdir}/data"
  wal-dir = "{workdir}/wal"
  query-log-enabled = false
  trace-logging-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{port}"
  log-enabled = false
  max-body-size = 0
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[subscriber]
  enabled = false
[logging]
  level = "warn"
"""


def _spawn_influxd(binary: str, workdir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [binary, "-config", str(workdir / "influxdb.conf")],
        stdout=(workdir / "influxd.log").open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _wait_influx(url: str, proc: subprocess.Popen[bytes], workdir: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"influxd exited with {proc.returncode}:\n{(workdir / 'influxd.log').read_text(errors='replace')}"
            )
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=1) as resp:  # noqa: S310
                if resp.status == 204:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)  # polling for readiness
    raise RuntimeError(f"influxd did not answer /ping within {STARTUP_TIMEOUT_S}s")


def start_influxdb(binary: str, workdir: Path) -> InfluxDB:
    """Start InfluxDB 1.x on a free loopback port in workdir."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (workdir / "influxdb.conf").write_text(influxd_conf(port, workdir))
    proc = _spawn_influxd(binary, workdir)
    server = InfluxDB("127.0.0.1", port, workdir, proc, binary)
    _wait_influx(server.url, proc, workdir)
    return server
