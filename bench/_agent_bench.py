"""Benchmark: the agent's published points per second per core, requests per poll, memory at 1,000 and 10,000 devices.

Everything runs as separate processes on loopback: simulated Modbus devices (bench/_simproc.py:
a few processes serving many ports x unit ids), a Mosquitto broker, and ``dcim-agent run``
itself. The bench subscribes to the agent's telemetry and counts what was published.

- throughput: a fleet of devices polled every second; points delivered to the broker in a
  measuring window divided by the agent process's CPU seconds (user + system, from /proc)
  in the same window: points per second per core of agent CPU. A ratio of two counts made
  side by side, so it survives a noisy machine. Measured on a fleet of sensor gateways
  (gateway-nbiot, 116 points) and, in the full run, on a mix of every Modbus model of the
  catalog in equal numbers.
- requests: every Modbus model of the catalog, 200 devices each, polled for a few rounds;
  read requests counted by the simulators (the device side) divided by the batches the
  agent published, divided by the planner's minimum for the model. 1.0 is the minimum.
  The SNMP and BACnet models likewise, against the fewest requests a steady poll needs
  (bench/_protocol_requests.py).
- memory: peak resident memory (VmHWM) of the agent with 1,000 and with 10,000 devices,
  each polled at least once.

With ``--json`` the last line of stdout is one JSON object with the keys
points_per_s_per_core, requests_ratio_max, rss_mb_1000 and rss_mb_10000.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common as c
import _protocol_requests
import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent import modbus_plan
from models import catalog
from models.schema import DeviceModel

SITE, AGENT = "bench", "edge-01"
MODBUS_MODELS = ("gateway-nbiot", "meter-sdm630", "pump-modbus", "tower-modbus", "ups-apc-modbus")
UNITS_PER_PORT = 200  # Modbus unit ids behind one simulated gateway port (at most 247)
TARGET_POINTS_PER_S_PER_CORE = 50_000.0
TARGET_RSS_MB_1000 = 150.0
# Where a profile sample's time is counted: the nearest of these found from the innermost frame out.
AGENT_PARTS = (
    ("decoding (models: codec, values)", "models/"),
    ("Modbus client (pymodbus, its socket I/O)", "pymodbus/"),
    ("Modbus driver (plan, isolate, decode)", "agent/drivers/modbus.py"),
    ("spool (SQLite on its thread)", "agent/spool.py"),
    ("MQTT client (paho, its thread)", "paho/"),
    ("MQTT publisher bridge", "agent/publisher.py"),
    ("batch building (to_batch)", "agent/batch.py"),
    ("scheduler (apscheduler)", "apscheduler/"),
    ("runtime (poll, emit, health)", "agent/runtime.py"),
    ("asyncio and thread hand-offs", "asyncio/"),
    ("thread pool hand-offs", "concurrent/futures/"),
)


class _Header(msgspec.Struct):
    device: str
    seq: int
    points: dict[str, Any] = msgspec.field(default_factory=dict)


_DECODE = msgspec.json.Decoder(_Header)


# ---------------------------------------------------------------- simulated devices


@dataclass
class Farm:
    """One bench/_simproc.py process serving many simulated Modbus devices."""

    proc: subprocess.Popen[bytes]
    ports: dict[str, list[int]]
    reader: c.LineReader

    def ask(self, command: str) -> dict[str, Any]:
        """Send one command, read its one-line JSON answer."""
        assert self.proc.stdin is not None  # noqa: S101
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self.reader.line())
        return answer

    def counts(self) -> dict[str, int]:
        """Read requests per 'port/unit' since the last reset."""
        return {k: int(v) for k, v in self.ask("counts").items()}

    def stop(self) -> None:
        """End the process (end of input, then TERM)."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)  # it ends by itself at the end of its input
        c.stop(self.proc)


def start_farm(specs: list[tuple[str, int, int]]) -> Farm:
    """Serve MODEL on PORTS ports with UNITS unit ids each, from one process."""
    args = [f"{m}:{p}:{u}" for m, p, u in specs]
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("_simproc.py")), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None  # noqa: S101
    reader = c.LineReader(proc.stdout)
    ready = json.loads(reader.line(120.0))
    return Farm(proc, {k: list(v) for k, v in ready["ports"].items()}, reader)


@dataclass(frozen=True)
class Dev:
    """One configured device: id, model, simulator port and unit id."""

    id: str
    model: str
    port: int
    unit: int


def fleet(farms: list[Farm], per_model: int) -> list[Dev]:
    """per_model devices of each model the farms serve, filling each port's unit ids in turn."""
    devices: list[Dev] = []
    for farm in farms:
        for model, ports in farm.ports.items():
            n = 0
            for port in ports:
                for unit in range(1, UNITS_PER_PORT + 1):
                    if n == per_model:
                        break
                    devices.append(Dev(f"{model}-{port}-{unit}", model, port, unit))
                    n += 1
    return devices


