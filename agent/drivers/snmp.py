"""SNMP driver (v1, v2c, v3 USM) on pysnmp's asyncio API: batched GETs, GETBULK table walks."""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from pyasn1.type import univ
from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    UdpTransportTarget,
    UsmUserData,
    bulk_cmd,
    get_cmd,
    next_cmd,
    set_cmd,
)
from pysnmp.hlapi.v3arch.asyncio import auth as snmp_auth
from pysnmp.proto import errind, rfc1902, rfc1905

from agent.config import Device, SnmpOptions
from agent.drivers.base import Driver, PollResult, WriteResult
from models.codec import CodecError, ValueType
from models.quality import Quality
from models.schema import Column, Point, Table
from models.values import Reading, Value, finish, to_raw

log = logging.getLogger(__name__)

Oid = tuple[int, ...]
# What a request asks for: a scalar point, or one cell (table, row, column) of a table.
CellKey = tuple[str, str, str]  # ("", "", point) for points; (table, row, column) for cells

AUTH_PROTOCOLS: Final[dict[str, Any]] = {
    "MD5": snmp_auth.USM_AUTH_HMAC96_MD5,
    "SHA": snmp_auth.USM_AUTH_HMAC96_SHA,
    "SHA-256": snmp_auth.USM_AUTH_HMAC192_SHA256,
    "SHA-512": snmp_auth.USM_AUTH_HMAC384_SHA512,
}
PRIV_PROTOCOLS: Final[dict[str, Any]] = {
    "DES": snmp_auth.USM_PRIV_CBC56_DES,
    "AES": snmp_auth.USM_PRIV_CFB128_AES,
    "AES-128": snmp_auth.USM_PRIV_CFB128_AES,
    "AES-256": snmp_auth.USM_PRIV_CFB256_AES_BLUMENTHAL,
}

# SNMP error-status values (RFC 3416) the driver acts on.
TOO_BIG: Final = 1
NO_SUCH_NAME: Final = 2
ERROR_NAMES: Final = [
    "noError",
    "tooBig",
    "noSuchName",
    "badValue",
    "readOnly",
    "genErr",
    "noAccess",
    "wrongType",
    "wrongLength",
    "wrongEncoding",
    "wrongValue",
    "noCreation",
    "inconsistentValue",
    "resourceUnavailable",
    "commitFailed",
    "undoFailed",
    "authorizationError",
    "notWritable",
    "inconsistentName",
]

COUNTER32_MODULUS: Final = 2**32
COUNTER64_MODULUS: Final = 2**64
DEFAULT_REWALK_POLLS: Final = 60  # re-discover cached table rows every N polls


def oid_of(text: str) -> Oid:
    """A dotted OID as a tuple of integers."""
    return tuple(int(part) for part in text.strip(".").split("."))


def dotted(oid: Sequence[int]) -> str:
    """A tuple OID as dotted text."""
    return ".".join(str(int(part)) for part in oid)


def error_name(status: int) -> str:
    """The RFC 3416 name of an error-status."""
    return ERROR_NAMES[status] if 0 <= status < len(ERROR_NAMES) else f"error-status {status}"


# ---------------------------------------------------------------- decoding


def _text(data: bytes) -> str:
    """An OctetString as text when it is printable UTF-8, else as colon-separated hex."""
    stripped = data.rstrip(b"\x00")
    try:
        text = stripped.decode("utf-8")
    except UnicodeDecodeError:
        return data.hex(":")
    if all(ch.isprintable() or ch in "\t\r\n" for ch in text):
        return text
    return data.hex(":")


def raw_value(value: Any) -> tuple[int | float | str | None, str, Quality]:
    """An SNMP value as (raw Python value, syntax name, quality).

    TimeTicks become seconds; IpAddress and OBJECT IDENTIFIER dotted text; OctetString
    text, or hex when not printable. The exception values become qualities.
    """
    if isinstance(value, rfc1905.NoSuchObject):
        return None, "noSuchObject", Quality.NO_SUCH_OBJECT
    if isinstance(value, rfc1905.NoSuchInstance):
        return None, "noSuchInstance", Quality.NO_SUCH_INSTANCE
    if isinstance(value, rfc1905.EndOfMibView):
        return None, "endOfMibView", Quality.END_OF_MIB
    syntax = type(value).__name__
    if isinstance(value, rfc1902.TimeTicks):
        return int(value) / 100.0, syntax, Quality.GOOD
    if isinstance(value, rfc1902.IpAddress):
        return ".".join(str(b) for b in bytes(value.asOctets())), syntax, Quality.GOOD
    if isinstance(value, univ.ObjectIdentifier):
        return dotted(tuple(value)), syntax, Quality.GOOD
    if isinstance(value, univ.OctetString):
        return _text(bytes(value.asOctets())), syntax, Quality.GOOD
    try:
        return int(value), syntax, Quality.GOOD
    except (TypeError, ValueError):
        return None, syntax, Quality.DECODE_ERROR


