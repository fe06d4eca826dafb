"""The default alarm rules shipped with the collector (defaults.toml, package data)."""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from collector.alarms.rules import Rule
from models.errors import read_toml, validate

DEFAULTS_FILE = "defaults.toml"


class _RuleFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: list[Rule] = Field(default_factory=list)


def defaults_path() -> Path:
    """Where the shipped default rules are."""
    return Path(str(resources.files("collector.alarms").joinpath(DEFAULTS_FILE)))


def load_rules(path: str | Path) -> list[Rule]:
    """Rules from a TOML file with [[rules]] tables; ConfigError names the file and key."""
    return list(validate(_RuleFile, read_toml(path), path).rules)


@functools.cache
def _defaults() -> tuple[Rule, ...]:
    return tuple(load_rules(defaults_path()))


def default_rules() -> list[Rule]:
    """The shipped default rules, per device kind and model."""
    return list(_defaults())
