"""Setpoint commands from the cmd topic: checked against the model, written, read back and audited."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.config import CommandsSection, Device
from agent.drivers.base import Driver, WriteResult
from models import telemetry
from models.limits import WriteRefused, check_write
from models.telemetry import Command, CommandResult, TelemetryError

log = logging.getLogger(__name__)

REMEMBERED_COMMANDS = 1024  # answers kept to recognise a redelivered command (QoS 1)

DriverFor = Callable[[Device], Driver]
LockFor = Callable[[Device], AbstractAsyncContextManager[Any]]


def _scalar(value: object) -> telemetry.Scalar:
    return value if isinstance(value, float | int | str | bool) or value is None else str(value)


class AuditLog:
    """Append-only JSON lines: when, who, what, before, after, outcome. One line per command."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record and fsync it (a command is rare; losing its trace is not an option)."""
        line = json.dumps(record, separators=(",", ":"), default=str, ensure_ascii=False) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass(frozen=True, slots=True)
class _Partial:
    """What could be read from a malformed command, to address the refusal."""

    id: str = ""
    device: str = ""
    point: str = ""


def _partial(payload: bytes) -> _Partial:
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return _Partial()
    if not isinstance(data, dict):
        return _Partial()
    return _Partial(*(str(data.get(k, ""))[:128] for k in ("id", "device", "point")))


