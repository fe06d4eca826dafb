"""Scheduled analytics jobs: results written back to the store and published on a real broker."""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from collector import config as collector_config
from collector import jobs
from collector.config import MqttSection
from collector.mqtt import Subscriber
from collector.store import Store
from collector.store.influx_v1 import InfluxV1Store
from collector.store.sqlite import SqliteStore
from models import telemetry
from tests.collector import analytics_seed as seed
from tests.collector.conftest import Subscription
from tests.collector.test_settle_store import SETTLE_TOML, seed_year
from tests.support import servers

S = 10**9
DAY3 = (seed.PUE_T0 + 2 * seed.DAY_S) * S
JOBS_TOML = "[jobs]\nrecompute_hours = 48\n"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "store.sqlite")
    s.open()
    try:
        yield s
    finally:
        s.close()


def load(path: Path) -> collector_config.CollectorConfig:
    return collector_config.load(path).config


def sqlite_config(tmp_path: Path, *sections: str) -> Path:
    return seed.write_config(
        tmp_path / "collector.toml", f'kind = "sqlite"\npath = "{tmp_path / "store.sqlite"}"', *sections
    )


def derived(store: Store, name: str, field: str, tags: dict[str, str]) -> tuple[list[int], list[float]]:
    ts, values = store.read_series(name, None, field, 0, 2**62, tags={"site": seed.SITE, **tags})
    return ts.tolist(), values.tolist()


@pytest.fixture
def broker_publish(mosquitto: servers.Mosquitto) -> Iterator[jobs.Publish]:
    """The collector's own MQTT client, connected to a real broker, as the jobs' publisher."""
    connected = threading.Event()
    subscriber = Subscriber(
        MqttSection(url=mosquitto.url, protocol="3.1.1"),
        client_id="jobs-test",
        site="elsewhere",
        receive_maximum=10,
        on_message=lambda *_: True,
        on_subscribed=connected.set,
    )
    subscriber.start()
    assert connected.wait(timeout=30)
    try:
        yield subscriber.publish
    finally:
        subscriber.stop()


def next_json(sub: Subscription) -> tuple[str, dict[str, Any]]:
    topic, payload = sub.get(timeout_s=15)
    return topic, json.loads(payload)


# ---------------------------------------------------------------- energy and PUE


def check_energy_job(store: Store, results: dict[str, Any]) -> None:
    day_ts, day_pue = derived(store, "pue", "pue", {"period": "day"})
    assert day_ts == [seed.PUE_T0 * S, (seed.PUE_T0 + seed.DAY_S) * S]
    assert day_pue == pytest.approx([1.15, 2759 / 2400], abs=1e-9)
    hour_ts, hour_facility = derived(store, "pue", "facility_kwh", {"period": "hour"})
    assert len(hour_ts) == 48
    assert sum(hour_facility[:24]) == pytest.approx(2760.0, abs=1e-6)
    assert hour_facility[24 + 11] == pytest.approx(115.0 - 1.0, abs=1e-6)  # 11:59-12:00, across the reset
    # Energy per meter and hour, as the report reads it back; feed-b wraps on day 1.
    _, feed_b = derived(store, "meter_energy", "energy_kwh", {"meter": "feed-b:import_energy", "period": "hour"})
    assert sum(feed_b[:24]) == pytest.approx(1320.0, abs=1e-6)
    _, feed_b_days = derived(store, "meter_energy", "energy_kwh", {"meter": "feed-b:import_energy", "period": "day"})
    assert feed_b_days == pytest.approx([1320.0, 1320.0], abs=1e-6)
    # Month to date: the ratio of the two days' sums. Year to date misses January and February.
    _, month = derived(store, "pue", "pue", {"period": "month"})
    assert month == pytest.approx([5519 / 4800], abs=1e-9)
    _, year_complete = derived(store, "pue", "complete", {"period": "year"})
    _, year_pue = derived(store, "pue", "pue", {"period": "year"})
    assert year_complete == [0.0]
    assert year_pue == []  # not reportable: not stored
    assert set(results) == {"hour", "day", "year_to_date", "month_to_date"}


