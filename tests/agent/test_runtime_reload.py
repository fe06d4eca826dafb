"""SIGHUP: changed devices restart, unchanged ones keep polling, an invalid file is rejected."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from agent import config as agent_config
from agent.runtime import Runtime
from tests.agent.agent_helpers import base_sections, simulators, wait_until, write_config
from tests.support.servers import Mosquitto

pytestmark = pytest.mark.servers


async def _hup(runtime: Runtime) -> None:
    runtime.reloaded.clear()
    os.kill(os.getpid(), signal.SIGHUP)
    await asyncio.wait_for(runtime.reloaded.wait(), 30)


async def test_sighup_reloads_devices_and_rejects_a_broken_file(mosquitto: Mosquitto, tmp_path: Path) -> None:
    with simulators("meter-sdm630", "pump-modbus") as (meter, pump):
        sections = base_sections(tmp_path, mosquitto.url)
        a = {"id": "meter-a", "model": "meter-sdm630", "port": meter.port, "interval_s": 0.3}
        b = {"id": "pump-b", "model": "pump-modbus", "port": pump.port, "interval_s": 0.3}
        c = {"id": "meter-c", "model": "meter-sdm630", "port": meter.port, "interval_s": 0.3}
        config = write_config(tmp_path / "agent.toml", sections, [a, b])
        runtime = Runtime(agent_config.load(config))
        task = asyncio.create_task(runtime.run())
        try:
            await asyncio.wait_for(runtime.running.wait(), 30)
            await wait_until(lambda: min(runtime.state(i).polls_ok for i in ("meter-a", "pump-b")) >= 2)
            kept, restarted = runtime.state("meter-a"), runtime.state("pump-b")

            # B's interval changes, C is added, A is untouched.
            write_config(config, sections, [a, {**b, "interval_s": 0.4}, c])
            await _hup(runtime)
            assert (runtime.reloads, runtime.reload_errors) == (1, 0)
            assert runtime.state("meter-a") is kept
            assert runtime.state("pump-b") is not restarted
            assert runtime.state("pump-b").device.interval_s == 0.4
            polls_a = kept.polls_ok
            await wait_until(lambda: runtime.state("meter-c").polls_ok >= 2 and runtime.state("pump-b").polls_ok >= 2)
            await wait_until(lambda: kept.polls_ok > polls_a, what="meter-a to keep polling")
            assert kept.missed == 0  # the reload cost the unchanged device no poll

            # A broken file: rejected, everything keeps running as it was.
            config.write_text(config.read_text() + "\n[agent.bogus]\nx = 1\n")
            states = {i: runtime.state(i) for i in ("meter-a", "pump-b", "meter-c")}
            await _hup(runtime)
            assert (runtime.reloads, runtime.reload_errors) == (1, 1)
            assert {i: runtime.state(i) for i in states} == states
            polls = {i: s.polls_ok for i, s in states.items()}
            await wait_until(lambda: all(s.polls_ok > polls[i] for i, s in states.items()), what="polling to go on")

            # Removing a device stops its polls.
            write_config(config, sections, [a, {**b, "interval_s": 0.4}])
            await _hup(runtime)
            assert runtime.reloads == 2
            with pytest.raises(KeyError):
                runtime.state("meter-c")
            assert runtime.state("meter-a") is kept
        finally:
            runtime.stop()
            assert await asyncio.wait_for(task, 60) == 0
