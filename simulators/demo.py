"""dcim-sim demo: the whole system on simulated hardware, a simulated day in a couple of minutes.

What runs, on one machine with nothing installed but Python:

- the demo site (``configs/sites/demo.toml``) served in this process on free
  loopback ports: Modbus TCP meters, UPS, tower, pumps and sensor gateway,
  SNMP UPS and PDUs, BACnet/IP chillers and air handlers;
- an embedded MQTT broker (amqtt) on a free loopback port, unless
  ``--mqtt-url`` names one;
- ``dcim-agent run`` and ``dcim-collector run --http`` as their own processes,
  with configurations generated into ``--out`` (the SQLite store goes there);
- the collector's chiller-plant optimiser, advisory for the first half of the
  day and closed loop for the second (the collector restarts with the new
  mode), after a compressed commissioning log of the plant has been replayed
  so that it has something to fit its models on;
- one mains failure, played slower than the rest of the day so that the
  agent's one-second polls see every UPS state;
- an untouched twin of the site's physics, stepped alongside, that shows what
  the plant would have drawn without the optimiser.

A live terminal dashboard (plain progress lines when standard output is not a
terminal) shows what the demo reads over MQTT, like any client could. At the
end :mod:`simulators.demo_report` runs the collector's reports and writes the
summary and the charts into ``--out``.

The demo imports neither the agent nor the collector: it starts them as
processes and reads what they publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from models import telemetry
from models.errors import ConfigError
from simulators import demo_config as cfg
from simulators.demo_report import summarise, summary_text
from simulators.demo_view import Observed, render, status_line
from simulators.physics import AcceleratedClock, SitePhysics
from simulators.site import Site

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2

MAX_SPEED: Final = 3600.0  # the site's clock accepts 1 to 3600
SCENARIO: Final = Path(__file__).resolve().parent.parent / "configs" / "sites" / "demo.toml"
OUTAGE_SHARE: Final = 0.3  # the mains failure starts this far into the run
OUTAGE_S: Final = 3600.0  # simulated seconds of mains failure in a whole day: well beyond the batteries (~22 min)
OUTAGE_WALL_SHARE: Final = 0.15  # share of the wall time the outage is played in
SWITCH_SHARE: Final = 0.5  # advisory -> closed loop
TICK_S: Final = 0.25  # wall seconds between dashboard updates
HISTORY_AHEAD: Final = 600  # commissioning batches published and not yet stored, at most
READY_TIMEOUT_S: Final = 90.0
STOP_TIMEOUT_S: Final = 20.0
ENERGY_KEYS: Final = ("it", "facility", "plant")


class DemoError(Exception):
    """The demo cannot go on; the message says what failed and where its log is."""


# ---------------------------------------------------------------- plan


@dataclass(frozen=True, slots=True)
class Plan:
    """How the simulated span maps onto wall time."""

    wall_s: float  # wall seconds of the simulated span (setup and reports come on top)
    span_s: float  # simulated seconds
    speed: float  # simulated seconds per wall second, outside the outage
    outage_at_s: float  # simulated seconds after the start
    outage_s: float
    outage_speed: float
    switch_at_s: float  # advisory -> closed loop


def make_plan(minutes: float, speed: float | None) -> Plan:
    """A simulated day in ``minutes`` of wall time; with ``speed``, ``speed`` x ``minutes`` (at most a week).

    The outage takes OUTAGE_WALL_SHARE of the wall time at its own (slower)
    speed; the rest runs at one speed. Where even 3600x cannot fit a day into
    the minutes, the span shrinks.
    """
    if not math.isfinite(minutes) or minutes <= 0:
        raise ValueError(f"--minutes {minutes:g}: must be more than 0")
    if speed is not None and not 1.0 <= speed <= MAX_SPEED:
        raise ValueError(f"--speed {speed:g}: must be between 1 and {MAX_SPEED:g}")
    wall = minutes * 60.0
    outage_wall = OUTAGE_WALL_SHARE * wall
    if speed is None:
        # The outage scales with the span: span = outage + speed x the rest, with speed at most MAX_SPEED.
        span = min(cfg.DAY_S, MAX_SPEED * (wall - outage_wall) / (1.0 - OUTAGE_S / cfg.DAY_S))
        outage_s = OUTAGE_S * span / cfg.DAY_S
        base = (span - outage_s) / (wall - outage_wall)
    else:
        base = speed
        outage_s = min(OUTAGE_S, 0.05 * speed * wall)
        span = min(7 * cfg.DAY_S, outage_s + speed * (wall - outage_wall))
    return Plan(
        wall_s=wall,
        span_s=span,
        speed=min(MAX_SPEED, max(1.0, base)),
        outage_at_s=OUTAGE_SHARE * span,
        outage_s=outage_s,
        outage_speed=min(MAX_SPEED, max(1.0, outage_s / outage_wall)),
        switch_at_s=SWITCH_SHARE * span,
    )


# ---------------------------------------------------------------- processes


def console_script(name: str, module: str) -> list[str]:
    """A console script of this environment, or ``python -m`` its module."""
    script = Path(sys.executable).parent / name
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", module]


def emit(text: str) -> None:
    """A line on standard output, flushed (progress lines must show as they happen)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def child_env() -> dict[str, str]:
    """The environment of the agent and the collector: one BLAS thread each.

    The demo shares a laptop's few cores among its own process, the agent and
    the collector; the optimiser's small least-squares fits are fastest on one
    thread and much slower when several processes' BLAS thread pools fight.
    """
    env = dict(os.environ)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(name, "1")
    return env


