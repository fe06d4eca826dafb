"""Modbus TCP, RTU-over-TCP and serial RTU simulator for any Modbus device model, with faults.

The simulator is its own small protocol implementation (MBAP and RTU framing, function
codes 1-6, 15 and 16), independent of the client library the agent uses, so that tests
of the driver against it compare two implementations. The register image of each unit is
built from the model through the shared codec: values follow the points' simulation
profiles, writable points keep what is written to them, and chosen faults (exception
codes at chosen addresses, silence, slow answers, dropped connections, corrupted frames,
a smaller maximum read) can be switched on per unit while it serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import struct
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Self

from models import codec, values
from models.codec import CodecError
from models.profile import profile_value
from models.schema import MAX_BITS_PER_READ, MAX_REGISTERS_PER_READ, DeviceModel, Point, Protocol, Register

log = logging.getLogger(__name__)

Framer = Literal["tcp", "rtu-over-tcp"]

# Function codes.
READ_COILS = 1
READ_DISCRETE = 2
READ_HOLDING = 3
READ_INPUT = 4
WRITE_COIL = 5
WRITE_REGISTER = 6
WRITE_COILS = 15
WRITE_REGISTERS = 16
READ_FUNCTIONS: frozenset[int] = frozenset({READ_COILS, READ_DISCRETE, READ_HOLDING, READ_INPUT})
WRITE_FUNCTIONS: frozenset[int] = frozenset({WRITE_COIL, WRITE_REGISTER, WRITE_COILS, WRITE_REGISTERS})

TABLE_OF: dict[int, Register] = {
    READ_COILS: Register.COIL,
    READ_DISCRETE: Register.DISCRETE,
    READ_HOLDING: Register.HOLDING,
    READ_INPUT: Register.INPUT,
    WRITE_COIL: Register.COIL,
    WRITE_REGISTER: Register.HOLDING,
    WRITE_COILS: Register.COIL,
    WRITE_REGISTERS: Register.HOLDING,
}

# Exception codes.
ILLEGAL_FUNCTION = 1
ILLEGAL_ADDRESS = 2
ILLEGAL_VALUE = 3
DEVICE_FAILURE = 4
GATEWAY_TARGET_FAILED = 0x0B

BROADCAST = 0
MAX_WRITE_REGISTERS = 123
MAX_WRITE_COILS = 1968


class ModbusError(Exception):
    """A request the device answers with a Modbus exception code."""

    def __init__(self, code: int, reason: str = "") -> None:
        self.code = code
        super().__init__(f"exception {code}: {reason}" if reason else f"exception {code}")


@dataclass
class Faults:
    """Faults of one unit; change them at any time while the simulator serves.

    exceptions: (table, address) -> exception code answered for any request touching it.
    silent: the unit reads requests and never answers.
    delay_s: every answer is sent this late.
    drop: the next N requests close the connection instead of being answered.
    corrupt: the next N answers are sent corrupted (bad CRC for RTU, bad header for TCP).
    max_registers / max_bits: larger reads are refused with exception 3, as small devices do.
    """

    exceptions: dict[tuple[Register, int], int] = field(default_factory=dict)
    silent: bool = False
    delay_s: float = 0.0
    drop: int = 0
    corrupt: int = 0
    max_registers: int = MAX_REGISTERS_PER_READ
    max_bits: int = MAX_BITS_PER_READ

    def illegal(self, table: Register, *addresses: int, code: int = ILLEGAL_ADDRESS) -> None:
        """Answer requests touching these addresses with an exception (2 by default)."""
        for address in addresses:
            self.exceptions[(table, address)] = code

    def clear(self) -> None:
        """Remove every fault."""
        self.exceptions.clear()
        self.silent = False
        self.delay_s = 0.0
        self.drop = self.corrupt = 0
        self.max_registers = MAX_REGISTERS_PER_READ
        self.max_bits = MAX_BITS_PER_READ


@dataclass(frozen=True)
class Request:
    """One request as the simulator received it (for counting and inspection in tests)."""

    unit: int
    function: int
    address: int
    count: int
    connection: int
    at: float = field(default_factory=time.monotonic)  # when it arrived (monotonic seconds)


class _Drop:
    """Marker: close the connection instead of answering."""


DROP = _Drop()


def _span(point: Point) -> tuple[int, int]:
    assert point.address is not None  # noqa: S101  (modbus points have addresses)
    return point.address, point.address + point.registers


class SimDevice:
    """One simulated unit: the register image of a model at the simulator's clock."""

    def __init__(self, model: DeviceModel, seed: int = 0, clock: Callable[[], float] | None = None) -> None:
        if model.protocol is not Protocol.MODBUS:
            raise ValueError(f"model {model.id!r} speaks {model.protocol}, not modbus")
        self.model = model
        self.seed = seed
        start = time.monotonic()
        self.clock: Callable[[], float] = clock or (lambda: time.monotonic() - start)
        self._points: dict[Register, list[Point]] = {}
        for point in model.points:
            assert point.register is not None  # noqa: S101
            self._points.setdefault(point.register, []).append(point)
        self._written: dict[Register, dict[int, int]] = {t: {} for t in Register}
        self._warned: set[str] = set()
        # Values a driver of the simulator (a site's physics) serves instead of the profile.
        self.values: dict[str, values.Value] = {}

    def value_at(self, point: Point, t_s: float) -> values.Value:
        """The engineering value a point serves at t_s: the one set with set_value, else its profile."""
        if point.name in self.values:
            return self.values[point.name]
        return profile_value(point, t_s, self.seed)

    def set_value(self, name: str, value: values.Value) -> None:
        """Serve this value for a point from now on (None: back to its profile); client writes still win."""
        self.model.point(name)  # KeyError naming the model and point when unknown
        if value is None:
            self.values.pop(name, None)
        else:
            self.values[name] = value

    def points(self, table: Register) -> list[Point]:
        """The model's points in one table."""
        return self._points.get(table, [])

    def _encode(self, point: Point, t_s: float) -> list[int] | None:
        try:
            return values.encode_registers(point, self.value_at(point, t_s))
        except CodecError as exc:
            if point.name not in self._warned:
                self._warned.add(point.name)
                log.warning("model %s point %s: cannot encode its profile value: %s", self.model.id, point.name, exc)
            return None

    def image(self, table: Register, start: int, count: int) -> list[int]:
        """Registers (or bits as 0/1) [start, start+count) as served now; unmapped ones are 0."""
        t_s = self.clock()
        out = [0] * count
        end = start + count
        covered: set[int] = set()
        bit_words: dict[Point, int] = {}
        for point in self.points(table):
            p_start, p_end = _span(point)
            if p_end <= start or p_start >= end:
                continue
            if point.bit is not None:
                bit_words[point] = 0
                continue
            regs = self._encode(point, t_s)
            if regs is None:
                continue
            for i, reg in enumerate(regs):
                if start <= p_start + i < end:
                    out[p_start + i - start] = reg
                    covered.add(p_start + i)
        # Single-bit points whose word no whole-word point serves: compose the word.
        words: dict[tuple[int, int], tuple[Point, int]] = {}
        for point in bit_words:
            p_start, p_end = _span(point)
            if any(a in covered for a in range(p_start, p_end)):
                continue
            assert point.bit is not None  # noqa: S101
            on = bool(self.value_at(point, t_s))
            key = (p_start, p_end)
            proto, word = words.get(key, (point, 0))
            words[key] = (proto, codec.set_bit(word, point.bit, value=on))
        for (p_start, _p_end), (proto, word) in words.items():
            assert proto.type is not None  # noqa: S101
            for i, reg in enumerate(codec.encode_registers(word, proto.type, proto.order)):
                if start <= p_start + i < end:
                    out[p_start + i - start] = reg
        for address, reg in self._written[table].items():
            if start <= address < end:
                out[address - start] = reg
        return out

    def reading(self, name: str) -> values.Reading:
        """The value the unit serves for a point now, decoded through the shared codec."""
        point = self.model.point(name)
        assert point.register is not None  # noqa: S101
        p_start, p_end = _span(point)
        return values.decode_registers(point, self.image(point.register, p_start, p_end - p_start))

    def write(self, table: Register, start: int, regs: list[int]) -> None:
        """Apply a write of registers (or bits); ModbusError when the device would refuse it."""
        end = start + len(regs)
        targets: list[Point] = []
        for address in range(start, end):
            owners = [p for p in self.points(table) if _span(p)[0] <= address < _span(p)[1]]
            if not owners or not all(p.writable is not None for p in owners):
                raise ModbusError(ILLEGAL_ADDRESS, f"register {address} of {table} is not writable")
            targets.extend(p for p in owners if p not in targets)
        staged = dict(self._written[table])
        for i, reg in enumerate(regs):
            staged[start + i] = reg
        for point in targets:
            p_start, p_end = _span(point)
            if p_start < start or p_end > end:
                continue  # partly written: its other registers keep their value
            reading = values.decode_registers(point, regs[p_start - start : p_end - start])
            limits = point.writable
            assert limits is not None  # noqa: S101
            number = reading.value
            if not reading.quality.good:
                raise ModbusError(ILLEGAL_VALUE, f"point {point.name}: {reading.quality}")
            if isinstance(number, int | float) and not limits.min <= float(number) <= limits.max:
                raise ModbusError(ILLEGAL_VALUE, f"point {point.name}: {number} outside [{limits.min}, {limits.max}]")
        self._written[table] = staged

    def forget_writes(self) -> None:
        """Return every written point to its profile."""
        for table in self._written.values():
            table.clear()


