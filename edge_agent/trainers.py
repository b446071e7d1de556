"""Where a series' fit runs: inline (offline evaluation, tests) or in a worker process (live).

Both implement the ``Trainer`` protocol the pipeline (and ``machines.MachineSet``) submits
fit requests to; the requester's ``fit_model`` / ``model_from_worker`` / ``install`` /
``fit_failed`` (``series_fits.py`` for series) are called back with the result.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from edge_agent.fitting import FitRequest, fit_and_save, init_worker, warm_up
from edge_agent.model_store import Model, ModelStore

if TYPE_CHECKING:
    from edge_agent.pipeline import Pipeline

log = logging.getLogger("edge_agent.pipeline")  # split out of pipeline.py: its log lines keep their logger


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

