"""Notifications: webhooks (JSON POST, retries, dead-letter log) and maintenance suppression."""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

from collector.alarms.lifecycle import Transition, TransitionType
from collector.alarms.rules import matches
from collector.alarms.settings import WEEKDAYS, MaintenanceWindow, Webhook

log = logging.getLogger(__name__)

USER_AGENT: Final = "dcim-collector-alarms/1"
MAX_BACKOFF_S: Final = 60.0
# Answers worth trying again: the receiver is busy or broken now, not refusing the payload.
RETRY_STATUS: Final = frozenset({408, 425, 429, 500, 502, 503, 504})
_STOP: Final = object()


# ---------------------------------------------------------------- maintenance


class Maintenance:
    """Planned maintenance windows per device or room: which one covers a device at a time."""

    def __init__(
        self, windows: Sequence[MaintenanceWindow], rooms: Mapping[str, Sequence[str]], timezone: str = "UTC"
    ) -> None:
        self.windows = list(windows)
        self.rooms = {name: list(globs) for name, globs in rooms.items()}
        self.tz: tzinfo = ZoneInfo(timezone)

    def covering(self, device: str, ts: float) -> str:
        """The name of a window covering the device at ts (Unix s), or "" when none does."""
        for window in self.windows:
            if self._covers_device(window, device) and self._open(window, ts):
                return window.name
        return ""

    def _covers_device(self, window: MaintenanceWindow, device: str) -> bool:
        if window.devices and matches(window.devices, device):
            return True
        for room in window.rooms:
            globs = self.rooms.get(room)
            if globs and matches(globs, device):
                return True
        return False

    def _open(self, window: MaintenanceWindow, ts: float) -> bool:
        if window.start is not None and window.end is not None:
            start = window.start if window.start.tzinfo else window.start.replace(tzinfo=self.tz)
            end = window.end if window.end.tzinfo else window.end.replace(tzinfo=self.tz)
            return start.timestamp() <= ts < end.timestamp()
        assert window.at is not None  # noqa: S101  (validated)
        assert window.duration_min is not None  # noqa: S101
        local = datetime.fromtimestamp(ts, self.tz)
        length = timedelta(minutes=window.duration_min)
        days = {WEEKDAYS.index(d) for d in window.days}
        # A window that started on an earlier day may still be open (overnight, multi-day).
        for back in range(int(window.duration_min // (24 * 60)) + 2):
            day = (local - timedelta(days=back)).date()
            if day.weekday() not in days:
                continue
            start = datetime.combine(day, window.at, tzinfo=self.tz)
            if start.timestamp() <= ts < (start + length).timestamp():
                return True
        return False


# ---------------------------------------------------------------- webhooks


@dataclass(frozen=True, slots=True)
class Delivery:
    """The outcome of one webhook delivery."""

    webhook: str
    alarm_id: str
    transition: str
    ok: bool
    attempts: int
    error: str = ""


class _Worker:
    """One webhook: its own queue and thread, so a slow receiver delays nobody else."""

    def __init__(self, hook: Webhook, token: str | None, notifier: Notifier) -> None:
        self.hook = hook
        self.notifier = notifier
        self.headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **hook.headers}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=hook.queue_max)
        self.thread = threading.Thread(target=self._run, name=f"webhook-{hook.name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            try:
                if item is _STOP:
                    return
                self.notifier.finished(self._deliver(item))
            except Exception:
                log.exception("webhook %s: delivery crashed", self.hook.name)
            finally:
                self.queue.task_done()

    def _deliver(self, transition: Transition) -> Delivery:
        hook = self.hook
        body = transition.to_json()
        error = ""
        attempts = 0
        for attempt in range(hook.retries + 1):
            attempts = attempt + 1
            retry, error = self._post(body)
            if not error:
                return Delivery(hook.name, transition.alarm.id, transition.type.value, ok=True, attempts=attempts)
            if not retry or attempt == hook.retries or self.notifier.closing.is_set():
                break
            backoff = min(hook.backoff_s * 2**attempt, MAX_BACKOFF_S)
            log.info("webhook %s: attempt %d failed (%s); retrying in %.1f s", hook.name, attempts, error, backoff)
            if self.notifier.closing.wait(backoff):
                break
        self.notifier.dead_letter(hook, transition, attempts, error)
        return Delivery(hook.name, transition.alarm.id, transition.type.value, ok=False, attempts=attempts, error=error)

    def _post(self, body: bytes) -> tuple[bool, str]:
        """(retry, error): error is "" on success."""
        request = urllib.request.Request(self.hook.url, data=body, headers=self.headers, method="POST")  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.hook.timeout_s) as response:  # noqa: S310
                response.read()
                return False, ""
        except urllib.error.HTTPError as exc:
            return exc.code in RETRY_STATUS, f"HTTP {exc.code} {exc.reason}"
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            return True, f"{type(reason).__name__}: {reason}"


