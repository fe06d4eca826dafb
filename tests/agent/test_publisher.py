"""The MQTT publisher and the spool's forwarder against a real Mosquitto (plain, TLS, password)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import MqttSection
from agent.publisher import Publisher, PublisherError, PublisherOptions, read_password
from agent.spool import AsyncSpool, Forwarder
from models import telemetry
from tests.agent.agent_helpers import (
    Subscriber,
    make_certs,
    password_file,
    start_broker,
    unique_in_order,
    wait_until,
)
from tests.support import servers
from tests.support.servers import Mosquitto

pytestmark = pytest.mark.servers

SITE, AGENT = "bj-dx", "edge-01"
STATUS_TOPIC = telemetry.agent_status_topic(SITE, AGENT)


@pytest.fixture
def mosquitto(mosquitto_bin: str, tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker that keeps its sessions across stop() and start() (see start_broker)."""
    broker = start_broker(mosquitto_bin, tmp_path / "mosquitto")
    try:
        yield broker
    finally:
        broker.stop()


def _status(state: str) -> bytes:
    return telemetry.encode(telemetry.Status(site=SITE, agent=AGENT, state=state, ts=1_764_450_000.0))  # type: ignore[arg-type]


def _batch(seq: int, device: str = "meter-1") -> tuple[str, bytes]:
    batch = telemetry.Batch(
        site=SITE,
        agent=AGENT,
        device=device,
        model="meter-sdm630",
        kind="meter",
        seq=seq,
        ts=1_764_450_000.0 + seq,
        points={"active_power": telemetry.Point(float(seq), "W")},
    )
    return telemetry.telemetry_topic(SITE, AGENT, device), telemetry.encode(batch)


class Events:
    """Publisher callbacks turned into asyncio primitives."""

    def __init__(self) -> None:
        self.delivered: asyncio.Queue[tuple[int, bool]] = asyncio.Queue()
        self.up = asyncio.Event()
        self.down = asyncio.Event()
        self.errors: asyncio.Queue[str] = asyncio.Queue()

    def connection(self, connected: bool) -> None:
        (self.up if connected else self.down).set()
        (self.down if connected else self.up).clear()

    def attach(self, publisher: Publisher) -> Publisher:
        publisher.on_delivered = lambda token, ok: self.delivered.put_nowait((token, ok))
        publisher.on_connection = self.connection
        publisher.on_error = self.errors.put_nowait
        return publisher


