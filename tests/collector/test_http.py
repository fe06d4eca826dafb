"""The read-only dashboard of `dcim-collector run --http`: its JSON API and page over real HTTP."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.http import HttpAddressError, parse_address
from tests.collector import dashboard_seed as seed
from tests.support.servers import free_port


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[seed.Running, seed.Seeded]]:
    folder = tmp_path_factory.mktemp("dashboard")
    store = folder / "store.sqlite"
    seeded = seed.seed(store)
    config = seed.write_config(folder, store, free_port())  # nobody listens there: MQTT stays down
    with seed.collector_with_http(config, free_port(), folder / "collector.log") as running:
        yield running, seeded


def test_endpoint_list(dashboard: tuple[seed.Running, seed.Seeded]) -> None:
    running, _ = dashboard
    status, doc = seed.get_json(running.url + "api")
    assert status == 200
    assert {"/api/pue?minutes=M", "/api/availability", "/api/optimizer", "/api/devices"} <= set(doc["endpoints"])


def test_live_pue_series_is_facility_over_it(dashboard: tuple[seed.Running, seed.Seeded]) -> None:
    running, seeded = dashboard
    status, doc = seed.get_json(running.url + "api/pue?minutes=60")
    assert status == 200
    assert doc["label"] == "live"
    assert doc["source"] == "live_point"
    series = doc["series"]
    assert len(series) >= 60  # half an hour of 10-s readings in at most 120 bins
    assert series[0]["ts"] >= seeded.t0_s
    assert series[-1]["ts"] <= seeded.t_end_s + 1
    for p in series:
        assert p["it_kw"] == pytest.approx(seed.IT_KW)
        assert p["ratio"] == pytest.approx(p["facility_kw"] / p["it_kw"], rel=1e-3)
        assert seed.FACILITY_KW - 2.01 <= p["facility_kw"] <= seed.FACILITY_KW + 2.01
    assert doc["latest"] == series[-1]
    # A shorter window holds fewer, later points.
    _, short = seed.get_json(running.url + "api/pue?minutes=5")
    assert short["series"]
    assert short["series"][0]["ts"] > series[0]["ts"]


def test_plant_power_from_the_cooling_meter(dashboard: tuple[seed.Running, seed.Seeded]) -> None:
    running, _ = dashboard
    status, doc = seed.get_json(running.url + "api/plant?minutes=60")
    assert status == 200
    assert doc["meters"] == ["meter-plant:import_energy"]
    values = [p["plant_kw"] for p in doc["series"]]
    assert len(values) >= 60
    assert all(seed.PLANT_KW - 1.51 <= v <= seed.PLANT_KW + 1.51 for v in values)
    assert max(values) - min(values) > 1.0  # the seeded swing shows


def test_availability_counts_the_outage_against_the_budget(dashboard: tuple[seed.Running, seed.Seeded]) -> None:
    running, seeded = dashboard
    status, doc = seed.get_json(running.url + "api/availability")
    assert status == 200
    assert doc["target"] == pytest.approx(0.9999)
    assert doc["down_s"] == pytest.approx(seeded.outage_s)
    assert doc["remaining_budget_s"] == pytest.approx(doc["allowed_down_s"] - seeded.outage_s, abs=1e-3)
    assert doc["budget_left_fraction"] == pytest.approx(doc["remaining_budget_s"] / doc["allowed_down_s"], abs=1e-5)
    assert doc["outages"] == 1
    assert doc["availability"] < 1.0
    status, outages = seed.get_json(running.url + "api/outages")
    assert status == 200
    (outage,) = outages["outages"]
    assert outage["devices"] == ["ups-a"]
    assert outage["duration_s"] == pytest.approx(seeded.outage_s)


def test_optimizer_state_from_the_store(dashboard: tuple[seed.Running, seed.Seeded]) -> None:
    running, _ = dashboard
    status, doc = seed.get_json(running.url + "api/optimizer")
    assert status == 200
    assert doc["available"] is True
    assert doc["source"] == "store"
    summary = doc["summary"]
    assert summary["mode"] == "advisory"
    assert summary["fallback"] is False
    assert summary["predicted_saving_kw"] == pytest.approx(2.5)
    assert summary["recommended_chw_supply_c"] == pytest.approx(13.0)


def test_devices_and_their_health(dashboard: tuple[seed.Running, seed.Seeded]) -> None:
    running, _ = dashboard
    status, doc = seed.get_json(running.url + "api/devices")
    assert status == 200
    health = {d["device"]: d["health"] for d in doc["devices"]}
    assert health == {
        "gw-1": "failing",  # its last read failed: a quality, not a value
        "meter-main": "ok",
        "meter-plant": "ok",
        "pdu-a1": "ok",
        "pdu-b1": "ok",
        seed.STALE_DEVICE: "stale",
        "ups-a": "ok",
    }
    kinds = {d["device"]: (d["kind"], d["model"], d["agent"]) for d in doc["devices"]}
    assert kinds["ups-a"] == ("ups", "ups-rfc1628", seed.AGENT)


def test_alarms_and_status(dashboard: tuple[seed.Running, seed.Seeded]) -> None:
    running, _ = dashboard
    status, alarms = seed.get_json(running.url + "api/alarms")
    assert status == 200
    assert alarms == {"site": seed.SITE, "enabled": False, "alarms": []}
    status, doc = seed.get_json(running.url + "api/status")
    assert status == 200
    assert doc["collector"] == "collector-dash"
    assert doc["store_up"] is True
    assert doc["mqtt_connected"] is False


def test_page_is_self_contained(dashboard: tuple[seed.Running, seed.Seeded]) -> None:
    running, _ = dashboard
    status, headers, body = seed.get(running.url)
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    page = body.decode()
    assert 'id="pue-chart"' in page
    assert 'id="plant-chart"' in page
    # Works offline: no script, style or font from anywhere else (only the SVG namespace URI).
    urls = set(re.findall(r"https?://[^\s\"')]+", page))
    assert urls == {"http://www.w3.org/2000/svg"}
    assert "<script src" not in page
    assert "<link" not in page


def test_read_only_and_errors(dashboard: tuple[seed.Running, seed.Seeded]) -> None:
    running, _ = dashboard
    request = urllib.request.Request(running.url + "api/pue", data=b"{}", method="POST")  # noqa: S310
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)  # noqa: S310  (loopback http)
    assert refused.value.code == 405
    assert refused.value.headers["Allow"] == "GET, HEAD"
    status, doc = seed.get_json(running.url + "api/nothing")
    assert status == 404
    assert "/api" in doc["error"]
    for bad in ("abc", "0", "-5", "nan", "99999999"):
        status, doc = seed.get_json(running.url + f"api/pue?minutes={bad}")
        assert status == 400, bad
        assert "minutes" in doc["error"]


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:9000", ("::1", 9000)),
        ("0.0.0.0:8080", None),
        ("10.1.2.3:8080", None),
        ("127.0.0.1", None),
        ("127.0.0.1:http", None),
        ("127.0.0.1:70000", None),
        ("example.com:80", None),
    ],
)
def test_parse_address(value: str, ok: tuple[str, int] | None) -> None:
    if ok is None:
        with pytest.raises(HttpAddressError, match="--http"):
            parse_address(value)
    else:
        assert parse_address(value) == ok


def run_collector(config: Path, http: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "collector.cli", "run", "--config", str(config), "--http", http],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_non_loopback_address_is_a_usage_error(tmp_path: Path) -> None:
    config = seed.write_config(tmp_path, tmp_path / "store.sqlite", free_port())
    result = run_collector(config, "0.0.0.0:8080")
    assert result.returncode == 2
    assert "loopback only" in result.stderr
    assert not (tmp_path / "store.sqlite").exists()  # refused before anything started


def test_port_in_use_fails_naming_the_address(tmp_path: Path) -> None:
    config = seed.write_config(tmp_path, tmp_path / "store.sqlite", free_port())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_collector(config, f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert f"--http 127.0.0.1:{port}: cannot listen" in result.stderr
