"""The Modbus simulator on the wire (raw MBAP and RTU frames), its faults, and the catalog models."""

from __future__ import annotations

import asyncio
import re
import struct

import pytest

from models import catalog, values
from models.codec import ValueType
from models.schema import DeviceModel, Kind, Register
from simulators.modbus import ModbusSimulator, crc16, rtu_frame

MODBUS_MODELS = ["ups-apc-modbus", "meter-sdm630", "tower-modbus", "pump-modbus", "gateway-nbiot"]


class Client:
    """A raw Modbus client over one TCP connection: frames built by hand, not by any library."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.tid = reader, writer, 0

    @classmethod
    async def connect(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def mbap(self, unit: int, pdu: bytes, timeout_s: float = 2.0) -> tuple[int, int, bytes]:
        """Send a PDU; the answer's (protocol id, unit, PDU)."""
        self.tid += 1
        self.writer.write(struct.pack(">HHHB", self.tid, 0, len(pdu) + 1, unit) + pdu)
        async with asyncio.timeout(timeout_s):
            tid, pid, length, answer_unit = struct.unpack(">HHHB", await self.reader.readexactly(7))
            body = await self.reader.readexactly(length - 1)
        assert tid == self.tid
        return pid, answer_unit, body

    async def rtu(self, frame: bytes, answer_len: int, timeout_s: float = 2.0) -> bytes:
        self.writer.write(frame)
        async with asyncio.timeout(timeout_s):
            return await self.reader.readexactly(answer_len)

    async def close(self) -> None:
        self.writer.close()


def read_pdu(function: int, address: int, count: int) -> bytes:
    return struct.pack(">BHH", function, address, count)


def registers_of(pdu: bytes) -> list[int]:
    return list(struct.unpack(f">{pdu[1] // 2}H", pdu[2:]))


async def test_reads_answer_with_the_points_encoded_by_the_codec() -> None:
    model = catalog.load("meter-sdm630")
    async with ModbusSimulator(model, clock=lambda: 10.0) as sim:
        client = await Client.connect(sim.port)
        pid, unit, pdu = await client.mbap(1, read_pdu(4, 0, 6))
        await client.close()
    assert (pid, unit, pdu[0], pdu[1]) == (0, 1, 4, 12)
    regs = registers_of(pdu)
    voltage = struct.unpack(">f", struct.pack(">HH", regs[0], regs[1]))[0]
    assert voltage == sim.unit(1).reading("l1_voltage").value
    assert 220 < voltage < 240


@pytest.mark.parametrize(
    ("pdu", "code"),
    [
        (read_pdu(3, 0, 126), 3),  # more than 125 registers
        (read_pdu(3, 0, 0), 3),
        (read_pdu(1, 0, 2001), 3),  # more than 2000 bits
        (read_pdu(3, 65535, 2), 2),  # runs past the last register
        (struct.pack(">BBB", 43, 14, 1), 1),  # function the device does not offer
        (struct.pack(">BHH", 5, 0, 0x1234), 3),  # a coil is 0xFF00 or 0x0000
        (struct.pack(">BHH", 6, 0, 100), 2),  # pump speed (register 0) is read-only
        (struct.pack(">BHH", 6, 50, 1200), 3),  # speed setpoint 120 % is outside its limits
        (struct.pack(">BHHB", 16, 50, 2, 2) + b"\x00\x01", 3),  # byte count does not match
    ],
)
async def test_bad_requests_get_the_standard_exception(pdu: bytes, code: int) -> None:
    async with ModbusSimulator(catalog.load("pump-modbus")) as sim:
        client = await Client.connect(sim.port)
        _, _, answer = await client.mbap(1, pdu)
        await client.close()
    assert answer == bytes([pdu[0] | 0x80, code])


async def test_chosen_addresses_answer_with_chosen_exceptions_and_larger_reads_can_be_refused() -> None:
    async with ModbusSimulator(catalog.load("pump-modbus")) as sim:
        sim.fault().illegal(Register.HOLDING, 7)
        sim.fault().illegal(Register.HOLDING, 9, code=4)
        sim.fault().max_registers = 4
        client = await Client.connect(sim.port)
        answers = [(await client.mbap(1, read_pdu(3, a, n)))[2] for a, n in ((0, 4), (6, 2), (8, 2), (0, 5))]
        await client.close()
    assert answers[0][:2] == bytes([3, 8])
    assert answers[1:] == [bytes([0x83, 2]), bytes([0x83, 4]), bytes([0x83, 3])]