class CommandHandler:
    """Checks and carries out one command at a time per device.

    Order of checks (the first failing one answers): well-formed, not expired, sender
    allowed, advisory_only off, device known and enabled, point known and writable,
    value present; then, holding the device's connection, the current value is read,
    the model's min, max and max_step are checked against it, the value is written (at
    the model's BACnet priority) and read back by the driver. A refusal never touches
    the device (beyond that one read for max_step).
    """

    def __init__(
        self,
        *,
        commands: CommandsSection,
        devices: Mapping[str, Device],
        driver_for: DriverFor,
        lock_for: LockFor,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.commands = commands
        self.devices = dict(devices)
        self.driver_for = driver_for
        self.lock_for = lock_for
        self.clock = clock
        self.audit = AuditLog(commands.audit_log)
        self._answers: OrderedDict[str, CommandResult] = OrderedDict()
        self.ok = 0
        self.refused = 0

    def update(self, commands: CommandsSection, devices: Mapping[str, Device]) -> None:
        """Apply a reloaded configuration."""
        self.commands = commands
        self.devices = dict(devices)
        self.audit = AuditLog(commands.audit_log)

    async def handle(self, payload: bytes, *, source: str = "mqtt") -> CommandResult:
        """Carry out (or refuse) one command payload and audit it; the answer to publish."""
        started = self.clock()
        try:
            cmd = telemetry.decode_as(Command, payload)
        except TelemetryError as exc:
            part = _partial(payload)
            result = self._refuse(part.id, part.device, part.point, f"malformed command: {exc}")
            await self._audit(started, source, None, result, raw=payload[:512].decode("utf-8", "replace"))
            return result
        if cmd.id in self._answers:
            log.info("command %s: redelivered; answering again without acting", cmd.id)
            return self._answers[cmd.id]
        result, _ = await self.execute(cmd, source=source, started=started)
        return result

    async def execute(
        self, cmd: Command, *, source: str, started: float | None = None
    ) -> tuple[CommandResult, WriteResult | None]:
        """Carry out (or refuse) a decoded command and audit it; also the driver's account.

        `dcim-agent write` comes through here too, so a command from the command line
        meets exactly the checks, the advisory-only setting and the audit log of one
        from the collector.
        """
        started = self.clock() if started is None else started
        result, written = await self._execute(cmd)
        self._answers[cmd.id] = result
        while len(self._answers) > REMEMBERED_COMMANDS:
            self._answers.popitem(last=False)
        await self._audit(started, source, cmd, result, written=written)
        return result, written

    def _refuse(self, cmd_id: str, device: str, point: str, reason: str, before: object = None) -> CommandResult:
        self.refused += 1
        log.warning("command %s for %s.%s refused: %s", cmd_id or "?", device or "?", point or "?", reason)
        return CommandResult(
            id=cmd_id,
            device=device,
            point=point,
            ok=False,
            outcome="refused",
            reason=reason,
            before=_scalar(before),
            ts=self.clock(),
        )

    def _precheck(self, cmd: Command) -> str | None:
        """The reason to refuse without touching the device, or None."""
        now = self.clock()
        if cmd.expires <= now:
            return f"expired at {_iso(cmd.expires)} ({now - cmd.expires:.1f} s ago)"
        if self.commands.allowed_senders and cmd.by not in self.commands.allowed_senders:
            return f"sender {cmd.by!r} is not in commands.allowed_senders"
        if self.commands.advisory_only:
            return "this agent is advisory only (commands.advisory_only = true): no writes"
        device = self.devices.get(cmd.device)
        if device is None:
            return f"unknown device {cmd.device!r}"
        if not device.config.enabled:
            return f"device {cmd.device!r} is disabled"
        try:
            point = device.model.point(cmd.point)
        except KeyError:
            return f"model {device.model.id!r} of device {cmd.device!r} has no point {cmd.point!r}"
        if point.writable is None:
            return f"point {cmd.point!r} is not writable in model {device.model.id!r}"
        if cmd.value is None and not cmd.release:
            return "the command carries no value"
        try:  # limits that need no current value (min, max, type, priority)
            check_write(point, cmd.value, None, release=cmd.release)
        except WriteRefused as exc:
            return str(exc)
        return None

    async def _execute(self, cmd: Command) -> tuple[CommandResult, WriteResult | None]:
        """The answer, and the driver's account of the write when one was attempted."""
        reason = self._precheck(cmd)
        if reason is not None:
            return self._refuse(cmd.id, cmd.device, cmd.point, reason), None
        device = self.devices[cmd.device]
        point = device.model.point(cmd.point)
        driver = self.driver_for(device)
        async with self.lock_for(device):
            if cmd.expires <= self.clock():  # it waited for the device's connection
                reason = f"expired at {_iso(cmd.expires)} while waiting"
                return self._refuse(cmd.id, cmd.device, cmd.point, reason), None
            before = await driver.read_point(device, point)
            limits = point.writable
            if limits is not None and limits.max_step is not None and not cmd.release and not before.quality.good:
                reason = f"cannot check max_step: reading the current value gave {before.quality}"
                return self._refuse(cmd.id, cmd.device, cmd.point, reason), None
            try:
                check_write(point, cmd.value, before.value, release=cmd.release)
            except WriteRefused as exc:
                return self._refuse(cmd.id, cmd.device, cmd.point, str(exc), before.value), None
            try:
                written = await driver.write(device, point, cmd.value, release=cmd.release)
            except Exception as exc:
                log.exception("command %s: writing %s.%s failed", cmd.id, cmd.device, cmd.point)
                written = WriteResult(ok=False, outcome="failed", reason=f"{type(exc).__name__}: {exc}")
        if written.ok:
            self.ok += 1
            log.info(
                "command %s by %s: %s.%s %s: before %s after %s",
                cmd.id,
                cmd.by or "?",
                cmd.device,
                cmd.point,
                written.outcome,
                written.before,
                written.after,
            )
        else:
            self.refused += 1
            log.warning("command %s: %s.%s %s: %s", cmd.id, cmd.device, cmd.point, written.outcome, written.reason)
        answer = CommandResult(
            id=cmd.id,
            device=cmd.device,
            point=cmd.point,
            ok=written.ok,
            outcome=written.outcome,
            reason=written.reason,
            before=_scalar(written.before if written.before is not None else before.value),
            after=_scalar(written.after),
            ts=self.clock(),
        )
        return answer, written

    async def _audit(
        self,
        started: float,
        source: str,
        cmd: Command | None,
        result: CommandResult,
        *,
        raw: str | None = None,
        written: WriteResult | None = None,
    ) -> None:
        record: dict[str, Any] = {
            "ts": round(started, 3),
            "time": _iso(started),
            "source": source,
            "id": result.id,
            "by": cmd.by if cmd is not None else "",
            "device": result.device,
            "point": result.point,
            "value": cmd.value if cmd is not None else None,
            "release": cmd.release if cmd is not None else False,
            "expires": cmd.expires if cmd is not None else None,
            "before": result.before,
            "after": result.after,
            "outcome": result.outcome,
            "ok": result.ok,
            "reason": result.reason,
        }
        if raw is not None:
            record["raw"] = raw
        device = self.devices.get(result.device)
        if cmd is not None and device is not None:
            with contextlib.suppress(KeyError):
                limits = device.model.point(result.point).writable
                if limits is not None and limits.priority is not None:
                    record["priority"] = limits.priority
        if written is not None and written.priority_array is not None:
            record["priority_array"] = list(written.priority_array)
            record["active_priority"] = written.active_priority
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.audit.write, record)
        except OSError as exc:
            log.error("audit log %s: cannot write: %s (command %s)", self.audit.path, exc, result.id)  # noqa: TRY400


def _iso(ts: float) -> str:
    with contextlib.suppress(OverflowError, OSError, ValueError):
        return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    return repr(ts)