class Notifier:
    """Sends transitions to the webhooks that want them; failures end in a dead-letter log.

    A webhook wants a transition when the alarm is not suppressed by maintenance, the
    transition type is in its `transitions` ("unsuppressed" counts as "raised": the raise
    it held back), the severity in its `severities` and the site in its `sites`.
    """

    def __init__(self, webhooks: Sequence[Webhook], dead_letter: Path, base_dir: Path | None = None) -> None:
        self.dead_letter_path = dead_letter
        self.closing = threading.Event()
        self._lock = threading.Lock()
        self._done = threading.Condition()
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.deliveries: list[Delivery] = []  # the latest outcomes, for status and tests
        self._workers = [_Worker(h, _token(h, base_dir), self) for h in webhooks]

    @staticmethod
    def wants(hook: Webhook, transition: Transition) -> bool:
        """Whether a webhook takes this transition."""
        alarm = transition.alarm
        if alarm.suppressed:
            return False
        kind = TransitionType.RAISED if transition.type is TransitionType.UNSUPPRESSED else transition.type
        return kind in hook.transitions and alarm.severity in hook.severities and matches(hook.sites, alarm.site)

    def submit(self, transition: Transition) -> int:
        """Queue a transition for every webhook that wants it; how many took it."""
        queued = 0
        for worker in self._workers:
            if not self.wants(worker.hook, transition):
                continue
            try:
                worker.queue.put_nowait(transition)
                queued += 1
            except queue.Full:
                self.dropped += 1
                self.dead_letter(worker.hook, transition, 0, "queue full")
        return queued

    def finished(self, delivery: Delivery) -> None:
        """Count a delivery outcome (called from the worker threads)."""
        with self._done:
            if delivery.ok:
                self.sent += 1
            else:
                self.failed += 1
            self.deliveries.append(delivery)
            del self.deliveries[:-1000]
            self._done.notify_all()

    def dead_letter(self, hook: Webhook, transition: Transition, attempts: int, error: str) -> None:
        """Append an undelivered transition to the dead-letter log (JSON lines)."""
        log.error(
            "webhook %s: alarm %s %s not delivered after %d attempts: %s",
            hook.name,
            transition.alarm.id,
            transition.type.value,
            attempts,
            error,
        )
        line = json.dumps(
            {
                "ts": time.time(),
                "webhook": hook.name,
                "url": hook.url,
                "attempts": attempts,
                "error": error,
                "transition": transition.to_dict(),
            },
            separators=(",", ":"),
        )
        with self._lock:
            try:
                self.dead_letter_path.parent.mkdir(parents=True, exist_ok=True)
                with self.dead_letter_path.open("a", encoding="utf-8") as fh:
                    fh.write(line + "\n")
            except OSError as exc:
                log.error("dead-letter log %s: %s", self.dead_letter_path, exc)  # noqa: TRY400

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until every queued delivery finished (or ended in the dead-letter log)."""
        deadline = time.monotonic() + timeout_s
        for worker in self._workers:
            with worker.queue.all_tasks_done:
                while worker.queue.unfinished_tasks:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    worker.queue.all_tasks_done.wait(left)
        return True

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued (no more retries once closing), then stop the threads."""
        self.wait_idle(timeout_s / 2)
        self.closing.set()
        for worker in self._workers:
            with contextlib.suppress(queue.Full):
                worker.queue.put(_STOP, timeout=timeout_s / 2)
        deadline = time.monotonic() + timeout_s / 2
        for worker in self._workers:
            worker.thread.join(max(0.0, deadline - time.monotonic()))
            left = worker.queue.qsize()
            if worker.thread.is_alive() or left:
                log.warning("webhook %s: stopped with deliveries still queued", worker.hook.name)


def _token(hook: Webhook, base_dir: Path | None) -> str | None:
    if hook.token_file is None:
        return None
    path = hook.token_file if hook.token_file.is_absolute() or base_dir is None else base_dir / hook.token_file
    return path.read_text(encoding="utf-8").strip()
