"""A small recent site history for the dashboard tests: meters, PDUs, a UPS with an outage, an optimiser result."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from collector.store.sqlite import SqliteStore
from models import telemetry

SITE = "dash"
AGENT = "edge-dash"
STEP_S = 10.0
SAMPLES = 180  # half an hour of readings, every 10 s, ending now
FACILITY_KW = 60.0
IT_KW = 40.0  # two PDUs of 20 kW
PLANT_KW = 12.0
OUTAGE_SAMPLES = (120, 126)  # ups-a reports output source none for these samples (60 s)
STALE_DEVICE = "pdu-old"  # last read an hour ago


@dataclass(frozen=True)
class Seeded:
    """What was written, for the assertions."""

    t0_s: float
    t_end_s: float
    outage_s: float


def _batch(device: str, kind: str, model: str, seq: int, ts: float, **points: tuple[Any, str]) -> telemetry.Batch:
    return telemetry.Batch(
        site=SITE,
        agent=AGENT,
        device=device,
        model=model,
        kind=kind,
        seq=seq,
        ts=ts,
        points={
            name: telemetry.Point(value, unit) if value is not None else telemetry.Point(None, unit, "timeout")
            for name, (value, unit) in points.items()
        },
    )


def seed(path: Path, now_s: float | None = None) -> Seeded:
    """Write the history into an SQLite store at ``path`` (stored units: kW, kWh)."""
    now_s = time.time() if now_s is None else now_s
    t0 = now_s - (SAMPLES - 1) * STEP_S
    ts = t0 + np.arange(SAMPLES) * STEP_S
    hours = (ts - t0) / 3600.0
    wobble = np.sin(np.arange(SAMPLES) / 15.0)
    facility = FACILITY_KW + 2.0 * wobble
    plant = PLANT_KW + 1.5 * wobble
    messages: list[telemetry.Batch] = []
    for i, t in enumerate(ts.tolist()):
        messages.append(
            _batch(
                "meter-main",
                "meter",
                "meter-sdm630",
                i,
                t,
                l1_voltage=(230.0, "V"),
                total_power=(float(facility[i]), "kW"),
                import_energy=(10_000.0 + float(np.sum(facility[:i]) * STEP_S / 3600.0), "kWh"),
            )
        )
        messages.append(
            _batch(
                "meter-plant",
                "meter",
                "meter-sdm630",
                i,
                t,
                l1_voltage=(230.0, "V"),
                total_power=(float(plant[i]), "kW"),
                import_energy=(2_000.0 + float(np.sum(plant[:i]) * STEP_S / 3600.0), "kWh"),
            )
        )
        for n, pdu in enumerate(("pdu-a1", "pdu-b1")):
            messages.append(
                _batch(
                    pdu,
                    "pdu",
                    "pdu-apc-rpdu2",
                    i,
                    t,
                    power=(IT_KW / 2, "kW"),
                    energy=(500.0 * (n + 1) + IT_KW / 2 * float(hours[i]), "kWh"),
                )
            )
        source = "none" if OUTAGE_SAMPLES[0] <= i < OUTAGE_SAMPLES[1] else "normal"
        messages.append(
            _batch(
                "ups-a",
                "ups",
                "ups-rfc1628",
                i,
                t,
                output_source=(source, ""),
                seconds_on_battery=(0.0, "s"),
            )
        )
        # The gateway's first numeric point fails on the last poll: the device is "failing".
        messages.append(
            _batch(
                "gw-1",
                "gateway",
                "gateway-nbiot",
                i,
                t,
                sensor_count=(8.0, ""),
                uptime=(None if i == SAMPLES - 1 else 1000.0 + i, "s"),
            )
        )
    messages.append(_batch(STALE_DEVICE, "pdu", "pdu-apc-rpdu2", 0, now_s - 3600.0, power=(1.0, "kW")))
    store = SqliteStore(path)
    try:
        store.open()
        store.write_batches(messages)
        store.write_derived(
            "optimizer",
            {"site": SITE, "mode": "advisory"},
            np.array([round(now_s * 1e9)], dtype=np.int64),
            {
                "fallback": np.array([0.0]),
                "predicted_plant_kw": np.array([9.5]),
                "baseline_plant_kw": np.array([12.0]),
                "predicted_saving_kw": np.array([2.5]),
                "recommended_chw_supply_c": np.array([13.0]),
            },
        )
    finally:
        store.close()
    return Seeded(t0_s=t0, t_end_s=now_s, outage_s=(OUTAGE_SAMPLES[1] - OUTAGE_SAMPLES[0]) * STEP_S)


def write_config(folder: Path, store: Path, mqtt_port: int) -> Path:
    """A collector configuration over the seeded store, with PUE, availability and live points."""
    path = folder / "collector.toml"
    path.write_text(
        f"""
[collector]
id = "collector-dash"
site = "{SITE}"
timezone = "UTC"

[mqtt]
url = "mqtt://127.0.0.1:{mqtt_port}"
connect_timeout_s = 2.0

[store]
kind = "sqlite"
path = "{store}"

[jobs]
enabled = false

[alarms]
enabled = false

[pue]
[[pue.meters]]
device = "meter-main"
role = "facility"
live_point = "total_power"

[[pue.meters]]
device = "pdu-a1"
role = "it_pdu_output"
measurement = "pdu"
point = "energy"
live_point = "power"

[[pue.meters]]
device = "pdu-b1"
role = "it_pdu_output"
measurement = "pdu"
point = "energy"
live_point = "power"

[[pue.meters]]
device = "meter-plant"
role = "cooling"
live_point = "total_power"

[availability]
max_gap_s = 60

[[availability.devices]]
device = "ups-a"
type = "ups"
""",
        encoding="utf-8",
    )
    return path


@dataclass
class Running:
    """A dcim-collector run --http process."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path


@contextlib.contextmanager
def collector_with_http(config: Path, port: int, log: Path) -> Iterator[Running]:
    """dcim-collector run --http 127.0.0.1:PORT; yields once the dashboard answers, stops it by PID."""
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "collector.cli", "run", "--config", str(config), "--http", f"127.0.0.1:{port}"],
            stdout=err,
            stderr=err,
        )
        try:
            url = f"http://127.0.0.1:{port}/"
            deadline = time.monotonic() + 60.0
            while True:
                if proc.poll() is not None:
                    raise AssertionError(f"collector exited ({proc.returncode}):\n{log.read_text()}")
                text = log.read_text(errors="replace")
                if re.search(r"dashboard on http://127\.0\.0\.1:\d+/", text):
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"no dashboard within 60 s:\n{text}")
                time.sleep(0.1)  # waiting for the readiness line in the log
            yield Running(proc, url, log)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=30)


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    """GET over real HTTP: status, headers and body (errors included)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310  (loopback http)
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def get_json(url: str) -> tuple[int, Any]:
    """GET and decode a JSON answer."""
    status, _, body = get(url)
    return status, json.loads(body)
