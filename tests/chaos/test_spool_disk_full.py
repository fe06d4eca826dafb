"""A spool whose disk fills up while the broker is away: the agent says so, keeps polling, and recovers."""

from __future__ import annotations

import re
import resource
from pathlib import Path

import pytest

from agent.health import HEALTH_DEVICE
from tests.agent.agent_helpers import Subscriber, base_sections, simulators, write_config
from tests.chaos.helpers import all_seqs, count, good, missing, start_agent, wait
from tests.support import servers
from tests.support.servers import free_port

pytestmark = [pytest.mark.chaos, pytest.mark.servers, pytest.mark.timeout(180)]

FILE_LIMIT_BYTES = 256 * 1024  # every file the agent writes may grow to this: the spool's disk is "full"
FULL = "could not spool the batch"


def _spool_failed(sub: Subscriber) -> float:
    """The largest spool_failed the agent's health batches have reported so far."""
    seen = [b.points["spool_failed"].value for b in sub.batches(HEALTH_DEVICE) if "spool_failed" in b.points]
    return max((float(v) for v in seen if isinstance(v, int | float)), default=0.0)


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT_BYTES, resource.RLIM_INFINITY))


def test_a_full_disk_under_the_spool(mosquitto_bin: str, tmp_path: Path) -> None:
    port = free_port()  # the broker's port: nobody listens there yet
    log = tmp_path / "agent.log"
    with simulators("meter-sdm630") as (meter,):
        devices: list[dict[str, object]] = [
            {"id": "meter-1", "model": "meter-sdm630", "port": meter.port, "interval_s": 0.05},
        ]
        sections = base_sections(tmp_path, f"mqtt://127.0.0.1:{port}", spool={"max_mb": 64})
        agent = start_agent(write_config(tmp_path / "agent.toml", sections, devices), log, preexec=_limit_file_size)
        broker = None
        sub = None
        try:
            wait(lambda: count(log, FULL) >= 3, "the spool's write errors in the log")
            assert agent.proc.poll() is None, "the agent died of a full disk"
            # Space is freed and the broker comes: what was spooled goes out, polling goes on.
            resource.prlimit(agent.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            broker = servers.start_mosquitto(mosquitto_bin, tmp_path / "broker", port=port)
            sub = Subscriber(broker.host, broker.port, persistent=True, client_id="chaos-collector").start()
            failures = count(log, FULL)
            sub.wait_for(lambda _r: len([b for b in sub.batches("meter-1") if good(b)]) >= 20, what="batches")
            # The agent's health counts the batches it could not spool (they are lost, not dropped).
            sub.wait_for(lambda _r: _spool_failed(sub) >= 3, what="spool_failed in the agent's health")
            assert agent.terminate() == 0, agent.output()
            sub.wait_for(lambda _r: not missing(all_seqs(sub)), what="every sequence number")
            assert count(log, FULL) == failures, "spooling failed again after space was freed"
        finally:
            agent.kill()
            if sub is not None:
                sub.stop()
            if broker is not None:
                broker.stop()
    text = log.read_text(errors="replace")
    # The error names the device and says why; nothing that was spooled is lost.
    spool = tmp_path / "spool.sqlite"
    said = re.compile(rf"device meter-1: could not spool the batch in {re.escape(str(spool))} \(\d+ lost so far\): ")
    named = [line for line in text.splitlines() if said.search(line)]
    assert named, text[-3000:]
    assert all(line.endswith(("database or disk is full", "disk I/O error")) for line in named), named[:3]
    assert "cannot rollback" not in text
    seqs = all_seqs(sub)
    assert seqs
    assert not missing(seqs)
