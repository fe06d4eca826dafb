"""Benchmark: the collector working off a 10-minute backlog from Mosquitto into InfluxDB, against raw InfluxDB ingest.

A site of catalog devices (every model of the catalog in equal numbers, points and table
rows with their simulation profiles) polled every 10 s for 10 minutes is published to a
real Mosquitto while the collector is away (its persistent session queues everything).
Then ``dcim-collector run`` (a separate process, default settings: alarms on, InfluxDB 1.x
store) is started and works the backlog off:

- values_per_s: point values per second written to InfluxDB, from the collector's own
  self-metrics (written_values_total and the time of each sample) between two samples
  taken while the backlog drains;
- ratio_to_raw: that rate divided by InfluxDB's own ingest of the same data as line protocol
  (the lines the collector writes, prepared and compressed beforehand, posted in writes of
  the same size over one connection), measured in the same run before and after the
  collector (the mean of the two);
- rss_mb_backlog: the collector's peak resident memory (VmHWM) while working off the backlog.

Everything published is checked to be stored (values counted in InfluxDB). With ``--json``
the last line is one JSON object with values_per_s, ratio_to_raw and rss_mb_backlog.
"""

from __future__ import annotations

import gzip
import http.client
import os
import subprocess
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import _common as c
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from collector.ingest import normalise
from collector.store import count_values
from collector.store.influx_v1 import LINES_PER_WRITE, batch_lines
from models import catalog, telemetry
from models.profile import profile_value
from models.schema import Column, DeviceModel, Point

SITE, AGENT = "bench", "edge-01"
INTERVAL_S = 10.0
BACKLOG_S = 600.0  # ten minutes
# The backlog's first read: the last ten minutes, as after a real outage (alarm rules look at the age of data).
T0 = float(int(time.time() - BACKLOG_S - 120))
TARGET_VALUES_PER_S = 100_000.0
TARGET_RATIO = 0.5
# Where a profile sample's time is counted: the nearest of these found from the innermost frame out.
COLLECTOR_PARTS = (
    ("alarm evaluation and its SQLite store", "collector/alarms/"),
    ("wire-format decoding and checks", "models/"),
    ("ingest (decode, normalise, dedup, queue)", "collector/ingest.py"),
    ("line protocol and HTTP to InfluxDB", "collector/store/"),
    ("MQTT client (paho, its thread)", "paho/"),
    ("MQTT subscriber bridge", "collector/mqtt.py"),
    ("gzip", "gzip.py"),
    ("HTTP client library", "http/client.py"),
    ("asyncio and thread hand-offs", "asyncio/"),
    ("start-up (imports)", "importlib"),
)


# ---------------------------------------------------------------- the site


def _wire(point: Point | Column, value: object) -> telemetry.Scalar:
    if point.enum and isinstance(value, int) and not isinstance(value, bool):
        return point.enum.get(value, next(iter(point.enum.values())))
    if isinstance(value, float | int | str | bool):
        return value
    return None


def make_batch(model: DeviceModel, device: str, seq: int, ts: float, seed: int) -> telemetry.Batch:
    """One poll of one device: every point and table row, values from the model's profiles."""
    points = {
        p.name: telemetry.Point(value=_wire(p, profile_value(p, ts - T0, seed)), unit=p.unit, counter=p.counter)
        for p in model.points
    }
    tables: dict[str, dict[str, telemetry.Row]] = {}
    for table in model.tables:
        rows = {
            row: {
                col.name: telemetry.Point(value=_wire(col, profile_value(col, ts - T0, seed, row)), unit=col.unit)
                for col in table.columns
            }
            for row in table.rows or []
        }
        if rows:
            tables[table.name] = rows
    return telemetry.Batch(
        site=SITE,
        agent=AGENT,
        device=device,
        model=model.id,
        kind=model.kind.value,
        seq=seq,
        ts=ts,
        points=points,
        tables=tables,
    )


