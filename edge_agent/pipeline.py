"""The one streaming code path: a reading in, a score, an alarm decision out.

Live ingest (``agent.py``) and offline evaluation (``evaluation/evaluate.py``) both call
``Pipeline.process``; they differ only in the trainer they pass. Live ingest fits in a
worker process so the event loop never waits on a fit, a disk write or the GIL a fit holds;
evaluation fits inline so results are deterministic.

Per reading (readings a broker redelivers were already refused by ingest, per topic: see
``replay.py``):
1. append to the series' ring buffer;
2. no model yet: once ``min_train_samples`` readings are held, ask the trainer for a fit;
   no alarm is raised while learning. Readings that arrive while that first fit runs are
   kept (``backlog``) and scored, in order, by the new model the moment it is installed,
   before any later reading: every reading after the training window is scored once;
3. otherwise score it and run the series' alarm state (``alarm_state.py``): raised once when
   the score reaches the threshold, held while it stays above ``hold_ratio`` x threshold,
   cleared after ``clear_after`` readings below that, or accepted as the new normal after
   ``accept_after_s``. A raised alarm carries the detector's explanation (``explain``);
4. the retrain policy may ask for a new version (every N readings, or score drift).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edge_agent import alarm_message, checkpoints, detectors
from edge_agent.alarm_state import ACCEPTED, NAMES, RAISED, AlarmPolicy
from edge_agent.config import AgentConfig
from edge_agent.detectors.base import Explanation
from edge_agent.fitting import FitRequest, fit_and_save, init_worker, train, warm_up
from edge_agent.model_store import Model, ModelStore
from edge_agent.series import AlarmMark, Series, SeriesBytes
from edge_agent.series_budget import CLASSES, Evictor
from edge_agent.series_settings import SettingsSource
from edge_agent.stats import LatencyRecorder

log = logging.getLogger(__name__)


@dataclass(slots=True)
class AlarmEvent:
    alert_id: str
    series: str
    state: str  # "raised" | "cleared" | "accepted" (held so long it was taken as the new normal)
    ts: float
    value: float
    score: float
    threshold: float
    detector: str
    version: int
    raised_alert_id: str | None = None  # cleared / accepted: the alarm this one ends
    # raised: why (the detector's explanation, when it gives one)
    kind: str | None = None  # detectors.base: spike, level_shift, drift, variance, stuck, out_of_range, shape
    direction: str | None = None  # "up" | "down" | None
    expected_low: float | None = None  # the range expected at that moment
    expected_high: float | None = None
    message: str = ""  # one line an operator reads without a plot
    held_s: float | None = None  # cleared / accepted: reading time since the raise
    peak_score: float | None = None  # cleared / accepted: highest score / threshold while raised
    seq: int = 0  # the series' alarm sequence number: 1 for its first alarm, then 2, ...
    # Which condition (limits.py): the learned model ("model"), or an engineering limit
    # ("limit", with ``limit`` hihi / hi / lo / lolo and its ``setpoint``). Each is its own alarm.
    source: str = "model"
    limit: str | None = None
    setpoint: float | None = None
    priority: int = 2  # priority.py: 1 low, 2 medium, 3 high, 4 critical
    unit: str | None = None

    @property
    def condition(self) -> str:
        """The alarm condition of its series this event belongs to: "model", or the limit."""
        return self.limit or "model"


def alert_id(gateway_id: str, series: str, state: str, seq: int, raised_ts: float) -> str:
    """One id per alarm edge, the same whenever that edge is sent again.

    ``seq`` numbers a series' alarms (persisted in the outbox's ``alarm_seq`` table, so a
    restart does not reuse it) and ``raised_ts`` is the timestamp of the reading that raised
    the alarm; a raise and its clear share both. An id hashed from the reading timestamp alone
    gave two alarms within one device timestamp (coarse clocks, a json_batch stamped with its
    receive time) one id, and a SCADA deduplicating on it dropped the second alarm and its
    clear. With the timestamp in as well, a sequence number lost with a degraded outbox still
    cannot collide with an earlier alarm's id unless it was raised by the very same reading.
    """
    raw = f"{gateway_id}\x1f{series}\x1f{state}\x1f{seq}\x1f{raised_ts!r}".encode("utf-8", "surrogateescape")
    return hashlib.blake2b(raw, digest_size=12).hexdigest()


class TooManySeries(Exception):
    pass


class Trainer(Protocol):
    def submit(self, pipeline: Pipeline, request: FitRequest, done: Callable[[Model | None, BaseException | None], None] | None = None) -> None: ...


class InlineTrainer:
    """Fits on the caller's thread, at the reading that asked. Used by offline evaluation."""

    def submit(self, pipeline: Pipeline, request: FitRequest, done: Callable[[Model | None, BaseException | None], None] | None = None) -> None:
        try:
            model = pipeline.fit_model(request)
        except Exception as exc:  # a fit that fails leaves the series as it was
            pipeline.fit_failed(request, exc)
            if done:
                done(None, exc)
            return
        pipeline.install(request, model)
        if done:
            done(model, None)


