"""Benchmark: the collector working off a 10-minute backlog from Mosquitto into InfluxDB, against raw InfluxDB ingest.

Run it as a script (``python bench/collector.py [--quick] [--json] [--profile FILE]``); the
measurement itself is in ``bench/_collector_bench.py`` (see its docstring and docs/benchmarks.md).

This file is named like the package it measures. The other benchmarks in this folder
run with the folder first on ``sys.path``, so their ``import collector`` finds this file:
imported as a module, it hands them the real ``collector`` package instead.
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
    importlib.import_module("collector")  # the package, before this folder is searched again
    sys.path.append(str(_BENCH))
    sys.exit(importlib.import_module("_collector_bench").main())
