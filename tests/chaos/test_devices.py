"""Devices that stop answering or answer garbage: their points carry the failure, the others go on, nothing crashes."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from models import catalog
from simulators.modbus import ModbusSimulator, ThreadedSimulator
from tests.agent.agent_helpers import Subscriber, base_sections, write_config
from tests.chaos.helpers import all_seqs, count, failed, good, missing, start_agent
from tests.support import servers

pytestmark = [pytest.mark.chaos, pytest.mark.servers, pytest.mark.timeout(180)]

INTERVAL_S = 0.3
TIMEOUT_S = 0.5


def _silent(sim: ModbusSimulator, on: bool) -> None:
    sim.fault(1).silent = on


def _garbage(sim: ModbusSimulator, on: bool) -> None:
    sim.fault(1).corrupt = 1_000_000 if on else 0


def _closing(sim: ModbusSimulator, on: bool) -> None:
    sim.fault(1).drop = 1_000_000 if on else 0


def test_silent_garbage_and_hanging_up_devices(mosquitto_bin: str, tmp_path: Path) -> None:
    broker = servers.start_mosquitto(mosquitto_bin, tmp_path / "broker")
    sub = Subscriber(broker.host, broker.port, persistent=True, client_id="chaos-collector").start()
    sims = {
        "silent": ThreadedSimulator(catalog.load("meter-sdm630")),
        "garbage": ThreadedSimulator(catalog.load("pump-modbus")),
        "closing": ThreadedSimulator(catalog.load("tower-modbus")),
        "healthy": ThreadedSimulator(catalog.load("ups-apc-modbus")),
    }
    faults = {"silent": _silent, "garbage": _garbage, "closing": _closing}
    log = tmp_path / "agent.log"
    try:
        for sim in sims.values():
            sim.start()
        devices: list[dict[str, object]] = [
            {"id": name, "model": sim.simulator.unit(1).model.id, "port": sim.port} for name, sim in sims.items()
        ]
        sections = base_sections(
            tmp_path, broker.url, defaults={"interval_s": INTERVAL_S, "timeout_s": TIMEOUT_S, "retries": 0}
        )
        agent = start_agent(write_config(tmp_path / "agent.toml", sections, devices), log)
        try:
            sub.wait_for(lambda _r: all(len(sub.batches(d)) >= 2 for d in sims), what="every device read")
            for name, fault in faults.items():
                sims[name].call(functools.partial(fault, on=True))
            healthy_from = len(sub.batches("healthy"))

            def failing_for(name: str, n: int) -> bool:
                return sum(1 for b in sub.batches(name) if failed(b)) >= n

            sub.wait_for(lambda _r: all(failing_for(n, 3) for n in faults), what="failed polls of every faulty device")
            during = sub.batches("healthy")[healthy_from:]
            for name, fault in faults.items():
                sims[name].call(functools.partial(fault, on=False))
            recovered_from = {n: len(sub.batches(n)) for n in faults}
            sub.wait_for(
                lambda _r: all(any(good(b) for b in sub.batches(n)[recovered_from[n] :]) for n in faults),
                what="every device read again after its fault cleared",
            )
            assert agent.terminate() == 0, agent.output()
        finally:
            agent.kill()
        sub.wait_for(lambda _r: not missing(all_seqs(sub)), what="every sequence number")
    finally:
        sub.stop()
        for sim in sims.values():
            sim.stop()
        broker.stop()
    # The healthy device was never held up: read every time, well within its own timeout.
    assert len(during) >= 3
    assert all(good(b) for b in during)
    assert all((b.poll_ms or 0.0) < TIMEOUT_S * 1000 for b in during)
    # A failed read is a quality, never a value; and each failure is named in the log with its device.
    for name in faults:
        assert any(failed(b) for b in sub.batches(name))
    qualities = {n: {p.quality for b in sub.batches(n) if failed(b) for p in b.points.values()} for n in faults}
    assert qualities["silent"] == {"timeout"}, qualities
    assert "good" not in qualities["garbage"] | qualities["closing"], qualities
    text = log.read_text(errors="replace")
    assert count(log, "device silent: device 'silent' unit 1") >= 1, text[-3000:]
    assert f"no answer from 127.0.0.1:{sims['silent'].port} within {TIMEOUT_S:g} s" in text
    assert count(log, "device garbage:") >= 1, text[-3000:]
    assert count(log, "device closing:") >= 1, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert not missing(all_seqs(sub))
