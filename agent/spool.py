"""Store-and-forward: every batch is written to SQLite (WAL) before it is published and deleted on its PUBACK."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, Protocol, TypeVar

log = logging.getLogger(__name__)

WhenFull = Literal["drop-oldest", "drop-newest"]

# What a row costs beyond its topic and payload (row id, seq, size, time, b-tree cell):
# counted so that many tiny batches cannot outgrow max_mb either.
ROW_OVERHEAD_BYTES = 64
MB = 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    seq     INTEGER NOT NULL,
    topic   TEXT    NOT NULL,
    payload BLOB    NOT NULL,
    size    INTEGER NOT NULL,
    created REAL    NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

Builder = Callable[[int], tuple[str, bytes]]  # seq -> (topic, payload)
# Group commit: batches appended within this long of each other are stored in one
# transaction (a batch is spooled at most this much later), up to GROUP_MAX at a time.
GROUP_LINGER_S = 0.02
GROUP_MAX = 256
R = TypeVar("R")


class SpoolError(RuntimeError):
    """The spool cannot be opened or used; the message names the file."""


@dataclass(frozen=True, slots=True)
class Stored:
    """One spooled batch: row id (replay order), sequence number, topic and payload."""

    id: int
    seq: int
    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """Counters of the spool, safe to read from any thread."""

    depth: int = 0  # batches waiting for a PUBACK
    bytes: int = 0  # their accounted size (topic + payload + row overhead)
    max_bytes: int = 0
    dropped_oldest: int = 0  # since the spool was created (persisted)
    dropped_newest: int = 0
    next_seq: int = 1

    @property
    def dropped(self) -> int:
        """Batches dropped by either policy (or too large to spool at all)."""
        return self.dropped_oldest + self.dropped_newest


class Spool:
    """The on-disk queue of batches. Not thread-safe: use it from one thread (see AsyncSpool).

    Sequence numbers are assigned here, in the same transaction that stores the batch, so
    they are monotonic per agent, survive restarts and kill -9, and a dropped batch leaves
    a visible gap.
    """

    def __init__(self, path: Path, max_mb: float, when_full: WhenFull = "drop-oldest") -> None:
        self.path = path
        self.when_full = when_full
        self.max_bytes = int(max_mb * MB)
        self._lock_file: IO[str] | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_file = self._lock(path)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise SpoolError(f"spool {path}: SQLite refused WAL mode (got {mode!r})")
            # NORMAL in WAL mode: a committed batch survives a crash of the process (kill -9);
            # only a power cut can lose the last commits, never corrupt the file.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA journal_size_limit=67108864")
            self._db.executescript(_SCHEMA)
            depth, size = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM batches").fetchone()
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.Error as exc:
            self._unlock()
            raise SpoolError(f"spool {path}: {exc}") from exc
        except OSError as exc:
            self._unlock()
            raise SpoolError(f"spool {path}: {exc.strerror or exc}") from exc
        self._stats = SpoolStats(
            depth=int(depth),
            bytes=int(size),
            max_bytes=self.max_bytes,
            dropped_oldest=int(meta.get("dropped_oldest", 0)),
            dropped_newest=int(meta.get("dropped_newest", 0)),
            next_seq=int(meta.get("next_seq", 1)),
        )
        log.info(
            "spool %s: %d batches (%.1f MB) waiting, next seq %d, %d dropped so far",
            path,
            depth,
            size / MB,
            self._stats.next_seq,
            self._stats.dropped,
        )

    @staticmethod
    def _lock(path: Path) -> IO[str]:
        """An exclusive lock beside the database: two agents must never share a spool."""
        lock_path = path.with_name(path.name + ".lock")
        fh = lock_path.open("a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            raise SpoolError(f"spool {path} is in use by another process (lock {lock_path})") from None
        return fh

    def _unlock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # closing releases the flock
            self._lock_file = None

    @property
    def stats(self) -> SpoolStats:
        """The current counters."""
        return self._stats

    def _set_meta(self, **values: int) -> None:
        self._db.executemany(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            list(values.items()),
        )

    def append(self, build: Builder, *, numbered: bool = True) -> Stored | None:
        """Assign the next sequence number, build the batch and store it.

        Returns the stored batch, or None when the spool was full under drop-newest (or the
        batch alone exceeds max_mb); the drop is counted either way. Messages that carry no
        sequence number (events) are stored with `numbered=False`: build gets 0.
        """
        outcome = self.append_many([(build, numbered)])[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def append_many(self, items: list[tuple[Builder, bool]]) -> list[Stored | BaseException | None]:
        """Store several batches in one transaction (see append), in order; one outcome each.

        A batch whose build raises gets that exception as its outcome and takes no sequence
        number. If the transaction fails (a full disk), every batch gets the error and none
        takes a sequence number: nothing was stored.
        """
        st = self._stats
        next_seq = st.next_seq
        built: list[tuple[int, int, str, bytes] | BaseException] = []  # (seq, size, topic, payload)
        for build, numbered in items:
            seq = next_seq if numbered else 0
            try:
                topic, payload = build(seq)
            except Exception as exc:  # noqa: BLE001  (the caller gets it back for this batch alone)
                built.append(exc)
                continue
            if numbered:
                next_seq += 1
            built.append((seq, len(topic) + len(payload) + ROW_OVERHEAD_BYTES, topic, payload))
        dropped_oldest, dropped_newest = st.dropped_oldest, st.dropped_newest
        depth, used = st.depth, st.bytes
        outcomes: list[Stored | BaseException | None] = []
        db = self._db
        now = time.time()
        db.execute("BEGIN IMMEDIATE")
        try:
            for entry in built:
                if isinstance(entry, BaseException):
                    outcomes.append(entry)
                    continue
                seq, size, topic, payload = entry
                if size > self.max_bytes or (used + size > self.max_bytes and self.when_full == "drop-newest"):
                    dropped_newest += 1
                    log.warning(
                        "spool full (%d batches, %.1f MB): dropped the new message (seq %d)", depth, used / MB, seq
                    )
                    outcomes.append(None)
                    continue
                if used + size > self.max_bytes:
                    n, freed = self._drop_oldest(used + size - self.max_bytes)
                    dropped_oldest += n
                    depth -= n
                    used -= freed
                    log.warning("spool full: dropped the %d oldest batches (%.2f MB)", n, freed / MB)
                cur = db.execute(
                    "INSERT INTO batches(seq, topic, payload, size, created) VALUES (?, ?, ?, ?, ?)",
                    (seq, topic, payload, size, now),
                )
                row_id = cur.lastrowid
                assert row_id is not None  # noqa: S101  (an INSERT always has a row id)
                outcomes.append(Stored(row_id, seq, topic, payload))
                depth += 1
                used += size
            self._set_meta(next_seq=next_seq, dropped_oldest=dropped_oldest, dropped_newest=dropped_newest)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # a failed COMMIT (disk full) has already rolled back
                db.execute("ROLLBACK")
            raise
        self._stats = SpoolStats(depth, used, self.max_bytes, dropped_oldest, dropped_newest, next_seq)
        return outcomes

    def _drop_oldest(self, need: int) -> tuple[int, int]:
        """Delete the oldest rows until `need` bytes are free; (rows, bytes) deleted."""
        freed = 0
        count = 0
        last_id = None
        for row_id, size in self._db.execute("SELECT id, size FROM batches ORDER BY id"):
            freed += int(size)
            count += 1
            last_id = row_id
            if freed >= need:
                break
        if last_id is not None:
            self._db.execute("DELETE FROM batches WHERE id <= ?", (last_id,))
        return count, freed

    def delete(self, ids: Iterable[int]) -> int:
        """Remove acknowledged batches (ids already gone are ignored); the number removed."""
        id_list = list(ids)
        if not id_list:
            return 0
        db = self._db
        removed = 0
        freed = 0
        db.execute("BEGIN IMMEDIATE")
        try:
            for row_id in id_list:
                row = db.execute("DELETE FROM batches WHERE id = ? RETURNING size", (row_id,)).fetchone()
                if row is not None:
                    removed += 1
                    freed += int(row[0])
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # a failed COMMIT (disk full) has already rolled back
                db.execute("ROLLBACK")
            raise
        st = self._stats
        self._stats = SpoolStats(
            st.depth - removed, st.bytes - freed, st.max_bytes, st.dropped_oldest, st.dropped_newest, st.next_seq
        )
        return removed

    def after(self, row_id: int, limit: int) -> list[Stored]:
        """Up to `limit` spooled batches with a row id above `row_id`, oldest first."""
        rows = self._db.execute(
            "SELECT id, seq, topic, payload FROM batches WHERE id > ? ORDER BY id LIMIT ?", (row_id, limit)
        ).fetchall()
        return [Stored(int(r[0]), int(r[1]), str(r[2]), bytes(r[3])) for r in rows]

    def check(self) -> str:
        """SQLite's integrity check: 'ok', or what is wrong."""
        return "; ".join(str(r[0]) for r in self._db.execute("PRAGMA integrity_check").fetchall())

    def close(self) -> None:
        """Checkpoint the WAL into the database, close it and release the lock."""
        try:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
        finally:
            self._unlock()


