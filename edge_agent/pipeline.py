"""The one streaming code path: a reading in, a score, an alarm decision out.

Live ingest (``agent.py``) and offline evaluation (``evaluation/evaluate.py``) both call
``Pipeline.process``; they differ only in the trainer they pass (``trainers.py``). Live
ingest fits in a worker process so the event loop never waits on a fit, a disk write or the
GIL a fit holds; evaluation fits inline so results are deterministic.

Per reading (readings a broker redelivers were already refused by ingest, per topic: see
``replay.py``):
1. append to the series' ring buffer;
2. no model yet: once ``min_train_samples`` readings are held, ask the trainer for a fit;
   no alarm is raised while learning. Readings that arrive while that first fit runs are
   kept (``backlog``) and scored, in order, by the new model the moment it is installed,
   before any later reading: every reading after the training window is scored once
   (``series_fits.py``);
3. otherwise score it and run the series' alarm state (``alarm_decision.py`` on
   ``alarm_state.py``): raised once when the score reaches the threshold, held while it
   stays above ``hold_ratio`` x threshold, cleared after ``clear_after`` readings below that,
   or accepted as the new normal after ``accept_after_s``. A raised alarm carries the
   detector's explanation (``explain``) in its ``AlarmEvent`` (``alarm_event.py``);
4. the retrain policy may ask for a new version (every N readings, or score drift).

This module holds the series table (creation, settings, eviction and reload within the
series budget) and the per-reading core (``process``, ``process_batch``).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from edge_agent import alarm_decision, checkpoints, detectors, notices, series_fits, series_live
from edge_agent.alarm_decision import decide, limit_crossed
from edge_agent.alarm_event import AlarmEvent, alert_id
from edge_agent.alarm_state import AlarmPolicy
from edge_agent.config import AgentConfig
from edge_agent.evicted_live import EvictedLive
from edge_agent.fitting import FitRequest
from edge_agent.model_store import Model, ModelStore
from edge_agent.series import Series, SeriesBytes
from edge_agent.series_budget import CLASSES, Evictor
from edge_agent.series_settings import SettingsSource
from edge_agent.stats import LatencyRecorder
from edge_agent.trainers import FitTimeout, InlineTrainer, ProcessTrainer, Trainer

# Imported from here by the agent, ingest, evaluation, machines, HTTP, tests and benchmarks;
# each has its own module now (alarm_event.py, trainers.py).
__all__ = [
    "AlarmEvent", "FitTimeout", "InlineTrainer", "Pipeline", "ProcessTrainer", "TooManySeries", "Trainer", "alert_id",
]

log = logging.getLogger(__name__)


class TooManySeries(Exception):
    pass


def with_live_state(sid: str, model: Model | None, live: series_live.Entry | None) -> Model | None:
    """A reloaded model with the live state its series was evicted with, when that state is of
    this model (``series_live.revive``); a state that does not fit costs the state (logged)."""
    if model is None or live is None:
        return model
    if (live[1], live[2]) != (model.version, model.detector.name):  # a retrain, a rollback or a pull since
        log.info("series %r: its live state is of model v%d, v%d is active: it starts from that model", sid, live[1], model.version)
        return model
    try:
        return series_live.revive(model, live)
    except ValueError as exc:
        log.error("series %r: live state not restored (%s); it scores on from its stored model", sid, exc)
        return model


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
        # The live state of evicted streaming series, put back when their model is reloaded
        # (evicted_live.py); counted in series_bytes, so within series.max_bytes.
        self.evicted_live = EvictedLive(self.series_bytes)
        # How a returning series gets its model back: the agent loads it off the loop; without
        # a restorer (offline use, tests) it is loaded here.
        self.restorer: Callable[[Series, series_live.Entry | None], None] | None = None
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
        self.n_fit_deferred = 0  # fits whose window a detector could learn nothing from (detectors.NothingToLearn)
        self.n_series_refused = 0
        self.n_notices = 0  # detectors' notices logged (notices.py)
        self.n_followed = 0  # raises taken as an accepted move going on (alarm_follow.py)
        self.follow_readings = cfg.alarms.follow_readings
        self.notice_log = notices.new_log()
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
        # A little more than needed, so that a flood of new topics evicts in batches. Not for
        # series with a model (idle_model): only what is needed goes, since each is a real
        # sensor and keeping a streaming one's live state costs ~15-25 us on the loop
        # (bench/part_livestate.py): a batch of 1 % of 100,000 would stall it ~20 ms.
        count = need_count + (self.max_series // 100 if n else 0)
        nbytes = need_bytes + (self.max_bytes // 100 if n else 0)
        evicted = 0
        start = self.series_bytes.bytes
        for cls, s in self.evictor.victims(self.series, self.clock, count, nbytes):
            if cls == 2 and evicted >= need_count and start - self.series_bytes.bytes > need_bytes:
                break  # enough: the slack is not taken from series with a model (it is swept again)
            self.evict(s, CLASSES[cls])  # frees the ring, keeps a streaming detector's live state
            evicted += 1
            if evicted >= count and start - self.series_bytes.bytes >= nbytes:
                break
        short = self.series_bytes.bytes - self.max_bytes + (1 if n else 0)
        if short > 0 and self.evicted_live.nbytes:
            self.evicted_live.drop_oldest(short)  # the live states of evicted series go last
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
            self.evicted_live.keep(s)
        self.n_evicted[why] = self.n_evicted.get(why, 0) + 1
        for hook in self.on_evict:
            hook(s)

    def _restore(self, s: Series) -> None:
        """A series evicted with its model is back: reload the model before scoring it, with the
        live state it was evicted with (``evicted_live.py``). Until then its readings fill the
        ring and are not scored (fit_pending keeps it from learning)."""
        self.evicted_models.discard(s.id)
        live = self.evicted_live.pop(s.id)
        s.fit_pending = True
        self.backlog[s.id] = deque(maxlen=self.buffer_size)  # scored once the model is back
        if self.restorer is not None:
            self.restorer(s, live)
            return
        model = None
        if self.store is not None:
            try:
                model, _ = self.store.load_active(s.id)
            except Exception as exc:  # a bad file costs this series its model, nothing more
                log.error("series %r: cannot reload its model: %r", s.id, exc)
        self.restored(s, with_live_state(s.id, model, live))

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
                self.score_in_order(s, model, list(values), list(ts))

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
        s.follow = None  # (see series_fits.install)
        s.changes += 1
        checkpoints.take(s, model.detector, model.version, s.n_readings)

    # ---- the hot path --------------------------------------------------------------------
    def process(self, series_id: str, value: float, ts: float) -> None:
        s = self.series.get(series_id)
        if s is None:
            s = self.get_or_create(series_id)
        prev_ts = s.last_ts
        s.append(value, ts)
        lim = s.limits
        if lim is not None and not lim.lo_edge < value < lim.hi_edge:
            limit_crossed(self, s, lim, value, ts)  # engineering limits: beside the model, while learning too
        model = s.model
        if model is None:
            self._learning(s, value, ts)
            return
        det = model.detector
        if ts - prev_ts > det.gap_s:  # the first reading after a silence (detectors.base: gap_s)
            score = det.score_after_gap(value, ts, ts - prev_ts)
            if getattr(det, "notice", None) is not None:
                notices.take(self, s.id, det)
        elif s.n_readings & 7:
            score = det.score_one(value, ts)
        else:
            # Timing every reading would cost as much as scoring it; every 8th is plenty
            # for the latency summary and histogram. The plot's checkpoints are taken here
            # too, and a detector's notice for the operator (notices.py).
            if checkpoints.due(s, self.checkpoint_every):
                checkpoints.take(s, det, model.version, s.n_readings - 1)
            t0 = time.perf_counter()
            score = det.score_one(value, ts)
            self.score_latency.observe(time.perf_counter() - t0)
            if getattr(det, "notice", None) is not None:
                notices.take(self, s.id, det)
        if score >= det.threshold or s.alarm.active or self.retrain_on:
            decide(self, s, model, value, ts, score)
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
                    limit_crossed(self, s, lim, v, t)
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
        prev_ts = s.last_ts
        s.append_many(values, ts)
        det = model.detector
        if checkpoints.due(s, self.checkpoint_every):
            checkpoints.take(s, det, model.version, s.n_readings - values.shape[0])
        if getattr(det, "streaming", False):
            # The explanation of a raise describes the reading just scored: one at a time.
            t0 = time.perf_counter()
            self.score_in_order(s, model, values.tolist(), ts.tolist(), prev_ts)
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
            decide(self, s, model, float(values[i]), float(ts[i]), float(scores[i]))

    def score_in_order(self, s: Series, model: Model, values: list[float], ts: list[float], prev_ts: float = math.nan) -> None:
        """Score readings already in the ring, one by one, as ``process`` would (``prev_ts``:
        the time of the reading before the first, for a gap before it)."""
        det = model.detector
        score_one = det.score_one
        gap_s = det.gap_s
        for v, t in zip(values, ts, strict=True):
            score = det.score_after_gap(v, t, t - prev_ts) if t - prev_ts > gap_s else score_one(v, t)
            prev_ts = t
            if score >= det.threshold or s.alarm.active or self.retrain_on:
                decide(self, s, model, v, t, score)
            else:
                s.n_scored += 1
                self.n_scored += 1
                s.last_score = score
        if getattr(det, "notice", None) is not None:
            notices.take(self, s.id, det)

    # ---- the alarm decision (alarm_decision.py) and a series' fits (series_fits.py) ----------
    # Functions taking the pipeline first, so they serve as its methods: operations call
    # rebaseline and request_fit, the trainers (trainers.py) call back the other four.
    rebaseline = alarm_decision.rebaseline
    request_fit = series_fits.request_fit
    fit_model = series_fits.fit_model
    model_from_worker = series_fits.model_from_worker
    install = series_fits.install
    fit_failed = series_fits.fit_failed
