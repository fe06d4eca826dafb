"""The collector's [alarms] configuration: rules, overrides, webhooks, maintenance, database."""

from __future__ import annotations

import fnmatch
import re
from datetime import datetime, time
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import urlparse

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from collector.alarms.defaults import default_rules
from collector.alarms.lifecycle import TransitionType
from collector.alarms.rules import Override, Rule, Severity

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


def _http_url(value: str) -> str:
    url = urlparse(value)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"{value!r} is not an http:// or https:// URL with a host")
    if url.username or url.password:
        raise ValueError("put no credentials in the URL: use token_file")
    return value


def _name(value: str) -> str:
    if not _NAME_RE.match(value):
        raise ValueError(f"{value!r} is not a name (letters, digits, '_', '.', ':', '-')")
    return value


Name = Annotated[str, AfterValidator(_name)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Webhook(_Strict):
    """[[alarms.webhooks]]: a JSON POST of each matching transition, with retries."""

    name: Name
    url: Annotated[str, AfterValidator(_http_url)]
    severities: list[Severity] = Field(default_factory=lambda: list(Severity))
    sites: list[str] = Field(default_factory=list)  # globs; empty: every site
    transitions: list[TransitionType] = Field(default_factory=lambda: [TransitionType.RAISED, TransitionType.CLEARED])
    timeout_s: float = Field(default=5.0, gt=0, le=120)
    retries: int = Field(default=3, ge=0, le=20)
    backoff_s: float = Field(default=1.0, ge=0, le=300)  # doubles after each failed attempt
    token_file: Path | None = None  # sent as "Authorization: Bearer <token>"
    headers: dict[str, str] = Field(default_factory=dict)
    queue_max: int = Field(default=10_000, ge=1, le=1_000_000)


class MaintenanceWindow(_Strict):
    """[[alarms.maintenance]]: alarms raised inside it are recorded but notify nobody.

    Either a one-off window (`start`, `end`; a time without an offset is in the
    collector's time zone) or a weekly one (`days`, `at` "HH:MM" local, `duration_min`).
    """

    name: str = "maintenance"
    devices: list[str] = Field(default_factory=list)  # device id globs
    rooms: list[str] = Field(default_factory=list)  # names from [alarms.rooms]
    start: datetime | None = None
    end: datetime | None = None
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(default_factory=list)
    at: time | None = None
    duration_min: float | None = Field(default=None, gt=0, le=7 * 24 * 60)

    @model_validator(mode="after")
    def _when(self) -> Self:
        if not self.devices and not self.rooms:
            raise ValueError("a maintenance window needs 'devices' or 'rooms'")
        once = self.start is not None or self.end is not None
        weekly = bool(self.days) or self.at is not None or self.duration_min is not None
        if once == weekly:
            raise ValueError("give either 'start' and 'end', or 'days', 'at' and 'duration_min'")
        if once:
            if self.start is None or self.end is None:
                raise ValueError("a one-off window needs both 'start' and 'end'")
            if (self.start.tzinfo is None) != (self.end.tzinfo is None):
                raise ValueError("'start' and 'end' both need a UTC offset, or neither")
            if self.end <= self.start:
                raise ValueError("'end' must be after 'start'")
        elif not (self.days and self.at is not None and self.duration_min is not None):
            raise ValueError("a weekly window needs 'days', 'at' and 'duration_min'")
        return self


class AlarmsSection(_Strict):
    """[alarms]: rule evaluation, lifecycle, notifications and the alarm database."""

    enabled: bool = True
    # Relative paths are taken from the working directory, like every path in the file.
    db: Path | None = None  # default: next to the SQLite store, else alarms.sqlite
    dead_letter: Path | None = None  # default: <db name>-webhooks.deadletter.jsonl next to db
    defaults: bool = True  # load the shipped default rules
    reraise_window_s: float = Field(default=300.0, ge=0)
    tick_s: float = Field(default=2.0, gt=0, le=60)  # how often staleness is judged without batches
    retention_days: float = Field(default=90.0, gt=0)
    rooms: dict[str, list[str]] = Field(default_factory=dict)  # room -> device id globs
    rules: list[Rule] = Field(default_factory=list)
    overrides: list[Override] = Field(default_factory=list)
    webhooks: list[Webhook] = Field(default_factory=list)
    maintenance: list[MaintenanceWindow] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"rules: rule {rule.id!r} is defined twice")
            seen.add(rule.id)
        known = {r.id: r for r in self.all_rules()}
        for i, ov in enumerate(self.overrides):
            hits = [r for rid, r in known.items() if fnmatch.fnmatchcase(rid, ov.rule)]
            if not hits:
                raise ValueError(f"overrides[{i}]: no rule matches {ov.rule!r}")
            for rule in hits:
                try:
                    ov.apply(rule)
                except ValueError as exc:
                    raise ValueError(f"overrides[{i}]: rule {rule.id!r}: {exc}") from None
        names = [w.name for w in self.webhooks]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"webhooks: name {min(dup)!r} is used twice")
        for i, window in enumerate(self.maintenance):
            for room in window.rooms:
                if room not in self.rooms:
                    raise ValueError(f"maintenance[{i}]: room {room!r} is not in [alarms.rooms]")
        return self

    def all_rules(self) -> list[Rule]:
        """Shipped rules (when enabled) with the configured ones added or replacing them by id."""
        base = default_rules() if self.defaults else []
        by_id = {r.id: r for r in base}
        for rule in self.rules:
            by_id[rule.id] = rule
        return list(by_id.values())


def resolve(path: Path, base: Path) -> Path:
    """A configured path, relative to `base` unless absolute."""
    return path if path.is_absolute() else base / path


def alarm_paths(section: AlarmsSection, *, store_path: Path | None = None, base: Path = Path()) -> tuple[Path, Path]:
    """(database, dead-letter log) of the section.

    By default the database sits next to the SQLite store (`store_path`, when the store is
    SQLite), else it is alarms.sqlite in `base` (the working directory); the dead-letter
    log sits next to the database.
    """
    if section.db is not None:
        db = resolve(section.db, base)
    elif store_path is not None:
        db = resolve(store_path, base).parent / "alarms.sqlite"
    else:
        db = base / "alarms.sqlite"
    if section.dead_letter is not None:
        return db, resolve(section.dead_letter, base)
    return db, db.with_name(f"{db.stem}-webhooks.deadletter.jsonl")


def file_problems(section: AlarmsSection, base: Path) -> list[tuple[str, str]]:
    """(key, reason) for files the section names that cannot be read (webhook token files)."""
    problems: list[tuple[str, str]] = []
    for i, hook in enumerate(section.webhooks):
        if hook.token_file is not None and not resolve(hook.token_file, base).is_file():
            key = f"alarms.webhooks[{i}] ({hook.name}).token_file"
            problems.append((key, f"{hook.token_file} is not a readable file"))
    return problems
