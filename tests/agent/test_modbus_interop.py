"""Interoperability: standard Modbus tools read our simulators; our driver reads servers that are not ours.

The standard tool is mbpoll (Debian package mbpoll, built on libmodbus). The foreign
server is a few lines of C on libmodbus (Debian package libmodbus-dev), compiled here:
neither shares code with our simulator or with the client library our driver uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import struct
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agent import config as agent_config
from agent.config import Device
from agent.drivers.modbus import ModbusDriver
from models import catalog
from models.quality import Quality
from models.schema import Register
from simulators.modbus import ModbusSimulator
from tests.agent.test_modbus_serial import PtyPair, pty_pair  # noqa: F401  (fixture)
from tests.support import servers

FROZEN_T_S = 777.0

LIBMODBUS_SERVER_C = r"""
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <modbus.h>

/* usage: server PORT N [h|i|c|d:ADDR:VALUE]...  Maps addresses 0..N-1 of every table. */
int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int port = atoi(argv[1]), n = atoi(argv[2]);
    modbus_mapping_t *map = modbus_mapping_new(n, n, n, n);
    for (int i = 3; i < argc; i++) {
        char t; int a; long v;
        if (sscanf(argv[i], "%c:%d:%ld", &t, &a, &v) != 3 || a < 0 || a >= n) return 2;
        if (t == 'h') map->tab_registers[a] = (uint16_t)v;
        else if (t == 'i') map->tab_input_registers[a] = (uint16_t)v;
        else if (t == 'c') map->tab_bits[a] = (uint8_t)v;
        else if (t == 'd') map->tab_input_bits[a] = (uint8_t)v;
        else return 2;
    }
    modbus_t *ctx = modbus_new_tcp("127.0.0.1", port);
    int server = modbus_tcp_listen(ctx, 4);
    if (server < 0) { fprintf(stderr, "listen: %s\n", modbus_strerror(errno)); return 1; }
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        if (modbus_tcp_accept(ctx, &server) < 0) return 1;
        for (;;) {
            uint8_t query[MODBUS_TCP_MAX_ADU_LENGTH];
            int rc = modbus_receive(ctx, query);
            if (rc > 0) modbus_reply(ctx, query, rc, map);
            else if (rc == -1) break;
        }
        close(modbus_get_socket(ctx));
    }
}
"""


def _need(what: str, hint: str) -> None:
    message = f"{what} is not installed ({hint})"
    if servers.servers_required():
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def mbpoll() -> str:
    path = shutil.which("mbpoll")
    if path is None:
        _need("mbpoll", "apt-get install mbpoll")
    assert path is not None
    return path


@pytest.fixture(scope="module")
def libmodbus_server(tmp_path_factory: pytest.TempPathFactory) -> str:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or not Path("/usr/include/modbus/modbus.h").is_file():
        _need("a C compiler with libmodbus headers", "apt-get install gcc libmodbus-dev")
    assert cc is not None
    folder = tmp_path_factory.mktemp("libmodbus")
    (folder / "server.c").write_text(LIBMODBUS_SERVER_C)
    binary = folder / "server"
    subprocess.run(
        [cc, "-O", "-o", str(binary), str(folder / "server.c"), "-I/usr/include/modbus", "-lmodbus"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return str(binary)


async def run_mbpoll(mbpoll: str, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        mbpoll, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    async with asyncio.timeout(30):
        out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


def mbpoll_values(output: str) -> dict[int, str]:
    """The `[reference]: value` lines mbpoll prints."""
    return {int(m[1]): m[2].split()[0] for m in re.finditer(r"^\[(\d+)\]:\s+(\S.*)$", output, re.MULTILINE)}


async def test_mbpoll_reads_the_meter_at_its_documented_registers(mbpoll: str) -> None:
    model = catalog.load("meter-sdm630")
    async with ModbusSimulator(model, clock=lambda: FROZEN_T_S) as sim:
        # Register numbers 30001, 30003, ... as the meter's manual gives them: mbpoll references are 1-based.
        rc, out = await run_mbpoll(mbpoll, "-m", "tcp", "-p", str(sim.port), "-a", "1", "-t", "3:float", "-B",
                                   "-r", "1", "-c", "6", "-1", "127.0.0.1")
        rc2, out2 = await run_mbpoll(mbpoll, "-m", "tcp", "-p", str(sim.port), "-t", "3:float", "-B",
                                     "-r", str(0x156 + 1), "-c", "1", "-1", "127.0.0.1")
        served = sim.unit(1)
        expected = {1 + 2 * i: served.reading(n).value for i, n in enumerate(
            ["l1_voltage", "l2_voltage", "l3_voltage", "l1_current", "l2_current", "l3_current"])}
        total = served.reading("total_energy").value
    assert rc == 0, out
    assert rc2 == 0, out2
    got = mbpoll_values(out)
    assert set(got) == set(expected)
    for ref, value in expected.items():
        assert isinstance(value, float)
        assert float(got[ref]) == pytest.approx(value, rel=1e-5), ref
    assert isinstance(total, float)
    assert float(mbpoll_values(out2)[0x156 + 1]) == pytest.approx(total, rel=1e-5)


async def test_mbpoll_reads_the_ups_holding_registers(mbpoll: str) -> None:
    model = catalog.load("ups-apc-modbus")
    async with ModbusSimulator(model, clock=lambda: FROZEN_T_S) as sim:
        rc, out = await run_mbpoll(mbpoll, "-m", "tcp", "-p", str(sim.port), "-0", "-t", "4",
                                   "-r", "128", "-c", "4", "-1", "127.0.0.1")
        rc2, out2 = await run_mbpoll(mbpoll, "-m", "tcp", "-p", str(sim.port), "-0", "-t", "4:int", "-B",
                                     "-r", "128", "-c", "1", "-1", "127.0.0.1")
        served = sim.unit(1)
        charge = served.reading("battery_charge").value
        runtime = served.reading("runtime_remaining").value
    assert rc == 0, out
    assert rc2 == 0, out2
    got = mbpoll_values(out)
    assert isinstance(charge, float)
    assert int(got[130]) / 512 == pytest.approx(charge)  # register 130: charge / 2^9
    assert int(mbpoll_values(out2)[128]) == runtime  # registers 128-129: uint32, high word first


async def test_mbpoll_reads_bits_and_writes_a_setpoint(mbpoll: str) -> None:
    model = catalog.load("tower-modbus")
    async with ModbusSimulator(model) as sim:
        rc, out = await run_mbpoll(mbpoll, "-m", "tcp", "-p", str(sim.port), "-0", "-t", "1",
                                   "-r", "0", "-c", "4", "-1", "127.0.0.1")
        # mbpoll writes when values follow the host: fan speed setpoint 65.0 % is 650 (x 0.1).
        rc2, out2 = await run_mbpoll(mbpoll, "-m", "tcp", "-p", str(sim.port), "-0", "-t", "4",
                                     "-r", "102", "127.0.0.1", "650")
        after = sim.unit(1).reading("fan_speed_setpoint")
        rc3, out3 = await run_mbpoll(mbpoll, "-m", "tcp", "-p", str(sim.port), "-0", "-t", "4",
                                     "-r", "102", "127.0.0.1", "2000")  # 200 %: outside the limits
        refused = sim.unit(1).reading("fan_speed_setpoint")
    assert rc == 0, out
    assert mbpoll_values(out) == {0: "1", 1: "0", 2: "0", 3: "0"}
    assert rc2 == 0, out2
    assert after.value == 65.0
    assert rc3 != 0
    assert "Illegal data value" in out3
    assert refused.value == 65.0


async def test_mbpoll_reads_the_simulator_over_rtu_on_a_serial_line(mbpoll: str, pty_pair: PtyPair) -> None:  # noqa: F811
    model = catalog.load("pump-modbus")
    sim = ModbusSimulator({7: model}, clock=lambda: FROZEN_T_S)
    await sim.serve_serial(pty_pair.sim_end)
    try:
        rc, out = await run_mbpoll(mbpoll, "-m", "rtu", "-b", "19200", "-P", "none", "-a", "7", "-0", "-t", "4",
                                   "-r", "0", "-c", "6", "-1", pty_pair.agent_end)
        served = sim.unit(7)
        expected = dict(enumerate(served.image(Register.HOLDING, 0, 6)))
    finally:
        await sim.stop()
    assert rc == 0, out
    assert {k: int(v) for k, v in mbpoll_values(out).items()} == expected


# ----------------------------------------------------------------- a server that is not ours

FOREIGN_MODEL = """
id = "foreign-device"
kind = "generic"
protocol = "modbus"