@dataclass
class Child:
    """A process the demo started and stops by its own PID."""

    name: str
    args: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it, appending its output to its log."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            out.write(f"\n==== {datetime.now(UTC).isoformat()} {' '.join(self.args)}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(  # noqa: S603  (our own console scripts)
                self.args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=child_env()
            )

    def running(self) -> bool:
        """Whether it is alive."""
        return self.proc is not None and self.proc.poll() is None

    def check(self) -> None:
        """DemoError when it has died."""
        if self.proc is not None and self.proc.poll() is not None:
            raise DemoError(f"{self.name} exited with {self.proc.returncode}; see {self.log}:\n{self.tail()}")

    def tail(self, lines: int = 15) -> str:
        """The end of its log."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; its exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s: killing it", self.name, timeout_s)
                proc.kill()
                proc.wait(timeout=timeout_s)
        return proc.returncode


def http_json(url: str, timeout_s: float = 5.0) -> Any:
    """GET a JSON document (from the collector's dashboard API, on loopback)."""
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310  (http on loopback)
        return json.loads(resp.read())


# ---------------------------------------------------------------- the run


@dataclass(frozen=True, slots=True)
class Sample:
    """One tick of the day: wall and simulated time, the site's and the twin's physics."""

    wall: float
    sim_s: float
    it_kw: float
    facility_kw: float
    plant_kw: float
    twin_it_kw: float
    twin_facility_kw: float
    twin_plant_kw: float
    chw_supply_sp: float
    cw_sp: float
    racks_down: int
    energy: dict[str, float]  # cumulative kWh: it, facility, plant, twin_it, twin_facility, twin_plant


@dataclass
class Marks:
    """Wall and simulated times of the day's milestones."""

    day_start_wall: float = 0.0
    day_start_sim: float = 0.0
    switch_wall: float | None = None
    end_wall: float = 0.0
    outage_wall: tuple[float, float] | None = None


class Demo:
    """One demo run: its site, broker, processes, what it observed, and its milestones."""

    def __init__(self, plan: Plan, out: Path, mqtt_url: str | None, console: Console) -> None:
        self.plan = plan
        self.out = out
        self.external_mqtt = mqtt_url
        self.console = console
        self.tty = console.is_terminal
        self.taken: set[tuple[int, int]] = set()
        self.loaded = cfg.demo_scenario(SCENARIO, self.taken)
        sc = self.loaded.scenario
        self.site_id = sc.site.id
        self.feeds = [m.id for m in sc.meters if m.measures == "feed"]
        self.plant_meters = [m.id for m in sc.meters if m.measures == "plant"]
        self.pdus = [p.id for p in sc.pdus]
        self.observed = Observed(self.site_id)
        self.samples: list[Sample] = []
        self.marks = Marks()
        self.broker: Any = None
        self.client: Any = None
        self.site: Site | None = None
        self.twin = SitePhysics(sc, self.loaded.models, base_dir=self.loaded.base_dir)
        self.mqtt_url = mqtt_url or ""
        self.http_port = cfg.free_port(socket.SOCK_STREAM, self.taken)
        logs = out / "logs"
        agent = console_script("dcim-agent", "agent.cli")
        self.agent = Child("dcim-agent", [*agent, "run", "--config", str(out / "agent.toml")], logs / "agent.log")
        http = ["--http", f"127.0.0.1:{self.http_port}"]
        self.collector = Child(
            "dcim-collector",
            [*self.collector_command(), "run", "--config", str(out / "collector.toml"), *http],
            logs / "collector.log",
        )
        self.optimizer_mode: str | None = None
        self.restarting = False
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[Any]] = []
        self.history: asyncio.Future[list[telemetry.Batch]] | None = None

    # ------------------------------------------------------------ small helpers

    @staticmethod
    def collector_command() -> list[str]:
        """How to run dcim-collector."""
        return console_script("dcim-collector", "collector.cli")

    @property
    def dashboard_url(self) -> str:
        """The collector's web dashboard."""
        return f"http://127.0.0.1:{self.http_port}/"

    def say(self, text: str) -> None:
        """A line for the user (plain print when standard output is not a terminal)."""
        if self.tty:
            self.console.print(text)
        else:
            emit(text)

    def sim_start(self) -> datetime:
        """The scenario's simulated start."""
        return self.loaded.scenario.site.start

    def sim_clock(self) -> str:
        """The simulated time, to the minute."""
        t = self.site.physics.t_s if self.site is not None else 0.0
        return (self.sim_start() + timedelta(seconds=t)).strftime("%Y-%m-%d %H:%M")

    def elapsed_s(self) -> float:
        """Simulated seconds since the day started."""
        return 0.0 if self.site is None else self.site.physics.t_s - self.marks.day_start_sim

    def speed(self) -> float:
        """The site's acceleration now."""
        clock = self.site.clock if self.site is not None else None
        return clock.speed if isinstance(clock, AcceleratedClock) else self.plan.speed

    # ------------------------------------------------------------ setup

    def start_history(self) -> None:
        """Generate the plant's commissioning log in a worker thread while the rest starts."""
        self.history = asyncio.ensure_future(asyncio.to_thread(cfg.commissioning_history, self.loaded, 0.0))

    async def start_broker(self) -> None:
        """The embedded broker on a free loopback port (unless --mqtt-url named one)."""
        if self.external_mqtt:
            return
        port = cfg.free_port(socket.SOCK_STREAM, self.taken)
        self.broker = cfg.EmbeddedBroker(cfg.broker_config(port))
        await self.broker.start()
        self.mqtt_url = f"mqtt://127.0.0.1:{port}"

    async def start_site(self) -> None:
        """Serve every device of the site from this process."""
        self.site = Site(self.loaded)
        await self.site.start()
        await self.site.start_control()
        self.tasks.append(asyncio.create_task(self.site.run(self.stop), name="site"))

    async def connect(self) -> None:
        """Subscribe to everything of the site, as any MQTT client could."""
        from amqtt.client import MQTTClient  # noqa: PLC0415  (amqtt's client loads its plugins on import)

        self.client = MQTTClient(client_id="dcim-demo-dashboard", config={"auto_reconnect": True, "keep_alive": 30})
        await asyncio.wait_for(self.client.connect(self.mqtt_url), timeout=15)
        await asyncio.wait_for(self.client.subscribe([(f"dcim/v1/{self.site_id}/#", 0)]), timeout=15)
        self.tasks.append(asyncio.create_task(self._receive(), name="mqtt"))

    async def _receive(self) -> None:
        while not self.stop.is_set():
            try:
                message = await self.client.deliver_message(timeout_duration=1.0)
            except TimeoutError:
                continue
            except Exception:  # the client reconnects by itself; what was missed is just not shown
                log.debug("demo: receive failed", exc_info=True)
                await asyncio.sleep(0.5)
                continue
            if message is not None:
                self.observed.on_message(message.topic, bytes(message.data or b""))

    def write_configs(self, optimizer: str | None) -> None:
        """agent.toml and collector.toml in the output folder (``optimizer``: its mode, or None for none)."""
        (self.out / "agent.toml").write_text(cfg.agent_toml(self.loaded, self.mqtt_url, self.out), encoding="utf-8")
        text = cfg.collector_toml(self.loaded, self.twin, self.mqtt_url, self.out, optimizer)
        (self.out / "collector.toml").write_text(text, encoding="utf-8")
        self.optimizer_mode = optimizer

    def optimizer_supported(self) -> bool:
        """Whether this collector takes an [optimizer] section (``check-config`` on a configuration with one)."""
        probe = self.out / "collector-optimizer-check.toml"
        text = cfg.collector_toml(self.loaded, self.twin, self.mqtt_url, self.out, "advisory")
        probe.write_text(text, encoding="utf-8")
        try:
            result = subprocess.run(  # noqa: S603  (our own console script)
                [*self.collector_command(), "check-config", "--config", str(probe)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        finally:
            probe.unlink(missing_ok=True)
        if result.returncode != 0:
            log.warning("demo: the collector takes no [optimizer]: %s", result.stderr.strip())
        return result.returncode == 0

    async def start_collector(self) -> None:
        """Start the collector; wait until its dashboard answers and its subscriptions are in place."""
        self.collector.start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            self.collector.check()
            with contextlib.suppress(OSError, ValueError):
                status = await asyncio.to_thread(http_json, self.dashboard_url + "api/status", 2.0)
                if status.get("mqtt_subscribed"):
                    return
            if time.monotonic() > deadline:
                raise DemoError(f"the collector was not ready within {READY_TIMEOUT_S:.0f} s; see {self.collector.log}")
            await asyncio.sleep(0.2)  # polling the collector's readiness

    async def restart_collector(self, mode: str) -> None:
        """Rewrite the optimiser's mode and restart the collector (the broker keeps its messages meanwhile)."""
        self.restarting = True
        try:
            await asyncio.to_thread(self.collector.stop)
            self.write_configs(mode)
            await self.start_collector()
        finally:
            self.restarting = False

    async def status(self) -> dict[str, Any]:
        """The collector's counters (its dashboard's /api/status); DemoError when it does not answer."""
        try:
            doc: dict[str, Any] = await asyncio.to_thread(http_json, self.dashboard_url + "api/status", 5.0)
        except (OSError, ValueError) as exc:
            self.collector.check()
            raise DemoError(f"the collector's dashboard did not answer: {exc}; see {self.collector.log}") from exc
        return doc

    async def written(self) -> int:
        """Messages the collector has written to its store since it started."""
        return int((await self.status()).get("written_messages", 0))

    async def _publish(self, batch: telemetry.Batch) -> None:
        topic = telemetry.telemetry_topic(batch.site, batch.agent, batch.device)
        await self.client.publish(topic, telemetry.encode(batch), qos=1)

    async def replay_history(self, progress: Callable[[int, int], None]) -> int:
        """Publish the commissioning log and wait until the collector has stored it; how many batches."""
        started = time.monotonic()
        if self.history is None:
            self.start_history()
        assert self.history is not None  # noqa: S101
        generated = await self.history  # started with the setup, stamped up to 0: shifted to end now
        offset = time.time() - 1.0
        batches = [msgspec.structs.replace(b, ts=b.ts + offset) for b in generated]
        total = len(batches)
        log.info("demo: %d commissioning batches ready after %.1f s", total, time.monotonic() - started)
        before = await self.written()
        deadline = time.monotonic() + 2 * READY_TIMEOUT_S
        sent = 0
        while True:
            done = await self.written() - before
            progress(min(done, total), total)
            if done >= total:
                log.info("demo: commissioning log stored in %.1f s", time.monotonic() - started)
                return total
            # Ahead of the collector by at most HISTORY_AHEAD: a broker's queue for a client is bounded
            # (Mosquitto drops beyond max_queued_messages, 1000 by default).
            chunk = batches[sent : min(total, done + HISTORY_AHEAD)]
            if chunk:
                await asyncio.gather(*(self._publish(b) for b in chunk))
                sent += len(chunk)
            else:
                self.collector.check()
                await asyncio.sleep(0.1)  # waiting for the collector's counter to move
            if time.monotonic() > deadline:
                raise DemoError(f"the collector stored {done} of {total} history batches; see {self.collector.log}")

    async def start_agent(self) -> None:
        """Start the agent; wait until every device has answered at least once."""
        self.agent.start()
        expected = {d.id for d in self.loaded.scenario.devices()}
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not expected <= {d for d, v in self.observed.devices.items() if v.good > 0}:
            self.agent.check()
            self.collector.check()
            if time.monotonic() > deadline:
                missing = ", ".join(sorted(expected - set(self.observed.devices)))
                raise DemoError(f"no readings from {missing} within {READY_TIMEOUT_S:.0f} s; see {self.agent.log}")
            await asyncio.sleep(0.2)  # waiting for the first readings over MQTT

    # ------------------------------------------------------------ the day

    def _sample(self) -> Sample:
        assert self.site is not None  # noqa: S101
        phys = self.site.physics
        twin = self.twin
        energy = {k: phys.energy[k] for k in ENERGY_KEYS} | {f"twin_{k}": twin.energy[k] for k in ENERGY_KEYS}
        return Sample(
            wall=time.time(),
            sim_s=phys.t_s,
            it_kw=phys.it_kw,
            facility_kw=phys.facility_kw,
            plant_kw=phys.plant_kw,
            twin_it_kw=twin.it_kw,
            twin_facility_kw=twin.facility_kw,
            twin_plant_kw=twin.plant_kw,
            chw_supply_sp=sum(c.setpoint_c for c in phys.chillers) / len(phys.chillers),
            cw_sp=sum(t.setpoint_c for t in phys.towers) / len(phys.towers),
            racks_down=sum(1 for r in phys.racks if r.power_kw <= 0.0),
            energy=energy,
        )

    def _check_processes(self) -> None:
        self.agent.check()
        if not self.restarting:
            self.collector.check()
        for task in self.tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise DemoError(f"{task.get_name()} failed: {task.exception()!r}")

    def _schedule_outage(self, t0: float) -> None:
        """The same mains failure in the served site and in its twin."""
        assert self.site is not None  # noqa: S101
        feeds = self.loaded.scenario.feeds
        target = feeds[0].id if len(feeds) == 1 else None  # None: every feed of a site with several
        at = t0 + self.plan.outage_at_s
        self.site.trigger("mains_failure", target, self.plan.outage_s, at_s=at)
        self.twin.schedule("mains_failure", target, at, self.plan.outage_s)

    def _outage(self, state: str, elapsed: float) -> str:
        """Slow the clock down for the mains failure and speed it up after; the outage's new state."""
        assert self.site is not None  # noqa: S101
        plan = self.plan
        if state == "ahead" and elapsed >= plan.outage_at_s - plan.speed * TICK_S:
            self.site.set_speed(plan.outage_speed)
            self.marks.outage_wall = (time.time(), time.time())
            text = f"mains failure for {plan.outage_s / 60:.0f} simulated minutes, at {plan.outage_speed:.0f}x"
            self.observed.event("critical", text)
            return "on"
        if state == "on" and elapsed >= plan.outage_at_s + plan.outage_s:
            self.site.set_speed(plan.speed)
            if self.marks.outage_wall is not None:
                self.marks.outage_wall = (self.marks.outage_wall[0], time.time())
            self.observed.event("info", f"mains restored; back to {plan.speed:.0f}x")
            return "over"
        return state

    def _switch(self) -> None:
        """Towards half time: the optimiser goes to closed loop (the collector restarts in the background)."""
        self.marks.switch_wall = time.time()
        if self.optimizer_mode is not None:
            self.observed.event("info", "optimiser to closed loop: the collector restarts with the new mode")
            self.tasks.append(asyncio.create_task(self.restart_collector("closed-loop"), name="restart"))

    async def run_day(self, live: Live | None) -> None:
        """The simulated span: its speeds, the outage, the switch to closed loop, the dashboard."""
        assert self.site is not None  # noqa: S101
        plan, site = self.plan, self.site
        t0 = site.physics.t_s
        self.twin.advance_to(t0)
        self._schedule_outage(t0)
        site.set_speed(plan.speed)
        self.marks.day_start_wall, self.marks.day_start_sim = time.time(), t0
        self.observed.event("info", f"the simulated day starts, at {plan.speed:.0f}x")
        outage, switched, last_line, ticks = "ahead", False, -1, 0
        while True:
            self._check_processes()
            self.twin.advance_to(site.physics.t_s)
            elapsed = site.physics.t_s - t0
            outage = self._outage(outage, elapsed)
            # The collector restarts one decision interval early: its first closed-loop decision comes
            # at least that long after it starts, so it falls in the second half, close to its start.
            if not switched and elapsed >= plan.switch_at_s - plan.speed * cfg.OPTIMIZER_INTERVAL_S:
                switched = True
                self._switch()
            self.samples.append(self._sample())
            if elapsed >= plan.span_s:
                break
            ticks += 1
            if live is not None:
                if ticks % 2 == 0:  # the dashboard redraws twice a second
                    live.update(render(self))
            elif int(10 * elapsed / plan.span_s) != last_line:
                last_line = int(10 * elapsed / plan.span_s)
                self.say(status_line(self))
            await asyncio.sleep(TICK_S)
        self.marks.end_wall = time.time()
        await self._past_the_end(t0 + plan.span_s)
        if live is not None:
            live.update(render(self))

    async def _past_the_end(self, end_sim: float) -> None:
        """Keep the clock and the polls going until every energy counter has a read past the end.

        So that the last half is measured to its end; a collector restart still under way finishes too.
        """
        assert self.site is not None  # noqa: S101
        deadline = time.monotonic() + READY_TIMEOUT_S / 3
        while self.restarting or (not self._counters_past(end_sim) and time.monotonic() < deadline):
            self._check_processes()
            await asyncio.sleep(TICK_S)
            self.twin.advance_to(self.site.physics.t_s)
            self.samples.append(self._sample())

    def energy_counters(self) -> list[str]:
        """The counters the PUE is measured from: feed meters, PDUs and plant meters (``device:point``)."""
        return [
            *(f"{m}:import_energy" for m in self.feeds),
            *(f"{p}:energy" for p in self.pdus),
            *(f"{m}:import_energy" for m in self.plant_meters),
        ]

    def _counters_past(self, end_sim: float) -> bool:
        """Whether every energy counter has been read at or after simulated time ``end_sim``."""
        for key in self.energy_counters():
            rows = self.observed.counters.get(key)
            if not rows or self.sim_times(np.array([rows[-1][0]]))[0] < end_sim:
                return False
        return True

    # ------------------------------------------------------------ the end

    async def drain(self) -> None:
        """Stop the agent and let the collector store what it has queued."""
        await asyncio.to_thread(self.agent.stop)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        last = -1
        while time.monotonic() < deadline:
            status = await self.status()
            written = int(status.get("written_messages", 0))
            if written == last and status.get("received_messages") == written:
                return
            last = written
            await asyncio.sleep(1.0)  # until the counters stop moving

    def sim_times(self, walls: FloatArray) -> FloatArray:
        """Simulated times of wall times (from the day's samples; the setup ran at 1x before them)."""
        s = self.samples
        w = np.array([x.wall for x in s], dtype=np.float64)
        t = np.array([x.sim_s for x in s], dtype=np.float64)
        out = np.interp(walls, w, t)
        before = walls < w[0]
        out[before] = t[0] - (w[0] - walls[before]) * cfg.SETUP_SPEED
        after = walls > w[-1]
        out[after] = t[-1] + (walls[after] - w[-1]) * self.plan.speed
        return out

    def energies(self, start_sim: float, end_sim: float) -> dict[str, float | None]:
        """Facility, IT and plant energy between two simulated times, from the counters received over MQTT."""

        def total(keys: Sequence[str]) -> float | None:
            parts = []
            for key in keys:
                a = self.observed.counter_at(key, start_sim, self.sim_times)
                b = self.observed.counter_at(key, end_sim, self.sim_times)
                if a is None or b is None:
                    return None
                parts.append(b - a)
            return float(sum(parts))

        return {
            "facility_kwh": total([f"{m}:import_energy" for m in self.feeds]),
            "it_kwh": total([f"{p}:energy" for p in self.pdus]),
            "plant_kwh": total([f"{m}:import_energy" for m in self.plant_meters]),
        }

    async def shutdown(self) -> None:
        """Stop everything the demo started, each by its own handle."""
        await asyncio.to_thread(self.agent.stop)
        await asyncio.to_thread(self.collector.stop)
        self.stop.set()
        if self.history is not None and not self.history.done():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self.history, timeout=30)
        for task in self.tasks:
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout=10)
        if self.site is not None:
            with contextlib.suppress(Exception):
                await self.site.stop()
        if self.client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.client.disconnect(), timeout=5)
        if self.broker is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.broker.shutdown(), timeout=10)


