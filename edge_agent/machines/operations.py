"""What commands and HTTP do with machines, as plain functions (issue 14).

The shared operations module (``edge_agent/operations.py``) calls these for a machine id, as it
calls its series functions for a series id; nothing here imports the running agent, MQTT or
HTTP. Each takes what it needs (the ``MachineSet``, the machine ``ModelStore``) and returns a
JSON-ready dict (finite numbers or ``None``), or raises ``UnknownMachine`` / ``ValueError``
with a message a caller can hand back as is.

Threads: functions that read or change a ``MachineSet`` run on the event loop thread (the one
that feeds it); ``rollback_in_store`` does file I/O and runs off the loop, and its model is
then put to use on the loop by ``activate``.

* ``list_machines``: one line per machine (state, model, last score, the sensors that explain it);
* ``machine_status``: one machine in full (``MachineSet.status``);
* ``fit_machine``: refit from the rows held (in the worker, like any fit);
* ``rollback_in_store`` + ``activate``: an earlier stored version made active, then used;
* ``rebaseline_machine``: its current behaviour accepted as normal now;
* ``machine_plot_data``: recent rows, scores, threshold and alarm edges, for a plot of the
  score over time with each sensor below it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from edge_agent import machine_detectors
from edge_agent.machines.machine_set import Machine, MachineSet
from edge_agent.model_store import Model, ModelStore

MIN_REFIT_ROWS = 50  # a refit needs this many complete rows held (the config minimum of min_train_rows)


class UnknownMachine(KeyError):
    def __str__(self) -> str:
        return f"no machine {self.args[0]!r}"


def _machine(ms: MachineSet, machine_id: str) -> Machine:
    m = ms.machines.get(machine_id)
    if m is None:
        raise UnknownMachine(machine_id)
    return m


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def list_machines(ms: MachineSet) -> list[dict[str, Any]]:
    """Every machine, sorted by id: what a status page lists."""
    return [machine_line(ms, mid) for mid in sorted(ms.machines)]


def machine_line(ms: MachineSet, machine_id: str) -> dict[str, Any]:
    """One machine as ``list_machines`` lists it (~50 µs for 5 sensors: callers listing many
    on the event loop do it a slice per loop pass)."""
    st = ms.status(machine_id)
    return {
        "machine": machine_id, "state": st["state"], "sensors": len(st["sensors"]),
        "model": st.get("model"), "last_score": st["last_score"], "alarm": st.get("alarm"),
        "top_sensors": st.get("top_sensors", []),
    }


def machine_status(ms: MachineSet, machine_id: str) -> dict[str, Any]:
    _machine(ms, machine_id)
    return ms.status(machine_id)


def fit_machine(
    ms: MachineSet,
    machine_id: str,
    detector: str | None = None,
    params: dict[str, Any] | None = None,
    last_n: int | None = None,
    done: Callable[[Model | None, BaseException | None], None] | None = None,
) -> dict[str, Any]:
    """Refit a machine on its last ``last_n`` complete rows (all held if None), in the fit
    worker. ``done(model, error)`` is called on the loop when it ends. The new version becomes
    active and is stored (and synced) like any fit."""
    m = _machine(ms, machine_id)
    if m.fit_pending:
        raise ValueError(f"machine {machine_id!r} is already being fitted")
    name = detector or ms.detector_name
    try:
        machine_detectors.create(name, params if params is not None else ms.detector_params)
    except (TypeError, ValueError, machine_detectors.UnknownMachineDetector) as exc:
        raise ValueError(f"machine {machine_id!r}: {exc}") from None
    if last_n is not None and last_n < MIN_REFIT_ROWS:
        raise ValueError(f"last_n must be at least {MIN_REFIT_ROWS}")
    held = m.rows_held if last_n is None else min(last_n, m.rows_held)
    if held < MIN_REFIT_ROWS:
        raise ValueError(f"machine {machine_id!r} holds {m.rows_held} complete rows; a fit needs {MIN_REFIT_ROWS}")
    ms.request_fit(m, reason="command", detector=name, params=params, last_n=held, done=done)
    return {"machine": machine_id, "fit": "requested", "detector": name, "rows": held}


def rollback_in_store(store: ModelStore, machine_id: str, version: int | None = None) -> Model:
    """Activate ``version`` (default: the one before the active one) in the machine store and
    load it, bounded as at start. File I/O: call off the event loop. Raises ``ModelLoadError``."""
    return store.rollback(machine_id, version)


def activate(ms: MachineSet, machine_id: str, model: Model) -> dict[str, Any]:
    """Put a model (from ``rollback_in_store``, or pulled) to use for a machine, on the loop."""
    ms.adopt(machine_id, model)
    return {"machine": machine_id, "active_version": model.version, "detector": model.detector.name}


def rebaseline_machine(ms: MachineSet, machine_id: str, by: str = "command") -> dict[str, Any]:
    """Accept the machine's current behaviour as normal now; a raised alarm ends ``accepted``."""
    _machine(ms, machine_id)
    return ms.rebaseline(machine_id, by=by)


def machine_plot_data(ms: MachineSet, machine_id: str, n: int | None = None) -> dict[str, Any]:
    """The last ``n`` complete rows held (all if None): their timestamps, each sensor's values,
    each row's score (None while learning), the threshold and the alarm edges in that span."""
    m = _machine(ms, machine_id)
    rows, ts = m.recent_rows(n)
    scores = m.recent_scores(n)
    sensors = list(m.sensors)
    t0 = float(ts[0]) if len(ts) else math.inf
    return {
        "machine": machine_id,
        "sensors": sensors,
        "ts": ts.tolist(),
        "values": {s: [_finite(v) for v in rows[:, j].tolist()] for j, s in enumerate(sensors)} if len(ts) else {s: [] for s in sensors},
        "scores": [_finite(v) for v in scores.tolist()],
        "threshold": float(m.model.detector.threshold) if m.model is not None else None,
        "marks": [{"ts": mk.ts, "score": _finite(mk.value), "state": mk.state} for mk in m.marks if mk.ts >= t0],
    }