[[points]]
name = "f32_abcd"
register = "holding"
address = 0
type = "float32"
order = "ABCD"

[[points]]
name = "f32_cdab"
register = "holding"
address = 2
type = "float32"
order = "CDAB"

[[points]]
name = "i32_badc"
register = "holding"
address = 4
type = "int32"
order = "BADC"

[[points]]
name = "scaled"
unit = "V"
register = "holding"
address = 6
type = "uint16"
scale = 0.1

[[points]]
name = "negative"
register = "holding"
address = 7
type = "int16"

[[points]]
name = "label"
register = "holding"
address = 8
type = "string"
length = 4

[[points]]
name = "u64_dcba"
register = "holding"
address = 12
type = "uint64"
order = "DCBA"

[[points]]
name = "last_mapped"
register = "holding"
address = 99
type = "uint16"

[[points]]
name = "beyond_the_map"
register = "holding"
address = 100
type = "uint16"

[[points]]
name = "f64_input"
register = "input"
address = 0
type = "float64"

[[points]]
name = "coil"
register = "coil"
address = 0

[[points]]
name = "discrete"
register = "discrete"
address = 3
"""


def words(fmt: str, value: object) -> list[int]:
    data = struct.pack(fmt, value)
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def foreign_registers() -> list[str]:
    """Register contents for the libmodbus server, encoded here with struct, not with our codec."""
    regs: dict[str, int] = {}
    for i, w in enumerate(words(">f", 230.5)):
        regs[f"h:{0 + i}"] = w
    hi, lo = words(">f", -12.25)
    regs["h:2"], regs["h:3"] = lo, hi  # CDAB: low word first
    a, b = words(">i", -123456)
    regs["h:4"], regs["h:5"] = ((a & 0xFF) << 8) | (a >> 8), ((b & 0xFF) << 8) | (b >> 8)  # BADC: bytes swapped
    regs["h:6"] = 2305
    regs["h:7"] = 65536 - 42
    for i, w in enumerate(words(">8s", b"ABCDEFG\x00")):
        regs[f"h:{8 + i}"] = w
    for i, w in enumerate(reversed(words(">Q", 0x0102030405060708))):
        regs[f"h:{12 + i}"] = ((w & 0xFF) << 8) | (w >> 8)  # DCBA: little-endian throughout
    regs["h:99"] = 4242
    for i, w in enumerate(words(">d", 3.14159265358979)):
        regs[f"i:{i}"] = w
    args = [f"{k}:{v}" for k, v in regs.items()]
    return [*args, "c:0:1", "d:3:1"]


@contextlib.contextmanager
def foreign_server(binary: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([binary, str(port), "100", *foreign_registers()], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)


@pytest.fixture
async def foreign(libmodbus_server: str, tmp_path: Path) -> AsyncIterator[Device]:
    model_file = tmp_path / "foreign-device.toml"
    model_file.write_text(FOREIGN_MODEL)
    port = servers.free_port()
    cfg = agent_config.parse(
        tmp_path / "agent.toml",
        {"agent": {"id": "edge", "site": "s"}, "devices": [{"id": "x", "model": str(model_file), "port": port}]},
    )
    with foreign_server(libmodbus_server, port):
        yield cfg.devices[0]


async def test_the_driver_reads_a_libmodbus_server(foreign: Device) -> None:
    driver = ModbusDriver()
    try:
        result = await driver.poll(foreign)
        again = await driver.poll(foreign)
    finally:
        await driver.close()
    values = {n: r.value for n, r in result.points.items()}
    assert values == {
        "f32_abcd": 230.5,
        "f32_cdab": -12.25,
        "i32_badc": -123456,
        "scaled": pytest.approx(230.5),
        "negative": -42,
        "label": "ABCDEFG",
        "u64_dcba": 0x0102030405060708,
        "last_mapped": 4242,
        "beyond_the_map": None,
        "f64_input": 3.14159265358979,
        "coil": True,
        "discrete": True,
    }
    assert result.points["beyond_the_map"].quality is Quality.ILLEGAL_ADDRESS
    assert again.points == result.points


async def test_the_driver_writes_to_a_libmodbus_server(foreign: Device, tmp_path: Path) -> None:
    model_file = tmp_path / "writable.toml"
    model_file.write_text(
        FOREIGN_MODEL.replace('id = "foreign-device"', 'id = "writable"').replace(
            'order = "CDAB"\n', 'order = "CDAB"\nwritable = { min = -100.0, max = 100.0 }\n'
        )
    )
    device = agent_config.parse(
        tmp_path / "agent.toml",
        {"agent": {"id": "edge", "site": "s"},
         "devices": [{"id": "w", "model": str(model_file), "port": foreign.port}]},
    ).devices[0]
    driver = ModbusDriver()
    try:
        point = device.model.point("f32_cdab")
        result = await driver.write(device, point, 42.75)
        raw = await driver.poll(device)
    finally:
        await driver.close()
    assert result.ok, result.reason
    assert result.before == -12.25
    assert result.after == 42.75
    assert raw.points["f32_cdab"].value == 42.75