WORKER_START_GRACE_S = 30.0


class ProcessTrainer:
    """Fits in a worker process; the finished model is swapped in on the event loop thread.

    One worker by default: fits queue behind each other, and version numbers are allocated
    under a file lock in the store anyway. The pool starts on the first fit.

    Requests wait in a local queue and at most ``2 x workers`` are handed to the pool at a
    time. Handing it a whole 100-series ``fit`` command at once made the loop pickle and
    queue 100 requests in one go (the worker can only take one at a time anyway), and the
    readings behind that burst waited.

    A fit that runs longer than ``timeout_s`` is reported failed (``FitTimeout``) and its
    worker killed and replaced: every other series' fit waits behind it otherwise. The
    clock of a request starts when it is among the oldest ``workers`` handed to the pool
    (the pool runs them in order), not while it waits behind another. Requests handed to
    the killed worker alongside it go back to the head of the queue. The first request of
    a new pool (started by ``warm()`` or by that request) gets ``WORKER_START_GRACE_S`` more (starting a worker and importing numpy
    takes seconds on a loaded gateway). Workers die with the agent (``workers.die_with_parent``).
    """

    def __init__(self, loop: Any, store: ModelStore | None, workers: int = 1, timeout_s: float | None = None) -> None:
        self.loop = loop
        self.store = store
        self.workers = workers
        self.max_inflight = 2 * workers
        self.timeout_s = timeout_s
        self.pool: Executor | None = None
        self.queue: deque[tuple[Pipeline, FitRequest, Callable[[Model | None, BaseException | None], None] | None]] = deque()
        self.handed: list[_Handed] = []  # requests in the pool, oldest first
        self.timeouts = 0
        self._killed: list[Executor] = []  # pools whose workers we killed (their failures are ours)
        self._grace_pending = False  # the next request is a new pool's first (warm() may have made it)

    @property
    def inflight(self) -> int:
        return len(self.handed)

    @property
    def running(self) -> int:
        """Fits queued or in a worker."""
        return self.inflight + len(self.queue)

    def _pool(self) -> Executor:
        if self.pool is None:
            import multiprocessing
            import os
            from concurrent.futures import ProcessPoolExecutor

            # spawn, not fork: the agent has threads, and a forked child could inherit a held lock.
            self.pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=init_worker, initargs=(os.getpid(),),
            )
            self._grace_pending = True  # its first fit also waits for the worker to start
        return self.pool

    def submit(self, pipeline: Pipeline, request: FitRequest, done: Callable[[Model | None, BaseException | None], None] | None = None) -> None:
        self.queue.append((pipeline, request, done))
        self._start_next()

    def warm(self, detector: str | None = None) -> None:
        """Start the worker now, once: called when a new series starts learning, so that its
        first fit finds a worker ready instead of waiting for one to spawn and import.
        Measured on this 2-core machine (3 runs each), first model installed after the request:
        robust 427-614 ms cold, 23-26 ms warm; isolation forest 2.0-5.8 s cold, 0.7-0.9 s warm
        (its fit itself). Readings arriving meanwhile wait in the backlog either way."""
        if self.pool is not None:
            return
        try:
            fut = self._pool().submit(warm_up, detector)
        except Exception:  # pool cannot start: the first fit will say why
            self.pool = None
            return
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # nothing to wait for

    def _start_next(self) -> None:
        while self.queue and self.inflight < self.max_inflight:
            self._start(*self.queue.popleft())
        self._arm_timers()

    def _arm_timers(self) -> None:
        if not self.timeout_s:
            return
        for h in self.handed[:self.workers]:
            if h.timer is None:
                h.timer = self.loop.call_later(self.timeout_s + h.grace, self._timed_out, h)

    def _start(self, pipeline: Pipeline, request: FitRequest, done: Callable[[Model | None, BaseException | None], None] | None) -> None:
        # The requester's own store (None: in memory): the agent's MachineSet shares this
        # trainer (one worker process for every fit) and saves into the machine store.
        store = pipeline.store if hasattr(pipeline, "store") else self.store
        root = str(store.root) if store is not None else None
        fsync = store.fsync if store is not None else False
        try:
            pool = self._pool()
            fut = self.loop.run_in_executor(pool, fit_and_save, root, fsync, request)
        except Exception as exc:  # pool broken or shut down
            self.pool = None
            pipeline.fit_failed(request, exc)
            if done:
                done(None, exc)
            return
        h = _Handed(fut, pool, pipeline, request, done, grace=WORKER_START_GRACE_S if self._grace_pending else 0.0)
        self._grace_pending = False
        self.handed.append(h)
        fut.add_done_callback(lambda f: self._finished(h, f))

    def _finished(self, h: _Handed, f: Any) -> None:
        if h.timer is not None:
            h.timer.cancel()
        self.handed.remove(h)
        if h.timed_out:
            self._start_next()  # already reported failed, and its worker replaced
            return
        pipeline, request, done = h.pipeline, h.request, h.done
        model: Model | None = None
        exc = f.exception() if not f.cancelled() else RuntimeError("fit cancelled")
        if exc is not None and h.pool in self._killed:
            # Its worker was killed for another request's timeout: not this one's fault.
            self.queue.appendleft((pipeline, request, done))
            self._start_next()
            return
        if exc is None:
            try:
                model = pipeline.model_from_worker(request, *f.result())
            except Exception as rebuild_error:
                exc = rebuild_error
        if exc is not None:
            if "BrokenProcessPool" in type(exc).__name__:
                self.pool = None  # the worker died (OOM killer?): a new one next time
            pipeline.fit_failed(request, exc)
        else:
            pipeline.install(request, model)  # type: ignore[arg-type]
        if done:
            done(model, exc)
        self._start_next()

    def _timed_out(self, h: _Handed) -> None:
        if h.fut.done():
            return
        from edge_agent.workers import kill_pool_workers

        h.timed_out = True
        self.timeouts += 1
        req = h.request  # a FitRequest, or a machines MachineFitRequest (same trainer)
        what = getattr(req, "series_id", None) or f"machine {getattr(req, 'machine_id', '?')}"
        size = len(getattr(req, "values", getattr(req, "rows", ())))
        exc = FitTimeout(f"fit of {what!r} ({req.detector}, {size} samples) took longer than "
                         f"detector.fit_timeout_s={self.timeout_s:g} s; its worker was replaced")
        log.error("%s", exc)
        self._killed.append(h.pool)
        del self._killed[:-4]
        kill_pool_workers(h.pool)
        h.pool.shutdown(wait=False, cancel_futures=True)
        if self.pool is h.pool:
            self.pool = None
        h.pipeline.fit_failed(h.request, exc)
        if h.done:
            h.done(None, exc)

    def close(self) -> None:
        while self.queue:
            pipeline, request, done = self.queue.popleft()
            pipeline.fit_failed(request, RuntimeError("agent shutting down"))
            if done:
                done(None, RuntimeError("agent shutting down"))
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)


