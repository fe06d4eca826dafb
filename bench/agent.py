"""Benchmark: the agent's published points per second per core, requests per poll, memory at 1,000 and 10,000 devices.

Run it as a script (``python bench/agent.py [--quick] [--json] [--profile FILE]``); the
measurement itself is in ``bench/_agent_bench.py`` (see its docstring and docs/benchmarks.md).

This file is named like the package it measures; see ``bench/_launcher.py``.
"""

from __future__ import annotations

from _launcher import launch

launch(__name__, "agent", "_agent_bench")
