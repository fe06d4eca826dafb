"""Helpers for the site simulator tests: scenarios on free ports, a site served in-process, agent devices."""

from __future__ import annotations

import re
from pathlib import Path

from agent import config as agent_config
from agent.config import Device
from simulators.site import LoadedScenario, agent_config_for, load_scenario
from tests.support.servers import free_port_both

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "configs" / "sites" / "demo.toml"
SOURCE_FACILITY = REPO / "configs" / "sites" / "source-facility.toml"


def demo_scenario(folder: Path, subs: dict[str, str] | None = None, extra: str = "") -> Path:
    """demo.toml with every port moved to a free one, `key = value` lines replaced, and TOML appended.

    subs maps a whole line as written in demo.toml (e.g. "speed = 60.0") to its replacement;
    every occurrence is replaced.
    """
    text = DEMO.read_text(encoding="utf-8")
    text = re.sub(r"^port = \d+", lambda _m: f"port = {free_port_both()}", text, flags=re.MULTILINE)
    for old, new in (subs or {}).items():
        pattern = re.compile(rf"^{re.escape(old)}(?=\s|$)", flags=re.MULTILINE)
        if not pattern.search(text):
            raise KeyError(f"demo.toml has no line {old!r}")
        text = pattern.sub(new, text)
    path = folder / "site.toml"
    path.write_text(text + "\n" + extra, encoding="utf-8")
    return path


def agent_devices(loaded: LoadedScenario, folder: Path, **kwargs: float) -> dict[str, Device]:
    """The agent's resolved devices for every device of the site (through the generated config)."""
    path = folder / "agent.toml"
    path.write_text(agent_config_for(loaded, spool_path=str(folder / "spool.sqlite"), **kwargs), encoding="utf-8")  # type: ignore[arg-type]
    cfg = agent_config.load(path)
    return {d.id: d for d in cfg.devices}


def load_demo(folder: Path, subs: dict[str, str] | None = None, extra: str = "") -> LoadedScenario:
    """The demo scenario on free ports, loaded."""
    return load_scenario(demo_scenario(folder, subs, extra))
