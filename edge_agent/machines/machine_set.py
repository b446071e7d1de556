"""The machines of one agent: readings in, rows assembled, scored, machine alarm events out.

``MachineSet`` is what ingest calls with ``(machine id, sensor, value, ts)`` (``feed``) or
with one message's readings at once (``feed_row``). It knows no MQTT and does no I/O: it
assembles rows (``rows.py``), learns a machine model from the first
``machines.min_train_rows`` complete rows (through the same trainers as the per-series
pipeline: ``InlineTrainer`` for evaluation, ``ProcessTrainer`` for a live agent), scores every
later complete row and runs the alarm state machine (``alarm_state.py``), handing
``MachineAlarmEvent`` to the ``on_alarm`` callback. The agent (phase 2) publishes them.

A machine's sensors are the ones seen while it learns (up to ``machines.max_sensors``);
a sensor first seen then restarts the training rows, since rows before it lack it. Once it
has a model, the model's sensors are the machine's: a new sensor is counted and ignored
until the machine is fitted again.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_agent import machine_detectors
from edge_agent.config import AgentConfig
from edge_agent.fitting import MachineFitRequest, fit_extra, train_machine
from edge_agent.machine_detectors import Contribution
from edge_agent.machines.alarm_state import AlarmState
from edge_agent.machines.rows import RowAssembler
from edge_agent.model_store import Model, ModelStore
from edge_agent.pipeline import alert_id

log = logging.getLogger(__name__)


class TooManyMachines(Exception):
    pass


def machine_alert_id(gateway_id: str, machine_id: str, state: str, ts: float) -> str:
    """Deterministic, like a series alarm's id, and never equal to one (a machine ``m1`` and a
    series ``m1`` are different things). Still a hash of the edge's row timestamp (seq 0):
    series alarms number their alarms (``seq``) so that two within one timestamp get two ids;
    machine alarms do not yet."""
    return alert_id(gateway_id, f"machine\x1f{machine_id}", state, 0, ts)


@dataclass(slots=True)
class MachineAlarmEvent:
    alert_id: str
    machine: str
    state: str  # "raised" | "cleared"
    ts: float  # the row's timestamp (its newest reading)
    score: float
    threshold: float
    detector: str
    version: int
    sensors: list[Contribution]  # every sensor of the machine, ranked by contribution
    raised_alert_id: str | None = None

    def payload(self, gateway_id: str) -> dict[str, Any]:
        """The JSON document a subscriber gets (phase 2 publishes it)."""
        doc: dict[str, Any] = {
            "alert_id": self.alert_id, "gateway_id": gateway_id, "machine": self.machine, "state": self.state,
            "ts": self.ts, "score": self.score, "threshold": self.threshold,
            "model": {"detector": self.detector, "version": self.version},
            "sensors": [c.as_dict() for c in self.sensors],
        }
        if self.raised_alert_id is not None:
            doc["raised_alert_id"] = self.raised_alert_id
        return doc


@dataclass(eq=False)
class Machine:
    id: str
    rows: RowAssembler
    alarm: AlarmState
    buffer_rows: int
    model: Model | None = None
    raised_id: str | None = None
    last_score: float = math.nan
    last_row_ts: float = -math.inf
    fit_pending: bool = False
    next_fit_at: int = 0
    n_rows: int = 0  # rows closed
    n_incomplete: int = 0  # of which not scored: a sensor was stale
    n_scored: int = 0
    n_ignored: int = 0  # readings of sensors the model does not know, or beyond max_sensors
    ignored_sensors: set[str] = field(default_factory=set)
    changes: int = 0
    # Complete rows, a ring: what the first fit (and a refit) trains on.
    _buf: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    _buf_ts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    _pos: int = 0
    _count: int = 0

    @property
    def sensors(self) -> list[str]:
        return self.rows.sensors

    @property
    def state(self) -> str:
        if self.model is None:
            return "learning"
        return "alarm" if self.alarm.active else "normal"

    def keep(self, values: list[float], ts: float) -> None:
        p = len(values)
        if self._buf.shape[1] != p:
            self._buf = np.empty((self.buffer_rows, p))
            self._buf_ts = np.empty(self.buffer_rows)
            self._pos = self._count = 0
        self._buf[self._pos] = values
        self._buf_ts[self._pos] = ts
        self._pos = (self._pos + 1) % self.buffer_rows
        self._count = min(self._count + 1, self.buffer_rows)

    def forget_rows(self) -> None:
        self._pos = self._count = 0

    def recent_rows(self, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The last ``n`` complete rows held (all if None), oldest first: (rows, timestamps)."""
        count = self._count if n is None else max(0, min(n, self._count))
        idx = np.arange(self._pos - count, self._pos) % max(1, self.buffer_rows)
        return self._buf[idx], self._buf_ts[idx]

    @property
    def rows_held(self) -> int:
        return self._count


