"""InfluxDB through the 1.x HTTP API: line protocol to /write (gzip), InfluxQL on /query (chunked).

InfluxDB 1.x serves this API; 2.x and 3.x serve it on their v1-compatible endpoints (with a
token, and a database/retention-policy mapping to a bucket).
"""

from __future__ import annotations

import base64
import gzip
import http.client
import logging
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Self

import msgspec
import numpy as np

from collector.config import StoreSection
from collector.store import (
    EVENTS_MEASUREMENT,
    QUALITY_SUFFIX,
    RESERVED_MEASUREMENTS,
    STATUS_MEASUREMENT,
    UNITS_MEASUREMENT,
    FloatArray,
    IntArray,
    SeriesKey,
    Store,
    Stored,
    StoreError,
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

# Lines per HTTP write: InfluxDB ingests fastest with a few thousand lines (tens of thousands
# of field values) per request.
LINES_PER_WRITE: Final = 5000
QUERY_CHUNK_ROWS: Final = 10_000
PASSWORD_ENV: Final = "DCIM_INFLUX_PASSWORD"  # noqa: S105  (the name of a variable, not a secret)
TOKEN_ENV: Final = "DCIM_INFLUX_TOKEN"  # noqa: S105

_MEASUREMENT_ESC: Final = str.maketrans({",": r"\,", " ": r"\ "})
_TAG_ESC: Final = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_UNESCAPE_RE: Final = re.compile(r"\\([,= \\])")
_JSON: Final = msgspec.json.Decoder()
_ENCODE: Final = msgspec.json.Encoder()


# ---------------------------------------------------------------- line protocol


def escape_measurement(name: str) -> str:
    """A measurement name escaped for line protocol."""
    return name.translate(_MEASUREMENT_ESC)


def escape_tag(text: str) -> str:
    """A tag key, tag value or field key escaped for line protocol."""
    return text.translate(_TAG_ESC)


def string_field(text: str) -> str:
    """A string field value, quoted and escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_value(value: float | str | bool) -> str:
    """A field value in line protocol: numbers as floats (never 'i'), booleans, strings."""
    kind = type(value)
    if kind is float:
        return repr(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return repr(float(value))
    return string_field(str(value))


def _fields(points: Mapping[str, telemetry.Point]) -> str:
    parts: list[str] = []
    append = parts.append
    for name, point in points.items():
        value = point.value
        kind = type(value)
        if kind is float:  # the common case first: a good numeric read
            append(f"{name}={value!r}")
        elif point.quality != "good":
            append(f'{name}{QUALITY_SUFFIX}="{point.quality}"')
        elif kind is int:
            append(f"{name}={float(value)!r}")  # type: ignore[arg-type]
        elif kind is bool:
            append(f"{name}=true" if value else f"{name}=false")
        else:
            append(f"{name}={string_field(str(value))}")
    return ",".join(parts)


def _tag_string(tags: Sequence[tuple[str, str]]) -> str:
    return "".join(f",{escape_tag(k)}={escape_tag(v)}" for k, v in tags if v)


def batch_lines(batch: telemetry.Batch, out: list[str]) -> None:
    """Append the lines of one batch: one for its points, one per table row."""
    prefix = escape_measurement(batch.kind) + _tag_string(batch_tags(batch))
    stamp = ts_ns(batch.ts)
    if batch.points:
        out.append(f"{prefix} {_fields(batch.points)} {stamp}")
    for table, rows in batch.tables.items():
        table_tag = f",table={escape_tag(table)}"
        for index, row in rows.items():
            if row:
                # Tag order does not matter to InfluxDB; it sorts them on ingest.
                out.append(f"{prefix},index={escape_tag(index)}{table_tag} {_fields(row)} {stamp}")


def event_line(event: telemetry.Event) -> str:
    """The line of one event."""
    tags = _tag_string(
        [
            ("agent", event.agent),
            ("device", event.device),
            ("severity", event.severity),
            ("site", event.site),
            ("type", event.type),
        ]
    )
    fields = f"message={string_field(event.message)}"
    if event.data:
        fields += f",data={string_field(_ENCODE.encode(event.data).decode())}"
    return f"{EVENTS_MEASUREMENT}{tags} {fields} {ts_ns(event.ts)}"


def status_line(status: telemetry.Status, received_ns: int) -> str:
    """The line of one agent status (its own time, or when it was received)."""
    stamp = ts_ns(status.ts) if status.ts is not None else received_ns
    fields = f"state={string_field(status.state)}"
    if status.version:
        fields += f",version={string_field(status.version)}"
    return f"{STATUS_MEASUREMENT}{_tag_string([('agent', status.agent), ('site', status.site)])} {fields} {stamp}"


class UnitLedger:
    """Remembers which (kind, model, table, point names) had their units recorded, to record them once.

    Values are normalised before they are stored, so the stored unit of a model's point does
    not change while the collector runs; a new set of point names is checked afresh.
    """

    def __init__(self) -> None:
        self._seen: set[tuple[str, str, str, tuple[str, ...]]] = set()
        self._lock = threading.Lock()

    def new_units(self, batch: telemetry.Batch) -> list[tuple[str, str, str]]:
        """(table, field, unit) of the batch whose point-name set was not recorded yet."""
        found: list[tuple[str, str, str]] = []
        groups: list[tuple[str, Mapping[str, telemetry.Point]]] = [("", batch.points)]
        if batch.tables:
            groups.extend((table, row) for table, rows in batch.tables.items() for row in rows.values())
        with self._lock:
            for table, points in groups:
                key = (batch.kind, batch.model, table, tuple(points))
                if key not in self._seen:
                    self._seen.add(key)
                    found.extend((table, name, point.unit) for name, point in points.items())
        return found

    def forget(self, batch: telemetry.Batch) -> None:
        """Forget a batch's point sets after a failed write, so their units are recorded again."""
        with self._lock:
            self._seen.discard((batch.kind, batch.model, "", tuple(batch.points)))
            for table, rows in batch.tables.items():
                for row in rows.values():
                    self._seen.discard((batch.kind, batch.model, table, tuple(row)))


def unit_lines(batch: telemetry.Batch, units: list[tuple[str, str, str]]) -> list[str]:
    """Lines recording the units of a batch's fields."""
    stamp = ts_ns(batch.ts)
    lines = []
    for table, field, unit in units:
        tags = _tag_string(sorted([("field", field), ("kind", batch.kind), ("model", batch.model), ("table", table)]))
        lines.append(f"{UNITS_MEASUREMENT}{tags} unit={string_field(unit)} {stamp}")
    return lines


def derived_lines(name: str, tags: Mapping[str, str], ts: IntArray, fields: Mapping[str, FloatArray]) -> list[str]:
    """Lines of analytics results; rows whose values are all NaN are left out."""
    prefix = escape_measurement(name) + _tag_string(sorted(tags.items()))
    names = [escape_tag(f) for f in fields]
    columns = [np.asarray(v, dtype=np.float64).tolist() for v in fields.values()]
    lines = []
    for i, stamp in enumerate(np.asarray(ts, dtype=np.int64).tolist()):
        parts = [f"{n}={col[i]!r}" for n, col in zip(names, columns, strict=True) if finite(col[i])]
        if parts:
            lines.append(f"{prefix} {','.join(parts)} {stamp}")
    return lines


def parse_series_key(key: str) -> SeriesKey:
    """Split a SHOW SERIES key (``m,tag=v,...``) into measurement and tags."""
    parts = re.split(r"(?<!\\),", key)
    measurement = _UNESCAPE_RE.sub(r"\1", parts[0])
    tags = []
    for part in parts[1:]:
        k, _, v = re.split(r"(?<!\\)(=)", part, maxsplit=1) if "=" in part else (part, "", "")
        tags.append((_UNESCAPE_RE.sub(r"\1", k), _UNESCAPE_RE.sub(r"\1", v)))
    return SeriesKey(measurement, tuple(sorted(tags)))


# ---------------------------------------------------------------- InfluxQL


def quote_ident(name: str) -> str:
    """An InfluxQL identifier in double quotes."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_string(text: str) -> str:
    """An InfluxQL string literal in single quotes."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def series_where(device: str | None, table: str | None, index: str | None, tags: Mapping[str, str] | None) -> list[str]:
    """WHERE conditions selecting one series (a missing tag compares equal to '')."""
    conds = []
    if device is not None:
        conds.append(f'"device" = {quote_string(device)}')
    conds.append(f'"table" = {quote_string(table or "")}')
    if table is not None or index is not None:
        conds.append(f'"index" = {quote_string(index or "")}')
    for k, v in sorted((tags or {}).items()):
        conds.append(f"{quote_ident(k)} = {quote_string(v)}")
    return conds


def _read_secret(path: Path | None, env: str) -> str | None:
    if path is not None:
        return path.read_text(encoding="utf-8").strip()
    return os.environ.get(env) or None


# ---------------------------------------------------------------- HTTP


class HttpClient:
    """Keep-alive HTTP/1.1 connections to one server, one per thread, with a timeout."""

    def __init__(self, url: str, timeout_s: float, headers: Mapping[str, str]) -> None:
        parsed = urllib.parse.urlparse(url)
        self.scheme = parsed.scheme
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self.base = parsed.path.rstrip("/")
        self.timeout_s = timeout_s
        self.headers = dict(headers)
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            conn = cls(self.host, self.port, timeout=self.timeout_s)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _drop(self) -> None:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
            with self._lock:
                if conn in self._all:
                    self._all.remove(conn)

    def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str],
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> http.client.HTTPResponse:
        """Send a request and return the response (the caller reads it); StoreUnavailable on I/O errors."""
        target = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        all_headers = {**self.headers, **(headers or {})}
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request(method, target, body=body, headers=all_headers)
                return conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                # A kept-alive connection the server closed (e.g. it restarted): retry once afresh.
                self._drop()
                if attempt == 2:
                    raise StoreUnavailable(f"{self.host}:{self.port}: {exc}") from exc
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                raise StoreUnavailable(f"{self.host}:{self.port}: {exc or type(exc).__name__}") from exc
        raise AssertionError  # pragma: no cover

    def read(self, resp: http.client.HTTPResponse) -> bytes:
        """The whole body of a response; StoreUnavailable if the connection breaks."""
        try:
            return resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self._drop()
            raise StoreUnavailable(f"{self.host}:{self.port}: {exc or type(exc).__name__}") from exc

    def close(self) -> None:
        """Close every connection."""
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
        self._local = threading.local()


