"""One store test suite, run against SQLite and InfluxDB (1.x API), and the v2 write path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from collector.config import CollectorConfig
from collector.store import (
    SeriesKey,
    Store,
    StoreRejected,
    StoreTypeError,
    StoreUnavailable,
    create_store,
    ts_ns,
)
from collector.store.influx_v1 import InfluxV1Store, batch_lines, parse_series_key
from collector.store.influx_v2 import InfluxV2Store
from collector.store.sqlite import SqliteStore
from models import telemetry
from tests.collector.conftest import T0, VictoriaMetrics, make_batch
from tests.support import servers
from tests.support.servers import InfluxDB

NS = 1_000_000_000
TOKEN = "a-token-this-sink-ignores"


@pytest.fixture(params=["sqlite", pytest.param("influxdb-v1", marks=pytest.mark.servers)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Each readable backend, opened on a fresh database."""
    s: Store
    if request.param == "sqlite":
        s = SqliteStore(tmp_path / "store.sqlite")
    else:
        influx: InfluxDB = request.getfixturevalue("influxdb")
        s = InfluxV1Store(influx.url, "dcim", timeout_s=5.0)
    s.open()
    try:
        yield s
    finally:
        s.close()


def _pdu_batch(seq: int) -> telemetry.Batch:
    return telemetry.Batch(
        site="bj-dx",
        agent="edge-01",
        device="pdu-a1",
        model="pdu-apc-rpdu2",
        kind="pdu",
        seq=seq,
        ts=T0 + seq,
        points={
            "power": telemetry.Point(1.5 + seq, "kW"),
            "energy": telemetry.Point(100 + seq, "kWh", counter=True),  # an int on the wire
            "breaker_ok": telemetry.Point(seq % 2 == 0, ""),
            "state": telemetry.Point("normal" if seq != 2 else "overload", ""),
            "voltage": telemetry.Point(None, "V", "timeout") if seq == 1 else telemetry.Point(230.0, "V"),
        },
        tables={
            "outlets": {
                "1": {"power": telemetry.Point(0.1 * seq, "kW")},
                "2": {"power": telemetry.Point(None, "kW", "no_such_instance")},
            },
        },
    )


def test_round_trip_of_values_failures_and_table_rows(store: Store) -> None:
    store.write_batches([_pdu_batch(s) for s in range(4)])
    start, end = ts_ns(T0), ts_ns(T0 + 4)

    ts, power = store.read_series("pdu", "pdu-a1", "power", start, end)
    assert ts.dtype == np.int64
    assert power.dtype == np.float64
    assert ts.tolist() == [ts_ns(T0 + s) for s in range(4)]
    assert power.tolist() == [1.5, 2.5, 3.5, 4.5]  # device level only, not the outlets' power

    _, energy = store.read_series("pdu", "pdu-a1", "energy", start, end)
    assert energy.tolist() == [100.0, 101.0, 102.0, 103.0]

    _, voltage = store.read_series("pdu", "pdu-a1", "voltage", start, end)
    assert voltage[0] == 230.0
    assert np.isnan(voltage[1])  # the failed read is recorded, as NaN
    assert voltage[2:].tolist() == [230.0, 230.0]

    _, ok = store.read_series("pdu", "pdu-a1", "breaker_ok", start, end)
    assert ok.tolist() == [1.0, 0.0, 1.0, 0.0]

    ts_text, state = store.read_text("pdu", "pdu-a1", "state", start, end)
    assert state == ["normal", "normal", "overload", "normal"]
    assert ts_text.tolist() == ts.tolist()

    _, outlet1 = store.read_series("pdu", "pdu-a1", "power", start, end, table="outlets", index="1")
    assert outlet1.tolist() == pytest.approx([0.0, 0.1, 0.2, 0.3])
    ts2, outlet2 = store.read_series("pdu", "pdu-a1", "power", start, end, table="outlets", index="2")
    assert len(ts2) == 4
    assert np.isnan(outlet2).all()


