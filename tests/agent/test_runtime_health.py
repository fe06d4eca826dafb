"""The agent's own telemetry (device "agent"), the `run` command's exit codes, the reserved device id."""

from __future__ import annotations

import asyncio
import subprocess
import threading
from pathlib import Path

import pytest

from agent import config as agent_config
from agent import health
from agent import runtime as runtime_module
from agent.health import AgentHealth, DeviceHealth
from agent.runtime import Runtime
from agent.spool import SpoolStats
from models import telemetry
from models.errors import ConfigError
from tests.agent.agent_helpers import VENV_BIN, Subscriber, base_sections, simulators, write_config
from tests.support.servers import Mosquitto, free_port


@pytest.mark.servers
async def test_health_is_published_each_interval_with_per_device_numbers(mosquitto: Mosquitto, tmp_path: Path) -> None:
    sub = Subscriber(mosquitto.host, mosquitto.port).start()
    with simulators("meter-sdm630") as (meter,):
        devices: list[dict[str, object]] = [
            {"id": "meter-1", "model": "meter-sdm630", "port": meter.port, "interval_s": 0.2},
            # Nothing listens here: every poll fails fast with a connection error.
            {"id": "gone-1", "model": "meter-sdm630", "port": free_port(), "interval_s": 0.2, "timeout_s": 0.5},
        ]
        sections = base_sections(tmp_path, mosquitto.url, agent={"health_interval_s": 0.5})
        runtime = Runtime(agent_config.load(write_config(tmp_path / "agent.toml", sections, devices)))
        task = asyncio.create_task(runtime.run())
        try:
            await asyncio.wait_for(runtime.running.wait(), 30)

            def reports() -> list[telemetry.Batch]:
                return [b for b in sub.batches("agent") if b.tables.get("devices")]

            def enough(_r: object) -> bool:
                rows = [b.tables["devices"] for b in reports()]
                return any(r["meter-1"]["polls_ok"].value and r["gone-1"]["polls_failed"].value for r in rows)

            await asyncio.to_thread(sub.wait_for, enough, what="a health batch with both devices polled")
        finally:
            runtime.stop()
            assert await asyncio.wait_for(task, 60) == 0
    sub.stop()
    batch = next(b for b in reversed(reports()) if b.tables["devices"]["gone-1"]["polls_failed"].value)
    assert batch.model == "dcim-agent"
    assert batch.kind == "generic"
    assert telemetry.validate_batch(batch) is batch
    good, bad = batch.tables["devices"]["meter-1"], batch.tables["devices"]["gone-1"]
    assert good["points_good"].value == len(runtime.state("meter-1").device.model.points)
    assert good["points_bad"].value == 0
    assert good["last_error"].value == ""
    assert isinstance(good["latency"].value, float)
    assert good["latency"].unit == "ms"
    assert bad["points_good"].value == 0
    assert bad["last_error"].value  # says why
    points = batch.points
    assert points["mqtt_connected"].value is True
    assert isinstance(points["memory_rss"].value, float)
    assert points["memory_rss"].value > 1
    for name in ("spool_depth", "spool_dropped", "published", "polls_missed", "uptime", "devices_failing"):
        assert points[name].quality == "good", name
    assert points["devices"].value == 2
    assert points["spool_dropped"].counter
    # Health batches are numbered like every other batch.
    all_seqs = sorted(b.seq for b in sub.batches())
    assert len(all_seqs) == len(set(all_seqs))


def test_health_of_a_thousand_devices_splits_into_batches_under_the_payload_limit() -> None:
    snap = AgentHealth(
        uptime_s=10.0,
        devices=tuple(
            DeviceHealth(device=f"meter-{i:04d}", polls_ok=i, latency_ms=12.5, last_error="timeout" * 3)
            for i in range(1000)
        ),
        spool=SpoolStats(max_bytes=1 << 30),
        mqtt_connected=False,
        published=0,
        replayed=0,
        commands_ok=0,
        commands_refused=0,
        memory_rss_bytes=None,
    )
    n = health.batch_count(snap)
    batches = [health.health_batch("bj-dx", "edge-01", 1.8e9, snap, part=i, seq=100 + i) for i in range(n)]
    assert n == 5
    assert sum(len(b.tables["devices"]) for b in batches) == 1000
    assert batches[0].points["memory_rss"].quality == "not_available"
    assert all(not b.points for b in batches[1:])
    for b in batches:
        assert len(telemetry.encode(telemetry.validate_batch(b))) < telemetry.MAX_PAYLOAD_BYTES
    assert "1000 devices, 0 ok, 1000 failing; mqtt DISCONNECTED" in health.status_line(snap)


def test_agent_is_a_reserved_device_id(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"devices\[0\]\.id: 'agent' is reserved"):
        agent_config.parse(
            tmp_path / "agent.toml",
            {"agent": {"id": "edge-01", "site": "bj-dx"}, "devices": [{"id": "agent", "model": "meter-sdm630"}]},
        )


def _run(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "dcim-agent"), "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_run_exits_2_naming_the_file_and_key_on_a_bad_configuration(tmp_path: Path) -> None:
    config = write_config(tmp_path / "agent.toml", {"agent": {"id": "edge-01", "site": "bj-dx", "colour": "red"}}, [])
    done = _run(config)
    assert done.returncode == 2
    assert f"{config}: agent.colour: unknown key" in done.stderr


def test_run_exits_2_when_the_spool_cannot_be_opened(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    sections: dict[str, dict[str, object]] = {
        "agent": {"id": "edge-01", "site": "bj-dx"},
        "spool": {"path": str(blocker / "spool.sqlite")},
    }
    done = _run(write_config(tmp_path / "agent.toml", sections, []))
    assert done.returncode == 2
    assert "spool" in done.stderr
    assert str(blocker) in done.stderr


def test_an_exception_ending_a_thread_goes_to_the_log(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(threading, "excepthook", runtime_module._log_thread_exception)

    def fail() -> None:
        raise OSError("the socket went away")

    thread = threading.Thread(target=fail, name="paho-mqtt-client-test")
    with caplog.at_level("ERROR", logger="agent.runtime"):
        thread.start()
        thread.join()
    assert "thread paho-mqtt-client-test ended with an error: the socket went away" in caplog.text
    assert "Traceback" in caplog.text
