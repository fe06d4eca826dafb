"""How bench/agent.py and bench/collector.py run: named like the packages they measure.

The benchmarks in this folder run with the folder first on ``sys.path``, so ``import agent``
or ``import collector`` would find the launcher of that name instead of the package. Imported
as a module, a launcher therefore replaces itself with the real package; run as a script, it
runs its benchmark with the real package importable.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

_BENCH = Path(__file__).resolve().parent


def _without_bench() -> list[str]:
    return [p for p in sys.path if Path(p or ".").resolve() != _BENCH]


def launch(module_name: str, package: str, bench_module: str) -> None:
    """Called by a launcher with its __name__: hand over the package, or run the benchmark and exit."""
    if module_name != "__main__":
        del sys.modules[module_name]
        saved = sys.path[:]
        sys.path[:] = _without_bench()
        try:
            sys.modules[module_name] = importlib.import_module(package)
        finally:
            sys.path[:] = saved
        return
    sys.path[:] = _without_bench()
    importlib.import_module(package)  # the package, before this folder is searched again
    sys.path.append(str(_BENCH))
    sys.exit(importlib.import_module(bench_module).main())
