"""Malformed device answers generated with hypothesis: drivers turn them into qualities, then read again.

A relay between the driver and a simulated device (a `dcim-sim device` process: Modbus TCP,
SNMP and BACnet/IP) passes each request on and mutates the answer as the example says: replaced by random bytes, bytes
flipped, cut short, junk appended. The driver must return a reading for every point, with
a value exactly when its quality is good, name the device in any error, raise nothing, and
read the device normally once it answers properly again.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import config as agent_config
from agent.config import Device
from agent.drivers.bacnet import BacnetDriver
from agent.drivers.base import Driver, PollResult
from agent.drivers.modbus import ModbusDriver
from agent.drivers.snmp import SnmpDriver
from models import catalog
from models.quality import Quality
from tests.agent.agent_helpers import Simulator, start_simulator
from tests.support.snmp import make_device

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]

Mutation = tuple[str, object]

MUTATIONS = st.one_of(
    st.tuples(st.just("replace"), st.binary(max_size=300)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.integers(0, 400), st.integers(1, 255)), min_size=1, max_size=6)),
    st.tuples(st.just("truncate"), st.integers(0, 400)),
    st.tuples(st.just("extend"), st.binary(min_size=1, max_size=64)),
)


def mutate(answer: bytes, mutation: Mutation | None) -> bytes:
    """The answer changed as the mutation says (None: unchanged)."""
    if mutation is None or not answer:
        return answer
    kind, arg = mutation
    if kind == "replace":
        assert isinstance(arg, bytes)
        return arg
    if kind == "flip":
        out = bytearray(answer)
        for pos, xor in arg:  # type: ignore[attr-defined]
            out[pos % len(out)] ^= xor
        return bytes(out)
    if kind == "truncate":
        assert isinstance(arg, int)
        return answer[: arg % len(answer)]
    assert isinstance(arg, bytes)
    return answer + arg


@dataclass
class Relay:
    """Passes requests to the device and mutates its answers (on threads, plain sockets)."""

    upstream: int
    udp: bool
    mutation: Mutation | None = None
    port: int = 0

    def start(self) -> Relay:
        kind = socket.SOCK_DGRAM if self.udp else socket.SOCK_STREAM
        self._sock = socket.socket(socket.AF_INET, kind)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        if not self.udp:
            self._sock.listen(8)
        self._sock.settimeout(0.2)
        target = self._serve_udp if self.udp else self._serve_tcp
        self._thread = threading.Thread(target=target, name="fuzz-relay", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._sock.close()

    def _serve_udp(self) -> None:
        up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        up.settimeout(2.0)
        while not self._stop.is_set():
            try:
                request, client = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            up.sendto(request, ("127.0.0.1", self.upstream))
            with contextlib.suppress(TimeoutError):
                answer = up.recv(65535)
                with contextlib.suppress(OSError):
                    self._sock.sendto(mutate(answer, self.mutation), client)
        up.close()

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        with conn, socket.create_connection(("127.0.0.1", self.upstream), timeout=5.0) as up:
            conn.settimeout(0.5)
            try:
                while not self._stop.is_set():
                    try:
                        request = _frame(conn)
                    except TimeoutError:
                        continue
                    up.sendall(request)
                    conn.sendall(mutate(_frame(up), self.mutation))
            except (OSError, EOFError):
                return


def _exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _frame(sock: socket.socket) -> bytes:
    """One Modbus TCP frame (MBAP header and PDU)."""
    head = _exactly(sock, 7)
    length = struct.unpack(">H", head[4:6])[0]
    return head + _exactly(sock, max(0, length - 1))


@contextlib.contextmanager
def relayed(model: str, udp: bool) -> Iterator[Relay]:
    """A simulated device of a catalog id or model file, behind a relay."""
    sim: Simulator = start_simulator(model, udp=udp)
    relay = Relay(sim.port, udp).start()
    try:
        yield relay
    finally:
        relay.stop()
        sim.stop()


def check(device: Device, result: PollResult) -> None:
    """A reading for every point; a value exactly when good; failures name the device."""
    assert set(result.points) == {p.name for p in device.model.points}
    for name, reading in result.points.items():
        assert (reading.value is not None) == reading.quality.good, (name, reading)
    for rows in result.tables.values():
        for row in rows.values():
            for reading in row.values():
                assert (reading.value is not None) == reading.quality.good
    if result.error is not None:
        assert device.id in result.error, result.error


async def poll_garbage_then_honest(driver: Driver, device: Device, relay: Relay, mutation: Mutation) -> None:
    relay.mutation = mutation
    try:
        first = await asyncio.wait_for(driver.poll(device), timeout=20)
        check(device, first)
        relay.mutation = None
        again = await asyncio.wait_for(driver.poll(device), timeout=20)
        check(device, again)
        # What the device "said" may be remembered (a point it refused is left out for a while),
        # but the link is healthy again: no device-level error, and the points read are good.
        assert again.error is None, again.error
        bad = {r.quality for r in again.points.values() if not r.quality.good}
        assert bad <= {Quality.ILLEGAL_ADDRESS, Quality.DEVICE_EXCEPTION, Quality.UNSUPPORTED}, bad
    finally:
        relay.mutation = None
        await driver.close()


@pytest.fixture(scope="module")
def modbus_relay() -> Iterator[Relay]:
    with relayed("pump-modbus", udp=False) as relay:
        yield relay


@pytest.fixture(scope="module")
def snmp_relay() -> Iterator[Relay]:
    with relayed("ups-rfc1628", udp=True) as relay:
        yield relay


@pytest.fixture(scope="module")
def bacnet_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Relay, Path]]:
    # Without change-of-value subscriptions every datagram the device sends is the answer to
    # the request the relay just passed on (a notification would be taken for an answer).
    text = (catalog.catalog_dir() / "crah-bacnet.toml").read_text(encoding="utf-8")
    model = tmp_path_factory.mktemp("bacnet-model") / "crah-no-cov.toml"
    model.write_text(text.replace("cov = true", "cov = false"), encoding="utf-8")
    assert "cov = true" not in model.read_text(encoding="utf-8")
    with relayed(str(model), udp=True) as relay:
        yield relay, model


FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)


@FUZZ
@given(mutation=MUTATIONS)
def test_modbus_answers_mutated(
    modbus_relay: Relay, tmp_path_factory: pytest.TempPathFactory, mutation: Mutation
) -> None:
    folder = tmp_path_factory.mktemp("modbus")
    device = _modbus_device(folder, modbus_relay.port)
    asyncio.run(poll_garbage_then_honest(ModbusDriver(), device, modbus_relay, mutation))


@settings(FUZZ, max_examples=12)
@given(mutation=MUTATIONS)
def test_snmp_answers_mutated(snmp_relay: Relay, tmp_path_factory: pytest.TempPathFactory, mutation: Mutation) -> None:
    folder = tmp_path_factory.mktemp("snmp")
    device = make_device(folder, "ups-rfc1628", snmp_relay.port, timeout_s=0.3, retries=0)

    async def run() -> None:
        await poll_garbage_then_honest(SnmpDriver(), device, snmp_relay, mutation)

    asyncio.run(run())


@settings(FUZZ, max_examples=12)
@given(mutation=MUTATIONS)
def test_bacnet_answers_mutated(
    bacnet_relay: tuple[Relay, Path], tmp_path_factory: pytest.TempPathFactory, mutation: Mutation
) -> None:
    relay, model = bacnet_relay
    folder = tmp_path_factory.mktemp("bacnet")
    path = folder / "agent.toml"
    instance = int(catalog.load_path(model).bacnet.get("device_instance", 1001))
    path.write_text(
        '[agent]\nid = "edge-fuzz"\nsite = "lab"\n\n[defaults]\ntimeout_s = 0.5\nretries = 0\n\n'
        f'[[devices]]\nid = "fuzzed"\nmodel = "{model}"\nhost = "127.0.0.1"\nport = {relay.port}\n'
        f"bacnet = {{ device_instance = {instance} }}\n",
        encoding="utf-8",
    )
    device = agent_config.load(path).devices[0]
    asyncio.run(poll_garbage_then_honest(BacnetDriver(), device, relay, mutation))


def _modbus_device(folder: Path, port: int) -> Device:
    path = folder / "agent.toml"
    path.write_text(
        '[agent]\nid = "edge-fuzz"\nsite = "lab"\n\n[defaults]\ntimeout_s = 0.3\nretries = 0\n\n'
        f'[[devices]]\nid = "fuzzed"\nmodel = "pump-modbus"\nport = {port}\n',
        encoding="utf-8",
    )
    return agent_config.load(path).devices[0]