# ---------------------------------------------------------------- the agent


def write_config(path: Path, broker_port: int, devices: list[Dev], interval_s: float) -> Path:
    """An agent configuration for the fleet (spool and logs beside it)."""
    lines: list[str] = []
    for d in devices:
        lines += ["[[devices]]", f'id = "{d.id}"', f'model = "{d.model}"', f"port = {d.port}"]
        lines += [f"modbus = {{ unit = {d.unit} }}", ""]
    return write_config_lines(path, broker_port, interval_s, lines)


def write_config_lines(path: Path, broker_port: int, interval_s: float, device_lines: list[str]) -> Path:
    """An agent configuration with these [[devices]] tables (spool and logs beside it)."""
    lines = [
        "[agent]",
        f'id = "{AGENT}"',
        f'site = "{SITE}"',
        'log_level = "warning"',
        "health_interval_s = 30",
        "",
        "[mqtt]",
        f'url = "mqtt://127.0.0.1:{broker_port}"',
        "inflight_max = 1000",
        "",
        "[spool]",
        f'path = "{path.parent / "spool.sqlite"}"',
        "",
        "[commands]",
        f'audit_log = "{path.parent / "audit.jsonl"}"',
        "",
        "[defaults]",
        f"interval_s = {interval_s}",
        "timeout_s = 5.0",
        "",
        *device_lines,
    ]
    path.write_text("\n".join(lines))
    return path


@dataclass
class Agent:
    """A `dcim-agent run` process."""

    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        """SIGTERM: the agent finishes running polls and flushes the spool."""
        c.stop(self.proc, timeout_s=60)

    def stat(self) -> c.ProcStat:
        """CPU and memory now."""
        return c.proc_stat(self.proc.pid)


def start_agent(config: Path) -> Agent:
    """Start the agent on a configuration."""
    log = config.with_suffix(".log")
    proc = subprocess.Popen(
        [str(c.VENV_BIN / "dcim-agent"), "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        start_new_session=True,
    )
    return Agent(proc, log)


# ---------------------------------------------------------------- counting what arrives


@dataclass
class Tally:
    """Telemetry counted as it arrives at the broker (a subscriber on its own thread)."""

    port: int
    client_id: str
    messages: int = 0
    points: int = 0
    good: int = 0
    by_device: Counter[str] = field(default_factory=Counter)
    seqs: set[int] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ready: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Tally:
        """Connect and subscribe (QoS 1) to the agent's telemetry."""
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True)
        self.client.on_connect = lambda cl, *_a: cl.subscribe(f"dcim/v1/{SITE}/{AGENT}/+/telemetry", qos=1)
        self.client.on_subscribe = lambda *_a: self._ready.set()
        self.client.on_message = self._message
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        if not self._ready.wait(c.STARTUP_S):
            raise RuntimeError("the bench subscriber could not subscribe")
        return self

    def _message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        head = _DECODE.decode(msg.payload)
        if head.device == "agent":  # the agent's own health: numbered like the rest
            with self.lock:
                self.seqs.add(head.seq)
            return
        good = sum(1 for p in head.points.values() if p.get("quality", "good") == "good")
        with self.lock:
            self.messages += 1
            self.points += len(head.points)
            self.good += good
            self.by_device[head.device] += 1
            self.seqs.add(head.seq)

    def snapshot(self) -> tuple[int, int, int]:
        """(messages, points, good points) so far."""
        with self.lock:
            return self.messages, self.points, self.good

    def wait_for(self, devices: int, timeout_s: float) -> bool:
        """Until every one of `devices` devices has published at least once."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.by_device) >= devices:
                    return True
            time.sleep(0.2)  # polling a counter another thread updates
        return False

    def stop(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


def settle(tally: Tally, quiet_s: float = 1.0, timeout_s: float = 30.0) -> None:
    """Wait until no message has arrived for quiet_s (the agent has stopped and flushed)."""
    deadline = time.monotonic() + timeout_s
    last = tally.snapshot()[0]
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)  # polling a counter
        now = tally.snapshot()[0]
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return


# ---------------------------------------------------------------- the measurements


@dataclass
class Throughput:
    """One throughput run."""

    name: str
    devices: int
    offered_points_per_s: float
    points_per_s: float
    agent_cores: float
    points_per_s_per_core: float
    lost: int


def throughput(
    work: Path,
    broker: c.Server,
    models: tuple[str, ...],
    *,
    per_model: int,
    interval_s: float,
    window_s: float,
    profile: Path | None = None,
) -> Throughput:
    """Poll a fleet every interval_s; points delivered per CPU second of the agent in a window.

    With `profile`, py-spy then records the agent for another window (after the measurement,
    so that sampling does not weigh on the figures).
    """
    ports = -(-per_model // UNITS_PER_PORT)
    farm = start_farm([(m, ports, UNITS_PER_PORT) for m in models])
    tally = Tally(broker.port, f"bench-{work.name}").start()
    devices = fleet([farm], per_model)
    offered = sum(len(catalog.load(d.model).points) for d in devices) / interval_s
    agent = start_agent(write_config(work / "agent.toml", broker.port, devices, interval_s))
    with c.cleanup(farm, tally, agent):
        if not tally.wait_for(len(devices), 60 + 2 * interval_s):
            raise RuntimeError(f"not every device published; see {agent.log}")
        s0, (_, p0, _) = agent.stat(), tally.snapshot()
        time.sleep(window_s)  # the measuring window
        s1, (_, p1, _) = agent.stat(), tally.snapshot()
        if profile is not None:
            spy = c.start_profiler(agent.proc.pid, profile)
            time.sleep(window_s)  # the profiling window
            c.stop_profiler(spy)
        agent.stop()
        settle(tally)
        seqs = tally.seqs
        lost = (max(seqs) - min(seqs) + 1 - len(seqs)) if seqs else 0
    cpu = s1.cpu_s - s0.cpu_s
    wall = s1.wall - s0.wall
    points = p1 - p0
    name = models[0] if len(models) == 1 else "catalog mix"
    return Throughput(name, len(devices), offered, points / wall, cpu / wall, points / cpu if cpu else 0.0, lost)


@dataclass
class Fleet:
    """A memory (and request-count) run."""

    devices: int
    interval_s: float
    rss_mb: float
    peak_mb: float
    ratios: dict[str, float]
    lost: int


def minimum_reads(model: DeviceModel) -> int:
    """The planner's minimum number of reads for one poll of the model (its own [modbus] limits)."""
    opts = model.modbus
    limits = modbus_plan.Limits(
        max_registers=int(opts.get("max_registers", 125)),
        max_bits=int(opts.get("max_bits", 2000)),
        max_gap=int(opts.get("max_gap", 16)),
    )
    return modbus_plan.reads_for(model.points, limits)


