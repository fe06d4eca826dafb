"""SQLite persistence of alarms and of every transition, shared by the service and the CLI."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import msgspec

from collector.alarms.lifecycle import Alarm, AlarmNotFoundError, AlarmState, Transition, TransitionType, acknowledge

SCHEMA_VERSION: Final = 1
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS alarms (
    id TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    device TEXT NOT NULL,
    rule TEXT NOT NULL,
    subject TEXT NOT NULL,
    severity TEXT NOT NULL,
    state TEXT NOT NULL,
    acked INTEGER NOT NULL,
    raised_ts REAL NOT NULL,
    updated_ts REAL NOT NULL,
    cleared_ts REAL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS alarms_state ON alarms (state, updated_ts);
CREATE TABLE IF NOT EXISTS transitions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    alarm_id TEXT NOT NULL,
    type TEXT NOT NULL,
    ts REAL NOT NULL,
    published INTEGER NOT NULL DEFAULT 0,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS transitions_alarm ON transitions (alarm_id, seq);
CREATE INDEX IF NOT EXISTS transitions_unpublished ON transitions (seq) WHERE published = 0;
"""
_ACK_FIELDS: Final = ("acked", "acked_by", "acked_ts", "ack_comment")
_ENCODE: Final = msgspec.json.Encoder()


class AlarmStore:
    """Alarms and their transitions in one SQLite file (WAL), safe across processes.

    Every transition is written with `published = 0`: the collector's alarm service
    publishes them in order and marks them, so an acknowledgement written by
    `dcim-collector alarms ack` in another process reaches MQTT and webhooks too.
    """

    def __init__(self, path: str | Path, timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise OSError(f"alarm database {self.path}: {exc}") from exc

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -------------------------------------------------------- writes

    def record(self, transitions: Sequence[Transition]) -> list[Transition]:
        """Store transitions (and the alarms they leave) in one transaction.

        An acknowledgement made meanwhile by another process is kept: a clear of an
        alarm the store knows as acknowledged carries the acknowledgement. Returns the
        transitions as stored.
        """
        out: list[Transition] = []
        with self._write() as db:
            for t in transitions:
                alarm = t.alarm
                if t.type in (TransitionType.CLEARED, TransitionType.UNSUPPRESSED) and not alarm.acked:
                    stored = _alarm_of(db, alarm.id)
                    if stored is not None and stored.acked:
                        acks = {f: getattr(stored, f) for f in _ACK_FIELDS}
                        state = alarm.state if not alarm.active else AlarmState.ACKNOWLEDGED
                        alarm = dataclasses.replace(alarm, state=state, **acks)
                        t = dataclasses.replace(t, alarm=alarm)  # noqa: PLW2901
                _upsert(db, alarm)
                _insert_transition(db, t)
                out.append(t)
        return out

    def acknowledge(self, alarm_id: str, by: str, comment: str, ts: float) -> Transition:
        """Acknowledge an alarm by id or unique id prefix; AlarmError names what is wrong."""
        with self._write() as db:
            alarm = _find(db, alarm_id)
            transition = acknowledge(alarm, by, comment, ts)
            _upsert(db, transition.alarm)
            _insert_transition(db, transition)
        return transition

    def mark_published(self, seqs: Sequence[int]) -> None:
        """Mark transitions as published."""
        if not seqs:
            return
        with self._write() as db:
            db.executemany("UPDATE transitions SET published = 1 WHERE seq = ?", [(s,) for s in seqs])

    def prune(self, before_ts: float) -> int:
        """Delete alarms cleared before a time, with their transitions; how many alarms went."""
        with self._write() as db:
            ids = [
                r[0]
                for r in db.execute(
                    "SELECT id FROM alarms WHERE state = ? AND cleared_ts < ?", (AlarmState.CLEARED.value, before_ts)
                )
            ]
            db.executemany("DELETE FROM transitions WHERE alarm_id = ? AND published = 1", [(i,) for i in ids])
            db.executemany("DELETE FROM alarms WHERE id = ?", [(i,) for i in ids])
        return len(ids)

    # -------------------------------------------------------- reads

    def find(self, alarm_id: str) -> Alarm:
        """One alarm by id or unique id prefix."""
        with self._lock:
            return _find(self._db, alarm_id)

    def alarms(self, *, active_only: bool = False, since_ts: float | None = None) -> list[Alarm]:
        """Alarms, most urgent and newest first; active ones only, or also those cleared since a time."""
        query = "SELECT data FROM alarms"
        args: list[object] = []
        if active_only:
            query += " WHERE state != ?"
            args.append(AlarmState.CLEARED.value)
        elif since_ts is not None:
            query += " WHERE state != ? OR updated_ts >= ?"
            args += [AlarmState.CLEARED.value, since_ts]
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
        alarms = [_decode_alarm(r[0]) for r in rows]
        alarms.sort(key=lambda a: (not a.active, a.severity.rank, -a.raised_ts))
        return alarms

    def history(self, alarm_id: str) -> list[Transition]:
        """Every stored transition of one alarm, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT payload FROM transitions WHERE alarm_id = ? ORDER BY seq", (alarm_id,)
            ).fetchall()
        return [Transition.from_json(r[0]) for r in rows]

    def unpublished(self, limit: int = 1000) -> list[tuple[int, Transition]]:
        """Transitions not yet published, oldest first, with their sequence numbers."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, payload FROM transitions WHERE published = 0 ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [(int(r[0]), Transition.from_json(r[1])) for r in rows]


def _decode_alarm(data: bytes) -> Alarm:
    return Alarm.from_dict(msgspec.json.decode(data))


def _alarm_of(db: sqlite3.Connection, alarm_id: str) -> Alarm | None:
    row = db.execute("SELECT data FROM alarms WHERE id = ?", (alarm_id,)).fetchone()
    return _decode_alarm(row[0]) if row is not None else None


def _find(db: sqlite3.Connection, alarm_id: str) -> Alarm:
    text = alarm_id.strip().lower()
    if not text or not all(c in "0123456789abcdef" for c in text):
        raise AlarmNotFoundError(f"{alarm_id!r} is not an alarm id (hex digits, as `alarms list` shows)")
    rows = db.execute("SELECT data FROM alarms WHERE id LIKE ? LIMIT 2", (text + "%",)).fetchall()
    if not rows:
        raise AlarmNotFoundError(f"no alarm {alarm_id}")
    if len(rows) > 1:
        raise AlarmNotFoundError(f"alarm id prefix {alarm_id} is ambiguous: give more digits")
    return _decode_alarm(rows[0][0])


def _upsert(db: sqlite3.Connection, alarm: Alarm) -> None:
    db.execute(
        "INSERT INTO alarms (id, site, device, rule, subject, severity, state, acked, raised_ts, updated_ts,"
        " cleared_ts, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (id) DO UPDATE SET severity = excluded.severity, state = excluded.state,"
        " acked = excluded.acked, updated_ts = excluded.updated_ts, cleared_ts = excluded.cleared_ts,"
        " data = excluded.data",
        (
            alarm.id,
            alarm.site,
            alarm.device,
            alarm.rule,
            alarm.subject,
            alarm.severity.value,
            alarm.state.value,
            int(alarm.acked),
            alarm.raised_ts,
            alarm.updated_ts,
            alarm.cleared_ts,
            _ENCODE.encode(alarm.to_dict()),
        ),
    )


def _insert_transition(db: sqlite3.Connection, t: Transition) -> None:
    db.execute(
        "INSERT INTO transitions (alarm_id, type, ts, payload) VALUES (?, ?, ?, ?)",
        (t.alarm.id, t.type.value, t.ts, t.to_json()),
    )