# ---------------------------------------------------------------- progress and the entry point


Step = Callable[[str, int | None], Callable[..., None]]


@contextlib.contextmanager
def steps(console: Console, tty: bool, label: str = "setup") -> Iterator[Step]:
    """Progress bars for setup steps (plain ``[setup] ...`` lines without a terminal)."""
    if not tty:

        def plain(description: str, total: int | None = None) -> Callable[..., None]:  # noqa: ARG001
            emit(f"[{label}] {description}")
            started = time.monotonic()

            def update(done: int = 0, of: int | None = None, *, finished: bool = False) -> None:  # noqa: ARG001
                if finished:
                    emit(f"[{label}] {description}: done in {time.monotonic() - started:.1f} s")

            return update

        yield plain
        return
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
    )
    with progress:

        def step(description: str, total: int | None = None) -> Callable[..., None]:
            task = progress.add_task(description, total=total or 1)

            def update(done: int = 0, of: int | None = None, *, finished: bool = False) -> None:
                if of is not None:
                    progress.update(task, total=of)
                progress.update(task, completed=(of or total or 1) if finished else done)

            return update

        yield step


async def _setup(demo: Demo) -> None:
    demo.start_history()
    with steps(demo.console, demo.tty) as step:
        broker = f"Using the MQTT broker at {demo.external_mqtt}" if demo.external_mqtt else "Starting the MQTT broker"
        done = step(broker, None)
        await demo.start_broker()
        done(finished=True)
        devices = len(demo.loaded.scenario.devices())
        done = step(f"Serving {devices} simulated devices (Modbus TCP, SNMP, BACnet/IP)", None)
        await demo.start_site()
        done(finished=True)
        done = step(f"Subscribing to dcim/v1/{demo.site_id}/# at {demo.mqtt_url}", None)
        await demo.connect()
        done(finished=True)
        done = step("Writing the agent's and the collector's configurations", None)
        supported = await asyncio.to_thread(demo.optimizer_supported)
        demo.write_configs(None)
        done(finished=True)
        done = step(f"Starting the collector (SQLite store, web dashboard {demo.dashboard_url})", None)
        await demo.start_collector()
        done(finished=True)
        if supported:
            done = step("Replaying two weeks of the plant's commissioning log for the optimiser", 100)
            total = await demo.replay_history(done)
            done(finished=True)
            log.info("demo: replayed %d commissioning batches", total)
            done = step("Restarting the collector with the optimiser in advisory mode", None)
            await demo.restart_collector("advisory")
            done(finished=True)
        done = step("Starting the agent; waiting for every device's first readings", None)
        await demo.start_agent()
        done(finished=True)
    if not supported:
        demo.say("This collector has no chiller-plant optimiser: the demo runs without it.")