def decode(spec: Point | Column, value: Any) -> Reading:
    """Decode one SNMP answer for a point or column: scale, enumeration, quality."""
    raw, syntax, quality = raw_value(value)
    if not quality.good or raw is None:
        return Reading.bad(quality if not quality.good else Quality.DECODE_ERROR)
    if syntax in ("ObjectIdentifier", "ObjectName") and spec.enum is not None and isinstance(raw, str):
        # AutonomousType values such as upsAlarmDescr name a well-known OID: its last arc
        # is the enumeration (upsWellKnownAlarms.2 is onBattery).
        return finish(spec, int(raw.rsplit(".", 1)[-1]))
    if isinstance(raw, str) and spec.type is not ValueType.STRING and (spec.enum is not None or spec.type is not None):
        try:
            number = float(raw)  # some agents answer numbers as text
        except ValueError:
            return Reading.bad(Quality.DECODE_ERROR)
        return finish(spec, int(number) if number.is_integer() else number)
    return _tidy(finish(spec, raw))


def _tidy(reading: Reading) -> Reading:
    """Scaled integers without binary noise (249 * 0.1 is 24.9, not 24.900000000000002)."""
    if isinstance(reading.value, float) and math.isfinite(reading.value):
        return Reading(float(f"{reading.value:.12g}"), reading.quality)
    return reading


# ---------------------------------------------------------------- counters


@dataclass(slots=True)
class _CounterState:
    raw: int
    ts: float
    offset: int = 0  # added to the raw value after wraps
    rate: float | None = None  # raw units per second in the last interval


@dataclass(frozen=True, slots=True)
class CounterEvent:
    """A counter discontinuity the driver detected."""

    device: str
    name: str  # point name, or table.column
    row: str  # "" for points
    kind: str  # "wrap" or "reset"
    before: int  # raw value before
    after: int  # raw value now
    ts: float


class CounterTracker:
    """Wrap and reset detection for counters.

    A Counter32/Counter64 that goes down by a plausible modular amount wrapped: the
    published value is unwrapped (raw + k * 2^32) so it keeps growing. Any other decrease
    (a user reset, a replaced device, a Gauge32 energy meter set to zero) is a reset: the
    raw value is published as it is, so the series visibly starts a new run, and the
    increment for that interval is the new value itself, never negative.
    """

    PLAUSIBLE_RATE_FACTOR: Final = 10.0

    def __init__(self, max_events: int = 1000) -> None:
        self._state: dict[tuple[str, str, str], _CounterState] = {}
        self.events: collections.deque[CounterEvent] = collections.deque(maxlen=max_events)
        self.increments: dict[tuple[str, str, str], int] = {}

    def update(self, device: str, name: str, row: str, raw: int, *, syntax: str, ts: float) -> int:
        """The raw value to publish for this reading (unwrapped across wraps)."""
        key = (device, name, row)
        prev = self._state.get(key)
        if prev is None:
            self._state[key] = _CounterState(raw, ts)
            self.increments[key] = 0
            return raw
        dt = max(ts - prev.ts, 1e-6)
        if raw >= prev.raw:
            increment = raw - prev.raw
            state = _CounterState(raw, ts, prev.offset, increment / dt)
        else:
            modulus = {"Counter32": COUNTER32_MODULUS, "Counter64": COUNTER64_MODULUS}.get(syntax)
            wrapped = modulus is not None and self._plausible_wrap(prev, raw, modulus, dt)
            if wrapped:
                assert modulus is not None  # noqa: S101
                increment = raw + modulus - prev.raw
                state = _CounterState(raw, ts, prev.offset + modulus, increment / dt)
            else:
                increment = raw  # counting started again from zero
                state = _CounterState(raw, ts, 0, None)
            kind = "wrap" if wrapped else "reset"
            self.events.append(CounterEvent(device, name, row, kind, prev.raw, raw, ts))
            log.warning(
                "device %s: counter %s%s %s from %d to %d",
                device,
                name,
                f"[{row}]" if row else "",
                kind,
                prev.raw,
                raw,
                extra={"device": device, "protocol": "snmp", "point": name},
            )
        self._state[key] = state
        self.increments[key] = increment
        return raw + state.offset

    def _plausible_wrap(self, prev: _CounterState, raw: int, modulus: int, dt: float) -> bool:
        delta = raw + modulus - prev.raw
        if delta >= modulus // 8:  # more than an eighth of the range in one poll: a reset
            return False
        if prev.rate is not None and prev.rate > 0:
            return delta <= self.PLAUSIBLE_RATE_FACTOR * prev.rate * dt + 1
        return True


