"""SNMP and BACnet catalog models: requests per poll, counted by the simulated devices, against the fewest.

The Modbus models are measured in bench/_agent_bench.py (the planner's minimum). Here the
simulators run in this process, on a thread of their own; a real `dcim-agent run` polls them
every `interval_s`. Each simulated device records when each request came, so the requests
of one poll are the burst that arrives together (polls are an interval apart, a poll takes
milliseconds). The first poll of a device is left out: it learns the device (SNMP walks
each table once to find its rows; BACnet reads the device object and the units).

The fewest requests a steady poll needs:

- SNMP: every known object (scalars, and every cell of the tables whose rows the model
  names) in GETs of at most the device's `max_varbinds`, plus one GETBULK walk per table
  whose rows come and go (empty here: no alarms are raised).
- BACnet: the ReadPropertyMultiple requests the driver's own packer makes of the points'
  properties (present value and status flags) within the device's max APDU, leaving out
  the present values that change-of-value notifications keep fresh. Subscriptions to those
  notifications are not reads and are not counted.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from agent.config import BacnetOptions, SnmpOptions
from agent.drivers.bacnet import plan_batches
from models import catalog
from models.schema import DeviceModel, Protocol
from simulators.bacnet import DEFAULT_MAX_APDU, SimulatedDevice
from simulators.snmp import SnmpSimulator

SNMP_MODELS = tuple(m for m in catalog.catalog_ids() if catalog.load(m).protocol is Protocol.SNMP)
BACNET_MODELS = tuple(m for m in catalog.catalog_ids() if catalog.load(m).protocol is Protocol.BACNET)


class TimedCounter(Counter[str]):
    """A Counter that also notes when each count was made (monotonic seconds, key)."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[tuple[float, str]] = []

    def __setitem__(self, key: str, value: int) -> None:
        self.times.append((time.monotonic(), key))
        super().__setitem__(key, value)


def snmp_minimum(model: DeviceModel, max_varbinds: int = SnmpOptions().max_varbinds) -> int:
    """GETs for every known object, plus one walk per table whose rows are not named."""
    known = sum(1 for p in model.points if p.oid is not None)
    walks = 0
    for table in model.tables:
        if table.rows and not table.volatile:
            known += len(table.rows) * len(table.columns)
        else:
            walks += 1
    return math.ceil(known / max_varbinds) + walks


def bacnet_minimum(model: DeviceModel, covered: set[str] | None = None) -> int:
    """ReadPropertyMultiple requests the driver's packer makes for a steady poll."""
    grouped: dict[str, list[str]] = {}
    for point in model.points:
        obj = point.object
        if obj is None or (point.property == "present-value" and covered and obj in covered):
            continue
        props = grouped.setdefault(obj, [])
        for prop in (point.property, "status-flags") if point.property == "present-value" else (point.property,):
            if prop not in props:
                props.append(prop)
    if not grouped:
        return 0
    budget = min(int(model.bacnet.get("max_apdu", DEFAULT_MAX_APDU)), BacnetOptions.model_fields["max_apdu"].default)
    return len(plan_batches(list(grouped.items()), budget))


def bursts(times: Sequence[tuple[float, str]], gap_s: float, reads: tuple[str, ...] = ()) -> list[int]:
    """Requests per burst (requests closer than gap_s to the previous one belong to its burst)."""
    out: list[int] = []
    last = -math.inf
    for t, key in times:
        if reads and not key.startswith(reads):
            continue
        if t - last > gap_s:
            out.append(0)
        out[-1] += 1
        last = t
    return out