def test_text_and_numbers_are_not_confused(store: Store) -> None:
    store.write_batches([_pdu_batch(0)])
    with pytest.raises(StoreTypeError):
        store.read_series("pdu", "pdu-a1", "state", 0, ts_ns(T0 + 10))
    with pytest.raises(StoreTypeError):
        store.read_text("pdu", "pdu-a1", "power", 0, ts_ns(T0 + 10))


def test_writing_twice_stores_once(store: Store) -> None:
    batches = [make_batch(s) for s in range(5)]
    store.write_batches(batches)
    store.write_batches(batches[2:])  # a replay
    store.write_batches([batches[4], batches[4]])
    ts, values = store.read_series("meter", "meter-1", "p3", 0, ts_ns(T0 + 100))
    assert ts.tolist() == [ts_ns(T0 + s) for s in range(5)]
    assert values.tolist() == [s * 1000 + 3.0 for s in range(5)]


def test_time_range_is_half_open(store: Store) -> None:
    store.write_batches([make_batch(s) for s in range(10)])
    ts, _ = store.read_series("meter", "meter-1", "p0", ts_ns(T0 + 2), ts_ns(T0 + 5))
    assert ts.tolist() == [ts_ns(T0 + 2), ts_ns(T0 + 3), ts_ns(T0 + 4)]
    ts, values = store.read_series("meter", "meter-1", "p0", ts_ns(T0 + 50), ts_ns(T0 + 60))
    assert len(ts) == 0
    assert len(values) == 0
    ts, _ = store.read_series("meter", "no-such-device", "p0", 0, ts_ns(T0 + 60))
    assert len(ts) == 0
    ts, _ = store.read_series("meter", "meter-1", "no_such_point", 0, ts_ns(T0 + 60))
    assert len(ts) == 0


def test_devices_are_kept_apart(store: Store) -> None:
    store.write_batches([make_batch(s, device=d) for s in range(3) for d in ("m1", "m2")])
    store.write_batches([make_batch(0, device="ups-1", kind="ups", model="ups-rfc1628")])
    for device in ("m1", "m2"):
        ts, _ = store.read_series("meter", device, "p1", 0, ts_ns(T0 + 100))
        assert len(ts) == 3
    ts, _ = store.read_series("ups", "m1", "p1", 0, ts_ns(T0 + 100))
    assert len(ts) == 0


def test_list_series(store: Store) -> None:
    store.write_batches([_pdu_batch(0), make_batch(0, device="m1"), make_batch(0, device="m2")])
    all_series = store.list_series()
    assert [k.measurement for k in all_series] == ["meter", "meter", "pdu", "pdu", "pdu"]
    pdu = store.list_series("pdu")
    tables = sorted((k.device, k.table or "", k.index or "") for k in pdu)
    assert tables == [("pdu-a1", "", ""), ("pdu-a1", "outlets", "1"), ("pdu-a1", "outlets", "2")]
    device_row = next(k for k in pdu if k.table is None)
    assert dict(device_row.tags) == {"agent": "edge-01", "device": "pdu-a1", "model": "pdu-apc-rpdu2", "site": "bj-dx"}
    assert [k.device for k in store.list_series(device="m2")] == ["m2"]
    assert store.list_series("chiller") == []


def test_derived_results(store: Store) -> None:
    ts = np.array([ts_ns(T0 + h * 3600) for h in range(4)], dtype=np.int64)
    pue = np.array([1.21, np.nan, 1.25, 1.30])
    it_kwh = np.array([100.0, 110.0, 120.0, 130.0])
    store.write_derived("pue", {"site": "bj-dx", "period": "hour"}, ts, {"pue": pue, "it_kwh": it_kwh})
    store.write_derived("pue", {"site": "other", "period": "hour"}, ts, {"pue": pue + 1})
    got_ts, got = store.read_series("pue", None, "pue", 0, ts_ns(T0 + 10 * 3600), tags={"site": "bj-dx"})
    assert got_ts.tolist() == [ts[0], ts[2], ts[3]]  # NaN is not stored
    assert got.tolist() == [1.21, 1.25, 1.30]
    _, it = store.read_series("pue", None, "it_kwh", 0, ts_ns(T0 + 10 * 3600), tags={"site": "bj-dx"})
    assert it.tolist() == it_kwh.tolist()
    assert {dict(k.tags)["site"] for k in store.list_series("pue")} == {"bj-dx", "other"}
    with pytest.raises(StoreRejected):
        store.write_derived("pue", {}, ts, {"pue": pue[:2]})


