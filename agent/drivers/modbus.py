"""Modbus driver: TCP, RTU over TCP and serial RTU, with planned reads and fault isolation.

The only agent module that imports pymodbus. One link (connection) per host:port or
serial port is shared by every device behind it, and requests on it are serialised and
paced. Reads follow the planner (fewest requests); a read refused with an exception is
bisected so only the failing points lose their value, and what the device showed (a
smaller maximum read, a gap that cannot be read across, addresses that do not exist) is
remembered for the next polls. Values are decoded only by the shared codec.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from agent import modbus_plan
from agent.config import Device, ModbusOptions
from agent.drivers.base import Driver, PollResult, WriteResult
from agent.modbus_plan import Avoid, Limits, Plan, Read
from models import codec, values
from models.codec import CodecError, ValueType
from models.limits import WriteRefused, check_write
from models.quality import Quality
from models.schema import DeviceModel, Point, Register
from models.values import Reading, Value

log = logging.getLogger(__name__)

# Reconnect pacing after a failed connection attempt: base * 2^(n-1), capped, with jitter.
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0
# Points a device refused with "illegal data address" are left out for this long, then tried again.
BAD_POINT_RECHECK_S = 600.0

EXCEPTION_NAMES: dict[int, str] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}
ILLEGAL_FUNCTION = 1
ILLEGAL_ADDRESS = 2
ILLEGAL_VALUE = 3
GATEWAY_PATH_UNAVAILABLE = 10
GATEWAY_TARGET_FAILED = 11
# Exceptions that can be narrowed down by splitting the read.
BISECTABLE = frozenset({2, 3, 4})

Framer = Literal["tcp", "rtu-over-tcp", "rtu"]


class LinkError(Exception):
    """The device did not answer usably: timeout, refused or lost connection, broken frame."""

    def __init__(self, quality: Quality, reason: str) -> None:
        self.quality = quality
        self.reason = reason
        super().__init__(reason)


class DeviceExceptionError(Exception):
    """The device answered with a Modbus exception code."""

    def __init__(self, code: int) -> None:
        self.code = code
        super().__init__(f"exception {code} ({EXCEPTION_NAMES.get(code, 'unknown')})")


def backoff_delay(
    failures: int, rng: random.Random, base_s: float = BACKOFF_BASE_S, cap_s: float = BACKOFF_MAX_S
) -> float:
    """Seconds to wait before the next connection attempt after `failures` failed ones.

    Exponential (base * 2^(failures-1), capped) with "equal jitter": between half and all of it,
    so many agents that lost the same gateway do not reconnect in step.
    """
    if failures <= 0:
        return 0.0
    delay = min(cap_s, base_s * 2.0 ** min(failures - 1, 30))
    return float(delay / 2 + rng.uniform(0.0, delay / 2))


@dataclass(frozen=True, slots=True)
class Settings:
    """A device's Modbus settings: its config over its model's [modbus] table over defaults."""

    unit: int
    framer: Framer
    serial: str | None
    baudrate: int
    parity: str
    stopbits: int
    limits: Limits
    delay_s: float


def settings_of(device: Device) -> Settings:
    """Resolve a device's Modbus settings; ValueError naming the device and key when invalid."""
    opts = device.config.modbus or ModbusOptions()
    model_opts = device.model.modbus

    def pick(name: str) -> Any:
        if name in opts.model_fields_set or name not in model_opts:
            return getattr(opts, name)
        return model_opts[name]

    try:
        limits = Limits(
            max_registers=int(pick("max_registers")),
            max_bits=int(pick("max_bits")),
            max_gap=int(pick("max_gap")),
        )
        return Settings(
            unit=int(pick("unit")),
            framer=opts.framer,
            serial=opts.serial,
            baudrate=opts.baudrate,
            parity=opts.parity,
            stopbits=opts.stopbits,
            limits=limits,
            delay_s=float(pick("delay_ms")) / 1000.0,
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"device {device.id!r} (model {device.model.id!r}): modbus settings: {exc}") from None


