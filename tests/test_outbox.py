"""The durable outbox against real SQLite files: commit before publish, delete on ack, replay
in order after a reopen, paging, bounds with drop-oldest counters, expiry, degraded mode and
recovery, and the configured ``synchronous`` level."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from faults import outbox_rows

from edge_agent.config import AgentConfig
from edge_agent.outbox import Outbox, OutMessage

pytestmark = pytest.mark.timeout(30)


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


async def until(pred, timeout: float = 5.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        await asyncio.sleep(0.01)
    raise TimeoutError(f"timed out waiting for {what}")


async def opened(path: Path, **kw: object) -> Outbox:
    ob = Outbox(path, **kw)  # type: ignore[arg-type]
    ob.start(asyncio.get_running_loop())
    await until(lambda: not ob.loading and ob._db is not None, what="outbox open")
    return ob


def msg(i: int, **kw: object) -> OutMessage:
    return OutMessage(f"edge/gw/alerts/s{i % 7}", f"alarm-{i}".encode(), **kw)  # type: ignore[arg-type]


async def take_all(ob: Outbox, n: int, batch: int = 1000, ack: bool = False, timeout: float = 10.0) -> list[OutMessage]:
    out: list[OutMessage] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        got = ob.take(batch)
        if ack:
            for m in got:
                ob.ack(m)
        out += got
        if not got:
            await asyncio.sleep(0.01)
    return out


async def test_committed_before_taken_in_order_and_deleted_only_on_ack(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    ob = await opened(path)
    for i in range(50):
        ob.put(msg(i))
    got = await take_all(ob, 50)
    assert [m.payload for m in got] == [f"alarm-{i}".encode() for i in range(50)]
    assert [m.id for m in got] == sorted(m.id for m in got)
    # Everything handed out for publishing is already in the file (committed before publish).
    on_disk = {i for i, _, _ in outbox_rows(path)}
    assert {m.id for m in got} <= on_disk
    for m in got[:20]:
        ob.ack(m)
    await until(lambda: len(outbox_rows(path)) == 30, what="acked rows deleted")
    assert [p for _, _, p in outbox_rows(path)] == [m.payload for m in got[20:]]
    # Unacked in-flight messages go back to the front in id order.
    ob.requeue(list(reversed(got[20:25])))
    assert [m.id for m in ob.take(5)] == [m.id for m in got[20:25]]
    await ob.close()


async def test_replay_after_reopen_in_order(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    ob = await opened(path)
    for i in range(10):
        ob.put(msg(i))
    first = await take_all(ob, 10)
    ob.ack(first[0])
    await until(lambda: len(outbox_rows(path)) == 9, what="ack")
    await ob.close()
    again = await opened(path)
    replay = await take_all(again, 9)
    assert [(m.id, m.topic, m.payload) for m in replay] == [(m.id, m.topic, m.payload) for m in first[1:]]
    # New rows continue after the old ones.
    again.put(msg(99))
    new = await take_all(again, 1)
    assert new[0].id > replay[-1].id
    await again.close()


async def test_paging_keeps_memory_bounded_and_order(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    ob = await opened(path, mem_rows=100)
    for i in range(3000):
        ob.put(msg(i))
    await until(lambda: ob.committed_total == 3000, what="3000 commits")
    peak = len(ob.ready)
    got: list[OutMessage] = []
    deadline = time.monotonic() + 15
    while len(got) < 3000 and time.monotonic() < deadline:
        batch = ob.take(37)
        for m in batch:
            ob.ack(m)
        got += batch
        peak = max(peak, len(ob.ready))
        if not batch:
            await asyncio.sleep(0.005)
    print(f"paging: 3000 rows through mem_rows=100, peak rows in memory {peak}")
    assert [m.payload for m in got] == [f"alarm-{i}".encode() for i in range(3000)]
    assert peak <= 100, f"{peak} rows held in memory with mem_rows=100"
    await until(lambda: outbox_rows(path) == [], what="all acked rows deleted")
    await ob.close()


async def test_row_bound_drops_oldest_and_counts(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    ob = await opened(path, max_rows=10)
    for i in range(25):
        ob.put(msg(i))
    await until(lambda: ob.dropped["rows"] == 15, what="15 dropped")
    await asyncio.sleep(0.05)  # let the loop apply the drop to its in-memory copy
    assert [p for _, _, p in outbox_rows(path)] == [f"alarm-{i}".encode() for i in range(15, 25)]
    assert [m.payload for m in await take_all(ob, 10)] == [f"alarm-{i}".encode() for i in range(15, 25)]
    assert ob.take(10) == []
    await ob.close()


async def test_byte_bound_drops_oldest_and_counts(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    ob = await opened(path, max_bytes=2000)
    for i in range(30):
        ob.put(OutMessage("t", bytes([65 + i % 26]) * 199))  # 200 bytes each with the topic
    await until(lambda: ob.committed_total == 30 and ob.dropped["bytes"] > 0, what="byte drops")
    rows = outbox_rows(path)
    assert sum(len(t) + len(p) for _, t, p in rows) <= 2000
    assert len(rows) == 10 and ob.dropped["bytes"] == 20
    assert rows[-1][2] == bytes([65 + 29 % 26]) * 199
    await ob.close()


async def test_age_bound_drops_old_rows(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    clock = Clock()
    ob = await opened(path, clock=clock, max_age_s=60.0)
    for i in range(5):
        ob.put(msg(i))
    await until(lambda: ob.committed_total == 5, what="commits")
    await ob.close()
    clock.t += 61
    again = await opened(path, clock=clock, max_age_s=60.0)
    await until(lambda: again.dropped["age"] == 5, what="age drops")
    await asyncio.sleep(0.05)
    assert again.take(10) == [] and outbox_rows(path) == []
    await again.close()


async def test_expired_messages_are_skipped_and_deleted(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    clock = Clock()
    ob = await opened(path, clock=clock)
    ob.put(msg(1, expires=clock.t + 10))
    ob.put(msg(2))
    ob.put(msg(3, expires=clock.t + 1000))
    await until(lambda: ob.committed_total == 3, what="commits")
    await ob.close()
    clock.t += 11  # msg 1 expired while the agent was down
    again = await opened(path, clock=clock)
    got = await take_all(again, 2)
    assert [m.payload for m in got] == [b"alarm-2", b"alarm-3"]
    assert again.dropped["expired"] == 1
    await until(lambda: len(outbox_rows(path)) == 2, what="expired row deleted")
    await again.close()


async def test_degraded_when_the_directory_cannot_exist_then_recovers(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file where the state directory should be")
    path = blocker / "outbox.sqlite"
    ob = await opened(path, retry_s=0.2)
    assert ob.degraded and "blocker" in ob.degraded
    for i in range(5):
        ob.put(msg(i))
    got = await take_all(ob, 5)
    assert [m.payload for m in got] == [f"alarm-{i}".encode() for i in range(5)]
    ob.ack(got[0])
    ob.ack(got[1])
    await asyncio.sleep(0.1)
    blocker.unlink()  # the cause goes away
    await until(lambda: ob.degraded is None, what="recovery")
    await until(lambda: len(outbox_rows(path)) == 3, what="held rows written to the file")
    assert [p for _, _, p in outbox_rows(path)] == [b"alarm-2", b"alarm-3", b"alarm-4"]
    for m in got[2:]:
        ob.ack(m)
    ob.put(msg(9))
    (m9,) = await take_all(ob, 1)
    assert m9.payload == b"alarm-9" and m9.id > got[-1].id
    await until(lambda: [p for _, _, p in outbox_rows(path)] == [b"alarm-9"], what="acks applied to the file")
    await ob.close()


async def test_degraded_at_start_with_old_rows_loses_nothing_on_recovery(tmp_path: Path) -> None:
    """The file holds undelivered rows but cannot be opened at start (here: its WAL path is
    blocked by a directory, which stops root too). New alarms are held in memory; when the
    file works again, old and new rows are all there and all get published."""
    path = tmp_path / "outbox.sqlite"
    ob = await opened(path)
    for i in range(3):
        ob.put(msg(i))
    await until(lambda: ob.committed_total == 3, what="commits")
    await ob.close()
    wal = Path(f"{path}-wal")
    assert not wal.exists()
    wal.mkdir()
    again = await opened(path, retry_s=0.2)
    assert again.degraded
    for i in range(10, 12):
        again.put(msg(i))
    held = await take_all(again, 2)
    assert [m.payload for m in held] == [b"alarm-10", b"alarm-11"]
    shutil.rmtree(wal)
    await until(lambda: again.degraded is None, what="recovery")
    await until(lambda: len(outbox_rows(path)) == 5, what="held rows merged into the file", timeout=3)
    assert sorted(p for _, _, p in outbox_rows(path)) == [b"alarm-0", b"alarm-1", b"alarm-10", b"alarm-11", b"alarm-2"]
    # The old rows are published in this run too, and acking the held ones deletes only them.
    old = await take_all(again, 3, timeout=5)
    assert sorted(m.payload for m in old) == [b"alarm-0", b"alarm-1", b"alarm-2"]
    for m in held:
        again.ack(m)
    await until(lambda: len(outbox_rows(path)) == 3, what="held rows acked")
    assert sorted(p for _, _, p in outbox_rows(path)) == [b"alarm-0", b"alarm-1", b"alarm-2"]
    await again.close()


@pytest.mark.parametrize("level,code", [("OFF", 0), ("NORMAL", 1), ("FULL", 2), ("EXTRA", 3)])
async def test_synchronous_is_applied(tmp_path: Path, level: str, code: int) -> None:
    ob = await opened(tmp_path / "outbox.sqlite", synchronous=level)
    assert ob._db is not None
    assert ob._db.execute("PRAGMA synchronous").fetchone()[0] == code
    assert ob._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    await ob.close()


def test_synchronous_full_is_the_default() -> None:
    assert AgentConfig().outbox.synchronous == "FULL"
    assert Outbox("unused").synchronous == "FULL"


async def test_writer_survives_a_file_made_unwritable_mid_run(tmp_path: Path) -> None:
    """Mid-run failure: the database file is replaced by a directory of the same name on
    reopen paths; here we make the next write fail by dropping the table under the writer."""
    path = tmp_path / "outbox.sqlite"
    ob = await opened(path, retry_s=0.2)
    ob.put(msg(1))
    (m1,) = await take_all(ob, 1)
    other = sqlite3.connect(path)
    other.execute("PRAGMA journal_mode=WAL")
    other.execute("BEGIN EXCLUSIVE")  # hold the write lock: the writer's next commit fails (busy)
    ob.put(msg(2))
    await until(lambda: ob.degraded is not None, what="degraded on a failed write", timeout=10)
    (m2,) = await take_all(ob, 1)
    assert m2.payload == b"alarm-2" and m2.id > m1.id
    other.execute("ROLLBACK")
    other.close()
    await until(lambda: ob.degraded is None, what="recovery", timeout=5)
    await until(lambda: sorted(p for _, _, p in outbox_rows(path)) == [b"alarm-1", b"alarm-2"], what="rows on file")
    await ob.close()


async def test_degraded_at_start_with_a_readable_file_publishes_its_rows(tmp_path: Path) -> None:
    """The file can be read but not written at start (another writer holds the lock for longer
    than the busy timeout): its undelivered rows are still published from memory, and the
    file takes memory's view when it can be written again."""
    path = tmp_path / "outbox.sqlite"
    ob = await opened(path)
    for i in range(3):
        ob.put(msg(i))
    await until(lambda: ob.committed_total == 3, what="commits")
    await ob.close()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    again = Outbox(path, retry_s=0.2)
    again.start(asyncio.get_running_loop())
    await until(lambda: again.degraded is not None, what="degraded (busy timeout)", timeout=15)
    old = await take_all(again, 3)
    assert [m.payload for m in old] == [b"alarm-0", b"alarm-1", b"alarm-2"]
    again.ack(old[0])
    again.put(msg(10))
    (new,) = await take_all(again, 1)
    assert new.id > old[-1].id
    other.execute("ROLLBACK")
    other.close()
    await until(lambda: again.degraded is None, what="recovery")
    await until(lambda: [p for _, _, p in outbox_rows(path)] == [b"alarm-1", b"alarm-2", b"alarm-10"], what="file = memory view")
    await again.close()