def test_events_and_statuses_are_accepted(store: Store) -> None:
    event = telemetry.Event(
        site="bj-dx", agent="edge-01", device="ups-a1", type="on_battery", ts=T0, severity="major", data={"x": 1}
    )
    status = telemetry.Status(site="bj-dx", agent="edge-01", state="online", ts=T0)
    store.write_batches([event, status, make_batch(0)])
    ts, _ = store.read_series("meter", "meter-1", "p0", 0, ts_ns(T0 + 1))
    assert len(ts) == 1


def test_many_values_in_one_write(store: Store) -> None:
    batches = [make_batch(s, device=f"m{s % 20}", points=50) for s in range(2000)]  # 100,000 values
    store.write_batches(batches)
    total = 0
    for d in range(20):
        ts, values = store.read_series("meter", f"m{d}", "p49", 0, ts_ns(T0 + 10_000))
        total += len(ts)
        assert not np.isnan(values).any()
    assert total == 2000


@pytest.mark.servers
def test_influx_keeps_units_and_quality_fields(influxdb: InfluxDB) -> None:
    s = InfluxV1Store(influxdb.url, "dcim")
    s.open()
    s.write_batches([_pdu_batch(1)])
    answer = json.loads(influxdb.query('SELECT "unit" FROM "units" WHERE "field" = \'voltage\'', db="dcim"))
    assert answer["results"][0]["series"][0]["values"][0][1] == "V"
    answer = json.loads(influxdb.query('SELECT "voltage__q" FROM "pdu"', db="dcim"))
    assert answer["results"][0]["series"][0]["values"][0][1] == "timeout"
    s.close()


@pytest.mark.servers
def test_influx_type_conflict_is_a_rejection(influxdb: InfluxDB) -> None:
    s = InfluxV1Store(influxdb.url, "dcim")
    s.open()
    s.write_batches([make_batch(0)])
    bad = telemetry.Batch(
        site="bj-dx",
        agent="edge-01",
        device="meter-1",
        model="meter-sdm630",
        kind="meter",
        seq=1,
        ts=T0 + 1,
        points={"p0": telemetry.Point("text now", "")},
    )
    with pytest.raises(StoreRejected, match="conflict"):
        s.write_batches([bad])
    s.close()


def test_unreachable_influx_is_unavailable() -> None:
    s = InfluxV1Store(f"http://127.0.0.1:{servers.free_port()}", "dcim", timeout_s=2.0)
    with pytest.raises(StoreUnavailable):
        s.open()
    with pytest.raises(StoreUnavailable):
        s.write_batches([make_batch(0)])
    s.close()


def test_unwritable_sqlite_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    s = SqliteStore(blocker / "store.sqlite")
    with pytest.raises(StoreUnavailable):
        s.open()
    with pytest.raises(StoreUnavailable):
        s.write_batches([make_batch(0)])


def test_sqlite_records_units(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "s.sqlite")
    s.write_batches([_pdu_batch(0)])
    assert s.unit("pdu", "pdu-a1", "power") == "kW"
    assert s.unit("pdu", "pdu-a1", "voltage") == "V"
    assert s.count_samples() == 7
    s.close()


