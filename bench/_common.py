"""Shared helpers of the benchmarks: process CPU and memory from /proc, servers, tables, the JSON line."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
STARTUP_S = 30.0


# ---------------------------------------------------------------- arguments and output


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the flags every bench takes (--json, --quick)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--quick", action="store_true", help="a smaller run that finishes in under a minute")
    return p


def say(text: str) -> None:
    """Progress to stderr, so stdout holds the table (and the JSON line) only."""
    print(text, file=sys.stderr, flush=True)


def table(title: str, rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """A plain text table with aligned columns."""
    cells = [[str(h) for h in header], *[[_fmt(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [title, "-" * len(title)]
    for n, row in enumerate(cells):
        lines.append(
            "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}"
    return str(value)


def emit_json(result: dict[str, Any]) -> None:
    """The one JSON object, as the last line of stdout."""
    print(json.dumps(result, sort_keys=True), flush=True)


# ---------------------------------------------------------------- processes


@dataclass(frozen=True, slots=True)
class ProcStat:
    """CPU seconds (user + system) and resident memory of one process at one moment."""

    cpu_s: float
    rss_mb: float
    hwm_mb: float
    wall: float


def proc_stat(pid: int) -> ProcStat:
    """Read /proc/PID/stat and /proc/PID/status."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:  # noqa: PTH123
        fields = fh.read().rsplit(")", 1)[1].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14 and 15)
    rss_kb = hwm_kb = 0
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:  # noqa: PTH123
        for line in fh:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm_kb = int(line.split()[1])
    return ProcStat(cpu_s, rss_kb / 1024, hwm_kb / 1024, time.monotonic())


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port nobody listens on now."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[Any], timeout_s: float = 20.0) -> None:
    """Stop a process we started, by its PID: TERM, then KILL."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout_s)


def wait_tcp(port: int, proc: subprocess.Popen[Any], what: str, timeout_s: float = STARTUP_S) -> None:
    """Block until 127.0.0.1:port accepts connections."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)  # polling a port that is not open yet
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout_s} s")


def find_binary(name: str) -> str:
    """A server binary on PATH or in Debian's sbin folders; SystemExit naming the package when missing."""
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise SystemExit(f"{name} is not installed: sudo apt-get install -y mosquitto influxdb")


@dataclass
class Server:
    """A server process we started, with its port."""

    proc: subprocess.Popen[bytes]
    port: int
    workdir: Path
    name: str

    def stop(self) -> None:
        """Stop it by PID."""
        stop(self.proc)

    def stat(self) -> ProcStat:
        """Its CPU and memory now."""
        return proc_stat(self.proc.pid)


def start_mosquitto(workdir: Path) -> Server:
    """Mosquitto on a free loopback port: persistent sessions, queues large enough for a backlog."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    user = "user root\n" if os.geteuid() == 0 else ""
    (workdir / "mosquitto.conf").write_text(
        f"{user}listener {port} 127.0.0.1\nallow_anonymous true\n"
        f"persistence false\nmax_queued_messages 0\nmax_queued_bytes 0\nmax_inflight_messages 0\n"
        f"log_dest file {workdir}/mosquitto.log\nlog_type error\nlog_type warning\nlog_type notice\n"
    )
    proc = subprocess.Popen(
        [find_binary("mosquitto"), "-c", str(workdir / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_tcp(port, proc, "mosquitto")
    return Server(proc, port, workdir, "mosquitto")


def start_influxdb(workdir: Path) -> Server:
    """InfluxDB 1.x on a free loopback port."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (workdir / "influxdb.conf").write_text(
        f'reporting-disabled = true\nbind-address = "127.0.0.1:{free_port()}"\n'
        f'[meta]\n  dir = "{workdir}/meta"\n'
        f'[data]\n  dir = "{workdir}/data"\n  wal-dir = "{workdir}/wal"\n  query-log-enabled = false\n'
        f'[http]\n  enabled = true\n  bind-address = "127.0.0.1:{port}"\n  log-enabled = false\n'
        "  max-body-size = 0\n[monitor]\n  store-enabled = false\n[continuous_queries]\n  enabled = false\n"
        '[subscriber]\n  enabled = false\n[logging]\n  level = "warn"\n'
    )
    proc = subprocess.Popen(
        [find_binary("influxd"), "-config", str(workdir / "influxdb.conf")],
        stdout=(workdir / "influxd.log").open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + STARTUP_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"influxd exited with {proc.returncode}")
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1) as resp,
        ):
            if resp.status == 204:
                break
        if time.monotonic() > deadline:
            raise RuntimeError("influxd did not answer /ping")
        time.sleep(0.05)  # polling for readiness
    return Server(proc, port, workdir, "influxd")


