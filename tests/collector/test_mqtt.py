"""The collector's MQTT side against a real Mosquitto: manual acks, sessions, flow control, sharing."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import msgspec
import pytest

from collector.config import MqttSection
from collector.mqtt import Subscriber, Token, subscriptions
from tests.collector.conftest import SITE, Publisher, make_batch
from tests.support.servers import Mosquitto

pytestmark = [pytest.mark.servers, pytest.mark.timeout(120)]


class Received:
    """Deliveries of one Subscriber, in arrival order."""

    def __init__(self) -> None:
        self.q: queue.Queue[tuple[str, bytes, Token]] = queue.Queue()

    def __call__(self, topic: str, payload: bytes, token: Token) -> bool:
        self.q.put((topic, payload, token))
        return True

    def take(self, n: int, timeout_s: float = 20.0) -> list[tuple[str, bytes, Token]]:
        return [self.q.get(timeout=timeout_s) for _ in range(n)]

    def pending(self) -> int:
        return self.q.qsize()


def _subscriber(
    broker: Mosquitto,
    client_id: str,
    received: Received,
    *,
    group: str = "",
    receive_maximum: int = 1000,
    protocol: str = "5",
) -> Subscriber:
    settings = MqttSection.model_validate({"url": broker.url, "shared_group": group, "protocol": protocol})
    sub = Subscriber(settings, client_id=client_id, site=SITE, receive_maximum=receive_maximum, on_message=received)
    sub.start()
    assert sub.subscribed.wait(20), f"{client_id} did not subscribe"
    return sub


@pytest.fixture
def pub(mosquitto: Mosquitto) -> Iterator[Publisher]:
    p = Publisher(mosquitto, "test-mqtt-publisher")
    yield p
    p.close()


def _seqs(deliveries: list[tuple[str, bytes, Token]]) -> list[int]:
    return [msgspec.json.decode(payload)["seq"] for _, payload, _ in deliveries]


def test_subscriptions_are_site_scoped_and_optionally_shared() -> None:
    assert subscriptions("s1") == ["dcim/v1/s1/+/+/telemetry", "dcim/v1/s1/+/+/event", "dcim/v1/s1/+/status"]
    assert subscriptions("s1", "g")[0] == "$share/g/dcim/v1/s1/+/+/telemetry"


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_unacknowledged_messages_come_back_after_a_reconnect(
    mosquitto: Mosquitto, pub: Publisher, protocol: str
) -> None:
    first = Received()
    sub = _subscriber(mosquitto, "coll-a", first, protocol=protocol)
    pub.publish_batches([make_batch(s) for s in range(10)])
    got = first.take(10)
    assert _seqs(got) == list(range(10))
    for _, _, token in got[:4]:  # the store took only the first four
        sub.ack(token)
    sub.stop()

    again = Received()
    sub = _subscriber(mosquitto, "coll-a", again, protocol=protocol)
    redelivered = again.take(6)
    assert _seqs(redelivered) == list(range(4, 10))
    for _, _, token in redelivered:
        sub.ack(token)
    sub.stop()

    # All acknowledged now: after another reconnect only new messages arrive.
    last = Received()
    sub = _subscriber(mosquitto, "coll-a", last, protocol=protocol)
    pub.publish_batches([make_batch(99)])
    assert _seqs(last.take(1)) == [99]
    assert last.pending() == 0
    sub.stop()


def test_messages_published_while_away_are_kept_for_the_session(mosquitto: Mosquitto, pub: Publisher) -> None:
    sub = _subscriber(mosquitto, "coll-b", Received())
    sub.stop()
    pub.publish_batches([make_batch(s) for s in range(5)])
    back = Received()
    sub = _subscriber(mosquitto, "coll-b", back)
    assert sorted(_seqs(back.take(5))) == list(range(5))
    sub.stop()


def test_stale_tokens_are_not_acknowledged_on_a_new_connection(broker: Mosquitto) -> None:
    got = Received()
    sub = _subscriber(broker, "coll-c", got)
    pub = Publisher(broker, "test-publisher-c")
    pub.publish_batches([make_batch(0)])
    pub.close()
    (_, _, token) = got.take(1)[0]
    broker.stop()
    broker.start()
    assert sub.subscribed.wait(30)  # reconnected, session resumed
    redelivered = got.take(1)[0]
    assert redelivered[2][1] == token[1]  # the broker resent it under the same packet id
    assert redelivered[2][0] != token[0]
    assert sub.session_lost == 0
    sub.ack(token)  # from the old connection: must be ignored, or it would acknowledge the resent copy
    sub.stop()
    again = Received()
    sub = _subscriber(broker, "coll-c", again)
    (_, _, token) = again.take(1)[0]  # still unacknowledged, so delivered once more
    sub.ack(token)
    sub.stop()
    # Acknowledged on its own connection: not delivered again.
    after = Received()
    sub = _subscriber(broker, "coll-c", after)
    pub = Publisher(broker, "test-publisher-c")
    pub.publish_batches([make_batch(1)])
    pub.close()
    assert _seqs(after.take(1)) == [1]
    sub.stop()


def test_receive_maximum_holds_back_the_broker(mosquitto: Mosquitto, pub: Publisher) -> None:
    got = Received()
    sub = _subscriber(mosquitto, "coll-d", got, receive_maximum=5)
    pub.publish_batches([make_batch(s) for s in range(20)])
    first = got.take(5)
    # A full round trip through the broker after the twenty: it has had every chance to send more.
    marker = Received()
    watcher = _subscriber(mosquitto, "coll-watch", marker)
    pub.publish_batches([make_batch(100, device="other")])
    marker.take(1)
    assert got.pending() == 0
    sub.ack(first[0][2])
    sixth = got.take(1)
    assert _seqs(sixth) == [5]
    for _, _, token in [*first[1:], *sixth]:
        sub.ack(token)
    rest = got.take(14)
    assert _seqs(rest) == list(range(6, 20))
    watcher.stop()
    sub.stop()


class AutoAck:
    """Deliveries acknowledged as they arrive, counted under a condition shared by several subscribers."""

    def __init__(self, cond: threading.Condition) -> None:
        self.cond = cond
        self.sub: Subscriber | None = None
        self.seqs: list[int] = []

    def __call__(self, _topic: str, payload: bytes, token: Token) -> bool:
        assert self.sub is not None
        self.sub.ack(token)
        with self.cond:
            self.seqs.append(msgspec.json.decode(payload)["seq"])
            self.cond.notify_all()
        return True


def test_a_shared_subscription_splits_the_load(mosquitto: Mosquitto, pub: Publisher) -> None:
    cond = threading.Condition()
    a, b = AutoAck(cond), AutoAck(cond)
    a.sub = Subscriber(
        MqttSection(url=mosquitto.url, shared_group="g"),
        client_id="coll-1",
        site=SITE,
        receive_maximum=100,
        on_message=a,
    )
    b.sub = Subscriber(
        MqttSection(url=mosquitto.url, shared_group="g"),
        client_id="coll-2",
        site=SITE,
        receive_maximum=100,
        on_message=b,
    )
    for sub in (a.sub, b.sub):
        sub.start()
        assert sub.subscribed.wait(20)
    pub.publish_batches([make_batch(s) for s in range(200)])
    with cond:
        assert cond.wait_for(lambda: len(a.seqs) + len(b.seqs) >= 200, timeout=30)
    assert sorted(a.seqs + b.seqs) == list(range(200))
    assert a.seqs
    assert b.seqs
    assert not set(a.seqs) & set(b.seqs)
    a.sub.stop()
    b.sub.stop()
