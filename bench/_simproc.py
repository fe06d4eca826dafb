"""A process serving many simulated Modbus devices (ports x unit ids) for the benchmarks.

    python bench/_simproc.py MODEL:PORTS:UNITS [MODEL:PORTS:UNITS ...]

Serves PORTS Modbus TCP servers on free loopback ports, each with unit ids 1..UNITS of
MODEL, and prints one JSON line {"ports": {MODEL: [port, ...]}} when ready. Then it reads
commands on stdin, one per line, answering each with one JSON line:

    counts   read requests received so far: {"PORT/UNIT": n, ...}
    reset    forget the counts
    cpu      this process's CPU seconds

and exits at end of input (or SIGTERM). Register images are rebuilt at most every
`--refresh-s` seconds per unit and range, so the simulator's own cost stays far below
the agent's: it is the agent that is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections import Counter

from models import catalog
from models.schema import DeviceModel, Register
from simulators.modbus import READ_FUNCTIONS, ModbusSimulator, SimDevice


class CachedDevice(SimDevice):
    """A SimDevice whose register ranges are recomputed at most every refresh_s seconds."""

    def __init__(self, model: DeviceModel, seed: int, refresh_s: float) -> None:
        super().__init__(model, seed)
        self.refresh_s = refresh_s
        self._cache: dict[tuple[Register, int, int], tuple[float, list[int]]] = {}

    def image(self, table: Register, start: int, count: int) -> list[int]:
        key = (table, start, count)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and now - hit[0] < self.refresh_s:
            return hit[1]
        regs = super().image(table, start, count)
        self._cache[key] = (now, regs)
        return regs


async def serve(
    specs: list[tuple[str, int, int]], refresh_s: float
) -> tuple[list[ModbusSimulator], dict[str, list[int]]]:
    """Start the simulators: PORTS servers per model, each with unit ids 1..UNITS."""
    sims: list[ModbusSimulator] = []
    ports: dict[str, list[int]] = {}
    seed = 0
    for model_id, n_ports, n_units in specs:
        model = catalog.load(model_id)
        for _ in range(n_ports):
            sim = ModbusSimulator(dict.fromkeys(range(1, n_units + 1), model))
            for unit in sim.units:
                seed += 1
                sim.units[unit] = CachedDevice(model, seed, refresh_s)
            await sim.start("127.0.0.1", 0)
            sims.append(sim)
            ports.setdefault(model_id, []).append(sim.port)
    return sims, ports


class Counts:
    """Read requests per 'PORT/UNIT', folded out of the simulators' request lists."""

    def __init__(self, sims: list[ModbusSimulator]) -> None:
        self.sims = sims
        self.counts: Counter[str] = Counter()

    def fold(self) -> None:
        for sim in self.sims:
            for r in sim.requests:
                if r.function in READ_FUNCTIONS:
                    self.counts[f"{sim.port}/{r.unit}"] += 1
            sim.requests.clear()

    async def folding(self) -> None:
        while True:
            await asyncio.sleep(0.5)  # bounds the simulators' request lists
            self.fold()


def out(obj: object) -> None:
    """One JSON line on stdout."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def commands(reader: asyncio.StreamReader, counts: Counts) -> None:
    """Answer commands from stdin until it ends."""
    while line := (await reader.readline()).decode().strip():
        if line == "counts":
            counts.fold()
            out(dict(counts.counts))
        elif line == "reset":
            counts.fold()
            counts.counts.clear()
            out({"ok": True})
        elif line == "cpu":
            t = os.times()
            out({"cpu_s": t.user + t.system})
        else:
            out({"error": f"unknown command {line!r}"})


async def main(specs: list[tuple[str, int, int]], refresh_s: float) -> int:
    """Serve until stdin ends or SIGTERM."""
    sims, ports = await serve(specs, refresh_s)
    counts = Counts(sims)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out({"ports": ports, "pid": os.getpid()})
    tasks = {asyncio.create_task(counts.folding()), asyncio.create_task(commands(reader, counts))}
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({*tasks, stopper}, return_when=asyncio.FIRST_COMPLETED)
    for task in (*tasks, stopper):
        task.cancel()
    for sim in sims:
        with contextlib.suppress(Exception):
            await sim.stop()
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("spec", nargs="+", help="MODEL:PORTS:UNITS")
    ap.add_argument("--refresh-s", type=float, default=30.0)
    args = ap.parse_args()
    parsed = []
    for s in args.spec:
        m, p, u = s.split(":")
        parsed.append((m, int(p), int(u)))
    sys.exit(asyncio.run(main(parsed, args.refresh_s)))
