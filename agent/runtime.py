"""The agent service: polls every device on its schedule, spools and publishes batches, obeys commands."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from agent import config as agent_config
from agent import health
from agent.batch import to_batch
from agent.commands import CommandHandler
from agent.config import AgentSection, Device, LoadedConfig
from agent.drivers import driver_class
from agent.drivers.base import Driver, DriverUnavailableError, PollResult
from agent.publisher import Publisher, PublisherOptions
from agent.sdnotify import Notifier
from agent.spool import AsyncSpool, Forwarder, SpoolStats
from models import telemetry
from models.errors import ConfigError
from models.quality import Quality
from models.schema import Protocol
from models.values import Reading

if TYPE_CHECKING:
    from agent.traps import Trap, TrapReceiver

log = logging.getLogger(__name__)

VERSION = "0.1.0"
STARTUP_DELAY_S = 0.2  # the first poll waits this long after the configuration is loaded
STOP_POLL_WAIT_S = 5.0  # at shutdown, how long running polls may finish
STOP_DRAIN_S = 5.0  # at shutdown, how long in-flight batches may be acknowledged
# The scheduler keeps wall-clock times: after the wall clock steps back an hour it would wait an
# hour before the next poll. The clock is compared with the monotonic clock this often, and a
# step larger than CLOCK_STEP_S (either way) reschedules every poll from now.
CLOCK_CHECK_S = 1.0
CLOCK_STEP_S = 2.0


def poll_deadline_s(device: Device) -> float:
    """Longest a poll may run before the runtime gives up on it (drivers normally time out first)."""
    return max(2.0 * device.interval_s, 4.0 * device.timeout_s * (device.retries + 1))


def connection_key(device: Device) -> tuple[str, str, str]:
    """Devices with the same key share a connection (a gateway, a serial line): their polls take turns."""
    cfg = device.config
    if cfg.modbus is not None and cfg.modbus.framer == "rtu":
        return ("serial", str(cfg.modbus.serial), "")
    return (device.protocol.value, cfg.host, str(device.port))


def spread(devices: list[Device]) -> dict[str, float]:
    """Start offsets (s): devices of one interval are spaced evenly across it, in id order."""
    groups: dict[float, list[Device]] = defaultdict(list)
    for device in devices:
        groups[device.interval_s].append(device)
    phases: dict[str, float] = {}
    for interval, group in groups.items():
        for i, device in enumerate(sorted(group, key=lambda d: d.id)):
            phases[device.id] = interval * i / len(group)
    return phases


def failed_result(device: Device, quality: Quality, error: str, started: float, elapsed_s: float) -> PollResult:
    """A poll that produced nothing: every point carries the failure, never a value."""
    points = {p.name: Reading.bad(quality) for p in device.model.points}
    return PollResult(device=device.id, ts=started, points=points, elapsed_s=elapsed_s, error=error)


@dataclass(slots=True)
class DeviceState:
    """The runtime's book-keeping for one scheduled device."""

    device: Device
    generation: int
    phase_s: float = 0.0
    first_at: float = 0.0  # wall time of the first scheduled poll
    last_slot: int = -1
    polls_ok: int = 0
    polls_failed: int = 0
    missed: int = 0  # scheduled polls that did not start
    coalesced: int = 0  # poll requests folded into one already running
    latency_ms: float | None = None
    points_good: int = 0
    points_bad: int = 0
    last_error: str = ""
    starts: list[float] = field(default_factory=list)  # wall times of the last scheduled starts (bounded)

    def snapshot(self) -> health.DeviceHealth:
        """The health numbers of this device."""
        return health.DeviceHealth(
            device=self.device.id,
            polls_ok=self.polls_ok,
            polls_failed=self.polls_failed,
            missed=self.missed,
            latency_ms=self.latency_ms,
            points_good=self.points_good,
            points_bad=self.points_bad,
            last_error=self.last_error,
        )


