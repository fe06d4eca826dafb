"""End to end: dcim-sim site, dcim-agent run and dcim-collector run as processes, a real Mosquitto, SQLite store.

A mains failure triggered through the control API must reach the store as UPS states: on battery
(degraded), then output off (down) once the battery is flat, then normal when mains return; the
availability analytics then count a degraded period and downtime.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import pytest

from collector.analytics.availability import State, summarize, timeline_from_samples, ups_states
from collector.store.sqlite import SqliteStore
from simulators.site import agent_config_for, load_scenario
from tests.simulators.site_helpers import demo_scenario
from tests.support.servers import Mosquitto

pytestmark = [pytest.mark.servers, pytest.mark.slow]

BIN = Path(sys.executable).parent
WAIT_S = 90.0
POLL_INTERVAL_S = 1.0


@contextmanager
def process(args: list[str], log: Path, *, stdout: int | IO[bytes] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A child process, stopped by its own PID (SIGTERM, then SIGKILL) when the block ends."""
    with log.open("wb") as err:
        proc = subprocess.Popen(args, stdout=stdout if stdout is not None else err, stderr=err)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=15)


def ready_line(proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    """The simulator's one readiness line (fails when it exits or stays silent)."""
    assert proc.stdout is not None
    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout_s)
    if not lines or not lines[0]:
        pytest.fail(f"dcim-sim site printed no ready line within {timeout_s} s (exit code {proc.poll()})")
    return lines[0].decode()


def wait_for(what: str, check: Callable[[], bool], procs: list[subprocess.Popen[bytes]], logs: list[Path]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        for proc, log in zip(procs, logs, strict=True):
            if proc.poll() is not None:
                pytest.fail(
                    f"{log.stem} exited ({proc.returncode}) while waiting for {what}:\n{log.read_text()[-3000:]}"
                )
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {log.name}\n{log.read_text()[-2000:]}" for log in logs)
            pytest.fail(f"no {what} within {WAIT_S} s\n{tails}")
        time.sleep(0.2)  # re-read the store: the condition is what we wait on


def api(port: int, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310  (loopback http)
        return json.loads(resp.read())


def sources(store_path: Path, device: str) -> tuple[np.ndarray, list[str | None]]:
    if not store_path.exists():
        return np.zeros(0, dtype=np.int64), []
    store = SqliteStore(store_path, timeout_s=5.0)
    try:
        return store.read_text("ups", device, "output_source", 0, 2**62)
    finally:
        store.close()


def test_mains_failure_through_agent_and_collector(mosquitto: Mosquitto, tmp_path: Path) -> None:
    scenario = demo_scenario(
        tmp_path,
        {
            "speed = 60.0": "speed = 30.0",
            "battery_runtime_min = 10.0": "battery_runtime_min = 2.0",  # flat after a few minutes on battery
            "low_battery_min = 5.0": "low_battery_min = 1.0",
        },
    )
    loaded = load_scenario(scenario)
    cfg = tmp_path / "cfg"
    logs = [tmp_path / "site.log", tmp_path / "collector.log", tmp_path / "agent.log"]
    with ExitStack() as stack:
        site = stack.enter_context(
            process(
                [
                    str(BIN / "dcim-sim"),
                    "site",
                    "--scenario",
                    str(scenario),
                    "--write-configs",
                    str(cfg),
                    "--mqtt-url",
                    mosquitto.url,
                ],
                logs[0],
                stdout=subprocess.PIPE,
            )
        )
        line = ready_line(site, 60.0)
        match = re.search(r"control on http://127\.0\.0\.1:(\d+)", line)
        assert match, line
        control = int(match.group(1))
        assert (cfg / "agent.toml").is_file()
        assert (cfg / "collector.toml").is_file()
        # The written agent polls every 10 s; this one polls every second with the same devices.
        fast = cfg / "agent-fast.toml"
        fast.write_text(
            agent_config_for(
                loaded,
                mosquitto.url,
                interval_s=POLL_INTERVAL_S,
                timeout_s=0.8,
                retries=0,
                spool_path=str(cfg / "spool.sqlite"),
                audit_log=str(cfg / "audit.jsonl"),
            ),
            encoding="utf-8",
        )
        collector = stack.enter_context(
            process([str(BIN / "dcim-collector"), "run", "--config", str(cfg / "collector.toml")], logs[1])
        )
        agent = stack.enter_context(process([str(BIN / "dcim-agent"), "run", "--config", str(fast)], logs[2]))
        procs = [site, collector, agent]
        store = cfg / "store.sqlite"

        def seen(state: str) -> Callable[[], bool]:
            return lambda: state in sources(store, "ups-a")[1]

        wait_for("UPS on mains in the store", seen("normal"), procs, logs)
        event = api(control, "POST", "/events", {"kind": "mains_failure", "target": "utility"})["event"]
        wait_for("UPS on battery in the store", seen("battery"), procs, logs)
        wait_for("UPS output off in the store", seen("none"), procs, logs)
        off_at = len(sources(store, "ups-a")[1])
        wait_for("a few samples of output off", lambda: len(sources(store, "ups-a")[1]) >= off_at + 3, procs, logs)
        api(control, "DELETE", f"/events/{event['id']}")
        wait_for("UPS back on mains", lambda: (sources(store, "ups-a")[1] or [None])[-1] == "normal", procs, logs)

    ts, names = sources(store, "ups-a")
    first_battery = names.index("battery")
    first_none = names.index("none")
    assert names.index("normal") < first_battery < first_none < len(names) - 1 - names[::-1].index("normal")
    state, cause = ups_states(names)
    assert State.DEGRADED in state.tolist()
    assert State.DOWN in state.tolist()
    timeline = timeline_from_samples("ups-a", ts, state, cause, max_gap_s=5 * POLL_INTERVAL_S, end_ns=int(ts[-1]) + 1)
    summary = summarize(timeline, np.array([ts[0], ts[-1] + 1], dtype=np.int64))[0]
    assert summary.degraded_min > 0
    assert summary.down_min > 0
    assert summary.availability < 1
    # The Modbus UPS on the same feed went through the same states.
    b_store = SqliteStore(store)
    try:
        _, on_battery = b_store.read_series("ups", "ups-b", "on_battery", 0, 2**62)
    finally:
        b_store.close()
    assert 1.0 in on_battery.tolist()