def test_energy_job_writes_hours_days_and_periods_to_date(
    tmp_path: Path, store: SqliteStore, mosquitto: servers.Mosquitto, broker_publish: jobs.Publish
) -> None:
    seed.seed_pue(store)
    cfg = sqlite_config(tmp_path, seed.PUE_TOML, JOBS_TOML)
    sub = Subscription(mosquitto, "dcim/v1/bj-dx/analytics/#")
    try:
        results = jobs.AnalyticsJobs(load(cfg), store, broker_publish).energy_job(DAY3 + 5 * 60 * S)
        topic, doc = next_json(sub)
    finally:
        sub.close()
    check_energy_job(store, results)
    assert topic == "dcim/v1/bj-dx/analytics/pue"
    assert doc["day"]["period"] == "day"
    assert doc["day"]["pue"] == pytest.approx(2759 / 2400, abs=1e-6)
    assert doc["month_to_date"]["pue"] == pytest.approx(5519 / 4800, abs=1e-6)
    assert doc["year_to_date"]["complete"] is False

    # The report reads the stored energies and gives what it computes from the readings.
    args = ["report", "pue", "--config", str(cfg), "--from", "2025-03-01", "--to", "2025-03-02", "--json"]
    stored = json.loads(seed.dcim_collector(*args).stdout)
    raw = json.loads(seed.dcim_collector(*args, "--source", "raw").stdout)
    assert stored["daily"] == raw["daily"]
    assert stored["total"]["pue"] == pytest.approx(5519 / 4800, abs=1e-6)


@pytest.mark.servers
def test_energy_job_with_influxdb(tmp_path: Path, influxdb: servers.InfluxDB) -> None:
    influx = InfluxV1Store(influxdb.url, "dcim", timeout_s=10.0)
    influx.open()
    try:
        seed.seed_pue(influx)
        cfg = seed.write_config(
            tmp_path / "collector.toml",
            f'kind = "influxdb"\nurl = "{influxdb.url}"\ndatabase = "dcim"',
            seed.PUE_TOML,
            JOBS_TOML,
        )
        results = jobs.AnalyticsJobs(load(cfg), influx).energy_job(DAY3 + 5 * 60 * S)
        check_energy_job(influx, results)
    finally:
        influx.close()


def test_live_ratio_is_labelled_live(tmp_path: Path, store: SqliteStore) -> None:
    now_s = seed.PUE_T0 + 3600
    seed.write(store, seed.batches("feed-a", "meter", "meter-sdm630", [now_s - 30], {"total_power": ("kW", [115.0])}))
    seed.write(store, seed.batches("it-2", "meter", "meter-sdm630", [now_s - 30], {"total_power": ("kW", [100.0])}))
    cfg = sqlite_config(
        tmp_path,
        '[pue]\n[[pue.meters]]\ndevice = "feed-a"\nrole = "facility"\nlive_point = "total_power"\n'
        '[[pue.meters]]\ndevice = "it-2"\nrole = "it_input"\nlive_point = "total_power"\n',
    )
    job = jobs.AnalyticsJobs(load(cfg), store)
    assert job.live_job(now_s * S) == pytest.approx(1.15)
    assert derived(store, "pue_live", "ratio", {})[1] == pytest.approx([1.15])
    # Readings older than two live intervals are not live any more.
    assert job.live_job((now_s + 3600) * S) is None


# ---------------------------------------------------------------- availability


def test_availability_job_judges_the_month_so_far(
    tmp_path: Path, store: SqliteStore, mosquitto: servers.Mosquitto, broker_publish: jobs.Publish
) -> None:
    seed.seed_status(
        store,
        [
            seed.Episode("ups-a1", "none", 86_400, 200),
            seed.Episode("ups-a2", "none", 86_400, 200),
            seed.Episode("pdu-r1", 1.0, 5 * 86_400, 80),
        ],
    )
    cfg = sqlite_config(tmp_path, seed.AVAILABILITY_TOML)
    now = (seed.APRIL + 15 * 86_400) * S
    sub = Subscription(mosquitto, "dcim/v1/bj-dx/analytics/availability")
    try:
        summary = jobs.AnalyticsJobs(load(cfg), store, broker_publish).availability_job(now)
        _, doc = next_json(sub)
    finally:
        sub.close()
    assert summary is not None
    assert summary.down_s == pytest.approx(260.0)
    assert summary.met is None  # half a month to go: not decided yet, but not missed
    assert summary.unknown_s == pytest.approx(0.0, abs=1e-6)  # the rest of the month is not "no data"
    assert doc["in_progress"] is True
    assert doc["remaining_budget_s"] == pytest.approx(30.44 * 86_400 * 1e-4 - 260, abs=1e-3)
    ts, down = derived(store, "availability", "down_s", {"period": "month"})
    assert ts == [seed.APRIL * S]
    assert down == pytest.approx([260.0])
    assert derived(store, "availability", "met", {"period": "month"})[1] == []  # undecided is not stored as met