async def _run(demo: Demo) -> int:
    try:
        await _setup(demo)
        if demo.tty:
            with Live(render(demo), console=demo.console, refresh_per_second=2) as live:
                await demo.run_day(live)
        else:
            demo.say(f"[day] the simulated day at {demo.plan.speed:.0f}x; web dashboard {demo.dashboard_url}")
            await demo.run_day(None)
        with steps(demo.console, demo.tty, "report") as step:
            done = step("Stopping the agent; the collector stores what it has queued", None)
            await demo.drain()
            done(finished=True)
            done = step("Running the collector's reports; writing the summary and the charts", None)
            summary = await asyncio.to_thread(summarise, demo)
            done(finished=True)
    finally:
        await demo.shutdown()
    out = demo.out
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    text = summary_text(summary, out)
    (out / "summary.md").write_text(text, encoding="utf-8")
    if demo.tty:
        from rich.markdown import Markdown  # noqa: PLC0415

        demo.console.print(Markdown(text))
    else:
        emit("\n" + text)
    failed = sorted(k for k, v in summary["reports"].items() if isinstance(v, dict) and "error" in v)
    missing = [k for k in ("before", "after") if summary[k]["pue"] is None]
    if failed or missing:
        demo.say(f"dcim-sim demo: incomplete: {', '.join(failed + [f'no PUE {k}' for k in missing])}")
        return EXIT_FAILED
    return EXIT_OK