class Devices:
    """SNMP and BACnet simulators served from an event loop on a thread of this process."""

    def __init__(self, per_model: int) -> None:
        self.per_model = per_model
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bench-sims", daemon=True)
        self.snmp: list[tuple[str, SnmpSimulator, TimedCounter]] = []
        self.bacnet: list[tuple[str, SimulatedDevice, TimedCounter]] = []

    def _run(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout=60)

    def start(self, free_udp_port: Any) -> Devices:
        """Start per_model devices of every SNMP and BACnet catalog model."""
        self.thread.start()
        for model_id in SNMP_MODELS:
            for i in range(self.per_model):
                sim = SnmpSimulator(catalog.load(model_id), seed=i, speed=0.0)
                counter = TimedCounter()
                sim.requests = counter
                self._run(sim.start())
                self.snmp.append((f"{model_id}-{i}", sim, counter))
        for model_id in BACNET_MODELS:
            for i in range(self.per_model):
                dev = SimulatedDevice(catalog.load(model_id), port=free_udp_port(), seed=i)
                counter = TimedCounter()
                dev.traffic.requests = counter
                self._run(dev.start())
                self.bacnet.append((f"{model_id}-{i}", dev, counter))
        return self

    def config_lines(self) -> list[str]:
        """[[devices]] tables for an agent configuration."""
        lines: list[str] = []
        for dev_id, sim, _ in self.snmp:
            lines += ["[[devices]]", f'id = "{dev_id}"', f'model = "{sim.model.id}"', 'host = "127.0.0.1"']
            lines += [f"port = {sim.port}", 'snmp = { version = "2c", community = "public" }', ""]
        for dev_id, dev, _ in self.bacnet:
            lines += ["[[devices]]", f'id = "{dev_id}"', f'model = "{dev.model.id}"', 'host = "127.0.0.1"']
            lines += [f"port = {dev.port}", f"bacnet = {{ device_instance = {dev.instance} }}", ""]
        return lines

    def polls_seen(self, gap_s: float) -> int:
        """The fewest polls any device has answered so far."""
        counts = [len(bursts(list(c.times), gap_s)) for _, _, c in self.snmp]
        counts += [len(bursts(list(c.times), gap_s, ("read-property",))) for _, _, c in self.bacnet]
        return min(counts, default=0)

    def stop(self) -> None:
        """Stop every simulator and the loop."""
        for _, sim, _ in self.snmp:
            self._run(sim.stop())
        for _, dev, _ in self.bacnet:
            self.loop.call_soon_threadsafe(dev.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def ratios(devices: Devices, gap_s: float) -> dict[str, tuple[int, float]]:
    """Per model: (the fewest requests a steady poll needs, mean requests per steady poll / that)."""
    per_model: dict[str, list[int]] = {}
    minimum: dict[str, int] = {}
    for _, sim, counter in devices.snmp:
        per_model.setdefault(sim.model.id, []).extend(bursts(list(counter.times), gap_s)[1:])
        minimum[sim.model.id] = snmp_minimum(sim.model)
    for _, dev, counter in devices.bacnet:
        per_model.setdefault(dev.model.id, []).extend(bursts(list(counter.times), gap_s, ("read-property",))[1:])
        minimum[dev.model.id] = bacnet_minimum(dev.model)
    out: dict[str, tuple[int, float]] = {}
    for model_id, sizes in per_model.items():
        if sizes and minimum[model_id]:
            out[model_id] = (minimum[model_id], sum(sizes) / len(sizes) / minimum[model_id])
    return out


def measure(
    work: Path, write_config: Any, start_agent: Any, free_udp_port: Any, *, per_model: int = 3, rounds: int = 5
) -> dict[str, tuple[int, float]]:
    """Serve the devices, let an agent poll them `rounds` times after its first poll, and count."""
    interval_s = 2.0
    gap_s = interval_s / 2
    devices = Devices(per_model).start(free_udp_port)
    try:
        config = write_config(work / "agent.toml", interval_s, devices.config_lines())
        agent = start_agent(config)
        try:
            deadline = time.monotonic() + 120 + rounds * interval_s * 2
            while devices.polls_seen(gap_s) < rounds + 1:
                if time.monotonic() > deadline or agent.proc.poll() is not None:
                    what = f"the SNMP and BACnet devices were not polled {rounds + 1} times"
                    raise RuntimeError(f"{what}; see {agent.log}")
                time.sleep(0.2)  # polling the simulators' counters
        finally:
            agent.stop()
        return ratios(devices, gap_s)
    finally:
        devices.stop()