class Link:
    """One connection (TCP socket or serial port) shared by every device behind it."""

    def __init__(
        self,
        *,
        framer: Framer,
        host: str = "127.0.0.1",
        port: int = 502,
        serial: str | None = None,
        baudrate: int = 9600,
        parity: str = "N",
        stopbits: int = 1,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.framer = framer
        self.where = serial if framer == "rtu" and serial else f"{host}:{port}"
        self.lock = asyncio.Lock()
        self.failures = 0  # consecutive failed connection attempts
        self.next_attempt = 0.0  # clock() before which no new attempt is made
        self.connects = 0  # successful connections made
        self._clock = clock
        self._rng = rng or random.Random()  # jitter, not a secret
        self._last_end = 0.0
        self._in_flight = False
        client: AsyncModbusTcpClient | AsyncModbusSerialClient
        if framer == "rtu":
            if not serial:
                raise ValueError("framer 'rtu' needs a serial port")
            client = AsyncModbusSerialClient(
                serial,
                framer=FramerType.RTU,
                baudrate=baudrate,
                parity=parity,
                stopbits=stopbits,
                bytesize=8,
                timeout=2.0,
                retries=0,
                reconnect_delay=0,
                trace_connect=self._on_connect,
            )
        else:
            client = AsyncModbusTcpClient(
                host,
                port=port,
                framer=FramerType.SOCKET if framer == "tcp" else FramerType.RTU,
                timeout=2.0,
                retries=0,
                reconnect_delay=0,
                trace_connect=self._on_connect,
            )
        self.client = client

    def _on_connect(self, connected: bool) -> None:
        # pymodbus leaves a request waiting for its timeout when the peer closes the
        # connection: fail it now, so a dropped connection costs no timeout.
        if connected or not self._in_flight:
            return
        future = self.client.ctx.response_future
        if not future.done():
            future.set_exception(ConnectionException(f"connection to {self.where} lost"))

    def close(self) -> None:
        """Close the connection; the next request reconnects."""
        self.client.close()

    async def _connect(self, timeout_s: float) -> None:
        if self.client.connected:
            return
        now = self._clock()
        if now < self.next_attempt:
            raise LinkError(
                Quality.COMM_ERROR,
                f"cannot connect to {self.where} ({self.failures} failed attempts); "
                f"next attempt in {self.next_attempt - now:.1f} s",
            )
        self.client.ctx.comm_params.timeout_connect = timeout_s
        try:
            async with asyncio.timeout(timeout_s * 1.5):
                ok = await self.client.connect()
        except TimeoutError:
            ok = False
        if not ok:
            self.client.close()
            self.failures += 1
            self.next_attempt = self._clock() + backoff_delay(self.failures, self._rng)
            raise LinkError(Quality.COMM_ERROR, f"cannot connect to {self.where}")
        self.failures = 0
        self.connects += 1

    async def _pace(self, delay_s: float) -> None:
        if delay_s <= 0:
            return
        wait = self._last_end + delay_s - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)  # bus pacing for slow serial devices

    async def call(
        self,
        what: str,
        request: Callable[[AsyncModbusTcpClient | AsyncModbusSerialClient], Awaitable[ModbusPDU]],
        *,
        timeout_s: float,
        retries: int,
        delay_s: float = 0.0,
    ) -> ModbusPDU:
        """Send one request and return the answer; LinkError after retries are used up."""
        async with self.lock:
            attempts = retries + 1
            attempt = 0
            last = LinkError(Quality.ERROR, f"{what}: no attempt made")
            while attempt < attempts:
                attempt += 1
                reused = self.client.connected
                await self._connect(timeout_s)
                await self._pace(delay_s)
                # Our own timeout fires first; the library's is only a backstop.
                self.client.ctx.comm_params.timeout_connect = timeout_s + 1.0
                self._in_flight = True
                try:
                    async with asyncio.timeout(timeout_s):
                        return await request(self.client)
                except TimeoutError:
                    last = LinkError(Quality.TIMEOUT, f"{what}: no answer from {self.where} within {timeout_s:g} s")
                    if self.framer != "tcp":
                        # RTU answers carry no transaction id: a late answer must not be
                        # taken for the next request's, so start on a clean connection.
                        self.close()
                except (ModbusException, OSError) as exc:
                    last = LinkError(Quality.COMM_ERROR, f"{what}: {self.where}: {exc}")
                    self.close()
                    if reused and isinstance(exc, ConnectionException):
                        attempts += 1  # a connection that died while idle does not use up a retry
                        reused = False
                finally:
                    self._in_flight = False
                    self._last_end = time.monotonic()
                log.debug("%s: attempt %d failed: %s", what, attempt, last.reason)
            raise last


