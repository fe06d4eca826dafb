"""Closed loop over a simulated week on the site simulator: the optimiser lowers PUE from the A level, within limits.

Processes: ``dcim-sim site`` (the demo room at 3,600x, started at benchmark case A's setpoints),
a real Mosquitto, ``dcim-agent run`` polling every device every second, and ``dcim-collector
run`` with an ``[optimizer]`` section, all with the configurations the simulator writes.

1. Training: the optimiser's models are fitted on a separately logged history (see
   :mod:`tests.integration.site_loop`): the same site driven through random safe setpoints
   over the 14 days before the test, written to the collector's store.
2. Baseline: one simulated day at the A setpoints with the optimiser advisory. It must
   publish a recommendation and send no command; the site's PUE over that day must equal
   that of an in-process twin of the same site held at the A setpoints (same weather,
   same load, same simulated seconds): the twin is a fair yardstick.
3. Closed loop: the collector restarts in closed-loop mode for a simulated week. Its PUE
   over the week must be well below the twin's at the A setpoints over the same simulated
   seconds, the racks' inlets must stay at or below 27 °C, and the agent's audit log must
   show every command written inside its point's min, max and max_step, none refused,
   the chillers' at BACnet priority 16 (never 1-7).
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from collector import optimizer_service as svc
from collector.store.sqlite import SqliteStore
from models import catalog
from models.limits import check_write
from models.values import decode_registers, encode_registers
from simulators.site import agent_config_for, load_scenario
from tests.collector import test_optimizer_service as optimizer_tests
from tests.integration import site_loop
from tests.integration.site_loop import A_LEVEL, DAY_S, api, process, ready_line, wait_until
from tests.support.servers import Mosquitto

BIN = Path(sys.executable).parent
SPEED = 3600.0  # simulated seconds per wall second: a day in 24 s, the week in under 3 minutes
SITE_START = datetime(2025, 7, 13, tzinfo=UTC)  # a Sunday: the baseline day, then the week from Monday 14 July
TRAINING_DAYS = 14
SAMPLE_S = 10.0  # the optimiser's bins (wall seconds); one training sample per bin
AGENT = "demo-agent"
INLET_LIMIT_C = 27.0
# Closed loop must cut plant energy per kWh of IT below the A twin's by at least these fractions (measured on a
# busy 2-core machine: 16 % over the week, whose first days ramp the supply 1 K per decision, and 23 % over
# its last three days).
WEEK_SAVING_MIN = 0.10
LATE_SAVING_MIN = 0.15
WEEK_PUE_DROP_MIN = 0.02


def _store_series(path: Path, measurement: str, field: str, mode: str) -> np.ndarray:
    store = SqliteStore(path, timeout_s=5.0)
    try:
        _, values = store.read_series(measurement, None, field, 0, 2**62, tags={"site": "demo", "mode": mode})
    finally:
        store.close()
    return values


def _decisions(path: Path, mode: str) -> np.ndarray:
    """The stored decisions' fallback flags (1 = fell back) of one mode."""
    if not path.exists():
        return np.zeros(0)
    return _store_series(path, "optimizer", "fallback", mode)


def _write_training_log(scenario: Path, store_path: Path, end_ts: float) -> int:
    store = SqliteStore(store_path)
    store.open()
    count = 0
    try:
        for batches in site_loop.identification_log(
            scenario,
            start=SITE_START - timedelta(days=TRAINING_DAYS),
            days=TRAINING_DAYS,
            end_ts=end_ts,
            sample_s=SAMPLE_S,
            agent=AGENT,
        ):
            store.write_batches(batches)
            count += 1
    finally:
        store.close()
    return count


