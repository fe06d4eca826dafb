"""The collector with real Mosquitto and InfluxDB 1.x: outages, kills, shared load; nothing lost or doubled."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.store import ts_ns
from models import telemetry
from tests.collector.conftest import (
    CollectorProcess,
    Publisher,
    influx_rows,
    influx_store,
    make_batch,
    persistent_conf,
    poll_until,
    running_collector,
    wait_until,
    write_config,
)
from tests.support import servers
from tests.support.servers import InfluxDB, Mosquitto

pytestmark = [pytest.mark.servers, pytest.mark.chaos, pytest.mark.timeout(240)]

DEVICES = 10
POINTS = 20
LAST = f"p{POINTS - 1}"


@pytest.fixture
def broker(mosquitto_bin: str, tmp_path: Path) -> Iterator[Mosquitto]:
    b = servers.start_mosquitto(mosquitto_bin, tmp_path / "broker", extra_conf=persistent_conf())
    try:
        yield b
    finally:
        b.stop()


def _counts(influx: InfluxDB) -> dict[str, int]:
    """Stored values of p0 per device."""
    return {r["device"]: r["count"] for r in influx_rows(influx, 'SELECT count("p0") FROM "meter" GROUP BY "device"')}


def _total(influx: InfluxDB) -> int:
    try:
        return sum(_counts(influx).values())
    except OSError:
        return -1


def _check_every_value(influx: InfluxDB, published: list[telemetry.Batch]) -> None:
    """Each published value is stored exactly once, at its read time, with its value."""
    expected = sorted((b.device, ts_ns(b.ts), float(b.seq * 1000 + POINTS - 1)) for b in published)
    rows = influx_rows(influx, f'SELECT "{LAST}" FROM "meter" GROUP BY "device"')  # noqa: S608
    assert sorted((r["device"], r["time"], r[LAST]) for r in rows) == expected


class Load:
    """Publishes batches for DEVICES devices continuously from a thread until stopped."""

    def __init__(self, broker: Mosquitto, start_seq: int = 0) -> None:
        self.publisher = Publisher(broker, "load-publisher")
        self.published: list[telemetry.Batch] = []
        self.stop_event = threading.Event()
        self.seq = start_seq
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        while not self.stop_event.is_set():
            batches = [make_batch(self.seq, device=f"m{d}", points=POINTS) for d in range(DEVICES)]
            self.publisher.publish_batches(batches)  # waits for the broker's PUBACKs: a steady pace
            self.published.extend(batches)
            self.seq += 1

    def stop(self) -> list[telemetry.Batch]:
        self.stop_event.set()
        self.thread.join(timeout=60)
        self.publisher.close()
        return self.published


@pytest.mark.parametrize("outage_s", [3.0])
async def test_influx_outage_under_load_loses_and_doubles_nothing(
    broker: Mosquitto, influxdb: InfluxDB, tmp_path: Path, outage_s: float
) -> None:
    config = write_config(tmp_path / "c.toml", broker, influx_store(influxdb, timeout_s=2.0))
    async with running_collector(config) as collector:
        load = Load(broker)
        load.start()
        await wait_until("data flowing", lambda: collector.metrics.written_messages >= 50)
        await asyncio.to_thread(influxdb.stop)
        await wait_until("the collector to notice", lambda: collector.metrics.write_errors >= 1)
        await asyncio.sleep(outage_s)  # the outage itself, while the load keeps publishing
        during = len(load.published)
        await asyncio.to_thread(influxdb.start)
        await wait_until("more load after the restart", lambda: len(load.published) >= during + 5 * DEVICES)
        published = await asyncio.to_thread(load.stop)
        await wait_until(
            "everything written", lambda: collector.metrics.written_messages >= len(published), timeout_s=120
        )
        assert collector.metrics.store_up
        assert collector.metrics.written_messages == len(published)
    assert collector.metrics.rejected == 0
    counts = _counts(influxdb)
    assert counts == {f"m{d}": len(published) // DEVICES for d in range(DEVICES)}
    _check_every_value(influxdb, published)


async def test_two_collectors_split_the_load(broker: Mosquitto, influxdb: InfluxDB, tmp_path: Path) -> None:
    configs = [
        write_config(
            tmp_path / f"c{i}.toml",
            broker,
            influx_store(influxdb),
            collector_id=f"collector-{i}",
            mqtt_extra='shared_group = "collectors"',
        )
        for i in (1, 2)
    ]
    published = [make_batch(s, device=f"m{s % DEVICES}", points=POINTS) for s in range(1000)]
    async with running_collector(configs[0]) as one, running_collector(configs[1]) as two:
        publisher = Publisher(broker, "shared-publisher")
        await asyncio.to_thread(publisher.publish_batches, published)
        publisher.close()
        await wait_until(
            "all written", lambda: one.metrics.written_messages + two.metrics.written_messages >= len(published)
        )
        assert one.metrics.written_messages > 0
        assert two.metrics.written_messages > 0
        assert one.metrics.written_messages + two.metrics.written_messages == len(published)
        assert one.metrics.duplicates + two.metrics.duplicates == 0
    assert sum(_counts(influxdb).values()) == len(published)
    _check_every_value(influxdb, published)


def test_collector_killed_and_restarted_loses_nothing(broker: Mosquitto, influxdb: InfluxDB, tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", broker, influx_store(influxdb))
    proc = CollectorProcess(config, tmp_path)
    proc.start()
    try:
        load = Load(broker)
        load.start()
        poll_until("data stored", lambda: _total(influxdb) >= 20 * DEVICES)
        proc.kill()  # mid-stream: some messages were delivered but not acknowledged
        killed_at = len(load.published)
        poll_until("load while the collector is down", lambda: len(load.published) >= killed_at + 20 * DEVICES)
        proc.start()
        restarted_at = len(load.published)
        poll_until("load after the restart", lambda: len(load.published) >= restarted_at + 10 * DEVICES)
        published = load.stop()
        poll_until("everything stored", lambda: _total(influxdb) >= len(published), timeout_s=120)
        assert proc.stop() == 0
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.kill()
    assert _counts(influxdb) == {f"m{d}": len(published) // DEVICES for d in range(DEVICES)}
    _check_every_value(influxdb, published)
    assert "Traceback" not in proc.log()


def test_status_and_metrics_reach_influx(broker: Mosquitto, influxdb: InfluxDB, tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", broker, influx_store(influxdb))
    proc = CollectorProcess(config, tmp_path)
    proc.start()
    publisher = Publisher(broker, "p")
    publisher.publish_batches([make_batch(s) for s in range(10)])
    publisher.close()
    poll_until("stored", lambda: _total(influxdb) >= 10)
    assert proc.stop() == 0
    rows = influx_rows(influxdb, 'SELECT last("written_messages_total") FROM "collector" GROUP BY "collector"')
    assert [(r["collector"], r["last"]) for r in rows] == [("collector-1", 10)]  # final metrics, at a clean stop