_READERS: dict[Register, str] = {
    Register.COIL: "read_coils",
    Register.DISCRETE: "read_discrete_inputs",
    Register.HOLDING: "read_holding_registers",
    Register.INPUT: "read_input_registers",
}
_READ_FUNCTION: dict[Register, int] = {Register.COIL: 1, Register.DISCRETE: 2, Register.HOLDING: 3, Register.INPUT: 4}


async def read_table(
    link: Link,
    table: Register,
    address: int,
    count: int,
    *,
    unit: int,
    timeout_s: float,
    retries: int,
    delay_s: float = 0.0,
    what: str = "",
) -> list[int]:
    """Read registers (or bits as 0/1); DeviceExceptionError or LinkError when that fails."""
    label = what or f"unit {unit} {table} {address}+{count}"

    async def request(client: AsyncModbusTcpClient | AsyncModbusSerialClient) -> ModbusPDU:
        method = getattr(client, _READERS[table])
        pdu: ModbusPDU = await method(address, count=count, device_id=unit)
        return pdu

    pdu = await link.call(label, request, timeout_s=timeout_s, retries=retries, delay_s=delay_s)
    if pdu.isError():
        code = int(getattr(pdu, "exception_code", 0))
        if code in (GATEWAY_PATH_UNAVAILABLE, GATEWAY_TARGET_FAILED):
            quality = Quality.TIMEOUT if code == GATEWAY_TARGET_FAILED else Quality.COMM_ERROR
            raise LinkError(quality, f"{label}: gateway {link.where}: {EXCEPTION_NAMES[code]}")
        raise DeviceExceptionError(code)
    if pdu.function_code != _READ_FUNCTION[table]:
        link.close()
        raise LinkError(Quality.COMM_ERROR, f"{label}: answer has function {pdu.function_code}")
    if table.is_bit:
        bits = list(pdu.bits)
        if not count <= len(bits) < count + 8:
            link.close()
            raise LinkError(Quality.COMM_ERROR, f"{label}: answer has {len(bits)} bits for {count}")
        return [1 if b else 0 for b in bits[:count]]
    regs = list(pdu.registers)
    if len(regs) != count:
        link.close()
        raise LinkError(Quality.COMM_ERROR, f"{label}: answer has {len(regs)} registers for {count}")
    return regs  # ints from pymodbus; pack_registers checks their range


@dataclass
class _DeviceState:
    """What one device has shown about itself, kept between polls."""

    settings: Settings
    barriers: dict[Register, frozenset[int]] = field(default_factory=dict)
    max_registers: int | None = None  # learned: largest read the device accepted after refusing a larger one
    max_bits: int | None = None
    bad_until: dict[str, float] = field(default_factory=dict)  # point -> clock() when to try it again
    # The last plan and what it was made from: planning anew every poll cost a tenth of the agent's CPU.
    plan_cache: tuple[DeviceModel, object, Plan] | None = None

    def limits(self) -> Limits:
        base = self.settings.limits
        return Limits(
            max_registers=min(base.max_registers, self.max_registers or base.max_registers),
            max_bits=min(base.max_bits, self.max_bits or base.max_bits),
            max_gap=base.max_gap,
        )

    def avoid(self, now: float) -> Avoid:
        skip = frozenset(name for name, until in self.bad_until.items() if until > now)
        return Avoid(barriers=dict(self.barriers), skip=skip)


@dataclass
class _Poll:
    """The state of one poll in progress."""

    chunks: list[tuple[Read, list[int]]] = field(default_factory=list)  # every read that succeeded
    failed: dict[str, Quality] = field(default_factory=dict)
    requests: int = 0

    def image(self) -> dict[Register, dict[int, int]]:
        """Every register (or bit) read, by table and address."""
        image: dict[Register, dict[int, int]] = {t: {} for t in Register}
        for read, regs in self.chunks:
            image[read.table].update(zip(range(read.start, read.end), regs, strict=False))
        return image


