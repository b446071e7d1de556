"""What the agent says about itself: its status-topic payload, readiness, health, one line.

``status_payload`` is the retained ``status.topic`` message (``online`` at connect,
``offline`` at shutdown and as the broker's will). ``not_ready_reasons`` fails ``/readyz``:
the agent is not doing its job now. ``health`` adds what degrades it without stopping it
(quarantined or unsendable messages, a degraded outbox or model store, the series budget,
Sparkplug, machines) for ``/healthz``, the status page and the ``status`` command;
``status_line`` is what systemd's status shows. Reads the agent's parts, changes nothing.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from edge_agent import __version__, series_budget

if TYPE_CHECKING:
    from edge_agent.agent import Agent

# Connects within FLAP_WINDOW_S beyond which the broker link counts as unstable (not ready).
FLAP_CONNECTS = 4
FLAP_WINDOW_S = 60.0
# A quarantined message keeps health degraded this long after it happened.
QUARANTINE_WARN_S = 3600.0


def status_payload(agent: Agent, state: str, reason: str | None = None) -> bytes:
    doc: dict[str, Any] = {
        "state": state,
        "gateway_id": agent.cfg.gateway_id,
        "agent_version": __version__,
        "started_at": agent.started_at,
        "ts": time.time(),
    }
    if reason:
        doc["reason"] = reason
    return json.dumps(doc, separators=(",", ":")).encode()


def not_ready_reasons(agent: Agent) -> list[str]:
    """Why the agent is not doing its job now (``/readyz`` fails with these)."""
    reasons = []
    link = agent.link
    if not link.connected.is_set():
        reasons.append(f"broker not connected: {link.last_error or 'connecting'}")
    connects = link.recent_connects(FLAP_WINDOW_S)
    if connects >= FLAP_CONNECTS:
        reasons.append(f"broker connection unstable: {connects} connects in the last {FLAP_WINDOW_S:g} s")
    if not agent.models_loaded:
        reasons.append("models not loaded yet")
    waited = agent.outbox.oldest_age()
    if link.connected.is_set() and agent.outbox.depth and waited > agent.cfg.outbox.stuck_after_s:
        reasons.append(
            f"outbox not draining: its oldest message has waited {waited:.0f} s (outbox.stuck_after_s is "
            f"{agent.cfg.outbox.stuck_after_s:g}), {agent.outbox.depth} message(s) queued"
        )
    return reasons


def health(agent: Agent) -> dict[str, Any]:
    problems = not_ready_reasons(agent)
    last = agent.outbox.last_quarantine
    if last is not None and time.time() - last[0] < QUARANTINE_WARN_S:
        n = sum(agent.outbox.quarantined.values())
        problems.append(f"outbox: {n} undeliverable message(s) quarantined since start, the last to {last[2]!r} ({last[1]})")
    if agent.last_unsendable is not None and time.time() - agent.last_unsendable[0] < QUARANTINE_WARN_S:
        n = sum(agent.unsendable.values())
        problems.append(f"{n} message(s) could not be sent at all since start (MQTT or broker limits), the last a {agent.last_unsendable[1]}")
    if agent.outbox.degraded:
        problems.append(f"outbox degraded: {agent.outbox.degraded}")
    problems += [f"{k}: {v}" for k, v in agent.state_errors.items()]
    if agent.commands is not None and agent.commands.journal.error:
        problems.append(agent.commands.journal.error)
    if agent.sparkplug is not None:
        problems += agent.sparkplug.problems()
    problems += series_budget.problems(agent.pipeline) if agent.pipeline is not None else []
    problems += agent.machines.problems() if agent.machines is not None else []
    if agent.store_error is not None:
        problems.append(f"model store degraded, fits cannot be saved (series keep learning): {agent.store_error}")
    if agent.live_state is not None and agent.live_state.last_error is not None:
        problems.append(f"series live state cannot be written (a restart would send streaming series back to their "
                        f"fit-end state): {agent.live_state.last_error}")
    if agent.model_errors:
        problems.append(f"{len(agent.model_errors)} problem(s) with stored models (see model_errors, "
                        "`edge-agent models list`); affected series serve an older version or learn again")
    warnings = []
    if agent.ingest is not None and agent.ingest.shared:
        shared = agent.ingest.shared
        warnings.append(f"{len(shared)} series fed by more than one topic, their readings mixed in one model "
                        f"(e.g. {next(iter(shared))!r}); see subscriptions[].series")
    return {"ok": not problems, "problems": problems, "warnings": warnings, "model_errors": agent.model_errors[-20:]}


def status_line(agent: Agent) -> str:
    p = agent.pipeline
    broker = f"MQTT {agent.link.protocol} connected" if agent.link.connected.is_set() else f"broker down ({agent.link.last_error or 'connecting'})"
    if p is None:
        return f"starting; {broker}"
    return (
        f"{len(p.series)} series, {p.n_scored} scored, {p.n_raised} alarms raised; {broker}; "
        f"outbox {agent.outbox.depth}" + (" DEGRADED" if agent.outbox.degraded else "")
        + (f"; {agent.machines.status_line()}" if agent.machines is not None else "")
    )


def ready(agent: Agent) -> bool:
    return not not_ready_reasons(agent)
