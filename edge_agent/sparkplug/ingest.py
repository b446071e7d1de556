"""Sparkplug B ingest: readings from Sparkplug edge nodes (PLC gateways) into ``Pipeline.process``.

Unlike the other payload formats this one is stateful. An edge node declares its metrics
once per session, in its NBIRTH (node metrics) and DBIRTHs (one per device), with a name, a
datatype and usually an alias; its NDATA/DDATA then carry values by alias (or name). So:

- births build, per node and device, a map alias|name -> (series id, datatype). The series id
  comes from the subscription's template, default ``{group}/{node}/{device}/{metric}`` (empty
  parts dropped, so a node's own metrics are ``{group}/{node}/{metric}``);
- every message of a node but NBIRTH and NDEATH carries ``seq``, one more than the previous
  (mod 256). A gap, or data from a node or device whose birth was not seen (the agent
  started after it, or the birth was lost), makes the agent ask the node for a rebirth
  (NCMD ``Node Control/Rebirth`` = true) and refuse that node's data until the birth comes:
  values mapped through an alias table that may be out of date could land on the wrong
  series. Requests are rate-limited per node and overall, and the NCMD topic is built from
  the group and node of the topic the message came on, never from payload content;
- NDEATH (when its bdSeq matches the NBIRTH's; an older session's late will is ignored) and
  DDEATH drop the state and mark the node's/device's series *stale*: nothing is scored, raised
  or cleared by a death, an open alarm stays open, and the series reads ``stale`` (status page,
  ``status`` command, the agent's own Sparkplug output) until a birth declares it again;
- numeric datatypes (Int8..UInt64, Float, Double) become readings, at the metric's own
  timestamp (else the payload's); other datatypes, nulls and values in the wrong field are
  counted by reason through ``Ingest.reject`` and never stop the node's other metrics.

Memory is bounded: nodes (``sparkplug.ingest.max_nodes``), metrics per birth and metrics held
in all (``max_metrics_per_birth``, ``max_metrics``). A birth beyond them is refused, counted,
and the node stays unborn. The payload size is checked before parsing (``ingest.max_payload_bytes``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

from edge_agent.config import AgentConfig
from edge_agent.payloads.common import Rejected
from edge_agent.pipeline import Pipeline, TooManySeries
from edge_agent.sparkplug import schema
from edge_agent.sparkplug.schema import BDSEQ, NUMERIC, Payload, SparkplugTopic, parse_topic
from edge_agent.topics import render

log = logging.getLogger(__name__)

MAX_SERIES_ID = 256  # the bound ingest.py applies to every series id
_ROUTE_CACHE_MAX = 100_000
_DOUBLE = int(schema.DataType.Double)
# Metrics that control or describe a node rather than measure a process.
_CONTROL_PREFIXES = ("Node Control/", "Device Control/", "Properties/")


@dataclass(frozen=True, slots=True)
class _Sub:
    group: str | None  # None: any
    node: str | None
    series: str
    mqtt_filter: str
    qos: int


# Per birth metric: (series id, datatype, reason) -- reason None and a series id for a reading,
# a rejection reason for a metric whose values are counted and skipped, "" to skip silently.
_Info = tuple[str | None, int, str | None]


class _Node:
    __slots__ = ("bdseq", "seq", "scope", "devices", "sizes", "entries")

    def __init__(self, bdseq: int | None, seq: int, scope: dict[Any, _Info], size: int) -> None:
        self.bdseq = bdseq
        self.seq = seq
        self.scope = scope  # the node's own metrics: alias and name -> _Info
        self.devices: dict[str, dict[Any, _Info]] = {}
        self.sizes: dict[str, int] = {}  # metrics declared per device (+1 for the device itself)
        self.entries = size + 1  # metrics declared by this node and its devices, +1 each


class _Refused(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class SparkplugIngest:
    """Routes ``spBv1.0/...`` messages of the sparkplug_b subscriptions into the pipeline.

    ``ingest`` is the agent's ``Ingest``: its counters and its rejection log are shared, so
    Sparkplug readings and rejections show up with all others (``/metrics``, ``/healthcheck``).
    ``publish(topic, payload)`` sends a QoS 0 message (rebirth requests); ``own`` is the
    agent's own (group, edge node) when it publishes as an edge node, whose messages are ignored.
    """

    def __init__(
        self,
        cfg: AgentConfig,
        pipeline: Pipeline,
        ingest: Any,
        publish: Callable[[str, bytes], Any] | None = None,
        own: tuple[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pipeline = pipeline
        self.ingest = ingest
        self.publish = publish
        self.own = own
        self.clock = clock
        icfg = cfg.sparkplug.ingest
        self.request_rebirth = icfg.request_rebirth
        self.rebirth_interval = icfg.rebirth_interval_s
        self.rebirth_rate = icfg.rebirth_requests_per_s
        self.max_nodes = icfg.max_nodes
        self.max_per_birth = icfg.max_metrics_per_birth
        self.max_metrics = icfg.max_metrics
        self.max_payload = cfg.ingest.max_payload_bytes
        self.max_abs = cfg.ingest.max_abs_value
        self.max_past_s = cfg.ingest.max_past_age_s
        self.max_future_s = cfg.ingest.max_future_skew_s
        self.subs = [_sub(sc.topic, sc.series, sc.qos) for sc in cfg.subscriptions if sc.format == "sparkplug_b"]
        self.nodes: dict[tuple[str, str], _Node] = {}
        # topic -> (parsed topic, subscription, handler): only topics of a subscription are kept,
        # and the cache is bounded, so a flood of made-up topics cannot grow it for ever.
        self._routes: dict[str, tuple[SparkplugTopic, _Sub, Any]] = {}
        self.entries = 0  # metric map entries held by all nodes (the memory bound)
        self._rebirth_at: dict[tuple[str, str], float] = {}
        self._tokens = max(1.0, self.rebirth_rate)
        self._tokens_at = clock()
        self.rebirths_requested = 0
        self.rebirths_suppressed = 0
        self.deaths = 0
        self.deaths_ignored = 0
        self.births = 0

    @property
    def filters(self) -> list[tuple[str, int]]:
        return [(s.mqtt_filter, s.qos) for s in self.subs]

    # ---- one message -------------------------------------------------------------------
    def handle(self, topic: str, payload: bytes, properties: dict[str, Any] | None = None) -> None:
        """One MQTT message under ``spBv1.0/``. Never raises."""
        ingest = self.ingest
        route = self._routes.get(topic)
        if route is None:
            t = parse_topic(topic)
            if t is not None and ((t.group, t.node) == self.own or t.type in ("NCMD", "DCMD")):
                return  # our own output, or commands to edge nodes: not readings
            sub = self._sub_for(t) if t is not None else None
            if t is None or sub is None:
                ingest.received += 1
                ingest.reject("unknown_topic", topic, payload, "not a Sparkplug B data topic of a sparkplug_b subscription")
                return
            if len(self._routes) >= _ROUTE_CACHE_MAX:
                self._routes.clear()
            route = self._routes[topic] = (t, sub, getattr(self, "_" + t.type))
        t, sub, on_type = route
        ingest.received += 1
        if len(payload) > self.max_payload:
            ingest.reject("too_large", topic, b"", f"{len(payload)} bytes")
            return
        try:
            p = Payload.FromString(payload)
        except (DecodeError, RuntimeError, ValueError) as exc:  # RuntimeError: recursion limit in upb
            ingest.reject("bad_protobuf", topic, payload, str(exc)[:120])
            return
        try:
            on_type(t, sub, p, topic)
        except _Refused as exc:
            ingest.reject(exc.reason, topic, b"", exc.detail)
        except Exception as exc:  # a bug must cost one message, never the agent
            log.exception("unexpected error handling a Sparkplug message on %r", topic[:200])
            ingest.reject("internal_error", topic, payload, repr(exc))

    def _sub_for(self, t: SparkplugTopic) -> _Sub | None:
        for s in self.subs:
            if (s.group is None or s.group == t.group) and (s.node is None or s.node == t.node):
                return s
        return None

    # ---- message types -----------------------------------------------------------------
    def _NBIRTH(self, t: SparkplugTopic, sub: _Sub, p: Payload, topic: str) -> None:
        key = (t.group, t.node)
        old = self.nodes.pop(key, None)
        if old is not None:
            self._drop(old)
        if not p.HasField("seq"):
            raise _Refused("bad_birth", "NBIRTH without seq")
        if len(self.nodes) >= self.max_nodes:
            raise _Refused("too_many_nodes", f"{self.max_nodes} edge nodes tracked (sparkplug.ingest.max_nodes)")
        bdseq = next((m.long_value for m in p.metrics if m.name == BDSEQ), None)
        scope = self._scope(p.metrics, sub, t, 1)
        node = self.nodes[key] = _Node(bdseq, p.seq % 256, scope, len(p.metrics))
        self.entries += node.entries
        self.births += 1
        self._mark(scope.values(), stale=False)
        self._readings(p, scope, topic, births=True)

    def _DBIRTH(self, t: SparkplugTopic, sub: _Sub, p: Payload, topic: str) -> None:
        node = self._in_sequence(t, p)
        assert t.device is not None
        if node.devices.pop(t.device, None) is not None:
            size = node.sizes.pop(t.device)
            node.entries -= size
            self.entries -= size
        scope = self._scope(p.metrics, sub, t, 1)
        size = node.sizes[t.device] = len(p.metrics) + 1
        node.devices[t.device] = scope
        node.entries += size
        self.entries += size
        self.births += 1
        self._mark(scope.values(), stale=False)
        self._readings(p, scope, topic, births=True)

    def _NDATA(self, t: SparkplugTopic, sub: _Sub, p: Payload, topic: str) -> None:
        node = self._in_sequence(t, p)
        self._readings(p, node.scope, topic)

    def _DDATA(self, t: SparkplugTopic, sub: _Sub, p: Payload, topic: str) -> None:
        node = self._in_sequence(t, p)
        assert t.device is not None
        scope = node.devices.get(t.device)
        if scope is None:
            self._ask_rebirth(t)
            raise _Refused("unborn", f"DDATA from device {t.device!r} before its DBIRTH")
        self._readings(p, scope, topic)

    def _NDEATH(self, t: SparkplugTopic, sub: _Sub, p: Payload, topic: str) -> None:
        key = (t.group, t.node)
        node = self.nodes.get(key)
        if node is None:
            return
        bdseq = next((m.long_value for m in p.metrics if m.name == BDSEQ), None)
        if bdseq is not None and node.bdseq is not None and bdseq != node.bdseq:
            # The will of an earlier session, delivered after the node was born again.
            self.deaths_ignored += 1
            return
        del self.nodes[key]
        self._drop(node)
        self.deaths += 1

    def _DDEATH(self, t: SparkplugTopic, sub: _Sub, p: Payload, topic: str) -> None:
        node = self._in_sequence(t, p)
        assert t.device is not None
        scope = node.devices.pop(t.device, None)
        if scope is not None:
            size = node.sizes.pop(t.device)
            node.entries -= size
            self.entries -= size
            self._mark(scope.values(), stale=True)
            self.deaths += 1

    # ---- state ---------------------------------------------------------------------------
    def _in_sequence(self, t: SparkplugTopic, p: Payload) -> _Node:
        """The born node a message belongs to, its seq checked; refuses the message otherwise."""
        key = (t.group, t.node)
        node = self.nodes.get(key)
        if node is None:
            self._ask_rebirth(t)
            raise _Refused("unborn", f"{t.type} from edge node {t.group}/{t.node} before its NBIRTH")
        expected = (node.seq + 1) & 0xFF
        if p.seq != expected or not p.HasField("seq"):
            got = p.seq if p.HasField("seq") else "none"
            del self.nodes[key]
            self._drop(node, stale=False)
            self._ask_rebirth(t)
            raise _Refused("sequence_gap", f"{t.type} seq {got}, expected {expected}: messages lost; rebirth requested")
        node.seq = expected
        return node

    def _scope(self, metrics: Iterable[Payload.Metric], sub: _Sub, t: SparkplugTopic, extra: int) -> dict[Any, _Info]:
        n = len(metrics)  # type: ignore[arg-type]
        if n > self.max_per_birth:
            raise _Refused("too_many_metrics", f"{t.type} declares {n} metrics (sparkplug.ingest.max_metrics_per_birth {self.max_per_birth})")
        if self.entries + n + extra > self.max_metrics:
            raise _Refused("too_many_metrics", f"{self.entries} metrics held; sparkplug.ingest.max_metrics is {self.max_metrics}")
        fields = {"group": t.group, "node": t.node, "device": t.device or ""}
        scope: dict[Any, _Info] = {}
        for m in metrics:
            name = m.name
            if not name:
                continue  # births name every metric (tck-id-payloads-alias-birth-requirement)
            dt = m.datatype
            info: _Info
            if name == BDSEQ or name.startswith(_CONTROL_PREFIXES):
                info = (None, dt, "")
            elif dt not in NUMERIC:
                info = (None, dt, "non_numeric")
            else:
                fields["metric"] = name
                sid = "/".join(seg for seg in render(sub.series, fields).split("/") if seg)
                info = (sid, dt, None) if 0 < len(sid) <= MAX_SERIES_ID and "\x00" not in sid else (None, dt, "bad_series_id")
            scope[name] = info
            if m.HasField("alias"):
                scope[m.alias] = info
        return scope

    def _drop(self, node: _Node, stale: bool = True) -> None:
        self.entries -= node.entries
        if stale:
            self._mark(node.scope.values(), stale=True)
            for scope in node.devices.values():
                self._mark(scope.values(), stale=True)

    def _mark(self, infos: Iterable[_Info], stale: bool) -> None:
        series = self.pipeline.series
        for sid, _, reason in infos:
            if reason is None:
                s = series.get(sid)  # type: ignore[arg-type]
                if s is not None:
                    s.stale = stale

    # ---- readings ------------------------------------------------------------------------
    def _readings(self, p: Payload, scope: dict[Any, _Info], topic: str, births: bool = False) -> None:
        now = time.time()
        payload_ms = p.timestamp or int(now * 1000)
        lo, hi = now - self.max_past_s, now + self.max_future_s
        process = self.pipeline.process
        series = self.pipeline.series
        max_abs = self.max_abs
        refused: dict[str, int] = {}
        taken = 0
        for m in p.metrics:
            info = scope.get(m.alias if m.HasField("alias") else m.name)
            if info is None:
                refused["unknown_metric"] = refused.get("unknown_metric", 0) + 1
                continue
            sid, dt, reason = info
            if reason is not None:
                if reason:
                    refused[reason] = refused.get(reason, 0) + 1
                continue
            field = m.WhichOneof("value")
            if field == "double_value" and dt == _DOUBLE:  # the common case, without a call
                value: float | None = m.double_value
            else:
                try:
                    value = schema.numeric_value(m, dt)
                except ValueError:
                    refused["bad_value"] = refused.get("bad_value", 0) + 1
                    continue
            if value is None:
                if not births:  # a birth may declare a metric with no current value
                    refused["missing_value"] = refused.get("missing_value", 0) + 1
                continue
            if not -max_abs <= value <= max_abs:  # ingest.max_abs_value; also false for NaN
                reason = "out_of_range" if value - value == 0.0 else "non_finite"
                refused[reason] = refused.get(reason, 0) + 1
                continue
            ts = (m.timestamp or payload_ms) / 1000.0
            if not lo <= ts <= hi:
                refused["ts_out_of_range"] = refused.get("ts_out_of_range", 0) + 1
                continue
            if births:
                # A birth repeats the current value; one already scored is not a new reading.
                s = series.get(sid)  # type: ignore[arg-type]
                if s is not None and ts <= s.last_ts:
                    continue
            try:
                process(sid, value, ts)  # type: ignore[arg-type]
                taken += 1
            except Rejected as exc:
                refused[exc.reason] = refused.get(exc.reason, 0) + 1
            except TooManySeries:
                refused["too_many_series"] = refused.get("too_many_series", 0) + 1
        self.ingest.readings += taken
        for reason, n in refused.items():
            self.ingest.reject(reason, topic, b"", f"{n} metric(s) of a {len(p.metrics)}-metric message", count=n)

    # ---- rebirth requests --------------------------------------------------------------------
    def _ask_rebirth(self, t: SparkplugTopic) -> None:
        if not self.request_rebirth or self.publish is None:
            return
        key = (t.group, t.node)
        now = self.clock()
        last = self._rebirth_at.get(key)
        if last is not None and now - last < self.rebirth_interval:
            self.rebirths_suppressed += 1
            return
        # Overall token bucket: many node ids (real or forged) cannot make the agent flood NCMDs.
        self._tokens = min(max(1.0, self.rebirth_rate), self._tokens + (now - self._tokens_at) * self.rebirth_rate)
        self._tokens_at = now
        if self._tokens < 1.0:
            self.rebirths_suppressed += 1
            return
        self._tokens -= 1.0
        self._rebirth_at.pop(key, None)
        if len(self._rebirth_at) >= self.max_nodes:
            self._rebirth_at.pop(next(iter(self._rebirth_at)))
        self._rebirth_at[key] = now
        self.rebirths_requested += 1
        # The topic names the node the message came from: never anything from the payload.
        self.publish(schema.topic(t.group, "NCMD", t.node), schema.rebirth_request())
        log.info("asked Sparkplug edge node %s/%s for a rebirth (%s)", t.group[:100], t.node[:100], t.type)

    def stats(self) -> dict[str, int]:
        return {
            "nodes": len(self.nodes),
            "metrics_held": self.entries,
            "births": self.births,
            "deaths": self.deaths,
            "deaths_ignored": self.deaths_ignored,
            "rebirths_requested": self.rebirths_requested,
            "rebirths_suppressed": self.rebirths_suppressed,
        }


def _sub(mqtt_filter: str, series: str, qos: int) -> _Sub:
    parts = mqtt_filter.split("/")
    return _Sub(None if parts[1] == "+" else parts[1], None if parts[3] == "+" else parts[3], series, mqtt_filter, qos)
