"""From MQTT message to stored data, acknowledged only once the store has taken it.

Strict decoding, dead letters, de-duplication, unit normalisation, the bounded queue and the
writer. Flow: the MQTT thread calls ``Ingest.offer`` for every message. A message that is not valid
wire format is counted, logged with its topic and reason, copied to the dead-letter topic and
acknowledged. A valid one is normalised to the collector's units and queued; the queue holds
unacknowledged messages only and is bounded (when it is full, ``offer`` blocks, so nothing more
is read or acknowledged). The ``Writer`` takes what is queued, writes it in one store call and
then acknowledges those messages in the order they arrived. If the store is unavailable nothing
is acknowledged: the messages stay in the broker session and the write is retried.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import msgspec

from collector.config import IngestSection
from collector.store import QUALITY_SUFFIX, Store, Stored, StoreRejected, StoreUnavailable, count_values
from models import telemetry
from models.schema import NAME_RE
from models.units import UNITS, conversion, normalised_unit

log = logging.getLogger(__name__)

# Tag values (model, table row index) must stay printable and free of line-protocol escapes.
_TAG_TEXT_RE: Final = re.compile(r"^[^\x00-\x1f\x7f\\]+$")
DEAD_LETTER_MAX_PAYLOAD: Final = 64 * 1024
_ENCODE: Final = msgspec.json.Encoder()
# A float64 holds integers exactly up to 2**53 and reaches about 1.8e308; bigger is garbage here.
_MAX_NUMBER: Final = 1e300


class Acker(Protocol):
    """What the MQTT side offers the writer: acknowledge a delivery, publish a dead letter."""

    def ack(self, token: object) -> None:
        """Acknowledge one delivery (ignored if its connection is gone)."""

    def dead_letter(self, payload: bytes) -> None:
        """Publish a dead-letter record."""


@dataclass(slots=True)
class Item:
    """One received message on its way to the store: what to write and what to acknowledge."""

    token: object
    message: Stored | None  # None: nothing to write (rejected or duplicate), only to acknowledge
    values: int = 0
    key: tuple[str, str, int, float] | None = None  # (agent, device, seq, ts) of a batch
    written: bool = False  # stored by a one-by-one write after a rejection


@dataclass
class Metrics:
    """The collector's own counters, updated from the MQTT thread and the writer."""

    received_messages: int = 0
    received_values: int = 0
    rejected: int = 0
    duplicates: int = 0
    seq_resets: int = 0
    dead_letters: int = 0
    written_messages: int = 0
    written_values: int = 0
    writes: int = 0
    write_errors: int = 0
    store_rejects: int = 0
    write_s_total: float = 0.0
    write_s_max: float = 0.0
    queue_full: int = 0
    store_up: bool = True
    rejects_by_reason: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def snapshot(self) -> dict[str, Any]:
        """A copy of the counters (write_s_max is reset: it is the maximum since the last snapshot)."""
        with self.lock:
            data = {k: v for k, v in vars(self).items() if k not in ("lock", "rejects_by_reason")}
            data["rejects_by_reason"] = dict(self.rejects_by_reason)
            self.write_s_max = 0.0
        return data


class Dedup:
    """Recently stored (agent, device, seq) with their read times, a bounded window per device.

    A message counts as a duplicate only if the same sequence number was stored with the same
    read time: an agent whose sequence restarted (after a reinstall) is not mistaken for a replay.
    """

    def __init__(self, window: int) -> None:
        self.window = window
        self._seen: dict[tuple[str, str], OrderedDict[int, float]] = {}
        self._lock = threading.Lock()

    def check(self, agent: str, device: str, seq: int, ts: float) -> bool | None:
        """True: stored already; False: new; None: the sequence number was used for another read."""
        if self.window == 0:
            return False
        with self._lock:
            seen = self._seen.get((agent, device))
            if seen is None or seq not in seen:
                return False
            return True if seen[seq] == ts else None

    def mark(self, keys: Sequence[tuple[str, str, int, float]]) -> None:
        """Remember stored batches, forgetting the oldest beyond the window."""
        if self.window == 0:
            return
        with self._lock:
            for agent, device, seq, ts in keys:
                seen = self._seen.get((agent, device))
                if seen is None:
                    seen = self._seen[(agent, device)] = OrderedDict()
                seen[seq] = ts
                seen.move_to_end(seq)
                while len(seen) > self.window:
                    seen.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(s) for s in self._seen.values())


