"""The agent behind a TCP proxy that resets, partitions and loses its broker: every batch arrives, in order."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from tests.agent.agent_helpers import Subscriber, base_sections, simulators, unique_in_order, write_config
from tests.chaos.helpers import all_seqs, count, missing, start_agent, wait
from tests.chaos.proxy import Proxy
from tests.collector.conftest import persistent_conf
from tests.support import servers

pytestmark = [pytest.mark.chaos, pytest.mark.servers, pytest.mark.timeout(180)]

INTERVAL_S = 0.2


def test_resets_a_partition_and_a_broker_restart_lose_nothing(  # noqa: PLR0915  (one scenario, in order)
    mosquitto_bin: str, tmp_path: Path
) -> None:
    broker = servers.start_mosquitto(mosquitto_bin, tmp_path / "broker", extra_conf=persistent_conf())
    proxy = Proxy(broker.port).start()
    sub = Subscriber(broker.host, broker.port, persistent=True, client_id="chaos-collector").start()
    log = tmp_path / "agent.log"
    lost_line = f"mqtt connection to 127.0.0.1:{proxy.port} lost"
    connected_line = f"mqtt connected to 127.0.0.1:{proxy.port}"
    try:
        with simulators("meter-sdm630", "pump-modbus") as (meter, pump):
            devices: list[dict[str, object]] = [
                {"id": "meter-1", "model": "meter-sdm630", "port": meter.port, "interval_s": INTERVAL_S},
                {"id": "pump-1", "model": "pump-modbus", "port": pump.port, "interval_s": INTERVAL_S},
            ]
            sections = base_sections(tmp_path, f"mqtt://127.0.0.1:{proxy.port}")
            agent = start_agent(write_config(tmp_path / "agent.toml", sections, devices), log)
            try:

                def more_batches(k: int) -> None:
                    n = len(sub.batches("meter-1"))
                    sub.wait_for(lambda _r: len(sub.batches("meter-1")) >= n + k, what=f"{k} more batches")

                more_batches(5)
                # Two resets in a row: the agent reconnects at once and resends what was unacknowledged.
                for i in (1, 2):
                    assert proxy.cut() >= 2  # the agent's side and the broker's side
                    wait(functools.partial(lambda n: count(log, lost_line) >= n, i), f"reset {i} in the agent's log")
                    more_batches(5)
                # A partition: bytes stop moving both ways, new connections are refused. The agent
                # notices by its keepalive, spools meanwhile and reconnects once the link heals.
                before, connects = count(log, lost_line), count(log, connected_line)
                proxy.stall()
                wait(lambda: count(log, lost_line) > before, "the partition noticed by the keepalive", 60)
                stalled_at = max(all_seqs(sub))
                proxy.heal()
                wait(lambda: count(log, connected_line) > connects, "a new connection after the partition")
                more_batches(5)
                # The broker itself restarts (its sessions persist; the proxy stays).
                before, connects = count(log, lost_line), count(log, connected_line)
                broker.stop()
                wait(lambda: count(log, lost_line) > before, "the broker restart in the agent's log")
                broker.start()
                wait(lambda: count(log, connected_line) > connects, "a new connection after the restart")
                more_batches(5)
                assert agent.terminate() == 0, agent.output()
            finally:
                agent.kill()
        sub.wait_for(lambda _r: not missing(all_seqs(sub)), what="every sequence number", timeout_s=60)
    finally:
        sub.stop()
        proxy.stop()
        broker.stop()
    seqs = all_seqs(sub)
    assert not missing(seqs), f"lost batches: {missing(seqs)[:20]}"
    assert max(seqs) > stalled_at
    for device in ("meter-1", "pump-1"):
        # QoS 1 redelivery after a reset may overtake nothing it should not: sequence numbers follow
        # the read times, so the collector can tell replays from new reads.
        by_seq = {b.seq: b.ts for b in sub.batches(device)}
        times = [by_seq[s] for s in sorted(by_seq)]
        assert times == sorted(times), f"{device}: sequence numbers out of step with read times"
        assert len(unique_in_order([b.seq for b in sub.batches(device)])) == len(by_seq)
    text = agent.output()
    assert count(log, lost_line) >= 4, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert proxy.connections >= 5  # one per (re)connection