class Runtime:
    """The running agent. Everything happens on one asyncio loop.

    - one apscheduler job per enabled device at its interval, start offsets spread evenly;
      never two polls of a device in flight; missed polls coalesced into one and counted;
      devices sharing a connection take turns;
    - each poll's batch is spooled (with the next sequence number) before it is published;
    - commands on the cmd topic are answered on cmd/result;
    - the agent's own health is published every [agent] health_interval_s;
    - SIGHUP reloads the configuration, SIGTERM and SIGINT stop cleanly;
    - systemd is told READY, STATUS, WATCHDOG (only while polls complete) and STOPPING.
    """

    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        drivers: dict[Protocol, Driver] | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.loaded = loaded
        cfg = loaded.config
        self.site = cfg.agent.site
        self.agent_id = cfg.agent.id
        self.notifier = notifier or Notifier()
        self._drivers: dict[Protocol, Driver] = dict(drivers or {})
        self._states: dict[str, DeviceState] = {}
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = {}
        self._polls: set[asyncio.Task[Any]] = set()
        self._busy: set[str] = set()  # devices with a poll in flight (survives a reload of the device)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._generation = 0
        self._stop = asyncio.Event()
        self._started_mono = time.monotonic()
        self._last_progress = time.monotonic()
        self._scheduler: AsyncIOScheduler | None = None
        self.spool: AsyncSpool | None = None
        self.spool_failed = 0  # batches the spool could not store since start (lost)
        self.forwarder: Forwarder | None = None
        self.publisher: Publisher | None = None
        self.commands: CommandHandler | None = None
        self.traps: TrapReceiver | None = None
        self.reloads = 0
        self.reload_errors = 0
        self.watchdog_sent = 0
        self.watchdog_withheld = 0
        self.running = asyncio.Event()  # set once READY has been sent
        self.reloaded = asyncio.Event()  # set after each reload attempt, accepted or not

    # -- topics ---------------------------------------------------------------------------

    @property
    def status_topic(self) -> str:
        """Retained online/offline status of this agent."""
        return telemetry.agent_status_topic(self.site, self.agent_id)

    @property
    def command_topic(self) -> str:
        """Where commands for this agent arrive."""
        return telemetry.command_topic(self.site, self.agent_id)

    def _status(self, state: Literal["online", "offline"]) -> bytes:
        return telemetry.encode(
            telemetry.Status(site=self.site, agent=self.agent_id, state=state, ts=time.time(), version=VERSION)
        )

    # -- drivers and connections ----------------------------------------------------------

    def driver_for(self, device: Device) -> Driver:
        """The shared driver of the device's protocol (created on first use)."""
        driver = self._drivers.get(device.protocol)
        if driver is None:
            driver = driver_class(device.protocol)()
            self._drivers[device.protocol] = driver
        return driver

    def lock_for(self, device: Device) -> asyncio.Lock:
        """The lock of the device's connection."""
        key = connection_key(device)
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    # -- lifecycle ------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT (or stop()); 0 after a clean stop."""
        cfg = self.loaded.config
        loop = asyncio.get_running_loop()
        self.spool = await AsyncSpool.open(cfg.spool.path, cfg.spool.max_mb, cfg.spool.when_full)
        try:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
            options = PublisherOptions.from_section(
                cfg.mqtt,
                f"dcim-agent-{self.agent_id}",
                will_topic=self.status_topic,
                will_payload=self._status("offline"),
                online_payload=self._status("online"),
                subscriptions=(self.command_topic,),
            )
            self.publisher = Publisher(options, on_message=self._on_message, on_connection=self._on_connection)
            self.forwarder = Forwarder(self.spool, self.publisher, cfg.spool.replay_per_s)
            self.publisher.on_delivered = self.forwarder.delivered
            self.commands = CommandHandler(
                commands=cfg.commands,
                devices={d.id: d for d in self.loaded.devices},
                driver_for=self.driver_for,
                lock_for=self.lock_for,
            )
            self.forwarder.start()
            self.publisher.start()
            self._scheduler = AsyncIOScheduler(timezone=UTC)
            self._schedule(list(self.loaded.devices))
            self._scheduler.add_job(
                self._health_tick,
                IntervalTrigger(seconds=cfg.agent.health_interval_s, timezone=UTC),
                id="__health__",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
            )
            self._scheduler.start()
            await self._start_traps()
            loop.add_signal_handler(signal.SIGHUP, self._sighup)
            self.notifier.ready(self._status_text())
            self.running.set()
            log.info(
                "agent %s at site %s: %d devices scheduled, publishing to %s",
                self.agent_id,
                self.site,
                len(self._states),
                cfg.mqtt.url,
            )
            if self.notifier.watchdog_interval_s is not None:
                self._spawn(self._watchdog(self.notifier.watchdog_interval_s), "watchdog")
            self._spawn(self._clock_watch(), "clock-watch")
            await self._stop.wait()
        finally:
            await self._shutdown()
        return 0

    def stop(self) -> None:
        """Ask the runtime to stop (safe to call from a signal handler on the loop)."""
        if not self._stop.is_set():
            log.info("stopping")
            self.notifier.stopping("stopping: finishing running polls and flushing the spool")
            self._stop.set()

    async def _shutdown(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(sig)
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.pause()
        # Jobs the scheduler started just before the pause register as running polls on their
        # first step: let them take it, so that they are waited for rather than cancelled.
        await asyncio.sleep(0)
        if self._polls:
            _, pending = await asyncio.wait(set(self._polls), timeout=STOP_POLL_WAIT_S)
            for task in pending:
                task.cancel()
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        await self._stop_traps()
        for task in list(self._tasks):
            task.cancel()
        if self.forwarder is not None:
            await self.forwarder.drain(STOP_DRAIN_S)
            await self.forwarder.stop()
        if self.publisher is not None:
            await self.publisher.stop(self._status("offline"))
        if self.spool is not None:
            await self.spool.close()
        for driver in self._drivers.values():
            try:
                await driver.close()
            except Exception:
                log.exception("closing the %s driver failed", type(driver).__name__)
        self.notifier.close()
        log.info("stopped")

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- scheduling -----------------------------------------------------------------------

    def _schedule(self, devices: list[Device]) -> None:
        """Add a job for each enabled device, start offsets spread among `devices`."""
        assert self._scheduler is not None  # noqa: S101
        enabled = []
        for device in devices:
            if not device.config.enabled:
                continue
            try:
                self.driver_for(device)  # imports the protocol library: before the clock starts
            except DriverUnavailableError as exc:
                log.error("device %s: %s; it is not polled", device.id, exc, extra={"device": device.id})  # noqa: TRY400
                continue
            enabled.append(device)
        phases = spread(enabled)
        now = time.time()
        self._generation += 1
        for device in enabled:
            phase = phases[device.id]
            state = DeviceState(device=device, generation=self._generation, phase_s=phase)
            state.first_at = now + STARTUP_DELAY_S + phase
            self._states[device.id] = state
            first = datetime.fromtimestamp(state.first_at, UTC)
            self._scheduler.add_job(
                self._scheduled_poll,
                IntervalTrigger(seconds=device.interval_s, start_date=first, timezone=UTC),
                # Explicit, so that a first slot already past when the scheduler starts still runs.
                next_run_time=first,
                args=(device.id, state.generation),
                id=f"poll:{device.id}",
                replace_existing=True,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
            )

    def _unschedule(self, device_id: str) -> None:
        assert self._scheduler is not None  # noqa: S101
        with contextlib.suppress(Exception):
            self._scheduler.remove_job(f"poll:{device_id}")
        self._states.pop(device_id, None)

    async def _scheduled_poll(self, device_id: str, generation: int) -> None:
        state = self._states.get(device_id)
        if state is None or state.generation != generation:
            return  # the device was removed or restarted by a reload
        if device_id in self._busy:
            state.coalesced += 1
            return
        now = time.time()
        slot = round((now - state.first_at) / state.device.interval_s)
        slot = max(slot, state.last_slot + 1)
        state.missed += slot - state.last_slot - 1
        state.last_slot = slot
        state.starts.append(now)
        del state.starts[:-64]
        await self._poll(state)

    async def poll_now(self, device_id: str) -> bool:
        """Poll one device at once (e.g. on an SNMP trap), outside its schedule.

        Returns False without polling when a poll of the device is already running (the
        request is folded into it); KeyError when the device is not scheduled.
        """
        state = self._states.get(device_id)
        if state is None:
            raise KeyError(f"no scheduled device {device_id!r}")
        if device_id in self._busy:
            state.coalesced += 1
            return False
        await self._poll(state)
        return True

    def request_poll(self, device_id: str) -> bool:
        """Start poll_now as a task (for callbacks that cannot await); False when unknown or running."""
        state = self._states.get(device_id)
        if state is None or device_id in self._busy:
            if state is not None:
                state.coalesced += 1
            return False
        self._spawn(self.poll_now(device_id), f"poll-now:{device_id}")
        return True

    async def _poll(self, state: DeviceState) -> None:
        device = state.device
        self._busy.add(device.id)
        task = asyncio.current_task()
        if task is not None:
            self._polls.add(task)
        try:
            result = await self._read(device)
            self._account(state, result)
            await self._emit(device, result)
        finally:
            self._busy.discard(device.id)
            if task is not None:
                self._polls.discard(task)
            self._last_progress = time.monotonic()

    async def _read(self, device: Device) -> PollResult:
        started = time.time()
        t0 = time.monotonic()
        driver = self.driver_for(device)
        deadline = poll_deadline_s(device)
        try:
            async with self.lock_for(device):
                async with asyncio.timeout(deadline):  # no extra task, unlike wait_for on 3.11
                    return await driver.poll(device)
        except TimeoutError:
            log.warning("device %s: poll exceeded %.1f s; cancelled", device.id, deadline, extra={"device": device.id})
            return failed_result(
                device, Quality.TIMEOUT, f"poll exceeded {deadline:g} s", started, time.monotonic() - t0
            )
        except Exception as exc:  # a driver must not raise; if one does, the device fails, not the agent
            log.exception("device %s: the driver raised", device.id, extra={"device": device.id})
            return failed_result(device, Quality.ERROR, f"{type(exc).__name__}: {exc}", started, time.monotonic() - t0)

    def _account(self, state: DeviceState, result: PollResult) -> None:
        state.latency_ms = result.elapsed_s * 1000.0
        state.points_good, state.points_bad = result.counts()
        has_points = bool(result.points or result.tables)
        if result.error is None and (state.points_good > 0 or not has_points):
            state.polls_ok += 1
            state.last_error = ""
            return
        state.polls_failed += 1
        if result.error:
            state.last_error = result.error
        else:
            qualities = sorted({r.quality.value for r in result.points.values() if not r.quality.good})
            state.last_error = "no good point: " + ", ".join(qualities[:4])

    async def _emit(self, device: Device, result: PollResult) -> None:
        assert self.forwarder is not None  # noqa: S101
        topic = telemetry.telemetry_topic(self.site, self.agent_id, device.id)

        def build(seq: int) -> tuple[str, bytes]:
            batch = to_batch(self.site, self.agent_id, device, result, seq)
            return topic, telemetry.encode(telemetry.validate_batch(batch))

        try:
            await self.forwarder.submit(build)
        except telemetry.TelemetryError as exc:
            log.error("device %s: batch not publishable: %s", device.id, exc, extra={"device": device.id})  # noqa: TRY400
        except Exception as exc:
            self.spool_failed += 1
            log.exception(
                "device %s: could not spool the batch in %s (%d lost so far): %s",
                device.id,
                self.loaded.config.spool.path,
                self.spool_failed,
                exc,  # noqa: TRY401  (the reason on the first line, for one-line log readers)
                extra={"device": device.id},
            )

    async def _clock_watch(self) -> None:
        """Every second: watch the wall clock and paho's network thread.

        A clock step (NTP correction, a VM resumed, a manual set) reschedules every poll; a
        network thread ended by an exception is replaced.
        """
        offset = time.time() - time.monotonic()
        while True:
            await asyncio.sleep(CLOCK_CHECK_S)  # the check period, not synchronisation
            if self.publisher is not None:
                self.publisher.revive()  # paho's thread, if an exception ended it
            now_offset = time.time() - time.monotonic()
            step = now_offset - offset
            offset = now_offset
            if abs(step) > CLOCK_STEP_S:
                log.warning(
                    "the wall clock jumped %s by %.1f s: rescheduling every poll from now",
                    "back" if step < 0 else "forward",
                    abs(step),
                )
                self._reschedule()

    def _reschedule(self) -> None:
        """Start every device's schedule again from now, keeping its phase."""
        assert self._scheduler is not None  # noqa: S101
        now = time.time()
        for device_id, state in self._states.items():
            state.first_at = now + STARTUP_DELAY_S + state.phase_s
            state.last_slot = -1
            first = datetime.fromtimestamp(state.first_at, UTC)
            trigger = IntervalTrigger(seconds=state.device.interval_s, start_date=first, timezone=UTC)
            with contextlib.suppress(Exception):  # a job removed by a reload meanwhile
                self._scheduler.reschedule_job(f"poll:{device_id}", trigger=trigger)
        health_s = self.loaded.config.agent.health_interval_s
        with contextlib.suppress(Exception):
            self._scheduler.reschedule_job("__health__", trigger=IntervalTrigger(seconds=health_s, timezone=UTC))

    # -- health and watchdog --------------------------------------------------------------

    def health(self) -> health.AgentHealth:
        """A snapshot of the agent's health."""
        fw = self.forwarder
        return health.AgentHealth(
            uptime_s=time.monotonic() - self._started_mono,
            devices=tuple(s.snapshot() for s in self._states.values()),
            spool=self.spool.stats if self.spool is not None else SpoolStats(),
            mqtt_connected=self.publisher.connected if self.publisher is not None else False,
            published=fw.delivered_total if fw is not None else 0,
            replayed=fw.replayed if fw is not None else 0,
            commands_ok=self.commands.ok if self.commands is not None else 0,
            commands_refused=self.commands.refused if self.commands is not None else 0,
            memory_rss_bytes=health.memory_rss_bytes(),
            spool_failed=self.spool_failed,
        )

    def _status_text(self) -> str:
        return health.status_line(self.health())

    async def _health_tick(self) -> None:
        # Awaited at shutdown like a poll: cancelled half-way, its batch would be lost and the
        # scheduler would log the cancellation as a failed job.
        task = asyncio.current_task()
        if task is not None:
            self._polls.add(task)
        try:
            await self._publish_health()
        finally:
            if task is not None:
                self._polls.discard(task)

    async def _publish_health(self) -> None:
        assert self.forwarder is not None  # noqa: S101
        snap = self.health()
        ts = time.time()
        topic = telemetry.telemetry_topic(self.site, self.agent_id, health.HEALTH_DEVICE)
        for part in range(health.batch_count(snap)):

            def build(seq: int, part: int = part) -> tuple[str, bytes]:
                batch = health.health_batch(self.site, self.agent_id, ts, snap, part=part, seq=seq)
                return topic, telemetry.encode(telemetry.validate_batch(batch))

            try:
                await self.forwarder.submit(build)
            except Exception:
                log.exception("could not spool the agent's health batch")
        self.notifier.status(health.status_line(snap))

    def progressing(self) -> bool:
        """Whether polling makes progress: some poll completed recently enough for the slowest schedule."""
        states = list(self._states.values())
        if not states:
            return True
        allowed = max(s.device.interval_s + poll_deadline_s(s.device) for s in states)
        return time.monotonic() - self._last_progress <= allowed

    async def _watchdog(self, every_s: float) -> None:
        warned = False
        while True:
            await asyncio.sleep(every_s)  # the ping period systemd asked for
            if self.progressing():
                self.notifier.watchdog()
                self.watchdog_sent += 1
                warned = False
                continue
            self.watchdog_withheld += 1
            if not warned:
                log.error("no poll has completed for %.0f s: withholding the watchdog ping", self._since_progress())
                warned = True

    def _since_progress(self) -> float:
        return time.monotonic() - self._last_progress

    # -- SNMP traps -----------------------------------------------------------------------

    async def _start_traps(self) -> None:
        cfg = self.loaded.config
        if not cfg.traps.enabled:
            return
        from agent.traps import start_trap_receiver  # noqa: PLC0415  (pysnmp only when traps are on)

        devices = [d for d in self.loaded.devices if d.config.enabled]
        try:
            self.traps = await start_trap_receiver(cfg.traps, devices, self._on_trap)
        except Exception:
            # Polling matters more than traps: keep running, say why loudly.
            log.exception(
                "traps: cannot listen on %s:%d; running without the trap receiver", cfg.traps.host, cfg.traps.port
            )

    async def _stop_traps(self) -> None:
        if self.traps is not None:
            try:
                await self.traps.close()
            except Exception:
                log.exception("traps: closing the receiver failed")
            self.traps = None

    async def _on_trap(self, trap: Trap) -> None:
        """Publish the trap as an event (through the spool) and poll its device at once."""
        assert self.forwarder is not None  # noqa: S101
        topic = telemetry.event_topic(self.site, self.agent_id, trap.device.id)
        payload = telemetry.encode(trap.to_event(self.site, self.agent_id))
        try:
            await self.forwarder.submit(lambda _seq: (topic, payload), numbered=False)
        except Exception:
            log.exception("device %s: could not spool the trap event", trap.device.id)
        with contextlib.suppress(KeyError):
            await self.poll_now(trap.device.id)

    # -- MQTT events ----------------------------------------------------------------------

    def _on_connection(self, connected: bool) -> None:
        if connected and self.forwarder is not None:
            self.forwarder.connected()

    def _on_message(self, topic: str, payload: bytes) -> None:
        if topic == self.command_topic:
            self._spawn(self._command(payload), "command")
        else:
            log.debug("ignoring a message on %s", topic)

    async def _command(self, payload: bytes) -> None:
        assert self.commands is not None  # noqa: S101
        assert self.publisher is not None  # noqa: S101
        result = await self.commands.handle(payload)
        topic = telemetry.command_result_topic(self.site, self.agent_id)
        if not await self.publisher.send_and_wait(topic, telemetry.encode(result), timeout_s=10.0):
            log.warning("command %s: the result could not be published (it is in the audit log)", result.id)

    # -- reload ---------------------------------------------------------------------------

    def _sighup(self) -> None:
        self._spawn(self.reload(), "reload")

    async def reload(self) -> bool:
        """Re-read the configuration file; apply device and command changes. False when rejected."""
        try:
            return await self._reload()
        finally:
            self.reloaded.set()

    async def _reload(self) -> bool:
        self.notifier.reloading()
        path = self.loaded.path
        try:
            new = await asyncio.get_running_loop().run_in_executor(None, agent_config.load, path)
        except ConfigError as exc:
            self.reload_errors += 1
            log.error("reload rejected; the running configuration is kept:\n%s", exc)  # noqa: TRY400
            self.notifier.ready(f"reload rejected, running configuration kept: {str(exc).splitlines()[0]}")
            return False
        except Exception:
            self.reload_errors += 1
            log.exception("reload failed; the running configuration is kept")
            self.notifier.ready("reload failed, running configuration kept")
            return False
        self._apply(new)
        self.reloads += 1
        self.notifier.ready(self._status_text())
        return True

    def _apply(self, new: LoadedConfig) -> None:
        old = self.loaded
        fixed = ("agent", "mqtt", "spool", "traps")
        changed_fixed = [s for s in fixed if getattr(old.config, s) != getattr(new.config, s)]
        if changed_fixed:
            log.warning(
                "reload: changes to [%s] take effect at the next restart; the running values are kept",
                "], [".join(changed_fixed),
            )
        old_devices = {d.id: d for d in old.devices if d.config.enabled}
        new_devices = {d.id: d for d in new.devices if d.config.enabled}
        removed = [i for i in old_devices if i not in new_devices or old_devices[i] != new_devices[i]]
        added = [d for i, d in new_devices.items() if i not in old_devices or old_devices[i] != d]
        for device_id in removed:
            self._unschedule(device_id)
        if added:
            self._schedule(added)
        kept = len(new_devices) - len(added)
        gone = len([i for i in removed if i not in new_devices])
        log.info("reload: %d devices kept polling, %d restarted or added, %d removed", kept, len(added), gone)
        # Keep the running identity, broker and spool; take devices, defaults and commands.
        merged = new.config.model_copy(update={s: getattr(old.config, s) for s in fixed})
        self.loaded = LoadedConfig(path=new.path, config=merged, devices=new.devices)
        if self.commands is not None:
            self.commands.update(new.config.commands, {d.id: d for d in new.devices})
        if self.traps is not None and (added or removed):
            self._spawn(self._restart_traps(), "traps-restart")

    async def _restart_traps(self) -> None:
        """The receiver matches traps to devices: give it the reloaded list."""
        await self._stop_traps()
        await self._start_traps()

    # -- for tests and tools --------------------------------------------------------------

    def state(self, device_id: str) -> DeviceState:
        """The book-keeping of a scheduled device."""
        return self._states[device_id]


class _JsonFormatter(logging.Formatter):
    """One JSON object per line (for journald and log shippers)."""

    EXTRAS = ("device", "protocol", "point", "elapsed_ms")

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in self.EXTRAS:
            if hasattr(record, key):
                data[key] = getattr(record, key)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def setup_logging(section: AgentSection, verbose: bool = False) -> None:
    """Configure logging once for `run`: level and format from [agent], to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    if section.log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else section.log_level.upper())
    # apscheduler warns on every skipped run of a slow device; the agent counts those itself.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    if not verbose:
        logging.getLogger("agent.publisher.paho").setLevel(logging.WARNING)
    threading.excepthook = _log_thread_exception


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    """An exception that ends a thread (paho's, the spool's) goes to the agent's log, not bare stderr."""
    if args.exc_type is SystemExit:
        return
    thread = args.thread.name if args.thread is not None else "?"
    if args.exc_value is None:
        log.error("thread %s ended with an error: %s", thread, args.exc_type.__name__)
        return
    log.error(
        "thread %s ended with an error: %s",
        thread,
        args.exc_value,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


def run_service(path: str, verbose: bool = False) -> int:
    """`dcim-agent run`: load the configuration and run until stopped."""
    loaded = agent_config.load(path)  # ConfigError: the CLI reports it with exit code 2
    setup_logging(loaded.config.agent, verbose)
    return asyncio.run(Runtime(loaded).run())
