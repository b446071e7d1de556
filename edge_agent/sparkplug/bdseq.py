"""The edge node's bdSeq (birth/death sequence number), kept in the state directory.

A host application pairs an NDEATH with the NBIRTH of the same bdSeq; a death will of an
older session that the broker delivers late must not carry the bdSeq of the current one. So
the number goes on across agent restarts: the file holds the next number to use, and is
written (atomically, fsynced, off the event loop) *before* the CONNECT that uses the
current one, so even a crash right after connecting cannot make the next start reuse it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from edge_agent.model_store import atomic_write

log = logging.getLogger(__name__)

FILE_NAME = "sparkplug_bdseq.json"


class BdSeqStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.error: str | None = None

    def load(self) -> int:
        """The next bdSeq to use: 0 for a new state directory (tck-id-topics-nbirth-bdseq-increment)."""
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            value = doc["next"]
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
                raise ValueError(f"bdSeq {value!r} out of range")
            return value
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("cannot read %s (%s): starting bdSeq at 0", self.path, exc)
            return 0

    def save(self, next_value: int) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, json.dumps({"next": next_value}).encode())
            self.error = None
        except OSError as exc:
            self.error = f"cannot write {self.path}: {exc}"
            log.error("sparkplug: %s (bdSeq continues in memory)", self.error)