@dataclass
class Backlog:
    """The messages of the backlog, in publishing order, with their value count."""

    messages: list[tuple[str, bytes]]
    batches: list[telemetry.Batch]
    values: int


def backlog(devices: int) -> Backlog:
    """Ten minutes of polls of `devices` devices (every catalog model in turn), oldest first."""
    models = list(catalog.load_all().values())
    fleet = [(models[i % len(models)], f"{models[i % len(models)].id}-{i:05d}") for i in range(devices)]
    messages: list[tuple[str, bytes]] = []
    batches: list[telemetry.Batch] = []
    seq = 0
    values = 0
    for k in range(int(BACKLOG_S / INTERVAL_S)):
        for n, (model, device) in enumerate(fleet):
            seq += 1
            ts = T0 + k * INTERVAL_S + n * INTERVAL_S / devices  # polls spread over the interval
            batch = telemetry.validate_batch(make_batch(model, device, seq, ts, n))
            batches.append(batch)
            messages.append((telemetry.telemetry_topic(SITE, AGENT, device), telemetry.encode(batch)))
            values += count_values(batch)
    return Backlog(messages, batches, values)


# ---------------------------------------------------------------- raw InfluxDB ingest


def raw_bodies(batches: list[telemetry.Batch]) -> list[bytes]:
    """The batches as the collector writes them (normalised units), gzip'd, LINES_PER_WRITE lines a write."""
    lines: list[str] = []
    for batch in batches:
        batch_lines(normalise(batch), lines)
    return [
        gzip.compress(("\n".join(lines[i : i + LINES_PER_WRITE]) + "\n").encode(), compresslevel=1)
        for i in range(0, len(lines), LINES_PER_WRITE)
    ]


def raw_ingest(influx: c.Server, database: str, bodies: list[bytes], values: int) -> tuple[float, float]:
    """Post the prepared bodies over one connection, one after the other; (values per second, InfluxDB CPU s)."""
    port = influx.port
    c.influx_query(port, f'CREATE DATABASE "{database}"')
    cpu_before = c.proc_stat(influx.proc.pid).cpu_s
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    query = urllib.parse.urlencode({"db": database, "precision": "ns"})
    headers = {"Content-Type": "text/plain; charset=utf-8", "Content-Encoding": "gzip"}
    started = time.perf_counter()
    for body in bodies:
        conn.request("POST", f"/write?{query}", body, headers)
        resp = conn.getresponse()
        text = resp.read()
        if resp.status != 204:
            raise RuntimeError(f"InfluxDB refused a raw write: {resp.status} {text[:200]!r}")
    elapsed = time.perf_counter() - started
    conn.close()
    return values / elapsed, c.proc_stat(influx.proc.pid).cpu_s - cpu_before


def stored_values(port: int, database: str) -> int:
    """Point values stored in a database (every field of every measurement but the collector's own)."""
    kinds = {m.kind.value for m in catalog.load_all().values()}
    answer = c.influx_query(port, "SHOW MEASUREMENTS", database)
    names = [row[0] for s in answer["results"][0].get("series", []) for row in s["values"]]
    total = 0
    for name in names:
        if name not in kinds:
            continue
        q = f'SELECT count(*) FROM "{name}"'  # noqa: S608  (a measurement name InfluxDB itself listed)
        result = c.influx_query(port, q, database)["results"][0]
        for series in result.get("series", []):
            total += sum(int(v) for v in series["values"][0][1:] if v is not None)
    return total


# ---------------------------------------------------------------- the collector


def write_config(path: Path, broker: int, influx: int, database: str) -> Path:
    """A collector configuration: InfluxDB store, self-metrics every half second."""
    path.write_text(
        f'[collector]\nid = "bench"\nsite = "{SITE}"\nlog_level = "info"\n\n'
        f'[mqtt]\nurl = "mqtt://127.0.0.1:{broker}"\n\n'
        f'[store]\nkind = "influxdb"\nurl = "http://127.0.0.1:{influx}"\ndatabase = "{database}"\n\n'
        "[ingest]\nmetrics_interval_s = 0.5\n"
    )
    return path