async def test_quarantine_moves_a_row_aside_keeps_the_queue_moving_and_is_bounded(tmp_path: Path) -> None:
    """A message that cannot be delivered leaves the queue for the quarantine table (same
    file, one transaction); the rows behind it are taken next; the table keeps the newest
    ``max_quarantine`` rows, and survives a reopen."""
    path = tmp_path / "outbox.sqlite"
    ob = await opened(path, max_quarantine=3)
    for i in range(6):
        ob.put(msg(i))
    got = await take_all(ob, 6)
    for m in got[:5]:
        ob.quarantine(m, "too_large", f"packet {m.id}")
    ob.ack(got[5])
    await until(lambda: ob.depth == 0 and ob.quarantine_rows == 3, what="rows quarantined")
    assert ob.quarantined == {"too_large": 5} and ob.last_quarantine is not None
    db = sqlite3.connect(path)
    rows = db.execute("SELECT payload, reason, detail FROM quarantine ORDER BY id").fetchall()
    db.close()
    assert [(bytes(p), r) for p, r, _ in rows] == [(b"alarm-2", "too_large"), (b"alarm-3", "too_large"), (b"alarm-4", "too_large")]
    assert outbox_rows(path) == []
    await ob.close()
    again = await opened(path, max_quarantine=3)
    assert again.quarantine_rows == 3 and await take_all(again, 1, timeout=0.3) == []
    await again.close()


