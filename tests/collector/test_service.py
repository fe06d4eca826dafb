"""The collector service in this process: real Mosquitto, SQLite store, published batches."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import msgspec
import numpy as np
import pytest

from collector import cli
from collector.store import ts_ns
from collector.store.sqlite import SqliteStore
from models import telemetry
from tests.collector.conftest import (
    AGENT,
    SITE,
    T0,
    CollectorProcess,
    Publisher,
    Subscription,
    VictoriaMetrics,
    make_batch,
    running_collector,
    sqlite_store,
    topic_of,
    wait_until,
    write_config,
)
from tests.support.servers import Mosquitto

pytestmark = [pytest.mark.servers, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]


def _read(path: Path, device: str, field: str) -> tuple[list[int], list[float]]:
    store = SqliteStore(path)
    try:
        ts, values = store.read_series("meter", device, field, 0, ts_ns(T0 + 1e6))
    finally:
        store.close()
    return ts.tolist(), values.tolist()


async def test_every_published_value_is_stored(mosquitto: Mosquitto, publisher: Publisher, tmp_path: Path) -> None:
    db = tmp_path / "store.sqlite"
    config = write_config(tmp_path / "c.toml", mosquitto, sqlite_store(db))
    batches = [make_batch(s, device=f"m{s % 5}", points=20, failed=("lost",)) for s in range(500)]
    async with running_collector(config) as collector:
        publisher.publish_batches(batches)
        await wait_until("500 messages written", lambda: collector.metrics.written_messages >= 500)
        assert collector.metrics.written_values == 500 * 21
        assert collector.metrics.rejected == 0
    for d in range(5):
        ts, values = _read(db, f"m{d}", "p7")
        seqs = list(range(d, 500, 5))
        assert ts == [ts_ns(T0 + s) for s in seqs]
        assert values == [s * 1000.0 + 7 for s in seqs]
        _, lost = _read(db, f"m{d}", "lost")
        assert len(lost) == 100
        assert np.isnan(lost).all()


async def test_units_are_normalised_on_the_way_in(mosquitto: Mosquitto, publisher: Publisher, tmp_path: Path) -> None:
    db = tmp_path / "store.sqlite"
    config = write_config(tmp_path / "c.toml", mosquitto, sqlite_store(db))
    batch = msgspec.structs.replace(
        make_batch(0),
        points={"active_power": telemetry.Point(2500.0, "W"), "import_energy": telemetry.Point(1234.0, "Wh")},
    )
    async with running_collector(config) as collector:
        publisher.publish_batches([batch])
        await wait_until("the batch written", lambda: collector.metrics.written_messages >= 1)
    assert _read(db, "meter-1", "active_power")[1] == [2.5]
    assert _read(db, "meter-1", "import_energy")[1] == [1.234]
    store = SqliteStore(db)
    assert store.unit("meter", "meter-1", "active_power") == "kW"
    assert store.unit("meter", "meter-1", "import_energy") == "kWh"
    store.close()


async def test_garbage_is_rejected_counted_and_dead_lettered_while_good_data_flows(
    mosquitto: Mosquitto, publisher: Publisher, tmp_path: Path
) -> None:
    db = tmp_path / "store.sqlite"
    config = write_config(tmp_path / "c.toml", mosquitto, sqlite_store(db))
    dead = Subscription(mosquitto, "dcim/v1/dead-letter")
    good = telemetry.encode(make_batch(0)).decode()
    garbage = {
        "not-json": b"this is not json {",
        "wrong-version": good.replace('"v":1', '"v":7').encode(),
        "wrong-types": good.replace('"seq":0', '"seq":"zero"').encode(),
        "oversized": b'{"v":1,"pad":"' + b"x" * (300 * 1024) + b'"}',
    }
    topic = topic_of(make_batch(0))
    async with running_collector(config) as collector:
        for i in range(100):
            batches = [make_batch(i)]
            publisher.publish_batches(batches)
            if i % 25 == 0:
                for payload in garbage.values():
                    publisher.publish(topic, payload).wait_for_publish(10)
        await wait_until("100 good messages written", lambda: collector.metrics.written_messages >= 100)
        await wait_until("16 rejects", lambda: collector.metrics.rejected >= 16)
        assert collector.metrics.rejects_by_reason == {"not_json": 4, "version": 4, "schema": 4, "oversized": 4}
        assert collector.metrics.dead_letters == 16
        fields = collector.metrics_fields()
        assert fields["rejected_total"] == 16
    records = [msgspec.json.decode(dead.get()[1]) for _ in range(16)]
    dead.close()
    assert {r["topic"] for r in records} == {topic}
    assert sum(1 for r in records if r["truncated"]) == 4
    assert all(r["reason"] for r in records)
    ts, _ = _read(db, "meter-1", "p0")
    assert len(ts) == 100


async def test_duplicates_are_removed(mosquitto: Mosquitto, publisher: Publisher, tmp_path: Path) -> None:
    db = tmp_path / "store.sqlite"
    config = write_config(tmp_path / "c.toml", mosquitto, sqlite_store(db))
    batches = [make_batch(s) for s in range(50)]
    async with running_collector(config) as collector:
        publisher.publish_batches(batches)
        await wait_until("50 written", lambda: collector.metrics.written_messages >= 50)
        publisher.publish_batches(batches[10:30])  # an agent replaying after a reconnect
        await wait_until("20 duplicates", lambda: collector.metrics.duplicates >= 20)
        assert collector.metrics.written_messages == 50
        # A restarted agent reusing sequence numbers for new reads is not a duplicate.
        restarted = [make_batch(s, ts=T0 + 1000 + s) for s in range(5)]
        publisher.publish_batches(restarted)
        await wait_until("5 more written", lambda: collector.metrics.written_messages >= 55)
        assert collector.metrics.seq_resets == 5
    ts, _ = _read(db, "meter-1", "p0")
    assert len(ts) == 55


async def test_events_and_statuses_are_stored(mosquitto: Mosquitto, publisher: Publisher, tmp_path: Path) -> None:
    db = tmp_path / "store.sqlite"
    config = write_config(tmp_path / "c.toml", mosquitto, sqlite_store(db))
    event = telemetry.Event(site=SITE, agent=AGENT, device="ups-1", type="on_battery", ts=T0, severity="major")
    status = telemetry.Status(site=SITE, agent=AGENT, state="online", ts=T0)
    async with running_collector(config) as collector:
        publisher.publish(telemetry.event_topic(SITE, AGENT, "ups-1"), telemetry.encode(event)).wait_for_publish(10)
        publisher.publish(telemetry.agent_status_topic(SITE, AGENT), telemetry.encode(status)).wait_for_publish(10)
        await wait_until("2 written", lambda: collector.metrics.written_messages >= 2)
    import sqlite3  # noqa: PLC0415

    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT type, severity, device FROM events").fetchall() == [
            ("on_battery", "major", "ups-1")
        ]
        assert conn.execute("SELECT agent, state FROM agent_status").fetchall() == [(AGENT, "online")]


async def test_a_full_queue_stops_acknowledging_and_loses_nothing(
    mosquitto: Mosquitto, publisher: Publisher, tmp_path: Path
) -> None:
    db = tmp_path / "store.sqlite"
    # A tiny queue and tiny writes: the broker must hold back most of the 300 messages.
    config = write_config(
        tmp_path / "c.toml", mosquitto, sqlite_store(db), ingest="queue_max_messages = 4\nmax_write_values = 10"
    )
    async with running_collector(config) as collector:
        publisher.publish_batches([make_batch(s, points=10) for s in range(300)])
        await wait_until("300 written", lambda: collector.metrics.written_messages >= 300)
        assert collector.metrics.writes >= 75
        # The queue filled up and held the MQTT side back (the broker may send beyond the receive
        # maximum, as Mosquitto 2.0 does): nothing was dropped, nothing acknowledged early.
        assert collector.metrics.queue_full > 0
        assert collector.metrics.received_messages == 300
    ts, values = _read(db, "meter-1", "p0")
    assert ts == [ts_ns(T0 + s) for s in range(300)]
    assert values == [s * 1000.0 for s in range(300)]


def test_example_configuration_passes_check_config(capsys: pytest.CaptureFixture[str]) -> None:
    example = ROOT / "configs" / "collector.example.toml"
    assert cli.main(["check-config", "--config", str(example)]) == 0
    assert "ok" in capsys.readouterr().out


def test_run_with_a_bad_configuration_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[collector]\nid = "c"\nsite = "s"\n[ingest]\nqueue_max_messages = 0\n')
    proc = subprocess.run(
        [sys.executable, "-m", "collector.cli", "run", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "ingest.queue_max_messages" in proc.stderr
    assert str(bad) in proc.stderr


def test_sd_notify_ready_status_watchdog_and_stopping(mosquitto: Mosquitto, tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", mosquitto, sqlite_store(tmp_path / "store.sqlite"))
    proc = CollectorProcess(config, tmp_path, env={"WATCHDOG_USEC": "400000", "WATCHDOG_PID": ""})
    try:
        proc.start()  # waits for READY=1 and STATUS=subscribed
        assert proc.notify is not None
        proc.notify.wait_for("WATCHDOG=1")
        proc.notify.wait_for("STATUS=")
        notify = proc.notify
        assert proc.proc is not None
        os.kill(proc.proc.pid, signal.SIGTERM)
        notify.wait_for("STOPPING=1")
        assert proc.stop() == 0
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.kill()


async def test_the_v2_api_store_through_the_service(
    mosquitto: Mosquitto, publisher: Publisher, victoria_metrics: VictoriaMetrics, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("a-token\n")
    store = (
        f'kind = "influxdb"\napi = "v2"\nurl = "{victoria_metrics.url}"\norg = "dcim"\nbucket = "dcim"\n'
        f'token_file = "{token}"'
    )
    config = write_config(tmp_path / "c.toml", mosquitto, store)
    async with running_collector(config) as collector:
        publisher.publish_batches([make_batch(s) for s in range(30)])
        await wait_until("30 written", lambda: collector.metrics.written_messages >= 30)
    rows = victoria_metrics.export('{__name__="meter_p3"}')
    assert len(rows) == 1
    assert rows[0]["values"] == [s * 1000.0 + 3 for s in range(30)]
    assert rows[0]["metric"]["site"] == SITE
