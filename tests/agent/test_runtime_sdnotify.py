"""sd_notify: READY, STATUS, RELOADING, WATCHDOG only while polls progress, STOPPING."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import config as agent_config
from agent.runtime import Runtime
from agent.sdnotify import Notifier
from tests.agent.agent_helpers import base_sections, simulators, start_agent, wait_until, write_config
from tests.support.servers import Mosquitto


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket in the abstract namespace, as systemd would listen."""
    name = f"@dcim-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name[1:])
    sock.settimeout(30)
    yield sock, name
    sock.close()


def _recv_until(sock: socket.socket, wanted: str) -> list[str]:
    """Datagrams up to and including the first that contains `wanted` as a line."""
    seen: list[str] = []
    while True:
        data = sock.recv(4096).decode()
        seen.append(data)
        if wanted in data.split("\n"):
            return seen


def _drain(sock: socket.socket) -> list[str]:
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        pass
    finally:
        sock.setblocking(True)
        sock.settimeout(30)
    return out


def test_notifier_speaks_the_protocol(tmp_path: Path) -> None:
    path = tmp_path / "n.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(10)
    try:
        n = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000"})
        assert n.enabled
        assert n.watchdog_interval_s == 1.0
        assert n.ready("5 devices")
        assert sock.recv(4096) == b"READY=1\nSTATUS=5 devices"
        assert n.status("line one\nline two")
        assert sock.recv(4096) == b"STATUS=line one line two"
        assert n.watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"
        assert n.reloading()
        assert sock.recv(4096).startswith(b"RELOADING=1\nMONOTONIC_USEC=")
        assert n.stopping()
        assert sock.recv(4096) == b"STOPPING=1"
        n.close()
    finally:
        sock.close()


def test_notifier_is_silent_outside_systemd() -> None:
    n = Notifier({})
    assert not n.enabled
    assert not n.ready()
    assert n.watchdog_interval_s is None
    # A watchdog meant for another process (WATCHDOG_PID) is not ours to feed.
    other = Notifier({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)})
    assert other.watchdog_interval_s is None


def test_a_vanished_socket_is_logged_not_raised(tmp_path: Path) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.notify("READY=1") is False


@pytest.mark.servers
def test_the_agent_tells_systemd_ready_status_reload_and_stopping(
    mosquitto: Mosquitto, tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, name = notify_socket
    with simulators("meter-sdm630") as (meter,):
        devices: list[dict[str, object]] = [
            {"id": "meter-1", "model": "meter-sdm630", "port": meter.port, "interval_s": 0.2}
        ]
        config = write_config(tmp_path / "agent.toml", base_sections(tmp_path, mosquitto.url), devices)
        agent = start_agent(config, tmp_path / "agent.log", {"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "400000"})
        try:
            first = _recv_until(sock, "READY=1")
            assert "READY=1" in first[0]
            assert "STATUS=1 devices" in first[0]
            _recv_until(sock, "WATCHDOG=1")
            health = next(m for m in iter(lambda: sock.recv(4096).decode(), None) if m.startswith("STATUS="))
            assert "mqtt connected" in health
            agent.signal(signal.SIGHUP)
            reload_msgs = _recv_until(sock, "READY=1")
            assert any(m.startswith("RELOADING=1") for m in reload_msgs)
            agent.signal(signal.SIGTERM)
            assert any(m.startswith("STOPPING=1") for m in _recv_until(sock, "STOPPING=1"))
            assert agent.proc.wait(timeout=60) == 0
        finally:
            agent.kill()
    assert "Traceback" not in agent.output()


@pytest.mark.servers
async def test_watchdog_is_withheld_while_polling_makes_no_progress(
    mosquitto: Mosquitto, tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, name = notify_socket
    with simulators("meter-sdm630") as (meter,):
        devices: list[dict[str, object]] = [
            {"id": "meter-1", "model": "meter-sdm630", "port": meter.port, "interval_s": 3600}
        ]
        config = write_config(tmp_path / "agent.toml", base_sections(tmp_path, mosquitto.url), devices)
        runtime = Runtime(
            agent_config.load(config), notifier=Notifier({"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "100000"})
        )
        task = asyncio.create_task(runtime.run())
        try:
            await asyncio.wait_for(runtime.running.wait(), 30)
            # The first poll over (its batch spooled too), and a ping sent.
            await wait_until(
                lambda: runtime.state("meter-1").polls_ok == 1
                and "meter-1" not in runtime._busy
                and runtime.watchdog_sent > 0
            )
            assert runtime.progressing()
            # Pretend the last poll finished long ago: polling is stuck as far as systemd cares.
            runtime._last_progress -= 10 * 3600
            assert not runtime.progressing()
            withheld, sent = runtime.watchdog_withheld, runtime.watchdog_sent
            await wait_until(lambda: runtime.watchdog_withheld >= withheld + 3, what="three withheld pings")
            stuck_sent = runtime.watchdog_sent
            assert stuck_sent <= sent + 1  # at most the one already on its way
            await asyncio.to_thread(_drain, sock)
            await wait_until(lambda: runtime.watchdog_withheld >= withheld + 5, what="more withheld pings")
            assert runtime.watchdog_sent == stuck_sent
            assert not any("WATCHDOG=1" in m for m in await asyncio.to_thread(_drain, sock))
            # A poll completes: the pings resume.
            assert await runtime.poll_now("meter-1")
            await wait_until(lambda: runtime.watchdog_sent > stuck_sent, what="pings to resume")
            assert any("WATCHDOG=1" in m for m in await asyncio.to_thread(_drain, sock))
        finally:
            runtime.stop()
            assert await asyncio.wait_for(task, 60) == 0