class ModbusDriver(Driver):
    """Modbus driver for every Modbus device of an agent."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None) -> None:
        self._clock = clock
        self._rng = rng or random.Random()  # jitter, not a secret
        self._links: dict[tuple[str, ...], Link] = {}
        self._states: dict[str, _DeviceState] = {}

    # ------------------------------------------------------------ links and state

    def link(self, device: Device) -> Link:
        """The shared link a device is reached through."""
        st = self._state(device).settings
        host = device.config.host
        key = ("rtu", st.serial or "") if st.framer == "rtu" else (st.framer, host, str(device.port))
        link = self._links.get(key)
        if link is None:
            link = Link(
                framer=st.framer,
                host=host,
                port=device.port,
                serial=st.serial,
                baudrate=st.baudrate,
                parity=st.parity,
                stopbits=st.stopbits,
                clock=self._clock,
                rng=self._rng,
            )
            self._links[key] = link
        return link

    def _state(self, device: Device) -> _DeviceState:
        state = self._states.get(device.id)
        if state is None:
            state = _DeviceState(settings_of(device))
            self._states[device.id] = state
        return state

    def plan(self, device: Device) -> Plan:
        """The reads the next poll of this device will make."""
        state = self._state(device)
        limits, avoid = state.limits(), state.avoid(self._clock())
        key = (limits, frozenset(avoid.barriers.items()), avoid.skip)
        cached = state.plan_cache
        if cached is not None and cached[0] is device.model and cached[1] == key:
            return cached[2]
        made = modbus_plan.plan(device.model.points, limits, avoid)
        state.plan_cache = (device.model, key, made)
        return made

    # ------------------------------------------------------------ reading

    async def _read(self, device: Device, read: Read, poll: _Poll) -> list[int]:
        state = self._state(device)
        poll.requests += 1
        return await read_table(
            self.link(device),
            read.table,
            read.start,
            read.count,
            unit=state.settings.unit,
            timeout_s=device.timeout_s,
            retries=device.retries,
            delay_s=state.settings.delay_s,
            what=f"device {device.id!r} unit {state.settings.unit} {read.table} {read.start}+{read.count}",
        )

    async def _read_isolating(self, device: Device, read: Read, poll: _Poll) -> bool:
        """Read, and on an exception bisect until only the failing points are left; True if all read."""
        try:
            regs = await self._read(device, read, poll)
        except DeviceExceptionError as exc:
            halves = modbus_plan.split(read) if exc.code in BISECTABLE else None
            if halves is None:
                self._mark_failed(device, read, exc.code, poll)
                return False
            left, right = halves
            ok_left = await self._read_isolating(device, left, poll)
            ok_right = await self._read_isolating(device, right, poll)
            if ok_left and ok_right:
                self._learn(device, read, left, right, exc.code)
            return False
        poll.chunks.append((read, regs))
        return True

    def _mark_failed(self, device: Device, read: Read, code: int, poll: _Poll) -> None:
        quality = {ILLEGAL_ADDRESS: Quality.ILLEGAL_ADDRESS, ILLEGAL_FUNCTION: Quality.UNSUPPORTED}.get(
            code, Quality.DEVICE_EXCEPTION
        )
        names = [p.name for p in read.points]
        for name in names:
            poll.failed[name] = quality
        log.warning(
            "device %s: %s %d+%d refused with exception %d (%s): %s",
            device.id,
            read.table,
            read.start,
            read.count,
            code,
            EXCEPTION_NAMES.get(code, "unknown"),
            ", ".join(names),
            extra={"device": device.id, "protocol": "modbus"},
        )
        if code == ILLEGAL_ADDRESS:
            until = self._clock() + BAD_POINT_RECHECK_S
            state = self._state(device)
            for name in names:
                state.bad_until[name] = until

    def _learn(self, device: Device, whole: Read, left: Read, right: Read, code: int) -> None:
        """Both halves of a refused read succeeded: remember why the whole was refused."""
        state = self._state(device)
        if code == ILLEGAL_VALUE:
            largest = max(left.count, right.count)
            if whole.table.is_bit:
                state.max_bits = min(state.max_bits or largest, largest)
            else:
                state.max_registers = min(state.max_registers or largest, largest)
            log.info(
                "device %s: refuses reads of %d; reading at most %d %s at once from now on",
                device.id,
                whole.count,
                largest,
                "bits" if whole.table.is_bit else "registers",
                extra={"device": device.id, "protocol": "modbus"},
            )
        elif code == ILLEGAL_ADDRESS:
            barrier = left.end
            state.barriers[whole.table] = state.barriers.get(whole.table, frozenset()) | {barrier}
            log.info(
                "device %s: cannot read %s across %d..%d; reading around it from now on",
                device.id,
                whole.table,
                left.end,
                right.start,
                extra={"device": device.id, "protocol": "modbus"},
            )

    def _decode(self, device: Device, poll: _Poll, fallback: Quality) -> dict[str, Reading]:
        """Every point's reading: each read is packed once and its points decoded by compiled decoders."""
        decoded: dict[str, Reading] = {}
        for read, regs in poll.chunks:
            data = values.pack_registers(regs, bits=read.table.is_bit) if len(regs) == read.count else None
            if data is None:  # a register outside 0..65535, or a short answer: the reference path
                image = poll.image()
                for point in read.points:
                    decoded[point.name] = _decode_point(point, image, fallback)
                continue
            for name, index, decoder in _layout(read):
                decoded[name] = decoder(data, index)
        failed = poll.failed
        points = device.model.points
        if not failed and len(decoded) == len(points):
            return decoded  # every point read (in read order; consumers look points up by name)
        bad = Reading.bad(fallback)
        return {
            p.name: Reading.bad(failed[p.name]) if p.name in failed else decoded.get(p.name, bad)
            for p in points
        }

    async def poll(self, device: Device) -> PollResult:
        """Read every point of the device once, with the fewest requests the device allows."""
        ts = time.time()
        started = time.monotonic()
        poll = _Poll()
        try:
            plan = self.plan(device)
        except ValueError as exc:
            points = {p.name: Reading.bad(Quality.ERROR) for p in device.model.points}
            return PollResult(device.id, ts, points, error=str(exc))
        for point in plan.skipped:
            poll.failed[point.name] = Quality.ILLEGAL_ADDRESS
        error: str | None = None
        fallback = Quality.ERROR
        for read in plan.reads:
            try:
                await self._read_isolating(device, read, poll)
            except LinkError as exc:
                # The device does not answer: do not spend a timeout on each remaining read.
                error, fallback = f"{exc.quality}: {exc.reason}", exc.quality
                log.warning("device %s: %s", device.id, exc.reason, extra={"device": device.id, "protocol": "modbus"})
                break
        return PollResult(
            device=device.id,
            ts=ts,
            points=self._decode(device, poll, fallback),
            requests=poll.requests,
            elapsed_s=time.monotonic() - started,
            error=error,
        )

    async def read_point(self, device: Device, point: Point) -> Reading:
        """Read one point now."""
        poll = _Poll()
        try:
            state = self._state(device)
            reads = modbus_plan.plan([point], state.limits()).reads
        except ValueError:
            return Reading.bad(Quality.ERROR)
        for read in reads:
            try:
                if not await self._read_isolating(device, read, poll):
                    return Reading.bad(poll.failed.get(point.name, Quality.ERROR))
            except LinkError as exc:
                log.warning("device %s: %s", device.id, exc.reason, extra={"device": device.id, "protocol": "modbus"})
                return Reading.bad(exc.quality)
        return _decode_point(point, poll.image(), Quality.ERROR)

    # ------------------------------------------------------------ writing

    async def write(self, device: Device, point: Point, value: Value, *, release: bool = False) -> WriteResult:
        """Check limits, write with function 5/6/16 through the codec, and read the point back."""
        if release:
            return WriteResult(ok=False, outcome="refused", reason="release applies to BACnet priority slots only")
        before = await self.read_point(device, point)
        current = before.value if before.quality.good else None
        if point.writable is not None and point.writable.max_step is not None and current is None:
            reason = f"point {point.name!r}: cannot read its value ({before.quality}) to check max_step"
            return WriteResult(ok=False, outcome="refused", reason=reason)
        try:
            check_write(point, value, current)
            regs = values.encode_registers(point, value)
        except (WriteRefused, CodecError) as exc:
            return WriteResult(ok=False, outcome="refused", reason=str(exc), before=current)
        state = self._state(device)
        assert point.register is not None  # noqa: S101  (modbus points have a register)
        assert point.address is not None  # noqa: S101
        address, unit, table = point.address, state.settings.unit, point.register

        async def request(client: AsyncModbusTcpClient | AsyncModbusSerialClient) -> ModbusPDU:
            pdu: ModbusPDU
            if table is Register.COIL:
                pdu = await client.write_coil(address, bool(regs[0]), device_id=unit)
            elif len(regs) == 1:
                pdu = await client.write_register(address, regs[0], device_id=unit)
            else:
                pdu = await client.write_registers(address, regs, device_id=unit)
            return pdu

        what = f"device {device.id!r} write {point.name} ({table} {address})"
        try:
            pdu = await self.link(device).call(
                what, request, timeout_s=device.timeout_s, retries=0, delay_s=state.settings.delay_s
            )
        except LinkError as exc:
            return WriteResult(ok=False, outcome="failed", reason=exc.reason, before=current)
        if pdu.isError():
            code = int(getattr(pdu, "exception_code", 0))
            reason = f"device refused the write: exception {code} ({EXCEPTION_NAMES.get(code, 'unknown')})"
            return WriteResult(ok=False, outcome="failed", reason=reason, before=current)
        after = await self.read_point(device, point)
        if not after.quality.good:
            return WriteResult(
                ok=False, outcome="failed", reason=f"read-back failed: {after.quality}", before=current
            )
        if not same_value(point, after.value, value):
            return WriteResult(
                ok=False,
                outcome="failed",
                reason=f"device reads back {after.value!r} after writing {value!r}",
                before=current,
                after=after.value,
            )
        log.info(
            "device %s: wrote %s = %r (was %r)",
            device.id,
            point.name,
            after.value,
            current,
            extra={"device": device.id, "protocol": "modbus", "point": point.name},
        )
        return WriteResult(ok=True, outcome="written", before=current, after=after.value)

    async def close(self) -> None:
        """Close every link."""
        for link in self._links.values():
            with contextlib.suppress(Exception):
                link.close()
        self._links.clear()


