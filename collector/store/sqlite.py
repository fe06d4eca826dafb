"""The embedded store: one SQLite file (WAL), batched inserts, samples indexed by series and time.

The default when no InfluxDB is configured, and what the demo uses. It keeps the same schema as
InfluxDB in tables: ``series`` names each (measurement, tag set, field) once with its unit, and
``samples`` holds (series, time, value, quality) with the pair (series, time) as its key, so a
batch written twice is stored once.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Self

import msgspec
import numpy as np

from collector.config import StoreSection
from collector.store import (
    FloatArray,
    IntArray,
    SeriesKey,
    Store,
    Stored,
    StoreRejected,
    StoreTypeError,
    StoreUnavailable,
    batch_tags,
    check_derived,
    finite,
    ts_ns,
)
from models import telemetry

log = logging.getLogger(__name__)

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS series (
    id          INTEGER PRIMARY KEY,
    measurement TEXT NOT NULL,
    tags        TEXT NOT NULL,             -- JSON [[key, value], ...] sorted by key
    field       TEXT NOT NULL,
    device      TEXT NOT NULL DEFAULT '',
    tbl         TEXT NOT NULL DEFAULT '',
    idx         TEXT NOT NULL DEFAULT '',
    unit        TEXT,
    UNIQUE (measurement, tags, field)
);
CREATE INDEX IF NOT EXISTS series_by_device ON series (measurement, device, field, tbl, idx);
CREATE TABLE IF NOT EXISTS samples (
    series  INTEGER NOT NULL,
    ts      INTEGER NOT NULL,              -- nanoseconds since the Unix epoch
    value,                                 -- REAL, INTEGER (booleans) or TEXT; NULL for a failed read
    quality TEXT,                          -- NULL when good, else why the read failed
    PRIMARY KEY (series, ts)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    ts       INTEGER NOT NULL,
    site     TEXT NOT NULL,
    agent    TEXT NOT NULL,
    device   TEXT NOT NULL,
    type     TEXT NOT NULL,
    severity TEXT NOT NULL,
    message  TEXT NOT NULL,
    data     TEXT NOT NULL,
    PRIMARY KEY (site, agent, device, type, ts)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS agent_status (
    ts      INTEGER NOT NULL,
    site    TEXT NOT NULL,
    agent   TEXT NOT NULL,
    state   TEXT NOT NULL,
    version TEXT NOT NULL,
    PRIMARY KEY (site, agent, ts)
) WITHOUT ROWID;
"""

_ENCODE: Final = msgspec.json.Encoder()
_DECODE: Final = msgspec.json.Decoder(list[tuple[str, str]])

# (measurement, tags JSON, field) -> series id
SeriesCache = dict[tuple[str, bytes, str], int]


def _value(point: telemetry.Point) -> tuple[Any, str | None]:
    if point.quality != "good":
        return None, point.quality
    value = point.value
    if type(value) is int:
        return float(value), None
    return value, None


