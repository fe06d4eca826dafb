"""Rules as data: schema checks, overrides, the shipped defaults against the catalog and a config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from collector import config as collector_config
from collector.alarms.defaults import default_rules
from collector.alarms.engine import Engine
from collector.alarms.rules import Combination, Override, Rule, Stale, leaves
from models import catalog
from models.errors import ConfigError
from models.schema import DeviceModel
from tests.collector.alarms.helpers import T0, batch, rule


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"id": "x", "condition": {"type": "threshold", "point": "t"}}, "needs 'above', 'below' or both"),
        ({"id": "x", "condition": {"type": "threshold", "point": "t", "above": 1, "below": 2}}, "must be less"),
        ({"id": "x", "condition": {"type": "state", "point": "t"}}, "needs 'values'"),
        ({"id": "x", "condition": {"type": "rate", "point": "t"}}, "needs 'rise_per_min'"),
        ({"id": "x", "condition": {"type": "stale", "factor": 0.5}}, "greater than or equal to 1"),
        ({"id": "x", "condition": {"type": "nope", "point": "t"}}, "does not match any of the expected tags"),
        ({"id": "x", "condition": {"type": "state", "point": "Bad/Name", "values": [1]}}, "not a point selector"),
        ({"id": "x", "condition": {"type": "state", "point": "tab*.col", "values": [1]}}, "not a point selector"),
        ({"id": "Bad-Id", "condition": {"type": "state", "point": "t", "values": [1]}}, "not a rule id"),
        ({"id": "x"}, "needs a 'condition' or 'events'"),
        ({"id": "x", "events": ["trap"]}, "needs 'hold_s' or 'clear_events'"),
        ({"id": "x", "condition": {"type": "state", "point": "t", "values": [1]}, "extra": 1}, "Extra inputs"),
        (
            {"id": "x", "condition": {"type": "any", "conditions": [{"type": "any", "conditions": []}]}},
            "does not match any of the expected tags",
        ),
    ],
)
def test_bad_rules_are_refused_with_a_reason(spec: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        rule(spec)


def test_override_changes_condition_parameters_everywhere() -> None:
    base = rule(
        {
            "id": "x",
            "condition": {
                "type": "any",
                "conditions": [
                    {"type": "threshold", "point": "a", "above": 27},
                    {"type": "stale", "point": "b"},
                ],
            },
        }
    )
    tuned = Override(rule="x", above=30, factor=5, severity="critical", on_delay_s=9).apply(base)
    assert isinstance(tuned.condition, Combination)
    thr, stale = tuned.condition.conditions
    assert (getattr(thr, "above", None), getattr(stale, "factor", None)) == (30, 5)
    assert (tuned.severity, tuned.on_delay_s) == ("critical", 9)
    with pytest.raises(ValueError, match="must be less"):
        Override(rule="x", below=40).apply(base)


def test_defaults_load_and_have_unique_ids() -> None:
    rules = default_rules()
    ids = [r.id for r in rules]
    assert len(ids) == len(set(ids))
    assert {"ups_on_battery", "device_not_answering", "sensor_leak", "pdu_overload", "chiller_trip"} <= set(ids)
    by_id = {r.id: r for r in rules}
    assert by_id["ups_on_battery"].severity == "critical"
    assert "upsTrapOnBattery" in by_id["ups_on_battery"].events


def _selectable(model: DeviceModel) -> set[str]:
    names = {p.name for p in model.points}
    names |= {f"{t.name}.{c.name}" for t in model.tables for c in t.columns}
    return names


def _matches(selector: str, names: set[str]) -> bool:
    import fnmatch  # noqa: PLC0415

    return selector == "*" or any(fnmatch.fnmatchcase(n, selector) for n in names)


def test_every_default_rule_selects_points_of_the_catalog_models_of_its_kinds() -> None:
    """Guards against point names drifting apart between the catalog and the rules."""
    models = catalog.load_all()
    if not models:
        pytest.skip("no catalog models in this build")
    for r in default_rules():
        assert r.condition is not None
        of_kind = [m for m in models.values() if not r.kinds or m.kind in r.kinds]
        if not of_kind:
            continue
        for leaf in leaves(r.condition):
            if isinstance(leaf, Stale) and leaf.point == "*":
                continue
            hits = [m.id for m in of_kind if _matches(leaf.point, _selectable(m))]
            assert hits, f"rule {r.id}: {leaf.point!r} matches no point of the {r.kinds} models"
            if isinstance(leaf, Stale) and leaf.age_point:
                model = models[hits[0]]
                point = next(n for n in _selectable(model) if _matches(leaf.point, {n}))
                assert leaf.age_source(point) in _selectable(model), f"rule {r.id}: no age point for {point}"


def _sim_batch(model: DeviceModel, ts: float, **values: Any) -> Any:
    points = {}
    for p in model.points:
        v = p.sim.value if p.sim is not None and p.sim.value is not None else (p.sim.base if p.sim else 0)
        points[p.name] = values.get(p.name, v)
    return batch(ts, points, device=model.id, model=model.id, kind=model.kind.value)


@pytest.mark.parametrize(
    ("model_id", "fault"),
    [("ups-rfc1628", {"output_source": "battery"}), ("ups-apc-modbus", {"on_battery": True, "online": False})],
)
def test_default_ups_on_battery_for_both_ups_models(model_id: str, fault: dict[str, Any]) -> None:
    try:
        model = catalog.load(model_id)
    except ConfigError:
        pytest.skip(f"{model_id} is not in the catalog")
    engine = Engine(default_rules())
    normal = {"on_battery": False, "online": True, "output_source": "normal"}
    assert [s.rule.id for s in engine.on_batch(_sim_batch(model, T0, **normal))] == []
    raised = engine.on_batch(_sim_batch(model, T0 + 10, **fault))
    assert [(s.rule.id, s.rule.severity, s.active) for s in raised] == [("ups_on_battery", "critical", True)]


def test_config_section_overrides_defaults_and_names_bad_keys(tmp_path: Path) -> None:
    cfg = tmp_path / "collector.toml"
    cfg.write_text(
        """
