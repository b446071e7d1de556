"""Each streaming series' detector as it has learned since its fit, kept across restarts.

A series model's files hold the detector as it was at the end of its fit window. A streaming
detector (``robust``, ``adaptive``) moves on from there with every reading: level, trend,
scales, tails, daily profile. Started again from its fit-end state, a series that trends or
cycles finds its model of normal far from the current level: ``robust`` raises its level
channel, freezes its learning (a fault must not be learnt) and holds the alarm until the 7-day
acceptance (issue 13: a trend restarted from its fit state at reading 20,000 scored 10,000 of
the next 10,000 readings anomalous, a daily cycle 9,899; scored without the restart, none).
On a fleet every upgrade, power cycle or systemd restart would flood SCADA with held alarms.

So the agent keeps ``{state_dir}/series_live.npz``: per series its model version, its
detector's name and the detector's ``get_state()`` (JSON params; the arrays in the ``.npz``,
plain numbers, read by ``safe_load`` without pickle, every size bounded first). Written
atomically off the event loop (``live_state_file.py``, shared with the machines' checkpoint)
at a clean stop and every ``series.live_state_every_s`` (default 600 s): a crash or a power
loss gives no clean stop. The snapshot is taken on the loop thread in slices of ``SLICE``
series (a robust ``get_state`` plus the copy of its arrays: ~9 us, so a slice is ~2 ms and
the loop serves readings between slices); encoding and writing are off the loop.

At start, after the models are loaded, each entry whose series has that same active model
version and detector is restored (``from_state``, which checks it; decoded off the loop). A
bad file, or a bad entry, costs that live state (logged, counted in the log line), never the
start. A series whose model changed since (a retrain, a rollback, an S3 pull) starts from its
new model's stored state, which is right for it. Non-streaming detectors (statistical,
isolation_forest) do not change after their fit: nothing of theirs is written.

Unlike the machines' file, this one is not removed once read: written periodically, it is
the newest known state. Restoring a state up to one period old is right: it is the detector's
own learning, from readings it scored, only missing the last few minutes of it (bounded by the
period), and the readings since then are still learnt as they come. A fault that began since
that write is still seen after the restart: the restored model of normal predates it, exactly
as the running detector's did. A fault already under way at the write is frozen out of the
state as it was in the running detector (robust does not learn from readings it alarms on).
Series evicted for the memory budget keep their live state in memory, counted in the budget
(``evicted_live.py``), and get it back when their model is reloaded; the file written here
holds their entries too, and at start the entries of series not held (evicted, or beyond the
budget) go back to that store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent import detectors, live_state_file
from edge_agent.model_store import Model
from edge_agent.safe_load import BadFile

if TYPE_CHECKING:
    from edge_agent.pipeline import Pipeline

log = logging.getLogger(__name__)

FILE = "series_live.npz"
KIND = "series live state"
FORMAT = 1
# A robust series is ~3.1 kB of arrays and ~1.3 kB of JSON: 256 MiB holds ~60,000 series,
# more than the default memory budget (series.max_bytes) holds with their rings. The states kept
# for evicted series (~5.8 kB each in that budget) could pass it with a larger budget: the
# writer leaves out what does not fit (encode), the oldest evicted first, never a file refused whole.
MAX_BYTES = 256 * 1024 * 1024
MAX_DEPTH = 8  # doc -> series -> id -> entry -> params -> a list
SLICE = 200  # series per turn of the loop while taking a snapshot (~2 ms, measured above)
MAX_LOGGED = 20  # bad entries named in the log; the rest are counted

# One series' state as taken on the loop: id, model version, detector name, params, arrays (copies).
Entry = tuple[str, int, str, dict[str, Any], dict[str, np.ndarray]]


def streams(det: Any) -> bool:
    """Only a detector that learns while it scores has a live state to keep."""
    return bool(getattr(type(det), "streaming", False))


def take(series: list[Any]) -> list[Entry]:
    """The live state of these series (on the loop thread: it reads the detectors). The arrays
    are copied: ``get_state`` may hand out views of the detector's own buffers."""
    out: list[Entry] = []
    for s in series:
        model = s.model
        if model is None or not streams(model.detector):
            continue
        params, arrays = model.detector.get_state()
        out.append((s.id, model.version, model.detector.name, params, {k: np.array(v, copy=True) for k, v in arrays.items()}))
    return out