def crc16(data: bytes) -> int:
    """Modbus RTU CRC-16 (polynomial 0xA001, initial 0xFFFF); sent low byte first."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def rtu_frame(unit: int, pdu: bytes) -> bytes:
    """An RTU frame: unit, PDU and CRC (low byte first)."""
    body = bytes([unit]) + pdu
    return body + struct.pack("<H", crc16(body))


def rtu_request_length(buf: bytes | bytearray) -> int | None:
    """Length of the RTU request at the start of buf; 0 when more bytes are needed; None when unknown."""
    if len(buf) < 2:
        return 0
    function = buf[1]
    if function in (READ_COILS, READ_DISCRETE, READ_HOLDING, READ_INPUT, WRITE_COIL, WRITE_REGISTER):
        return 8
    if function in (WRITE_COILS, WRITE_REGISTERS):
        if len(buf) < 7:
            return 0
        return 9 + buf[6]
    return None


def _pack_bits(bits: Iterable[int]) -> bytes:
    out = bytearray()
    for i, bit in enumerate(bits):
        if i % 8 == 0:
            out.append(0)
        if bit:
            out[-1] |= 1 << (i % 8)
    return bytes(out)


def _unpack_bits(data: bytes, count: int) -> list[int]:
    return [data[i // 8] >> (i % 8) & 1 for i in range(count)]


class ModbusSimulator:
    """A Modbus server for one or more units (device models), started in-process.

    Use ``async with ModbusSimulator(model) as sim`` (listens on a free loopback port,
    ``sim.port``), or ``await sim.start(host, port)`` and ``await sim.stop()``; a serial
    line (or one end of a pseudo-terminal pair) is served with ``await sim.serve_serial(path)``.
    Every request is recorded in ``sim.requests``; faults are set per unit in ``sim.faults``.
    """

    def __init__(
        self,
        devices: DeviceModel | Mapping[int, DeviceModel],
        *,
        seed: int = 0,
        framer: Framer = "tcp",
        clock: Callable[[], float] | None = None,
    ) -> None:
        units = {1: devices} if isinstance(devices, DeviceModel) else dict(devices)
        if not units:
            raise ValueError("a simulator needs at least one unit")
        for unit in units:
            if not 1 <= unit <= 247:
                raise ValueError(f"unit id {unit} is outside 1..247")
        self.units: dict[int, SimDevice] = {u: SimDevice(m, seed, clock) for u, m in units.items()}
        self.faults: dict[int, Faults] = {u: Faults() for u in units}
        self.framer: Framer = framer
        self.requests: list[Request] = []
        self.accepted = 0  # connections accepted since start
        self.host = "127.0.0.1"
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: dict[int, asyncio.StreamWriter] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._serial: list[tuple[int, asyncio.StreamReader]] = []

    # ---------------------------------------------------------------- lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on host:port (port 0: a free one); the port it listens on."""
        self._server = await asyncio.start_server(self._on_connection, host, port)
        sock = self._server.sockets[0]
        self.host, self.port = host, int(sock.getsockname()[1])
        log.info("modbus simulator (%s) listening on %s:%d", self.framer, self.host, self.port)
        return self.port

    async def serve_serial(self, path: str) -> None:
        """Serve RTU on a serial device (or one end of a pty pair) until stopped."""
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        with contextlib.suppress(termios.error):
            tty.setraw(fd)
        reader = asyncio.StreamReader()
        self._serial.append((fd, reader))
        loop = asyncio.get_running_loop()

        def readable() -> None:
            try:
                data = os.read(fd, 4096)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if data:
                reader.feed_data(data)
            elif not reader.at_eof():
                loop.remove_reader(fd)
                reader.feed_eof()

        def write(data: bytes) -> None:
            view = memoryview(data)
            while view:
                try:
                    view = view[os.write(fd, view) :]
                except BlockingIOError:
                    continue  # a pty buffer holds kilobytes; frames are at most 256 bytes

        loop.add_reader(fd, readable)
        self._spawn(self._serve_rtu(reader, write, lambda: None, connection=-1, bus=True))

    async def stop(self) -> None:
        """Stop listening and close every connection and serial line."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers.values()):
            writer.close()
        loop = asyncio.get_running_loop()
        for fd, reader in self._serial:
            loop.remove_reader(fd)
            with contextlib.suppress(OSError):
                os.close(fd)
            reader.feed_eof()
        self._serial.clear()
        # Closed connections end their handlers; give them a moment before cancelling.
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    def drop_connections(self) -> int:
        """Close every open TCP connection now (as a gateway does after an idle timeout)."""
        writers = list(self._writers.values())
        for writer in writers:
            writer.close()
        return len(writers)

    # ---------------------------------------------------------------- counting

    def count(self, unit: int | None = None, functions: Iterable[int] = READ_FUNCTIONS) -> int:
        """Requests received (for a unit, of the given function codes; reads by default)."""
        wanted = frozenset(functions)
        return sum(1 for r in self.requests if (unit is None or r.unit == unit) and r.function in wanted)

    def unit(self, unit: int = 1) -> SimDevice:
        """The simulated device at a unit id."""
        return self.units[unit]

    def fault(self, unit: int = 1) -> Faults:
        """The faults of a unit."""
        return self.faults[unit]

    # ---------------------------------------------------------------- connections

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        conn = self.accepted
        self._writers[conn] = writer
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            if self.framer == "tcp":
                await self._serve_mbap(reader, writer, conn)
            else:
                await self._serve_rtu(reader, writer.write, writer.close, connection=conn, bus=False)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Only stop() cancels a connection; asyncio's stream callback must not see it.
            pass
        finally:
            self._writers.pop(conn, None)
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _serve_mbap(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: int) -> None:
        while True:
            header = await reader.readexactly(7)
            tid, pid, length, unit = struct.unpack(">HHHB", header)
            if length < 2 or length > 254:
                log.warning("connection %d: bad MBAP length %d; closing", conn, length)
                return
            pdu = await reader.readexactly(length - 1)
            if pid != 0:
                continue  # not Modbus: ignore the frame
            answer = await self._answer(unit, pdu, conn, tcp=True)
            if isinstance(answer, _Drop):
                return
            if answer is None:
                continue
            body, corrupt = answer
            frame = struct.pack(">HHHB", tid, 0xFFFF if corrupt else 0, len(body) + 1, unit) + body
            writer.write(frame)
            await writer.drain()

    async def _serve_rtu(
        self,
        reader: asyncio.StreamReader,
        write: Callable[[bytes], object],
        close: Callable[[], object],
        *,
        connection: int,
        bus: bool,
    ) -> None:
        buf = bytearray()
        while True:
            need = rtu_request_length(buf)
            if need is None:
                del buf[0]  # not a request we know how to frame: hunt for the next one
                continue
            if need == 0 or len(buf) < need:
                data = await reader.read(512)
                if not data:
                    return
                buf += data
                continue
            frame = bytes(buf[:need])
            if struct.unpack("<H", frame[-2:])[0] != crc16(frame[:-2]):
                del buf[0]  # line noise or a partial frame: hunt
                continue
            del buf[:need]
            unit, pdu = frame[0], frame[1:-2]
            answer = await self._answer(unit, pdu, connection, tcp=False)
            if isinstance(answer, _Drop):
                if not bus:
                    close()
                    return
                continue
            if answer is None:
                continue
            body, corrupt = answer
            out = rtu_frame(unit, body)
            if corrupt:
                out = out[:-2] + bytes([out[-2] ^ 0xFF, out[-1] ^ 0xFF])
            write(out)

    # ---------------------------------------------------------------- requests

    async def _answer(self, unit: int, pdu: bytes, conn: int, *, tcp: bool) -> tuple[bytes, bool] | _Drop | None:
        """The response PDU and whether to corrupt it; None for no answer; DROP to close."""
        target = unit
        if unit not in self.units:
            if tcp and unit in (0, 255) and len(self.units) == 1:
                target = next(iter(self.units))
            elif tcp:
                self.requests.append(Request(unit, pdu[0] if pdu else 0, 0, 0, conn))
                return (bytes([(pdu[0] if pdu else 0) | 0x80, GATEWAY_TARGET_FAILED]), False)
            elif unit == BROADCAST:
                if pdu and pdu[0] in WRITE_FUNCTIONS:  # broadcast writes reach every unit, unanswered
                    for number, device in self.units.items():
                        with contextlib.suppress(ModbusError):
                            self._execute(device, self.faults[number], pdu)
                return None
            else:
                return None  # another unit on the bus: not ours to answer
        function = pdu[0] if pdu else 0
        address, count = _address_count(pdu)
        self.requests.append(Request(target, function, address, count, conn))
        faults = self.faults[target]
        if faults.drop > 0:
            faults.drop -= 1
            return DROP
        if faults.silent:
            return None
        if faults.delay_s > 0:
            await asyncio.sleep(faults.delay_s)
        try:
            body = self._execute(self.units[target], faults, pdu)
        except ModbusError as exc:
            log.debug("unit %d function %d at %d+%d: %s", target, function, address, count, exc)
            body = bytes([function | 0x80, exc.code])
        corrupt = faults.corrupt > 0
        if corrupt:
            faults.corrupt -= 1
        return body, corrupt

    def _execute(self, device: SimDevice, faults: Faults, pdu: bytes) -> bytes:
        if len(pdu) < 5:
            raise ModbusError(ILLEGAL_FUNCTION if pdu and pdu[0] not in TABLE_OF else ILLEGAL_VALUE, "short request")
        function = pdu[0]
        if function not in TABLE_OF:
            raise ModbusError(ILLEGAL_FUNCTION, f"function {function} is not supported")
        table = TABLE_OF[function]
        address, count = _address_count(pdu)
        if function in (WRITE_COIL, WRITE_REGISTER):
            count = 1
        limit = {
            READ_COILS: min(faults.max_bits, MAX_BITS_PER_READ),
            READ_DISCRETE: min(faults.max_bits, MAX_BITS_PER_READ),
            READ_HOLDING: min(faults.max_registers, MAX_REGISTERS_PER_READ),
            READ_INPUT: min(faults.max_registers, MAX_REGISTERS_PER_READ),
            WRITE_COIL: 1,
            WRITE_REGISTER: 1,
            WRITE_COILS: MAX_WRITE_COILS,
            WRITE_REGISTERS: MAX_WRITE_REGISTERS,
        }[function]
        if not 1 <= count <= limit:
            raise ModbusError(ILLEGAL_VALUE, f"quantity {count} outside 1..{limit}")
        if address + count > 0x10000:
            raise ModbusError(ILLEGAL_ADDRESS, f"{address}+{count} runs past 65535")
        for a in range(address, address + count):
            code = faults.exceptions.get((table, a))
            if code is not None:
                raise ModbusError(code, f"{table} {a} is set to fail")
        if function in READ_FUNCTIONS:
            image = device.image(table, address, count)
            data = _pack_bits(image) if table.is_bit else b"".join(struct.pack(">H", r) for r in image)
            return bytes([function, len(data)]) + data
        return self._write(device, pdu, table, count)

    @staticmethod
    def _write(device: SimDevice, pdu: bytes, table: Register, count: int) -> bytes:
        function, address = pdu[0], _address_count(pdu)[0]
        if function == WRITE_COIL:
            raw = struct.unpack(">H", pdu[3:5])[0]
            if raw not in (0x0000, 0xFF00):
                raise ModbusError(ILLEGAL_VALUE, f"coil value 0x{raw:04X} is neither 0xFF00 nor 0x0000")
            device.write(table, address, [1 if raw else 0])
            return pdu[:5]
        if function == WRITE_REGISTER:
            device.write(table, address, [struct.unpack(">H", pdu[3:5])[0]])
            return pdu[:5]
        if len(pdu) < 6:
            raise ModbusError(ILLEGAL_VALUE, "short write request")
        byte_count = pdu[5]
        data = pdu[6 : 6 + byte_count]
        expected = (count + 7) // 8 if function == WRITE_COILS else count * 2
        if byte_count != expected or len(data) != expected:
            raise ModbusError(ILLEGAL_VALUE, f"byte count {byte_count} does not match quantity {count}")
        if function == WRITE_COILS:
            device.write(table, address, _unpack_bits(data, count))
        else:
            device.write(table, address, list(struct.unpack(f">{count}H", data)))
        return pdu[:5]




def _address_count(pdu: bytes) -> tuple[int, int]:
    if len(pdu) < 5:
        return 0, 0
    address, count = struct.unpack(">HH", pdu[1:5])
    return int(address), int(count)


def ready_line(model: DeviceModel, host: str, port: int) -> str:
    """The one line dcim-sim prints when the device serves."""
    return f"ready modbus {model.id} on {host}:{port}"


async def _serve(model: DeviceModel, host: str, port: int, seed: int) -> int:
    sim = ModbusSimulator(model, seed=seed)
    try:
        await sim.start(host, port)
    except OSError as exc:
        sys.stderr.write(f"dcim-sim device {model.id}: cannot listen on {host}:{port}: {exc}\n")
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    sys.stdout.write(ready_line(model, host, sim.port) + "\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await sim.stop()
    return 0


def serve_forever(model: DeviceModel, host: str, port: int, seed: int) -> int:
    """Serve one simulated device over Modbus TCP until SIGINT or SIGTERM; the exit code."""
    return asyncio.run(_serve(model, host, port, seed))


class ThreadedSimulator:
    """A simulator serving from its own thread and event loop, for synchronous callers.

    ``with ThreadedSimulator(model) as sim:`` serves on a free loopback port (``sim.port``);
    ``sim.call(fn)`` runs fn(simulator) on the simulator's loop (to set faults or read values).
    """

    def __init__(self, devices: DeviceModel | Mapping[int, DeviceModel], **kwargs: Any) -> None:
        self._devices = devices
        self._kwargs = kwargs
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="modbus-sim", daemon=True)
        self._sim: ModbusSimulator | None = None
        self.port = 0

    @property
    def simulator(self) -> ModbusSimulator:
        """The simulator (touch it only through call() while it serves)."""
        if self._sim is None:
            raise RuntimeError("the simulator is not started")
        return self._sim

    def start(self, host: str = "127.0.0.1", port: int = 0, timeout_s: float = 10.0) -> int:
        """Start serving; the port."""
        self._thread.start()

        async def make() -> ModbusSimulator:
            sim = ModbusSimulator(self._devices, **self._kwargs)
            await sim.start(host, port)
            return sim

        self._sim = asyncio.run_coroutine_threadsafe(make(), self._loop).result(timeout_s)
        self.port = self._sim.port
        return self.port

    def call(self, fn: Callable[[ModbusSimulator], Any], timeout_s: float = 10.0) -> Any:
        """Run fn(simulator) on the simulator's loop and return its result."""
        sim = self.simulator

        async def run() -> Any:
            return fn(sim)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop serving and end the thread."""
        if self._sim is not None:
            asyncio.run_coroutine_threadsafe(self._sim.stop(), self._loop).result(timeout_s)
            self._sim = None
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout_s)
        self._loop.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