# ---------------------------------------------------------------- units


def _plan(unit: str) -> tuple[float, float, str] | None:
    """(gain, bias, stored unit) for values in this unit, or None when stored as read."""
    target = normalised_unit(unit)
    if target == unit:
        return None
    gain, bias = conversion(unit, target)
    return gain, bias, target


# Every unit of the vocabulary (the wire format admits no other): how it is stored.
_CONVERSIONS: Final[dict[str, tuple[float, float, str] | None]] = {u: _plan(u) for u in UNITS}
# Point-name sets already checked for the reserved suffix (bounded: a cache, not a record).
_CHECKED_NAMES: set[tuple[str, ...]] = set()
_CHECKED_NAMES_MAX: Final = 10_000


def _check_names(where: str, names: tuple[str, ...]) -> None:
    if names in _CHECKED_NAMES:
        return
    for name in names:
        if name.endswith(QUALITY_SUFFIX):
            raise telemetry.TelemetryError(f"{where}: point name {name!r} ends with the reserved {QUALITY_SUFFIX!r}")
    if len(_CHECKED_NAMES) < _CHECKED_NAMES_MAX:
        _CHECKED_NAMES.add(names)


def _normalise_points(where: str, points: Mapping[str, telemetry.Point]) -> dict[str, telemetry.Point] | None:
    """Points converted to the collector's units (None if none changed); TelemetryError if unstorable."""
    _check_names(where, tuple(points))
    changed: dict[str, telemetry.Point] | None = None
    conversions = _CONVERSIONS
    for name, point in points.items():
        value = point.value
        if type(value) is int and abs(value) > _MAX_NUMBER:
            raise telemetry.TelemetryError(f"{where}: point {name!r}: integer {value} is too large")
        conv = conversions[point.unit]
        if conv is None:
            continue
        gain, bias, unit = conv
        if type(value) in (float, int):
            converted: Any = value * gain + bias  # type: ignore[operator]
            if not math.isfinite(converted):
                raise telemetry.TelemetryError(f"{where}: point {name!r}: {value} {point.unit} overflows in {unit}")
        else:
            converted = value
        if changed is None:
            changed = dict(points)
        changed[name] = telemetry.Point(converted, unit, point.quality, point.counter)
    return changed


def normalise(batch: telemetry.Batch) -> telemetry.Batch:
    """The batch with values in the collector's units (power kW, energy kWh, ...).

    Also refuses what the store could not hold faithfully: a measurement name that is not
    snake_case, tag text with control characters or backslashes, point names ending in
    ``__q``, integers beyond float range.
    """
    if not NAME_RE.match(batch.kind):
        raise telemetry.TelemetryError(f"kind {batch.kind!r} is not snake_case")
    if batch.model and not _TAG_TEXT_RE.match(batch.model):
        raise telemetry.TelemetryError(f"model {batch.model!r} has control characters or backslashes")
    points = _normalise_points("points", batch.points)
    tables: dict[str, dict[str, telemetry.Row]] | None = None
    for table, rows in batch.tables.items():
        for index, row in rows.items():
            if not _TAG_TEXT_RE.match(index):
                raise telemetry.TelemetryError(f"table {table!r}: row index {index!r} has control characters")
            new_row = _normalise_points(f"table {table!r} row {index}", row)
            if new_row is not None:
                if tables is None:
                    tables = {t: dict(r) for t, r in batch.tables.items()}
                tables[table][index] = new_row
    if points is None and tables is None:
        return batch
    return msgspec.structs.replace(
        batch,
        points=batch.points if points is None else points,
        tables=batch.tables if tables is None else tables,
    )


# ---------------------------------------------------------------- the queue