class AsyncSpool:
    """The spool on its own thread, so that disk writes never stall polling on the event loop."""

    def __init__(self, spool: Spool, executor: ThreadPoolExecutor) -> None:
        self.spool = spool
        self._executor = executor
        self._pending: list[tuple[Builder, bool, asyncio.Future[Stored | None]]] = []
        self._writer: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, path: Path, max_mb: float, when_full: WhenFull) -> AsyncSpool:
        """Open (or create) the spool on a dedicated thread."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        loop = asyncio.get_running_loop()
        try:
            spool = await loop.run_in_executor(executor, Spool, path, max_mb, when_full)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(spool, executor)

    @property
    def stats(self) -> SpoolStats:
        """The current counters."""
        return self.spool.stats

    async def _run(self, fn: Callable[..., R], *args: object) -> R:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def append(self, build: Builder, *, numbered: bool = True) -> Stored | None:
        """See Spool.append. Appends made within GROUP_LINGER_S of each other are stored together.

        Each append joins the group waiting for the spool's thread; the group is built and
        committed in one transaction with one hand-off (group commit). The order of the
        appends is kept, and each caller gets its own outcome.
        """
        future: asyncio.Future[Stored | None] = asyncio.get_running_loop().create_future()
        self._pending.append((build, numbered, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending(), name="spool-append")
        return await future

    async def _write_pending(self) -> None:
        while self._pending:
            if len(self._pending) < GROUP_MAX:
                # Polls are spread over their interval, so batches rarely finish together:
                # wait a moment for more to join (one transaction and one hand-off for all).
                await asyncio.sleep(GROUP_LINGER_S)
            group, self._pending = self._pending[:GROUP_MAX], self._pending[GROUP_MAX:]
            try:
                outcomes = await self._run(self.spool.append_many, [(b, n) for b, n, _ in group])
            except BaseException as exc:  # the transaction failed: nothing of the group was stored
                for _, _, future in group:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception) else SpoolError(str(exc)))
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, _, future), outcome in zip(group, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    async def delete(self, ids: list[int]) -> int:
        """See Spool.delete."""
        return await self._run(self.spool.delete, ids)

    async def after(self, row_id: int, limit: int) -> list[Stored]:
        """See Spool.after."""
        return await self._run(self.spool.after, row_id, limit)

    async def close(self) -> None:
        """Finish the appends under way, then close the spool and its thread."""
        try:
            if self._writer is not None:
                with contextlib.suppress(Exception):
                    await self._writer
            await self._run(self.spool.close)
        finally:
            self._executor.shutdown(wait=True)


class Sink(Protocol):
    """Where the forwarder sends batches (the MQTT publisher)."""

    @property
    def connected(self) -> bool:
        """Whether the broker is reachable now."""
        ...

    @property
    def inflight(self) -> int:
        """Messages sent and not yet acknowledged."""
        ...

    @property
    def inflight_max(self) -> int:
        """The in-flight window."""
        ...

    def send(self, topic: str, payload: bytes, token: int) -> bool:
        """Hand a message over (QoS 1); False when it cannot be sent now."""
        ...


class Forwarder:
    """Moves spooled batches to the sink: live ones at once, the backlog in order at a bounded rate.

    A batch is spooled before it is sent and deleted only when the sink reports its PUBACK
    (`delivered`). While the broker is unreachable batches stay in the spool; after each
    (re)connect the backlog is replayed oldest first, using at most three quarters of the
    in-flight window and `replay_per_s` messages per second, so live batches keep flowing
    beside it. The collector removes duplicates by sequence number.
    """

    REPLAY_FETCH = 100
    REFUSED_HOLD_S = 10.0  # after the broker refuses a message, wait this long before sending it again

    def __init__(self, spool: AsyncSpool, sink: Sink, replay_per_s: float) -> None:
        self.spool = spool
        self.sink = sink
        self.replay_per_s = replay_per_s
        self._inflight: set[int] = set()  # row ids handed to the sink, not yet acknowledged
        self._cursor = 0  # the replay has handled every row id up to here
        self._backlog = True  # rows may wait in the spool that were never sent
        self._marks = 0  # bumped whenever a row is left for the replay
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()  # set on every acknowledgement
        self._acked: list[int] = []
        self._flusher: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._next_send = 0.0
        self._hold_until = 0.0  # no replay before this (monotonic) time
        self.sent_live = 0
        self.replayed = 0
        self.delivered_total = 0
        self.errors = 0

    @property
    def backlog(self) -> bool:
        """Whether a replay is pending or running."""
        return self._backlog

    def start(self) -> None:
        """Start the replay task."""
        self._task = asyncio.create_task(self._replay_loop(), name="spool-replay")
        self._wake.set()

    async def submit(self, build: Builder, *, numbered: bool = True) -> Stored | None:
        """Spool a batch (assigning its seq) and send it at once when the window allows."""
        stored = await self.spool.append(build, numbered=numbered)
        if stored is None:
            return None
        if self.sink.connected and self._live_room() > 0 and self.sink.send(stored.topic, stored.payload, stored.id):
            self._inflight.add(stored.id)
            self.sent_live += 1
        else:
            self._mark()
        return stored

    def _mark(self) -> None:
        """Leave work for the replay."""
        self._marks += 1
        self._backlog = True
        self._wake.set()

    def _live_room(self) -> int:
        return self.sink.inflight_max - self.sink.inflight

    def _replay_room(self) -> int:
        window = self.sink.inflight_max
        reserve = window // 4  # kept free for live batches
        return max(window - reserve, 1) - self.sink.inflight

    # -- called by the publisher (on the event loop) ------------------------------------

    def connected(self) -> None:
        """The broker (re)accepted us: replay everything not in flight, from the start."""
        self._cursor = 0
        self._mark()

    def delivered(self, token: int, ok: bool) -> None:
        """The broker acknowledged (ok) or refused a batch."""
        self._inflight.discard(token)
        self._progress.set()
        if ok:
            self.delivered_total += 1
            self._acked.append(token)
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.create_task(self._flush(), name="spool-delete")
        else:
            self.errors += 1
            self._cursor = min(self._cursor, token - 1)
            # A refusal (an ACL, a quota) is not cured by resending at once.
            self._hold_until = time.monotonic() + self.REFUSED_HOLD_S
            self._mark()
        if self._backlog:
            self._wake.set()

    async def _flush(self) -> None:
        while self._acked:
            ids, self._acked = self._acked, []
            try:
                await self.spool.delete(ids)
            except Exception:
                log.exception("spool: could not delete %d acknowledged batches (they will be sent again)", len(ids))

    # -- replay -------------------------------------------------------------------------

    async def _pace(self) -> None:
        """Hold the replay to replay_per_s (a rate limit, not synchronisation)."""
        now = time.monotonic()
        self._next_send = max(self._next_send, now)
        wait_s = self._next_send - now
        self._next_send += 1.0 / self.replay_per_s
        if wait_s > 0:
            await asyncio.sleep(wait_s)

    async def _replay_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._backlog and self.sink.connected:
                if (hold_s := self._hold_until - time.monotonic()) > 0:
                    await asyncio.sleep(hold_s)  # backing off after a refusal
                    continue
                if self._replay_room() <= 0:
                    break  # an acknowledgement wakes us
                marks = self._marks
                rows = await self.spool.after(self._cursor, self.REPLAY_FETCH)
                if not rows:
                    if marks == self._marks:  # nothing was left for us while we looked
                        self._backlog = False
                    break
                if not await self._replay(rows):
                    break

    async def _replay(self, rows: list[Stored]) -> bool:
        """Send rows in order while the window and the link allow; False when sending stopped."""
        for row in rows:
            if row.id in self._inflight:
                self._cursor = max(self._cursor, row.id)
                continue
            if self._replay_room() <= 0 or not self.sink.connected:
                return True  # the outer loop waits for an acknowledgement or a connection
            await self._pace()
            if row.id in self._inflight:
                continue
            if not self.sink.connected or not self.sink.send(row.topic, row.payload, row.id):
                return False
            self._inflight.add(row.id)
            self._cursor = max(self._cursor, row.id)
            self.replayed += 1
        return True

    async def drain(self, timeout_s: float) -> bool:
        """Wait (bounded) until nothing is in flight; flush deletions. True when drained."""
        deadline = time.monotonic() + timeout_s
        while self._inflight and self.sink.connected and (left := deadline - time.monotonic()) > 0:
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), timeout=left)
        if self._flusher is not None:
            await self._flusher
        await self._flush()
        return not self._inflight

    async def stop(self) -> None:
        """Stop the replay task and write pending deletions."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._flusher is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self._flush()
