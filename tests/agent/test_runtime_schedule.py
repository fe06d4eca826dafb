"""Scheduling: spread start times, a dead device delays nobody, no overlapping polls, shared connections."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent import config as agent_config
from agent.runtime import Runtime, connection_key, poll_deadline_s, spread
from tests.agent.agent_helpers import Subscriber, base_sections, simulators, wait_until, write_config
from tests.support.servers import Mosquitto

pytestmark = pytest.mark.servers

GOOD_INTERVAL_S = 0.5
DEAD_TIMEOUT_S = 1.0


def test_start_times_are_spread_evenly_per_interval() -> None:
    cfg = agent_config.parse(
        Path("agent.toml"),
        {
            "agent": {"id": "edge-01", "site": "bj-dx"},
            "devices": [{"id": f"m{i:04d}", "model": "meter-sdm630", "interval_s": 10} for i in range(1000)]
            + [{"id": "slow", "model": "meter-sdm630", "interval_s": 60}],
        },
    )
    phases = spread(list(cfg.devices))
    fast = sorted(v for k, v in phases.items() if k != "slow")
    assert len({round(p * 1000) for p in fast}) == 1000  # no two in the same millisecond
    gaps = {round(b - a, 9) for a, b in itertools.pairwise(fast)}
    assert gaps == {0.01}
    assert phases["slow"] == 0.0  # alone in its interval
    assert spread(list(reversed(cfg.devices))) == phases  # stable: by id, not by file order


@contextlib.asynccontextmanager
async def blackhole() -> AsyncIterator[int]:
    """A TCP server that accepts connections and never answers (a hung device)."""
    writers: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(4096):
                pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for w in writers:
            w.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def running(config: Path) -> AsyncIterator[Runtime]:
    runtime = Runtime(agent_config.load(config))
    task = asyncio.create_task(runtime.run())
    try:
        await asyncio.wait_for(runtime.running.wait(), 30)
        yield runtime
    finally:
        runtime.stop()
        assert await asyncio.wait_for(task, 60) == 0


def _lateness(starts: list[float], first_at: float, interval_s: float) -> list[float]:
    return [s - (first_at + round((s - first_at) / interval_s) * interval_s) for s in starts]


async def test_a_device_that_never_answers_delays_nobody(mosquitto: Mosquitto, tmp_path: Path) -> None:
    sub = Subscriber(mosquitto.host, mosquitto.port).start()
    async with blackhole() as dead_port:
        with simulators("pump-modbus", "meter-sdm630") as (pump, meter):
            dead_device = {"id": "dead", "model": "pump-modbus", "port": dead_port, "interval_s": GOOD_INTERVAL_S}
            devices: list[dict[str, object]] = [
                {**dead_device, "timeout_s": DEAD_TIMEOUT_S, "retries": 1},
                {"id": "pump-1", "model": "pump-modbus", "port": pump.port, "interval_s": GOOD_INTERVAL_S},
                {"id": "meter-1", "model": "meter-sdm630", "port": meter.port, "interval_s": GOOD_INTERVAL_S},
            ]
            config = write_config(tmp_path / "agent.toml", base_sections(tmp_path, mosquitto.url), devices)
            async with running(config) as rt:
                await wait_until(lambda: rt.state("dead").polls_failed >= 2, what="two failed polls of 'dead'")
                # A poll of a busy device is folded into the running one, never run beside it.
                await wait_until(lambda: "dead" in rt._busy, what="a poll of 'dead' in flight")
                assert await rt.poll_now("dead") is False
                dead, pump_state, meter_state = rt.state("dead"), rt.state("pump-1"), rt.state("meter-1")
                snapshot = {s.device.id: (list(s.starts), s.missed, s.polls_ok) for s in (pump_state, meter_state)}
    sub.wait_for(lambda _r: len(sub.batches("dead")) >= 2, what="batches of 'dead'")
    sub.stop()

    # The dead device's polls overran its interval: those slots were missed and counted.
    assert dead.latency_ms is not None
    assert dead.latency_ms > GOOD_INTERVAL_S * 1000
    assert dead.missed >= 1
    assert dead.coalesced >= 1
    # Meanwhile the others started on their own schedule: never a missed slot, and every
    # start within a small fraction of the dead device's timeout of its slot.
    dead_first, dead_span_s = dead.starts[0], dead.latency_ms / 1000
    for device_id, (starts, missed, ok) in snapshot.items():
        assert missed == 0, device_id
        late = _lateness(starts, rt.state(device_id).first_at, GOOD_INTERVAL_S)
        assert max(late) < DEAD_TIMEOUT_S / 2, (device_id, max(late))
        during = [s for s in starts if dead_first <= s <= dead_first + dead_span_s]
        assert len(during) >= int(dead_span_s / GOOD_INTERVAL_S) - 1, (device_id, len(during), dead_span_s)
        assert ok >= len(starts) - 1

    # A failed read is published as a failed read: no value, a quality that says why.
    dead_batches = sub.batches("dead")
    for batch in dead_batches:
        assert batch.points
        assert all(p.value is None and p.quality != "good" for p in batch.points.values())
    # Never two polls of one device in flight: each starts after the previous one ended.
    for a, b in itertools.pairwise(dead_batches):
        assert a.poll_ms is not None
        assert b.ts >= a.ts + a.poll_ms / 1000 - 0.002
    good = sub.batches("pump-1")
    assert good
    assert all(p.quality == "good" for p in good[-1].points.values())


async def test_devices_sharing_a_connection_take_turns(mosquitto: Mosquitto, tmp_path: Path) -> None:
    sub = Subscriber(mosquitto.host, mosquitto.port).start()
    with simulators("meter-sdm630") as (meter,):
        devices: list[dict[str, object]] = [
            {"id": f"meter-{i}", "model": "meter-sdm630", "port": meter.port, "interval_s": 0.2} for i in range(3)
        ]
        config = write_config(tmp_path / "agent.toml", base_sections(tmp_path, mosquitto.url), devices)
        async with running(config) as rt:
            keys = {connection_key(rt.state(f"meter-{i}").device) for i in range(3)}
            assert len(keys) == 1
            await wait_until(lambda: all(rt.state(f"meter-{i}").polls_ok >= 5 for i in range(3)), what="5 polls each")
    sub.wait_for(lambda _r: len(sub.batches()) >= 15, what="15 batches")
    sub.stop()
    spans = sorted((b.ts, b.ts + (b.poll_ms or 0) / 1000) for b in sub.batches() if b.device.startswith("meter-"))
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end - 0.002  # one request stream at a time on the shared connection


def test_poll_deadline_is_generous_against_the_driver_timeout() -> None:
    cfg = agent_config.parse(
        Path("agent.toml"),
        {
            "agent": {"id": "edge-01", "site": "bj-dx"},
            "devices": [{"id": "m", "model": "meter-sdm630", "interval_s": 1, "timeout_s": 2.0, "retries": 2}],
        },
    )
    device = cfg.devices[0]
    assert poll_deadline_s(device) >= device.timeout_s * (device.retries + 1)
    assert poll_deadline_s(device) >= device.interval_s