@dataclass(slots=True, eq=False)
class _Handed:
    """A fit request handed to the worker pool."""

    fut: Any
    pool: Executor
    pipeline: Pipeline
    request: FitRequest
    done: Callable[[Model | None, BaseException | None], None] | None
    grace: float = 0.0
    timer: Any = None
    timed_out: bool = False


class FitTimeout(Exception):
    """A fit ran longer than ``detector.fit_timeout_s``; its worker was killed."""


class Pipeline:
    def __init__(
        self,
        cfg: AgentConfig,
        trainer: Trainer,
        on_alarm: Callable[[AlarmEvent], None],
        store: ModelStore | None = None,
        on_model: Callable[[Series, Model, FitRequest], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.gateway_id = cfg.gateway_id
        self.trainer = trainer
        self.on_alarm = on_alarm
        self.on_model = on_model
        self.store = store
        self.series: dict[str, Series] = {}
        self.buffer_size = cfg.series.buffer_size
        self.max_series = cfg.series.max_series
        self.max_bytes = cfg.series.max_bytes
        self.idle_s = cfg.series.idle_s
        self.series_bytes = SeriesBytes()
        # Seconds (monotonic in the agent, which calls tick() every second). Which series are
        # idle is found by a sweep in tick(), not noted per reading: a clock store on the
        # per-reading path measured +30-45 ns of ~800.
        self.clock = 0.0
        self._sweep: list[Series] = []
        self._sweep_pos = 0
        self.evictor = Evictor(cfg.series.idle_s, store is not None)
        # Series evicted with a model on disk: their model is reloaded when readings return.
        self.evicted_models: set[str] = set()
        # How a returning series gets its model back: the agent loads it off the loop; without
        # a restorer (offline use, tests) it is loaded here.
        self.restorer: Callable[[Series], None] | None = None
        self.on_evict: list[Callable[[Series], None]] = []
        # Told when a fit fails on the model store itself (OSError: full, read-only, gone).
        self.on_store_error: Callable[[str], None] | None = None
        self.n_evicted = dict.fromkeys(CLASSES, 0)
        self.n_restored = 0
        # series id -> its last alarm sequence number (kept for series evicted since; the agent
        # restores it from the outbox at start).
        self.alarm_seqs: dict[str, int] = {}
        self.last_refused: float | None = None  # clock of the last too_many_series refusal
        self.min_train = cfg.detector.min_train_samples
        self.policy = AlarmPolicy.from_config(cfg.alarms)
        # Per-series settings from the rules (series_settings.py), resolved once per series.
        self.settings = SettingsSource(cfg)
        # Topic fields of series about to be created by a source that knows them better than
        # the series id does (Sparkplug births): taken at creation. Bounded.
        self.pending_fields: dict[str, dict[str, str]] = {}
        # A streaming detector's state is copied every this many readings (checkpoints.py).
        self.checkpoint_every = max(16, cfg.series.buffer_size // 2)
        # Readings that arrive while a series' first fit runs, scored when it is installed.
        self.backlog: dict[str, deque[tuple[float, float]]] = {}
        self.retrain_every = cfg.detector.retrain.every_n
        self.drift_on = cfg.detector.retrain.on_drift
        self.drift_window = cfg.detector.retrain.drift_window
        self.drift_ratio = cfg.detector.retrain.drift_ratio
        self.retrain_on = bool(self.retrain_every or self.drift_on)
        # Validate the configured detector once, up front: a bad name or param is a config
        # error at start, not a failed fit for every series later.
        detectors.create(cfg.detector.name, cfg.detector.params)
        self.score_latency = LatencyRecorder()
        self.fit_latency = LatencyRecorder()
        self.n_scored = 0
        self.n_raised = 0
        self.n_limit_raised = 0  # of n_raised: engineering limits
        self.n_cleared = 0
        self.n_accepted = 0
        self.n_backlog_scored = 0
        self.n_backlog_dropped = 0
        self.n_models_trained = 0
        self.n_fit_failed = 0
        self.n_series_refused = 0
        self.last_fit_error: str | None = None

    # ---- series ------------------------------------------------------------------------
    def get_or_create(self, series_id: str, fields: dict[str, str] | None = None) -> Series:
        s = self.series.get(series_id)
        if s is None:
            if len(self.series) >= self.max_series or self.series_bytes.bytes >= self.max_bytes:
                self.make_room(1)
            if fields is None and self.pending_fields:
                fields = self.pending_fields.pop(series_id, None)
            settings = self.settings.for_series(series_id, fields)
            s = self.series[series_id] = Series(series_id, self.buffer_size, self.series_bytes, settings)
            s.seen = self.clock
            self.evictor.created(s)
            s.alarm_seq = self.alarm_seqs.get(series_id, 0)
            if series_id in self.evicted_models:
                self._restore(s)
        return s

    def settle(self, series_id: str, fields: dict[str, str]) -> None:
        """A reading of ``series_id`` came with its topic's ``fields`` (a new route): a series
        made without them (at start, from a stored model or an open alarm) whose rules needed
        them is resolved again. Not per reading: only on a route's first reading."""
        s = self.series.get(series_id)
        if s is None or not s.settings.undecided or s.n_readings:
            return
        settings = self.settings.for_series(series_id, fields)
        if settings is not s.settings:
            self.apply(s, settings)

    def apply(self, s: Series, settings: Any) -> None:
        """Give ``s`` new settings (a series that had none for want of its topic fields)."""
        from edge_agent.limits import LimitSpec, LimitState

        s.settings = settings
        s.limits = LimitState(LimitSpec.of(settings.limits)) if settings.limits is not None and settings.enabled else None
        if not settings.enabled and s.model is not None:
            s.model = None
            s.changes += 1

    def note_fields(self, series_id: str, fields: dict[str, str]) -> None:
        """Fields for a series not created yet (a Sparkplug birth declares its metrics)."""
        if series_id in self.series:
            self.settle(series_id, fields)
            return
        if len(self.pending_fields) >= 200_000:
            self.pending_fields.clear()
        self.pending_fields[series_id] = fields

    def over_budget(self) -> bool:
        return len(self.series) > self.max_series or self.series_bytes.bytes > self.max_bytes

    def make_room(self, n: int = 0) -> int:
        """Evict series (see series_budget.py) until ``n`` more fit in the budget, with some
        slack; returns how many went. Raises TooManySeries when ``n`` cannot fit."""
        need_count = len(self.series) + n - self.max_series
        need_bytes = self.series_bytes.bytes - self.max_bytes
        if need_count <= 0 and need_bytes < 0:
            return 0
        # A little more than needed, so that a flood of new topics evicts in batches.
        count = need_count + (self.max_series // 100 if n else 0)
        nbytes = need_bytes + (self.max_bytes // 100 if n else 0)
        evicted = freed = 0
        for cls, s in self.evictor.victims(self.series, self.clock, count, nbytes):
            freed += s.nbytes
            self.evict(s, CLASSES[cls])
            evicted += 1
            if evicted >= count and freed >= nbytes:
                break
        if n and (len(self.series) + n > self.max_series or self.series_bytes.bytes >= self.max_bytes):
            self.n_series_refused += 1
            self.last_refused = self.clock
            raise TooManySeries(
                f"series budget full ({len(self.series)} of series.max_series {self.max_series}, "
                f"{self.series_bytes.bytes} of series.max_bytes {self.max_bytes}) and no series to evict"
            )
        return evicted

    def evict(self, s: Series, why: str) -> None:
        if self.series.pop(s.id, None) is None:
            return
        s.release()
        self.evictor.forget(s.id)
        if s.model is not None:
            self.evicted_models.add(s.id)
        self.n_evicted[why] = self.n_evicted.get(why, 0) + 1
        for hook in self.on_evict:
            hook(s)

    def _restore(self, s: Series) -> None:
        """A series evicted with its model is back: reload the model before scoring it. Until
        then its readings fill the ring and are not scored (fit_pending keeps it from learning)."""
        self.evicted_models.discard(s.id)
        s.fit_pending = True
        self.backlog[s.id] = deque(maxlen=self.buffer_size)  # scored once the model is back
        if self.restorer is not None:
            self.restorer(s)
            return
        model = None
        if self.store is not None:
            try:
                model, _ = self.store.load_active(s.id)
            except Exception as exc:  # a bad file costs this series its model, nothing more
                log.error("series %r: cannot reload its model: %r", s.id, exc)
        self.restored(s, model)

    def restored(self, s: Series, model: Model | None) -> None:
        """The reload of ``_restore`` finished (on the loop thread)."""
        backlog = self.backlog.pop(s.id, None)
        s.fit_pending = False
        if model is not None and s.model is None and self.series.get(s.id) is s and s.settings.enabled:
            s.model = model
            s.changes += 1
            checkpoints.take(s, model.detector, model.version, s.n_readings - len(backlog or ()))
            self.n_restored += 1
            if backlog:  # readings that came during the reload, in order
                self.n_backlog_scored += len(backlog)
                values, ts = zip(*backlog, strict=True)
                self._score_in_order(s, model, list(values), list(ts))

    def tick(self, now: float) -> None:
        """Advance the clock eviction ranks by (the agent: monotonic seconds, every second), and
        sweep a tenth of the series: one whose reading count moved since its last sweep was seen
        now. A series is thus "seen" at most ~10 ticks after its last reading (idleness errs on
        the late side), and series_budget checks the count again before it calls one idle."""
        self.clock = now
        if self._sweep_pos >= len(self._sweep):
            self._sweep = list(self.series.values())
            self._sweep_pos = 0
        end = self._sweep_pos + max(1000, len(self._sweep) // 10)
        swept = self.evictor.swept
        for s in self._sweep[self._sweep_pos:end]:
            n = s.n_readings
            if n != s.seen_n:
                s.seen_n = n
                s.seen = now
            if self.series.get(s.id) is s:
                swept(s, now)
        self._sweep_pos = end
        if end >= len(self._sweep):
            self.evictor.sweep_done()

    def adopt(self, series_id: str, model: Model) -> Series | None:
        """Attach a model loaded from the store at start-up. Models beyond the budget are not
        held: they load when their series' readings come (returns None for those)."""
        if series_id not in self.series and (len(self.series) >= self.max_series or self.series_bytes.bytes >= self.max_bytes):
            self.evicted_models.add(series_id)
            return None
        s = self.get_or_create(series_id)
        if s.settings.enabled:
            s.model = model
            checkpoints.take(s, model.detector, model.version, s.n_readings)
        return s

    def activate(self, s: Series, model: Model) -> None:
        """Put ``model`` to use for ``s`` now (a rollback, a model pulled from S3)."""
        if not s.settings.enabled:
            raise ValueError(f"series {s.id!r} is disabled by its rules (enabled: false)")
        s.model = model
        s.changes += 1
        checkpoints.take(s, model.detector, model.version, s.n_readings)

    # ---- the hot path --------------------------------------------------------------------
    def process(self, series_id: str, value: float, ts: float) -> None:
        s = self.series.get(series_id)
        if s is None:
            s = self.get_or_create(series_id)
        s.append(value, ts)
        lim = s.limits
        if lim is not None and not lim.lo_edge < value < lim.hi_edge:
            self._limit(s, lim, value, ts)  # engineering limits: beside the model, while learning too
        model = s.model
        if model is None:
            self._learning(s, value, ts)
            return
        det = model.detector
        if s.n_readings & 7:
            score = det.score_one(value, ts)
        else:
            # Timing every reading would cost as much as scoring it; every 8th is plenty
            # for the latency summary and histogram. The plot's checkpoints are taken here too.
            if checkpoints.due(s, self.checkpoint_every):
                checkpoints.take(s, det, model.version, s.n_readings - 1)
            t0 = time.perf_counter()
            score = det.score_one(value, ts)
            self.score_latency.observe(time.perf_counter() - t0)
        if score >= det.threshold or s.alarm.active or self.retrain_on:
            self._decide(s, model, value, ts, score)
        else:  # the common case: a normal reading and no alarm raised
            s.n_scored += 1
            self.n_scored += 1
            s.last_score = score

    def _learning(self, s: Series, value: float, ts: float) -> None:
        if s.fit_pending:
            backlog = self.backlog.get(s.id)
            if backlog is not None:
                if len(backlog) == backlog.maxlen:
                    self.n_backlog_dropped += 1
                backlog.append((value, ts))
        elif s.count >= s.settings.min_train and s.n_readings >= s.next_fit_at:
            if s.settings.enabled:  # a disabled series keeps its readings (plots), nothing more
                self.request_fit(s, reason="initial")
        elif s.n_readings == 1 and s.settings.enabled:
            warm = getattr(self.trainer, "warm", None)
            if warm is not None:
                warm(s.settings.detector)  # a new series: have a fit worker ready by the time it has learned

    def process_batch(self, series_id: str, values: np.ndarray, ts: np.ndarray) -> None:
        s = self.series.get(series_id)
        if s is None:
            s = self.get_or_create(series_id)
        self._process_batch(s, values, ts)

    def _process_batch(self, s: Series, values: np.ndarray, ts: np.ndarray) -> None:
        lim = s.limits
        if lim is not None:
            for v, t in zip(values.tolist(), ts.tolist(), strict=True):
                if not lim.lo_edge < v < lim.hi_edge:
                    self._limit(s, lim, v, t)
        model = s.model
        if model is None:
            if not s.settings.enabled:
                s.append_many(values, ts)
                return
            # Readings up to the training size only fill the buffer; the rest are scored once
            # a model exists, which for an inline trainer is immediately.
            min_train = s.settings.min_train
            need = max(0, min_train - s.count)
            head = min(need, values.shape[0])
            if head:
                s.append_many(values[:head], ts[:head])
            if s.count >= min_train and not s.fit_pending and s.n_readings >= s.next_fit_at:
                self.request_fit(s, reason="initial")
            if head == values.shape[0]:
                return
            values, ts = values[head:], ts[head:]
            model = s.model
            if model is None:
                s.append_many(values, ts)
                backlog = self.backlog.get(s.id) if s.fit_pending else None
                if backlog is not None:
                    room = backlog.maxlen - len(backlog) if backlog.maxlen else values.shape[0]
                    self.n_backlog_dropped += max(0, values.shape[0] - room)
                    backlog.extend(zip(values.tolist(), ts.tolist(), strict=True))
                return
        s.append_many(values, ts)
        det = model.detector
        if checkpoints.due(s, self.checkpoint_every):
            checkpoints.take(s, det, model.version, s.n_readings - values.shape[0])
        if getattr(det, "streaming", False):
            # The explanation of a raise describes the reading just scored: one at a time.
            t0 = time.perf_counter()
            self._score_in_order(s, model, values.tolist(), ts.tolist())
            self.score_latency.observe((time.perf_counter() - t0) / max(1, values.shape[0]))
            return
        t0 = time.perf_counter()
        scores = det.score_many(values, ts)
        self.score_latency.observe((time.perf_counter() - t0) / max(1, values.shape[0]))
        anomalous = scores >= det.threshold
        if not s.alarm.active and not anomalous.any() and not self.retrain_on:
            # The common case: a quiet batch changes nothing but counters.
            n = int(values.shape[0])
            s.n_scored += n
            self.n_scored += n
            s.last_score = float(scores[-1])
            return
        for i in range(values.shape[0]):
            self._decide(s, model, float(values[i]), float(ts[i]), float(scores[i]))

    def _score_in_order(self, s: Series, model: Model, values: list[float], ts: list[float]) -> None:
        """Score readings already in the ring, one by one, as ``process`` would."""
        det = model.detector
        score_one = det.score_one
        for v, t in zip(values, ts, strict=True):
            score = score_one(v, t)
            if score >= det.threshold or s.alarm.active or self.retrain_on:
                self._decide(s, model, v, t, score)
            else:
                s.n_scored += 1
                self.n_scored += 1
                s.last_score = score

    def _decide(self, s: Series, model: Model, value: float, ts: float, score: float) -> None:
        s.n_scored += 1
        self.n_scored += 1
        s.last_score = score
        det = model.detector
        threshold = det.threshold
        if score >= threshold:
            s.n_anomalous += 1
        if score >= threshold or s.alarm.active:
            # On-delay (the series' rules): a raise waits for on_delay consecutive readings at or
            # above the threshold; the raise/hold/clear decision itself is alarm_state's.
            if s.alarm.active or s.settings.on_delay <= 1 or self._on_delay_done(s):
                transition = s.alarm.update(score, threshold, ts, s.settings.policy, getattr(det, "normal_score", 0.0))
                if transition:
                    self._transition(transition, s, model, value, ts, score)
        if self.retrain_on:
            self._retrain_policy(s, score)

    @staticmethod
    def _on_delay_done(s: Series) -> bool:
        """Count this anomalous reading into the series' run; True once the run is on_delay long."""
        n, run = s.n_scored, s.onset
        if run is not None and run[1] == n - 1:
            run[1] = n
        else:
            run = s.onset = [n, n]
        if run[1] - run[0] + 1 >= s.settings.on_delay:
            s.onset = None
            return True
        return False

    def _limit(self, s: Series, lim: Any, value: float, ts: float) -> None:
        """An engineering limit reached or left (limits.py): each limit is its own alarm."""
        st = s.settings
        for name, state, setpoint in lim.update(value, st.on_delay):
            if state == "raised":
                s.alarm_seq += 1
                self.alarm_seqs[s.id] = s.alarm_seq
                seq, raised_ts = s.alarm_seq, ts
                aid = alert_id(self.gateway_id, s.id, state, seq, ts)
                lim.raised[name] = (seq, ts, aid)
                s.n_alarms += 1
                self.n_raised += 1
                self.n_limit_raised += 1
                s.last_alarm_ts = ts
                raised_id, held = None, None
                message = alarm_message.limit_raised(name, setpoint, value, st.unit)
            else:
                seq, raised_ts, raised_id = lim.raised.pop(name, (s.alarm_seq, ts, None))
                aid = alert_id(self.gateway_id, s.id, state, seq, raised_ts)
                held = ts - raised_ts
                self.n_cleared += 1
                message = alarm_message.limit_cleared(name, setpoint, lim.spec.deadband, held, st.unit)
            s.marks.append(AlarmMark(ts, value, state))
            low, high = lim.spec.expected()
            self.on_alarm(AlarmEvent(
                aid, s.id, state, ts, value, value, setpoint, "limit", 0, raised_id, kind="limit",
                direction="up" if name in ("hi", "hihi") else "down", expected_low=low, expected_high=high,
                message=message, held_s=held, seq=seq, source="limit", limit=name, setpoint=setpoint,
                priority=int(st.limits_priority), unit=st.unit,
            ))

    def _transition(self, transition: int, s: Series, model: Model, value: float, ts: float, score: float) -> None:
        det = model.detector
        threshold = float(det.threshold)
        state = NAMES[transition]
        if transition == RAISED:
            s.alarm_seq += 1
            self.alarm_seqs[s.id] = s.alarm_seq
            aid = alert_id(self.gateway_id, s.id, state, s.alarm_seq, ts)
            exp = self._explain(det, value)
            s.raised_id, s.last_alarm_ts = aid, ts
            s.raised_seq = s.alarm_seq
            s.n_alarms += 1
            self.n_raised += 1
            s.marks.append(AlarmMark(ts, value, state))
            ev = AlarmEvent(aid, s.id, state, ts, value, score, threshold, det.name, model.version,
                            message=alarm_message.raised(exp, value, score, threshold), seq=s.alarm_seq,
                            priority=int(s.settings.priority), unit=s.settings.unit)
            if exp is not None:
                ev.kind, ev.direction, ev.expected_low, ev.expected_high = exp.kind, exp.direction, exp.expected_low, exp.expected_high
            self.on_alarm(ev)
            return
        raised_ts = s.alarm.raised_ts if s.alarm.raised_ts is not None else ts
        seq = s.raised_seq or s.alarm_seq
        aid = alert_id(self.gateway_id, s.id, state, seq, raised_ts)
        held = ts - raised_ts
        peak = s.alarm.peak
        s.marks.append(AlarmMark(ts, value, state))
        if transition == ACCEPTED:
            self.n_accepted += 1
            message = alarm_message.accepted(held, "the acceptance time (alarms.accept_after_s)")
            self._accept(s, model)
        else:
            self.n_cleared += 1
            message = alarm_message.cleared(held, peak)
        self.on_alarm(AlarmEvent(aid, s.id, state, ts, value, score, threshold, det.name, model.version, s.raised_id,
                                 message=message, held_s=held, peak_score=peak, seq=seq,
                                 priority=int(s.settings.priority), unit=s.settings.unit))

    @staticmethod
    def _explain(det: Any, value: float) -> Explanation | None:
        explain = getattr(det, "explain", None)
        if explain is None:
            return None
        try:
            return explain(value)
        except Exception:  # an explanation must never cost the alarm itself
            log.exception("detector %s could not explain a reading", det.name)
            return None

    def _accept(self, s: Series, model: Model) -> None:
        """Make the model take the current behaviour as normal: in place for a detector that
        can (``rebaseline``), else a refit on the readings held in alarm."""
        det = model.detector
        rebaseline = getattr(det, "rebaseline", None)
        if rebaseline is not None:
            rebaseline()
            s.changes += 1
            checkpoints.take(s, det, model.version, s.n_readings)  # the plot replays from the new normal
            return
        if s.fit_pending:
            return
        n = min(self.buffer_size, max(s.settings.min_train, s.alarm.held))
        self.request_fit(s, reason="accept", values=s.recent_values(n), detector=det.name,
                         params=model.meta.get("init_params", s.settings.params))

    def rebaseline(self, series_id: str, by: str = "command") -> dict[str, Any]:
        """Accept a series' current behaviour as normal now (the ``rebaseline`` command).
        A raised alarm ends with an ``accepted`` message saying who accepted it."""
        s = self.series.get(series_id)
        if s is None or s.model is None:
            raise ValueError(f"series {series_id!r} has no model to rebaseline")
        model = s.model
        was_active = s.alarm.active
        out: dict[str, Any] = {"series": series_id, "was_in_alarm": was_active}
        if was_active:
            ts = s.last_ts
            raised_ts = s.alarm.raised_ts if s.alarm.raised_ts is not None else ts
            peak = s.alarm.peak
            s.alarm.end()
            self.n_accepted += 1
            s.marks.append(AlarmMark(ts, s.last_value, "accepted"))
            seq = s.raised_seq or s.alarm_seq
            aid = alert_id(self.gateway_id, s.id, "accepted", seq, raised_ts)
            out["accepted_alert_id"] = s.raised_id
            self.on_alarm(AlarmEvent(aid, s.id, "accepted", ts, s.last_value, s.last_score, float(model.detector.threshold),
                                     model.detector.name, model.version, s.raised_id,
                                     message=alarm_message.accepted(ts - raised_ts, by),
                                     held_s=ts - raised_ts, peak_score=peak, seq=seq,
                                     priority=int(s.settings.priority), unit=s.settings.unit))
        self._accept(s, model)
        out["method"] = "in place" if hasattr(model.detector, "rebaseline") else "refit"
        return out

    def _retrain_policy(self, s: Series, score: float) -> None:
        s.since_fit += 1
        if s.fit_pending:
            return
        if self.retrain_every and s.since_fit >= self.retrain_every:
            self.request_fit(s, reason="every_n")
            return
        if self.drift_on:
            # Block means of the score: the first block after a fit is the baseline; a later
            # block whose mean exceeds drift_ratio x baseline means the model no longer fits.
            s.drift_sum += score
            s.drift_n += 1
            if s.drift_n >= self.drift_window:
                mean = s.drift_sum / s.drift_n
                s.drift_sum, s.drift_n = 0.0, 0
                if s.drift_base is None:
                    s.drift_base = max(mean, 1e-12)
                elif mean > self.drift_ratio * s.drift_base:
                    self.request_fit(s, reason="drift")

    # ---- training ----------------------------------------------------------------------
    def request_fit(
        self,
        s: Series,
        reason: str,
        values: np.ndarray | None = None,
        detector: str | None = None,
        params: dict[str, Any] | None = None,
        done: Callable[[Model | None, BaseException | None], None] | None = None,
    ) -> FitRequest:
        ts = None
        if values is None:
            ts, values = s.recent(self.buffer_size if reason != "initial" else s.settings.min_train)
        if detector is None:
            if s.model is not None and reason in ("every_n", "drift"):
                detector, params = s.model.detector.name, s.model.meta.get("init_params", s.settings.params)
            else:
                detector = s.settings.detector
                if params is None:
                    params = s.settings.params
        if params is None:
            params = s.settings.params if detector == s.settings.detector else {}
        req = FitRequest(s.id, values, detector, dict(params), reason, ts=ts)
        s.fit_pending = True
        if s.model is None:
            # Readings arriving until this first model is installed wait here to be scored by it.
            self.backlog[s.id] = deque(maxlen=self.buffer_size)
        self.trainer.submit(self, req, done)
        return req

    def fit_model(self, req: FitRequest) -> Model:
        """Fit and persist a model on this thread (offline evaluation, tests)."""
        det, stats, seconds = train(req)
        extra = {"init_params": req.params, "train_seconds": seconds, "reason": req.reason}
        if self.store is not None:
            model = self.store.save(req.series_id, det, n_samples=len(req.values), stats=stats, activate=req.activate, extra=extra)
        else:
            model = Model(det, self._next_memory_version(req.series_id), {"detector": det.name, "n_samples": len(req.values), "stats": stats, "trained_at": time.time(), **extra})
        self.fit_latency.observe(seconds)
        return model

    def model_from_worker(self, req: FitRequest, version: int, meta: dict[str, Any], params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Model:
        """Rebuild the model a fit worker made, from the same plain data a store holds."""
        det = detectors.detector_class(meta["detector"]).from_state(params, arrays)
        self.fit_latency.observe(float(meta.get("train_seconds", 0.0)))
        return Model(det, version or self._next_memory_version(req.series_id), meta)

    def _next_memory_version(self, series_id: str) -> int:
        s = self.series.get(series_id)
        return (s.model.version if s is not None and s.model is not None else 0) + 1

    def install(self, req: FitRequest, model: Model) -> None:
        """Swap the new model in. Runs on the loop thread: one assignment, atomic for readers."""
        backlog = self.backlog.pop(req.series_id, None)
        s = self.series.get(req.series_id)
        if s is None:
            return
        s.fit_pending = False
        self.n_models_trained += 1
        if not req.activate or not s.settings.enabled:
            return
        s.model = model
        checkpoints.take(s, model.detector, model.version, s.n_readings - len(backlog or ()))
        s.since_fit = 0
        s.drift_base, s.drift_sum, s.drift_n = None, 0.0, 0
        s.changes += 1
        if self.on_model:
            self.on_model(s, model, req)
        if backlog:
            # Before any later reading: they are in the ring already, in arrival order.
            self.n_backlog_scored += len(backlog)
            values, ts = zip(*backlog, strict=True)
            self._score_in_order(s, model, list(values), list(ts))

    def fit_failed(self, req: FitRequest, exc: BaseException) -> None:
        self.backlog.pop(req.series_id, None)  # those readings are training data for the next try
        s = self.series.get(req.series_id)
        if s is not None:
            s.fit_pending = False
            # Back off: wait for another full training window before trying again.
            s.since_fit = 0
            s.next_fit_at = s.n_readings + s.settings.min_train
        self.n_fit_failed += 1
        self.last_fit_error = f"{req.series_id}: {exc!r}"
        log.error("fit failed for series %r (%s): %r", req.series_id, req.reason, exc)
        if isinstance(exc, OSError) and self.on_store_error is not None:
            self.on_store_error(f"{req.series_id}: {exc}")