Layout = tuple[tuple[str, int, values.RegisterDecoder], ...]
_LAYOUTS: dict[tuple[int, int, int, Register, int, int], tuple[Point, Point, Layout]] = {}
_LAYOUTS_MAX = 50_000


def _layout(read: Read) -> Layout:
    """(name, index in the read, compiled decoder) of every point wholly inside the read.

    Cached by the read's table, start and count and its points (first and last object, and
    how many: a point left out for a while changes the key), so devices of one model share
    their layouts.
    """
    points = read.points
    if not points:
        return ()
    first, last = points[0], points[-1]
    key = (id(first), id(last), len(points), read.table, read.start, read.count)
    hit = _LAYOUTS.get(key)
    if hit is not None and hit[0] is first and hit[1] is last:
        return hit[2]
    layout = tuple(
        (p.name, p.address - read.start, values.register_decoder(p))
        for p in points
        if p.address is not None and read.start <= p.address and p.address + p.registers <= read.end
    )
    if len(_LAYOUTS) >= _LAYOUTS_MAX:
        _LAYOUTS.clear()
    _LAYOUTS[key] = (first, last, layout)
    return layout


def _decode_point(point: Point, image: dict[Register, dict[int, int]], fallback: Quality) -> Reading:
    assert point.register is not None  # noqa: S101
    assert point.address is not None  # noqa: S101
    table = image[point.register]
    regs: list[int] = []
    for address in range(point.address, point.address + point.registers):
        reg = table.get(address)
        if reg is None:
            return Reading.bad(fallback)
        regs.append(reg)
    return values.decode_registers(point, regs)