def spooled(path: Path) -> Counter[str]:
    """Telemetry batches left in an agent's spool, by device."""
    if not path.exists():
        return Counter()
    db = sqlite3.connect(path, timeout=10)
    try:
        topics = [str(row[0]) for row in db.execute("SELECT topic FROM batches")]
    finally:
        db.close()
    return Counter(t.split("/")[4] for t in topics if t.endswith("/telemetry") and t.count("/") == 5)


def memory(work: Path, broker: c.Server, n_devices: int, interval_s: float, rounds: float) -> Fleet:
    """n_devices (every Modbus model in equal numbers) polled for `rounds` intervals: RSS and requests per poll."""
    per_model = n_devices // len(MODBUS_MODELS)
    ports = -(-per_model // UNITS_PER_PORT)
    farms = [start_farm([(m, ports, UNITS_PER_PORT)]) for m in MODBUS_MODELS]
    tally = Tally(broker.port, f"bench-{work.name}").start()
    devices = fleet(farms, per_model)
    agent = start_agent(write_config(work / "agent.toml", broker.port, devices, interval_s))
    with c.cleanup(*farms, tally, agent):
        if not tally.wait_for(len(devices), 120 + 2 * interval_s):
            raise RuntimeError(f"not every device published; see {agent.log}")
        time.sleep(max(0.0, rounds - 1) * interval_s)  # more rounds, for the request counts
        stat = agent.stat()
        agent.stop()
        settle(tally)
        counts: dict[str, int] = {}
        for farm in farms:
            counts.update(farm.counts())
        seqs = tally.seqs
        lost = (max(seqs) - min(seqs) + 1 - len(seqs)) if seqs else 0
    left = spooled(work / "spool.sqlite")  # polled, not yet delivered when the agent stopped
    requests: Counter[str] = Counter()
    polls: Counter[str] = Counter()
    for d in devices:
        requests[d.model] += counts.get(f"{d.port}/{d.unit}", 0)
        polls[d.model] += tally.by_device[d.id] + left[d.id]
    ratios = {m: requests[m] / polls[m] / minimum_reads(catalog.load(m)) for m in polls if polls[m]}
    return Fleet(len(devices), interval_s, stat.rss_mb, stat.hwm_mb, ratios, lost)


def main() -> int:  # noqa: PLR0915  (one run, one report)
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--profile", type=Path, metavar="FILE", help="record the agent with py-spy (raw stacks) here")
    args = p.parse_args()
    quick = args.quick
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp, c.cleanup() as stack:
        root = Path(tmp)
        broker = c.start_mosquitto(root / "mosquitto")
        stack.append(broker)
        runs: list[Throughput] = []
        c.say("throughput: sensor gateways ...")
        (root / "gw").mkdir()
        gateways = 150 if quick else 200
        window = 6.0 if quick else 20.0
        runs.append(
            throughput(
                root / "gw",
                broker,
                ("gateway-nbiot",),
                per_model=gateways,
                interval_s=1.0,
                window_s=window,
                profile=args.profile,
            )
        )
        if not quick:
            c.say("throughput: catalog mix ...")
            (root / "mix").mkdir()
            runs.append(throughput(root / "mix", broker, MODBUS_MODELS, per_model=60, interval_s=1.0, window_s=20.0))
        c.say("1,000 devices ...")
        (root / "k1").mkdir()
        k1 = memory(root / "k1", broker, 1000, 5.0, 2 if quick else 3)
        k10: Fleet | None = None
        if not quick:  # polling 10,000 devices once takes a minute at 60 s intervals
            c.say("10,000 devices ...")
            (root / "k10").mkdir()
            k10 = memory(root / "k10", broker, 10_000, 60.0, 1)
        c.say("SNMP and BACnet requests per poll ...")
        (root / "proto").mkdir()
        protocol = _protocol_requests.measure(
            root / "proto",
            lambda path, interval_s, lines: write_config_lines(path, broker.port, interval_s, lines),
            start_agent,
            lambda: c.free_port(socket.SOCK_DGRAM),
        )
    print(
        c.table(
            "Agent throughput (points delivered to Mosquitto per CPU second of the agent process)",
            [
                (
                    r.name,
                    r.devices,
                    r.offered_points_per_s,
                    r.points_per_s,
                    r.agent_cores,
                    r.points_per_s_per_core,
                    r.lost,
                )
                for r in runs
            ],
            ("fleet", "devices", "offered pts/s", "delivered pts/s", "agent cores", "pts/s per core", "lost"),
        )
    )
    print()
    fleets = [f for f in (k1, k10) if f is not None]
    ratios = {m: max(f.ratios.get(m, 0.0) for f in fleets) for m in MODBUS_MODELS}
    print(
        c.table(
            "Modbus requests per poll (counted by the simulated devices) against the planner's minimum",
            [
                (m, minimum_reads(catalog.load(m)), *(f"{f.ratios.get(m, 0.0):.4f}" for f in fleets))
                for m in MODBUS_MODELS
            ],
            ("model", "minimum reads", *(f"ratio ({f.devices:,} devices)" for f in fleets)),
        )
    )
    print()
    print(
        c.table(
            "SNMP and BACnet requests per steady poll (counted by the simulated devices) against the fewest",
            [(m, minimum, f"{ratio:.4f}") for m, (minimum, ratio) in sorted(protocol.items())],
            ("model", "fewest requests", "ratio"),
        )
    )
    ratios.update({m: ratio for m, (_, ratio) in protocol.items()})
    print()
    print(
        c.table(
            "Agent memory (resident set of the agent process, every device polled at least once)",
            [(f.devices, f.interval_s, f.rss_mb, f.peak_mb, f.lost) for f in fleets],
            ("devices", "interval s", "RSS MB at the end", "peak RSS MB", "lost"),
        )
    )
    headline = runs[0].points_per_s_per_core
    verdicts = [
        ("points/s per core >= 50,000", headline >= TARGET_POINTS_PER_S_PER_CORE),
        ("requests at the minimum", max(ratios.values()) <= 1.0 + 1e-9),
        ("< 150 MB at 1,000 devices", k1.peak_mb < TARGET_RSS_MB_1000),
        ("nothing lost", all(r.lost == 0 for r in runs) and all(f.lost == 0 for f in fleets)),
    ]
    print()
    print(c.table("Targets", [(name, "met" if ok else "MISSED") for name, ok in verdicts], ("target", "")))
    if args.profile is not None and args.profile.exists():
        print()
        where = f"Where the agent's CPU time goes, sensor gateways ({args.profile})"
        print(c.table(where, c.components(args.profile, AGENT_PARTS), ("component", "% of samples")))
        print()
        print(c.table("Top functions", c.top_frames(args.profile, 25), ("frame", "incl %", "own %")))
    result = {
        "points_per_s_per_core": round(headline, 1),
        "points_per_s_per_core_mix": round(runs[1].points_per_s_per_core, 1) if len(runs) > 1 else None,
        "requests_ratio_max": round(max(ratios.values()), 4),
        "rss_mb_1000": round(k1.peak_mb, 1),
        "rss_mb_10000": round(k10.peak_mb, 1) if k10 is not None else None,
        "lost": sum(r.lost for r in runs) + sum(f.lost for f in fleets),
        "quick": quick,
    }
    if args.json:
        c.emit_json(result)
    return 0
