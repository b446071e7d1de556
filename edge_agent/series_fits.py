"""A series' fits from request to install: what is fitted, the backlog while the first fit
runs, the swap-in of the new model, and the back-off after a failure.

``request_fit`` takes the training window (the ring buffer, or the values a command gives),
picks the detector (a retrain keeps the current one) and hands the request to the pipeline's
trainer (``trainers.py``). The trainer calls back, on the loop thread, ``fit_model`` (inline)
or ``model_from_worker`` (worker process), then ``install`` or ``fit_failed``; the pipeline
exposes these four as its methods (the ``Trainer`` protocol's side of ``Pipeline``).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent import checkpoints, detectors
from edge_agent.fitting import FitRequest, train
from edge_agent.model_store import Model
from edge_agent.series import Series

if TYPE_CHECKING:
    from edge_agent.pipeline import Pipeline

log = logging.getLogger("edge_agent.pipeline")  # split out of pipeline.py: its log lines keep their logger


def request_fit(
    p: Pipeline,
    s: Series,
    reason: str,
    values: np.ndarray | None = None,
    detector: str | None = None,
    params: dict[str, Any] | None = None,
    done: Callable[[Model | None, BaseException | None], None] | None = None,
) -> FitRequest:
    ts = None
    if values is None:
        ts, values = s.recent(p.buffer_size if reason != "initial" else s.settings.min_train)
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
        p.backlog[s.id] = deque(maxlen=p.buffer_size)
    p.trainer.submit(p, req, done)
    return req


def fit_model(p: Pipeline, req: FitRequest) -> Model:
    """Fit and persist a model on this thread (offline evaluation, tests)."""
    det, stats, seconds = train(req)
    extra = {"init_params": req.params, "train_seconds": seconds, "reason": req.reason}
    if p.store is not None:
        model = p.store.save(req.series_id, det, n_samples=len(req.values), stats=stats, activate=req.activate, extra=extra)
    else:
        model = Model(det, _next_memory_version(p, req.series_id), {"detector": det.name, "n_samples": len(req.values), "stats": stats, "trained_at": time.time(), **extra})
    p.fit_latency.observe(seconds)
    return model


def model_from_worker(p: Pipeline, req: FitRequest, version: int, meta: dict[str, Any], params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Model:
    """Rebuild the model a fit worker made, from the same plain data a store holds."""
    det = detectors.detector_class(meta["detector"]).from_state(params, arrays)
    p.fit_latency.observe(float(meta.get("train_seconds", 0.0)))
    return Model(det, version or _next_memory_version(p, req.series_id), meta)


def _next_memory_version(p: Pipeline, series_id: str) -> int:
    s = p.series.get(series_id)
    return (s.model.version if s is not None and s.model is not None else 0) + 1


def install(p: Pipeline, req: FitRequest, model: Model) -> None:
    """Swap the new model in. Runs on the loop thread: one assignment, atomic for readers."""
    backlog = p.backlog.pop(req.series_id, None)
    s = p.series.get(req.series_id)
    if s is None:
        return
    s.fit_pending = False
    p.n_models_trained += 1
    if not req.activate or not s.settings.enabled:
        return
    s.model = model
    s.follow = None  # a new model is a new normal: no accepted move of the old one is followed
    checkpoints.take(s, model.detector, model.version, s.n_readings - len(backlog or ()))
    s.since_fit = 0
    s.drift_base, s.drift_sum, s.drift_n = None, 0.0, 0
    s.changes += 1
    if p.on_model:
        p.on_model(s, model, req)
    if backlog:
        # Before any later reading: they are in the ring already, in arrival order.
        p.n_backlog_scored += len(backlog)
        values, ts = zip(*backlog, strict=True)
        p.score_in_order(s, model, list(values), list(ts))


def fit_failed(p: Pipeline, req: FitRequest, exc: BaseException) -> None:
    p.backlog.pop(req.series_id, None)  # those readings are training data for the next try
    s = p.series.get(req.series_id)
    if s is not None:
        s.fit_pending = False
        # Back off: wait for another full training window before trying again.
        s.since_fit = 0
        s.next_fit_at = s.n_readings + s.settings.min_train
    if isinstance(exc, detectors.NothingToLearn):  # (not a failure: the next window may move)
        p.n_fit_deferred += 1
        log.info("no model yet for series %r (%s): %s; trying again after %d more readings",
                 req.series_id, req.reason, exc, s.settings.min_train if s is not None else 0)
        return
    p.n_fit_failed += 1
    p.last_fit_error = f"{req.series_id}: {exc!r}"
    log.error("fit failed for series %r (%s): %r", req.series_id, req.reason, exc)
    if isinstance(exc, OSError) and p.on_store_error is not None:
        p.on_store_error(f"{req.series_id}: {exc}")
