"""Benchmark: the collector working off a 10-minute backlog from Mosquitto into InfluxDB, against raw InfluxDB ingest.

Run it as a script (``python bench/collector.py [--quick] [--json] [--profile FILE]``); the
measurement itself is in ``bench/_collector_bench.py`` (see its docstring and docs/benchmarks.md).

This file is named like the package it measures; see ``bench/_launcher.py``.
"""

from __future__ import annotations

from _launcher import launch

launch(__name__, "collector", "_collector_bench")