async def test_alarm_sequence_numbers_are_committed_with_their_alarm_and_read_back(tmp_path: Path) -> None:
    # alert_id includes the series' alarm sequence number: a restart must go on from the last.
    from edge_agent.outbox_tables import read_alarm_seqs, read_alarm_states

    path = tmp_path / "outbox.sqlite"
    old = sqlite3.connect(path)  # a file of an agent before alarm_seq existed
    old.execute("CREATE TABLE alarm_state (series TEXT PRIMARY KEY, alert_id TEXT NOT NULL, ts REAL NOT NULL)")
    old.commit()
    old.close()
    assert read_alarm_seqs(path) == {}
    ob = await opened(path)
    ob.put(msg(0, alarm=("raised", "a", "id-a1", 10.0, 1)))
    ob.put(msg(1, alarm=("cleared", "a", "id-a1", 13.0, 1)))
    ob.put(msg(2, alarm=("raised", "a", "id-a2", 20.0, 2)))
    ob.put(msg(3, alarm=("raised", "b", "id-b1", 21.0, 1)))
    ob.put(msg(4, alarm=("cleared", "b", "id-b1", 22.0, 1)))
    await take_all(ob, 5)
    await ob.close(1.0)
    assert read_alarm_seqs(path) == {"a": (2, 20.0), "b": (1, 22.0)}
    assert read_alarm_states(path) == {"a": ("id-a2", 20.0)}