# ---------------------------------------------------------------- per-device state


@dataclass(slots=True)
class _DeviceState:
    max_varbinds: int
    largest_good: int = 0  # most var-binds a GET has been answered with
    smallest_too_big: int | None = None  # fewest var-binds a GET was refused with (tooBig)
    rows: dict[str, list[str]] = field(default_factory=dict)  # table -> cached row indexes
    polls: int = 0
    walked_at: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Answer:
    """One response: an engine error (timeout...), or error-status/index and var-binds."""

    error: str | None = None
    quality: Quality = Quality.GOOD
    status: int = 0
    index: int = 0
    var_binds: list[tuple[Oid, Any]] = field(default_factory=list)


class _PollAborted(Exception):  # noqa: N818  (control flow inside one poll)
    """The device stopped answering: the rest of the poll is skipped."""

    def __init__(self, quality: Quality, message: str) -> None:
        super().__init__(message)
        self.quality = quality


class _Session:
    """One poll's requests to one device: counts them and stops after a failure."""

    def __init__(self, driver: SnmpDriver, device: Device) -> None:
        self.driver = driver
        self.device = device
        self.requests = 0

    async def send(self, kind: str, var_binds: Sequence[str | Oid], *, max_repetitions: int = 0) -> _Answer:
        self.requests += 1
        answer = await self.driver.request(self.device, kind, var_binds, max_repetitions=max_repetitions)
        if answer.error is not None:
            raise _PollAborted(answer.quality, answer.error)
        return answer


# ---------------------------------------------------------------- the driver


