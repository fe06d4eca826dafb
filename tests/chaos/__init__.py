"""Chaos tests: restarts, partitions, garbage, full disks and clock jumps (pytest -m chaos)."""
