"""Accepted command nonces on disk, so that a restart does not reopen the replay window.

The verifier (``command_auth.CommandVerifier``) refuses a nonce it has seen while the
command carrying it is still fresh (``commands.max_age_s``). Held only in memory, that set
was empty after every restart: a command captured on the wire could be replayed once more
within ``max_age_s`` of the agent coming back. Each accepted nonce is therefore committed
here (``synchronous=FULL``) before its command runs, and loaded again at start.

Rows live until their command could no longer pass the freshness check (``forget_at``), so
the file holds at most the commands of the last ``max_age_s`` seconds. When the file cannot
be written (read-only or full state directory) the agent keeps running on the in-memory
set, says so in its health status, and tries the file again with the next command.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)

FILE_NAME = "command_nonces.sqlite"


class NonceJournal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.error: str | None = None
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5.0)
            try:
                db.execute("PRAGMA synchronous=FULL")
                db.execute("CREATE TABLE IF NOT EXISTS nonces (nonce TEXT PRIMARY KEY, forget_at REAL NOT NULL) WITHOUT ROWID")
            except sqlite3.Error:
                db.close()
                raise
            self._db = db
        return self._db

    def load(self, now: float) -> list[tuple[str, float]]:
        """The nonces still inside their freshness window. Never raises: a missing or
        unreadable file means an empty list (and ``error`` says why)."""
        if not self.path.exists():
            return []
        with self._lock:
            try:
                db = self._conn()
                db.execute("DELETE FROM nonces WHERE forget_at < ?", (now,))
                rows = db.execute("SELECT nonce, forget_at FROM nonces").fetchall()
            except sqlite3.Error as exc:
                self._failed("read", exc)
                return []
        return [(str(n), float(f)) for n, f in rows]

    def record(self, nonce: str, forget_at: float, now: float) -> bool:
        """Commit one accepted nonce; False (and ``error`` set) when the file is unusable."""
        with self._lock:
            try:
                db = self._conn()
                db.execute("BEGIN IMMEDIATE")
                db.execute("INSERT OR REPLACE INTO nonces VALUES (?, ?)", (nonce, forget_at))
                db.execute("DELETE FROM nonces WHERE forget_at < ?", (now,))
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db is not None:
                    try:
                        self._db.close()
                    finally:
                        self._db = None
                self._failed("write", exc)
                return False
        if self.error is not None:
            log.info("command nonce journal %s writable again", self.path)
            self.error = None
        return True

    def _failed(self, what: str, exc: sqlite3.Error) -> None:
        if self.error is None:
            log.error("cannot %s the command nonce journal %s (%s): replay protection is in memory only "
                      "until it can be written again", what, self.path, exc)
        self.error = f"command nonce journal {self.path}: cannot {what} ({exc})"

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
