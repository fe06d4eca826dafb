"""The SQLite spool: sequence numbers, order, size bound and policies, locking, kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.spool import MB, ROW_OVERHEAD_BYTES, AsyncSpool, Builder, Spool, SpoolError, Stored


def _builder(size: int = 100, topic: str = "dcim/v1/s/a/d/telemetry") -> Callable[[int], tuple[str, bytes]]:
    def build(seq: int) -> tuple[str, bytes]:
        return topic, f"{seq:08d}".encode().ljust(size, b".")

    return build


def _row_size(payload: int = 100, topic: str = "dcim/v1/s/a/d/telemetry") -> int:
    return len(topic) + payload + ROW_OVERHEAD_BYTES


def test_sequence_numbers_are_monotonic_and_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    spool = Spool(path, max_mb=1)
    seqs = [s.seq for s in (spool.append(_builder()) for _ in range(5)) if s is not None]
    assert seqs == [1, 2, 3, 4, 5]
    spool.delete(s.id for s in spool.after(0, 100))
    assert spool.stats.depth == 0
    spool.close()
    spool = Spool(path, max_mb=1)
    stored = spool.append(_builder())
    assert stored is not None
    assert stored.seq == 6
    spool.close()


def test_rows_come_back_in_order_and_leave_on_delete(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite", max_mb=1)
    stored = [spool.append(_builder()) for _ in range(10)]
    ids = [s.id for s in stored if s is not None]
    assert spool.stats.depth == 10
    assert spool.stats.bytes == 10 * _row_size()
    rows = spool.after(0, 4)
    assert [r.seq for r in rows] == [1, 2, 3, 4]
    assert rows[0].payload.startswith(b"00000001")
    assert [r.seq for r in spool.after(rows[-1].id, 100)] == [5, 6, 7, 8, 9, 10]
    assert spool.delete([ids[0], ids[2], ids[2], 999_999]) == 2  # repeats and unknown ids are ignored
    assert [r.seq for r in spool.after(0, 100)] == [2, 4, 5, 6, 7, 8, 9, 10]
    assert spool.stats.depth == 8
    assert spool.stats.bytes == 8 * _row_size()
    spool.close()


def test_drop_oldest_keeps_the_newest_within_max_mb_and_counts(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    capacity = 10
    max_mb = capacity * _row_size() / MB
    spool = Spool(path, max_mb=max_mb, when_full="drop-oldest")
    for _ in range(25):
        assert spool.append(_builder()) is not None
    assert spool.stats.depth == capacity
    assert spool.stats.bytes <= spool.max_bytes
    assert spool.stats.dropped_oldest == 15
    assert spool.stats.dropped_newest == 0
    assert [r.seq for r in spool.after(0, 100)] == list(range(16, 26))
    spool.close()
    reopened = Spool(path, max_mb=max_mb, when_full="drop-oldest")
    assert reopened.stats.dropped == 15  # drop counts are persisted with the spool
    assert reopened.stats.depth == capacity
    reopened.close()


def test_drop_newest_keeps_the_oldest_and_leaves_a_visible_gap(tmp_path: Path) -> None:
    capacity = 10
    spool = Spool(tmp_path / "spool.sqlite", max_mb=capacity * _row_size() / MB, when_full="drop-newest")
    results = [spool.append(_builder()) for _ in range(15)]
    assert [r is None for r in results] == [False] * capacity + [True] * 5
    assert spool.stats.dropped_newest == 5
    assert [r.seq for r in spool.after(0, 100)] == list(range(1, 11))
    # Acknowledgements free room; the dropped batches used up their sequence numbers.
    spool.delete(r.id for r in spool.after(0, 3))
    stored = spool.append(_builder())
    assert stored is not None
    assert stored.seq == 16
    spool.close()


def test_a_batch_larger_than_the_spool_is_dropped_and_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite", max_mb=1000 / MB)
    assert spool.append(_builder(size=2000)) is None
    assert spool.stats.dropped == 1
    assert spool.stats.depth == 0
    spool.close()


def test_a_failing_builder_stores_nothing_and_uses_no_sequence_number(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite", max_mb=1)

    def broken(_seq: int) -> tuple[str, bytes]:
        raise ValueError("cannot encode")

    with pytest.raises(ValueError, match="cannot encode"):
        spool.append(broken)
    stored = spool.append(_builder())
    assert stored is not None
    assert stored.seq == 1
    assert spool.stats.depth == 1
    spool.close()


def test_append_many_stores_in_one_go_and_a_failing_build_takes_no_number(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite", max_mb=1)

    def broken(_seq: int) -> tuple[str, bytes]:
        raise ValueError("cannot build")

    outcomes = spool.append_many([(_builder(), True), (broken, True), (_builder(), False), (_builder(), True)])
    assert isinstance(outcomes[1], ValueError)
    stored = [o for o in outcomes if isinstance(o, Stored)]
    assert [s.seq for s in stored] == [1, 0, 2]
    assert [r.seq for r in spool.after(0, 100)] == [1, 0, 2]
    assert spool.stats.next_seq == 3
    assert spool.stats.depth == 3
    spool.close()


def test_concurrent_appends_are_grouped_keep_their_order_and_their_own_outcomes(tmp_path: Path) -> None:
    async def main() -> tuple[list[Stored | BaseException | None], list[int], int]:
        spool = await AsyncSpool.open(tmp_path / "spool.sqlite", max_mb=1, when_full="drop-oldest")
        calls = 0
        inner = spool.spool.append_many

        def counting(items: list[tuple[Builder, bool]]) -> list[Stored | BaseException | None]:
            nonlocal calls
            calls += 1
            return inner(items)

        spool.spool.append_many = counting  # type: ignore[method-assign]

        def build(i: int) -> Callable[[int], tuple[str, bytes]]:
            def make(seq: int) -> tuple[str, bytes]:
                if i == 7:
                    raise ValueError("device 7 cannot be encoded")
                return "dcim/v1/s/a/d/telemetry", f"{i}:{seq}".encode()

            return make

        outcomes = await asyncio.gather(*(spool.append(build(i)) for i in range(50)), return_exceptions=True)
        rows = [int(r.payload.split(b":")[0]) for r in spool.spool.after(0, 100)]
        await spool.close()
        return outcomes, rows, calls

    outcomes, rows, calls = asyncio.run(main())
    assert isinstance(outcomes[7], ValueError)
    assert "device 7" in str(outcomes[7])
    good = [o for o in outcomes if isinstance(o, Stored)]
    assert [s.seq for s in good] == list(range(1, 50))  # contiguous: the failed build took no number
    assert [int(s.payload.split(b":")[0]) for s in good] == [i for i in range(50) if i != 7]
    assert rows == [i for i in range(50) if i != 7]
    assert calls < 50  # grouped: appends made while the spool's thread was busy went in together


def test_two_agents_cannot_share_a_spool(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    first = Spool(path, max_mb=1)
    with pytest.raises(SpoolError, match="in use by another process"):
        Spool(path, max_mb=1)
    first.close()
    Spool(path, max_mb=1).close()  # the lock goes with the first one


def test_an_unusable_path_names_the_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(SpoolError, match=r"spool .*file/spool\.sqlite"):
        Spool(blocker / "spool.sqlite", max_mb=1)


_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from agent.spool import Spool

    spool = Spool(Path(sys.argv[1]), max_mb=64)
    acked = 0
    while True:
        stored = spool.append(lambda seq: ("t", b"x" * 3000 + str(seq).encode()))
        # Acknowledge some, as the forwarder does, so deletes are in flight too.
        if stored.seq % 3 == 0:
            spool.delete([stored.id - 1])
        print(stored.seq, flush=True)
    """
)


def test_kill_9_loses_no_committed_batch_and_leaves_no_corruption(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
        start_new_session=True,
    )
    assert proc.stdout is not None
    committed: list[int] = []
    try:
        while len(committed) < 400:
            line = proc.stdout.readline()
            assert line, "the writer died before it was killed"
            committed.append(int(line))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    spool = Spool(path, max_mb=64)
    assert spool.check() == "ok"
    present = {r.seq for r in spool.after(0, 100_000)}
    deleted = {s - 1 for s in committed if s % 3 == 0}
    missing = [s for s in committed if s not in present and s not in deleted]
    assert missing == []
    assert spool.stats.next_seq > committed[-1]
    spool.close()
