"""SNMP trap receiver: UPS-MIB traps become events and trigger an immediate poll of the device."""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from agent.config import Device, TrapsSection
from agent.drivers.snmp import Notification, TrapListener, V3Credentials, credentials_of
from models import telemetry
from models.schema import Protocol

log = logging.getLogger(__name__)

Severity = Literal["critical", "major", "minor", "warning", "info"]

UPS_TRAPS: Final = "1.3.6.1.2.1.33.2"
UPS_ALARM_DESCR: Final = "1.3.6.1.2.1.33.1.6.2.1.2"
WELL_KNOWN_ALARMS: Final = "1.3.6.1.2.1.33.1.6.3"

# trap OID -> (name, severity, message)
TRAPS: Final[dict[str, tuple[str, Severity, str]]] = {
    f"{UPS_TRAPS}.1": ("upsTrapOnBattery", "major", "UPS is on battery"),
    f"{UPS_TRAPS}.2": ("upsTrapTestCompleted", "info", "UPS self-test completed"),
    f"{UPS_TRAPS}.3": ("upsTrapAlarmEntryAdded", "warning", "UPS alarm raised"),
    f"{UPS_TRAPS}.4": ("upsTrapAlarmEntryRemoved", "info", "UPS alarm cleared"),
    "1.3.6.1.6.3.1.1.5.1": ("coldStart", "info", "agent restarted (cold start)"),
    "1.3.6.1.6.3.1.1.5.2": ("warmStart", "info", "agent restarted (warm start)"),
    "1.3.6.1.6.3.1.1.5.5": ("authenticationFailure", "warning", "agent saw a bad community or user"),
}

# upsWellKnownAlarms.N -> (name, severity when raised)
UPS_ALARMS: Final[dict[int, tuple[str, Severity]]] = {
    1: ("batteryBad", "major"),
    2: ("onBattery", "major"),
    3: ("lowBattery", "critical"),
    4: ("depletedBattery", "critical"),
    5: ("tempBad", "major"),
    6: ("inputBad", "major"),
    7: ("outputBad", "critical"),
    8: ("outputOverload", "critical"),
    9: ("onBypass", "major"),
    10: ("bypassBad", "major"),
    11: ("outputOffAsRequested", "warning"),
    12: ("upsOffAsRequested", "warning"),
    13: ("chargerFailed", "major"),
    14: ("upsOutputOff", "critical"),
    15: ("upsSystemOff", "critical"),
    16: ("fanFailure", "major"),
    17: ("fuseFailure", "major"),
    18: ("generalFault", "major"),
    19: ("diagnosticTestFailed", "minor"),
    20: ("communicationsLost", "major"),
    21: ("awaitingPower", "critical"),
    22: ("shutdownPending", "critical"),
    23: ("shutdownImminent", "critical"),
    24: ("testInProgress", "info"),
}


@dataclass(frozen=True, slots=True)
class Trap:
    """A trap matched to a configured device, ready to publish as an Event."""

    device: Device
    name: str  # e.g. upsTrapOnBattery, or the trap OID when unknown
    oid: str
    severity: Severity
    message: str
    ts: float
    source: tuple[str, int]
    version: str
    data: dict[str, telemetry.Scalar] = field(default_factory=dict)

    def to_event(self, site: str, agent: str) -> telemetry.Event:
        """The wire-format event for this trap (type "trap")."""
        return telemetry.Event(
            site=site,
            agent=agent,
            device=self.device.id,
            type="trap",
            ts=self.ts,
            severity=self.severity,
            message=self.message,
            data={"trap": self.name, "oid": self.oid, "version": self.version, **self.data},
        )


OnTrap = Callable[[Trap], Awaitable[None] | None]


def describe(notification: Notification) -> tuple[str, Severity, str, dict[str, telemetry.Scalar]]:
    """Name, severity, message and data of a notification (UPS-MIB traps by name)."""
    name, severity, message = TRAPS.get(
        notification.trap_oid, (notification.trap_oid or "unknown", "info", "SNMP notification")
    )
    data: dict[str, telemetry.Scalar] = {}
    for oid, value in notification.var_binds.items():
        data[oid] = value
        if oid.startswith(UPS_ALARM_DESCR + ".") and isinstance(value, str) and value.startswith(WELL_KNOWN_ALARMS):
            alarm_no = int(value.rsplit(".", 1)[-1])
            alarm, alarm_severity = UPS_ALARMS.get(alarm_no, (f"alarm{alarm_no}", "warning"))
            data["alarm"] = alarm
            data["alarm_id"] = int(oid.rsplit(".", 1)[-1])
            if name == "upsTrapAlarmEntryAdded":
                severity, message = alarm_severity, f"UPS alarm raised: {alarm}"
            elif name == "upsTrapAlarmEntryRemoved":
                message = f"UPS alarm cleared: {alarm}"
    return name, severity, message, data


