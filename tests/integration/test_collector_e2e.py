"""End to end: simulated meter → agent → Mosquitto → collector → InfluxDB, checked value by value."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import queue
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.store import ts_ns
from models import telemetry
from models.units import convert, normalised_unit
from tests.collector.conftest import (
    Subscription,
    influx_rows,
    influx_store,
    running_collector,
    wait_until,
    write_config,
)
from tests.support import servers
from tests.support.servers import InfluxDB, Mosquitto

pytestmark = [pytest.mark.servers, pytest.mark.timeout(180)]

SITE = "bj-dx"
AGENT = "edge-01"
DEVICE = "meter-main"
MODEL = "meter-sdm630"
ROWS = 'SELECT * FROM "meter" WHERE "device" = \'meter-main\''
UNITS = 'SELECT * FROM "units" WHERE "model" = \'meter-sdm630\''

if importlib.util.find_spec("agent.runtime") is None or importlib.util.find_spec("simulators.modbus") is None:
    pytest.skip("the agent runtime or the Modbus simulator is not in this build", allow_module_level=True)


@pytest.fixture
def meter_sim(tmp_path: Path) -> Iterator[int]:
    """dcim-sim device meter-sdm630 on a free port; yields the port once it says it is ready."""
    port = servers.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulators.cli", "device", MODEL, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "sim.log").open("ab"),
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert line.startswith("ready"), line
        yield port
    finally:
        servers.stop(proc)


def _agent_config(path: Path, broker: Mosquitto, port: int) -> Path:
    path.write_text(
        f"""
[agent]
id = "{AGENT}"
site = "{SITE}"
[mqtt]
url = "{broker.url}"
[spool]
path = "{path.parent / "spool.sqlite"}"
[commands]
audit_log = "{path.parent / "audit.jsonl"}"
[defaults]
interval_s = 0.5
[[devices]]
id = "{DEVICE}"
model = "{MODEL}"
host = "127.0.0.1"
port = {port}
""",
        encoding="utf-8",
    )
    return path


def _start_agent(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)


async def test_every_polled_value_reaches_influx(
    mosquitto: Mosquitto, influxdb: InfluxDB, meter_sim: int, tmp_path: Path
) -> None:
    watch = Subscription(mosquitto, f"dcim/v1/{SITE}/{AGENT}/{DEVICE}/telemetry", "e2e-watch")
    config = write_config(tmp_path / "collector.toml", mosquitto, influx_store(influxdb))
    agent_cfg = _agent_config(tmp_path / "agent.toml", mosquitto, meter_sim)
    async with running_collector(config) as collector:
        agent = _start_agent(agent_cfg, tmp_path / "agent.log")
        published: list[telemetry.Batch] = []
        try:
            while len(published) < 5:
                published.append(telemetry.decode_batch(watch.get(timeout_s=60)[1]))
        finally:
            await asyncio.to_thread(_stop, agent)
        while True:  # whatever the agent sent before it stopped
            try:
                published.append(telemetry.decode_batch(watch.get(timeout_s=2)[1]))
            except queue.Empty:
                break
        watch.close()
        await wait_until(
            "every polled batch stored",
            lambda: len(influx_rows(influxdb, ROWS)) >= len(published),
        )
        assert collector.metrics.rejected == 0  # the agent's batches, health and status pass strict decoding

    rows = {r["time"]: r for r in influx_rows(influxdb, ROWS)}
    assert sorted(rows) == sorted(ts_ns(b.ts) for b in published)  # one row per poll, at the read time
    checked = 0
    for batch in published:
        row = rows[ts_ns(batch.ts)]
        assert (row["site"], row["agent"], row["device"], row["model"]) == (SITE, AGENT, DEVICE, MODEL)
        for name, point in batch.points.items():
            if point.quality != "good":
                assert row[f"{name}__q"] == point.quality
                assert row[name] is None
            elif isinstance(point.value, str):
                assert row[name] == point.value
            else:
                expected = convert(float(point.value), point.unit, normalised_unit(point.unit))  # type: ignore[arg-type]
                assert row[name] == pytest.approx(expected, rel=1e-12, abs=1e-12), name
            checked += 1
    assert checked >= 5 * 20

    units = {r["field"]: r["unit"] for r in influx_rows(influxdb, UNITS)}
    for name, point in published[0].points.items():
        assert units[name] == normalised_unit(point.unit), name
    # The meter reads watts; the collector stores kilowatts.
    assert published[0].points["total_power"].unit == "W"
    assert units["total_power"] == "kW"
    first = published[0]
    assert rows[ts_ns(first.ts)]["total_power"] == pytest.approx(first.points["total_power"].value / 1000.0)  # type: ignore[operator]