def _options(broker: Mosquitto, **kw: object) -> PublisherOptions:
    base: dict[str, object] = {
        "host": broker.host,
        "port": broker.port,
        "client_id": "dcim-agent-edge-01",
        "will_topic": STATUS_TOPIC,
        "will_payload": _status("offline"),
        "online_payload": _status("online"),
        "reconnect_max_s": 1,
    }
    base.update(kw)
    return PublisherOptions(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_qos1_delivery_retained_status_and_clean_stop(mosquitto: Mosquitto, protocol: str) -> None:
    sub = Subscriber(mosquitto.host, mosquitto.port).start()
    events = Events()
    pub = events.attach(Publisher(_options(mosquitto, protocol=protocol)))
    try:
        pub.start()
        await asyncio.wait_for(events.up.wait(), 30)
        topic, payload = _batch(1)
        assert pub.send(topic, payload, token=41)
        assert await asyncio.wait_for(events.delivered.get(), 30) == (41, True)
        assert pub.inflight == 0
        await pub.stop(_status("offline"))
        sub.wait_for(lambda r: any(m.topic == topic for m in r) and len(sub.statuses()) >= 2, what="batch + status")
        assert [m.payload for m in sub.received if m.topic == topic] == [payload]
        assert [s.state for s in sub.statuses()] == ["online", "offline"]
    finally:
        await pub.stop()
        sub.stop()
    # Retained: a newcomer learns the agent is offline.
    late = Subscriber(mosquitto.host, mosquitto.port, topic=STATUS_TOPIC, client_id="late").start()
    try:
        late.wait_for(lambda r: len(r) >= 1, what="retained status")
        assert late.received[0].retain
        assert late.statuses()[0].state == "offline"
    finally:
        late.stop()


async def test_the_inflight_window_is_bounded(mosquitto: Mosquitto) -> None:
    events = Events()
    pub = events.attach(Publisher(_options(mosquitto, inflight_max=3)))
    pub.start()
    try:
        await asyncio.wait_for(events.up.wait(), 30)
        # No await between sends: no acknowledgement can be processed, so the window fills.
        sent = [pub.send(*_batch(i), token=i) for i in range(1, 6)]
        assert sent == [True, True, True, False, False]
        assert pub.inflight == 3
        acks = {await asyncio.wait_for(events.delivered.get(), 30) for _ in range(3)}
        assert acks == {(1, True), (2, True), (3, True)}
        assert pub.inflight == 0
        assert pub.send(*_batch(4), token=4)
    finally:
        await pub.stop()


async def test_send_refuses_while_disconnected(tmp_path: Path) -> None:
    port = servers.free_port()
    pub = Publisher(PublisherOptions(host="127.0.0.1", port=port, client_id="nobody", reconnect_max_s=1))
    errors: asyncio.Queue[str] = asyncio.Queue()
    pub.on_error = errors.put_nowait
    pub.start()
    try:
        assert "cannot reach the broker" in await asyncio.wait_for(errors.get(), 30)
        assert not pub.connected
        assert not pub.send(*_batch(1), token=1)
        assert pub.inflight == 0
    finally:
        await pub.stop()


def test_password_from_file_or_environment(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    assert read_password(secret, {"DCIM_MQTT_PASSWORD": "env"}) == "s3cret"
    assert read_password(None, {"DCIM_MQTT_PASSWORD": "env"}) == "env"
    assert read_password(None, {}) is None
    with pytest.raises(PublisherError, match="password_file"):
        read_password(tmp_path / "missing", {})


def _tls_broker(mosquitto_bin: str, tmp_path: Path) -> tuple[Mosquitto, Path, Path]:
    certs = make_certs(tmp_path / "pki")
    passwd = password_file(tmp_path / "pki", "edge-01", "correct horse")
    extra = (
        f"cafile {certs.ca}\ncertfile {certs.server_cert}\nkeyfile {certs.server_key}\n"
        "require_certificate true\n"
        f"allow_anonymous false\npassword_file {passwd}\n"
    )
    broker = servers.start_mosquitto(mosquitto_bin, tmp_path / "broker", extra_conf=extra)
    return broker, certs.ca, tmp_path / "pki"


async def test_tls_with_client_certificate_and_password(mosquitto_bin: str, tmp_path: Path) -> None:
    broker, ca, pki = _tls_broker(mosquitto_bin, tmp_path)
    secret = tmp_path / "mqtt.secret"
    secret.write_text("correct horse\n")
    section = MqttSection(
        url=f"mqtts://{broker.host}:{broker.port}",
        username="edge-01",
        password_file=secret,
        ca_file=ca,
        cert_file=pki / "client.crt",
        key_file=pki / "client.key",
        reconnect_max_s=1,
    )
    tls = (str(ca), str(pki / "client.crt"), str(pki / "client.key"))
    sub = Subscriber(broker.host, broker.port, tls=tls, username="edge-01", password=secret.read_text().strip()).start()
    events = Events()
    pub = events.attach(Publisher(PublisherOptions.from_section(section, "dcim-agent-edge-01", environ={})))
    try:
        assert pub.options.tls
        pub.start()
        await asyncio.wait_for(events.up.wait(), 30)
        topic, payload = _batch(7)
        assert pub.send(topic, payload, token=7)
        assert await asyncio.wait_for(events.delivered.get(), 30) == (7, True)
        sub.wait_for(lambda r: any(m.topic == topic for m in r), what="the batch over TLS")
    finally:
        await pub.stop()
        sub.stop()
        broker.stop()


async def test_tls_broker_refuses_a_wrong_password(mosquitto_bin: str, tmp_path: Path) -> None:
    broker, ca, pki = _tls_broker(mosquitto_bin, tmp_path)
    section = MqttSection(
        url=f"mqtts://{broker.host}:{broker.port}",
        username="edge-01",
        ca_file=ca,
        cert_file=pki / "client.crt",
        key_file=pki / "client.key",
        reconnect_max_s=1,
    )
    events = Events()
    options = PublisherOptions.from_section(section, "dcim-agent-edge-01", environ={"DCIM_MQTT_PASSWORD": "wrong"})
    assert options.password == "wrong"
    pub = events.attach(Publisher(options))
    try:
        pub.start()
        error = await asyncio.wait_for(events.errors.get(), 30)
        assert "refused" in error
        assert not pub.connected
    finally:
        await pub.stop()
        broker.stop()


async def test_forwarder_replays_an_outage_in_order_and_empties_the_spool(mosquitto: Mosquitto, tmp_path: Path) -> None:
    sub = Subscriber(mosquitto.host, mosquitto.port, persistent=True, client_id="collector-test").start()
    spool = await AsyncSpool.open(tmp_path / "spool.sqlite", 16, "drop-oldest")
    events = Events()
    pub = events.attach(Publisher(_options(mosquitto, inflight_max=8)))
    fwd = Forwarder(spool, pub, replay_per_s=40)  # the 60-batch backlog takes 1.5 s to replay
    pub.on_delivered = fwd.delivered

    def connection(up: bool) -> None:
        events.connection(up)
        if up:
            fwd.connected()

    pub.on_connection = connection
    fwd.start()
    pub.start()
    try:
        await asyncio.wait_for(events.up.wait(), 30)
        for _ in range(20):
            await fwd.submit(lambda seq: _batch(seq, "meter-1" if seq % 2 else "pump-1"))
        await asyncio.to_thread(mosquitto.stop)
        await asyncio.wait_for(events.down.wait(), 30)
        outage = []
        for _ in range(60):
            stored = await fwd.submit(lambda seq: _batch(seq, "meter-1" if seq % 2 else "pump-1"))
            assert stored is not None
            outage.append(stored.seq)
        assert spool.stats.depth >= 60
        await asyncio.to_thread(mosquitto.start)
        await asyncio.wait_for(events.up.wait(), 60)
        live = []
        for _ in range(10):  # live data while the backlog replays
            stored = await fwd.submit(lambda seq: _batch(seq, "meter-1" if seq % 2 else "pump-1"))
            assert stored is not None
            live.append(stored.seq)
        await asyncio.to_thread(sub.wait_for, lambda _r: len(set(_seqs(sub))) >= 90, what="90 batches")
        assert await fwd.drain(30)
        assert spool.stats.depth == 0
    finally:
        await fwd.stop()
        await pub.stop()
        await spool.close()
        sub.stop()
    received = _seqs(sub)
    assert sorted(set(received)) == list(range(1, 91))
    for device in ("meter-1", "pump-1"):
        arrived = unique_in_order([b.seq for b in sub.batches(device)])
        backlog = [s for s in arrived if s in outage]
        assert backlog == sorted(backlog), f"{device}: the outage backlog arrived out of order"
        assert len(backlog) == 30
    # Live batches did not wait for the backlog: they arrived before its end.
    arrival = unique_in_order(received)
    assert arrival.index(live[0]) < arrival.index(outage[-1])


def _seqs(sub: Subscriber) -> list[int]:
    return [b.seq for b in sub.batches()]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
async def test_a_dead_network_thread_is_replaced_and_publishing_resumes(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    events = Events()
    pub = events.attach(Publisher(_options(mosquitto)))
    pub.start()
    try:
        await asyncio.wait_for(events.up.wait(), 30)
        assert pub.revive() is False  # alive: nothing to do
        client = pub._client

        def boom(*_args: object) -> None:
            raise RuntimeError("a bug in a callback")

        # An exception escaping a callback ends paho's network thread.
        client.on_publish = boom
        assert pub.send(*_batch(1), token=1)
        await wait_until(lambda: getattr(client, "_thread", None) is None, what="paho's thread to end")
        client.on_publish = pub._paho_publish
        with caplog.at_level("ERROR", logger="agent.publisher"):
            assert pub.revive() is True
        assert pub.thread_restarts == 1
        assert "paho's network thread stopped unexpectedly" in caplog.text
        assert not pub.connected
        await asyncio.wait_for(events.up.wait(), 30)  # reconnected by the new thread
        assert pub.send(*_batch(2), token=2)
        while (delivered := await asyncio.wait_for(events.delivered.get(), 30)) != (2, True):
            assert delivered == (1, True)  # the first batch again, if the broker resent its PUBACK
        assert pub.revive() is False
    finally:
        await pub.stop()
