"""Malformed MQTT payloads generated with hypothesis: the collector counts and rejects them, and keeps going.

In process, every generated payload goes through the collector's ingest: it never raises,
a refused message is dead-lettered with its topic and a reason and acknowledged, and what
it accepts the store can write. Over a real Mosquitto, a running ``dcim-collector`` gets
generated garbage between good batches: every piece of garbage comes back on the
dead-letter topic with a reason, every good batch is stored.
"""

from __future__ import annotations

import json
import math
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from collector.config import IngestSection
from collector.ingest import Ingest
from collector.store import count_values, ts_ns
from collector.store.sqlite import SqliteStore
from models import telemetry
from tests.collector.conftest import (
    SITE,
    CollectorProcess,
    Publisher,
    Subscription,
    make_batch,
    sqlite_store,
    topic_of,
    write_config,
)
from tests.security.helpers import binary_or_skip
from tests.support import servers

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]

DEAD_LETTER = "dcim/v1/dead-letter"
GOOD = msgspec.to_builtins(make_batch(1, points=3))

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def _set(path: list[str], value: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(json.dumps(GOOD))
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


def _drop(path: list[str]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(json.dumps(GOOD))
    node = data
    for key in path[:-1]:
        node = node[key]
    node.pop(path[-1], None)
    return data


FIELDS = [["v"], ["site"], ["agent"], ["device"], ["model"], ["kind"], ["seq"], ["ts"], ["points"], ["tables"]]
POINT_FIELDS = [["points", "p0", k] for k in ("value", "unit", "quality", "counter")] + [["points", "p0"]]

MUTATED = st.one_of(
    st.builds(_set, st.sampled_from(FIELDS + POINT_FIELDS), JSON),
    st.builds(_drop, st.sampled_from(FIELDS + POINT_FIELDS)),
    st.builds(_set, st.just(["points", "bad name"]), st.just({"value": 1.0, "unit": "kW"})),
    st.builds(_set, st.just(["extra"]), JSON),
)

PAYLOADS = st.one_of(
    st.binary(max_size=600),
    JSON.map(lambda v: json.dumps(v).encode()),
    MUTATED.map(lambda d: json.dumps(d).encode()),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.just(b'{"v": 1, "site": "bj-dx"' + b" " * (telemetry.MAX_PAYLOAD_BYTES + 1) + b"}"),
)

TOPICS = st.one_of(
    st.just(topic_of(make_batch(1))),
    st.sampled_from(
        [
            f"dcim/v1/{SITE}/edge-01/other-device/telemetry",
            f"dcim/v1/{SITE}/another-agent/meter-1/telemetry",
            f"dcim/v1/{SITE}/edge-01/meter-1/event",
            f"dcim/v1/{SITE}/edge-01/status",
        ]
    ),
)


class Sink:
    """The MQTT side of ingest, recording acknowledgements and dead letters."""

    def __init__(self) -> None:
        self.acked: list[object] = []
        self.dead: list[dict[str, Any]] = []

    def ack(self, token: object) -> None:
        self.acked.append(token)

    def dead_letter(self, payload: bytes) -> None:
        self.dead.append(msgspec.json.decode(payload))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path_factory.mktemp("fuzz-store") / "store.sqlite")
    s.open()
    try:
        yield s
    finally:
        s.close()


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(topic=TOPICS, payload=PAYLOADS)
def test_ingest_refuses_or_stores_anything(store: SqliteStore, topic: str, payload: bytes) -> None:
    sink = Sink()
    ingest = Ingest("collector-1", SITE, IngestSection(), sink)
    delivery = ("connection", 1, 1)  # what the MQTT side hands over to acknowledge later
    assert ingest.offer(topic, payload, delivery)  # never raises, never blocks
    (item,) = ingest.queue._items  # one item: to store, or to acknowledge only
    assert item.token == delivery
    if item.message is None:
        (dead,) = sink.dead
        assert dead["topic"] == topic
        assert dead["reason"]
        assert dead["size"] == len(payload)
        assert ingest.metrics.rejected == 1
    else:
        assert not sink.dead
        assert ingest.metrics.rejected == 0
        assert item.values == count_values(item.message)
        if isinstance(item.message, telemetry.Batch):
            for point in item.message.points.values():
                assert point.quality != "good" or point.value is not None
                assert not isinstance(point.value, float) or math.isfinite(point.value)
        store.write_batches([item.message])  # what ingest accepts, the store can hold


# ---------------------------------------------------------------- over a real broker


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[servers.Mosquitto, Path]]:
    binary = binary_or_skip("mosquitto")
    work = tmp_path_factory.mktemp("fuzz-chain")
    broker = servers.start_mosquitto(binary, work / "broker")
    db = work / "store.sqlite"
    collector = CollectorProcess(write_config(work / "collector.toml", broker, sqlite_store(db)), work)
    try:
        collector.start()
        yield broker, db
        assert collector.stop() == 0
    finally:
        if collector.proc is not None:
            collector.kill()
        broker.stop()
    text = (work / "collector.log").read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]


class Counter:
    """A sequence number shared by the examples."""

    def __init__(self) -> None:
        self.n = 1000
        self.lock = threading.Lock()

    def next(self) -> int:
        with self.lock:
            self.n += 1
            return self.n


SEQ = Counter()


def _valid(topic: str, payload: bytes) -> bool:
    probe = Ingest("probe", SITE, IngestSection(), Sink())
    try:
        probe.decode(topic, payload)
    except telemetry.TelemetryError:
        return False
    return True


def _stored(db: Path, seq: int) -> bool:
    store = SqliteStore(db)
    store.open()
    try:
        ts = ts_ns(make_batch(seq).ts)
        times, _ = store.read_series("meter", "meter-1", "p0", ts, ts + 1)
        return len(times) == 1
    finally:
        store.close()


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(garbage=st.lists(st.tuples(TOPICS, PAYLOADS), min_size=1, max_size=8))
def test_a_running_collector_dead_letters_garbage_and_stores_the_rest(
    running: tuple[servers.Mosquitto, Path], garbage: list[tuple[str, bytes]]
) -> None:
    assume(not any(_valid(t, p) for t, p in garbage))
    broker, db = running
    letters = Subscription(broker, DEAD_LETTER, client_id="fuzz-dead-letters")
    publisher = Publisher(broker, "fuzz-publisher")
    try:
        before = make_batch(SEQ.next())
        after = make_batch(SEQ.next())
        publisher.publish_batches([before])
        for topic, payload in garbage:
            publisher.publish(topic, payload).wait_for_publish(30)
        publisher.publish_batches([after])
        got = []
        for _ in garbage:
            try:
                got.append(json.loads(letters.get(timeout_s=30)[1]))
            except queue.Empty:
                pytest.fail(f"only {len(got)} of {len(garbage)} refused messages were dead-lettered")
        deadline = threading.Event()
        for _ in range(600):
            if _stored(db, before.seq) and _stored(db, after.seq):
                break
            deadline.wait(0.05)  # polling the store file the collector writes
        else:
            pytest.fail("the good batches around the garbage were not stored")
    finally:
        publisher.close()
        letters.close()
    assert sorted(d["topic"] for d in got) == sorted(t for t, _ in garbage)
    assert all(d["reason"] for d in got)
