"""The alarm decision of a scored reading: raise, hold, clear or accept, and what is announced.

``Pipeline.process`` calls ``decide`` only for a reading at or above its threshold, a series
in alarm, or a retrain policy that counts readings; a normal reading never gets here. The
decision itself (threshold, hold ratio, clear count, acceptance time) is ``alarm_state.py``'s;
this module adds the series' on-delay, the engineering limits beside the model
(``limits.py``), the ``AlarmEvent`` each edge sends (``alarm_event.py``), acceptance of a
new normal (``rebaseline`` in place, else a refit) and the retrain policy (every N readings,
score drift). Plain functions on the pipeline's state: they are the pipeline's own code, kept
in one place to read.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from edge_agent import alarm_follow, alarm_message, checkpoints
from edge_agent.alarm_event import AlarmEvent, alert_id
from edge_agent.alarm_state import ACCEPTED, NAMES, RAISED
from edge_agent.detectors.base import Explanation
from edge_agent.model_store import Model
from edge_agent.series import AlarmMark, Series

if TYPE_CHECKING:
    from edge_agent.pipeline import Pipeline

log = logging.getLogger("edge_agent.pipeline")  # split out of pipeline.py: its log lines keep their logger


def decide(p: Pipeline, s: Series, model: Model, value: float, ts: float, score: float) -> None:
    s.n_scored += 1
    p.n_scored += 1
    s.last_score = score
    det = model.detector
    threshold = det.threshold
    if score >= threshold:
        s.n_anomalous += 1
    if score >= threshold or s.alarm.active:
        # On-delay (the series' rules): a raise waits for on_delay consecutive readings at or
        # above the threshold; the raise/hold/clear decision itself is alarm_state's.
        if s.alarm.active or s.settings.on_delay <= 1 or on_delay_done(s):
            transition = s.alarm.update(score, threshold, ts, s.settings.policy, getattr(det, "normal_score", 0.0))
            if transition:
                announce(p, transition, s, model, value, ts, score)
    if p.retrain_on:
        retrain_policy(p, s, score)


def on_delay_done(s: Series) -> bool:
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


def limit_crossed(p: Pipeline, s: Series, lim: Any, value: float, ts: float) -> None:
    """An engineering limit reached or left (limits.py): each limit is its own alarm."""
    st = s.settings
    for name, state, setpoint in lim.update(value, st.on_delay):
        if state == "raised":
            s.alarm_seq += 1
            p.alarm_seqs[s.id] = s.alarm_seq
            seq, raised_ts = s.alarm_seq, ts
            aid = alert_id(p.gateway_id, s.id, state, seq, ts)
            lim.raised[name] = (seq, ts, aid)
            s.n_alarms += 1
            p.n_raised += 1
            p.n_limit_raised += 1
            s.last_alarm_ts = ts
            raised_id, held = None, None
            message = alarm_message.limit_raised(name, setpoint, value, st.unit)
        else:
            seq, raised_ts, raised_id = lim.raised.pop(name, (s.alarm_seq, ts, None))
            aid = alert_id(p.gateway_id, s.id, state, seq, raised_ts)
            held = ts - raised_ts
            p.n_cleared += 1
            message = alarm_message.limit_cleared(name, setpoint, lim.spec.deadband, held, st.unit)
        s.marks.append(AlarmMark(ts, value, state))
        low, high = lim.spec.expected()
        p.on_alarm(AlarmEvent(
            aid, s.id, state, ts, value, value, setpoint, "limit", 0, raised_id, kind="limit",
            direction="up" if name in ("hi", "hihi") else "down", expected_low=low, expected_high=high,
            message=message, held_s=held, seq=seq, source="limit", limit=name, setpoint=setpoint,
            priority=int(st.limits_priority), unit=st.unit,
        ))


def announce(p: Pipeline, transition: int, s: Series, model: Model, value: float, ts: float, score: float) -> None:
    det = model.detector
    threshold = float(det.threshold)
    state = NAMES[transition]
    if transition == RAISED:
        exp = explain(det, value)
        if s.follow is not None and alarm_follow.goes_on(p, s, exp):
            s.alarm.end()  # the move an operator accepted, going on: accepted again, not raised
            accept(p, s, model, moving=True)
            return
        s.alarm_seq += 1
        p.alarm_seqs[s.id] = s.alarm_seq
        aid = alert_id(p.gateway_id, s.id, state, s.alarm_seq, ts)
        s.raised_id, s.last_alarm_ts = aid, ts
        s.raised_seq = s.alarm_seq
        s.n_alarms += 1
        p.n_raised += 1
        s.marks.append(AlarmMark(ts, value, state))
        ev = AlarmEvent(aid, s.id, state, ts, value, score, threshold, det.name, model.version,
                        message=alarm_message.raised(exp, value, score, threshold), seq=s.alarm_seq,
                        priority=int(s.settings.priority), unit=s.settings.unit)
        if exp is not None:
            ev.kind, ev.direction, ev.expected_low, ev.expected_high = exp.kind, exp.direction, exp.expected_low, exp.expected_high
        p.on_alarm(ev)
        return
    raised_ts = s.alarm.raised_ts if s.alarm.raised_ts is not None else ts
    seq = s.raised_seq or s.alarm_seq
    aid = alert_id(p.gateway_id, s.id, state, seq, raised_ts)
    held = ts - raised_ts
    peak = s.alarm.peak
    s.marks.append(AlarmMark(ts, value, state))
    if transition == ACCEPTED:
        p.n_accepted += 1
        message = alarm_message.accepted(held, "the acceptance time (alarms.accept_after_s)")
        accept(p, s, model)
    else:
        p.n_cleared += 1
        message = alarm_message.cleared(held, peak)
    p.on_alarm(AlarmEvent(aid, s.id, state, ts, value, score, threshold, det.name, model.version, s.raised_id,
                             message=message, held_s=held, peak_score=peak, seq=seq,
                             priority=int(s.settings.priority), unit=s.settings.unit))


def explain(det: Any, value: float) -> Explanation | None:
    explain = getattr(det, "explain", None)
    if explain is None:
        return None
    try:
        return explain(value)
    except Exception:  # an explanation must never cost the alarm itself
        log.exception("detector %s could not explain a reading", det.name)
        return None


def accept(p: Pipeline, s: Series, model: Model, moving: bool = False) -> None:
    """Make the model take the current behaviour as normal: in place for a detector that
    can (``rebaseline``), else a refit on the readings held in alarm. ``moving``: an accepted
    move going on (alarm_follow.py; only detectors that rebaseline in place follow one)."""
    det = model.detector
    rebaseline = getattr(det, "rebaseline", None)
    if rebaseline is not None:
        if moving:
            rebaseline(moving=True)
        else:
            rebaseline()
        s.changes += 1
        checkpoints.take(s, det, model.version, s.n_readings)  # the plot replays from the new normal
        return
    if s.fit_pending:
        return
    n = min(p.buffer_size, max(s.settings.min_train, s.alarm.held))
    p.request_fit(s, reason="accept", values=s.recent_values(n), detector=det.name,
                     params=model.meta.get("init_params", s.settings.params))


def rebaseline(p: Pipeline, series_id: str, by: str = "command") -> dict[str, Any]:
    """Accept a series' current behaviour as normal now (the ``rebaseline`` command).
    A raised alarm ends with an ``accepted`` message saying who accepted it."""
    s = p.series.get(series_id)
    if s is None or s.model is None:
        raise ValueError(f"series {series_id!r} has no model to rebaseline")
    model = s.model
    was_active = s.alarm.active
    out: dict[str, Any] = {"series": series_id, "was_in_alarm": was_active}
    # (only a detector that rebaselines in place follows a move: a refit per raise would not do)
    in_place = hasattr(model.detector, "rebaseline")
    follows = alarm_follow.start(p, s, explain(model.detector, s.last_value) if was_active and in_place else None, by)
    if was_active:
        ts = s.last_ts
        raised_ts = s.alarm.raised_ts if s.alarm.raised_ts is not None else ts
        peak = s.alarm.peak
        s.alarm.end()
        p.n_accepted += 1
        s.marks.append(AlarmMark(ts, s.last_value, "accepted"))
        seq = s.raised_seq or s.alarm_seq
        aid = alert_id(p.gateway_id, s.id, "accepted", seq, raised_ts)
        out["accepted_alert_id"] = s.raised_id
        p.on_alarm(AlarmEvent(aid, s.id, "accepted", ts, s.last_value, s.last_score, float(model.detector.threshold),
                                 model.detector.name, model.version, s.raised_id,
                                 message=alarm_message.accepted(ts - raised_ts, by) + (follows or ""),
                                 held_s=ts - raised_ts, peak_score=peak, seq=seq,
                                 priority=int(s.settings.priority), unit=s.settings.unit))
    accept(p, s, model)
    out["method"] = "in place" if in_place else "refit"
    return out


def retrain_policy(p: Pipeline, s: Series, score: float) -> None:
    s.since_fit += 1
    if s.fit_pending:
        return
    if p.retrain_every and s.since_fit >= p.retrain_every:
        p.request_fit(s, reason="every_n")
        return
    if p.drift_on:
        # Block means of the score: the first block after a fit is the baseline; a later
        # block whose mean exceeds drift_ratio x baseline means the model no longer fits.
        s.drift_sum += score
        s.drift_n += 1
        if s.drift_n >= p.drift_window:
            mean = s.drift_sum / s.drift_n
            s.drift_sum, s.drift_n = 0.0, 0
            if s.drift_base is None:
                s.drift_base = max(mean, 1e-12)
            elif mean > p.drift_ratio * s.drift_base:
                p.request_fit(s, reason="drift")