class IngestQueue:
    """A bounded FIFO of unacknowledged messages: filled by the MQTT thread, emptied by the writer.

    ``put`` blocks while the queue is full, so the MQTT side stops taking (and acknowledging)
    messages instead of dropping them.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: deque[Item] = deque()
        self._values = 0  # point values queued
        self._cond = threading.Condition()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._waiting = False
        self._want = 1  # wake the taker once this many values are queued (or the queue is full)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def values(self) -> int:
        """Point values queued."""
        return self._values

    def put(self, item: Item, on_full: Callable[[], None] | None = None) -> bool:
        """Append an item, waiting while the queue is full; False if the queue was closed."""
        with self._cond:
            if len(self._items) >= self.capacity and not self._closed and on_full is not None:
                on_full()
            while len(self._items) >= self.capacity and not self._closed:
                self._cond.wait(timeout=1.0)
            if self._closed:
                return False
            self._items.append(item)
            self._values += item.values
            if (
                self._waiting
                and (self._values >= self._want or len(self._items) >= self.capacity or item.values == 0)
                and self._loop is not None
                and self._event is not None
            ):
                self._waiting = False
                self._loop.call_soon_threadsafe(self._event.set)
            return True

    async def _wait(self, want: int, timeout_s: float | None) -> None:
        """Wait until ``want`` values are queued (or an item to acknowledge only, or close), up to timeout_s."""
        if self._event is None:
            self._loop = asyncio.get_running_loop()
            self._event = asyncio.Event()
        with self._cond:
            if self._closed or self._values >= want or len(self._items) >= self.capacity:
                return
            if want <= 1 and self._items:
                return
            self._event.clear()
            self._want = want
            self._waiting = True
        try:
            await asyncio.wait_for(self._event.wait(), timeout=timeout_s)
        except TimeoutError:
            pass
        finally:
            with self._cond:
                self._waiting = False
                self._want = 1

    async def take(self, max_values: int, linger_s: float = 0.0) -> list[Item]:
        """Wait for items; return the oldest ones, about max_values values' worth (at least one).

        With linger_s, wait up to that long after the first item for max_values values to
        gather, so that the store gets fewer, larger writes. Returns an empty list once the
        queue is closed and empty.
        """
        while not self._items and not self._closed:
            await self._wait(1, None)
        if linger_s > 0 and self._values < max_values and not self._closed:
            await self._wait(max_values, linger_s)
        with self._cond:
            out: list[Item] = []
            total = 0
            while self._items and (not out or total + self._items[0].values <= max_values):
                item = self._items.popleft()
                out.append(item)
                total += item.values
            self._values -= total
            self._cond.notify_all()
            return out

    def close(self) -> None:
        """Refuse further items and wake everyone waiting."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            if self._loop is not None and self._event is not None:
                self._loop.call_soon_threadsafe(self._event.set)

    @property
    def closed(self) -> bool:
        """Whether close() was called."""
        return self._closed


# ---------------------------------------------------------------- ingest


class _NoMessage(msgspec.Struct, frozen=True, tag_field="v", tag=-1):
    """Never sent: in a union with Batch it makes the decoder insist on the version tag."""


_BATCH: Final = msgspec.json.Decoder(telemetry.Batch | _NoMessage)


def _decode_batch(payload: bytes) -> telemetry.Batch:
    """telemetry.decode_batch in one pass for payloads that are fine.

    Decoded as a tagged union, a batch must carry v = 1. Whatever fails is decoded again by
    telemetry.decode_batch, which raises TelemetryError with the precise reason.
    """
    try:
        batch = _BATCH.decode(payload)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return telemetry.decode_batch(payload)
    if not isinstance(batch, telemetry.Batch):  # v = -1: refused by decode_batch as an unknown version
        return telemetry.decode_batch(payload)
    return telemetry.validate_batch(batch)


def dead_letter_record(collector: str, topic: str, reason: str, payload: bytes) -> bytes:
    """The JSON record published on the dead-letter topic for a refused message."""
    truncated = len(payload) > DEAD_LETTER_MAX_PAYLOAD
    body = payload[:DEAD_LETTER_MAX_PAYLOAD]
    try:
        text, encoding = body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(body).decode("ascii"), "base64"
    record = {
        "collector": collector,
        "topic": topic,
        "reason": reason,
        "ts": round(time.time(), 3),
        "size": len(payload),
        "truncated": truncated,
        "encoding": encoding,
        "payload": text,
    }
    return _ENCODE.encode(record)


def _reason_class(reason: str) -> str:
    """A short class of a rejection reason, for the per-reason counters."""
    for prefix, label in (
        ("not JSON", "not_json"),
        ("unsupported version", "version"),
        ("no usable version", "version"),
        ("payload of", "oversized"),
        ("topic", "topic"),
        ("invalid", "schema"),
        ("store rejected", "store"),
    ):
        if reason.startswith(prefix):
            return label
    return "invalid"