def _quiet_logs(out: Path, verbose: bool) -> None:
    """Log lines go to out/logs/demo.log; the terminal shows the demo's own warnings only (all with -v)."""
    folder = out / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(folder / "demo.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if verbose:
        return
    for existing in root.handlers:
        if existing is not handler:
            existing.setLevel(logging.WARNING)
    # Libraries (an MQTT publish timing out while the collector restarts, ...) log to the file only.
    for name in ("amqtt", "transitions", "pysnmp", "bacpypes3", "pymodbus", "asyncio", "simulators.site"):
        library = logging.getLogger(name)
        library.propagate = False
        library.addHandler(handler)


def main(args: Any) -> int:
    """dcim-sim demo (``args``: minutes, speed, mqtt_url, out, verbose); the exit code."""
    try:
        plan = make_plan(float(args.minutes), None if args.speed is None else float(args.speed))
    except ValueError as exc:
        sys.stderr.write(f"dcim-sim demo: {exc}\n")
        return EXIT_USAGE
    if args.mqtt_url is not None and not str(args.mqtt_url).startswith("mqtt://"):
        sys.stderr.write(f"dcim-sim demo: --mqtt-url {args.mqtt_url!r}: expected mqtt://HOST:PORT\n")
        return EXIT_USAGE
    if not SCENARIO.is_file():
        sys.stderr.write(f"dcim-sim demo: the demo site {SCENARIO} is missing (run the demo from a source checkout)\n")
        return EXIT_USAGE
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("store.sqlite", "store.sqlite-wal", "store.sqlite-shm", "agent-spool.sqlite", "alarms.sqlite"):
        (out / stale).unlink(missing_ok=True)
    _quiet_logs(out, bool(getattr(args, "verbose", False)))
    console = Console()
    try:
        demo = Demo(plan, out, args.mqtt_url, console)
    except ConfigError as exc:
        sys.stderr.write(f"{exc}\n")
        return EXIT_USAGE
    demo.say(
        f"dcim-sim demo: site {demo.site_id}, {plan.span_s / 3600:.0f} simulated hours in about {plan.wall_s / 60:.1f} "
        f"minutes ({plan.speed:.0f}x; the mains failure at {plan.outage_speed:.0f}x); output in {out}"
    )
    try:
        return asyncio.run(_run(demo))
    except (DemoError, cfg.PortError) as exc:
        sys.stderr.write(f"dcim-sim demo: {exc}\n")
        return EXIT_FAILED
    except KeyboardInterrupt:
        sys.stderr.write("dcim-sim demo: interrupted\n")
        return EXIT_FAILED
