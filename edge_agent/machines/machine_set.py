"""The machines of one agent: readings in, rows assembled, scored, machine alarm events out.

``MachineSet`` is what ingest calls with ``(machine id, sensor, value, ts)`` (``feed``) or
with one message's readings at once (``feed_row``). It knows no MQTT and does no I/O: it
assembles rows (``rows.py``), learns a machine model from the first
``machines.min_train_rows`` complete rows (through the same trainers as the per-series
pipeline: ``InlineTrainer`` for evaluation, ``ProcessTrainer`` for a live agent), scores every
later complete row and runs the alarm decision a series uses (``edge_agent/alarm_state.py``:
raised once, held, cleared, accepted), handing ``MachineAlarmEvent`` to the ``on_alarm``
callback. The running agent publishes them (``live.py``). Alarms are numbered per machine
(``seq``, persisted by the outbox like a series'), so each has its own id.

One machine's state is ``machine.py``; an alarm's identity and event ``alarm_event.py``.

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
from typing import Any

import numpy as np

from edge_agent import machine_detectors
from edge_agent.alarm_state import ACCEPTED, NAMES, RAISED, AlarmPolicy, AlarmState
from edge_agent.config import AgentConfig
from edge_agent.fitting import MachineFitRequest, fit_extra, train_machine
from edge_agent.machines import message
from edge_agent.machines.alarm_event import (
    MachineAlarmEvent,
    machine_alert_id,
    machine_key,
    machine_of_key,
)
from edge_agent.machines.machine import Machine
from edge_agent.machines.rows import RowAssembler
from edge_agent.model_store import Model, ModelStore
from edge_agent.series import AlarmMark
from edge_agent.stats import LatencyRecorder

# The alarm's identity and event, and one machine's state, have their own modules; they are
# named here too, where the rest of the agent has always imported them from.
__all__ = ["Machine", "MachineAlarmEvent", "MachineSet", "TooManyMachines", "machine_alert_id", "machine_key", "machine_of_key"]

log = logging.getLogger(__name__)


class TooManyMachines(Exception):
    pass


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
        self.policy = AlarmPolicy.from_config(mc.alarms)
        machine_detectors.create(self.detector_name, self.detector_params)  # a bad config fails here, not per fit
        self.machines: dict[str, Machine] = {}
        # Each machine's last alarm number, from the outbox at start (set before any machine
        # exists, as Pipeline.alarm_seqs is): alarm ids never repeat across restarts.
        self.alarm_seqs: dict[str, int] = {}
        self.score_latency = LatencyRecorder()
        self.n_rows = 0
        self.n_incomplete = 0
        self.n_scored = 0
        self.n_raised = 0
        self.n_cleared = 0
        self.n_accepted = 0
        self.n_models_trained = 0
        self.n_fit_failed = 0
        self.n_machines_refused = 0
        self.last_fit_error: str | None = None
        # Told when a fit fails on the model store itself (OSError: full, read-only, gone).
        self.on_store_error: Callable[[str], None] | None = None

    # ---- machines ------------------------------------------------------------------------
    def get_or_create(self, machine_id: str) -> Machine:
        m = self.machines.get(machine_id)
        if m is None:
            if len(self.machines) >= self.max_machines:
                self.n_machines_refused += 1
                raise TooManyMachines(f"machine limit {self.max_machines} reached")
            m = Machine(machine_id, RowAssembler(self.stale_after, lambda v, ts, ok: None, self.max_skew), AlarmState(), self.buffer_rows,
                        alarm_seq=self.alarm_seqs.get(machine_id, 0))
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
            self.n_incomplete += 1
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
        if m.n_scored & 7:
            score = det.score_row(values, dt if dt > 0.0 else 0.0)
        else:  # every 8th row timed, as the series are: timing each would cost a tenth of it
            t0 = time.perf_counter()
            score = det.score_row(values, dt if dt > 0.0 else 0.0)
            self.score_latency.observe(time.perf_counter() - t0)
        m.last_score = score
        m.scored(score)
        m.n_scored += 1
        self.n_scored += 1
        threshold = det.threshold
        if score >= threshold or m.alarm.active:
            transition = m.alarm.update(score, threshold, ts, self.policy)
            if transition:
                self._transition(transition, m, model, ts, score)

    def _transition(self, transition: int, m: Machine, model: Model, ts: float, score: float) -> None:
        det = model.detector
        threshold = float(det.threshold)
        state = NAMES[transition]
        m.changes += 1
        sensors = det.contributions()
        if transition == RAISED:
            m.alarm_seq += 1
            self.alarm_seqs[m.id] = m.alarm_seq
            aid = machine_alert_id(self.gateway_id, m.id, state, m.alarm_seq, ts)
            m.raised_id = aid
            m.n_alarms += 1
            self.n_raised += 1
            m.marks.append(AlarmMark(ts, score, state))
            self.on_alarm(MachineAlarmEvent(aid, m.id, state, ts, score, threshold, det.name, model.version, sensors,
                                            seq=m.alarm_seq, message=message.raised(sensors, score, threshold)))
            return
        raised_ts = m.alarm.raised_ts if m.alarm.raised_ts is not None else ts
        held = ts - raised_ts
        peak = m.alarm.peak
        m.marks.append(AlarmMark(ts, score, state))
        if transition == ACCEPTED:
            self.n_accepted += 1
            text = message.accepted(held, "the acceptance time (machines.alarms.accept_after_s)")
            self._accept(m, model)
        else:
            self.n_cleared += 1
            text = message.cleared(held, peak)
        aid = machine_alert_id(self.gateway_id, m.id, state, m.alarm_seq, raised_ts)
        self.on_alarm(MachineAlarmEvent(aid, m.id, state, ts, score, threshold, det.name, model.version, sensors, m.raised_id,
                                        seq=m.alarm_seq, message=text, held_s=held, peak_score=peak))

    @staticmethod
    def _accept(m: Machine, model: Model) -> None:
        """Take the machine's current behaviour as normal: every baseline takes its smoothed
        level (``rebaseline``), the relations and the correlation of the model stay."""
        model.detector.rebaseline()
        m.changes += 1

    def rebaseline(self, machine_id: str, by: str = "command") -> dict[str, Any]:
        """Accept a machine's current behaviour as normal now (``machines/operations.py``). A
        raised alarm ends with an ``accepted`` message saying who accepted it."""
        m = self.machines.get(machine_id)
        if m is None or m.model is None:
            raise ValueError(f"machine {machine_id!r} has no model to rebaseline")
        model = m.model
        out: dict[str, Any] = {"machine": machine_id, "was_in_alarm": m.alarm.active}
        if m.alarm.active:
            ts = m.last_row_ts if math.isfinite(m.last_row_ts) else time.time()
            raised_ts = m.alarm.raised_ts if m.alarm.raised_ts is not None else ts
            peak = m.alarm.peak
            m.alarm.end()
            self.n_accepted += 1
            m.marks.append(AlarmMark(ts, m.last_score, "accepted"))
            det = model.detector
            aid = machine_alert_id(self.gateway_id, m.id, "accepted", m.alarm_seq, raised_ts)
            out["accepted_alert_id"] = m.raised_id
            self.on_alarm(MachineAlarmEvent(aid, m.id, "accepted", ts, m.last_score, float(det.threshold), det.name, model.version,
                                            det.contributions() if m.n_scored else [], m.raised_id, seq=m.alarm_seq,
                                            message=message.accepted(ts - raised_ts, by), held_s=ts - raised_ts, peak_score=peak))
        self._accept(m, model)
        return out

    def restore_alarm(self, machine_id: str, alert_id: str, raised_ts: float) -> Machine:
        """An alarm raised before a restart stays raised, so that its clear is sent in due course."""
        m = self.get_or_create(machine_id)
        m.alarm.raise_at(raised_ts)
        m.raised_id = alert_id
        return m

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
        if isinstance(exc, OSError) and self.on_store_error is not None:
            self.on_store_error(f"machine {req.machine_id}: {exc}")

    # ---- status (machines/operations.py: commands, HTTP) ---------------------------------
    def status(self, machine_id: str) -> dict[str, Any]:
        m = self.machines[machine_id]
        out: dict[str, Any] = {
            "machine": m.id, "state": m.state, "sensors": list(m.sensors), "rows": m.n_rows,
            "incomplete_rows": m.n_incomplete, "scored": m.n_scored, "alarms": m.n_alarms, "alarm_seq": m.alarm_seq,
            "last_score": None if math.isnan(m.last_score) else m.last_score,
            "last_row_ts": m.last_row_ts if math.isfinite(m.last_row_ts) else None,
            "stale_sensors": m.rows.stale_sensors(max(m.rows.times)) if m.sensors else [],
            "ignored_sensors": sorted(m.ignored_sensors),
            "fit_pending": m.fit_pending,
        }
        if m.alarm.active:
            out["alarm"] = {"alert_id": m.raised_id, "seq": m.alarm_seq, "raised_ts": m.alarm.raised_ts, "peak_score": m.alarm.peak}
        if m.model is not None:
            det = m.model.detector
            out["model"] = {"detector": det.name, "version": m.model.version, "threshold": float(det.threshold)}
            if m.n_scored:
                sensors = det.contributions()
                out["contributions"] = [c.as_dict() for c in sensors]
                out["top_sensors"] = [f"{c.sensor} {c.what}" for c in message.named(sensors)]
        else:
            out["training_rows"] = f"{m.rows_held}/{self.min_train}"
        return out