async def test_units_unit_255_and_unknown_units_on_tcp() -> None:
    async with ModbusSimulator({1: catalog.load("pump-modbus"), 2: catalog.load("tower-modbus")}) as two:
        client = await Client.connect(two.port)
        _, _, known = await client.mbap(2, read_pdu(4, 0, 2))
        _, _, unknown = await client.mbap(9, read_pdu(3, 0, 1))
        await client.close()
    async with ModbusSimulator(catalog.load("pump-modbus")) as one:
        client = await Client.connect(one.port)
        _, unit, direct = await client.mbap(255, read_pdu(3, 0, 1))
        await client.close()
    assert known[:2] == bytes([4, 4])
    assert unknown == bytes([0x83, 0x0B])  # gateway: target device failed to respond
    assert unit == 255
    assert direct[:2] == bytes([3, 2])


async def test_writes_are_kept_and_read_back_and_can_be_forgotten() -> None:
    model = catalog.load("tower-modbus")
    async with ModbusSimulator(model) as sim:
        client = await Client.connect(sim.port)
        regs = values.encode_registers(model.point("leaving_water_setpoint"), 27.0)
        write = struct.pack(">BHHB", 16, 100, 2, 4) + struct.pack(">HH", *regs)
        _, _, echo = await client.mbap(1, write)
        _, _, readback = await client.mbap(1, read_pdu(3, 100, 2))
        _, _, coil = await client.mbap(1, struct.pack(">BHH", 5, 0, 0x0000))
        _, _, coils = await client.mbap(1, read_pdu(1, 0, 1))
        sim.unit(1).forget_writes()
        _, _, restored = await client.mbap(1, read_pdu(3, 100, 2))
        await client.close()
    assert echo == struct.pack(">BHH", 16, 100, 2)
    assert registers_of(readback) == regs
    assert coil == struct.pack(">BHH", 5, 0, 0)
    assert coils == bytes([1, 1, 0])
    assert sim.unit(1).reading("leaving_water_setpoint").value == 29.5
    assert registers_of(restored) != regs


async def test_faults_silence_delay_drop_and_corrupt() -> None:
    async with ModbusSimulator(catalog.load("pump-modbus")) as sim:
        client = await Client.connect(sim.port)
        sim.fault().silent = True
        with pytest.raises(TimeoutError):
            await client.mbap(1, read_pdu(3, 0, 1), timeout_s=0.2)
        await client.close()
        sim.fault().silent = False
        sim.fault().corrupt = 1
        client = await Client.connect(sim.port)
        pid, _, _ = await client.mbap(1, read_pdu(3, 0, 1))
        pid_after, _, _ = await client.mbap(1, read_pdu(3, 0, 1))
        sim.fault().drop = 1
        client.writer.write(struct.pack(">HHHB", 99, 0, 6, 1) + read_pdu(3, 0, 1))
        async with asyncio.timeout(2):
            closed = await client.reader.read()
        await client.close()
    assert pid == 0xFFFF  # not a Modbus frame any more
    assert pid_after == 0
    assert closed == b""
    assert sim.accepted == 2
    assert sim.count() == 4


async def test_rtu_over_tcp_frames_crc_and_other_units() -> None:
    async with ModbusSimulator({2: catalog.load("pump-modbus")}, framer="rtu-over-tcp") as sim:
        client = await Client.connect(sim.port)
        good = rtu_frame(2, read_pdu(3, 0, 2))
        noisy = bytearray(good)
        noisy[-1] ^= 0x55
        # Line noise, then a frame for another unit, then a frame with a bad CRC, then ours:
        # only the last is answered.
        client.writer.write(b"\x00\xff" + rtu_frame(3, read_pdu(3, 0, 2)) + bytes(noisy) + good)
        answer = await client.rtu(b"", 9)
        sim.fault(2).corrupt = 1
        corrupted = await client.rtu(good, 9)
        await client.close()
    assert answer[:3] == bytes([2, 3, 4])
    assert struct.unpack("<H", answer[-2:])[0] == crc16(answer[:-2])
    assert struct.unpack("<H", corrupted[-2:])[0] != crc16(corrupted[:-2])
    assert sim.count() == 2


def test_crc16_matches_the_specification_example() -> None:
    # Modbus over serial line spec: read 1 holding register at 0 from unit 1 -> CRC 0x0A84 (84 0A on the wire).
    assert rtu_frame(1, bytes.fromhex("0300000001")).hex() == "010300000001840a"


async def test_the_same_seed_serves_the_same_values() -> None:
    model = catalog.load("gateway-nbiot")
    async with ModbusSimulator(model, seed=5, clock=lambda: 99.0) as a, ModbusSimulator(
        model, seed=5, clock=lambda: 99.0
    ) as b, ModbusSimulator(model, seed=6, clock=lambda: 99.0) as c:
        images = [s.unit(1).image(Register.HOLDING, 0, 144) for s in (a, b, c)]
    assert images[0] == images[1]
    assert images[0] != images[2]


