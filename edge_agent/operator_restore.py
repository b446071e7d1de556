"""Operator state as the last run left it, restored at start: acknowledgements, shelves (of
series and machines) and engineering-limit alarms (the outbox file's ``alarm_condition`` /
``alarm_shelve`` tables, ``annunciator.py``). A limit alarm whose limit is no longer configured
is cleared, so SCADA does not keep it for ever; so is a machine's alarm when no subscription
feeds machines any more.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from edge_agent.alarm_conditions import SERIES, owner_of
from edge_agent.alarm_event import AlarmEvent, alert_id

if TYPE_CHECKING:
    from edge_agent.agent import Agent

log = logging.getLogger("edge_agent.agent")  # split out of agent.py: its log lines keep their logger


async def restore_operator_state(agent: Agent, open_alarms: dict[str, tuple[str, float]]) -> None:
    """Acknowledgements, shelves and engineering-limit alarms as the last run left them
    (the outbox file's ``alarm_condition`` / ``alarm_shelve``, annunciator.py)."""
    from edge_agent.outbox_tables import read_operator_state

    assert agent.loop is not None and agent.pipeline is not None
    conditions, shelves = await agent.loop.run_in_executor(agent.executor, read_operator_state, agent.outbox.path)
    for sid, name, cond in agent.annunciator.restore(conditions, shelves):
        kind, oid = owner_of(sid)
        if kind != SERIES:
            # A machine's: its open alarm came back with the machine (machines/live.py), unless
            # no subscription feeds machines any more: then nothing could ever end it.
            if agent.machines is None:
                end_removed_machine(agent, oid, cond.raised)
            continue
        try:
            s = agent.pipeline.get_or_create(sid)
        except Exception:
            continue
        seq = int(cond.raised.get("seq") or 0)
        if name == "model":
            s.raised_seq = seq
        elif s.limits is not None and name in dict(s.limits.spec.highs + s.limits.spec.lows):
            s.limits.restore(name)
            s.limits.raised[name] = (seq, float(cond.raised["ts"]), str(cond.raised["alert_id"]))
        else:  # the limit is gone from the config (or the series disabled): end its alarm
            end_removed_limit(agent, sid, name, seq, cond.raised)
    for sid, (aid, ts) in open_alarms.items():
        s = agent.pipeline.series.get(sid)
        agent.annunciator.adopt_open(sid, aid, ts, int(s.settings.priority) if s is not None else 2)
    log.info("operator state: %d alarm condition(s), %d shelve(s) restored", len(conditions), len(agent.annunciator.shelves))


def end_removed_limit(agent: Agent, sid: str, name: str, seq: int, raised: dict[str, Any]) -> None:
    """A limit alarm open at the last stop whose limit the config no longer has: cleared
    now, so SCADA does not keep it for ever."""
    raised_ts = float(raised.get("ts") or 0.0)
    now = time.time()
    log.warning("series %r: its %s alarm was open at the last stop and the limit is no longer configured: cleared", sid, name)
    agent.on_alarm(AlarmEvent(
        alert_id(agent.cfg.gateway_id, sid, "cleared", seq, raised_ts), sid, "cleared", now, float(raised.get("value") or 0.0),
        float(raised.get("value") or 0.0), float(raised.get("setpoint") or 0.0), "limit", 0, str(raised.get("alert_id")),
        kind="limit", direction=raised.get("direction"), message=f"the {name} limit is no longer configured (alarm ended at start-up)",
        held_s=max(0.0, now - raised_ts), seq=seq, source="limit", limit=name, setpoint=raised.get("setpoint"),
        priority=int(raised.get("priority") or 2), unit=raised.get("unit"),
    ))


def end_removed_machine(agent: Agent, machine: str, raised: dict[str, Any]) -> None:
    """A machine alarm open at the last stop, in an agent whose config no longer has machines
    (no ``subscriptions[].machine``): cleared now, so SCADA and the operators' list do not
    keep it for ever."""
    from edge_agent.machines.machine_set import MachineAlarmEvent, machine_alert_id

    raised_ts = float(raised.get("ts") or 0.0)
    seq = int(raised.get("seq") or 0)
    model = raised.get("model") if isinstance(raised.get("model"), dict) else {}
    now = time.time()
    log.warning("machine %r: its alarm was open at the last stop and no subscription feeds machines now: cleared", machine)
    agent.annunciator.on_machine_event(MachineAlarmEvent(
        machine_alert_id(agent.cfg.gateway_id, machine, "cleared", seq, raised_ts), machine, "cleared", now,
        float(raised.get("score") or 0.0), float(raised.get("threshold") or 0.0), str(model.get("detector") or ""),
        int(model.get("version") or 0), [], str(raised.get("alert_id")), seq=seq,
        message="machines are no longer configured (alarm ended at start-up)", held_s=max(0.0, now - raised_ts),
    ))
