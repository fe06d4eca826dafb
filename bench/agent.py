"""Benchmark: the agent's published points per second per core, requests per poll, memory at 1,000 and 10,000 devices.

Run it as a script (``python bench/agent.py [--quick] [--json] [--profile FILE]``); the
measurement itself is in ``bench/_agent_bench.py`` (see its docstring and docs/benchmarks.md).

This file is named like the package it measures. The other benchmarks in this folder
run with the folder first on ``sys.path``, so their ``import agent`` finds this file:
imported as a module, it hands them the real ``agent`` package instead.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

_BENCH = Path(__file__).resolve().parent


def _without_bench() -> list[str]:
    return [p for p in sys.path if Path(p or ".").resolve() != _BENCH]


if __name__ != "__main__":
    del sys.modules[__name__]
    _saved = sys.path[:]
    sys.path[:] = _without_bench()
    try:
        sys.modules[__name__] = importlib.import_module(__name__)
    finally:
        sys.path[:] = _saved
else:
    sys.path[:] = _without_bench()
    importlib.import_module("agent")  # the package, before this folder is searched again
    sys.path.append(str(_BENCH))
    sys.exit(importlib.import_module("_agent_bench").main())
