"""``/metrics``: Prometheus exposition read from the agent's plain counters at scrape time.

The ingest path never touches prometheus-client (its metrics take a lock per update); instead a
custom ``Collector`` on a private registry turns counters, ``LatencyRecorder`` buckets and
gauges into metric families when a scrape arrives. Collection runs on the loop thread, so it
sees a consistent snapshot of loop-owned state.

Per-series labels exist only while the number of series is within ``http.series_label_limit``;
above it they are left out and ``edge_agent_series_labels_capped`` says so, so a gateway with
10,000 series does not blow up every scrape.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from edge_agent import __version__
from edge_agent.http.series_index import SeriesIndex, index_of
from edge_agent.machines.metrics import MachineCollector
from edge_agent.stats import LatencyRecorder

if TYPE_CHECKING:  # the agent is composed in app.py; the HTTP layer never imports it at run time
    from edge_agent.agent import Agent

P = "edge_agent_"


def _label(text: str) -> str:
    # Series ids come from topics: keep any unpaired surrogate from breaking the exposition.
    return text.encode("utf-8", "replace").decode("utf-8")


def histogram(name: str, doc: str, rec: LatencyRecorder) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, buckets=rec.cumulative(), sum_value=rec.total)


def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def counts_by(name: str, doc: str, label: str, counts: dict[str, int]) -> CounterMetricFamily:
    """A counter with one label, one sample per key of ``counts`` (sorted: a stable exposition)."""
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, n in sorted(counts.items()):
        family.add_metric([key], n)
    return family


class AgentCollector(Collector):
    def __init__(self, agent: Agent, index: SeriesIndex | None = None) -> None:
        self.agent = agent
        self.index = index  # series counts from its snapshot (the /metrics handler refreshes it)

    def collect(self) -> Iterator[Metric]:
        agent = self.agent
        cfg = agent.cfg
        yield InfoMetricFamily(P + "build", "Agent version and gateway id", value={"version": __version__, "gateway_id": cfg.gateway_id})
        yield gauge(P + "start_time_seconds", "Unix time the agent started", agent.started_at)
        yield gauge(P + "ready", "1 when the broker is connected and models are loaded", float(agent.ready()))
        yield from self._ingest()
        yield from self._pipeline()
        yield from self._outbox()
        yield from self._broker()
        yield from self._commands()
        yield from self._s3()
        yield from self._alarms()

    def _alarms(self) -> Iterator[Metric]:
        """What operators live with (annunciator.py): conditions by state and priority, shelves,
        the alarm rate over 10 minutes and the flood state (EEMUA 191)."""
        ann = getattr(self.agent, "annunciator", None)
        if ann is None:
            return
        from edge_agent.annunciator import STATES as CONDITION_STATES
        from edge_agent.priority import Priority

        counts = ann.counts()
        by = GaugeMetricFamily(P + "alarm_conditions", "Alarm conditions an operator sees, by state (active_unacked, "
                               "active_acked, cleared_unacked) and priority (1 low .. 4 critical)", labels=["state", "priority"])
        for st in CONDITION_STATES:
            for pr in Priority:
                by.add_metric([st, pr.label], counts.get((st, int(pr)), 0))
        yield by
        # Machines' conditions are in the counts above; machines shelved: edge_agent_machines_shelved.
        yield gauge(P + "alarm_series_shelved", "Series whose alarms are shelved now", sum(sh.machine is None for sh in ann.shelves.values()))
        yield counter(P + "alarms_suppressed", "Alarms raised while their series or machine was shelved (not published then)", ann.suppressed)
        yield counter(P + "alarm_acks", "Alarms acknowledged (command or HTTP)", ann.acks)
        yield gauge(P + "alarm_rate_10min", "Alarms raised and published in the last 10 minutes (EEMUA 191: ~1 per operator is manageable)", ann.rate.count())
        yield gauge(P + "alarm_flood", "1 while more than alarms.flood_per_10min alarms were raised in the last 10 minutes", float(ann.flood()))

    def _ingest(self) -> Iterator[Metric]:
        ingest = self.agent.ingest
        received = ingest.received if ingest else 0
        readings = ingest.readings if ingest else 0
        yield counter(P + "messages_received", "MQTT messages received on reading subscriptions", received)
        yield counter(P + "readings_received", "Readings decoded and taken by the pipeline (refused ones count in readings_rejected)", readings)
        yield counts_by(P + "readings_rejected", "Messages or values refused at ingest, by reason", "reason", ingest.rejected if ingest else {})
        if ingest is not None:
            guard = ingest.guard
            yield gauge(P + "readings_held", "Readings behind their topic's newest, held until the topic shows replay or clock step", guard.held_total)
            yield counter(P + "replays_refused", "Runs of held readings refused as a replay (their readings count as rejected stale)", guard.n_replays)
            yield counter(P + "clock_steps_followed", "Runs of held readings scored as a device clock stepped back", guard.n_steps)
            yield gauge(P + "series_shared_topics", "Series fed by more than one topic (their readings share one model)", len(ingest.shared))

    def _pipeline(self) -> Iterator[Metric]:
        agent = self.agent
        pipe = agent.pipeline
        if pipe is None:
            return
        yield counter(P + "readings_scored", "Readings scored by a model", pipe.n_scored)
        yield histogram(P + "score_latency_seconds", "Time to score one reading", pipe.score_latency)
        yield histogram(P + "fit_latency_seconds", "Time to fit one model", pipe.fit_latency)
        if agent.alarm_latency is not None:
            yield histogram(P + "alarm_latency_seconds", "Reading received to alarm handed to the broker", agent.alarm_latency)
        if agent.loop_lag is not None:
            yield histogram(P + "event_loop_lag_seconds", "How late the event loop ran a 50 ms timer (time it was busy elsewhere)", agent.loop_lag)
        yield counter(P + "alarms_raised", "Alarms raised", pipe.n_raised)
        yield counter(P + "alarms_cleared", "Alarms cleared", pipe.n_cleared)
        yield counter(P + "models_trained", "Models fitted and stored", pipe.n_models_trained)
        yield counter(P + "model_fit_failures", "Fits that failed", pipe.n_fit_failed)
        yield counter(P + "detector_notices", "Detectors' notices logged: what is not an alarm but an operator should know "
                      "(a series moved to an operating level a rebaseline accepted)", pipe.n_notices)
        yield counter(P + "alarms_followed", "Raises not sent: an operator's rebaseline accepted the move, and it went on the same way (alarm_follow.py)", pipe.n_followed)
        yield counter(P + "model_fits_deferred", "Fits put off: the window held nothing to learn from (one value throughout)", pipe.n_fit_deferred)
        yield gauge(P + "model_load_errors", "Problems with stored models found at start or sync (unloadable versions, bad index or ACTIVE files)", len(agent.model_errors))
        yield gauge(P + "model_store_degraded", "1 while fits fail because the model store cannot be written", float(agent.store_error is not None))
        yield counter(P + "series_refused", "Readings refused because the series limit was reached", pipe.n_series_refused)
        evicted = CounterMetricFamily(P + "series_evicted", "Series evicted to stay within the series budget, by class", labels=["class"])
        for cls, n in pipe.n_evicted.items():
            evicted.add_metric([cls], n)
        yield evicted
        yield gauge(P + "series_bytes", "Memory the series state takes, as the budget counts it (rings, bookkeeping, evicted series' live states)", pipe.series_bytes.bytes)
        yield gauge(P + "series_max_bytes", "series.max_bytes: the series memory budget", pipe.max_bytes)
        yield gauge(P + "series_max", "series.max_series: the most series held at once", pipe.max_series)
        yield gauge(P + "series_models_on_disk_only", "Series evicted with a model, reloaded when their readings return", len(pipe.evicted_models))
        yield counter(P + "series_models_reloaded", "Models of evicted series reloaded from disk", pipe.n_restored)
        yield gauge(P + "series_live_states_kept", "Live states of evicted streaming series, put back when they are reloaded", len(pipe.evicted_live))
        yield counter(P + "series_live_states_dropped", "Live states of evicted series let go for the byte budget", pipe.evicted_live.n_dropped)

        series = pipe.series
        snap = self.index.latest if self.index is not None else None
        if snap is not None and time.monotonic() - snap.taken < 5.0:
            states = {st: len(snap.by_state.get(st, ())) for st in ("learning", "normal", "alarm", "stale", "disabled")}
        else:  # no fresh snapshot (a collector used without the handler): count here
            states = {"learning": 0, "normal": 0, "alarm": 0, "stale": 0, "disabled": 0}
            for s in series.values():
                states[s.state] += 1
        by_state = GaugeMetricFamily(P + "series", "Series held, by state", labels=["state"])
        for state, n in states.items():
            by_state.add_metric([state], n)
        yield by_state
        limit = agent.cfg.http.series_label_limit
        capped = len(series) > limit
        yield gauge(P + "series_label_limit", "http.series_label_limit: per-series metrics are exported up to this many series", limit)
        yield gauge(P + "series_labels_capped", "1 when per-series metrics are left out because there are more series than the limit", float(capped))
        if capped:
            return
        alarm = GaugeMetricFamily(P + "series_alarm", "1 while the series is in alarm", labels=["series"])
        version = GaugeMetricFamily(P + "series_model_version", "Active model version of the series (0: learning)", labels=["series"])
        readings = CounterMetricFamily(P + "series_readings", "Readings received for the series", labels=["series"])
        for sid in sorted(series):
            s = series[sid]
            label = [_label(sid)]
            alarm.add_metric(label, float(s.active))
            version.add_metric(label, s.model.version if s.model is not None else 0)
            readings.add_metric(label, s.n_readings)
        yield alarm
        yield version
        yield readings

    def _outbox(self) -> Iterator[Metric]:
        out = self.agent.outbox
        yield gauge(P + "outbox_depth_messages", "Messages committed and not yet acknowledged by the broker", out.depth)
        yield gauge(P + "outbox_bytes", "Payload and topic bytes held in the outbox", out.bytes)
        yield gauge(P + "outbox_oldest_age_seconds", "Age of the oldest message in the outbox", out.oldest_age())
        yield gauge(P + "outbox_degraded", "1 while the outbox runs in memory because its file is unusable", float(bool(out.degraded)))
        yield counts_by(P + "outbox_dropped", "Messages dropped from the outbox, by reason", "reason", out.dropped)
        yield counts_by(P + "outbox_quarantined", "Messages moved out of the queue because they cannot be delivered, by reason", "reason", out.quarantined)
        yield gauge(P + "outbox_quarantine_rows", "Rows kept in the outbox's quarantine table for inspection", out.quarantine_rows)
        yield counts_by(P + "messages_unsendable", "Messages refused before queueing: topic or size beyond MQTT's or the broker's limits", "reason", self.agent.unsendable)
        stuck = bool(out.depth) and out.oldest_age() > self.agent.cfg.outbox.stuck_after_s and self.agent.link.connected.is_set()
        yield gauge(P + "outbox_stuck", "1 while connected and the oldest queued message has waited longer than outbox.stuck_after_s", float(stuck))

    def _broker(self) -> Iterator[Metric]:
        agent = self.agent
        link = agent.link
        yield gauge(P + "broker_connected", "1 while connected to the MQTT broker", float(link.connected.is_set()))
        yield counter(P + "broker_reconnects", "Reconnections to the broker", link.reconnects)
        yield counter(P + "broker_rejected_publishes", "Publishes the broker refused (ACL, quota)", agent.broker_rejected)
        yield gauge(P + "broker_max_packet_bytes", "Largest packet the agent sends: the broker's Maximum Packet Size, mqtt.max_packet_bytes or MQTT's limit", link.max_packet)
        yield gauge(P + "broker_unstable", "1 while the link has connected too often lately (see /readyz)", float(any("unstable" in r for r in agent.not_ready_reasons())))

    def _commands(self) -> Iterator[Metric]:
        cmds = self.agent.commands
        if cmds is None:
            return
        yield counter(P + "commands_received", "Messages on the command topics", cmds.received)
        yield counts_by(P + "commands_refused", "Commands refused, by reason (unsigned, bad_signature, ...)", "reason", cmds.refused)
        yield counts_by(P + "command_refusals_unanswered", "Refusals counted but not answered: rate_limited (token bucket) or bad_topic", "why", cmds.unanswered)
        yield counter(P + "command_response_topics_refused", "Signed commands whose MQTT 5 response topic was refused (answered on the fixed topic)", cmds.response_topics_refused)

    def _s3(self) -> Iterator[Metric]:
        s3 = getattr(self.agent, "s3", None)
        yield gauge(P + "s3_enabled", "1 when model sync with S3 is running", float(s3 is not None))
        if s3 is None:
            return
        pending = getattr(s3, "pending", None)
        if pending is not None:
            yield gauge(P + "s3_pending", "Model versions waiting to be synced", float(len(pending) if hasattr(pending, "__len__") else pending))
        last = getattr(s3, "last_success_ts", None)
        if last is not None:
            yield gauge(P + "s3_last_success_timestamp_seconds", "Unix time of the last successful sync", float(last))
        yield gauge(P + "s3_error", "1 while the last sync attempt failed", float(bool(getattr(s3, "last_error", None))))
        for attr, doc in (("pushed_total", "Model versions pushed to S3"), ("pulled_total", "Model versions pulled from S3"), ("rejected_total", "Pulled model versions refused (checksum, format)")):
            n = getattr(s3, attr, None)
            if n is not None:
                yield counter(P + "s3_" + attr.removesuffix("_total"), doc, float(n))


class HttpCollector(Collector):
    """The HTTP port's own counters: connections refused and timed out, wrong tokens."""

    def __init__(self, app_state: Any) -> None:
        self.app_state = app_state

    def collect(self) -> Iterator[Metric]:
        guard = getattr(self.app_state, "connections", None)
        if guard is not None:
            yield gauge(P + "http_max_connections", "Open HTTP connections allowed (http.max_connections, lowered to fit the descriptor limit)", guard.max_connections)
            yield counter(P + "http_connections_refused", "HTTP connections refused at the cap (503, closed at once)", guard.refused)
            yield counts_by(P + "http_timeouts", "HTTP connections closed because a request's headers or body did not arrive in time", "phase", guard.timed_out)
        throttle = getattr(self.app_state, "auth_throttle", None)
        if throttle is not None:
            yield counter(P + "http_auth_failures", "Requests with a wrong bearer token", throttle.failed_total)
            yield counter(P + "http_auth_throttled", "Requests refused with 429 after too many wrong tokens from their address", throttle.throttled_total)


def build_registry(agent: Agent, index: SeriesIndex | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(agent, index))
    registry.register(MachineCollector(agent))  # machines/metrics.py: nothing when the agent has none
    ProcessCollector(registry=registry)  # RSS, CPU, open fds of this process
    return registry


# Every name and label here is a classic one, so the 0.0.4 text format is exact; it is also the
# one every Prometheus server (and promtool) in the field understands.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE.split(";")[0]: {"schema": {"type": "string"}}}, "description": "Prometheus text exposition"}},
)
async def metrics(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.registry
    # Series counts from a new snapshot, taken a chunk per loop pass (series_index.py).
    await index_of(request.app.state, request.app.state.agent).snapshot(max_age_s=0)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE)