class SqliteStore(Store):
    """Readings in one SQLite file."""

    kind = "sqlite"

    def __init__(self, path: str | Path, *, timeout_s: float = 10.0, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s
        self.synchronous = synchronous
        self._write_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._series: SeriesCache = {}
        self._units: dict[int, str] = {}

    @classmethod
    def from_config(cls, section: StoreSection) -> Self:
        """A store from the [store] section."""
        return cls(section.path, timeout_s=section.timeout_s)

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    # ------------------------------------------------------------ lifecycle

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.timeout_s, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before the collector acknowledges the MQTT message.
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        return conn

    def open(self) -> None:
        """Create the file and schema if missing."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._write_lock:
                if self._writer is None:
                    self._writer = self._connect()
                    self._writer.executescript(SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"{self.path}: {exc}") from exc

    def close(self) -> None:
        """Close every connection."""
        with self._write_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()
        self._local = threading.local()

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._writer is None:
                self.open()
            conn = self._connect()
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    # ------------------------------------------------------------ writes

    def _series_id(
        self,
        conn: sqlite3.Connection,
        new: SeriesCache,
        key: tuple[str, bytes, str],
        where: tuple[str, str, str],
        *,
        unit: str | None,
        units: dict[int, str],
    ) -> int:
        """The id of a series, created if new; records a changed unit (new ids and units kept in new/units)."""
        sid = self._series.get(key) or new.get(key)
        if sid is None:
            row = conn.execute(
                "INSERT INTO series (measurement, tags, field, device, tbl, idx, unit) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (measurement, tags, field) DO UPDATE SET unit = coalesce(excluded.unit, unit) "
                "RETURNING id",
                (key[0], key[1].decode(), key[2], *where, unit),
            ).fetchone()
            sid = int(row[0])
            new[key] = sid
            if unit is not None:
                units[sid] = unit
        elif unit is not None and (units.get(sid) or self._units.get(sid)) != unit:
            conn.execute("UPDATE series SET unit = ? WHERE id = ?", (unit, sid))
            units[sid] = unit
        return sid

    def _batch_rows(
        self,
        conn: sqlite3.Connection,
        new: SeriesCache,
        units: dict[int, str],
        batch: telemetry.Batch,
        out: list[tuple[Any, ...]],
    ) -> None:
        stamp = ts_ns(batch.ts)
        base = batch_tags(batch)
        groups: list[tuple[list[tuple[str, str]], str, str, Mapping[str, telemetry.Point]]] = [
            (base, "", "", batch.points)
        ]
        for table, rows in batch.tables.items():
            groups.extend(
                (sorted([*base, ("table", table), ("index", index)]), table, index, row) for index, row in rows.items()
            )
        for tags, table, index, points in groups:
            tags_json = _ENCODE.encode(tags)
            where = (batch.device, table, index)
            for name, point in points.items():
                sid = self._series_id(conn, new, (batch.kind, tags_json, name), where, unit=point.unit, units=units)
                value, quality = _value(point)
                out.append((sid, stamp, value, quality))

    def write_batches(self, messages: Sequence[Stored]) -> None:
        """Insert all messages in one transaction."""
        received_ns = time.time_ns()
        samples: list[tuple[Any, ...]] = []
        events: list[tuple[Any, ...]] = []
        statuses: list[tuple[Any, ...]] = []
        new: SeriesCache = {}
        units: dict[int, str] = {}
        with self._write_lock:
            conn = self._writer_conn()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for message in messages:
                        if isinstance(message, telemetry.Batch):
                            self._batch_rows(conn, new, units, message, samples)
                        elif isinstance(message, telemetry.Event):
                            events.append(
                                (
                                    ts_ns(message.ts),
                                    message.site,
                                    message.agent,
                                    message.device,
                                    message.type,
                                    message.severity,
                                    message.message,
                                    _ENCODE.encode(message.data).decode(),
                                )
                            )
                        else:
                            stamp = ts_ns(message.ts) if message.ts is not None else received_ns
                            statuses.append((stamp, message.site, message.agent, message.state, message.version))
                    conn.executemany("INSERT OR REPLACE INTO samples VALUES (?, ?, ?, ?)", samples)
                    conn.executemany("INSERT OR REPLACE INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)", events)
                    conn.executemany("INSERT OR REPLACE INTO agent_status VALUES (?, ?, ?, ?, ?)", statuses)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            except sqlite3.IntegrityError as exc:
                raise StoreRejected(f"{self.path}: {exc}") from exc
            except (sqlite3.Error, OSError) as exc:
                raise StoreUnavailable(f"{self.path}: {exc}") from exc
            self._series.update(new)
            self._units.update(units)

    def _writer_conn(self) -> sqlite3.Connection:
        if self._writer is None:
            try:
                self._writer = self._connect()
                self._writer.executescript(SCHEMA)
            except (sqlite3.Error, OSError) as exc:
                self._writer = None
                raise StoreUnavailable(f"{self.path}: {exc}") from exc
        return self._writer

    def write_derived(
        self, name: str, tags: Mapping[str, str], ts_ns: IntArray, fields: Mapping[str, FloatArray]
    ) -> None:
        """Store analytics results as series of measurement ``name``."""
        check_derived(name, tags, ts_ns, fields)
        tag_list = sorted(tags.items())
        tags_json = _ENCODE.encode(tag_list)
        where = (tags.get("device", ""), tags.get("table", ""), tags.get("index", ""))
        stamps = np.asarray(ts_ns, dtype=np.int64).tolist()
        new: SeriesCache = {}
        with self._write_lock:
            conn = self._writer_conn()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    rows: list[tuple[Any, ...]] = []
                    for field, values in fields.items():
                        sid = self._series_id(conn, new, (name, tags_json, field), where, unit=None, units={})
                        rows.extend(
                            (sid, t, v, None)
                            for t, v in zip(stamps, np.asarray(values, dtype=np.float64).tolist(), strict=True)
                            if finite(v)
                        )
                    conn.executemany("INSERT OR REPLACE INTO samples VALUES (?, ?, ?, ?)", rows)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            except (sqlite3.Error, OSError) as exc:
                raise StoreUnavailable(f"{self.path}: {exc}") from exc
            self._series.update(new)

    # ------------------------------------------------------------ reads

    def _series_ids(
        self,
        measurement: str,
        device: str | None,
        field: str,
        *,
        table: str | None,
        index: str | None,
        tags: Mapping[str, str] | None,
    ) -> list[int]:
        sql = "SELECT id, tags FROM series WHERE measurement = ? AND field = ? AND tbl = ?"
        args: list[Any] = [measurement, field, table or ""]
        if device is not None:
            sql += " AND device = ?"
            args.append(device)
        if table is not None or index is not None:
            sql += " AND idx = ?"
            args.append(index or "")
        wanted = set((tags or {}).items())
        ids = []
        for sid, tags_json in self._query(sql, args):
            if wanted and not wanted <= set(_DECODE.decode(tags_json)):
                continue
            ids.append(int(sid))
        return ids

    def _query(self, sql: str, args: Iterable[Any]) -> list[tuple[Any, ...]]:
        try:
            return self._reader().execute(sql, tuple(args)).fetchall()
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"{self.path}: {exc}") from exc

    def _samples(self, ids: list[int], start_ns: int, end_ns: int) -> list[tuple[Any, ...]]:
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        sql = f"SELECT ts, value FROM samples WHERE series IN ({marks}) AND ts >= ? AND ts < ? ORDER BY ts"  # noqa: S608
        return self._query(sql, [*ids, int(start_ns), int(end_ns)])

    def read_series(
        self,
        measurement: str,
        device: str | None,
        field: str,
        start_ns: int,
        end_ns: int,
        *,
        table: str | None = None,
        index: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> tuple[IntArray, FloatArray]:
        """Read a numeric series; NaN for failed reads."""
        ids = self._series_ids(measurement, device, field, table=table, index=index, tags=tags)
        rows = self._samples(ids, start_ns, end_ns)
        ts = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        try:
            values = np.array([np.nan if r[1] is None else r[1] for r in rows], dtype=np.float64)
        except ValueError:
            raise StoreTypeError(f"{measurement}.{field} of {device}: text values; use read_text") from None
        return ts, values.reshape(len(rows))

    def read_text(
        self,
        measurement: str,
        device: str | None,
        field: str,
        start_ns: int,
        end_ns: int,
        *,
        table: str | None = None,
        index: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> tuple[IntArray, list[str | None]]:
        """Read a text series; None for failed reads."""
        ids = self._series_ids(measurement, device, field, table=table, index=index, tags=tags)
        rows = self._samples(ids, start_ns, end_ns)
        ts = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        values: list[str | None] = []
        for _, value in rows:
            if value is not None and not isinstance(value, str):
                raise StoreTypeError(f"{measurement}.{field} of {device}: numeric values; use read_series")
            values.append(value)
        return ts, values

    def list_series(self, measurement: str | None = None, *, device: str | None = None) -> list[SeriesKey]:
        """Distinct (measurement, tags) of the stored series."""
        sql = "SELECT DISTINCT measurement, tags FROM series WHERE 1 = 1"
        args: list[Any] = []
        if measurement is not None:
            sql += " AND measurement = ?"
            args.append(measurement)
        if device is not None:
            sql += " AND device = ?"
            args.append(device)
        keys = {SeriesKey(m, tuple(_DECODE.decode(t))) for m, t in self._query(sql, args)}
        return sorted(keys, key=lambda k: (k.measurement, k.tags))

    def unit(self, measurement: str, device: str, field: str) -> str | None:
        """The unit a device's field is stored in (None if unknown)."""
        rows = self._query(
            "SELECT unit FROM series WHERE measurement = ? AND device = ? AND field = ? AND unit IS NOT NULL LIMIT 1",
            [measurement, device, field],
        )
        return str(rows[0][0]) if rows else None

    def count_samples(self) -> int:
        """How many samples are stored (for tests and diagnostics)."""
        rows = self._query("SELECT count(*) FROM samples", [])
        return int(rows[0][0])
