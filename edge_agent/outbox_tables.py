"""The outbox file's tables and what a restarted agent reads back from them.

The outbox (``outbox.py``) commits each message together with the state it announces: the
open alarms, their sequence numbers, the operators' acknowledgements and shelves. This
module is those tables' schema, their writes and their read-only readers, so the agent's
start (``agent.py``, ``operator_restore.py``) reads them without opening an ``Outbox``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

# A message's columns: the outbox's, and the quarantine's before why and when it was set aside.
_MESSAGE_COLUMNS = """
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    created REAL NOT NULL,
    expires REAL,
    props TEXT"""
_SCHEMA = f"CREATE TABLE IF NOT EXISTS outbox ({_MESSAGE_COLUMNS}\n)"
# Open alarms per series, written in the same transaction as the alarm message itself, so a
# restart knows which alarms are raised and clears them later (not one "raised" for ever).
_STATE_SCHEMA = """
CREATE TABLE IF NOT EXISTS alarm_state (
    series TEXT PRIMARY KEY,
    alert_id TEXT NOT NULL,
    ts REAL NOT NULL
)
"""

# Messages moved aside because they cannot be delivered (see the module docstring).
_QUARANTINE_SCHEMA = f"""CREATE TABLE IF NOT EXISTS quarantine ({_MESSAGE_COLUMNS},
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    quarantined REAL NOT NULL
)"""


# Each series' last alarm sequence number and the timestamp of its last alarm edge (raise or
# clear), written in the same transaction as the alarm message. The sequence number is part of
# alert_id, so a restart must not reuse it; the edge timestamp tells a restarted agent which
# redelivered readings it has already scored (ingest's replay floor). A table of its own rather
# than columns of alarm_state: an older agent (a downgrade) writes alarm_state with three values.
_SEQ_SCHEMA = """
CREATE TABLE IF NOT EXISTS alarm_seq (
    series TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    last_ts REAL NOT NULL
)
"""


# What operators did and see (annunciator.py): each alarm condition's state with its
# acknowledgement, and each shelved series. Written in the same transaction as the message that
# announces the change (the alarm, or the retained state), so a restart comes back to what SCADA
# was last told. ``doc`` is the annunciator's JSON of the record.
_CONDITION_SCHEMA = """
CREATE TABLE IF NOT EXISTS alarm_condition (
    series TEXT NOT NULL,
    condition TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (series, condition)
)
"""
_SHELVE_SCHEMA = """
CREATE TABLE IF NOT EXISTS alarm_shelve (
    series TEXT PRIMARY KEY,
    doc TEXT NOT NULL
)
"""
# A record: (table, key, doc); doc None deletes. table "condition" keys (series, condition),
# "shelve" keys (series,).
Record = tuple[str, tuple[str, ...], "str | None"]


def create(db: sqlite3.Connection) -> None:
    db.execute(_SCHEMA)
    db.execute(_STATE_SCHEMA)
    db.execute(_QUARANTINE_SCHEMA)
    db.execute(_SEQ_SCHEMA)
    db.execute(_CONDITION_SCHEMA)
    db.execute(_SHELVE_SCHEMA)


def write_records(db: sqlite3.Connection, records: list[Record]) -> None:
    for table, key, doc in records:
        if table == "condition":
            if doc is None:
                db.execute("DELETE FROM alarm_condition WHERE series = ? AND condition = ?", key)
            else:
                db.execute("INSERT OR REPLACE INTO alarm_condition VALUES (?,?,?)", (*key, doc))
        elif doc is None:
            db.execute("DELETE FROM alarm_shelve WHERE series = ?", key)
        else:
            db.execute("INSERT OR REPLACE INTO alarm_shelve VALUES (?,?)", (*key, doc))


def read_rows(path: str | Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a query on an outbox file, read-only; none if the file or the table is missing
    (a file of an older agent) or unreadable."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return []


def read_alarm_states(path: str | Path) -> dict[str, tuple[str, float]]:
    """Open alarms recorded in an outbox file: series -> (raised alert_id, reading ts)."""
    return {s: (a, t) for s, a, t in read_rows(path, "SELECT series, alert_id, ts FROM alarm_state")}


def read_alarm_seqs(path: str | Path) -> dict[str, tuple[int, float]]:
    """Alarm sequence numbers in an outbox file: series -> (last seq, ts of its last alarm edge)."""
    return {s: (q, t) for s, q, t in read_rows(path, "SELECT series, seq, last_ts FROM alarm_seq")}


def read_operator_state(path: str | Path) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """Alarm conditions (series, condition, doc) and shelves (series, doc) in an outbox file."""
    return (read_rows(path, "SELECT series, condition, doc FROM alarm_condition"),
            read_rows(path, "SELECT series, doc FROM alarm_shelve"))


def operator_rows(conditions: list[tuple[str, str, str]], shelves: list[tuple[str, str]]) -> dict[tuple[str, tuple[str, ...]], str]:
    out: dict[tuple[str, tuple[str, ...]], str] = {("condition", (s, c)): d for s, c, d in conditions}
    out.update({("shelve", (s,)): d for s, d in shelves})
    return out