def start_collector(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """`dcim-collector run` as its own process."""
    return subprocess.Popen(
        [str(c.VENV_BIN / "dcim-collector"), "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
        cwd=config.parent,
        start_new_session=True,
    )


def metrics(port: int, database: str) -> list[tuple[int, float, float, float]]:
    """The collector's self-metrics samples: (time ns, written_values_total, written_messages_total, duplicates)."""
    q = 'SELECT "written_values_total", "written_messages_total", "duplicates_total" FROM "collector"'
    result = c.influx_query(port, q + " ORDER BY time", database, epoch="ns")["results"][0]
    out = []
    for series in result.get("series", []):
        for t, v, m, d in series["values"]:
            if v is not None:
                out.append((int(t), float(v), float(m or 0), float(d or 0)))
    return sorted(out)


def wait(condition: object, what: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll condition() until it holds."""
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the collector exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)  # polling a store the collector writes to


def publish(port: int, messages: list[tuple[str, bytes]]) -> float:
    """Publish every message with QoS 1 and wait for all acknowledgements; messages per second."""
    done = threading.Event()
    acked = [0]
    lock = threading.Lock()

    def on_publish(*_a: object) -> None:
        with lock:
            acked[0] += 1
            if acked[0] == len(messages):
                done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-backlog", clean_session=True)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    started = time.perf_counter()
    for topic, payload in messages:
        client.publish(topic, payload, qos=1)
    if not done.wait(600):
        raise RuntimeError(f"the broker acknowledged {acked[0]} of {len(messages)} messages")
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return len(messages) / elapsed


@dataclass
class Drain:
    """The collector working off the backlog."""

    values_per_s: float
    values_per_s_from_start: float
    seconds: float
    peak_mb: float
    cpu_s: float
    influx_cpu_s: float  # InfluxDB's CPU during the drain
    broker_cpu_s: float  # Mosquitto's
    duplicates: int
    reconnects: int
    broker_said: str


def wait_stored(port: int, database: str, values: int, timeout_s: float = 120.0) -> int | None:
    """None when the store holds every value now; else when it first did (ns), waiting up to timeout_s."""
    if stored_values(port, database) == values:
        return None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(1.0)  # polling the store the collector writes to
        now = time.time_ns()
        if stored_values(port, database) == values:
            return now
    return time.time_ns()  # incomplete: the count below reports what is missing


def create_session(config: Path, log: Path, broker: c.Server, influx_port: int, database: str) -> None:
    """A first run creates the collector's persistent session (and the database); a sentinel proves it subscribed."""
    proc = start_collector(config, log)
    try:
        wait(lambda: "connected to" in log.read_text(errors="replace"), "the collector's connection", 60, proc)
        sentinel = make_batch(catalog.load("meter-sdm630"), "sentinel", 1, T0 - 60, 0)
        sentinel_msg = (
            telemetry.telemetry_topic(SITE, AGENT, "sentinel"),
            telemetry.encode(sentinel),
        )
        publish(broker.port, [sentinel_msg])
        wait(lambda: any(m[2] >= 1 for m in metrics(influx_port, database)), "the sentinel stored", 60, proc)
    finally:
        c.stop(proc)
    c.influx_query(influx_port, 'DROP MEASUREMENT "collector"', database)
    c.influx_query(influx_port, "DROP SERIES WHERE \"device\" = 'sentinel'", database)


def drain(work: Path, broker: c.Server, influx: c.Server, data: Backlog, profile: Path | None = None) -> Drain:
    """Create the collector's session, queue the backlog while it is away, then time the drain."""
    database = "dcim"
    config = write_config(work / "collector.toml", broker.port, influx.port, database)
    log = work / "collector.log"
    create_session(config, log, broker, influx.port, database)
    # 2. The backlog, queued by the broker for the absent collector.
    c.say(f"  publishing the backlog ({len(data.messages):,} messages) ...")
    rate = publish(broker.port, data.messages)
    c.say(f"  published at {rate:,.0f} messages/s; starting the collector")
    # 3. The drain.
    offset = len(log.read_bytes())
    started_ns = time.time_ns()
    influx_cpu0, broker_cpu0 = c.proc_stat(influx.proc.pid).cpu_s, c.proc_stat(broker.proc.pid).cpu_s
    proc = start_collector(config, log)
    spy = c.start_profiler(proc.pid, profile) if profile is not None else None
    peak = 0.0
    try:
        last: list[tuple[int, float, float, float]] = []

        def taken() -> bool:
            """The collector has written or recognised as duplicates as many messages as were queued."""
            nonlocal last, peak
            peak = max(peak, c.proc_stat(proc.pid).hwm_mb)
            last = metrics(influx.port, database)
            return bool(last) and last[-1][2] + last[-1][3] >= len(data.messages)

        wait(taken, "the backlog worked off", 900, proc)
        # A message delivered again after a reconnect may have been counted twice: the store decides.
        waited_until = wait_stored(influx.port, database, data.values)
        stat = c.proc_stat(proc.pid)
        influx_cpu = c.proc_stat(influx.proc.pid).cpu_s - influx_cpu0
        broker_cpu = c.proc_stat(broker.proc.pid).cpu_s - broker_cpu0
        peak = max(peak, stat.hwm_mb)
        last = metrics(influx.port, database)
    finally:
        c.stop_profiler(spy)
        c.stop(proc)
    text = log.read_bytes()[offset:].decode(errors="replace")
    reconnects = max(0, text.count("connected to 127.0.0.1") - 1)
    said = [
        line.split(": ", 1)[-1]
        for line in (broker.workdir / "mosquitto.log").read_text(errors="replace").splitlines()
        if "dcim-collector-bench" in line and "New client" not in line
    ]
    broker_said = "; ".join(sorted(set(said))) if reconnects else ""
    if broker_said:
        c.say(f"  the broker on the collector's disconnections: {broker_said}")
    # The rate between the first sample with anything written and the first with everything taken;
    # when the store had to be waited for, until then.
    first = next(m for m in last if m[1] > 0)
    done = next(m for m in last if m[2] + m[3] >= len(data.messages))
    end_ns = done[0] if waited_until is None else waited_until
    rate_v = (data.values - first[1]) / ((end_ns - first[0]) / 1e9) if end_ns > first[0] else 0.0
    from_start = data.values / ((end_ns - started_ns) / 1e9)
    return Drain(
        rate_v,
        from_start,
        (end_ns - started_ns) / 1e9,
        peak,
        stat.cpu_s,
        influx_cpu,
        broker_cpu,
        int(last[-1][3]),
        reconnects,
        broker_said,
    )


def main() -> int:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--profile", type=Path, metavar="FILE", help="record the collector with py-spy (raw stacks) here")
    args = p.parse_args()
    devices = 200 if args.quick else 1000
    c.say(f"generating a 10-minute backlog of {devices} devices ...")
    data = backlog(devices)
    bodies = raw_bodies(data.batches)
    with tempfile.TemporaryDirectory(prefix="bench-collector-") as tmp, c.cleanup() as stack:
        root = Path(tmp)
        broker = c.start_mosquitto(root / "mosquitto")
        stack.append(broker)
        influx = c.start_influxdb(root / "influxdb")
        stack.append(influx)
        c.say("raw InfluxDB ingest (before) ...")
        raw_before, raw_cpu_before = raw_ingest(influx, "raw_before", bodies, data.values)
        c.say("the collector ...")
        result = drain(root, broker, influx, data, args.profile)
        c.say("raw InfluxDB ingest (after) ...")
        raw_after, raw_cpu_after = raw_ingest(influx, "raw_after", bodies, data.values)
        stored = stored_values(influx.port, "dcim")
        raw_stored = stored_values(influx.port, "raw_after")
    raw = (raw_before + raw_after) / 2
    ratio = result.values_per_s / raw
    lost = data.values - stored
    print(
        c.table(
            f"Collector: a 10-minute backlog of {devices:,} devices ({len(data.messages):,} messages, "
            f"{data.values:,} values) from Mosquitto into InfluxDB",
            [
                ("raw line protocol into InfluxDB (before)", raw_before, "", ""),
                ("raw line protocol into InfluxDB (after)", raw_after, "", ""),
                ("dcim-collector run, while draining", result.values_per_s, ratio, result.peak_mb),
                ("dcim-collector run, from its start", result.values_per_s_from_start, "", ""),
            ],
            ("path", "values/s", "ratio to raw", "peak RSS MB"),
        )
    )
    print()
    print(
        c.table(
            "Checks",
            [
                ("values published", data.values),
                ("values stored by the collector", stored),
                ("values stored by the raw writes", raw_stored),
                ("collector CPU seconds", round(result.cpu_s, 1)),
                ("duplicates recognised", result.duplicates),
                ("reconnections to the broker", result.reconnects),
                ("the broker on them", result.broker_said or "-"),
                ("drain time s (from process start)", round(result.seconds, 1)),
            ],
            ("", ""),
        )
    )
    # CPU per value of each process, and the ratio those costs allow on this machine's cores
    # if nothing else ran: the collector's pipeline (collector + broker + InfluxDB) against
    # InfluxDB alone.
    per_mv = 1e6 / data.values
    raw_us = (raw_cpu_before + raw_cpu_after) / 2 * per_mv
    pipeline_us = (result.cpu_s + result.influx_cpu_s + result.broker_cpu_s) * per_mv
    cores = os.cpu_count() or 1
    ceiling = cores * 1e6 / pipeline_us / raw if pipeline_us > 0 else 0.0
    print()
    print(
        c.table(
            f"CPU per value (µs) and the ratio it allows on {cores} cores",
            [
                ("collector (decode, alarms, line protocol, MQTT)", round(result.cpu_s * per_mv, 2)),
                ("InfluxDB while the collector writes", round(result.influx_cpu_s * per_mv, 2)),
                ("Mosquitto while the collector drains", round(result.broker_cpu_s * per_mv, 2)),
                ("InfluxDB ingesting the raw line protocol", round(raw_us, 2)),
                ("ratio to raw if the whole machine ran the pipeline", round(ceiling, 3)),
            ],
            ("", ""),
        )
    )
    verdicts = [
        (">= 100,000 values/s", result.values_per_s >= TARGET_VALUES_PER_S),
        (">= 0.5 of raw InfluxDB ingest", ratio >= TARGET_RATIO),
        ("nothing lost", lost == 0),
    ]
    print()
    print(c.table("Targets", [(name, "met" if ok else "MISSED") for name, ok in verdicts], ("target", "")))
    if args.profile is not None and args.profile.exists():
        print()
        where = f"Where the collector's CPU time goes ({args.profile})"
        print(c.table(where, c.components(args.profile, COLLECTOR_PARTS), ("component", "% of samples")))
        print()
        print(c.table("Top functions", c.top_frames(args.profile, 25), ("frame", "incl %", "own %")))
    if args.json:
        c.emit_json(
            {
                "values_per_s": round(result.values_per_s, 1),
                "ratio_to_raw": round(ratio, 3),
                "rss_mb_backlog": round(result.peak_mb, 1),
                "raw_values_per_s": round(raw, 1),
                "cpu_us_per_value": {
                    "collector": round(result.cpu_s * per_mv, 3),
                    "influxdb_drain": round(result.influx_cpu_s * per_mv, 3),
                    "mosquitto_drain": round(result.broker_cpu_s * per_mv, 3),
                    "influxdb_raw": round(raw_us, 3),
                },
                "ratio_ceiling": round(ceiling, 3),
                "devices": devices,
                "messages": len(data.messages),
                "values": data.values,
                "lost": lost,
                "quick": args.quick,
            }
        )
    return 0