class Ingest:
    """Decode, check, de-duplicate and queue what arrives; called from the MQTT thread."""

    def __init__(
        self,
        collector_id: str,
        site: str,
        settings: IngestSection,
        acker: Acker,
        metrics: Metrics | None = None,
    ) -> None:
        self.collector_id = collector_id
        self.site = site
        self.settings = settings
        self.acker = acker
        self.metrics = metrics or Metrics()
        self.queue = IngestQueue(settings.queue_max_messages)
        self.dedup = Dedup(settings.dedup_window)
        self._last_reject_log = 0.0
        self._unlogged_rejects = 0

    # ------------------------------------------------------------ decoding

    def decode(self, topic: str, payload: bytes) -> Stored:
        """Strictly decode one message and check it against its topic; TelemetryError says why not."""
        if len(payload) > telemetry.MAX_PAYLOAD_BYTES:
            raise telemetry.TelemetryError(
                f"payload of {len(payload)} bytes exceeds the {telemetry.MAX_PAYLOAD_BYTES}-byte limit"
            )
        site, agent, device, channel = telemetry.parse_topic(topic)
        if site != self.site:
            raise telemetry.TelemetryError(f"topic {topic!r} is for site {site!r}, not {self.site!r}")
        message: Stored
        if channel == "telemetry":
            message = normalise(_decode_batch(payload))
        elif channel == "event":
            message = telemetry.decode_as(telemetry.Event, payload)
        elif channel == "status" and device is None:
            message = telemetry.decode_as(telemetry.Status, payload)
        else:
            raise telemetry.TelemetryError(f"topic {topic!r}: the collector does not take {channel!r} messages")
        if message.site != site or message.agent != agent:
            raise telemetry.TelemetryError(
                f"topic {topic!r} names {site}/{agent} but the payload {message.site}/{message.agent}"
            )
        if device is not None and getattr(message, "device", None) != device:
            raise telemetry.TelemetryError(
                f"topic {topic!r} names device {device!r} but the payload {getattr(message, 'device', None)!r}"
            )
        return message

    # ------------------------------------------------------------ the MQTT callback

    def offer(self, topic: str, payload: bytes, token: object) -> bool:
        """Take one delivery: queue it for writing, or for acknowledging only if refused or duplicate.

        Blocks while the queue is full. Returns False if the queue is closed (shutting down):
        the message is then neither stored nor acknowledged, and the broker delivers it again.
        """
        try:
            message = self.decode(topic, payload)
        except telemetry.TelemetryError as exc:
            self.reject(topic, payload, str(exc))
            return self.queue.put(Item(token, None), self._on_full)
        values = count_values(message)
        key: tuple[str, str, int, float] | None = None
        with self.metrics.lock:
            self.metrics.received_messages += 1
            self.metrics.received_values += values
        if isinstance(message, telemetry.Batch):
            key = (message.agent, message.device, message.seq, message.ts)
            seen = self.dedup.check(*key)
            if seen:
                with self.metrics.lock:
                    self.metrics.duplicates += 1
                return self.queue.put(Item(token, None), self._on_full)
            if seen is None:
                with self.metrics.lock:
                    self.metrics.seq_resets += 1
                log.debug(
                    "agent %s device %s reused sequence number %d for a new read: sequence restarted",
                    message.agent,
                    message.device,
                    message.seq,
                )
        return self.queue.put(Item(token, message, values, key), self._on_full)

    def _on_full(self) -> None:
        with self.metrics.lock:
            self.metrics.queue_full += 1

    def reject(self, topic: str, payload: bytes, reason: str) -> None:
        """Count, log (rate-limited) and dead-letter a refused message."""
        label = _reason_class(reason)
        with self.metrics.lock:
            self.metrics.rejected += 1
            self.metrics.rejects_by_reason[label] = self.metrics.rejects_by_reason.get(label, 0) + 1
        now = time.monotonic()
        if now - self._last_reject_log >= 1.0:
            log.warning(
                "rejected message on %s: %s (%d more rejected since the last report)",
                topic,
                reason,
                self._unlogged_rejects,
            )
            self._last_reject_log = now
            self._unlogged_rejects = 0
        else:
            self._unlogged_rejects += 1
        self.dead_letter(topic, payload, reason)

    def dead_letter(self, topic: str, payload: bytes, reason: str) -> None:
        """Copy a refused message to the dead-letter topic."""
        try:
            self.acker.dead_letter(dead_letter_record(self.collector_id, topic, reason, payload))
        except Exception:
            log.exception("could not publish a dead letter for %s", topic)
            return
        with self.metrics.lock:
            self.metrics.dead_letters += 1


# ---------------------------------------------------------------- the writer