def test_line_protocol_escapes_and_types() -> None:
    batch = telemetry.Batch(
        site="s",
        agent="a",
        device="d",
        model="model with space,comma",
        kind="pdu",
        seq=0,
        ts=1_700_000_000.5,
        points={
            "i": telemetry.Point(3, ""),
            "b": telemetry.Point(True, ""),
            "t": telemetry.Point('say "hi" \\ bye', ""),
            "x": telemetry.Point(None, "V", "comm_error"),
        },
        tables={"outlets": {"o 1": {"p": telemetry.Point(1.5, "kW")}}},
    )
    lines: list[str] = []
    batch_lines(batch, lines)
    assert lines[0] == (
        r"pdu,agent=a,device=d,model=model\ with\ space\,comma,site=s "
        r'i=3.0,b=true,t="say \"hi\" \\ bye",x__q="comm_error" 1700000000500000000'
    )
    assert lines[1].startswith(r"pdu,agent=a,device=d,model=model\ with\ space\,comma,site=s,index=o\ 1,table=outlets ")
    assert parse_series_key(r"pdu,agent=a,index=o\ 1,model=m\,x,table=t") == SeriesKey(
        "pdu", (("agent", "a"), ("index", "o 1"), ("model", "m,x"), ("table", "t"))
    )


def test_timestamps_are_exact_to_the_microsecond() -> None:
    assert ts_ns(1_764_450_000.123456) == 1_764_450_000_123_456_000
    assert ts_ns(T0) == int(T0) * NS


def test_create_store_follows_the_config(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("secret-token\n")
    cfg = CollectorConfig.model_validate(
        {
            "collector": {"id": "c", "site": "s"},
            "store": {"kind": "influxdb", "api": "v2", "org": "o", "bucket": "b", "token_file": str(token)},
        }
    )
    s = create_store(cfg.store)
    assert isinstance(s, InfluxV2Store)
    assert s.http.headers["Authorization"] == "Token secret-token"
    s.close()
    cfg = CollectorConfig.model_validate(
        {"collector": {"id": "c", "site": "s"}, "store": {"path": str(tmp_path / "x")}}
    )
    assert isinstance(create_store(cfg.store), SqliteStore)


# ---------------------------------------------------------------- the v2 write path


@pytest.mark.servers
def test_v2_write_path_reaches_a_v2_endpoint(victoria_metrics: VictoriaMetrics) -> None:
    s = InfluxV2Store(victoria_metrics.url, org="dcim", bucket="dcim", token=TOKEN)
    s.open()
    batches = [_pdu_batch(seq) for seq in range(4)] + [make_batch(seq, points=20) for seq in range(100)]
    # Two writes; VictoriaMetrics keeps duplicate samples (InfluxDB would overwrite), so no replay here.
    s.write_batches(batches[:50])
    s.write_batches(batches[50:])
    series = {
        (row["metric"]["__name__"], row["metric"].get("table", "")): row
        for row in victoria_metrics.export('{__name__=~"(pdu|meter)_.*"}')
    }
    power = series[("pdu_power", "")]
    assert power["values"] == [1.5, 2.5, 3.5, 4.5]
    assert power["timestamps"] == [int((T0 + s) * 1000) for s in range(4)]
    assert power["metric"]["device"] == "pdu-a1"
    assert power["metric"]["model"] == "pdu-apc-rpdu2"
    assert series[("pdu_breaker_ok", "")]["values"] == [1, 0, 1, 0]
    assert series[("pdu_power", "outlets")]["values"] == pytest.approx([0, 0.1, 0.2, 0.3])
    p19 = series[("meter_p19", "")]
    assert p19["values"] == [float(s * 1000 + 19) for s in range(100)]
    s.close()


def test_v2_write_to_a_dead_endpoint_is_unavailable() -> None:
    s = InfluxV2Store(f"http://127.0.0.1:{servers.free_port()}", org="o", bucket="b", token=TOKEN, timeout_s=2.0)
    with pytest.raises(StoreUnavailable):
        s.write_batches([make_batch(0)])
    with pytest.raises(StoreUnavailable):
        s.open()
    s.close()


@pytest.mark.servers
def test_v2_write_to_influx_1x_is_unavailable_not_rejected(influxdb: InfluxDB) -> None:
    # InfluxDB 1.6 has no /api/v2/write: a configuration problem, never a reason to drop data.
    s = InfluxV2Store(influxdb.url, org="o", bucket="dcim", token=TOKEN)
    with pytest.raises(StoreUnavailable):
        s.write_batches([make_batch(0)])
    s.close()
