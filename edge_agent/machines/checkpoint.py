"""Where each machine's baselines are, kept across a clean restart.

A machine model's files hold the detector as it was at the end of its fit rows; scoring moves
its baselines on from there. Without this file a restarted agent would start each machine
from its fit-end state and, after the gap, let the baselines take the current values: a
restart during a fault learnt the fault (``tests/test_machines_e2e.py``: the alarm cleared
42 s after its raise while the relation was still broken, and its restoration raised a new
"current low, flow high").

The agent writes ``{state_dir}/machine_live.json`` (atomic: a temporary file, fsync, rename;
``live_state_file.py``, shared with the series' live state) every
``machines.live_state_every_s`` (default 600 s) and at a clean stop: per machine its model
version, the time of its last row and the detector's ``live_state()``. The periodic write is
for a crash or a power loss, which give no clean stop: started from its fit-end state, a
machine's first row after the gap re-syncs its baselines to the current values, so a crash
during a fault learnt the fault (``tests/test_machines_e2e.py``). At start, after the models
are loaded, each entry whose machine has that same model version is taken back
(``set_live_state`` checks it whole). With periodic writes the file stays: it is the newest
known state, at most one period old, and the first row after it advances the baselines by the
time since its last row, as after any gap (the reasoning of ``series_live.py``). With
``live_state_every_s: 0`` (clean stops only) it is removed once read: it describes one stop,
and a crash later must not bring back that older state. A ``rebaseline`` changes the live state
without a new version: a crash less than one period after it restores the state before it
(the same holds for series). Bounded like every file the agent reads (``safe_load``); a bad
file costs the live state, never the start. Plain JSON, so that a person can read it.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from edge_agent import live_state_file
from edge_agent.machines.machine_set import MachineSet
from edge_agent.safe_load import BadFile

log = logging.getLogger(__name__)

FILE = "machine_live.json"
FORMAT = 1
MAX_BYTES = 64 * 1024 * 1024  # 1000 machines of 64 sensors with their relations: ~10 MB
MAX_DEPTH = 8


def snapshot(ms: MachineSet) -> dict[str, Any]:
    """Every scored machine's live state (on the loop thread: it reads the detectors)."""
    machines: dict[str, Any] = {}
    for mid, m in ms.machines.items():
        model = m.model
        live = getattr(model.detector, "live_state", None) if model is not None else None
        if model is None or live is None or not math.isfinite(m.last_row_ts):
            continue
        machines[mid] = {"version": model.version, "detector": model.detector.name, "last_row_ts": m.last_row_ts, "state": live()}
    return {"format": FORMAT, "machines": machines}


def write(path: Path, doc: dict[str, Any], fsync: bool = True) -> int:
    """Atomically; returns the machines written. Off the loop (file I/O)."""
    try:
        live_state_file.write_json(path, doc, fsync)
    except ValueError:  # a non-finite number slipped in: keep the finite machines only
        ok = {}
        for mid, entry in doc["machines"].items():
            try:
                json.dumps(entry, allow_nan=False)
                ok[mid] = entry
            except ValueError:
                log.warning("machine %r: live state not finite, not kept", mid)
        doc = {**doc, "machines": ok}
        live_state_file.write_json(path, doc, fsync)
    return len(doc["machines"])


def take(path: Path, remove: bool = True) -> tuple[dict[str, Any], list[str]]:
    """The checkpoint's machines (empty when there is none), and what was wrong with it;
    the file is removed either way when ``remove`` (clean stops only: see above), and a bad
    one always. Off the loop (file I/O)."""
    if not path.exists():
        return {}, []
    try:
        doc = live_state_file.read_json(path, kind="machine checkpoint", fmt=FORMAT, key="machines", max_bytes=MAX_BYTES, max_depth=MAX_DEPTH)
        return doc["machines"], []
    except (BadFile, OSError) as exc:
        remove = True  # a bad file is reported once, not at every start
        return {}, [f"machine live state not restored ({exc})"]
    finally:
        if remove:
            try:
                path.unlink()
            except OSError:
                pass


def restore(ms: MachineSet, machines: dict[str, Any]) -> tuple[int, list[str]]:
    """Put each entry back into its machine when the model is the one it was taken from (on
    the loop thread). Returns how many were restored and what was refused."""
    restored, errors = 0, []
    for mid, entry in machines.items():
        m = ms.machines.get(mid)
        if m is None or m.model is None or not isinstance(entry, dict) or entry.get("version") != m.model.version:
            continue  # a machine gone, or a model changed since the stop: its stored state is the right start
        setter = getattr(m.model.detector, "set_live_state", None)
        ts = entry.get("last_row_ts")
        try:
            if setter is None or entry.get("detector") != m.model.detector.name or not isinstance(ts, (int, float)) or not math.isfinite(ts):
                raise ValueError("not this detector's state")
            setter(entry.get("state") or {})
        except ValueError as exc:
            errors.append(f"machine {mid!r}: live state not restored ({exc})")
            continue
        m.last_row_ts = float(ts)
        restored += 1
    return restored, errors
