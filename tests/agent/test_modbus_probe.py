"""`dcim-agent probe modbus`: raw registers decoded as every type in every word order."""

from __future__ import annotations

import re
import struct

import pytest

from agent.cli import main
from agent.probe import render
from models import catalog
from models.schema import Register
from simulators.modbus import ThreadedSimulator
from tests.support.servers import free_port


def row(lines: list[str], address: int, order: str, section: str) -> list[str]:
    """The cells of one row of one section (16-bit, 32-bit or 64-bit values)."""
    start = lines.index(f"{section} values")
    for line in lines[start + 2 :]:
        if not line:
            break
        cells = line.split()
        if cells[0] == str(address) and cells[1] == order:
            return cells[2:]
    raise AssertionError(f"no {section} row for {address} {order}")


def test_every_order_of_every_width_is_shown() -> None:
    high, low = struct.unpack(">HH", struct.pack(">f", 230.5))
    registers = [0x4142, low, high, 0xFFFE]
    lines = render(registers, 10)
    assert row(lines, 11, "CDAB", "32-bit")[2] == "230.5"
    assert row(lines, 11, "ABCD", "32-bit")[2] != "230.5"
    assert row(lines, 13, "ABCD", "16-bit") == ["65534", "-2"]
    assert row(lines, 10, "BADC", "16-bit")[0] == str(0x4241)
    for order in ("ABCD", "CDAB", "BADC", "DCBA"):
        assert len(row(lines, 10, order, "64-bit")) == 3
        assert len(row(lines, 12, order, "32-bit")) == 3
    with pytest.raises(AssertionError):
        row(lines, 11, "ABCD", "64-bit")  # only one 64-bit window fits in 4 registers
    assert "'AB" in "\n".join(lines)


def test_short_reads_show_only_the_widths_that_fit() -> None:
    lines = render([1], 0)
    assert "16-bit values" in lines
    assert "32-bit values" not in lines
    assert "64-bit values" not in lines


def probe(port: int, *extra: str) -> list[str]:
    return ["probe", "modbus", "--host", "127.0.0.1", "--port", str(port), *extra]


def test_probe_finds_the_word_order_of_a_device(capsys: pytest.CaptureFixture[str]) -> None:
    model = catalog.load("tower-modbus")
    with ThreadedSimulator(model, clock=lambda: 50.0) as sim:
        rc = main(probe(sim.port, "--address", "0", "--count", "4", "--register", "input"))
        served = sim.call(lambda s: s.unit(1).reading("leaving_water_temperature").value)
        requests = sim.call(lambda s: [(r.function, r.address, r.count) for r in s.requests])
    out = capsys.readouterr().out
    assert rc == 0
    lines = out.splitlines()
    assert lines[0] == f"127.0.0.1:{sim.port} unit 1, input registers 0..3 (4 registers, 0-based)"
    assert row(lines, 2, "CDAB", "32-bit")[2] == f"{served:.7g}"
    assert requests == [(4, 0, 4)]


def test_probe_reads_holding_registers_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    with ThreadedSimulator({4: catalog.load("ups-apc-modbus")}) as sim:
        rc = main(probe(sim.port, "--unit", "4", "--address", "532", "--count", "8"))
    out = capsys.readouterr().out
    assert rc == 0
    assert "'Smart-UPS SRT 10'" in out
    assert re.search(r"^\s+532\s+21357\s+0x536D\s+Sm$", out, re.MULTILINE)


def test_probe_reports_a_refused_read(capsys: pytest.CaptureFixture[str]) -> None:
    model = catalog.load("pump-modbus")
    with ThreadedSimulator(model) as sim:
        sim.call(lambda s: s.fault().illegal(Register.HOLDING, 3))
        rc = main(probe(sim.port, "--address", "0", "--count", "8"))
    err = capsys.readouterr().err
    assert rc == 1
    assert "exception 2 (illegal data address)" in err


def test_probe_reports_an_unreachable_device(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    rc = main(probe(port, "--address", "0", "--count", "2", "--timeout", "1"))
    err = capsys.readouterr().err
    assert rc == 1
    assert f"127.0.0.1:{port}" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--address", "0", "--count", "126"], "--count"),
        (["--address", "65535", "--count", "2"], "--address"),
        (["--address", "0", "--count", "1", "--unit", "300"], "--unit"),
    ],
)
def test_probe_rejects_bad_usage(extra: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(probe(502, *extra))
    assert rc == 2
    assert message in capsys.readouterr().err
