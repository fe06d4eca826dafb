"""dcim-collector report pue | availability over a seeded store: numbers by hand, tables, CSV, charts."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from collector import config as collector_config
from collector.analytics_data import METER_ENERGY, derived_tags
from collector.store import Store
from collector.store.influx_v1 import InfluxV1Store
from collector.store.sqlite import SqliteStore
from tests.collector import analytics_seed as seed
from tests.support import servers

IT_DAY3 = 1200.0 + 50.0 * 719 / 60  # it-2 read power until 11:59, then only failed reads
FACILITY = (2760.0, 2759.0, 2760.0)  # feed-a loses the one minute across its reset on day 2


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Iterator[tuple[Path, Store]]:
    path = tmp_path / "store.sqlite"
    store = SqliteStore(path)
    store.open()
    try:
        yield path, store
    finally:
        store.close()


def sqlite_toml(path: Path) -> str:
    return f'kind = "sqlite"\npath = "{path}"'


def influx_toml(influx: servers.InfluxDB) -> str:
    return f'kind = "influxdb"\nurl = "{influx.url}"\napi = "v1"\ndatabase = "dcim"\ntimeout_s = 10.0'


@pytest.fixture
def pue_config(tmp_path: Path, sqlite_path: tuple[Path, Store]) -> Path:
    path, store = sqlite_path
    seed.seed_pue(store)
    return seed.write_config(tmp_path / "collector.toml", sqlite_toml(path), seed.PUE_TOML)


def report_json(*args: str) -> tuple[int, dict[str, Any]]:
    result = seed.dcim_collector("report", *args, "--json")
    assert result.returncode in {0, 1}, result.stderr
    return result.returncode, json.loads(result.stdout)


# ---------------------------------------------------------------- PUE


def check_pue_days(doc: dict[str, Any]) -> None:
    """The three seeded days against the hand-computed energies."""
    day1, day2, day3 = doc["daily"]
    assert [d["period"] for d in doc["daily"]] == ["2025-03-01", "2025-03-02", "2025-03-03"]
    # Day 1: feed-b wraps its 10,000 kWh register and still counts 55 kW x 24 h.
    assert day1["facility_kwh"] == pytest.approx(FACILITY[0], abs=1e-6)
    assert day1["it_kwh"] == pytest.approx(2400.0, abs=1e-6)
    assert day1["pue"] == pytest.approx(1.15, abs=1e-9)
    assert day1["ppue_cooling"] == pytest.approx((2400 + 300) / 2400)
    assert day1["ppue_power_chain"] == pytest.approx((2400 + 60) / 2400)
    assert day1["dcie_pct"] == pytest.approx(100 / 1.15, abs=1e-4)
    assert day1["cue_kg_per_kwh"] == pytest.approx(0.5366 * 1.15, abs=1e-6)
    assert day1["complete"] is True
    # Day 2: the reset of feed-a costs the one minute across it, and still covers 1439/1440 >= 99 %.
    assert day2["facility_kwh"] == pytest.approx(FACILITY[1], abs=1e-6)
    assert day2["pue"] == pytest.approx(2759 / 2400, abs=1e-6)
    assert day2["coverage"] == pytest.approx(1439 / 1440, abs=1e-6)
    assert day2["complete"] is True
    # Day 3: it-2 fails from noon: incomplete, no PUE, its coverage and the measured ratio stated.
    assert day3["complete"] is False
    assert day3["pue"] is None
    assert day3["cue_kg_per_kwh"] is None
    assert day3["incomplete_meters"] == ["it-2:total_power"]
    assert day3["coverage"] == pytest.approx(719 / 1440, abs=1e-6)
    assert day3["it_kwh"] == pytest.approx(IT_DAY3, abs=1e-3)
    assert day3["pue_measured"] == pytest.approx(2760 / IT_DAY3, abs=1e-6)


def test_pue_report_from_sqlite_matches_hand_computed_days(pue_config: Path) -> None:
    code, doc = report_json("pue", "--config", str(pue_config), "--from", "2025-03-01", "--to", "2025-03-03")
    assert code == 1  # the period includes an incomplete day: no confident total
    assert doc["category"] == 3
    assert doc["emission_factor"] == {"kg_per_kwh": 0.5366, "source": "China national grid 2022"}
    check_pue_days(doc)
    assert doc["total"]["complete"] is False
    assert doc["total"]["pue"] is None
    assert doc["monthly"][0]["period"] == "2025-03-01..2025-03-03"


def test_pue_total_is_the_ratio_of_sums_and_exits_0_when_complete(pue_config: Path) -> None:
    code, doc = report_json("pue", "--config", str(pue_config), "--from", "2025-03-01", "--to", "2025-03-02")
    assert code == 0
    total = doc["total"]
    assert total["facility_kwh"] == pytest.approx(5519.0, abs=1e-6)
    assert total["it_kwh"] == pytest.approx(4800.0, abs=1e-6)
    assert total["pue"] == pytest.approx(5519 / 4800, abs=1e-6)
    mean_of_days = (2760 / 2400 + 2759 / 2400) / 2
    assert total["pue"] == pytest.approx(mean_of_days, abs=1e-6)  # equal IT energy: here the two agree
    assert doc["monthly"][0]["pue"] == total["pue"]


def test_pue_text_and_csv(pue_config: Path) -> None:
    args = ["report", "pue", "--config", str(pue_config), "--from", "2025-03", "--to", "2025-03-03"]
    text = seed.dcim_collector(*args)
    assert text.returncode == 1
    assert "category 3 advanced (IT equipment input)" in text.stdout
    assert "2025-03-01       2,760.0  2,400.0  1.1500" in text.stdout
    assert "INCOMPLETE (measured 1.5340; short: it-2:total_power)" in text.stdout
    assert "ratio of the summed energies" in text.stdout

    result = seed.dcim_collector(*args, "--csv")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["level"] for r in rows] == ["day", "day", "day", "month", "total"]
    assert rows[0]["pue"] == "1.15"
    assert rows[2]["pue"] == ""
    assert rows[2]["complete"] == "False"
    assert rows[2]["incomplete_meters"] == "it-2:total_power"


def png_stats(path: Path) -> tuple[tuple[int, int], int, np.ndarray]:
    with Image.open(path) as img:
        assert img.format == "PNG"
        rgb = np.asarray(img.convert("RGB"))
        return img.size, len(np.unique(rgb.reshape(-1, 3), axis=0)), rgb


def has_colour(rgb: np.ndarray, colour: tuple[int, int, int], tol: int = 12, at_least: int = 200) -> bool:
    close = np.all(np.abs(rgb.astype(int) - np.array(colour)) <= tol, axis=2)
    return int(close.sum()) >= at_least


def test_pue_chart_has_the_size_and_the_contract_lines(pue_config: Path, tmp_path: Path) -> None:
    png = tmp_path / "charts" / "pue.png"
    code, _ = report_json(
        "pue", "--config", str(pue_config), "--from", "2025-03-01", "--to", "2025-03-03", "--plot", str(png)
    )
    assert code == 1
    size, colours, rgb = png_stats(png)
    assert size == (1000, 500)
    assert colours > 50  # not a blank canvas
    assert (rgb < 128).any(axis=2).mean() > 0.01  # text, axes and lines drawn
    assert has_colour(rgb, (44, 160, 44))  # the 1.30 line (tab:green)
    assert has_colour(rgb, (214, 39, 40))  # the 1.40 line (tab:red)
    assert has_colour(rgb, (31, 119, 180), at_least=50)  # the daily PUE (tab:blue)


def test_stored_energy_is_used_only_when_it_covers_the_day(pue_config: Path, sqlite_path: tuple[Path, Store]) -> None:
    _, store = sqlite_path
    meters = collector_config.load(pue_config).config.pue.meters  # type: ignore[union-attr]
    feed_a = next(m for m in meters if m.device == "feed-a")
    day1 = np.array([seed.PUE_T0 * 10**9], dtype=np.int64)
    store.write_derived(
        METER_ENERGY,
        derived_tags(seed.SITE, feed_a, "day"),
        day1,
        {"energy_kwh": np.array([9999.0]), "coverage": np.array([1.0])},
    )
    args = ("pue", "--config", str(pue_config), "--from", "2025-03-01", "--to", "2025-03-01")
    assert report_json(*args)[1]["daily"][0]["facility_kwh"] == pytest.approx(9999 + 1320)
    assert report_json(*args, "--source", "raw")[1]["daily"][0]["facility_kwh"] == pytest.approx(2760)
    # A stored day that was not fully covered (data came late) is recomputed from the readings.
    store.write_derived(
        METER_ENERGY,
        derived_tags(seed.SITE, feed_a, "day"),
        day1,
        {"energy_kwh": np.array([9999.0]), "coverage": np.array([0.9])},
    )
    assert report_json(*args)[1]["daily"][0]["facility_kwh"] == pytest.approx(2760)


def test_report_usage_and_configuration_errors(pue_config: Path, tmp_path: Path) -> None:
    bad = seed.dcim_collector(
        "report", "pue", "--config", str(pue_config), "--from", "2025-13-01", "--to", "2025-03-02"
    )
    assert bad.returncode == 2
    assert "--from '2025-13-01'" in bad.stderr
    both = seed.dcim_collector(
        "report", "pue", "--config", str(pue_config), "--from", "2025-03-01", "--to", "2025-03-02", "--json", "--csv"
    )
    assert both.returncode == 2
    bare = seed.write_config(tmp_path / "bare.toml", sqlite_toml(tmp_path / "s.sqlite"))
    missing = seed.dcim_collector("report", "availability", "--config", str(bare), "--month", "2025-04")
    assert missing.returncode == 2
    assert f"{bare}: availability: the [availability] section is missing" in missing.stderr
    wrong = seed.write_config(
        tmp_path / "wrong.toml",
        sqlite_toml(tmp_path / "s.sqlite"),
        '[pue]\n[[pue.meters]]\ndevice = "it-1"\nrole = "it_input"\n',
    )
    invalid = seed.dcim_collector("report", "pue", "--config", str(wrong), "--from", "2025-03-01", "--to", "2025-03-02")
    assert invalid.returncode == 2
    assert "pue: no meter with role 'facility'" in invalid.stderr


# ---------------------------------------------------------------- availability

BATTERY_BOTH = [
    seed.Episode("ups-a1", "battery", 10 * 86_400, 600),
    seed.Episode("ups-a2", "battery", 10 * 86_400, 600),
]
BYPASS_ONE = [seed.Episode("ups-a2", "bypass", 12 * 86_400, 300)]
OUTPUT_OFF_ALARM = {"ups-a1": [seed.Episode("ups-a1", "upsOutputOff", 20 * 86_400, 120)]}


def outage(both_s: int, breaker_s: int) -> list[seed.Episode]:
    """Both UPS with no output for ``both_s`` (every load down), then breaker pdu-r1 open (row-1, 3/4 of the load)."""
    return [
        seed.Episode("ups-a1", "none", 86_400, both_s),
        seed.Episode("ups-a2", "none", 86_400, both_s),
        seed.Episode("pdu-r1", 1.0, 5 * 86_400, breaker_s),
    ]


def availability_config(tmp_path: Path, store_toml: str) -> Path:
    return seed.write_config(tmp_path / "collector.toml", store_toml, seed.AVAILABILITY_TOML)


@pytest.mark.parametrize(
    ("both_s", "breaker_s", "met", "code"),
    [
        (200, 80, True, 0),  # 200 + 3/4 x 80 = 260 s = 4 min 20 s <= 4.38 min: met
        (220, 80, False, 1),  # 280 s = 4 min 40 s: missed
    ],
)
def test_monthly_budget_met_at_4_min_20_s_and_missed_at_4_min_40_s(
    tmp_path: Path, sqlite_path: tuple[Path, Store], *, both_s: int, breaker_s: int, met: bool, code: int
) -> None:
    path, store = sqlite_path
    seed.seed_status(store, [*outage(both_s, breaker_s), *BATTERY_BOTH, *BYPASS_ONE], alarm_rows=OUTPUT_OFF_ALARM)
    config = availability_config(tmp_path, sqlite_toml(path))
    result_code, doc = report_json("availability", "--config", str(config), "--month", "2025-04")
    assert result_code == code
    down_s = both_s + 0.75 * breaker_s
    assert doc["month"] == "2025-04"
    assert doc["basis"] == "30.44-day"
    assert doc["allowed_down_s"] == pytest.approx(30.44 * 86_400 * 1e-4, abs=1e-3)
    assert doc["down_s"] == pytest.approx(down_s, abs=1e-6)
    assert doc["met"] is met
    assert doc["availability"] == pytest.approx(1 - down_s / (30.44 * 86_400), abs=1e-9)
    assert doc["remaining_budget_s"] == pytest.approx(30.44 * 86_400 * 1e-4 - down_s, abs=1e-3)
    # Both UPS on battery: degraded, not down. One UPS on bypass, one with upsOutputOff: redundancy lost.
    assert doc["degraded_min"] == pytest.approx(10.0, abs=1e-6)
    assert doc["redundancy_lost_min"] == pytest.approx((300 + 120) / 60, abs=1e-6)
    assert doc["unknown_min"] == pytest.approx(0.0, abs=1e-6)
    outages = [(o["load"], o["duration_s"], o["devices"], o["causes"]) for o in doc["outages"]]
    assert outages == [
        ("row-1", both_s, ["ups-a1", "ups-a2"], ["output_source_none"]),
        ("row-2", both_s, ["ups-a1", "ups-a2"], ["output_source_none"]),
        ("row-1", breaker_s, ["pdu-r1"], ["breaker_trip"]),
    ]
    loads = {row["load"]: row for row in doc["loads"]}
    assert loads["row-1"]["down_s"] == pytest.approx(both_s + breaker_s)
    assert loads["row-2"]["down_s"] == pytest.approx(both_s)
    assert loads["row-1"]["share"] == pytest.approx(0.75)


def test_unknown_time_is_never_counted_as_up(tmp_path: Path, sqlite_path: tuple[Path, Store]) -> None:
    path, store = sqlite_path
    # Neither UPS answers for two hours; each reading stays valid for max_gap_s = 900 s.
    gap = [(15 * 86_400 + 1, 7200)]
    seed.seed_status(store, outage(200, 0)[:2], gaps={"ups-a1": gap, "ups-a2": gap})
    config = availability_config(tmp_path, sqlite_toml(path))
    code, doc = report_json("availability", "--config", str(config), "--month", "2025-04")
    # The last poll before the gap is at offset 15 d exactly; the next at 15 d + 7800 s.
    unknown_s = 7800 - 900
    assert doc["unknown_min"] == pytest.approx(unknown_s / 60, abs=1e-3)
    assert doc["down_s"] == pytest.approx(200)
    assert doc["up_min"] == pytest.approx((30 * 86_400 - 200 - unknown_s) / 60, abs=1e-3)
    assert doc["met"] is None  # the unknown time could hide a budget overrun
    assert doc["availability_if_unknown_down"] < doc["availability"]
    assert code == 1
    text = seed.dcim_collector("report", "availability", "--config", str(config), "--month", "2025-04")
    assert "(not decided)" in text.stdout
    assert "unknown (no data)     115.0 min" in text.stdout


def test_availability_text_csv_and_chart(tmp_path: Path, sqlite_path: tuple[Path, Store]) -> None:
    path, store = sqlite_path
    seed.seed_status(store, outage(200, 80))
    config = availability_config(tmp_path, sqlite_toml(path))
    args = ["report", "availability", "--config", str(config), "--month", "2025-04"]
    text = seed.dcim_collector(*args)
    assert text.returncode == 0
    assert "availability          99.990114%   (MET)" in text.stdout
    assert "down                  4 min 20 s" in text.stdout
    assert "remaining budget      0 min 03 s" in text.stdout
    rows = list(csv.DictReader(io.StringIO(seed.dcim_collector(*args, "--csv").stdout)))
    assert [r["load"] for r in rows] == ["*", "row-1", "row-2"]
    assert float(rows[0]["down_min"]) == pytest.approx(260 / 60, abs=1e-4)
    png = tmp_path / "availability.png"
    result = seed.dcim_collector(*args, "--plot", str(png))
    assert result.returncode == 0
    size, colours, rgb = png_stats(png)
    assert size == (1000, 700)
    assert colours > 50
    assert has_colour(rgb, (214, 39, 40))  # outage bars and the budget line
    assert has_colour(rgb, (31, 119, 180))  # April's down time


# ---------------------------------------------------------------- InfluxDB


@pytest.mark.servers
def test_reports_from_influxdb(influxdb: servers.InfluxDB, tmp_path: Path) -> None:
    store = InfluxV1Store(influxdb.url, "dcim", timeout_s=10.0)
    store.open()
    try:
        seed.seed_pue(store)
        seed.seed_status(store, [*outage(200, 80), *BATTERY_BOTH, *BYPASS_ONE], alarm_rows=OUTPUT_OFF_ALARM)
    finally:
        store.close()
    config = seed.write_config(
        tmp_path / "collector.toml", influx_toml(influxdb), seed.PUE_TOML, seed.AVAILABILITY_TOML
    )
    code, doc = report_json("pue", "--config", str(config), "--from", "2025-03-01", "--to", "2025-03-03")
    assert code == 1
    check_pue_days(doc)
    code, doc = report_json("availability", "--config", str(config), "--month", "2025-04")
    assert code == 0
    assert doc["down_s"] == pytest.approx(260.0, abs=1e-6)
    assert doc["degraded_min"] == pytest.approx(10.0, abs=1e-6)
    assert doc["redundancy_lost_min"] == pytest.approx(7.0, abs=1e-6)
    assert len(doc["outages"]) == 3