[collector]
id = "c1"
site = "bj-dx"

[alarms]
db = "state/alarms.sqlite"
rooms = { hall-1 = ["rack-*", "pdu-1*"] }

[[alarms.rules]]
id = "ups_on_battery"
kinds = ["ups"]
severity = "major"
condition = { type = "state", point = "output_source", values = ["battery"] }

[[alarms.rules]]
id = "hot_aisle"
severity = "minor"
condition = { type = "threshold", point = "*temperature", above = 40.0 }

[[alarms.overrides]]
rule = "sensor_temperature_*"
devices = ["lab-*"]
enabled = false

[[alarms.webhooks]]
name = "ops"
url = "http://127.0.0.1:9/hook"
severities = ["critical"]

[[alarms.maintenance]]
rooms = ["hall-1"]
days = ["sun"]
at = "02:00"
duration_min = 120
"""
    )
    loaded = collector_config.load(cfg)
    section = loaded.config.alarms
    rules = {r.id: r for r in section.all_rules()}
    assert rules["ups_on_battery"].severity == "major"
    assert "hot_aisle" in rules
    assert "device_not_answering" in rules

    bad = cfg.read_text().replace('rule = "sensor_temperature_*"', 'rule = "no_such_rule"')
    cfg.write_text(bad)
    with pytest.raises(ConfigError, match="no rule matches 'no_such_rule'"):
        collector_config.load(cfg)
    cfg.write_text(
        bad.replace('rule = "no_such_rule"', 'rule = "sensor_leak"').replace('rooms = ["hall-1"]', 'rooms = ["hall-9"]')
    )
    with pytest.raises(ConfigError, match="room 'hall-9' is not in"):
        collector_config.load(cfg)
    cfg.write_text(
        cfg.read_text().replace('rooms = ["hall-9"]', 'rooms = ["hall-1"]').replace("above = 40.0", "abvoe = 40.0")
    )
    with pytest.raises(
        ConfigError, match=r"alarms\.rules\[1\] \(hot_aisle\)\.condition\.threshold\.abvoe: unknown key"
    ):
        collector_config.load(cfg)


def test_rule_applies_ignores_unknown_kind_and_respects_globs() -> None:
    r = Rule.model_validate(
        {"id": "x", "severity": "minor", "kinds": ["ups"], "devices": ["ups-*"], "events": ["e"], "hold_s": 1}
    )
    assert r.applies("s", "ups-1", None, None)
    assert not r.applies("s", "pdu-1", None, None)
    assert not r.applies("s", "ups-1", "m", "pdu")
