"""dcim-sim demo end to end: a short run exits 0 and leaves the summary and the charts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from simulators.demo import make_plan

BIN = Path(sys.executable).parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("minutes", "speed"),
    [(2.0, None), (0.5, None), (1.0, 600.0), (0.2, None)],
)
def test_plan_fits_the_day(minutes: float, speed: float | None) -> None:
    plan = make_plan(minutes, speed)
    wall = minutes * 60
    outage_wall = plan.outage_s / plan.outage_speed
    assert 1.0 <= plan.outage_speed <= plan.speed <= 3600.0
    # The span is played in the wall time asked for: the outage at its speed, the rest at the base speed.
    assert outage_wall + (plan.span_s - plan.outage_s) / plan.speed == pytest.approx(wall, rel=1e-6)
    assert plan.outage_at_s + plan.outage_s < plan.switch_at_s < plan.span_s
    if speed is None and minutes >= 0.5:
        assert plan.span_s == pytest.approx(86_400.0)
    if speed is not None:
        assert plan.speed == speed


@pytest.mark.parametrize(("minutes", "speed"), [(0.0, None), (-1.0, None), (1.0, 0.5), (1.0, 5000.0)])
def test_bad_plan(minutes: float, speed: float | None) -> None:
    with pytest.raises(ValueError, match="--"):
        make_plan(minutes, speed)


def test_bad_flags_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "dcim-sim"), "demo", "--minutes", "0", "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--minutes" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_short_demo_leaves_summary_and_charts(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = subprocess.run(
        [str(BIN / "dcim-sim"), "demo", "--minutes", "0.75", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(out.glob("logs/*.log")))
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}\n{logs}"
    # Not a terminal: plain progress lines, then the summary on stdout.
    assert "[setup] Starting the agent" in result.stdout
    assert "## PUE before and after the optimiser" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert (out / "summary.md").read_text().startswith("# dcim-edge demo")
    assert summary["simulated_hours"] == pytest.approx(24.0)
    for half in ("before", "after", "day"):
        window = summary[half]
        assert 1.0 < window["pue"] < 2.0, half
        # What the agent read over the protocols and MQTT agrees with the simulator's own energy.
        assert window["pue"] == pytest.approx(window["physics_pue"], rel=0.02), half
        assert window["it_kwh"] == pytest.approx(window["physics_it_kwh"], rel=0.03), half
    # The first half ran advisory (nothing written): the site and its untouched twin agree.
    assert summary["before"]["physics_pue"] == pytest.approx(summary["before"]["twin_pue"], rel=0.005)
    # The collector's own reports ran, with their charts.
    reports = summary["reports"]
    assert reports["pue"]["total"]["facility_kwh"] > 0
    assert 0.0 < reports["availability"]["availability"] < 1.0  # the outage left the racks dark for a while
    assert reports["availability"]["down_s"] > 0
    assert summary["outage"]["racks_dark_simulated_s"] > 0
    for name in ("settle_day", "settle_closed_loop", "settle_twin"):
        assert {"pue", "bonus", "penalty", "currency"} <= set(reports[name]), name
    for chart in ("demo-day.png", "pue.png", "availability.png"):
        data = (out / chart).read_bytes()
        assert data.startswith(PNG_MAGIC), chart
        assert len(data) > 10_000, chart
    assert (out / "store.sqlite").stat().st_size > 0