async def snapshot(pipeline: Pipeline, slice_size: int = SLICE) -> list[Entry]:
    """Every scored streaming series, ``slice_size`` series per turn of the event loop, and the
    live state kept for series evicted for the budget (``evicted_live.py``: already copies)."""
    series = list(pipeline.series.values())
    out: list[Entry] = []
    for i in range(0, len(series), slice_size):
        if i:
            await asyncio.sleep(0)  # readings and timers run between slices
        out += take(series[i:i + slice_size])
    held = {e[0] for e in out}
    # Newest first: if the file's bound cuts any (encode), the oldest evicted go.
    out += [e for e in reversed(pipeline.evicted_live.all()) if e[0] not in held]
    return out


def encode(entries: list[Entry], max_bytes: int = MAX_BYTES - 2**20) -> tuple[bytes, dict[str, np.ndarray], int]:
    """The JSON document, the arrays pooled by kind, and the number of series (off the loop).
    An entry with a non-finite parameter is left out (logged): it could not be restored. So are
    the entries past ``max_bytes`` (a file the reader would refuse whole): held series come
    first, then evicted ones newest first (``snapshot``); the memory budget keeps this rare."""
    pools: dict[str, list[np.ndarray]] = {"f8": [], "i8": []}
    sizes = dict.fromkeys(pools, 0)
    parts = []
    total = cut = 0
    for sid, version, name, params, arrays in entries:
        try:
            params_json = json.dumps(params, separators=(",", ":"), allow_nan=False)
        except (ValueError, TypeError) as exc:
            log.warning("series %r: live state not kept (%s)", sid, exc)
            continue
        refs = {}
        flats = []
        at = dict(sizes)
        for key, a in arrays.items():
            pool = "f8" if a.dtype.kind == "f" else "i8"
            flat = np.ascontiguousarray(a, dtype=np.float64 if pool == "f8" else np.int64).ravel()
            refs[key] = [pool, at[pool], list(a.shape)]
            flats.append((pool, flat))
            at[pool] += flat.size
        entry = {"version": version, "detector": name, "arrays": refs}
        part = json.dumps(sid) + ":" + json.dumps(entry, separators=(",", ":"))[:-1] + ',"params":' + params_json + "}"
        size = len(part.encode()) + 1 + sum(8 * f.size for _, f in flats)
        if total + size > max_bytes:
            cut += 1
            continue
        total += size
        for pool, flat in flats:
            pools[pool].append(flat)
        sizes = at
        parts.append(part)
    if cut:
        log.warning("the live state of %d series not written: the file would pass its bound of %d bytes", cut, max_bytes)
    head = {"kind": KIND, "format": FORMAT, "written_at": time.time()}
    doc = json.dumps(head, separators=(",", ":"))[:-1] + ',"series":{' + ",".join(parts) + "}}"
    arrays_out = {k: np.concatenate(v) if v else np.zeros(0, dtype=np.float64 if k == "f8" else np.int64) for k, v in pools.items()}
    return doc.encode(), arrays_out, len(parts)


def write(path: Path, entries: list[Entry], fsync: bool = True, max_bytes: int = MAX_BYTES - 2**20) -> int:
    """Atomically (off the loop: encoding and file I/O). Returns the number of series written."""
    doc, arrays, n = encode(entries, max_bytes)
    live_state_file.write_npz(path, doc, arrays, fsync)
    return n


def _finite(params: dict[str, Any]) -> None:
    """JSON as Python reads it accepts NaN and Infinity; no detector state written holds them."""
    for key, v in params.items():
        for x in v if isinstance(v, list) else (v,):
            if isinstance(x, float) and not math.isfinite(x):
                raise ValueError(f"params {key!r}: not finite")