def test_fast_burn_pages_within_its_short_window_and_a_blip_does_not(
    tmp_path: Path, store: SqliteStore, mosquitto: servers.Mosquitto, broker_publish: jobs.Publish
) -> None:
    fast, blip = 10 * 86_400, 20 * 86_400
    seed.seed_status(
        store,
        [
            seed.Episode("ups-a1", "none", fast, 600),
            seed.Episode("ups-a2", "none", fast, 600),
            seed.Episode("ups-a1", "none", blip, 3),
            seed.Episode("ups-a2", "none", blip, 3),
        ],
    )
    cfg = load(sqlite_config(tmp_path, seed.AVAILABILITY_TOML))
    topic = telemetry.event_topic(seed.SITE, "collector-1", jobs.BURN_EVENT_DEVICE)
    sub = Subscription(mosquitto, topic)
    try:
        job = jobs.AnalyticsJobs(cfg, store, broker_publish)
        assert job.burn_rate_job((seed.APRIL + fast - 60) * S) == []  # all quiet before
        fired = job.burn_rate_job((seed.APRIL + fast + 60) * S)  # one minute into the outage
        received = [telemetry.decode_as(telemetry.Event, sub.get()[1]) for _ in fired]
        assert job.burn_rate_job((seed.APRIL + fast + 120) * S) == []  # still firing: no new event
        resolved = job.burn_rate_job((seed.APRIL + fast + 600 + 301) * S)  # the 5-min window is clean again
        received_resolved = [telemetry.decode_as(telemetry.Event, sub.get()[1]) for _ in resolved]

        quiet = jobs.AnalyticsJobs(cfg, store, broker_publish)
        after_blip = [quiet.burn_rate_job((seed.APRIL + blip + d) * S) for d in (1, 3, 10, 60, 299, 1800, 21_600)]
    finally:
        sub.close()
    page = [e for e in received if e.data["window"] == "3600s/300s"]
    assert len(page) == 1
    assert page[0].type == jobs.BURN_EVENT_TYPE
    assert page[0].severity == "critical"
    assert page[0].data["state"] == "firing"
    assert page[0].data["short_burn"] == pytest.approx(60 / 300 / 1e-4)
    assert page[0].ts == seed.APRIL + fast + 60
    assert {e.data["window"]: e.data["state"] for e in received_resolved}["3600s/300s"] == "resolved"
    assert after_blip == [[] for _ in after_blip]
    _, firing = derived(store, "burn_rate", "firing", {"severity": "page", "window": "3600s/300s"})
    assert firing[:3] == [0.0, 1.0, 1.0]


# ---------------------------------------------------------------- settlement


def test_settlement_job_stores_the_year_to_date_and_its_projection(tmp_path: Path) -> None:
    seed_year(tmp_path / "store.sqlite", 1.15)
    cfg = seed.write_config(
        tmp_path / "collector.toml",
        f'kind = "sqlite"\npath = "{tmp_path / "store.sqlite"}"',
        SETTLE_TOML.format(tariff="tariff = 0.60"),
        timezone="Asia/Shanghai",
    )
    st = SqliteStore(tmp_path / "store.sqlite")
    st.open()
    try:
        now = int(datetime(2022, 3, 1, 17, 0, tzinfo=UTC).timestamp()) * S  # 2022-03-02 01:00 in Beijing
        result = jobs.AnalyticsJobs(load(cfg), st).settlement_job(now)
        assert result is not None
        assert result.in_progress
        _, to_date = derived(st, "settlement", "bonus", {"year": "2022", "basis": "to_date"})
        _, projected = derived(st, "settlement", "bonus", {"year": "2022", "basis": "projected"})
    finally:
        st.close()
    assert to_date == pytest.approx([900_000 * 60 / 365], abs=0.01)
    assert projected == pytest.approx([900_000.0])


# ---------------------------------------------------------------- the scheduler


async def test_scheduler_runs_the_configured_jobs(tmp_path: Path, store: SqliteStore) -> None:
    cfg = load(sqlite_config(tmp_path, seed.PUE_TOML, seed.AVAILABILITY_TOML, "[contract]\ntariff = 0.6\n"))
    scheduler = jobs.start(cfg, store)
    try:
        assert scheduler is not None
        assert sorted(j.args[0] for j in scheduler.get_jobs()) == ["availability", "burn-rate", "energy", "settlement"]
        done: queue.Queue[str] = queue.Queue()
        # Run one job now through the scheduler's executor and wait for it.
        job = scheduler.get_job(next(j.id for j in scheduler.get_jobs() if j.args[0] == "availability"))
        original = job.args[1]
        scheduler.modify_job(job.id, args=["availability", lambda now: done.put(str(original(now) is not None))])
        scheduler.modify_job(job.id, next_run_time=datetime.now(tz=UTC))
        assert await asyncio.to_thread(done.get, timeout=30) == "True"
    finally:
        jobs.stop(scheduler)
    disabled = load(sqlite_config(tmp_path, seed.PUE_TOML, "[jobs]\nenabled = false\n"))
    assert jobs.start(disabled, store) is None
