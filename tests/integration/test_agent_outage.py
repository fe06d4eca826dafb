"""The agent process against a real Mosquitto: outages, kill -9, a full spool, the last will."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from models import telemetry
from tests.agent.agent_helpers import (
    Subscriber,
    base_sections,
    simulators,
    start_agent,
    start_broker,
    unique_in_order,
    write_config,
)
from tests.support.servers import Mosquitto

pytestmark = [pytest.mark.servers, pytest.mark.chaos]

INTERVAL_S = 0.25
OUTAGE_S = 4.0  # "a minute" in production terms; the checks are on counts and sequence numbers


@pytest.fixture
def mosquitto(mosquitto_bin: str, tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker that keeps its sessions across stop() and start() (see start_broker)."""
    broker = start_broker(mosquitto_bin, tmp_path / "mosquitto")
    try:
        yield broker
    finally:
        broker.stop()


def _contiguous_from_one(sub: Subscriber) -> bool:
    seqs = {b.seq for b in sub.batches()}
    return bool(seqs) and min(seqs) == 1 and len(seqs) == max(seqs)


def _spool_rows(path: Path) -> list[int]:
    """Sequence numbers waiting in an agent's spool (read beside the running agent)."""
    if not path.exists():
        return []
    db = sqlite3.connect(path, timeout=10)
    try:
        return [r[0] for r in db.execute("SELECT seq FROM batches ORDER BY id")]
    finally:
        db.close()


def _spool_dropped(path: Path) -> int:
    if not path.exists():
        return 0
    db = sqlite3.connect(path, timeout=10)
    try:
        rows = db.execute("SELECT value FROM meta WHERE key IN ('dropped_oldest', 'dropped_newest')").fetchall()
        return sum(r[0] for r in rows)
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


def _wait(condition, what: str, timeout_s: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)  # re-check a condition on disk


@pytest.mark.parametrize("outage_s", [OUTAGE_S])
def test_broker_outage_every_batch_arrives_in_order(mosquitto: Mosquitto, tmp_path: Path, outage_s: float) -> None:
    sub = Subscriber(mosquitto.host, mosquitto.port, persistent=True, client_id="collector-test").start()
    with simulators("meter-sdm630", "pump-modbus") as (meter, pump):
        devices: list[dict[str, object]] = [
            {"id": "meter-1", "model": "meter-sdm630", "port": meter.port, "interval_s": INTERVAL_S},
            {"id": "pump-1", "model": "pump-modbus", "port": pump.port, "interval_s": INTERVAL_S},
        ]
        config = write_config(tmp_path / "agent.toml", base_sections(tmp_path, mosquitto.url), devices)
        agent = start_agent(config, tmp_path / "agent.log")
        try:
            sub.wait_for(lambda _r: len(sub.batches("pump-1")) >= 4, what="live batches")
            mosquitto.stop()
            t_down = time.time()
            time.sleep(outage_s)  # the outage being simulated, not a wait for something to happen
            t_up = time.time()
            mosquitto.start()
            sub.wait_for(
                lambda _r: _contiguous_from_one(sub) and any(b.ts > t_up + 1.0 for b in sub.batches("meter-1")),
                what="the backlog and live data after the outage",
            )
            assert agent.terminate() == 0, agent.output()
        finally:
            agent.kill()
            sub.stop()
    seqs = {b.seq for b in sub.batches()}
    assert sorted(seqs) == list(range(1, max(seqs) + 1)), "after removing duplicates, none is missing"
    for device in ("meter-1", "pump-1"):
        arrived = unique_in_order([b.seq for b in sub.batches(device)])
        by_seq = {b.seq: b for b in sub.batches(device)}
        during = [s for s in arrived if t_down <= by_seq[s].ts <= t_up]
        assert len(during) >= outage_s / INTERVAL_S - 3, f"{device}: only {len(during)} polls during the outage"
        assert during == sorted(during), f"{device}: the outage arrived out of order"
        assert all(p.quality == "good" for p in by_seq[during[0]].points.values())
    assert "Traceback" not in agent.output()


