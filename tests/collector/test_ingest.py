"""Ingest without a broker: strict decoding, normalisation, dedup, the bounded queue, the writer."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import msgspec
import pytest

from collector.config import IngestSection
from collector.ingest import Dedup, Ingest, IngestQueue, Item, Writer, dead_letter_record, normalise
from collector.store import ts_ns
from collector.store.influx_v1 import InfluxV1Store
from collector.store.sqlite import SqliteStore
from models import telemetry
from tests.collector.conftest import AGENT, SITE, T0, make_batch, topic_of, wait_until
from tests.support.servers import InfluxDB

pytestmark = pytest.mark.timeout(60)


class RecordingAcker:
    """The MQTT side's interface, recording what the writer acknowledges and dead-letters."""

    def __init__(self) -> None:
        self.acked: list[object] = []
        self.dead: list[dict[str, object]] = []
        self.lock = threading.Lock()

    def ack(self, token: object) -> None:
        with self.lock:
            self.acked.append(token)

    def dead_letter(self, payload: bytes) -> None:
        with self.lock:
            self.dead.append(msgspec.json.decode(payload))


def _ingest(**settings: float) -> tuple[Ingest, RecordingAcker]:
    acker = RecordingAcker()
    return Ingest("collector-1", SITE, IngestSection.model_validate(settings), acker), acker


# ---------------------------------------------------------------- decoding


def test_a_good_batch_decodes() -> None:
    ingest, _ = _ingest()
    batch = make_batch(1)
    assert ingest.decode(topic_of(batch), telemetry.encode(batch)) == batch


GOOD = telemetry.encode(make_batch(1)).decode()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json at all", "not JSON"),
        (b"\xff\xfe\x00binary", "not JSON"),
        (GOOD.replace('"v":1', '"v":2').encode(), "unsupported version 2"),
        (GOOD.replace('"v":1,', "").encode(), "no usable version"),
        (GOOD.replace('"v":1', '"v":-1').encode(), "unsupported version -1"),
        (GOOD.replace('"seq":1', '"seq":"one"').encode(), "Expected `int`"),
        (GOOD.replace('"seq":1', '"seq":-1').encode(), "negative"),
        (GOOD.replace('"ts":', '"ts":1').encode(), "Unix time"),
        (GOOD.replace('"unit":"kW"', '"unit":"furlongs"', 1).encode(), "unknown unit"),
        (GOOD.replace('"site":"bj-dx"', '"site":"bj-dx","extra":1').encode(), "unknown field"),
        (GOOD.replace('"kind":"meter"', '"kind":"Meter Kind"').encode(), "snake_case"),
        (GOOD.replace('"device":"meter-1"', '"device":"meter-2"').encode(), "names device"),
        (GOOD.replace('"agent":"edge-01"', '"agent":"edge-02"').encode(), "names bj-dx/edge-01"),
        (b'{"v":1,' + b" " * telemetry.MAX_PAYLOAD_BYTES + b"}", "exceeds"),
    ],
    ids=[
        "not-json",
        "binary",
        "version",
        "no-version",
        "version-minus-one",
        "wrong-type",
        "negative-seq",
        "ts-out-of-range",
        "unknown-unit",
        "unknown-field",
        "bad-kind",
        "device-mismatch",
        "agent-mismatch",
        "oversized",
    ],
)
def test_garbage_is_refused_with_a_reason(payload: bytes, reason: str) -> None:
    ingest, _ = _ingest()
    with pytest.raises(telemetry.TelemetryError, match=reason):
        ingest.decode(topic_of(make_batch(1)), payload)


def test_topics_are_checked() -> None:
    ingest, _ = _ingest()
    payload = telemetry.encode(make_batch(1))
    with pytest.raises(telemetry.TelemetryError, match="not 'bj-dx'"):
        ingest.decode(f"dcim/v1/other-site/{AGENT}/meter-1/telemetry", payload)
    with pytest.raises(telemetry.TelemetryError, match="not under"):
        ingest.decode("somewhere/else", payload)
    with pytest.raises(telemetry.TelemetryError, match="does not take"):
        ingest.decode(f"dcim/v1/{SITE}/{AGENT}/cmd", payload)


def test_events_and_statuses_decode() -> None:
    ingest, _ = _ingest()
    event = telemetry.Event(site=SITE, agent=AGENT, device="ups-1", type="on_battery", ts=T0)
    assert ingest.decode(telemetry.event_topic(SITE, AGENT, "ups-1"), telemetry.encode(event)) == event
    status = telemetry.Status(site=SITE, agent=AGENT, state="offline")
    assert ingest.decode(telemetry.agent_status_topic(SITE, AGENT), telemetry.encode(status)) == status


