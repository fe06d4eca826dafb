"""The wall clock jumps back an hour and forward two (libfaketime from Debian's faketime package).

The agent runs under libfaketime with its offset read from a file on every clock call
(FAKETIME_NO_CACHE), so the test moves the agent's wall clock while it runs; the
monotonic clock is left alone, as a real clock step leaves it.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from tests.agent.agent_helpers import Subscriber, base_sections, simulators, write_config
from tests.chaos.helpers import all_seqs, count, good, missing, start_agent, wait
from tests.support import servers

pytestmark = [pytest.mark.chaos, pytest.mark.servers, pytest.mark.timeout(180)]

HOUR = 3600.0
JUMPED = "the wall clock jumped"
# libfaketime 0.9.10 breaks Python's time.sleep when the monotonic clock is left alone: Python
# 3.11 sleeps with clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME), which the library's wrapper
# turns into EINVAL (paho's reconnect wait then kills its thread). In the agent under test only,
# sleep is done with a select() timeout instead, which the library passes through.
SLEEP_FIX = """
import select
import time


def _sleep(seconds):
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    select.select([], [], [], seconds)


time.sleep = _sleep
"""


def _libfaketime() -> str:
    found = sorted(str(p) for p in Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"))
    if not found:
        message = "libfaketime is not installed (Debian package faketime)"
        if servers.servers_required():
            pytest.fail(message)
        pytest.skip(message)
    return found[0]


def test_polling_goes_on_when_the_wall_clock_jumps(mosquitto_bin: str, tmp_path: Path) -> None:
    lib = _libfaketime()
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLEEP_FIX)
    env = {
        "PYTHONPATH": str(site),
        "LD_PRELOAD": lib,
        "FAKETIME_TIMESTAMP_FILE": str(offset),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    broker = servers.start_mosquitto(mosquitto_bin, tmp_path / "broker")
    sub = Subscriber(broker.host, broker.port, persistent=True, client_id="chaos-collector").start()
    log = tmp_path / "agent.log"
    try:
        with simulators("meter-sdm630") as (meter,):
            devices: list[dict[str, object]] = [
                {"id": "meter-1", "model": "meter-sdm630", "port": meter.port, "interval_s": 0.3}
            ]
            agent = start_agent(
                write_config(tmp_path / "agent.toml", base_sections(tmp_path, broker.url), devices), log, env
            )
            try:

                def batches_after(n: int, k: int) -> None:
                    sub.wait_for(lambda _r: len(sub.batches("meter-1")) >= n + k, what=f"{k} batches after a jump")

                batches_after(0, 4)
                before = sub.batches("meter-1")[-1].ts
                marks = []
                for step, shift in enumerate(("-3600", "+3600"), start=1):
                    marks.append(len(sub.batches("meter-1")))
                    offset.write_text(f"{shift}\n")
                    wait(functools.partial(lambda n: count(log, JUMPED) >= n, step), f"jump {step} noticed in the log")
                    batches_after(marks[-1], 5)
                assert agent.terminate() == 0, agent.output()
            finally:
                agent.kill()
        sub.wait_for(lambda _r: not missing(all_seqs(sub)), what="every sequence number")
    finally:
        sub.stop()
        broker.stop()
    series = sub.batches("meter-1")
    back = [b for b in series[marks[0] :] if b.ts < before - HOUR / 2]
    forward = [b for b in series[marks[1] :] if b.ts > before + HOUR / 2]
    assert len(back) >= 3, "polling went on after the clock went back an hour"
    assert len(forward) >= 3, "polling went on after the clock went forward"
    assert all(good(b) for b in back + forward)
    text = log.read_text(errors="replace")
    assert "the wall clock jumped back by 36" in text, text[-2000:]
    assert "the wall clock jumped forward by 72" in text, text[-2000:]
    assert "Traceback" not in text
    assert not missing(all_seqs(sub))