def test_kill_9_during_an_outage_loses_no_spooled_batch(mosquitto: Mosquitto, tmp_path: Path) -> None:
    spool = tmp_path / "spool.sqlite"
    sub = Subscriber(mosquitto.host, mosquitto.port, persistent=True, client_id="collector-test").start()
    with simulators("pump-modbus") as (pump,):
        devices: list[dict[str, object]] = [
            {"id": "pump-1", "model": "pump-modbus", "port": pump.port, "interval_s": INTERVAL_S},
        ]
        config = write_config(tmp_path / "agent.toml", base_sections(tmp_path, mosquitto.url), devices)
        agent = start_agent(config, tmp_path / "agent.log")
        try:
            sub.wait_for(lambda _r: len(sub.batches("pump-1")) >= 3, what="live batches")
            mosquitto.stop()
            _wait(lambda: len(_spool_rows(spool)) >= 15, "15 batches in the spool")
            agent.kill()
            spooled = _spool_rows(spool)
            assert len(spooled) >= 15
            mosquitto.start()
            agent = start_agent(config, tmp_path / "agent.log")
            sub.wait_for(lambda _r: set(spooled) <= {b.seq for b in sub.batches()}, what="the spooled batches")
            sub.wait_for(
                lambda _r: _contiguous_from_one(sub) and max(b.seq for b in sub.batches()) > max(spooled),
                what="live batches after the restart",
            )
            # Killed while the broker is up: the broker publishes the retained last will.
            seen = len(sub.statuses())  # the restarted agent's "online" is among them
            agent.kill()
            sub.wait_for(lambda _r: any(s.state == "offline" for s in sub.statuses()[seen:]), what="the last will")
        finally:
            agent.kill()
            sub.stop()
    seqs = {b.seq for b in sub.batches()}
    assert sorted(seqs) == list(range(1, max(seqs) + 1))
    # The restarted agent went on numbering where the killed one stopped.
    assert max(seqs) > max(spooled)
    states = [s.state for s in sub.statuses()]
    assert "online" in states[:seen]
    assert states[-1] == "offline"


@pytest.mark.parametrize("policy", ["drop-oldest", "drop-newest"])
def test_a_full_spool_applies_its_policy_and_publishes_the_drop_count(
    mosquitto: Mosquitto, tmp_path: Path, policy: str
) -> None:
    spool = tmp_path / "spool.sqlite"
    sub = Subscriber(mosquitto.host, mosquitto.port, persistent=True, client_id="collector-test").start()
    with simulators("meter-sdm630") as (meter,):
        devices: list[dict[str, object]] = [
            {"id": "meter-1", "model": "meter-sdm630", "port": meter.port, "interval_s": 0.1},
        ]
        sections = base_sections(tmp_path, mosquitto.url, spool={"max_mb": 0.03, "when_full": policy})
        config = write_config(tmp_path / "agent.toml", sections, devices)
        mosquitto.stop()
        agent = start_agent(config, tmp_path / "agent.log")
        try:
            _wait(lambda: _spool_dropped(spool) >= 20, "20 drops")
            mosquitto.start()

            def reported() -> list[telemetry.Batch]:
                return [b for b in sub.batches("agent") if b.points]

            def drained(_r: object) -> bool:
                return any(b.points["spool_depth"].value == 0 and b.points["spool_dropped"].value for b in reported())

            sub.wait_for(drained, what="a health batch after the spool drained")
            assert agent.terminate() == 0, agent.output()
        finally:
            agent.kill()
            sub.stop()
    health = reported()
    drops = max(int(b.points["spool_dropped"].value or 0) for b in health)
    assert drops >= 20
    key = "spool_dropped_oldest" if policy == "drop-oldest" else "spool_dropped_newest"
    assert max(int(b.points[key].value or 0) for b in health) == drops
    seqs = {b.seq for b in sub.batches()}
    missing = [s for s in range(1, max(seqs) + 1) if s not in seqs]
    assert len(missing) == drops, "every dropped batch is counted, and nothing else is missing"
    if policy == "drop-oldest":
        assert 1 in missing  # the oldest went first
    else:
        assert 1 in seqs  # the oldest were kept
        assert min(missing) > 1
