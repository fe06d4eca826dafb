"""Alarm rules as data: conditions (threshold, state, rate, stale, all/any), scope and delays."""

from __future__ import annotations

import fnmatch
import re
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from models.schema import Kind

RULE_ID_RE = re.compile(r"^[a-z][a-z0-9_]*$")
# A point selector: a point name, a glob over point names, or "table.column" (column may be a glob).
SELECTOR_RE = re.compile(r"^[a-z0-9_*?\[\]]+(\.[a-z0-9_*?\[\]]+)?$")
_GLOB_CHARS = frozenset("*?[")

Scalar = str | int | float | bool


class Severity(StrEnum):
    """How urgent an alarm is, most urgent first."""

    CRITICAL = "critical"
    MAJOR = "major"
    MINOR = "minor"
    WARNING = "warning"

    @property
    def rank(self) -> int:
        """0 for critical up to 3 for warning (sorts most urgent first)."""
        return _RANK[self]


_RANK = {Severity.CRITICAL: 0, Severity.MAJOR: 1, Severity.MINOR: 2, Severity.WARNING: 3}


def is_glob(pattern: str) -> bool:
    """Whether a name or selector contains glob characters."""
    return any(c in _GLOB_CHARS for c in pattern)


def matches(patterns: list[str], value: str) -> bool:
    """Whether value matches one of the globs; an empty list matches everything."""
    return not patterns or any(fnmatch.fnmatchcase(value, p) for p in patterns)


def _rule_id(value: str) -> str:
    if not RULE_ID_RE.match(value):
        raise ValueError(f"{value!r} is not a rule id (snake_case: a-z, 0-9, _)")
    return value


def _selector(value: str) -> str:
    if not SELECTOR_RE.match(value) or ("." in value and is_glob(value)):
        raise ValueError(
            f"{value!r} is not a point selector (a point name, a glob such as 's*_temperature', "
            "or 'table.column' such as 'alarms.descr', without glob characters)"
        )
    return value