def influx_query(port: int, q: str, db: str | None = None, **extra: str) -> dict[str, Any]:
    """Run InfluxQL (POST) and return the decoded answer."""
    params = {"q": q} | ({"db": db} if db else {}) | extra
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/query", data=urllib.parse.urlencode(params).encode(), method="POST"
    )
    with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310
        answer: dict[str, Any] = json.loads(resp.read())
        return answer


class LineReader:
    """Reads lines from a child's stdout with a deadline (the child prints JSON lines)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream

    def line(self, timeout_s: float = STARTUP_S) -> str:
        """The next line; RuntimeError when none comes in time."""
        import selectors  # noqa: PLC0415

        sel = selectors.DefaultSelector()
        sel.register(self.stream, selectors.EVENT_READ)
        try:
            if not sel.select(timeout_s):
                raise RuntimeError(f"no line within {timeout_s} s")
        finally:
            sel.close()
        return self.stream.readline().decode()


@contextlib.contextmanager
def cleanup(*stoppers: Any) -> Iterator[list[Any]]:
    """Stop everything appended to the yielded list (in reverse) on the way out."""
    items: list[Any] = list(stoppers)
    try:
        yield items
    finally:
        for item in reversed(items):
            with contextlib.suppress(Exception):
                item.stop()


def start_profiler(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy recording a process (raw, collapsed stacks) until stop_profiler; None without py-spy."""
    spy = shutil.which("py-spy") or (str(VENV_BIN / "py-spy") if (VENV_BIN / "py-spy").exists() else None)
    if spy is None:
        say("--profile: py-spy is not installed (pip install py-spy); not profiling")
        return None
    return subprocess.Popen(
        # --gil: only samples of the thread running Python code, i.e. where the CPU time goes.
        [spy, "record", "--pid", str(pid), "--gil", "--format", "raw", "--rate", "200", "--output", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_profiler(proc: subprocess.Popen[bytes] | None) -> None:
    """Stop py-spy (SIGINT makes it write its file)."""
    if proc is None or proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        stop(proc)


def _samples(path: Path) -> list[tuple[list[str], int]]:
    out = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")[1:]  # the first frame names the thread
        if count.isdigit() and frames:
            out.append((frames, int(count)))
    return out


def top_frames(path: Path, n: int = 15) -> list[tuple[str, float, float]]:
    """The project's and libraries' functions with the largest inclusive share: (frame, incl %, own %)."""
    plumbing = ("threading.py", "asyncio/base_events.py", "asyncio/runners.py", "asyncio/events.py", "<module>")
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    for frames, k in _samples(path):
        samples += k
        own[frames[-1]] = own.get(frames[-1], 0) + k
        for f in set(frames):
            total[f] = total.get(f, 0) + k
    ranked = [kv for kv in sorted(total.items(), key=lambda kv: -kv[1]) if not any(x in kv[0] for x in plumbing)]
    ranked = [kv for kv in ranked if not kv[0].startswith(("main (", "cmd_run (", "run_service (", "run ("))]
    return [(f, 100.0 * k / samples, 100.0 * own.get(f, 0) / samples) for f, k in ranked[:n]] if samples else []


def components(path: Path, parts: Sequence[tuple[str, str]]) -> list[tuple[str, float]]:
    """CPU share by component: each sample goes to the first (name, path fragment) found from the leaf up."""
    shares: dict[str, int] = {}
    samples = 0
    for frames, k in _samples(path):
        samples += k
        name = "other"
        for frame in reversed(frames):
            hit = next((label for label, fragment in parts if fragment in frame), None)
            if hit is not None:
                name = hit
                break
        shares[name] = shares.get(name, 0) + k
    return sorted(((n, 100.0 * k / samples) for n, k in shares.items()), key=lambda x: -x[1]) if samples else []