class TrapReceiver:
    """A running trap receiver. Close it with `await receiver.close()`."""

    def __init__(
        self, listener: TrapListener, devices: Sequence[Device], addresses: dict[str, str], on_trap: OnTrap
    ) -> None:
        self._listener = listener
        self._devices = list(devices)
        self._addresses = addresses  # device id -> resolved IPv4 address
        self._on_trap = on_trap
        self._tasks: set[asyncio.Task[None]] = set()
        self.received = 0  # notifications matched to a device
        self.unmatched = 0  # notifications from no configured device

    @property
    def port(self) -> int:
        """The UDP port it listens on."""
        return self._listener.port

    def match(self, notification: Notification) -> Device | None:
        """The configured device a notification came from.

        By source address and port (a device sending from its agent port), else by
        address alone when one device has it, else by v3 user among those at the address.
        """
        host, port = notification.source
        at_host = [d for d in self._devices if self._addresses.get(d.id) == host]
        exact = [d for d in at_host if d.port == port]
        if len(exact) == 1:
            return exact[0]
        if len(at_host) == 1:
            return at_host[0]
        if notification.version == "3":
            by_user = [
                d for d in at_host if d.config.snmp is not None and d.config.snmp.user == notification.security_name
            ]
            if len(by_user) == 1:
                return by_user[0]
        return None

    def handle(self, notification: Notification) -> None:
        """Match, describe and hand one notification to the callback."""
        device = self.match(notification)
        if device is None:
            self.unmatched += 1
            log.warning(
                "trap %s from %s:%d matches no configured device",
                notification.trap_oid,
                notification.source[0],
                notification.source[1],
            )
            return
        self.received += 1
        name, severity, message, data = describe(notification)
        trap = Trap(
            device=device,
            name=name,
            oid=notification.trap_oid,
            severity=severity,
            message=message,
            ts=time.time(),
            source=notification.source,
            version=notification.version,
            data=data,
        )
        log.info("device %s: trap %s (%s)", device.id, name, message, extra={"device": device.id, "protocol": "snmp"})
        result = self._on_trap(trap)
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("trap callback failed: %s", task.exception())

    async def close(self) -> None:
        """Stop receiving; pending callbacks are cancelled."""
        await self._listener.close()
        for task in list(self._tasks):
            task.cancel()


async def _resolve(host: str) -> str:
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, None, family=socket.AF_INET), timeout=5.0)
    except (OSError, TimeoutError):
        return host
    return str(infos[0][4][0]) if infos else host


async def start_trap_receiver(config: TrapsSection, devices: Sequence[Device], on_trap: OnTrap) -> TrapReceiver:
    """Listen for traps from the SNMP devices; call on_trap(Trap) for each one matched.

    on_trap may be a plain function or a coroutine function (run as a task). v1/v2c
    traps must carry config.community; v3 traps are accepted from the users of the v3
    devices, authenticated with those devices' key files.
    """
    snmp_devices = [d for d in devices if d.protocol is Protocol.SNMP]
    users: dict[str, V3Credentials] = {}
    for device in snmp_devices:
        creds = credentials_of(device)
        if creds is not None:
            users.setdefault(creds.user, creds)
    addresses = {d.id: await _resolve(d.config.host) for d in snmp_devices}
    receiver: TrapReceiver | None = None

    def callback(notification: Notification) -> None:
        if receiver is not None:
            receiver.handle(notification)

    listener = TrapListener(config.host, config.port, config.community, list(users.values()), callback)
    await listener.start()
    receiver = TrapReceiver(listener, snmp_devices, addresses, on_trap)
    log.info("trap receiver on %s:%d for %d SNMP devices", config.host, listener.port, len(snmp_devices))
    return receiver