class MachineSet:
    def __init__(
        self,
        cfg: AgentConfig,
        trainer: Any,
        on_alarm: Callable[[MachineAlarmEvent], None],
        store: ModelStore | None = None,
        on_model: Callable[[Machine, Model, MachineFitRequest], None] | None = None,
    ) -> None:
        mc = cfg.machines
        self.gateway_id = cfg.gateway_id
        self.trainer = trainer
        self.on_alarm = on_alarm
        self.on_model = on_model
        self.store = store
        self.detector_name = mc.detector.name
        self.detector_params = dict(mc.detector.params)
        self.min_train = mc.min_train_rows
        self.buffer_rows = mc.buffer_rows
        self.max_machines = mc.max_machines
        self.max_sensors = mc.max_sensors
        self.stale_after = mc.rows.stale_after_s
        self.max_skew = mc.rows.max_skew_s
        self.clear_after = mc.alarms.clear_after
        self.clear_ratio = mc.alarms.clear_ratio
        machine_detectors.create(self.detector_name, self.detector_params)  # a bad config fails here, not per fit
        self.machines: dict[str, Machine] = {}
        self.n_rows = 0
        self.n_scored = 0
        self.n_raised = 0
        self.n_cleared = 0
        self.n_models_trained = 0
        self.n_fit_failed = 0
        self.n_machines_refused = 0
        self.last_fit_error: str | None = None

    # ---- machines ------------------------------------------------------------------------
    def get_or_create(self, machine_id: str) -> Machine:
        m = self.machines.get(machine_id)
        if m is None:
            if len(self.machines) >= self.max_machines:
                self.n_machines_refused += 1
                raise TooManyMachines(f"machine limit {self.max_machines} reached")
            m = Machine(machine_id, RowAssembler(self.stale_after, lambda v, ts, ok: None, self.max_skew), AlarmState(self.clear_after, self.clear_ratio), self.buffer_rows)
            m.rows.emit = lambda values, ts, complete, m=m: self._row(m, values, ts, complete)
            self.machines[machine_id] = m
        return m

    def declare(self, machine_id: str, sensors: Iterable[str]) -> Machine:
        """Name a learning machine's sensors up front (their order is the model's), instead
        of discovering them from the readings: the first row is then complete."""
        m = self.get_or_create(machine_id)
        for s in sensors:
            if s not in m.rows.index and self._new_sensor(m, s) is None:
                raise ValueError(f"machine {machine_id!r}: cannot add sensor {s!r} (it has a model, or max_sensors is reached)")
        return m

    def adopt(self, machine_id: str, model: Model) -> Machine:
        """Attach a model loaded from the store at start-up: its sensors are the machine's."""
        m = self.get_or_create(machine_id)
        self._set_model(m, model)
        # The stored state is the one at the end of its fit rows: the first row after it
        # advances the model by the time since then (a long gap re-syncs the baselines).
        m.last_row_ts = float(model.meta.get("last_row_ts", -math.inf))
        return m

    def _set_model(self, m: Machine, model: Model) -> None:
        sensors = list(model.detector.sensors)
        if sensors != m.rows.sensors:
            # Rebuild the assembler in the model's sensor order; latest values carried over.
            old = m.rows
            rows = RowAssembler(self.stale_after, old.emit, self.max_skew)
            for s in sensors:
                j = rows.add_sensor(s)
                i = old.index.get(s)
                if i is not None:
                    rows.latest[j], rows.times[j] = old.latest[i], old.times[i]
            m.rows = rows
            m.forget_rows()
        m.model = model
        m.changes += 1

    # ---- readings in ---------------------------------------------------------------------
    def feed(self, machine_id: str, sensor: str, value: float, ts: float) -> None:
        """One reading of one sensor of a machine (after its own series took it)."""
        m = self.machines.get(machine_id)
        if m is None:
            m = self.get_or_create(machine_id)
        j = m.rows.index.get(sensor)
        if j is None:
            j = self._new_sensor(m, sensor)
            if j is None:
                return
        m.rows.offer(j, value, ts)

    def feed_row(self, machine_id: str, readings: list[tuple[str, float]], ts: float) -> None:
        """One message's readings of a machine, all of the same moment: its sensors first
        seen here join together, so a learning machine's first message is already one row."""
        m = self.machines.get(machine_id)
        if m is None:
            m = self.get_or_create(machine_id)
        rows = m.rows
        index = rows.index
        if m.model is None:
            for sensor, _ in readings:
                if sensor not in index:
                    self._new_sensor(m, sensor)
        for sensor, value in readings:
            j = index.get(sensor)
            if j is None:
                if m.model is not None:
                    self._new_sensor(m, sensor)  # counted and ignored
                continue
            rows.offer(j, value, ts)

    def _new_sensor(self, m: Machine, sensor: str) -> int | None:
        if m.model is not None or len(m.rows.sensors) >= self.max_sensors:
            m.n_ignored += 1
            if len(m.ignored_sensors) < 16:
                m.ignored_sensors.add(sensor)
            return None
        m.forget_rows()  # rows so far lack this sensor: training starts again
        return m.rows.add_sensor(sensor)

    # ---- rows ----------------------------------------------------------------------------
    def _row(self, m: Machine, values: list[float], ts: float, complete: bool) -> None:
        m.n_rows += 1
        self.n_rows += 1
        if not complete:
            m.n_incomplete += 1
            return
        m.keep(values, ts)
        model = m.model
        if model is None:
            if m.rows_held >= self.min_train and not m.fit_pending and m.n_rows >= m.next_fit_at:
                self.request_fit(m, reason="initial")
            return
        det = model.detector
        dt = ts - m.last_row_ts  # -inf before the first row after adopt(): taken as 0
        m.last_row_ts = ts
        score = det.score_row(values, dt if dt > 0.0 else 0.0)
        m.last_score = score
        m.n_scored += 1
        self.n_scored += 1
        change = m.alarm.update(score, det.threshold, ts, det.contributions)
        if change is None:
            return
        m.changes += 1
        aid = machine_alert_id(self.gateway_id, m.id, change.state, ts)
        raised = None
        if change.state == "raised":
            m.raised_id = aid
            self.n_raised += 1
        else:
            raised = m.raised_id
            self.n_cleared += 1
        self.on_alarm(MachineAlarmEvent(aid, m.id, change.state, ts, score, float(det.threshold), det.name, model.version, change.explanation, raised))

    # ---- training (the trainer protocol of pipeline.InlineTrainer / ProcessTrainer) --------
    def request_fit(
        self,
        m: Machine,
        reason: str,
        detector: str | None = None,
        params: dict[str, Any] | None = None,
        last_n: int | None = None,
        done: Callable[[Model | None, BaseException | None], None] | None = None,
    ) -> MachineFitRequest:
        rows, ts = m.recent_rows(self.min_train if reason == "initial" else last_n)
        req = MachineFitRequest(m.id, rows, ts, list(m.rows.sensors), detector or self.detector_name,
                                dict(self.detector_params if params is None else params), reason)
        m.fit_pending = True
        self.trainer.submit(self, req, done)
        return req

    def fit_model(self, req: MachineFitRequest) -> Model:
        """Fit and persist on this thread (evaluation, tests)."""
        det, stats, seconds = train_machine(req)
        extra = fit_extra(req, seconds)
        if self.store is not None:
            return self.store.save(req.machine_id, det, n_samples=len(req.rows), stats=stats, activate=req.activate, extra=extra)
        return Model(det, self._next_memory_version(req.machine_id), {"detector": det.name, "n_samples": len(req.rows), "stats": stats, "trained_at": time.time(), **extra})

    def model_from_worker(self, req: MachineFitRequest, version: int, meta: dict[str, Any], params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Model:
        det = machine_detectors.detector_class(meta["detector"]).from_state(params, arrays)
        return Model(det, version or self._next_memory_version(req.machine_id), meta)

    def _next_memory_version(self, machine_id: str) -> int:
        m = self.machines.get(machine_id)
        return (m.model.version if m is not None and m.model is not None else 0) + 1

    def install(self, req: MachineFitRequest, model: Model) -> None:
        """Swap the new model in (on the loop thread). Rows that arrived while it was being
        fitted are replayed through it first, without alarms, so its state is current."""
        m = self.machines.get(req.machine_id)
        if m is None:
            return
        m.fit_pending = False
        self.n_models_trained += 1
        if not req.activate:
            return
        if list(model.detector.sensors) != m.rows.sensors:
            self.fit_failed(req, RuntimeError("the machine's sensors changed while it was being fitted"))
            return
        last = float(req.ts[-1]) if len(req.ts) else -math.inf
        rows, ts = m.recent_rows()
        newer = ts > last
        det = model.detector
        prev = last
        for values, t in zip(rows[newer].tolist(), ts[newer].tolist(), strict=True):
            det.score_row(values, max(0.0, t - prev))
            prev = t
        m.last_row_ts = prev
        self._set_model(m, model)
        if self.on_model:
            self.on_model(m, model, req)

    def fit_failed(self, req: MachineFitRequest, exc: BaseException) -> None:
        m = self.machines.get(req.machine_id)
        if m is not None:
            m.fit_pending = False
            m.next_fit_at = m.n_rows + self.min_train  # back off: another training window
        self.n_fit_failed += 1
        self.last_fit_error = f"{req.machine_id}: {exc!r}"
        log.error("fit failed for machine %r (%s): %r", req.machine_id, req.reason, exc)

    # ---- status (phase 2: commands, HTTP) ------------------------------------------------
    def status(self, machine_id: str) -> dict[str, Any]:
        m = self.machines[machine_id]
        out: dict[str, Any] = {
            "machine": m.id, "state": m.state, "sensors": list(m.sensors), "rows": m.n_rows,
            "incomplete_rows": m.n_incomplete, "scored": m.n_scored, "alarms": m.alarm.n_raised,
            "last_score": None if math.isnan(m.last_score) else m.last_score,
            "stale_sensors": m.rows.stale_sensors(max(m.rows.times)) if m.sensors else [],
            "ignored_sensors": sorted(m.ignored_sensors),
        }
        if m.model is not None:
            out["model"] = {"detector": m.model.detector.name, "version": m.model.version}
            if m.n_scored:
                out["contributions"] = [c.as_dict() for c in m.model.detector.contributions()]
        else:
            out["training_rows"] = f"{m.rows_held}/{self.min_train}"
        return out