def test_dead_letter_record_keeps_topic_reason_and_payload() -> None:
    record = msgspec.json.decode(dead_letter_record("c1", "t/x", "not JSON", b"\xffabc"))
    assert record["topic"] == "t/x"
    assert record["reason"] == "not JSON"
    assert record["encoding"] == "base64"
    assert record["payload"] == "/2FiYw=="
    big = msgspec.json.decode(dead_letter_record("c1", "t", "too big", b"x" * 300_000))
    assert big["truncated"] is True
    assert big["size"] == 300_000


# ---------------------------------------------------------------- normalisation


def test_units_are_normalised() -> None:
    batch = telemetry.Batch(
        site=SITE,
        agent=AGENT,
        device="m",
        model="meter-sdm630",
        kind="meter",
        seq=0,
        ts=T0,
        points={
            "power": telemetry.Point(1500.0, "W"),
            "energy": telemetry.Point(2_000_000, "Wh", counter=True),
            "temp": telemetry.Point(212.0, "degF"),
            "voltage": telemetry.Point(230.0, "V"),
            "lost": telemetry.Point(None, "W", "timeout"),
        },
        tables={"phases": {"1": {"power": telemetry.Point(500.0, "W")}}},
    )
    out = normalise(batch)
    assert out.points["power"] == telemetry.Point(1.5, "kW")
    assert out.points["energy"] == telemetry.Point(2000.0, "kWh", counter=True)
    assert out.points["temp"].unit == "degC"
    assert out.points["temp"].value == pytest.approx(100.0)
    assert out.points["voltage"] is batch.points["voltage"]
    assert out.points["lost"] == telemetry.Point(None, "kW", "timeout")
    assert out.tables["phases"]["1"]["power"] == telemetry.Point(0.5, "kW")
    assert batch.points["power"].unit == "W"  # the original is untouched


def test_a_batch_already_in_collector_units_is_passed_through() -> None:
    batch = make_batch(3)
    assert normalise(batch) is batch


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"points": {"x__q": telemetry.Point(1.0, "")}}, "reserved"),
        ({"points": {"x": telemetry.Point(10**400, "")}}, "too large"),
        ({"model": "bad\nmodel"}, "control"),
        ({"tables": {"t": {"a\\b": {"x": telemetry.Point(1.0, "")}}}}, "control"),
    ],
)
def test_unstorable_batches_are_refused(change: dict[str, object], reason: str) -> None:
    batch = msgspec.structs.replace(make_batch(0), **change)
    with pytest.raises(telemetry.TelemetryError, match=reason):
        normalise(batch)


# ---------------------------------------------------------------- dedup


def test_dedup_window_per_device() -> None:
    dedup = Dedup(window=3)
    assert dedup.check("a", "d", 1, T0) is False
    dedup.mark([("a", "d", s, T0 + s) for s in range(1, 6)])
    assert dedup.check("a", "d", 5, T0 + 5) is True
    assert dedup.check("a", "d", 3, T0 + 3) is True
    assert dedup.check("a", "d", 2, T0 + 2) is False  # beyond the window: written again, harmlessly
    assert dedup.check("a", "other", 5, T0 + 5) is False
    assert dedup.check("b", "d", 5, T0 + 5) is False
    assert dedup.check("a", "d", 5, T0 + 99) is None  # same seq, another read: a restarted sequence
    assert len(dedup) == 3
    assert Dedup(window=0).check("a", "d", 1, T0) is False


# ---------------------------------------------------------------- the queue


async def test_queue_blocks_when_full_and_releases_on_take() -> None:
    q = IngestQueue(capacity=2)
    assert q.put(Item(1, None, 1))
    assert q.put(Item(2, None, 1))
    blocked = threading.Event()
    third_in = threading.Event()

    def producer() -> None:
        q.put(Item(3, None, 1), blocked.set)  # on_full is called as the producer starts waiting
        third_in.set()

    thread = threading.Thread(target=producer)
    thread.start()
    assert await asyncio.to_thread(blocked.wait, 10)
    assert not third_in.is_set()
    assert len(q) == 2
    first = await q.take(max_values=1)
    assert [i.token for i in first] == [1]
    assert await asyncio.to_thread(third_in.wait, 10)
    rest = await q.take(max_values=100)
    assert [i.token for i in rest] == [2, 3]
    thread.join()


async def test_queue_close_releases_a_blocked_producer() -> None:
    q = IngestQueue(capacity=1)
    q.put(Item(1, None))
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(q.put(Item(2, None))))
    thread.start()
    q.close()
    await asyncio.to_thread(thread.join, 10)
    assert result == [False]
    assert [i.token for i in await q.take(10)] == [1]
    assert await q.take(10) == []


