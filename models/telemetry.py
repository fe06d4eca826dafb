"""Telemetry wire format v1 between agent and collector: topics and strict payloads."""

from __future__ import annotations

import math
import re
from typing import Final, Literal, TypeVar, cast

import msgspec

from models.quality import Quality
from models.schema import NAME_RE
from models.units import UNITS

VERSION: Final = 1
PREFIX: Final = "dcim/v1"
MAX_PAYLOAD_BYTES: Final = 256 * 1024
# Timestamps outside this window are rejected: a device clock at 1970 or a value in
# milliseconds is a bug to surface, not data to store.
MIN_TS: Final = 946_684_800.0  # 2000-01-01T00:00:00Z
MAX_TS: Final = 4_102_444_800.0  # 2100-01-01T00:00:00Z

ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")

Scalar = float | int | str | bool | None


class TelemetryError(ValueError):
    """A payload or topic that is not valid wire format v1; the message is the reason."""


class Point(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """One point of a batch: value (None unless good), unit and quality."""

    value: Scalar
    unit: str
    quality: str = "good"
    counter: bool = False


Row = dict[str, Point]


class Batch(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    omit_defaults=True,
    kw_only=True,
    tag_field="v",
    tag=VERSION,
):
    """All points of one device from one poll."""

    site: str
    agent: str
    device: str
    model: str
    kind: str
    seq: int
    ts: float
    points: dict[str, Point] = msgspec.field(default_factory=dict)
    # table name -> row index -> column name -> point (e.g. PDU outlets, UPS input lines)
    tables: dict[str, dict[str, Row]] = msgspec.field(default_factory=dict)
    poll_ms: float | None = None


class Status(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    omit_defaults=True,
    kw_only=True,
    tag_field="v",
    tag=VERSION,
):
    """An agent's retained online/offline status (also its last will)."""

    site: str
    agent: str
    state: Literal["online", "offline"]
    ts: float | None = None
    version: str = ""


class Event(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    omit_defaults=True,
    kw_only=True,
    tag_field="v",
    tag=VERSION,
):
    """Something that happened: a trap, a state change, a refused command."""

    site: str
    agent: str
    device: str
    type: str
    ts: float
    severity: Literal["critical", "major", "minor", "warning", "info"] = "info"
    message: str = ""
    data: dict[str, Scalar] = msgspec.field(default_factory=dict)


class Command(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    omit_defaults=True,
    kw_only=True,
    tag_field="v",
    tag=VERSION,
):
    """A setpoint write asked of an agent. Expired commands are refused."""

    id: str
    device: str
    point: str
    value: Scalar = None
    release: bool = False
    expires: float
    by: str = ""


class CommandResult(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    omit_defaults=True,
    kw_only=True,
    tag_field="v",
    tag=VERSION,
):
    """An agent's answer to a command."""

    id: str
    device: str
    point: str
    ok: bool
    outcome: str
    reason: str = ""
    before: Scalar = None
    after: Scalar = None
    ts: float


Message = Batch | Status | Event | Command | CommandResult

T = TypeVar("T", Batch, Status, Event, Command, CommandResult)


class _Envelope(msgspec.Struct):
    """Only the version field, checked before the strict decode."""

    v: int


_ENCODER: Final = msgspec.json.Encoder()
_ENVELOPE: Final = msgspec.json.Decoder(_Envelope)
_DECODERS: Final = {cls: msgspec.json.Decoder(cls) for cls in (Batch, Status, Event, Command, CommandResult)}
_QUALITIES: Final = frozenset(q.value for q in Quality)


# ---------------------------------------------------------------- topics


def _check_id(what: str, value: str) -> str:
    if not ID_RE.match(value):
        raise TelemetryError(
            f"{what} {value!r} is not a valid id (letters, digits, '_', '.', ':', '-'; no '/', '+', '#')"
        )
    return value


def device_topic(site: str, agent: str, device: str, channel: str) -> str:
    """dcim/v1/{site}/{agent}/{device}/{telemetry|status|event}."""
    if channel not in ("telemetry", "status", "event"):
        raise TelemetryError(f"unknown channel {channel!r}")
    return f"{PREFIX}/{_check_id('site', site)}/{_check_id('agent', agent)}/{_check_id('device', device)}/{channel}"


def telemetry_topic(site: str, agent: str, device: str) -> str:
    """Topic of a device's telemetry batches."""
    return device_topic(site, agent, device, "telemetry")


def event_topic(site: str, agent: str, device: str) -> str:
    """Topic of a device's events."""
    return device_topic(site, agent, device, "event")


def agent_status_topic(site: str, agent: str) -> str:
    """Retained online/offline status of an agent: dcim/v1/{site}/{agent}/status."""
    return f"{PREFIX}/{_check_id('site', site)}/{_check_id('agent', agent)}/status"


def command_topic(site: str, agent: str) -> str:
    """Commands for an agent."""
    return f"{PREFIX}/{_check_id('site', site)}/{_check_id('agent', agent)}/cmd"


def command_result_topic(site: str, agent: str) -> str:
    """An agent's answers to commands."""
    return f"{command_topic(site, agent)}/result"


def alarm_topic(site: str) -> str:
    """Alarm transitions of a site."""
    return f"{PREFIX}/{_check_id('site', site)}/alarm"


def parse_topic(topic: str) -> tuple[str, str, str | None, str]:
    """Split a topic into (site, agent, device or None, channel); TelemetryError if foreign."""
    parts = topic.split("/")
    if len(parts) < 4 or parts[0] != "dcim" or parts[1] != "v1":
        raise TelemetryError(f"topic {topic!r} is not under {PREFIX}/")
    rest = parts[2:]
    if len(rest) == 3 and rest[2] in ("status", "cmd"):
        return rest[0], rest[1], None, rest[2]
    if len(rest) == 4 and rest[2:] == ["cmd", "result"]:
        return rest[0], rest[1], None, "cmd/result"
    if len(rest) == 4 and rest[3] in ("telemetry", "status", "event"):
        return rest[0], rest[1], rest[2], rest[3]
    raise TelemetryError(f"topic {topic!r} has no known channel")


# ---------------------------------------------------------------- payloads


def encode(message: Message) -> bytes:
    """Serialise a message to JSON bytes."""
    data = _ENCODER.encode(message)
    if len(data) > MAX_PAYLOAD_BYTES:
        raise TelemetryError(f"payload of {len(data)} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit")
    return data


# Names seen valid before: a collector sees the same few thousand point names over and
# over, and a set lookup is far cheaper than the regular expression. Bounded, so a
# stream of random names cannot grow it without limit.
_VALID_NAMES: set[str] = set()
_VALID_NAMES_MAX: Final = 100_000
_GOOD: Final = "good"
_isfinite = math.isfinite


def _point_problem(point: Point) -> str | None:
    """Why a point is invalid, or None (the caller names where it is)."""
    quality = point.quality
    if quality not in _QUALITIES:
        return f"unknown quality {quality!r}"
    if point.unit not in UNITS:
        return f"unknown unit {point.unit!r}"
    value = point.value
    if quality == _GOOD:
        if value is None:
            return "quality good but no value"
        if type(value) is float and not _isfinite(value):
            return "value is not finite"
    elif value is not None:
        return f"quality {quality!r} must carry no value"
    return None


def _check_name(where: str, name: str) -> None:
    if name in _VALID_NAMES:
        return
    if not NAME_RE.match(name):
        raise TelemetryError(f"{where}: point name {name!r} is not snake_case")
    if len(_VALID_NAMES) < _VALID_NAMES_MAX:
        _VALID_NAMES.add(name)


def _check_ts(what: str, ts: float) -> None:
    if not (_isfinite(ts) and MIN_TS <= ts <= MAX_TS):
        raise TelemetryError(f"{what} {ts!r} is not a Unix time in seconds between 2000 and 2100")


def validate_batch(batch: Batch) -> Batch:
    """Semantic checks msgspec's types cannot express."""
    for what, value in (("site", batch.site), ("agent", batch.agent), ("device", batch.device)):
        _check_id(what, value)
    if batch.seq < 0:
        raise TelemetryError(f"seq {batch.seq} is negative")
    _check_ts("ts", batch.ts)
    valid_names, qualities, units, isfinite = _VALID_NAMES, _QUALITIES, UNITS, _isfinite
    for name, point in batch.points.items():
        if name not in valid_names:
            _check_name(f"point {name!r}", name)
        # The common case inline (a good number, or a failed read without a value); anything
        # else goes through _point_problem, which says what is wrong.
        quality, v = point.quality, point.value
        if quality == _GOOD:
            fine = isfinite(v) if type(v) is float else v is not None
        else:
            fine = v is None and quality in qualities
        if not (fine and point.unit in units) and (problem := _point_problem(point)) is not None:
            raise TelemetryError(f"point {name!r}: {problem}")
    for table, rows in batch.tables.items():
        _check_name(f"table {table!r}", table)
        for index, row in rows.items():
            if not index or "/" in index:
                raise TelemetryError(f"table {table!r}: bad row index {index!r}")
            for name, point in row.items():
                _check_name(f"table {table!r} row {index}", name)
                if (problem := _point_problem(point)) is not None:
                    raise TelemetryError(f"table {table!r} row {index} column {name!r}: {problem}")
    return batch


def decode_as(cls: type[T], payload: bytes | bytearray | memoryview) -> T:
    """Strictly decode a payload as one message type; TelemetryError names the reason."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise TelemetryError(f"payload of {len(payload)} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit")
    try:
        version = _ENVELOPE.decode(payload).v
    except msgspec.ValidationError as exc:
        raise TelemetryError(f"no usable version field: {exc}") from None
    except msgspec.DecodeError as exc:
        raise TelemetryError(f"not JSON: {exc}") from None
    if version != VERSION:
        raise TelemetryError(f"unsupported version {version} (this side speaks {VERSION})")
    try:
        message: T = cast("T", _DECODERS[cls].decode(payload))
    except msgspec.ValidationError as exc:
        raise TelemetryError(f"invalid {cls.__name__.lower()}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise TelemetryError(f"not JSON: {exc}") from None
    if isinstance(message, Batch):
        validate_batch(message)
    elif isinstance(message, Event):
        _check_ts("ts", message.ts)
    return message


def decode_batch(payload: bytes | bytearray | memoryview) -> Batch:
    """Strictly decode a telemetry batch."""
    return decode_as(Batch, payload)
