"""Durable outbox: every outgoing alarm, command response and status message is committed to
SQLite before it is published, and deleted only when the broker acknowledges it.

Threads: all SQLite work happens on one writer thread owned by the outbox, so the event loop
never waits on a commit or an fsync. The loop calls ``put()`` (non-blocking); the writer
commits whatever accumulated in one transaction (group commit: one fsync for many alarms) and
hands the committed rows back to the loop, which publishes them in id order.

Memory stays bounded: at most ``mem_rows`` committed rows are held in memory; during a long
outage the rest stay on disk and are paged in, in order, as the backlog drains.

Bounds: ``max_rows``, ``max_bytes`` and ``max_age_s``. Beyond them the *oldest* rows are
dropped and counted per reason (``rows``, ``bytes``, ``age``); rows whose MQTT message expiry
has passed are skipped on replay and counted as ``expired``.

Quarantine: a message that cannot be delivered (its topic or size breaks MQTT's or the
broker's limits, or the broker dropped the connection each time it was sent) is moved,
with its reason, from ``outbox`` to the ``quarantine`` table in the same file, and the queue
moves on. Left at the head it would hold back every alarm behind it for as long as the
row lived. The table keeps the newest ``max_quarantine`` rows for inspection
(``sqlite3 outbox.sqlite 'SELECT * FROM quarantine'``); counts are in ``/metrics``.

Degraded mode: when the state directory cannot be written (read-only, full, gone) the outbox
keeps working in memory, reports ``degraded``, and retries the file every ``retry_s``;
rows held in memory meanwhile are written to the file when it works again.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.outbox_tables import (
    Record,
    create,
    operator_rows,
    read_alarm_seqs,
    read_alarm_states,
    read_operator_state,
    write_records,
)
from edge_agent.ratelimit import RateLimitedLog, clip

log = logging.getLogger(__name__)

@dataclass(slots=True)
class OutMessage:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    expires: float | None = None  # epoch seconds after which the message is useless
    props: str | None = None  # JSON of extra MQTT 5 properties (response routing)
    id: int = 0
    created: float = 0.0
    kind: str = ""  # "alarm" for latency accounting; not persisted
    # (state, series, alert_id, ts, seq): updates alarm_seq, and alarm_state for the learned
    # model's alarms (``condition`` "model"; engineering limits are other conditions)
    alarm: tuple[str, str, str, float, int] | None = None
    condition: str = "model"
    records: list[Record] | None = None  # operator state committed with this message
    state_only: bool = False  # records (and alarm) only: nothing to publish
    attempts: int = 0  # sends that ended in a dropped connection or an error (this run only)
    sent_at: float = 0.0  # monotonic time of the last send

    @property
    def size(self) -> int:
        return len(self.payload) + len(self.topic)


class Outbox:
    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "FULL",
        max_rows: int = 100_000,
        max_bytes: int = 64 * 1024 * 1024,
        max_age_s: float = 7 * 86400.0,
        mem_rows: int = 2000,
        retry_s: float = 30.0,
        max_quarantine: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.synchronous = synchronous
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.mem_rows = mem_rows
        self.retry_s = retry_s
        self.max_quarantine = max_quarantine
        self.clock = clock
        self.loop: asyncio.AbstractEventLoop | None = None
        # Loop-side state.
        self.ready: deque[OutMessage] = deque()
        self.mem_max_id = 0
        self.spilled = True  # rows may exist on disk that are not in memory (start-up replay)
        self.loading = False
        self.on_ready: Callable[[], None] = lambda: None
        self.dropped: dict[str, int] = {"rows": 0, "bytes": 0, "age": 0, "expired": 0}
        self.committed_total = 0
        self.put_total = 0
        self.acked_total = 0
        self.quarantined: dict[str, int] = {}  # by reason, this run
        self.last_quarantine: tuple[float, str, str] | None = None  # (epoch, reason + detail, topic head)
        self.quarantine_rows = 0  # rows in the quarantine table (writer side)
        self._quarantine_log = RateLimitedLog(log, 10.0)
        # Writer-side state (touched only by the writer thread, read racily for metrics).
        self.depth = 0
        self.bytes = 0
        self.oldest_created: float | None = None
        self.degraded: str | None = None
        self._cmd: deque[tuple[str, Any]] = deque()
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._db: sqlite3.Connection | None = None
        self._on_file = False
        self._next_retry = 0.0
        self._idle = threading.Event()
        self._alarm_states: dict[str, tuple[str, float]] = {}  # writer side, authoritative
        self._alarm_seqs: dict[str, tuple[int, float]] = {}  # writer side: series -> (seq, last edge ts)
        self._operator: dict[tuple[str, tuple[str, ...]], str] = {}  # writer side: alarm_condition, alarm_shelve rows
        # While in memory: the highest file row id copied into memory, or None when the file
        # could not be read at all (its rows are then merged back on recovery without collisions).
        self._seed_max: int | None = None

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._thread = threading.Thread(target=self._run, name="outbox-writer", daemon=True)
        self._thread.start()
        self._request_page()

    async def close(self, timeout: float = 3.0) -> None:
        """Finish queued writes and stop the writer thread."""
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, timeout)

    # ---- loop side ---------------------------------------------------------------------
    def put(self, msg: OutMessage) -> None:
        """Queue a message for commit. Non-blocking; the loop is told when it is durable."""
        msg.created = self.clock()
        self.put_total += 1
        self._cmd.append(("put", msg))
        self._wake.set()

    def record(self, records: list[Record], alarm: tuple[str, str, str, float, int] | None = None, condition: str = "model") -> None:
        """Commit operator state (and an alarm's sequence number) with nothing to publish: a
        raise while its series is shelved, an acknowledgement without a state topic."""
        self.put(OutMessage("", b"", alarm=alarm, condition=condition, records=records, state_only=True))

    def durable(self) -> bool:
        """True when every message put so far is committed (readings may be acknowledged)."""
        return self.committed_total >= self.put_total

    def ack(self, msg: OutMessage) -> None:
        self.acked_total += 1
        self._cmd.append(("delete", msg.id))
        self._wake.set()

    def quarantine(self, msg: OutMessage, reason: str, detail: str) -> None:
        """Move a taken (or in-flight) message that cannot be delivered out of the queue."""
        self.quarantined[reason] = self.quarantined.get(reason, 0) + 1
        self.last_quarantine = (self.clock(), f"{reason}: {detail}"[:300], msg.topic[:120])
        self._cmd.append(("quarantine", (msg, reason, detail)))
        self._wake.set()

    def take(self, limit: int) -> list[OutMessage]:
        """Up to ``limit`` committed messages to publish now, oldest first, skipping expired ones."""
        out: list[OutMessage] = []
        now = self.clock()
        while self.ready and len(out) < limit:
            msg = self.ready.popleft()
            if msg.expires is not None and msg.expires <= now:
                self.dropped["expired"] += 1
                self._cmd.append(("delete", msg.id))
                continue
            out.append(msg)
        if out or self._cmd:
            self._wake.set()
        if self.spilled and len(self.ready) < self.mem_rows // 2:
            self._request_page()
        return out

    def requeue(self, msgs: list[OutMessage]) -> None:
        """Put unacknowledged in-flight messages back at the front, in id order (after a disconnect)."""
        for msg in sorted(msgs, key=lambda m: m.id, reverse=True):
            self.ready.appendleft(msg)

    def _request_page(self) -> None:
        if not self.loading:
            self.loading = True
            # Never more than mem_rows in memory: the page fills what is left of it.
            self._cmd.append(("load", (self.mem_max_id, max(1, self.mem_rows - len(self.ready)))))
            self._wake.set()

    def _committed(self, msgs: list[OutMessage]) -> None:
        self.committed_total += len(msgs)
        msgs = [m for m in msgs if not m.state_only]
        if not msgs:
            return
        room = self.mem_rows - len(self.ready)
        if self.spilled or room <= 0:
            # Leave them on disk; a page load will bring them in, in order.
            self.spilled = True
        else:
            if len(msgs) > room:
                # One group commit can be large (an alarm storm during an outage): keep only
                # what fits, the rest waits on disk for a page load.
                msgs = msgs[:room]
                self.spilled = True
            self.ready.extend(msgs)
            self.mem_max_id = max(self.mem_max_id, msgs[-1].id)
        self.on_ready()

    def _more_on_disk(self) -> None:
        # Rows the loop has never seen were merged into the file (degraded-start recovery).
        self.spilled = True
        self._request_page()
        self.on_ready()

    def _page_loaded(self, msgs: list[OutMessage], full: bool) -> None:
        self.loading = False
        for m in msgs:
            if m.id > self.mem_max_id:
                self.ready.append(m)
                self.mem_max_id = m.id
        self.spilled = full
        if msgs:
            self.on_ready()

    def _dropped_ids(self, ids: set[int]) -> None:
        if ids:
            self.ready = deque(m for m in self.ready if m.id not in ids)

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self.loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:  # loop closed between the check and the call
                pass

    # ---- writer thread -----------------------------------------------------------------
    def _open_file(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self.synchronous}")
        create(db)
        # Probe that writes actually work (a read-only file opens fine but cannot commit).
        db.execute("BEGIN IMMEDIATE")
        db.execute("COMMIT")
        return db

    def _open(self) -> None:
        try:
            self._db = self._open_file()
            self._on_file = True
            self.degraded = None
            self._alarm_states = {s: (a, t) for s, a, t in self._db.execute("SELECT series, alert_id, ts FROM alarm_state")}
            (self.quarantine_rows,) = self._db.execute("SELECT COUNT(*) FROM quarantine").fetchone()
            self._alarm_seqs = {s: (q, t) for s, q, t in self._db.execute("SELECT series, seq, last_ts FROM alarm_seq")}
            self._operator = operator_rows(self._db.execute("SELECT series, condition, doc FROM alarm_condition").fetchall(),
                                            self._db.execute("SELECT series, doc FROM alarm_shelve").fetchall())
        except (sqlite3.Error, OSError) as exc:
            self._go_memory(f"cannot open {self.path}: {exc}")
            return
        self._recount()

    def _go_memory(self, reason: str) -> None:
        log.error("outbox degraded, holding messages in memory only: %s", reason)
        self.degraded = reason
        mem = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        create(mem)
        if not self._alarm_states:
            self._alarm_states = read_alarm_states(self.path)
        if not self._alarm_seqs:
            self._alarm_seqs = read_alarm_seqs(self.path)
        if not self._operator:
            self._operator = operator_rows(*read_operator_state(self.path))
        # Copy what the file holds (the open file after a failed write; at start, a read-only
        # view if the file can at least be read) so undelivered rows keep being published and
        # ids keep increasing across the switch, which the loop's ordering relies on.
        src = self._db if self._db is not None and self._on_file else None
        self._seed_max = None
        try:
            if src is None and self.path.is_file():
                src = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            if src is not None:
                (max_id,) = src.execute("SELECT COALESCE(MAX(id), 0) FROM outbox").fetchone()
                seq = src.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
                rows = src.execute("SELECT * FROM outbox ORDER BY id").fetchall()
                top = max(max_id, seq[0] if seq else 0)
                mem.execute("BEGIN")
                mem.executemany("INSERT INTO outbox VALUES (?,?,?,?,?,?,?,?)", rows)
                mem.execute("INSERT INTO sqlite_sequence(name, seq) VALUES ('outbox', ?)", (max(top, self.mem_max_id),))
                mem.execute("COMMIT")
                self._seed_max = top
        except sqlite3.Error:
            mem.close()
            mem = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            create(mem)
            if self.mem_max_id:
                mem.execute("INSERT INTO sqlite_sequence(name, seq) VALUES ('outbox', ?)", (self.mem_max_id,))
        if src is not None:
            try:
                src.close()
            except sqlite3.Error:
                pass
        self._db = mem
        self._on_file = False
        self._next_retry = time.monotonic() + self.retry_s

    def _try_recover(self) -> None:
        try:
            fdb = self._open_file()
        except (sqlite3.Error, OSError):
            self._next_retry = time.monotonic() + self.retry_s
            return
        assert self._db is not None
        rows = self._db.execute("SELECT * FROM outbox ORDER BY id").fetchall()
        seq = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        mem_top = max(seq[0] if seq else 0, rows[-1][0] if rows else 0)
        moved = 0
        try:
            fdb.execute("BEGIN IMMEDIATE")
            if self._seed_max is not None:
                # Memory started as a copy of the file: what memory no longer holds was acked
                # or dropped meanwhile, so the file takes memory's view.
                fdb.execute("DELETE FROM outbox WHERE id <= ?", (self._seed_max,))
            else:
                # The file could not be read when memory took over, so its rows were never seen
                # and memory ids may collide with theirs: move the file's rows above every id
                # memory used, then tell the loop there is more on disk to publish.
                (fmax, moved) = fdb.execute("SELECT COALESCE(MAX(id), 0), COUNT(*) FROM outbox").fetchone()
                if moved:
                    fdb.execute("UPDATE outbox SET id = id + ?", (max(fmax, mem_top),))
            fdb.executemany("INSERT OR REPLACE INTO outbox VALUES (?,?,?,?,?,?,?,?)", rows)
            (top,) = fdb.execute("SELECT COALESCE(MAX(id), 0) FROM outbox").fetchone()
            top = max(top, mem_top)
            if fdb.execute("UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = 'outbox'", (top,)).rowcount == 0:
                fdb.execute("INSERT INTO sqlite_sequence(name, seq) VALUES ('outbox', ?)", (top,))
            fdb.execute("DELETE FROM alarm_state")
            fdb.executemany("INSERT INTO alarm_state VALUES (?,?,?)", [(k, a, t) for k, (a, t) in self._alarm_states.items()])
            fdb.execute("DELETE FROM alarm_seq")
            fdb.executemany("INSERT INTO alarm_seq VALUES (?,?,?)", [(k, q, t) for k, (q, t) in self._alarm_seqs.items()])
            fdb.execute("DELETE FROM alarm_condition")
            fdb.execute("DELETE FROM alarm_shelve")
            write_records(fdb, [(table, key, doc) for (table, key), doc in self._operator.items()])
            fdb.execute("COMMIT")
        except sqlite3.Error:
            fdb.close()
            self._next_retry = time.monotonic() + self.retry_s
            return
        self._db.close()
        self._db = fdb
        self._on_file = True
        self.degraded = None
        self._seed_max = None
        log.warning("outbox recovered: writing to %s again (%d held rows moved, %d older rows found in the file)", self.path, len(rows), moved)
        self._recount()
        if moved:
            self._post(self._more_on_disk)

    def _recount(self) -> None:
        assert self._db is not None
        n, b, oldest = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload) + LENGTH(topic)), 0), MIN(created) FROM outbox"
        ).fetchone()
        self.depth, self.bytes, self.oldest_created = n, b, oldest

    def _run(self) -> None:
        self._open()
        last_age_check = 0.0
        while True:
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            try:
                self._drain()
                if self.degraded and time.monotonic() >= self._next_retry:
                    self._try_recover()
                now = time.monotonic()
                if now - last_age_check > 5.0:
                    last_age_check = now
                    self._enforce_age()
            except Exception:  # never let the writer die; the loop depends on it
                log.exception("outbox writer error")
            if self._stop and not self._cmd:
                break
        if self._db is not None:
            self._db.close()

    def _drain(self) -> None:
        puts: list[OutMessage] = []
        deletes: list[int] = []
        loads: list[int] = []
        poison: list[tuple[OutMessage, str, str]] = []
        while self._cmd:
            kind, arg = self._cmd.popleft()
            if kind == "put":
                puts.append(arg)
            elif kind == "delete":
                deletes.append(arg)
            elif kind == "quarantine":
                poison.append(arg)
            else:
                loads.append(arg)
        if puts:
            self._insert(puts)
        if deletes:
            self._delete(deletes)
        if poison:
            self._quarantine(poison)
        for after, limit in loads:
            self._load(after, limit)

    def _exec_batch(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        assert self._db is not None
        try:
            self._db.execute("BEGIN IMMEDIATE")
            result = fn(self._db)
            self._db.execute("COMMIT")
            return result
        except (sqlite3.Error, OSError) as exc:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            if not self._on_file:
                raise
            self._go_memory(f"write to {self.path} failed: {exc}")
            self._db.execute("BEGIN")
            result = fn(self._db)
            self._db.execute("COMMIT")
            return result

    def _insert(self, msgs: list[OutMessage]) -> None:
        def work(db: sqlite3.Connection) -> None:
            for m in msgs:
                if not m.state_only:
                    cur = db.execute(
                        "INSERT INTO outbox(topic, payload, qos, retain, created, expires, props) VALUES (?,?,?,?,?,?,?)",
                        (m.topic, m.payload, m.qos, int(m.retain), m.created, m.expires, m.props),
                    )
                    m.id = int(cur.lastrowid or 0)
                if m.alarm is not None:
                    state, series, aid, ts, seq = m.alarm
                    if m.condition == "model":
                        if state == "raised":
                            db.execute("INSERT OR REPLACE INTO alarm_state VALUES (?,?,?)", (series, aid, ts))
                        else:
                            db.execute("DELETE FROM alarm_state WHERE series = ?", (series,))
                    db.execute("INSERT OR REPLACE INTO alarm_seq VALUES (?,?,?)", (series, seq, max(ts, self._alarm_seqs.get(series, (0, ts))[1])))
                if m.records:
                    write_records(db, m.records)

        self._exec_batch(work)
        for m in msgs:
            if m.alarm is not None:
                state, series, aid, ts, seq = m.alarm
                if m.condition == "model":
                    if state == "raised":
                        self._alarm_states[series] = (aid, ts)
                    else:
                        self._alarm_states.pop(series, None)
                self._alarm_seqs[series] = (seq, max(ts, self._alarm_seqs.get(series, (0, ts))[1]))
            for table, key, doc in m.records or ():
                if doc is None:
                    self._operator.pop((table, key), None)
                else:
                    self._operator[(table, key)] = doc
        sent = [m for m in msgs if not m.state_only]
        self.depth += len(sent)
        self.bytes += sum(m.size for m in sent)
        if self.oldest_created is None and sent:
            self.oldest_created = sent[0].created
        self._post(self._committed, msgs)
        self._enforce_size()

    def _delete(self, ids: list[int]) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])

        self._exec_batch(work)
        self._recount()

    def _quarantine(self, items: list[tuple[OutMessage, str, str]]) -> None:
        now = self.clock()

        def work(db: sqlite3.Connection) -> None:
            for m, reason, detail in items:
                db.execute(
                    "INSERT INTO quarantine(topic, payload, qos, retain, created, expires, props, reason, detail, quarantined)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (m.topic, m.payload, m.qos, int(m.retain), m.created, m.expires, m.props, reason, detail[:1000], now),
                )
                db.execute("DELETE FROM outbox WHERE id = ?", (m.id,))
            # Keep the newest rows only: the table is for inspection, not a second queue.
            db.execute("DELETE FROM quarantine WHERE id <= (SELECT MAX(id) FROM quarantine) - ?", (self.max_quarantine,))

        self._exec_batch(work)
        assert self._db is not None
        (self.quarantine_rows,) = self._db.execute("SELECT COUNT(*) FROM quarantine").fetchone()
        for m, reason, detail in items:
            self._quarantine_log.error(
                "outbox: a message to %s cannot be delivered (%s: %s): moved to the quarantine table, the queue moves on",
                clip(m.topic), reason, clip(detail, 300),
            )
        self._recount()

    def _load(self, after: int, limit: int) -> None:
        assert self._db is not None
        rows = self._db.execute(
            "SELECT id, topic, payload, qos, retain, created, expires, props FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
            (after, limit),
        ).fetchall()
        msgs = [OutMessage(t, bytes(p), q, bool(r), e, pr, i, c) for i, t, p, q, r, c, e, pr in rows]
        self._post(self._page_loaded, msgs, len(msgs) == limit)

    def _drop_oldest(self, reason: str, where: str, params: tuple[Any, ...]) -> None:
        def work(db: sqlite3.Connection) -> list[int]:
            ids = [r[0] for r in db.execute(f"SELECT id FROM outbox {where}", params).fetchall()]
            db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
            return ids

        ids = self._exec_batch(work)
        if ids:
            self.dropped[reason] += len(ids)
            log.warning("outbox full: dropped %d oldest message(s) (%s limit)", len(ids), reason)
            self._post(self._dropped_ids, set(ids))
            self._recount()

    def _enforce_size(self) -> None:
        if self.depth > self.max_rows:
            self._drop_oldest("rows", "ORDER BY id LIMIT ?", (self.depth - self.max_rows,))
        if self.bytes > self.max_bytes:
            assert self._db is not None
            # Oldest rows until the running size falls under the bound.
            rows = self._db.execute("SELECT id, LENGTH(payload) + LENGTH(topic) FROM outbox ORDER BY id").fetchall()
            excess, cut = self.bytes - self.max_bytes, 0
            for rid, size in rows:
                excess -= size
                if excess <= 0:
                    cut = rid
                    break
            if cut:
                self._drop_oldest("bytes", "WHERE id <= ?", (cut,))

    def _enforce_age(self) -> None:
        if self.oldest_created is not None and self.oldest_created < self.clock() - self.max_age_s:
            self._drop_oldest("age", "WHERE created < ?", (self.clock() - self.max_age_s,))

    # ---- reporting ---------------------------------------------------------------------
    def oldest_age(self) -> float:
        oldest = self.oldest_created
        return 0.0 if oldest is None else max(0.0, self.clock() - oldest)