async def test_take_wakes_up_for_an_item_from_another_thread() -> None:
    q = IngestQueue(capacity=10)
    waiter = asyncio.create_task(q.take(10))
    await asyncio.sleep(0)
    threading.Thread(target=q.put, args=(Item("x", None, 1),)).start()
    items = await asyncio.wait_for(waiter, timeout=10)
    assert [i.token for i in items] == ["x"]


# ---------------------------------------------------------------- the writer


async def test_acknowledged_in_order_only_after_the_write(tmp_path: Path) -> None:
    ingest, acker = _ingest()
    store = SqliteStore(tmp_path / "s.sqlite")
    store.open()
    writer = Writer(ingest, store)
    batches = [make_batch(s) for s in range(5)]
    for i, b in enumerate(batches):
        ingest.offer(topic_of(b), telemetry.encode(b), ("tok", i))
    ingest.offer(topic_of(batches[0]), b"garbage", ("tok", 5))
    ingest.offer(topic_of(batches[1]), telemetry.encode(batches[1]), ("tok", 6))  # not yet stored: written again
    assert acker.acked == []
    items = await ingest.queue.take(1000)
    assert await writer.commit(items)
    assert acker.acked == [("tok", i) for i in range(7)]
    ts, _ = store.read_series("meter", "meter-1", "p0", 0, ts_ns(T0 + 10))
    assert len(ts) == 5
    assert len(acker.dead) == 1
    assert ingest.metrics.rejected == 1
    # A replay after the write is recognised and acknowledged without writing.
    ingest.offer(topic_of(batches[2]), telemetry.encode(batches[2]), ("tok", 7))
    assert ingest.metrics.duplicates == 1
    items = await ingest.queue.take(1000)
    assert [i.message for i in items] == [None]
    assert await writer.commit(items)
    assert acker.acked[-1] == ("tok", 7)
    store.close()


async def test_nothing_is_acknowledged_while_the_store_is_unavailable(tmp_path: Path) -> None:
    ingest, acker = _ingest(retry_max_s=0.2)
    path = tmp_path / "s.sqlite"
    store = SqliteStore(path, timeout_s=0.05)
    store.open()
    writer = Writer(ingest, store)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holding the database: writes fail
    for s in range(3):
        b = make_batch(s)
        ingest.offer(topic_of(b), telemetry.encode(b), s)
    items = await ingest.queue.take(1000)
    commit = asyncio.create_task(writer.commit(items))
    await wait_until("two failed writes", lambda: ingest.metrics.write_errors >= 2)
    assert acker.acked == []
    assert not ingest.metrics.store_up
    blocker.execute("ROLLBACK")
    blocker.close()
    assert await asyncio.wait_for(commit, timeout=30)
    assert acker.acked == [0, 1, 2]
    assert ingest.metrics.store_up
    store.close()


async def test_stop_gives_up_without_acknowledging(tmp_path: Path) -> None:
    ingest, acker = _ingest(retry_max_s=0.2)
    path = tmp_path / "s.sqlite"
    store = SqliteStore(path, timeout_s=0.05)
    store.open()
    writer = Writer(ingest, store)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    b = make_batch(0)
    ingest.offer(topic_of(b), telemetry.encode(b), 0)
    commit = asyncio.create_task(writer.commit(await ingest.queue.take(10)))
    await wait_until("a failed write", lambda: ingest.metrics.write_errors >= 1)
    writer.stop()
    assert await asyncio.wait_for(commit, timeout=30) is False
    assert acker.acked == []
    blocker.close()
    store.close()


@pytest.mark.servers
async def test_a_message_the_store_refuses_is_dead_lettered_and_the_rest_written(influxdb: InfluxDB) -> None:
    ingest, acker = _ingest()
    store = InfluxV1Store(influxdb.url, "dcim")
    store.open()
    store.write_batches([make_batch(0)])  # p0 is a number from now on
    writer = Writer(ingest, store)
    bad = msgspec.structs.replace(make_batch(2), points={"p0": telemetry.Point("text", "")})
    for i, b in enumerate([make_batch(1), bad, make_batch(3)]):
        ingest.offer(topic_of(b), telemetry.encode(b), i)
    assert await writer.commit(await ingest.queue.take(1000))
    assert acker.acked == [0, 1, 2]
    assert ingest.metrics.store_rejects == 1
    assert ingest.metrics.written_messages == 2
    assert len(acker.dead) == 1
    assert "field type conflict" in str(acker.dead[0]["reason"])
    assert msgspec.json.decode(str(acker.dead[0]["payload"]))["seq"] == 2
    ts, _ = store.read_series("meter", "meter-1", "p0", 0, ts_ns(T0 + 10))
    assert ts.tolist() == [ts_ns(T0 + s) for s in (0, 1, 3)]
    store.close()
