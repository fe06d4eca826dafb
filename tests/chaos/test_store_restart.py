"""The whole chain (agent, Mosquitto, collector, InfluxDB) while InfluxDB restarts: every batch is stored once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from collector.store import ts_ns
from models import catalog
from tests.agent.agent_helpers import Subscriber, base_sections, simulators, write_config
from tests.chaos.helpers import all_seqs, count, missing, start_agent, wait
from tests.collector.conftest import CollectorProcess, influx_rows, influx_store, persistent_conf
from tests.collector.conftest import write_config as collector_config
from tests.support import servers

pytestmark = [pytest.mark.chaos, pytest.mark.servers, pytest.mark.timeout(240)]

DEVICES = {
    device: (model, catalog.load(model).kind.value, catalog.load(model).points[0].name)
    for device, model in (("meter-1", "meter-sdm630"), ("pump-1", "pump-modbus"))
}


def _stored(influx: servers.InfluxDB) -> Counter[tuple[str, int]]:
    """(device, read time in ns) of every stored row of the polled devices."""
    rows: Counter[tuple[str, int]] = Counter()
    for device, (_model, kind, field) in DEVICES.items():
        q = f'SELECT "{field}" FROM "{kind}" WHERE "device" = \'{device}\''  # noqa: S608
        rows.update((device, int(r["time"])) for r in influx_rows(influx, q))
    return rows


def test_influxdb_restarts_under_a_running_chain(mosquitto_bin: str, influxd_bin: str, tmp_path: Path) -> None:
    broker = servers.start_mosquitto(mosquitto_bin, tmp_path / "broker", extra_conf=persistent_conf())
    influx = servers.start_influxdb(influxd_bin, tmp_path / "influxdb")
    collector = CollectorProcess(collector_config(tmp_path / "collector.toml", broker, influx_store(influx)), tmp_path)
    witness = Subscriber(broker.host, broker.port, persistent=True, client_id="chaos-witness").start()
    clog = tmp_path / "collector.log"
    try:
        collector.start()
        with simulators(*(m for m, _k, _f in DEVICES.values())) as sims:
            devices: list[dict[str, object]] = [
                {"id": d, "model": m, "port": sim.port, "interval_s": 0.2}
                for (d, (m, _k, _f)), sim in zip(DEVICES.items(), sims, strict=True)
            ]
            agent = start_agent(
                write_config(tmp_path / "agent.toml", base_sections(tmp_path, broker.url), devices),
                tmp_path / "agent.log",
            )
            try:
                wait(lambda: sum(_stored(influx).values()) >= 10, "the first stored rows")
                influx.stop()
                wait(lambda: count(clog, "store unavailable") >= 1, "the outage in the collector's log")
                n = len(witness.batches("meter-1"))
                witness.wait_for(lambda _r: len(witness.batches("meter-1")) >= n + 10, what="polls during the outage")
                influx.start()
                wait(lambda: count(clog, "store available again") >= 1, "the store back in the collector's log")
                n = len(witness.batches("meter-1"))
                witness.wait_for(lambda _r: len(witness.batches("meter-1")) >= n + 5, what="polls after the outage")
                assert agent.terminate() == 0, agent.output()
            finally:
                agent.kill()
        witness.wait_for(lambda _r: not missing(all_seqs(witness)), what="every sequence number at the broker")
        published = Counter((b.device, ts_ns(b.ts)) for b in witness.batches() if b.device in DEVICES)
        wait(lambda: set(_stored(influx)) >= set(published), "every published batch in InfluxDB", 90)
        stored = _stored(influx)
        assert collector.stop() == 0
    finally:
        if collector.proc is not None:
            collector.kill()
        witness.stop()
        influx.stop()
        broker.stop()
    # Every batch the agent published is stored exactly once (replays are the same row), nothing else.
    assert set(stored) == set(published)
    assert all(n == 1 for n in stored.values())
    text = clog.read_text(errors="replace")
    assert f"{influx.host}:{influx.port}" in next(line for line in text.splitlines() if "store unavailable" in line)
    assert "Traceback" not in text