def same_value(point: Point, read_back: Value, written: Value) -> bool:
    """Whether a value read back after a write is the value written, within the point's resolution."""
    if isinstance(read_back, str) or isinstance(written, str):
        if point.enum is not None and not isinstance(written, str) and written is not None:
            return read_back == point.enum.get(int(written))
        return read_back == written
    if isinstance(read_back, bool) or isinstance(written, bool) or point.type is ValueType.BOOL:
        return bool(read_back) == bool(written)
    if read_back is None or written is None:
        return read_back is written
    step = codec.resolution(point.type or ValueType.FLOAT64, point.scale)
    tolerance = step / 2 + 1e-9 if step else 1e-6 * max(1.0, abs(float(written)))
    return math.isclose(float(read_back), float(written), abs_tol=tolerance)


async def read_raw(
    host: str,
    port: int,
    *,
    unit: int = 1,
    table: Register = Register.HOLDING,
    address: int,
    count: int,
    timeout_s: float = 2.0,
    framer: Framer = "tcp",
) -> list[int]:
    """Read raw registers (or bits) from any Modbus server once; LinkError or DeviceExceptionError on failure."""
    link = Link(framer=framer, host=host, port=port)
    try:
        return await read_table(link, table, address, count, unit=unit, timeout_s=timeout_s, retries=0)
    finally:
        link.close()
