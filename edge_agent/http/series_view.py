"""Plain-data views of a series, shared by the JSON API and the status page (loop thread only)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent import alarm_follow
from edge_agent.series import Series

if TYPE_CHECKING:  # the agent is composed in app.py; the HTTP layer never imports it at run time
    from edge_agent.agent import Agent

RECENT_SUMMARY = 256  # readings summarised in "recent" (min/max/mean)


def num(x: Any) -> float | None:
    """JSON has no NaN/Infinity: report them as null."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def series_or_none(agent: Agent, series_id: str) -> Series | None:
    return agent.pipeline.series.get(series_id) if agent.pipeline is not None else None


def model_view(s: Series) -> dict[str, Any] | None:
    model = s.model
    if model is None:
        return None
    det = model.detector
    band = det.band()
    params, _ = det.get_state()
    meta = model.meta
    train_s = meta.get("train_seconds")
    return {
        "version": model.version,
        "detector": det.name,
        "threshold": num(det.threshold),
        "band": [num(band[0]), num(band[1])] if band is not None else None,
        "params": params,
        "init_params": meta.get("init_params"),
        "trained_at": num(meta.get("trained_at")),
        "n_samples": meta.get("n_samples"),
        "train_ms": num(train_s * 1e3) if isinstance(train_s, int | float) else None,
        "reason": meta.get("reason"),
        "source": meta.get("source"),
    }


def summary(s: Series) -> dict[str, Any]:
    """The short form used in lists: cheap enough for every series on every request."""
    model = s.model
    return {
        "id": s.id,
        "state": s.state,
        "model_version": model.version if model is not None else None,
        "detector": model.detector.name if model is not None else None,
        "last_value": num(s.last_value),
        "last_ts": num(s.last_ts),
        "last_score": num(s.last_score),
        "last_alarm_ts": num(s.last_alarm_ts),
        "readings": s.n_readings,
        "alarms": s.n_alarms,
    }


def following(s: Series) -> dict[str, Any] | None:
    """The move an operator accepted that the series follows (alarm_follow.py), if any."""
    f = alarm_follow.in_force(s)
    if f is None:
        return None
    direction, until, end, by = f
    return {"direction": direction, "until_reading": until, "ends_at_reading": end, "accepted_by": by}


def detail(s: Series) -> dict[str, Any]:
    _, recent = s.recent(RECENT_SUMMARY)
    stats: dict[str, Any] = {"n": int(recent.shape[0]), "min": None, "max": None, "mean": None}
    if recent.shape[0]:
        stats.update(min=num(np.min(recent)), max=num(np.max(recent)), mean=num(np.mean(recent)))
    return {
        "id": s.id,
        "state": s.state,
        "model": model_view(s),
        "alarm": {
            "active": s.active,
            "raised_ts": num(s.raised_ts) if s.active else None,
            "raised_alert_id": s.raised_id if s.active else None,
            "last_alarm_ts": num(s.last_alarm_ts),
            "alarms_raised": s.n_alarms,
            "anomalous_readings": s.n_anomalous,
            "marks": [{"ts": num(m.ts), "value": num(m.value), "state": m.state} for m in list(s.marks)[-10:]],
            "following": following(s),
        },
        "readings": {
            "total": s.n_readings,
            "held": s.count,
            "scored": s.n_scored,
            "last_value": num(s.last_value),
            "last_ts": num(s.last_ts),
            "last_score": num(s.last_score),
            "recent": stats,
        },
        "fit_pending": s.fit_pending,
    }