RuleId = Annotated[str, AfterValidator(_rule_id)]
Selector = Annotated[str, AfterValidator(_selector)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Threshold(_Strict):
    """Active above `above` or below `below`; clears only once back inside by `hysteresis`."""

    type: Literal["threshold"]
    point: Selector
    above: float | None = None
    below: float | None = None
    hysteresis: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _limits(self) -> Self:
        if self.above is None and self.below is None:
            raise ValueError("a threshold needs 'above', 'below' or both")
        if self.above is not None and self.below is not None and self.below >= self.above:
            raise ValueError(f"below ({self.below}) must be less than above ({self.above})")
        return self


class State(_Strict):
    """Active while a state, enumeration, flag or text value matches.

    `values`: active when the value is one of these; `not_values`: active when it is none of
    these; `flags`: active when any of these names is set in a bit-field value ("a,b,c");
    `patterns`: active when a text value matches one of these globs ("*" = any value).
    """

    type: Literal["state"]
    point: Selector
    values: list[Scalar] = Field(default_factory=list)
    not_values: list[Scalar] = Field(default_factory=list)
    flags: list[str] = Field(default_factory=list)
    patterns: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _something(self) -> Self:
        if not (self.values or self.not_values or self.flags or self.patterns):
            raise ValueError("a state condition needs 'values', 'not_values', 'flags' or 'patterns'")
        return self


class Rate(_Strict):
    """Active while the value rises or falls faster than a rate per minute."""

    type: Literal["rate"]
    point: Selector
    rise_per_min: float | None = Field(default=None, gt=0)
    fall_per_min: float | None = Field(default=None, gt=0)
    window_s: float = Field(default=0.0, ge=0)  # 0: between consecutive samples

    @model_validator(mode="after")
    def _limits(self) -> Self:
        if self.rise_per_min is None and self.fall_per_min is None:
            raise ValueError("a rate condition needs 'rise_per_min', 'fall_per_min' or both")
        return self


class Stale(_Strict):
    """Active when a point (or, with point "*", any point) has had no good value for too long.

    Too long is `factor` times the point's own report period: `period_s` here if set, else
    the model point's `period_s`, else the observed interval between the device's batches;
    and never less than `min_s`. Where a gateway re-serves a sensor's last report, the
    sensor's age comes from a sibling point named by `age_point` ("{point}" is the point's
    name, "{stem}" the name without its last "_word": "{stem}_age" for sensor01_temperature
    is sensor01_age), in seconds.
    """

    type: Literal["stale"]
    point: Selector = "*"
    factor: float = Field(default=3.0, ge=1.0)
    period_s: float | None = Field(default=None, gt=0)
    min_s: float = Field(default=0.0, ge=0)
    age_point: str | None = None

    def age_source(self, point: str) -> str | None:
        """The name of the point holding this point's age, if any."""
        if self.age_point is None:
            return None
        stem = point.rsplit("_", 1)[0] if "_" in point else point
        return self.age_point.replace("{point}", point).replace("{stem}", stem)


Leaf = Threshold | State | Rate | Stale
LeafCondition = Annotated[Threshold | State | Rate | Stale, Field(discriminator="type")]


class Combination(_Strict):
    """All, or any, of several single conditions (one level: no nesting)."""

    type: Literal["all", "any"]
    conditions: list[LeafCondition] = Field(min_length=1)


Condition = Annotated[Threshold | State | Rate | Stale | Combination, Field(discriminator="type")]

# Condition parameters an override may change, with the condition types that carry them.
TUNABLE: dict[str, tuple[type[BaseModel], ...]] = {
    "above": (Threshold,),
    "below": (Threshold,),
    "hysteresis": (Threshold,),
    "values": (State,),
    "not_values": (State,),
    "flags": (State,),
    "patterns": (State,),
    "rise_per_min": (Rate,),
    "fall_per_min": (Rate,),
    "window_s": (Rate,),
    "factor": (Stale,),
    "period_s": (Stale,),
    "min_s": (Stale,),
}


class Rule(_Strict):
    """One alarm rule: a condition, the devices it applies to, its severity and delays.

    A rule is evaluated per matching point (or table row) when its condition is a single
    condition on a point or column, and per device otherwise. Agent events listed in
    `events` raise it at once (no on-delay); `clear_events` clear it; a rule without a
    condition is raised by events alone and clears after `hold_s` or on a clear event.
    An event is named by its `type`, by its `data.trap` (an SNMP trap name such as
    "upsTrapOnBattery") and by "trap:alarm" (e.g. "upsTrapAlarmEntryAdded:onBattery").
    """

    id: RuleId
    severity: Severity
    description: str = ""
    # {device} {site} {model} {kind} {rule} {subject} {point} {row} {value} {unit} {label}
    message: str = ""
    condition: Condition | None = None
    events: list[str] = Field(default_factory=list)
    clear_events: list[str] = Field(default_factory=list)
    hold_s: float | None = Field(default=None, gt=0)
    on_delay_s: float = Field(default=0.0, ge=0)
    off_delay_s: float = Field(default=0.0, ge=0)
    reraise_window_s: float | None = Field(default=None, ge=0)
    enabled: bool = True
    kinds: list[Kind] = Field(default_factory=list)
    models: list[str] = Field(default_factory=list)
    devices: list[str] = Field(default_factory=list)  # globs
    sites: list[str] = Field(default_factory=list)  # globs
    labels: dict[str, str] = Field(default_factory=dict)  # value -> text for {label}

    @model_validator(mode="after")
    def _raised_somehow(self) -> Self:
        if self.condition is None:
            if not self.events:
                raise ValueError("a rule needs a 'condition' or 'events'")
            if self.hold_s is None and not self.clear_events:
                raise ValueError("a rule raised by events alone needs 'hold_s' or 'clear_events' to clear")
        return self

    def applies(self, site: str, device: str, model: str | None, kind: str | None) -> bool:
        """Whether the rule covers this device (unknown model or kind: scope by those is not checked)."""
        if not self.enabled:
            return False
        if self.kinds and kind is not None and kind not in self.kinds:
            return False
        if self.models and model is not None and model not in self.models:
            return False
        return matches(self.devices, device) and matches(self.sites, site)

    @property
    def subject(self) -> str:
        """The alarm subject when the rule is raised by an event: its single concrete point, else ""."""
        cond = self.condition
        if cond is None or isinstance(cond, Combination) or is_glob(cond.point) or "." in cond.point:
            return ""
        if isinstance(cond, Stale) and cond.point == "*":
            return ""
        return cond.point


class Override(_Strict):
    """A change to existing rules (shipped or configured) for some or all devices.

    `rule` is a rule id or a glob over ids; the scope keys narrow which devices the change
    applies to; condition parameters apply to every part of the condition that has them.
    """

    rule: str
    devices: list[str] = Field(default_factory=list)
    sites: list[str] = Field(default_factory=list)
    kinds: list[Kind] = Field(default_factory=list)
    models: list[str] = Field(default_factory=list)
    enabled: bool | None = None
    severity: Severity | None = None
    message: str | None = None
    on_delay_s: float | None = Field(default=None, ge=0)
    off_delay_s: float | None = Field(default=None, ge=0)
    reraise_window_s: float | None = Field(default=None, ge=0)
    hold_s: float | None = Field(default=None, gt=0)
    above: float | None = None
    below: float | None = None
    hysteresis: float | None = Field(default=None, ge=0)
    values: list[Scalar] | None = None
    not_values: list[Scalar] | None = None
    flags: list[str] | None = None
    patterns: list[str] | None = None
    rise_per_min: float | None = Field(default=None, gt=0)
    fall_per_min: float | None = Field(default=None, gt=0)
    window_s: float | None = Field(default=None, ge=0)
    factor: float | None = Field(default=None, ge=1.0)
    period_s: float | None = Field(default=None, gt=0)
    min_s: float | None = Field(default=None, ge=0)

    def covers(self, rule_id: str, site: str, device: str, model: str | None, kind: str | None) -> bool:
        """Whether this override changes that rule for that device."""
        if not fnmatch.fnmatchcase(rule_id, self.rule):
            return False
        if self.kinds and kind not in self.kinds:
            return False
        if self.models and model not in self.models:
            return False
        return matches(self.devices, device) and matches(self.sites, site)

    def apply(self, rule: Rule) -> Rule:
        """The rule with this override's settings; ValueError when the result is not a valid rule."""
        data = rule.model_dump()
        for key in ("enabled", "severity", "message", "on_delay_s", "off_delay_s", "reraise_window_s", "hold_s"):
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        tuned = {k: getattr(self, k) for k in TUNABLE if getattr(self, k) is not None}
        if tuned and data.get("condition") is not None:
            data["condition"] = _tune(data["condition"], tuned)
        return Rule.model_validate(data)


def _tune(cond: dict[str, Any], tuned: dict[str, Any]) -> dict[str, Any]:
    if cond["type"] in ("all", "any"):
        return {**cond, "conditions": [_tune(c, tuned) for c in cond["conditions"]]}
    leaf_type = {"threshold": Threshold, "state": State, "rate": Rate, "stale": Stale}[cond["type"]]
    return {**cond, **{k: v for k, v in tuned.items() if leaf_type in TUNABLE[k]}}


def leaves(cond: Condition) -> list[Leaf]:
    """Every single (non-combination) condition inside a condition."""
    if isinstance(cond, Combination):
        return list(cond.conditions)
    return [cond]


def merge(base: list[Rule], configured: list[Rule]) -> list[Rule]:
    """Shipped rules with configured ones added; a configured rule replaces a shipped one of its id."""
    by_id = {r.id: r for r in base}
    for rule in configured:
        by_id[rule.id] = rule
    return list(by_id.values())