class SnmpDriver(Driver):
    """SNMP v1/v2c/v3 driver.

    A poll GETs every scalar point and every cached table cell in as few requests as the
    device's max_varbinds allows (splitting again on tooBig), and walks with GETBULK
    (GETNEXT on v1) the tables it does not know the rows of yet, volatile tables (alarms)
    on every poll. Row indexes found by a walk are cached and re-walked every
    `rewalk_polls` polls (model snmp setting) or as soon as a cached row disappears.
    """

    def __init__(self) -> None:
        self._engine = SnmpEngine()
        self._targets: dict[str, UdpTransportTarget] = {}
        self._auth: dict[str, CommunityData | UsmUserData] = {}
        self._states: dict[str, _DeviceState] = {}
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}
        self.counters = CounterTracker()
        self.requests_sent = 0
        self._syntax_seen: dict[tuple[str, str, str], str] = {}  # (device, name, row) -> SNMP syntax

    # -- plumbing
    @staticmethod
    def options(device: Device) -> SnmpOptions:
        """The device's SNMP options (v2c, community public when it gives none)."""
        return device.config.snmp or SnmpOptions()

    def _credentials(self, device: Device) -> CommunityData | UsmUserData:
        cached = self._auth.get(device.id)
        if cached is not None:
            return cached
        opts = self.options(device)
        creds: CommunityData | UsmUserData
        if opts.version in ("1", "2c"):
            creds = CommunityData(opts.community, mpModel=0 if opts.version == "1" else 1)
        else:
            auth_key = _read_key(device, "auth_key_file", opts.auth_key_file)
            priv_key = _read_key(device, "priv_key_file", opts.priv_key_file)
            creds = UsmUserData(
                opts.user or "",
                authKey=auth_key,
                privKey=priv_key,
                authProtocol=AUTH_PROTOCOLS[opts.auth] if opts.auth else snmp_auth.USM_AUTH_NONE,
                privProtocol=PRIV_PROTOCOLS[opts.priv] if opts.priv else snmp_auth.USM_PRIV_NONE,
            )
        self._auth[device.id] = creds
        return creds

    async def _target(self, device: Device) -> UdpTransportTarget:
        target = self._targets.get(device.id)
        if target is None:
            target = await UdpTransportTarget.create(
                (device.config.host, device.port), timeout=device.timeout_s, retries=device.retries
            )
            self._targets[device.id] = target
        return target

    def _state(self, device: Device) -> _DeviceState:
        state = self._states.get(device.id)
        if state is None:
            state = _DeviceState(max_varbinds=self.options(device).max_varbinds)
            self._states[device.id] = state
        return state

    async def request(
        self, device: Device, kind: str, var_binds: Sequence[str | Oid | tuple[Oid, Any]], *, max_repetitions: int = 0
    ) -> _Answer:
        """Send one request (get, next, bulk or set) and wait for its answer."""
        try:
            creds = self._credentials(device)
        except OSError as exc:
            return _Answer(error=str(exc), quality=Quality.ERROR)
        target = await self._target(device)
        objects = [
            ObjectType(ObjectIdentity(vb[0]), vb[1])
            if isinstance(vb, tuple) and len(vb) == 2 and isinstance(vb[0], tuple)
            else ObjectType(ObjectIdentity(vb if isinstance(vb, str) else dotted(vb)))
            for vb in var_binds
        ]
        lock = self._locks.setdefault((device.config.host, device.port), asyncio.Lock())
        context = ContextData()
        async with lock:
            self.requests_sent += 1
            try:
                if kind == "get":
                    result = await get_cmd(self._engine, creds, target, context, *objects, lookupMib=False)
                elif kind == "next":
                    result = await next_cmd(self._engine, creds, target, context, *objects, lookupMib=False)
                elif kind == "bulk":
                    result = await bulk_cmd(
                        self._engine, creds, target, context, 0, max_repetitions, *objects, lookupMib=False
                    )
                else:
                    result = await set_cmd(self._engine, creds, target, context, *objects, lookupMib=False)
            except Exception as exc:  # noqa: BLE001  (pysnmp raises many kinds; the device failed)
                return _Answer(error=f"{type(exc).__name__}: {exc}", quality=Quality.COMM_ERROR)
        indication, status, index, answer = result
        if indication:
            timeout = isinstance(indication, errind.RequestTimedOut)
            return _Answer(
                error=f"device {device.id} at {device.config.host}:{device.port}: {indication}",
                quality=Quality.TIMEOUT if timeout else Quality.COMM_ERROR,
            )
        return _Answer(
            status=int(status),
            index=int(index),
            var_binds=[(tuple(vb[0]), vb[1]) for vb in answer],
        )

    # -- poll
    async def poll(self, device: Device) -> PollResult:
        """Read every point and table of the device's model once."""
        started = time.time()
        t0 = time.monotonic()
        state = self._state(device)
        state.polls += 1
        _probe_limit(state)
        session = _Session(self, device)
        cells, walk, tables = self._plan(device, state)
        error: str | None = None
        failed: Quality | None = None
        try:
            answers = await self._get_many(session, state, cells)
            for table in walk:
                tables[table.name] = await self._walk(session, state, table)
        except _PollAborted as exc:
            error, failed = str(exc), exc.quality
            answers = {key: Reading.bad(failed) for _, key in cells}
            log.warning("device %s: poll failed: %s", device.id, error, extra={"device": device.id, "protocol": "snmp"})
        points = self._assemble(device, state, answers, tables, failed=failed, started=started)
        return PollResult(
            device=device.id,
            ts=started,
            points=points,
            tables=tables,
            requests=session.requests,
            elapsed_s=time.monotonic() - t0,
            error=error,
        )

    @staticmethod
    def _plan(
        device: Device, state: _DeviceState
    ) -> tuple[list[tuple[str, CellKey]], list[Table], dict[str, dict[str, dict[str, Reading]]]]:
        """What to GET (points and cached cells) and which tables to walk."""
        model = device.model
        rewalk = int(model.snmp.get("rewalk_polls", DEFAULT_REWALK_POLLS))
        walk: list[Table] = []
        tables: dict[str, dict[str, dict[str, Reading]]] = {}
        cells: list[tuple[str, CellKey]] = [(p.oid or "", ("", "", p.name)) for p in model.points]
        for table in model.tables:
            rows = state.rows.get(table.name)
            stale = state.polls - state.walked_at.get(table.name, 0) >= rewalk
            if table.volatile or rows is None or stale:
                walk.append(table)
                continue
            tables[table.name] = {row: {} for row in rows}
            cells.extend((f"{col.oid}.{row}", (table.name, row, col.name)) for row in rows for col in table.columns)
        return cells, walk, tables

    def _assemble(
        self,
        device: Device,
        state: _DeviceState,
        answers: dict[CellKey, Reading],
        tables: dict[str, dict[str, dict[str, Reading]]],
        *,
        failed: Quality | None,
        started: float,
    ) -> dict[str, Reading]:
        """Points and table cells from the answers: every column of every row, counters unwrapped."""
        points: dict[str, Reading] = {}
        for (table_name, row, name), reading in answers.items():
            if not table_name:
                points[name] = reading
                continue
            if reading.quality in (Quality.NO_SUCH_INSTANCE, Quality.NO_SUCH_OBJECT):
                state.rows.pop(table_name, None)  # a cached row went away: walk again
            tables.setdefault(table_name, {}).setdefault(row, {})[name] = reading
        for point in device.model.points:
            reading = points.setdefault(point.name, Reading.bad(failed or Quality.ERROR))
            if point.counter:
                points[point.name] = self._count(device, point, "", point.name, reading=reading, ts=started)
        for table in device.model.tables:
            for row, readings in tables.setdefault(table.name, {}).items():
                for col in table.columns:
                    reading = readings.setdefault(col.name, Reading.bad(failed or Quality.NO_SUCH_INSTANCE))
                    if col.counter:
                        readings[col.name] = self._count(
                            device, col, row, f"{table.name}.{col.name}", reading=reading, ts=started
                        )
        return points

    def _count(
        self, device: Device, spec: Point | Column, row: str, name: str, *, reading: Reading, ts: float
    ) -> Reading:
        """Unwrap a counter reading; a reset is published as read (a new run)."""
        if not reading.quality.good or not isinstance(reading.value, int | float) or isinstance(reading.value, bool):
            return reading
        raw = round((float(reading.value) - spec.offset) / spec.scale)
        syntax = self._syntax_seen.get((device.id, name, row), "")
        published = self.counters.update(device.id, name, row, raw, syntax=syntax, ts=ts)
        if published == raw:
            return reading
        return finish(spec, published)

    async def _get_many(
        self, session: _Session, state: _DeviceState, cells: list[tuple[str, CellKey]]
    ) -> dict[CellKey, Reading]:
        """GET many OIDs in chunks of max_varbinds, splitting again on tooBig."""
        out: dict[CellKey, Reading] = {}
        pending = [cells[i : i + state.max_varbinds] for i in range(0, len(cells), state.max_varbinds)]
        while pending:
            chunk = pending.pop(0)
            answer = await session.send("get", [oid for oid, _ in chunk])
            if answer.status == TOO_BIG:
                if len(chunk) == 1:
                    out[chunk[0][1]] = Reading.bad(Quality.DEVICE_EXCEPTION)
                    continue
                state.smallest_too_big = min(state.smallest_too_big or len(chunk), len(chunk))
                half = (len(chunk) + 1) // 2
                state.max_varbinds = max(1, min(state.max_varbinds, half))
                pending[:0] = [chunk[:half], chunk[half:]]
                log.info("device %s: tooBig for %d var-binds", session.device.id, len(chunk))
                continue
            state.largest_good = max(state.largest_good, len(chunk))
            if answer.status != 0:
                # v1 (and some v2c agents): one bad variable fails the whole request.
                bad = answer.index - 1
                if 0 <= bad < len(chunk):
                    quality = Quality.NO_SUCH_OBJECT if answer.status == NO_SUCH_NAME else Quality.DEVICE_EXCEPTION
                    out[chunk[bad][1]] = Reading.bad(quality)
                    rest = chunk[:bad] + chunk[bad + 1 :]
                    if rest:
                        pending.insert(0, rest)
                else:
                    for _, key in chunk:
                        out[key] = Reading.bad(Quality.DEVICE_EXCEPTION)
                continue
            if len(answer.var_binds) != len(chunk):
                for _, key in chunk:
                    out[key] = Reading.bad(Quality.DECODE_ERROR)
                continue
            for (_, key), (_, value) in zip(chunk, answer.var_binds, strict=True):
                out[key] = self._decode(session.device, key, value)
        return out

    def _decode(self, device: Device, key: CellKey, value: Any) -> Reading:
        table_name, row, name = key
        spec = _specs(device)[(table_name, name)]
        self._syntax_seen[(device.id, f"{table_name}.{name}" if table_name else name, row)] = type(value).__name__
        return decode(spec, value)

    async def _walk(self, session: _Session, state: _DeviceState, table: Table) -> dict[str, dict[str, Reading]]:
        """Walk a table's columns together: GETBULK on v2c/v3, GETNEXT on v1."""
        device = session.device
        v1 = self.options(device).version == "1"
        max_rep_cfg = self.options(device).max_repetitions
        prefixes = {col.name: oid_of(col.oid) for col in table.columns}
        current: dict[str, Oid] = dict(prefixes)
        rows: dict[str, dict[str, Reading]] = {}
        order: list[str] = []
        repetitions = max(1, min(max_rep_cfg, state.max_varbinds // len(current)))
        known = state.rows.get(table.name)
        if known is not None:
            repetitions = max(1, min(repetitions, len(known) + 1))
        while current:
            names = list(current)
            if v1:
                answer = await session.send("next", [current[n] for n in names])
                if answer.status == NO_SUCH_NAME:
                    # v1 end of MIB: the named variable has no successor.
                    current.pop(names[max(0, answer.index - 1)], None)
                    continue
            else:
                repetitions = max(1, min(repetitions, state.max_varbinds // len(names)))
                answer = await session.send("bulk", [current[n] for n in names], max_repetitions=repetitions)
                if answer.status == TOO_BIG and repetitions > 1:
                    repetitions = max(1, repetitions // 2)
                    continue
            if answer.status != 0:
                log.warning("device %s: walk of %s: %s", device.id, table.name, error_name(answer.status))
                break
            if not answer.var_binds:
                break
            done = self._take_rows(
                device,
                table,
                names=names,
                prefixes=prefixes,
                current=current,
                var_binds=answer.var_binds,
                rows=rows,
                order=order,
            )
            for name in done:
                current.pop(name, None)
        state.rows[table.name] = sorted(order, key=_row_sort_key)
        state.walked_at[table.name] = state.polls
        return {row: rows[row] for row in state.rows[table.name]}

    def _take_rows(
        self,
        device: Device,
        table: Table,
        *,
        names: list[str],
        prefixes: dict[str, Oid],
        current: dict[str, Oid],
        var_binds: list[tuple[Oid, Any]],
        rows: dict[str, dict[str, Reading]],
        order: list[str],
    ) -> set[str]:
        """Sort one GETBULK/GETNEXT answer into rows; the columns that ended."""
        width = len(names)
        done: set[str] = set()
        for i, (oid, value) in enumerate(var_binds):
            name = names[i % width]
            if name in done or name not in current:
                continue
            prefix = prefixes[name]
            ended = isinstance(value, rfc1905.EndOfMibView) or oid[: len(prefix)] != prefix or len(oid) <= len(prefix)
            if ended or oid <= current[name]:  # past the column, or an agent that does not move forward
                done.add(name)
                continue
            current[name] = oid
            row = dotted(oid[len(prefix) :])
            if row not in rows:
                rows[row] = {}
                order.append(row)
            rows[row][name] = self._decode(device, (table.name, row, name), value)
        return done

    # -- single reads and writes
    async def read_point(self, device: Device, point: Point) -> Reading:
        """Read one point."""
        session = _Session(self, device)
        try:
            answers = await self._get_many(session, self._state(device), [(point.oid or "", ("", "", point.name))])
        except _PollAborted as exc:
            return Reading.bad(exc.quality)
        return answers.get(("", "", point.name), Reading.bad(Quality.ERROR))

    async def write(self, device: Device, point: Point, value: Value, *, release: bool = False) -> WriteResult:
        """SET one point (after the limit checks, done by the caller) and read it back."""
        if release:
            return WriteResult(ok=False, outcome="refused", reason="release applies to BACnet priority slots only")
        oid = oid_of(point.oid or "")
        probe = await self.request(device, "get", [oid])
        if probe.error is not None:
            return WriteResult(ok=False, outcome="failed", reason=probe.error)
        if probe.status != 0 or not probe.var_binds:
            return WriteResult(ok=False, outcome="failed", reason=f"read before write: {error_name(probe.status)}")
        current = probe.var_binds[0][1]
        before = decode(point, current)
        if not before.quality.good:
            return WriteResult(ok=False, outcome="failed", reason=f"point {point.name!r}: {before.quality}")
        try:
            snmp_value = _encode_like(current, point, value)
        except (CodecError, ValueError, TypeError) as exc:
            return WriteResult(ok=False, outcome="refused", reason=f"point {point.name!r}: {exc}", before=before.value)
        answer = await self.request(device, "set", [(oid, snmp_value)])
        if answer.error is not None:
            return WriteResult(ok=False, outcome="failed", reason=answer.error, before=before.value)
        if answer.status != 0:
            return WriteResult(
                ok=False,
                outcome="refused",
                reason=f"device {device.id} refused the SET: {error_name(answer.status)}",
                before=before.value,
            )
        after = await self.read_point(device, point)
        return WriteResult(ok=True, outcome="written", before=before.value, after=after.value)

    async def close(self) -> None:
        """Close the engine's sockets."""
        self._engine.close_dispatcher()


def _probe_limit(state: _DeviceState) -> None:
    """After a tooBig, settle the request size between the largest answered and the refused."""
    good, bad = state.largest_good, state.smallest_too_big
    if bad is None or good == 0:
        return
    state.max_varbinds = (good + bad) // 2 if bad - good > 1 else good


def _encode_like(current: Any, point: Point, value: Value) -> Any:
    """The new value in the SNMP syntax the device answered with."""
    raw = to_raw(point, value)
    if isinstance(current, rfc1902.OctetString):
        return current.clone(str(raw))
    if isinstance(raw, str):
        raise TypeError(f"{raw!r} is not a number")
    number = float(raw)
    if not math.isfinite(number):
        raise ValueError(f"{raw!r} is not finite")
    return current.clone(round(number))


def _read_key(device: Device, key: str, path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise OSError(f"device {device.id}: snmp.{key} {path}: {exc.strerror or exc}") from exc
    if len(text) < 8:
        raise OSError(f"device {device.id}: snmp.{key} {path}: SNMPv3 keys need at least 8 characters")
    return text


def _row_sort_key(row: str) -> tuple[int, ...]:
    return tuple(int(part) for part in row.split("."))


_SPECS: dict[int, dict[tuple[str, str], Point | Column]] = {}


def _specs(device: Device) -> dict[tuple[str, str], Point | Column]:
    """(table or "", name) -> point or column, per model."""
    model = device.model
    cached = _SPECS.get(id(model))
    if cached is None:
        cached = {("", p.name): p for p in model.points}
        for table in model.tables:
            for col in table.columns:
                cached[(table.name, col.name)] = col
        _SPECS[id(model)] = cached
    return cached


# ---------------------------------------------------------------- trap listening

SNMP_TRAP_OID: Final = (1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0)
SYS_UPTIME_0: Final = (1, 3, 6, 1, 2, 1, 1, 3, 0)
_MP_VERSIONS: Final = {0: "1", 1: "2c", 3: "3"}


@dataclass(frozen=True, slots=True)
class V3Credentials:
    """An SNMPv3 user whose traps are accepted (pass phrases already read from files)."""

    user: str
    auth: str | None
    auth_key: str | None
    priv: str | None
    priv_key: str | None


def credentials_of(device: Device) -> V3Credentials | None:
    """A v3 device's USM credentials (its key files read); None for v1/v2c devices."""
    opts = SnmpDriver.options(device)
    if opts.version != "3":
        return None
    return V3Credentials(
        user=opts.user or "",
        auth=opts.auth,
        auth_key=_read_key(device, "auth_key_file", opts.auth_key_file),
        priv=opts.priv,
        priv_key=_read_key(device, "priv_key_file", opts.priv_key_file),
    )


@dataclass(frozen=True, slots=True)
class Notification:
    """A trap or inform as received: who sent it, how, and its variables decoded."""

    source: tuple[str, int]
    version: str  # "1", "2c" or "3"
    security_name: str  # community (v1/v2c) or user (v3)
    trap_oid: str
    uptime_s: float | None
    var_binds: dict[str, int | float | str | None]


class TrapListener:
    """Receives SNMP v1/v2c/v3 notifications on a UDP port and hands them to a callback.

    v1 and v2c traps must carry the configured community. v3 traps are authenticated
    with the credentials of the user they name: a trap's sender is its authoritative
    engine, so the listener learns each sender's engine ID from the message header and
    localises that user's keys to it before the message is processed.
    """

    def __init__(
        self,
        host: str,
        port: int,
        community: str,
        users: Sequence[V3Credentials],
        callback: Any,
    ) -> None:
        self.host = host
        self.port = port
        self.community = community
        self.users = {u.user: u for u in users}
        self.callback = callback
        self.datagrams = 0
        self.notifications = 0
        self._engine: Any = None
        self._known_engines: set[tuple[bytes, str]] = set()
        self._transport: Any = None

    async def start(self) -> None:
        """Bind the port and start listening."""
        import socket  # noqa: PLC0415

        from pysnmp.carrier.asyncio.dgram import udp  # noqa: PLC0415
        from pysnmp.entity import config as snmp_config  # noqa: PLC0415
        from pysnmp.entity.rfc3413 import ntfrcv  # noqa: PLC0415

        listener = self

        class _Transport(udp.UdpAsyncioTransport):  # type: ignore[misc]
            def datagram_received(self, datagram: bytes, address: Any) -> None:
                listener.datagrams += 1
                listener._learn_engine(datagram)
                super().datagram_received(datagram, address)

        engine = SnmpEngine()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)  # noqa: FBT003
        self.port = sock.getsockname()[1]
        transport = _Transport()
        transport.open_server_mode(sock=sock)
        await transport._lport  # noqa: SLF001  (the endpoint is created asynchronously)
        snmp_config.add_transport(engine, udp.DOMAIN_NAME, transport)
        snmp_config.add_v1_system(engine, "dcim-traps", self.community)
        ntfrcv.NotificationReceiver(engine, self._received)
        self._engine = engine
        self._transport = transport

    def _learn_engine(self, datagram: bytes) -> None:
        """Register the v3 user for the sender's engine ID before the message is checked."""
        if not self.users or self._engine is None:
            return
        from pyasn1.codec.ber import decoder  # noqa: PLC0415
        from pysnmp.entity import config as snmp_config  # noqa: PLC0415
        from pysnmp.proto.mpmod.rfc3412 import SNMPv3Message  # noqa: PLC0415
        from pysnmp.proto.secmod.rfc3414.service import UsmSecurityParameters  # noqa: PLC0415

        try:
            message, _ = decoder.decode(datagram, asn1Spec=SNMPv3Message())
            if int(message["msgVersion"]) != 3:
                return
            params, _ = decoder.decode(bytes(message["msgSecurityParameters"]), asn1Spec=UsmSecurityParameters())
        except Exception:  # noqa: BLE001  (v1/v2c messages do not decode as v3: nothing to learn)
            return
        engine_id = bytes(params["msgAuthoritativeEngineId"])
        user = bytes(params["msgUserName"]).decode("utf-8", errors="replace")
        creds = self.users.get(user)
        if creds is None or not engine_id or (engine_id, user) in self._known_engines:
            return
        snmp_config.add_v3_user(
            self._engine,
            user,
            AUTH_PROTOCOLS[creds.auth] if creds.auth else snmp_auth.USM_AUTH_NONE,
            creds.auth_key,
            PRIV_PROTOCOLS[creds.priv] if creds.priv else snmp_auth.USM_PRIV_NONE,
            creds.priv_key,
            securityEngineId=rfc1902.OctetString(engine_id),
        )
        self._known_engines.add((engine_id, user))
        log.info("trap receiver: v3 user %s of engine %s registered", user, engine_id.hex())

    def _received(
        self, engine: Any, state_ref: Any, _ctx_engine: Any, _ctx_name: Any, var_binds: Any, _cb_ctx: Any
    ) -> None:
        self.notifications += 1
        try:
            _, address = engine.message_dispatcher.get_transport_info(state_ref)
        except Exception:  # noqa: BLE001
            address = ("", 0)
        request = engine.observer.get_execution_context("rfc3412.receiveMessage:request")
        version = _MP_VERSIONS.get(int(request.get("messageProcessingModel", 1)), "?")
        security_name = bytes(request.get("securityName", b"")).decode("utf-8", errors="replace")
        trap_oid = ""
        uptime: float | None = None
        values: dict[str, int | float | str | None] = {}
        for name, value in var_binds:
            oid = tuple(name)
            raw, _, _quality = raw_value(value)
            if oid == SNMP_TRAP_OID:
                trap_oid = str(raw)
            elif oid == SYS_UPTIME_0:
                uptime = float(raw) if isinstance(raw, int | float) else None
            else:
                values[dotted(oid)] = raw
        notification = Notification(
            source=(str(address[0]), int(address[1])),
            version=version,
            security_name=security_name,
            trap_oid=trap_oid,
            uptime_s=uptime,
            var_binds=values,
        )
        try:
            self.callback(notification)
        except Exception:
            log.exception("trap receiver: callback failed for %s from %s", trap_oid, notification.source)

    async def close(self) -> None:
        """Stop listening and release the port."""
        if self._engine is not None:
            self._engine.close_dispatcher()
            self._engine = None
        if self._transport is not None:
            self._transport.close_transport()
            self._transport = None
