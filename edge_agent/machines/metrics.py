"""Prometheus metrics of the machines, read from ``MachineSet``'s plain counters at scrape time.

Registered beside the agent's own collector (``http/metrics.py``) when the agent has
machines; like it, nothing here touches the per-row path. Per-machine labels exist only while
there are at most ``http.series_label_limit`` machines (the same limit as series, counted
apart); above it they are left out and ``edge_agent_machines_labels_capped`` says so.

Over all machines (``edge_agent_machines_*``), counters (``_total``): rows assembled, rows not
scored because a sensor was stale, rows scored, machine alarms raised / cleared / accepted,
machine models fitted, machine fits failed, readings refused beyond ``machines.max_machines``.
Gauges: machines by state (``edge_agent_machines{state}``: learning, normal, alarm), machines
shelved. Per machine (``edge_agent_machine_*{machine}``): its alarm (1 / 0), whether it is
acknowledged, whether it is shelved, last score, model version, rows and incomplete rows.
A machine's alarm condition is counted with the series' in ``edge_agent_alarm_conditions``. A histogram of the time to score one row. The machine model
sync's state when S3 is on.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from edge_agent.alarm_conditions import owner_key

ALL = "edge_agent_machines"  # over all machines
ONE = "edge_agent_machine"  # per machine (label "machine")


def _label(text: str) -> str:
    # Machine ids come from topics: keep any unpaired surrogate from breaking the exposition.
    return text.encode("utf-8", "replace").decode("utf-8")


class MachineCollector(Collector):
    def __init__(self, agent: Any) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        live = getattr(self.agent, "machines", None)
        if live is None:
            return
        ms = live.set
        for name, doc, value in (
            ("rows", "Machine rows assembled from readings", ms.n_rows),
            ("rows_incomplete", "Machine rows not scored because a sensor was stale", ms.n_incomplete),
            ("rows_scored", "Machine rows scored by a model", ms.n_scored),
            ("alarms_raised", "Machine alarms raised", ms.n_raised),
            ("alarms_cleared", "Machine alarms cleared", ms.n_cleared),
            ("alarms_accepted", "Machine alarms accepted as the new normal (acceptance time or rebaseline)", ms.n_accepted),
            ("models_trained", "Machine models fitted", ms.n_models_trained),
            ("fit_failures", "Machine fits that failed", ms.n_fit_failed),
            ("readings_refused", "Readings not taken by a machine because machines.max_machines was reached", ms.n_machines_refused),
        ):
            yield CounterMetricFamily(f"{ALL}_{name}", doc, value=value)
        rec = ms.score_latency
        yield HistogramMetricFamily(f"{ALL}_score_latency_seconds", "Time to score one machine row (every 8th row timed)",
                                    buckets=rec.cumulative(), sum_value=rec.total)
        machines = ms.machines
        states = {"learning": 0, "normal": 0, "alarm": 0}
        for m in machines.values():
            states[m.state] += 1
        by_state = GaugeMetricFamily("edge_agent_machines", "Machines held, by state", labels=["state"])
        for state, n in states.items():
            by_state.add_metric([state], n)
        yield by_state
        yield GaugeMetricFamily(f"{ALL}_store_degraded", "1 while machine fits fail because the machine model store cannot be written",
                                value=float(live.store_error is not None))
        # Operators (annunciator.py): shelves; conditions and acks are counted with the series'
        # in edge_agent_alarm_conditions{state,priority} and edge_agent_alarm_acks_total.
        ann = self.agent.annunciator
        shelved = {sh.machine for sh in ann.shelves.values() if sh.machine is not None}
        yield GaugeMetricFamily(f"{ALL}_shelved", "Machines whose alarms are shelved now", value=float(len(shelved)))
        limit = self.agent.cfg.http.series_label_limit
        capped = len(machines) > limit
        yield GaugeMetricFamily(f"{ALL}_labels_capped", "1 when per-machine metrics are left out: more machines than http.series_label_limit",
                                value=float(capped))
        if not capped:
            alarm = GaugeMetricFamily(f"{ONE}_alarm", "1 while the machine is in alarm", labels=["machine"])
            score = GaugeMetricFamily(f"{ONE}_score", "The machine's last row score (alarm at >= its threshold, 1.0 by default)", labels=["machine"])
            version = GaugeMetricFamily(f"{ONE}_model_version", "Active model version of the machine (0: learning)", labels=["machine"])
            rows = CounterMetricFamily(f"{ONE}_rows", "Rows assembled for the machine", labels=["machine"])
            incomplete = CounterMetricFamily(f"{ONE}_rows_incomplete", "Rows of the machine not scored: a sensor was stale", labels=["machine"])
            acked = GaugeMetricFamily(f"{ONE}_alarm_acked", "1 while the machine's alarm is active and acknowledged", labels=["machine"])
            shelf = GaugeMetricFamily(f"{ONE}_shelved", "1 while the machine's alarms are shelved", labels=["machine"])
            for mid in sorted(machines):
                m = machines[mid]
                label = [_label(mid)]
                alarm.add_metric(label, float(m.alarm.active))
                if m.last_score == m.last_score:  # not NaN: it has scored a row
                    score.add_metric(label, m.last_score)
                version.add_metric(label, m.model.version if m.model is not None else 0)
                rows.add_metric(label, m.n_rows)
                incomplete.add_metric(label, m.n_incomplete)
                cond = ann.conditions.get(owner_key(machine=mid), {}).get("model")
                acked.add_metric(label, float(cond is not None and cond.active and cond.acked_at is not None))
                shelf.add_metric(label, float(mid in shelved))
            yield from (alarm, score, version, rows, incomplete, acked, shelf)
        yield from _s3(live.s3)


def _s3(s3: Any) -> Iterator[Metric]:
    if s3 is None:
        return
    st = s3.state()
    yield GaugeMetricFamily(f"{ALL}_s3_pending", "Machine model versions waiting to be synced", value=float(st.pending))
    if st.last_success_ts is not None:
        yield GaugeMetricFamily(f"{ALL}_s3_last_success_timestamp_seconds", "Unix time of the last successful machine model sync",
                                value=float(st.last_success_ts))
    yield GaugeMetricFamily(f"{ALL}_s3_error", "1 while the last machine model sync failed", value=float(bool(st.last_error)))
    yield CounterMetricFamily(f"{ALL}_s3_pushed", "Machine model versions pushed to S3", value=float(st.pushed_total))
    yield CounterMetricFamily(f"{ALL}_s3_pulled", "Machine model versions pulled from S3", value=float(st.pulled_total))
    yield CounterMetricFamily(f"{ALL}_s3_rejected", "Pulled machine model versions refused (checksum, format, kind)", value=float(st.rejected_total))