def _error_text(body: bytes) -> str:
    try:
        data = _JSON.decode(body)
    except msgspec.DecodeError:
        return body.decode("utf-8", "replace").strip()[:500]
    if isinstance(data, dict) and "error" in data:
        return str(data["error"])[:500]
    return body.decode("utf-8", "replace").strip()[:500]


# ---------------------------------------------------------------- the store


class InfluxV1Store(Store):
    """InfluxDB over the 1.x HTTP API."""

    kind = "influxdb-v1"

    def __init__(
        self,
        url: str,
        database: str,
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        retention_policy: str | None = None,
        create_database: bool = True,
        timeout_s: float = 10.0,
        gzip_writes: bool = True,
    ) -> None:
        self.url = url
        self.database = database
        self.retention_policy = retention_policy
        self.create_database = create_database
        self.gzip_writes = gzip_writes
        headers: dict[str, str] = {}
        if token:
            headers["Authorization"] = f"Token {token}"
        elif username:
            basic = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            headers["Authorization"] = f"Basic {basic}"
        self.http = HttpClient(url, timeout_s, headers)
        self.units = UnitLedger()

    @classmethod
    def from_config(cls, section: StoreSection) -> Self:
        """A store from the [store] section (secrets read from their files or the environment)."""
        return cls(
            section.url,
            section.database,
            username=section.username,
            password=_read_secret(section.password_file, PASSWORD_ENV) if section.username else None,
            token=_read_secret(section.token_file, TOKEN_ENV),
            retention_policy=section.retention_policy,
            create_database=section.create_database,
            timeout_s=section.timeout_s,
            gzip_writes=section.gzip,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url}, database={self.database!r})"

    # ------------------------------------------------------------ lifecycle

    def open(self) -> None:
        """Check the server answers; create the database if configured to."""
        resp = self.http.request("GET", "/ping", {})
        self.http.read(resp)
        if resp.status >= 300:
            raise StoreUnavailable(f"{self.url}/ping answered {resp.status}")
        if self.create_database:
            self._create_database()

    def _create_database(self) -> None:
        resp = self.http.request("POST", "/query", {"q": f"CREATE DATABASE {quote_ident(self.database)}"})
        body = self.http.read(resp)
        if resp.status >= 300:
            log.warning("could not create database %r on %s: %s", self.database, self.url, _error_text(body))

    def close(self) -> None:
        """Close the HTTP connections."""
        self.http.close()

    # ------------------------------------------------------------ writes

    def lines_of(self, messages: Sequence[Stored], received_ns: int) -> list[str]:
        """All lines of a write: batches, their new units, events and statuses."""
        lines: list[str] = []
        for message in messages:
            if isinstance(message, telemetry.Batch):
                batch_lines(message, lines)
                new = self.units.new_units(message)
                if new:
                    lines.extend(unit_lines(message, new))
            elif isinstance(message, telemetry.Event):
                lines.append(event_line(message))
            else:
                lines.append(status_line(message, received_ns))
        return lines

    def write_batches(self, messages: Sequence[Stored]) -> None:
        """Write messages as line protocol, in requests of LINES_PER_WRITE lines."""
        lines = self.lines_of(messages, time.time_ns())
        try:
            for start in range(0, len(lines), LINES_PER_WRITE):
                self.write_lines(lines[start : start + LINES_PER_WRITE])
        except StoreError:
            for message in messages:
                if isinstance(message, telemetry.Batch):
                    self.units.forget(message)
            raise

    def write_lines(self, lines: Sequence[str]) -> None:
        """POST lines to /write; StoreRejected for bad data, StoreUnavailable otherwise."""
        if not lines:
            return
        body = ("\n".join(lines) + "\n").encode("utf-8")
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if self.gzip_writes:
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        params = {"db": self.database, "precision": "ns"}
        if self.retention_policy:
            params["rp"] = self.retention_policy
        for attempt in (1, 2):
            resp = self.http.request("POST", "/write", params, body, headers)
            text = self.http.read(resp)
            if resp.status in (200, 204):
                return
            reason = _error_text(text)
            if resp.status == 404 and "database not found" in reason and self.create_database and attempt == 1:
                self._create_database()
                continue
            # A missing database or retention policy is a configuration problem, not bad data.
            if resp.status in (400, 413, 422) and "not found" not in reason:
                raise StoreRejected(f"{self.url}: {resp.status} {reason}")
            raise StoreUnavailable(f"{self.url}: {resp.status} {reason}")

    def write_derived(
        self, name: str, tags: Mapping[str, str], ts_ns: IntArray, fields: Mapping[str, FloatArray]
    ) -> None:
        """Write analytics results as their own measurement."""
        check_derived(name, tags, ts_ns, fields)
        lines = derived_lines(name, tags, ts_ns, fields)
        for start in range(0, len(lines), LINES_PER_WRITE):
            self.write_lines(lines[start : start + LINES_PER_WRITE])

    # ------------------------------------------------------------ reads

    def query(self, q: str) -> Iterator[dict[str, Any]]:
        """Run InfluxQL (chunked) and yield each result object; StoreError naming the query on errors."""
        params = {"db": self.database, "q": q, "epoch": "ns", "chunked": "true", "chunk_size": str(QUERY_CHUNK_ROWS)}
        if self.retention_policy:
            params["rp"] = self.retention_policy
        resp = self.http.request("GET", "/query", params)
        if resp.status >= 300:
            text = self.http.read(resp)
            error = StoreUnavailable if resp.status >= 500 or resp.status in (401, 403) else StoreError
            raise error(f"{self.url}: query {q!r}: {resp.status} {_error_text(text)}")
        try:
            while True:
                line = resp.readline()
                if not line:
                    break
                if not line.strip():
                    continue
                data = _JSON.decode(line)
                if "error" in data:
                    raise StoreError(f"{self.url}: query {q!r}: {data['error']}")
                for result in data.get("results", []):
                    if "error" in result:
                        raise StoreError(f"{self.url}: query {q!r}: {result['error']}")
                    yield result
        except (OSError, http.client.HTTPException) as exc:
            self.http._drop()  # noqa: SLF001
            raise StoreUnavailable(f"{self.url}: query {q!r}: {exc}") from exc

    def _rows(
        self,
        measurement: str,
        device: str | None,
        field: str,
        start_ns: int,
        end_ns: int,
        *,
        table: str | None,
        index: str | None,
        tags: Mapping[str, str] | None,
    ) -> list[list[Any]]:
        conds = [
            *series_where(device, table, index, tags),
            f"time >= {int(start_ns)}",
            f"time < {int(end_ns)}",
        ]
        # Every identifier and literal is quoted and escaped above.
        select = f"SELECT {quote_ident(field)}, {quote_ident(field + QUALITY_SUFFIX)}"
        q = f"{select} FROM {quote_ident(measurement)} WHERE {' AND '.join(conds)}"
        rows: list[list[Any]] = []
        for result in self.query(q):
            for series in result.get("series", []):
                rows.extend(series.get("values", []))
        return rows

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
        """Read a numeric series with InfluxQL; NaN where a failed read was recorded."""
        rows = self._rows(measurement, device, field, start_ns, end_ns, table=table, index=index, tags=tags)
        ts = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        values = np.full(len(rows), np.nan)
        for i, row in enumerate(rows):
            value = row[1]
            if value is None:
                continue
            if isinstance(value, str):
                raise StoreTypeError(f"{measurement}.{field} of {device}: text values; use read_text")
            values[i] = float(value)
        return ts, values

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
        """Read a text series; None where a failed read was recorded."""
        rows = self._rows(measurement, device, field, start_ns, end_ns, table=table, index=index, tags=tags)
        ts = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        values: list[str | None] = []
        for row in rows:
            value = row[1]
            if value is not None and not isinstance(value, str):
                raise StoreTypeError(f"{measurement}.{field} of {device}: numeric values; use read_series")
            values.append(value)
        return ts, values

    def list_series(self, measurement: str | None = None, *, device: str | None = None) -> list[SeriesKey]:
        """SHOW SERIES, parsed into measurement and tags."""
        q = "SHOW SERIES"
        if measurement is not None:
            q += f" FROM {quote_ident(measurement)}"
        if device is not None:
            q += f' WHERE "device" = {quote_string(device)}'
        keys: list[SeriesKey] = []
        for result in self.query(q):
            for series in result.get("series", []):
                keys.extend(parse_series_key(row[0]) for row in series.get("values", []))
        if measurement is None:
            keys = [k for k in keys if k.measurement not in RESERVED_MEASUREMENTS]
        return sorted(set(keys), key=lambda k: (k.measurement, k.tags))