def test_a_model_of_another_protocol_is_refused() -> None:
    snmp = DeviceModel.model_validate(
        {"id": "x", "kind": "ups", "protocol": "snmp", "points": [{"name": "a", "oid": "1.3.6.1.2.1.1.1.0"}]}
    )
    with pytest.raises(ValueError, match="speaks snmp"):
        ModbusSimulator(snmp)


# ------------------------------------------------------------------------ catalog


@pytest.mark.parametrize("model_id", MODBUS_MODELS)
def test_catalog_models_load_and_every_point_has_a_plausible_profile(model_id: str) -> None:
    model = catalog.load(model_id)
    assert model.id == model_id
    assert model.points
    for point in model.points:
        if point.bit is None:
            assert point.sim is not None, f"{model_id}.{point.name} has no sim profile"


def test_ups_apc_map_matches_the_vendor_registers() -> None:
    model = catalog.load("ups-apc-modbus")
    assert model.kind is Kind.UPS
    expected = {
        "status": (0, ValueType.UINT32, 1.0), "transfer_reason": (2, ValueType.UINT16, 1.0),
        "runtime_remaining": (128, ValueType.UINT32, 1.0), "battery_charge": (130, ValueType.UINT16, 2**-9),
        "battery_voltage": (131, ValueType.INT16, 2**-5), "battery_temperature": (135, ValueType.INT16, 2**-7),
        "load": (136, ValueType.UINT16, 2**-8), "output_current": (140, ValueType.UINT16, 2**-5),
        "output_voltage": (142, ValueType.UINT16, 2**-6), "output_frequency": (144, ValueType.UINT16, 2**-7),
        "input_voltage": (151, ValueType.UINT16, 2**-6), "firmware": (516, ValueType.STRING, 1.0),
        "model": (532, ValueType.STRING, 1.0), "serial_number": (564, ValueType.STRING, 1.0),
        "nominal_power": (589, ValueType.UINT16, 1.0),
    }
    for name, (address, type_, scale) in expected.items():
        point = model.point(name)
        assert (point.register, point.address, point.type, point.scale) == (Register.HOLDING, address, type_, scale)
    status_bits = model.point("status").bits or {}
    assert status_bits == {1: "online", 2: "on_battery", 3: "bypass", 4: "output_off", 5: "fault", 6: "input_bad",
                           7: "test", 13: "eco", 21: "overload"}
    assert model.point("input_voltage").na == 0xFFFF


def test_sdm630_map_matches_the_documented_input_registers() -> None:
    model = catalog.load("meter-sdm630")
    documented = {
        0x00: "l1_voltage", 0x02: "l2_voltage", 0x04: "l3_voltage", 0x06: "l1_current", 0x08: "l2_current",
        0x0A: "l3_current", 0x0C: "l1_power", 0x0E: "l2_power", 0x10: "l3_power", 0x34: "total_power",
        0x3E: "power_factor", 0x46: "frequency", 0x48: "import_energy", 0x4A: "export_energy",
        0x156: "total_energy",
    }
    by_address = {p.address: p for p in model.points}
    for address, name in documented.items():
        point = by_address[address]
        assert point.name == name
        assert (point.register, point.type, point.order.value) == (Register.INPUT, ValueType.FLOAT32, "ABCD")
    assert model.point("import_energy").counter
    assert model.point("total_energy").counter


def test_gateway_has_sixteen_sensors_with_every_quantity() -> None:
    model = catalog.load("gateway-nbiot")
    names = {p.name for p in model.points}
    sensors = sorted({m[1] for n in names if (m := re.match(r"^(sensor\d+)_", n))})
    assert len(sensors) >= 16
    units = {"temperature": "degC", "humidity": "%RH", "leak": "", "rsrp": "dBm", "battery": "%", "age": "s"}
    for sensor in sensors:
        for quantity, unit in units.items():
            assert model.point(f"{sensor}_{quantity}").unit == unit
        assert model.point(f"{sensor}_temperature").scale == pytest.approx(0.1)
        assert model.point(f"{sensor}_leak").type is ValueType.BOOL


@pytest.mark.parametrize(("model_id", "setpoints"), [
    ("tower-modbus", {"leaving_water_setpoint", "fan_speed_setpoint", "control_mode", "fan_enable"}),
    ("pump-modbus", {"speed_setpoint", "differential_pressure_setpoint", "control_mode", "run_command"}),
])
def test_towers_and_pumps_have_limited_writable_setpoints(model_id: str, setpoints: set[str]) -> None:
    model = catalog.load(model_id)
    writable = {p.name: p.writable for p in model.points if p.writable is not None}
    assert set(writable) == setpoints
    for name, limits in writable.items():
        assert limits is not None
        assert limits.min < limits.max, name
    for name in setpoints - {"control_mode", "fan_enable", "run_command"}:
        assert writable[name] is not None
        assert writable[name].max_step is not None