def _topic_of(message: Stored) -> str:
    if isinstance(message, telemetry.Batch):
        return telemetry.telemetry_topic(message.site, message.agent, message.device)
    if isinstance(message, telemetry.Event):
        return telemetry.event_topic(message.site, message.agent, message.device)
    return telemetry.agent_status_topic(message.site, message.agent)


class Writer:
    """Takes queued messages, writes them to the store, then acknowledges them in order."""

    def __init__(self, ingest: Ingest, store: Store) -> None:
        self.ingest = ingest
        self.store = store
        self.settings = ingest.settings
        self.metrics = ingest.metrics
        self.stopping = asyncio.Event()
        self.in_write_since: float | None = None  # monotonic start of the store call in progress
        self.last_progress = time.monotonic()

    async def run(self) -> None:
        """Write until the queue is closed and empty, or stop() gives up on an unavailable store."""
        queue = self.ingest.queue
        while True:
            self.last_progress = time.monotonic()
            items = await queue.take(self.settings.max_write_values, self.settings.write_linger_s)
            if not items:
                return
            if not await self.commit(items):
                return

    def stop(self) -> None:
        """Stop retrying an unavailable store (the unwritten messages stay unacknowledged)."""
        self.stopping.set()

    async def commit(self, items: list[Item]) -> bool:
        """Write the items' messages, then acknowledge all items; False if stopped before the write."""
        pending = [item for item in items if item.message is not None]
        delay = 0.5
        exc_unavailable: StoreUnavailable
        while pending:
            try:
                await self._write([i.message for i in pending if i.message is not None and not i.written])
                break
            except StoreUnavailable as exc:
                exc_unavailable = exc
            except Exception as exc:  # noqa: BLE001  (StoreRejected, or a message the store code cannot handle)
                log.warning("store rejected a write of %d messages (%s); writing them one by one", len(pending), exc)
                try:
                    await asyncio.to_thread(self._write_each, pending)
                    break
                except StoreUnavailable as again:
                    exc_unavailable = again
            with self.metrics.lock:
                self.metrics.write_errors += 1
                self.metrics.store_up = False
            log.warning("store unavailable, %d messages wait unacknowledged: %s", len(pending), exc_unavailable)
            if self.stopping.is_set():
                return False
            if await self._stopped_within(delay):
                return False
            delay = min(delay * 2, self.settings.retry_max_s)
            self.last_progress = time.monotonic()
        self.ingest.dedup.mark([item.key for item in pending if item.key is not None])
        for item in items:
            self.ingest.acker.ack(item.token)
        self.last_progress = time.monotonic()
        return True

    async def _stopped_within(self, delay_s: float) -> bool:
        """Wait for stop() up to delay_s; True if it came."""
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=delay_s)
        except TimeoutError:
            return False
        return True

    async def _write(self, messages: list[Stored]) -> None:
        self.in_write_since = time.monotonic()
        try:
            elapsed = await asyncio.to_thread(self._timed_write, messages)
        finally:
            self.in_write_since = None
        values = sum(count_values(m) for m in messages)
        with self.metrics.lock:
            self.metrics.writes += 1
            self.metrics.written_messages += len(messages)
            self.metrics.written_values += values
            self.metrics.write_s_total += elapsed
            self.metrics.write_s_max = max(self.metrics.write_s_max, elapsed)
            if not self.metrics.store_up:
                log.info("store available again")
            self.metrics.store_up = True

    def _timed_write(self, messages: list[Stored]) -> float:
        start = time.perf_counter()
        self.store.write_batches(messages)
        return time.perf_counter() - start

    def _write_each(self, items: list[Item]) -> None:
        """Write messages one by one after a rejected write; dead-letter the ones refused alone."""
        for item in items:
            if item.message is None or item.written:
                continue
            try:
                self.store.write_batches([item.message])
            except StoreUnavailable:
                raise
            except Exception as exc:  # refused by the store, or by a bug: never retried forever
                if not isinstance(exc, StoreRejected):
                    log.exception("writing one message failed unexpectedly")
                topic = _topic_of(item.message)
                with self.metrics.lock:
                    self.metrics.store_rejects += 1
                log.warning("store rejected the message from %s: %s", topic, exc)
                self.ingest.dead_letter(topic, msgspec.json.encode(item.message), f"store rejected: {exc}")
                item.message = None
                continue
            item.written = True
            with self.metrics.lock:
                self.metrics.writes += 1
                self.metrics.written_messages += 1
                self.metrics.written_values += item.values
