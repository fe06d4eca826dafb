"""Helpers of the chaos tests: waiting on conditions, sequence checks, agents with a changed environment."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from models import telemetry
from tests.agent.agent_helpers import VENV_BIN, AgentProcess, Subscriber

WAIT_S = 60.0


def wait(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    """Poll condition() until it holds; fail naming what was awaited."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)  # re-check a condition other processes change


def count(path: Path, needle: str) -> int:
    """How many lines of a log file contain needle."""
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text(errors="replace").splitlines() if needle in line)


def missing(seqs: set[int]) -> list[int]:
    """Sequence numbers absent between 1 and the largest seen."""
    return [s for s in range(1, max(seqs, default=0) + 1) if s not in seqs]


def all_seqs(sub: Subscriber) -> set[int]:
    """Sequence numbers of every telemetry batch received (devices and the agent's health)."""
    return {b.seq for b in sub.batches()}


def good(batch: telemetry.Batch) -> bool:
    """Whether every point of a batch was read."""
    return bool(batch.points) and all(p.quality == "good" for p in batch.points.values())


def failed(batch: telemetry.Batch) -> bool:
    """Whether no point of a batch was read, and none carries a value."""
    return bool(batch.points) and all(p.quality != "good" and p.value is None for p in batch.points.values())


def start_agent(
    config: Path,
    log: Path,
    env: dict[str, str] | None = None,
    preexec: Callable[[], None] | None = None,
) -> AgentProcess:
    """`dcim-agent run`, with extra environment or a pre-exec hook (resource limits)."""
    proc = subprocess.Popen(
        [str(VENV_BIN / "dcim-agent"), "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
        env={**os.environ, **(env or {})},
        cwd=config.parent,
        start_new_session=True,
        preexec_fn=preexec,  # noqa: PLW1509  (only setrlimit, which is safe between fork and exec)
    )
    return AgentProcess(proc, log)
