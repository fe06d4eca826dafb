"""`dcim-collector alarms list` and `alarms ack`: read and acknowledge alarms in the alarm database."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from typing import Final
from zoneinfo import ZoneInfo

import msgspec

from collector import config as collector_config
from collector.alarms.lifecycle import Alarm, AlarmError, AlarmNotFoundError
from collector.alarms.settings import alarm_paths
from collector.alarms.store import AlarmStore

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
_COLUMNS: Final = ("ID", "SEVERITY", "STATE", "ACK", "DEVICE", "RULE", "SUBJECT", "RAISED", "CLEARED", "MESSAGE")


def _when(ts: float | None, tz: ZoneInfo) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M:%S")


def _row(alarm: Alarm, tz: ZoneInfo) -> tuple[str, ...]:
    ack = alarm.acked_by if alarm.acked else "-"
    return (
        alarm.id,
        alarm.severity.value,
        alarm.state.value,
        ack,
        alarm.device,
        alarm.rule,
        alarm.subject or "-",
        _when(alarm.raised_ts, tz),
        _when(alarm.cleared_ts, tz),
        alarm.message,
    )


def format_table(alarms: list[Alarm], tz: ZoneInfo) -> str:
    """Alarms as aligned text columns (the message last, unpadded)."""
    rows = [_COLUMNS, *(_row(a, tz) for a in alarms)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1] for r in rows
    )


def cmd_alarms(args: argparse.Namespace) -> int:
    """`alarms list [--active] [--json]` and `alarms ack ID --by NAME [--comment TEXT]`."""
    loaded = collector_config.load(args.config)
    cfg = loaded.config
    store_path = cfg.store.path if cfg.store.kind == "sqlite" else None
    path, _ = alarm_paths(cfg.alarms, store_path=store_path, base=loaded.path.parent)
    if args.alarms == "list":
        if not path.is_file():
            if not args.json:
                print("no alarms")
            return EXIT_OK
        store = AlarmStore(path)
        try:
            alarms = store.alarms(active_only=args.active)
        finally:
            store.close()
        if args.json:
            encoder = msgspec.json.Encoder()
            out = sys.stdout.buffer
            for alarm in alarms:
                out.write(encoder.encode(alarm.to_dict()) + b"\n")
            out.flush()
        elif alarms:
            print(format_table(alarms, ZoneInfo(cfg.collector.timezone)))
        else:
            print("no active alarms" if args.active else "no alarms")
        return EXIT_OK
    # ack
    if not path.is_file():
        print(f"dcim-collector alarms ack: no alarm {args.id} ({path} holds no alarms)", file=sys.stderr)
        return EXIT_USAGE
    store = AlarmStore(path)
    try:
        transition = store.acknowledge(args.id, args.by, args.comment, time.time())
    except AlarmNotFoundError as exc:
        print(f"dcim-collector alarms ack: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except AlarmError as exc:
        print(f"dcim-collector alarms ack: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        store.close()
    alarm = transition.alarm
    print(f"acknowledged {alarm.id} by {alarm.acked_by}: {alarm.severity.value} {alarm.device} {alarm.message}")
    return EXIT_OK