def _arrays(entry: dict[str, Any], pools: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    refs = entry.get("arrays")
    if not isinstance(refs, dict):
        raise ValueError("no arrays")
    out = {}
    for key, ref in refs.items():
        if not (isinstance(ref, list) and len(ref) == 3 and ref[0] in pools and isinstance(ref[1], int) and isinstance(ref[2], list)
                and all(isinstance(n, int) and n >= 0 for n in ref[2])):
            raise ValueError(f"array {key!r}: bad reference")
        pool, start = pools[ref[0]], ref[1]
        count = math.prod(ref[2])
        if not 0 <= start <= start + count <= pool.size:
            raise ValueError(f"array {key!r}: outside the file's arrays")
        out[key] = pool[start:start + count].reshape(ref[2]).copy()
    return out


def revive(model: Model, entry: Entry) -> Model:
    """``model`` (an evicted series' model, just reloaded) with the detector of the live state it
    was evicted with, when that state is of this same model version and detector: checked as
    at start-up (``from_state``). Off the loop. ``ValueError`` (any failure) costs the state."""
    _, version, name, params, arrays = entry
    if (version, name) != (model.version, model.detector.name):
        raise ValueError(f"of model v{version} ({name}), the model reloaded is v{model.version} ({model.detector.name})")
    try:
        _finite(params)
        det = detectors.detector_class(name).from_state(params, arrays)
    except Exception as exc:  # from_state checks the state; any failure costs this state only
        raise ValueError(f"{type(exc).__name__}: {str(exc)[:120]}") from exc
    if not streams(det):
        raise ValueError(f"detector {name!r} does not stream")
    return Model(det, model.version, model.meta)


def _raw(sid: str, entry: Any, pools: dict[str, np.ndarray]) -> Entry:
    """An entry of a series not held (evicted when the file was written, or beyond the budget
    at start): decoded and bounded now, checked against its model when that is reloaded."""
    if not isinstance(entry, dict) or not isinstance(entry.get("version"), int) or not isinstance(entry.get("detector"), str):
        raise ValueError("no model version or detector")
    params = entry.get("params")
    if not isinstance(params, dict):
        raise ValueError("no params")
    _finite(params)
    return sid, entry["version"], entry["detector"], params, _arrays(entry, pools)


def read(path: Path, versions: dict[str, tuple[int, str]], evicted: frozenset[str] | set[str] = frozenset()
         ) -> tuple[dict[str, Any], list[str], int, list[Entry]]:
    """The restorable detectors of the file: ``{series id: detector}`` for the series whose
    active model (``versions``: id -> (version, detector name)) is the one the state was taken
    from; the problems found (file or entries); how many entries were of another model; and the
    entries of the ``evicted`` series (held with their model on disk only), to keep until their
    readings return (``evicted_live.py``). Off the loop (file I/O, decoding, ``from_state``)."""
    if not path.exists():
        return {}, [], 0, []
    try:
        doc, members = live_state_file.read_npz(path, kind=KIND, fmt=FORMAT, key="series", max_bytes=MAX_BYTES, max_depth=MAX_DEPTH)
        pools = {k: members[k] for k in ("f8", "i8") if k in members and members[k].ndim == 1}
    except (BadFile, OSError) as exc:
        return {}, [f"series live state not restored ({exc})"], 0, []
    out: dict[str, Any] = {}
    errors: list[str] = []
    kept: list[Entry] = []
    other = 0
    for sid, entry in doc["series"].items():
        active = versions.get(sid)
        if active is None:
            if sid in evicted:
                try:
                    kept.append(_raw(sid, entry, pools))
                except ValueError as exc:
                    errors.append(f"series {sid!r}: live state not restored ({exc})")
            continue  # otherwise a series gone, not loaded, or not streaming any more
        if not isinstance(entry, dict):
            errors.append(f"series {sid!r}: live state not restored (not a mapping)")
            continue
        if entry.get("version") != active[0] or entry.get("detector") != active[1]:
            other += 1  # a model changed since the write: its stored state is the right start
            continue
        try:
            cls = detectors.detector_class(active[1])
            params = entry.get("params")
            if not isinstance(params, dict):
                raise ValueError("no params")
            _finite(params)
            det = cls.from_state(params, _arrays(entry, pools))
            if not streams(det):
                raise ValueError(f"detector {active[1]!r} does not stream")
        except Exception as exc:  # from_state checks the state; any failure costs this series only
            errors.append(f"series {sid!r}: live state not restored ({type(exc).__name__}: {str(exc)[:120]})")
            continue
        out[sid] = det
    age = time.time() - doc["written_at"] if isinstance(doc.get("written_at"), (int, float)) else math.nan
    log.info("series live state file %s: %d entries, written %.0f s ago", path, len(doc["series"]), age)
    return out, errors, other, kept


def versions(pipeline: Pipeline) -> dict[str, tuple[int, str]]:
    """Each held series' active model version and detector (on the loop)."""
    return {sid: (s.model.version, s.model.detector.name) for sid, s in pipeline.series.items()
            if s.model is not None and streams(s.model.detector)}


def restore(pipeline: Pipeline, restored: dict[str, Any], expected: dict[str, tuple[int, str]]) -> int:
    """Put each restored detector in place when its series still has the model it was read
    for (on the loop thread). Returns how many were."""
    n = 0
    for sid, det in restored.items():
        s = pipeline.series.get(sid)
        if s is None or s.model is None or (s.model.version, s.model.detector.name) != expected.get(sid):
            continue  # evicted or given another model while the file was read
        try:
            pipeline.activate(s, Model(det, s.model.version, s.model.meta))
        except ValueError:  # disabled by its rules since
            continue
        n += 1
    return n


class Keeper:
    """The agent's side: restore at start, write every ``every_s`` and at a clean stop."""

    def __init__(self, pipeline: Pipeline, path: Path, every_s: float, loop: asyncio.AbstractEventLoop, executor: Any) -> None:
        self.pipeline, self.path, self.every_s = pipeline, path, every_s
        self.loop, self.executor = loop, executor
        self.lock = asyncio.Lock()  # one write at a time: the periodic one and the stop's
        self.stopped = False
        self.n_written = 0
        self.last_error: str | None = None

    async def restore(self) -> list[str]:
        """After the models are adopted, before ingest subscribes. Returns the problems found."""
        expected = versions(self.pipeline)
        evicted = set(self.pipeline.evicted_models)
        restored, errors, other, kept = await self.loop.run_in_executor(self.executor, read, self.path, expected, evicted)
        n = restore(self.pipeline, restored, expected)
        for entry in kept:  # beyond the budget at start: kept until their readings return
            if entry[0] in self.pipeline.evicted_models and entry[0] not in self.pipeline.series:
                self.pipeline.evicted_live.put(entry)
        if kept:
            log.info("kept the live state of %d series not held (evicted for the series budget)", len(kept))
        for err in errors[:MAX_LOGGED]:
            log.error("%s", err)
        if len(errors) > MAX_LOGGED:
            log.error("... and %d more series whose live state was not restored", len(errors) - MAX_LOGGED)
        if n or errors or other:
            log.info("restored the live state of %d series (%d of another model version since, %d refused)", n, other, len(errors))
        return errors

    async def save(self, why: str) -> int:
        async with self.lock:
            t0 = time.perf_counter()
            entries = await snapshot(self.pipeline)
            if not entries and not self.path.exists():
                return 0  # no streaming series: no file to write, none to empty
            try:
                n = await self.loop.run_in_executor(self.executor, write, self.path, entries)
            except (OSError, ValueError) as exc:
                self.last_error = str(exc)
                log.error("cannot keep the series' live state (%s; a restart starts them from their stored models): %s", why, exc)
                return 0
            self.last_error = None
            self.n_written += 1
            log.info("kept the live state of %d series (%s, %.0f ms)", n, why, 1e3 * (time.perf_counter() - t0))
            return n

    async def run(self) -> None:
        """Periodic writes (``series.live_state_every_s``; 0: only at a clean stop)."""
        if self.every_s <= 0:
            return
        while not self.stopped:
            await asyncio.sleep(self.every_s)
            if not self.stopped:
                await self.save("periodic")

    async def stop(self) -> None:
        """At a clean stop, once ingest has stopped: the last write."""
        self.stopped = True
        await self.save("stop")