def _audit(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.servers
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_closed_loop_week_lowers_pue_from_the_a_level_within_limits(  # noqa: PLR0915
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    scenario = site_loop.site_scenario(tmp_path, start=SITE_START, speed=SPEED, setpoints=A_LEVEL)
    loaded = load_scenario(scenario)
    store_path = cfg / "store.sqlite"
    audit_path = cfg / "audit.jsonl"
    # 1. The training history, ending now (the live telemetry follows it).
    held = _write_training_log(scenario, store_path, end_ts=datetime.now(UTC).timestamp())
    assert held == TRAINING_DAYS * 24

    logs = {name: tmp_path / f"{name}.log" for name in ("site", "agent", "advisory", "closed-loop")}
    states: list[dict[str, Any]] = []
    with ExitStack() as stack:
        site = stack.enter_context(
            process(
                [
                    str(BIN / "dcim-sim"),
                    "site",
                    "--scenario",
                    str(scenario),
                    "--write-configs",
                    str(cfg),
                    "--mqtt-url",
                    mosquitto.url,
                ],
                logs["site"],
                stdout=subprocess.PIPE,
            )
        )
        line = ready_line(site, 60.0)
        match = re.search(r"control on http://127\.0\.0\.1:(\d+)", line)
        assert match, line
        control = int(match.group(1))
        first = api(control, "GET", "/state")
        generated = (cfg / "collector.toml").read_text(encoding="utf-8")
        assert str(store_path) in generated
        for mode in ("advisory", "closed-loop"):
            (cfg / f"collector-{mode}.toml").write_text(
                generated + site_loop.optimizer_toml(loaded, agent=AGENT, mode=mode, baseline=A_LEVEL),
                encoding="utf-8",
            )
        agent_cfg = cfg / "agent-fast.toml"
        agent_cfg.write_text(
            agent_config_for(
                loaded,
                mosquitto.url,
                agent_id=AGENT,
                interval_s=1.0,
                timeout_s=0.8,
                retries=0,
                spool_path=str(cfg / "spool.sqlite"),
                audit_log=str(audit_path),
            ),
            encoding="utf-8",
        )
        agent = stack.enter_context(
            process([str(BIN / "dcim-agent"), "run", "--config", str(agent_cfg)], logs["agent"])
        )
        advisory = stack.enter_context(
            process(
                [str(BIN / "dcim-collector"), "run", "--config", str(cfg / "collector-advisory.toml")],
                logs["advisory"],
            )
        )
        procs = {logs["site"]: site, logs["agent"]: agent, logs["advisory"]: advisory}

        # 2. The baseline day: A setpoints, the optimiser advisory.
        def baseline_done() -> bool:
            states.append(api(control, "GET", "/state"))
            return (
                states[-1]["time"]["sim_s"] >= first["time"]["sim_s"] + DAY_S
                and _decisions(store_path, "advisory").size > 0
            )

        wait_until("a simulated day and an advisory decision", baseline_done, procs, timeout_s=180)
        switch = api(control, "GET", "/state")
        assert site_loop.stop(advisory) == 0, logs["advisory"].read_text()[-3000:]
        advised = _decisions(store_path, "advisory")
        predicted_saving = _store_series(store_path, "optimizer", "predicted_saving_kw", "advisory")
        commands_while_advisory = _audit(audit_path)

        # 3. The closed-loop week.
        closed = stack.enter_context(
            process(
                [str(BIN / "dcim-collector"), "run", "--config", str(cfg / "collector-closed-loop.toml")],
                logs["closed-loop"],
            )
        )
        del procs[logs["advisory"]]
        procs[logs["closed-loop"]] = closed
        week_end = switch["time"]["sim_s"] + 7 * DAY_S

        def week_done() -> bool:
            states.append(api(control, "GET", "/state"))
            return bool(states[-1]["time"]["sim_s"] >= week_end)

        wait_until("a simulated week of closed loop", week_done, procs, timeout_s=7 * DAY_S / SPEED * 3 + 60)
        end = api(control, "GET", "/state")
        assert site_loop.stop(closed) == 0, logs["closed-loop"].read_text()[-3000:]
        assert site_loop.stop(agent) == 0, logs["agent"].read_text()[-3000:]
    decisions = _decisions(store_path, "closed-loop")

    # The twin: the same site held at the A setpoints over the same simulated seconds, and each day of the week.
    days = (
        [switch]
        + [next(s for s in states if s["time"]["sim_s"] >= switch["time"]["sim_s"] + k * DAY_S) for k in range(1, 7)]
        + [end]
    )
    times = [first["time"]["sim_s"]] + [d["time"]["sim_s"] for d in days]
    twin = site_loop.twin_energy(scenario, times)
    live = [first["energy_kwh"]] + [d["energy_kwh"] for d in days]
    base_live, base_twin = site_loop.pue(live[0], live[1]), site_loop.pue(twin[0], twin[1])
    week_live, week_twin = site_loop.pue(live[1], live[-1]), site_loop.pue(twin[1], twin[-1])
    plant_live = site_loop.plant_per_it(live[1], live[-1])
    plant_twin = site_loop.plant_per_it(twin[1], twin[-1])
    daily = [
        (round(site_loop.plant_per_it(live[k], live[k + 1]), 4), round(site_loop.plant_per_it(twin[k], twin[k + 1]), 4))
        for k in range(1, 8)
    ]
    # The last three days: the setpoints have ramped (1 K of supply per decision) to where the optimiser wants them.
    late_live = site_loop.plant_per_it(live[5], live[-1])
    late_twin = site_loop.plant_per_it(twin[5], twin[-1])
    inlet_max = max(s["racks"]["inlet_max_c"] for s in states if s["time"]["sim_s"] >= times[1])
    audit = _audit(audit_path)
    summary = {
        "baseline_day": {"live_pue": round(base_live, 4), "twin_a_pue": round(base_twin, 4)},
        "week": {
            "closed_loop_pue": round(week_live, 4),
            "a_level_pue": round(week_twin, 4),
            "closed_loop_plant_per_it": round(plant_live, 4),
            "a_level_plant_per_it": round(plant_twin, 4),
            "simulated_h": round((times[-1] - times[1]) / 3600.0, 1),
        },
        "daily_plant_per_it_closed_loop_vs_a": daily,
        "last_3_days_plant_per_it": {"closed_loop": round(late_live, 4), "a_level": round(late_twin, 4)},
        "decisions": {"advisory": int(advised.size), "closed_loop": int(decisions.size)},
        "fallbacks": int(np.count_nonzero(decisions == 1.0)),
        "commands": len(audit),
        "inlet_max_c": inlet_max,
        "final_setpoints": end["setpoints"],
    }
    print("closed-loop week:", json.dumps(summary))  # noqa: T201  (the numbers the docs quote)

    # Advisory: recommendations with a predicted saving, and no command.
    assert advised.size >= 1
    assert np.nanmax(predicted_saving) > 0
    assert commands_while_advisory == []
    # The twin reproduces the live site while both run the A setpoints.
    assert base_live == pytest.approx(base_twin, abs=0.001)
    # Closed loop: commands were sent on recommendations, and PUE fell well below the A level.
    assert decisions.size >= 10
    assert np.count_nonzero(decisions == 0.0) >= decisions.size // 2, summary
    assert audit, "the closed loop sent no command"
    assert week_live < week_twin - WEEK_PUE_DROP_MIN, summary
    assert plant_live <= (1.0 - WEEK_SAVING_MIN) * plant_twin, summary
    assert late_live <= (1.0 - LATE_SAVING_MIN) * late_twin, summary
    assert inlet_max <= INLET_LIMIT_C, summary
    # Every command written, inside its point's limits; the chillers' at BACnet priority 16, never 1-7.
    models = {d.id: catalog.load(d.model) for d in loaded.scenario.devices()}
    chillers = {c.id for c in loaded.scenario.chillers}
    assert {r["device"] for r in audit} >= chillers | {t.id for t in loaded.scenario.towers}
    # No command may be refused for its limits. On a loaded machine a command can still expire
    # while it waits for the device, or a write can time out: those change nothing at the
    # device, are audited, and must stay rare.
    refused = [r for r in audit if r["outcome"] == "refused" and "expired" not in str(r["reason"])]
    assert refused == [], refused
    written = [r for r in audit if r["ok"]]
    assert len(written) >= 0.9 * len(audit), [r for r in audit if not r["ok"]]
    for record in audit:
        w = models[record["device"]].point(record["point"]).writable
        assert w is not None, record
        assert record["by"] == "optimizer", record
        assert w.min <= float(record["value"]) <= w.max, record
        if not record["ok"]:
            continue
        assert record["outcome"] == "written", record
        value, before = float(record["value"]), float(record["before"])
        assert w.min <= value <= w.max, record
        assert w.max_step is not None
        assert abs(value - before) <= w.max_step + 1e-9, record
        assert record["after"] == pytest.approx(record["value"], abs=0.06), record
        if record["device"] in chillers:
            assert record["priority"] == 16, record
            assert record["active_priority"] == 16, record
            assert record["priority_array"][:7] == [None] * 7, record


def test_full_rate_steps_from_float32_readbacks_pass_the_agents_max_step_check(tmp_path: Path) -> None:
    """A setpoint read back as float32 (15.3 -> 15.3000002) and moved a full step, rounded to 0.1, stays in max_step."""
    cfg = optimizer_tests.config(tmp_path)
    store = optimizer_tests.open_store(tmp_path)
    chiller, tower, pump = (catalog.load(m) for m in ("chiller-bacnet", "tower-modbus", "pump-modbus"))
    sp_chiller = chiller.point("chw_supply_setpoint")
    sp_tower = tower.point("leaving_water_setpoint")
    sp_pump = pump.point("speed_setpoint")
    served = (
        float(np.float32(15.3)),  # BACnet REAL
        decode_registers(sp_tower, encode_registers(sp_tower, 25.6)).value,  # Modbus float32
        decode_registers(sp_pump, encode_registers(sp_pump, 69.3)).value,  # Modbus uint16, scale 0.1
        decode_registers(sp_pump, encode_registers(sp_pump, 50.7)).value,
    )
    assert all(isinstance(v, float) for v in served)
    readback = (float(served[0]), float(served[1]), float(served[2]), float(served[3]))  # type: ignore[arg-type]
    now = time.time_ns()
    try:
        # The inlet is near the limit: the job falls back and steps every setpoint towards the baseline at full rate.
        store.write_batches(optimizer_tests.plant_batches(now / 1e9 - 60, 1, setpoints=readback, inlet=26.9))
        service = svc.OptimizerService(cfg, store)
        service.fit = dataclasses.replace(optimizer_tests.fitted(), fitted_at_ns=now)
        decision = service.decide(now)
    finally:
        store.close()
    assert decision.fallback
    points = {"chiller-1": sp_chiller, "tower-1": sp_tower, "pump-1": sp_pump, "pump-2": sp_pump}
    before = dict(zip(points, readback, strict=True))
    assert {c.device for c in decision.commands} == set(points)
    for command in decision.commands:
        assert isinstance(command.value, float)
        point = points[command.device]
        check_write(point, command.value, before[command.device])  # raises WriteRefused
        assert point.writable is not None
        assert point.writable.max_step is not None
        assert abs(command.value - before[command.device]) > 0.85 * point.writable.max_step  # still a full step
