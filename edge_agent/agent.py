"""The running agent: wires the broker link, ingest, pipeline, model store and outbox together.

Data path (see README for the diagram)::

    MQTT message -> MqttLink._dispatch -> Ingest.handle (ingest.py)       reading enters
                 -> Pipeline.process (pipeline.py) -> detector.score_one   scored
                 -> Agent.on_alarm -> Outbox.put (outbox.py, committed)     alarm leaves
                 -> Agent.pump -> MqttLink.publish -> PUBACK -> Outbox.ack
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from edge_agent import __version__, event_loop, series_budget
from edge_agent.config import AgentConfig
from edge_agent.ingest import Ingest, max_packet_bytes
from edge_agent.model_store import Model, ModelStore
from edge_agent.mqtt_limits import Unsendable, check_publish, payload_budget, properties_bytes
from edge_agent.mqtt_link import MqttLink
from edge_agent.outbox import Outbox, OutMessage
from edge_agent.pipeline import AlarmEvent, FitRequest, Pipeline, ProcessTrainer, TooManySeries
from edge_agent.ratelimit import RateLimitedLog, clip
from edge_agent.series import Series
from edge_agent.topics import render

log = logging.getLogger(__name__)

# A connection lost within this long of sending a message counts as one failed attempt of
# the oldest message then unacknowledged (the broker handles a connection's packets in
# order, so that is the one it stopped at). After ``outbox.max_attempts`` it is quarantined.
BLAME_WINDOW_S = 10.0
# MQTT 5 DISCONNECT reasons that name the message just sent: quarantined at once.
_POISON_DISCONNECTS = {0x90: "topic name invalid", 0x95: "packet too large", 0x99: "payload format invalid"}
# Connects within FLAP_WINDOW_S beyond which the broker link counts as unstable (not ready).
FLAP_CONNECTS = 4
FLAP_WINDOW_S = 60.0
# A quarantined message keeps health degraded this long after it happened.
QUARANTINE_WARN_S = 3600.0


def strict_json(doc: dict[str, Any]) -> bytes:
    """An alarm payload as strict JSON (RFC 8259: no NaN or Infinity, which JavaScript and
    orjson refuse). Ingest bounds values to keep every score finite at the source; should a
    detector still produce a non-finite number, it goes out as null and is logged, rather than
    as invalid JSON or not at all."""
    try:
        return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
    except ValueError:
        def finite(v: Any) -> Any:
            if isinstance(v, float) and not math.isfinite(v):
                return None
            return {k: finite(x) for k, x in v.items()} if isinstance(v, dict) else v

        log.error("alarm for %r carries a non-finite number (sent as null): %r", doc.get("series"), doc)
        return json.dumps(finite(doc), separators=(",", ":"), allow_nan=False).encode()


class Agent:
    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.started_at = time.time()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.store = ModelStore(cfg.state_path("models"))
        # Blocking housekeeping off the loop: loading models, rollback, reading state files.
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="edge-io")
        self.trainer: Any = None  # ProcessTrainer, created in start()
        self.pipeline: Pipeline | None = None
        self.ingest: Ingest | None = None
        self.outbox = Outbox(
            cfg.state_path(cfg.outbox.path),
            synchronous=cfg.outbox.synchronous,
            max_rows=cfg.outbox.max_rows,
            max_bytes=cfg.outbox.max_bytes,
            max_age_s=cfg.outbox.max_age_s,
            retry_s=cfg.outbox.retry_s,
        )
        self.unsendable: dict[str, int] = {}  # messages refused before queueing, by reason
        self.last_unsendable: tuple[float, str] | None = None
        self._unsendable_log = RateLimitedLog(log, 10.0)
        self.status_topic = render(cfg.status.topic, {"gateway_id": cfg.gateway_id})
        self.link = MqttLink(
            cfg.mqtt,
            cfg.client_id,
            on_message=self.on_message,
            on_connected=self.on_connected,
            on_disconnected=self.on_disconnected,
            on_ack=self.on_ack,
            will=(self.status_topic, self._status_payload("offline", "connection lost")),
            on_oversize=lambda topic, size: self.ingest.oversize(topic, size),
            max_packet_bytes=max_packet_bytes(cfg),
        )
        self.inflight: dict[int, OutMessage] = {}
        self.models_loaded = False
        self.model_errors: list[str] = []
        self.broker_rejected = 0
        self.alarm_latency = None  # set in start(); LatencyRecorder of reading ts -> alarm publish
        self.loop_lag: Any = None  # LatencyRecorder of event-loop timer lateness (run_agent's probe)
        self.hooks_on_model: list[Any] = []
        self.hooks_on_alarm: list[Any] = []  # called with each AlarmEvent once its message is queued
        self.message_handlers: list[tuple[str, Any]] = []  # (mqtt filter prefix, handler) for command topics
        self.state_errors: dict[str, str] = {}
        # The last fit that failed because the store could not be written (full, read-only):
        # health says so until a fit saves again.
        self.store_error: str | None = None
        self.commands: Any = None  # CommandHandler when commands.enabled
        self.s3: Any = None  # S3Sync when s3.enabled
        self.sparkplug: Any = None  # edge_agent.sparkplug.Sparkplug when a Sparkplug part is configured
        self.machines: Any = None  # machines.live.LiveMachines when a subscription names a machine (issue 14)

    # ---- messages --------------------------------------------------------------------------
    def _status_payload(self, state: str, reason: str | None = None) -> bytes:
        doc: dict[str, Any] = {
            "state": state,
            "gateway_id": self.cfg.gateway_id,
            "agent_version": __version__,
            "started_at": self.started_at,
            "ts": time.time(),
        }
        if reason:
            doc["reason"] = reason
        return json.dumps(doc, separators=(",", ":")).encode()

    def publish_durable(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        props: dict[str, Any] | None = None,
        kind: str = "",
        alarm: tuple[str, str, str, float, int] | None = None,
    ) -> bool:
        """Commit a message to the outbox; it is published once durable, and retried until acked.

        A message that can never be delivered (bad topic, larger than MQTT or the broker
        allows) is refused here, counted in ``unsendable`` and logged, and False returned:
        queued, it could only be quarantined later (``mqtt_limits``).
        """
        expiry = self.cfg.mqtt.message_expiry_s
        corr = props.get("correlation_data") if props else None
        try:
            check_publish(topic, len(payload), qos, properties_bytes(bool(expiry), corr.encode("latin-1") if corr else None), self.link.max_packet)
        except Unsendable as exc:
            self.unsendable[exc.reason] = self.unsendable.get(exc.reason, 0) + 1
            self.last_unsendable = (time.time(), f"{kind or 'response/status'} to {topic[:120]!r}: {exc}")
            self._unsendable_log.error("not sending a %s message to %s: %s", kind or "response/status", clip(topic), exc)
            return False
        self.outbox.put(
            OutMessage(
                topic,
                payload,
                qos,
                retain,
                expires=(time.time() + expiry) if expiry else None,
                props=json.dumps(props) if props else None,
                kind=kind,
                alarm=alarm,
            )
        )
        return True

    def payload_budget(self, topic: str, qos: int, correlation: bytes | None = None) -> int:
        """The largest payload ``publish_durable`` takes for ``topic`` on the current broker."""
        return payload_budget(topic, qos, properties_bytes(bool(self.cfg.mqtt.message_expiry_s), correlation), self.link.max_packet)

    def on_alarm(self, ev: AlarmEvent) -> None:
        doc: dict[str, Any] = {
            "alert_id": ev.alert_id,
            "gateway_id": self.cfg.gateway_id,
            "series": ev.series,
            "state": ev.state,
            "ts": ev.ts,
            "value": ev.value,
            "score": ev.score,
            "threshold": ev.threshold,
            "model": {"detector": ev.detector, "version": ev.version},
        }
        if ev.raised_alert_id:
            doc["raised_alert_id"] = ev.raised_alert_id
        if ev.kind is not None:
            doc["kind"] = ev.kind
            doc["direction"] = ev.direction
            doc["expected"] = {"low": _finite(ev.expected_low), "high": _finite(ev.expected_high)}
        if ev.held_s is not None:
            doc["held_s"] = round(ev.held_s, 3)
            doc["peak_score"] = ev.peak_score
        doc["message"] = ev.message
        doc["seq"] = ev.seq
        payload = strict_json(doc)
        values = {"gateway_id": self.cfg.gateway_id, "series": ev.series}
        self.publish_durable(
            render(self.cfg.alarms.topic, values), payload, self.cfg.alarms.qos, kind="alarm",
            alarm=(ev.state, ev.series, ev.raised_alert_id or ev.alert_id, ev.ts, ev.seq),
        )
        if self.cfg.alarms.state_topic:
            self.publish_durable(render(self.cfg.alarms.state_topic, values), payload, 1, retain=True)
        for hook in self.hooks_on_alarm:
            hook(ev)

    def on_message(self, topic: str, payload: bytes, qos: int, properties: dict[str, Any]) -> None:
        for prefix, handler in self.message_handlers:
            if topic.startswith(prefix):
                handler(topic, payload, properties)
                return
        assert self.ingest is not None
        self.ingest.handle(topic, payload)

    # ---- publishing ------------------------------------------------------------------------
    def pump(self) -> None:
        """Publish committed messages while the in-flight window has room."""
        link = self.link
        if not link.connected.is_set():
            return
        room = link.inflight_window - len(self.inflight)
        while room > 0:
            batch = self.outbox.take(room)
            if not batch:
                return
            for i, msg in enumerate(batch):
                props: dict[str, Any] = {}
                if msg.expires is not None:
                    props["message_expiry_interval"] = max(1, int(msg.expires - time.time()))
                if msg.props:
                    extra = json.loads(msg.props)
                    if "correlation_data" in extra:
                        extra["correlation_data"] = extra["correlation_data"].encode("latin-1")
                    props.update(extra)
                try:
                    mid = link.publish(msg.topic, msg.payload, msg.qos, msg.retain, **props)
                except Unsendable as exc:  # e.g. a row older than the broker's lower limit
                    self.outbox.quarantine(msg, exc.reason, exc.detail)
                    continue
                if mid is None:
                    self.outbox.requeue(batch[i:])
                    return
                msg.sent_at = time.monotonic()
                if msg.kind == "alarm" and self.alarm_latency is not None:
                    # Reading received -> alarm on the wire (the alarm is created in the same
                    # callback that received the reading).
                    self.alarm_latency.observe(time.time() - msg.created)
                if msg.qos == 0:
                    self.outbox.ack(msg)
                else:
                    self.inflight[mid] = msg
            room = link.inflight_window - len(self.inflight)

    def _outbox_ready(self) -> None:
        self.link.release_acks()
        self.pump()

    def on_ack(self, mid: int, reason: int) -> None:
        msg = self.inflight.pop(mid, None)
        if msg is None:
            return
        if reason >= 0x80:
            # The broker took the message and refused it (ACL, quota, topic). Retrying cannot
            # help; say so loudly with the content so nothing vanishes silently.
            self.broker_rejected += 1
            log.error("broker refused publish to %r (reason 0x%02x); message: %s", msg.topic, reason, msg.payload[:500])
        self.outbox.ack(msg)
        self.pump()

    async def on_connected(self) -> None:
        # Anything in flight on the old connection is sent again, in order; subscribers
        # deduplicate on alert_id.
        self._requeue_inflight()
        self.publish_durable(self.status_topic, self._status_payload("online"), 1, retain=True)
        self.pump()

    def on_disconnected(self) -> None:
        self._requeue_inflight()

    def _requeue_inflight(self) -> None:
        """Put unacknowledged messages back at the head, minus the one the broker choked on.

        A message the broker cannot take may make it drop the connection (a packet over a
        limit it did not advertise, a 3.1.1 broker's ACL): resent first after every
        reconnect, it would hold back every alarm behind it. The oldest unacknowledged
        message sent shortly before the loss is blamed; after ``outbox.max_attempts``
        blames (at once, for a DISCONNECT reason that names it) it is quarantined.
        """
        if not self.inflight:
            return
        msgs = sorted(self.inflight.values(), key=lambda m: m.id)
        self.inflight.clear()
        head = msgs[0]
        reason = self.link.disconnect_reason
        self.link.disconnect_reason = None
        if reason in _POISON_DISCONNECTS:
            head.attempts = self.cfg.outbox.max_attempts
        elif time.monotonic() - head.sent_at <= BLAME_WINDOW_S:
            head.attempts += 1
        if head.attempts >= self.cfg.outbox.max_attempts:
            why = _POISON_DISCONNECTS.get(reason or 0, "no acknowledgement")
            self.outbox.quarantine(head, "broker_disconnect", f"the broker dropped the connection {head.attempts} time(s) after it was sent ({why})")
            msgs = msgs[1:]
        self.outbox.requeue(msgs)

    def on_model(self, series: Series, model: Model, req: FitRequest) -> None:
        if self.store_error is not None:
            log.warning("model store works again (%s saved v%d); it was: %s", series.id, model.version, self.store_error)
            self.store_error = None
        log.info("series %r: model v%d (%s) active after %s fit on %d readings", series.id, model.version, model.detector.name, req.reason, len(req.values))
        for hook in self.hooks_on_model:
            hook(series, model, req)

    # ---- operations shared by the HTTP API and the command topics ------------------------------
    async def fit_series(
        self,
        series_id: str,
        values: Any = None,
        detector: str | None = None,
        params: dict[str, Any] | None = None,
        last_n: int | None = None,
        reason: str = "command",
    ) -> Model:
        """Fit a new version for one series (off the loop), activate it, and return it.

        Training data: ``values`` if given, else the last ``last_n`` readings of the ring buffer.
        Raises ValueError for an unknown series / too little data, TypeError for bad params.
        """
        import numpy as np

        from edge_agent import detectors

        assert self.pipeline is not None and self.loop is not None
        from edge_agent.fit_bounds import check_fit_params

        name = detector or self.cfg.detector.name
        detectors.create(name, params if params is not None else self.cfg.detector.params)  # fail fast on bad params
        check_fit_params(name, params)  # what a fit may cost (the command and POST /fit come here)
        s = self.pipeline.series.get(series_id)
        if values is None:
            if s is None or s.count < 2:
                raise ValueError(f"series {series_id!r} has no readings to train on")
            values = s.recent_values(last_n)
        values = np.asarray(values, dtype=np.float64)
        limit = self.cfg.ingest.max_abs_value
        if values.ndim != 1 or values.shape[0] < 2 or not (np.abs(values) <= limit).all():
            raise ValueError(f"training values must be at least 2 finite numbers within +-ingest.max_abs_value ({limit:g})")
        if s is None:
            s = self.pipeline.get_or_create(series_id)
        fut: asyncio.Future[Model] = self.loop.create_future()

        def done(model: Model | None, exc: BaseException | None) -> None:
            if not fut.done():
                fut.set_exception(exc) if exc is not None else fut.set_result(model)  # type: ignore[arg-type]

        self.pipeline.request_fit(s, reason=reason, values=values, detector=name, params=params, done=done)
        return await fut

    def rebaseline_series(self, series_id: str) -> dict[str, Any]:
        """Accept a series' current behaviour as its new normal now (the ``rebaseline`` command).
        A raised alarm ends with an ``accepted`` message. Raises ValueError for a series
        without a model."""
        assert self.pipeline is not None
        result = self.pipeline.rebaseline(series_id, by="the rebaseline command")
        log.info("series %r: rebaselined (%s)%s", series_id, result["method"], "; its alarm is accepted" if result["was_in_alarm"] else "")
        return result

    async def after_sync(self, report: Any) -> None:
        """Adopt models a sync pulled and activated: the store changed under the running series."""
        if not getattr(report, "pulled", 0) or self.pipeline is None or self.loop is None:
            return

        def changed() -> list[tuple[str, Model]]:
            out = []
            for sid in self.store.list_series():
                active = self.store.active_version(sid)
                s = self.pipeline.series.get(sid) if self.pipeline else None
                current = s.model.version if s is not None and s.model is not None else None
                if active is not None and active != current:
                    try:
                        model, errors = self.store.load_active(sid)
                    except Exception as exc:
                        model, errors = None, [f"{sid!r}: cannot load ({exc!r})"]
                    self.model_errors.extend(errors)
                    if model is not None:
                        out.append((sid, model))
            return out

        for sid, model in await self.loop.run_in_executor(self.executor, changed):
            try:
                s = self.pipeline.get_or_create(sid)
            except TooManySeries:  # no room now: the model loads when the series' readings come
                self.pipeline.evicted_models.add(sid)
                continue
            s.model = model
            s.changes += 1
            log.info("series %r: model v%d (%s) pulled from S3 is active", sid, model.version, model.detector.name)

    async def rollback_series(self, series_id: str, version: int | None = None) -> Model:
        """Activate an older stored version (default: the one before the active one)."""
        assert self.pipeline is not None and self.loop is not None
        model = await self.loop.run_in_executor(self.executor, self.store.rollback, series_id, version)
        s = self.pipeline.get_or_create(series_id)
        s.model = model
        s.changes += 1
        log.info("series %r: rolled back to v%d", series_id, model.version)
        return model

    # ---- lifecycle -------------------------------------------------------------------------
    def _load_models(self) -> list[tuple[str, Model]]:
        """Every stored series' active model. A bad file costs its model (reported in the log,
        health, /metrics and ``models list``), never the start: the agent used to exit 1 on every
        start over one deeply nested meta.json."""
        self.store.cleanup_temp()
        scan = self.store.scan(repair=True)
        for problem in scan.problems:
            log.error("model store: %s", problem)
        self.model_errors.extend(scan.problems)
        out = []
        for sid in scan.series:
            try:
                model, errors = self.store.load_active(sid)
            except Exception as exc:  # a bug or an OS error on one series must not stop the rest
                model, errors = None, [f"{sid!r}: cannot load ({exc!r})"]
            for err in errors:
                log.error("model store: %s", err)
            self.model_errors.extend(errors)
            if model is not None:
                if errors:
                    active = self.store.active_version(sid)
                    older = "older " if active is not None and model.version < active else ""
                    log.warning("series %r: serving %sversion v%d", sid, older, model.version)
                out.append((sid, model))
        return out

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        from edge_agent.stats import LatencyRecorder

        self.alarm_latency = LatencyRecorder()
        self.trainer = ProcessTrainer(self.loop, self.store, timeout_s=self.cfg.detector.fit_timeout_s)
        self.pipeline = Pipeline(
            self.cfg,
            trainer=self.trainer,
            on_alarm=self.on_alarm,
            store=self.store,
            on_model=self.on_model,
        )
        # ---- machines (issue 14): everything machine-side is in machines/live.py ----
        from edge_agent.machines import live as machines_live

        if machines_live.wanted(self.cfg):
            self.machines = machines_live.LiveMachines(self)
        self.ingest = Ingest(self.cfg, self.pipeline, on_reject=self._dead_letter if self.cfg.ingest.dead_letter_topic else None,
                             machines=self.machines.set if self.machines is not None else None)
        try:
            loaded = await self.loop.run_in_executor(self.executor, self._load_models)
        except OSError as exc:
            loaded = []
            self.state_errors["models"] = f"cannot read model store: {exc}"
            log.error("cannot read model store %s: %s", self.store.root, exc)
        from edge_agent.outbox import read_alarm_seqs, read_alarm_states

        open_alarms = await self.loop.run_in_executor(self.executor, read_alarm_states, self.outbox.path)
        seqs = await self.loop.run_in_executor(self.executor, read_alarm_seqs, self.outbox.path)
        # Machines keep their alarms in the same tables, under keys no series id can be.
        open_alarms, machine_alarms = machines_live.split_keys(open_alarms)
        seqs, machine_seqs = machines_live.split_keys(seqs)
        if self.machines is not None:
            await self.machines.start(machine_alarms, machine_seqs)
        # Alarm ids go on from each series' last sequence number (set before any series exists);
        # and readings the broker redelivers from before a series' last alarm edge were scored
        # by the last run.
        self.pipeline.alarm_seqs = {sid: seq for sid, (seq, _) in seqs.items()}
        self.ingest.floors = {sid: ts for sid, (_, ts) in seqs.items()}
        self.pipeline.tick(time.monotonic())
        self.pipeline.restorer = self._restore_model
        self.pipeline.on_store_error = self._store_failed
        deferred = 0
        for sid, model in loaded:
            try:
                if self.pipeline.adopt(sid, model) is None:
                    deferred += 1
            except Exception as exc:
                log.error("cannot adopt model for %r: %s", sid, exc)
        if deferred:
            log.warning("%d stored model(s) beyond the series budget (series.max_series / max_bytes): each loads "
                        "when its series' readings come", deferred)
        # Alarms raised before a restart stay raised, so their "cleared" is sent in due course.
        for sid, (aid, ts) in open_alarms.items():
            try:
                s = self.pipeline.get_or_create(sid)
            except Exception:
                continue
            s.alarm.raise_at(ts)
            s.raised_id, s.last_alarm_ts = aid, ts
        self.models_loaded = True
        log.info("loaded %d model(s) from %s; %d alarm(s) open", len(loaded), self.store.root, len(open_alarms))
        self.outbox.on_ready = self._outbox_ready
        # A reading is acknowledged to the broker only once the alarm it raised is committed:
        # a crash in between then means the broker delivers the reading again.
        self.link.ack_gate = self.outbox.durable
        self.outbox.start(self.loop)
        for sub in self.ingest.subscriptions:
            self.link.subscribe(sub.mqtt_filter, sub.cfg.qos)
        if self.cfg.s3.enabled:
            from edge_agent.s3_sync import S3Sync

            self.s3 = S3Sync(self.cfg, self.store)
            self.s3_wake = asyncio.Event()

            def push_new_version(series: Series, model: Model, req: FitRequest) -> None:
                self.s3.enqueue_push(series.id, model.version)
                self.s3_wake.set()

            self.hooks_on_model.append(push_new_version)
        if self.cfg.commands.enabled:
            from edge_agent.commands import CommandHandler

            self.commands = CommandHandler(self)
            await self.commands.install()
        from edge_agent import sparkplug

        if sparkplug.wanted(self.cfg):
            self.sparkplug = await sparkplug.install(self)

    def _store_failed(self, error: str) -> None:
        self.store_error = error

    def _restore_model(self, s: Series) -> None:
        """An evicted series' readings are back: load its model off the loop (Pipeline._restore)."""
        assert self.loop is not None and self.pipeline is not None
        pipeline = self.pipeline

        def load() -> Model | None:
            model, errors = self.store.load_active(s.id)
            for err in errors:
                log.error("model store: %s", err)
            return model

        def done(fut: asyncio.Future[Model | None]) -> None:
            model = None
            if not fut.cancelled():
                exc = fut.exception()
                if exc is not None:
                    log.error("series %r: cannot reload its model: %r", s.id, exc)
                else:
                    model = fut.result()
            pipeline.restored(s, model)
            if model is not None:
                log.info("series %r: model v%d reloaded (the series had been evicted)", s.id, model.version)

        self.loop.run_in_executor(self.executor, load).add_done_callback(done)

    def _dead_letter(self, reason: str, payload: bytes, topic: str, detail: str) -> None:
        doc = {"reason": reason, "detail": detail[:200], "topic": topic[:1024], "payload_prefix": payload[:256].decode("utf-8", "replace")}
        dl = render(self.cfg.ingest.dead_letter_topic or "", {"gateway_id": self.cfg.gateway_id})
        try:
            self.link.publish(dl, json.dumps(doc).encode(), qos=0)
        except Unsendable as exc:  # best effort: a broker limit below ~2 KB
            self.unsendable[exc.reason] = self.unsendable.get(exc.reason, 0) + 1

    def not_ready_reasons(self) -> list[str]:
        """Why the agent is not doing its job now (``/readyz`` fails with these)."""
        reasons = []
        link = self.link
        if not link.connected.is_set():
            reasons.append(f"broker not connected: {link.last_error or 'connecting'}")
        connects = link.recent_connects(FLAP_WINDOW_S)
        if connects >= FLAP_CONNECTS:
            reasons.append(f"broker connection unstable: {connects} connects in the last {FLAP_WINDOW_S:g} s")
        if not self.models_loaded:
            reasons.append("models not loaded yet")
        waited = self.outbox.oldest_age()
        if link.connected.is_set() and self.outbox.depth and waited > self.cfg.outbox.stuck_after_s:
            reasons.append(
                f"outbox not draining: its oldest message has waited {waited:.0f} s (outbox.stuck_after_s is "
                f"{self.cfg.outbox.stuck_after_s:g}), {self.outbox.depth} message(s) queued"
            )
        return reasons

    def health(self) -> dict[str, Any]:
        problems = self.not_ready_reasons()
        last = self.outbox.last_quarantine
        if last is not None and time.time() - last[0] < QUARANTINE_WARN_S:
            n = sum(self.outbox.quarantined.values())
            problems.append(f"outbox: {n} undeliverable message(s) quarantined since start, the last to {last[2]!r} ({last[1]})")
        if self.last_unsendable is not None and time.time() - self.last_unsendable[0] < QUARANTINE_WARN_S:
            n = sum(self.unsendable.values())
            problems.append(f"{n} message(s) could not be sent at all since start (MQTT or broker limits), the last a {self.last_unsendable[1]}")
        if self.outbox.degraded:
            problems.append(f"outbox degraded: {self.outbox.degraded}")
        problems += [f"{k}: {v}" for k, v in self.state_errors.items()]
        if self.commands is not None and self.commands.journal.error:
            problems.append(self.commands.journal.error)
        if self.sparkplug is not None:
            problems += self.sparkplug.problems()
        problems += series_budget.problems(self.pipeline) if self.pipeline is not None else []
        problems += self.machines.problems() if self.machines is not None else []
        if self.store_error is not None:
            problems.append(f"model store degraded, fits cannot be saved (series keep learning): {self.store_error}")
        if self.model_errors:
            problems.append(f"{len(self.model_errors)} problem(s) with stored models (see model_errors, "
                            "`edge-agent models list`); affected series serve an older version or learn again")
        warnings = []
        if self.ingest is not None and self.ingest.shared:
            shared = self.ingest.shared
            warnings.append(f"{len(shared)} series fed by more than one topic, their readings mixed in one model "
                            f"(e.g. {next(iter(shared))!r}); see subscriptions[].series")
        return {"ok": not problems, "problems": problems, "warnings": warnings, "model_errors": self.model_errors[-20:]}

    def status_line(self) -> str:
        p = self.pipeline
        broker = f"MQTT {self.link.protocol} connected" if self.link.connected.is_set() else f"broker down ({self.link.last_error or 'connecting'})"
        if p is None:
            return f"starting; {broker}"
        return (
            f"{len(p.series)} series, {p.n_scored} scored, {p.n_raised} alarms raised; {broker}; "
            f"outbox {self.outbox.depth}" + (" DEGRADED" if self.outbox.degraded else "")
            + (f"; {self.machines.status_line()}" if self.machines is not None else "")
        )

    def ready(self) -> bool:
        return not self.not_ready_reasons()

    async def flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.inflight and not self.outbox.ready and not self.outbox._cmd and self.outbox.depth == 0:
                return True
            if not self.link.connected.is_set():
                return False
            self.pump()
            await asyncio.sleep(0.02)
        return False

    async def shutdown(self) -> None:
        log.info("shutting down: flushing outbox")
        self.publish_durable(self.status_topic, self._status_payload("offline", "shutdown"), 1, retain=True)
        flushed = await self.flush(3.0)
        if not flushed:
            left = max(self.outbox.depth, len(self.inflight) + len(self.outbox.ready))
            log.warning("shutdown: broker unreachable; %d message(s) stay in the outbox for the next start", left)
        if self.sparkplug is not None:
            await self.sparkplug.stop()
        await self.link.stop()
        await self.outbox.close(1.0)
        if self.s3 is not None:
            self.s3.close()
        if self.machines is not None:
            await self.machines.stop()  # machines/live.py: keeps their live state, then closes
        if self.commands is not None:
            self.commands.journal.close()
        self.trainer.close()
        self.executor.shutdown(wait=False, cancel_futures=True)


async def _freeze_startup_heap(agent: Agent, settle_s: float = 2.0) -> None:
    """Move everything alive after start-up out of the cyclic collector's sight.

    Imports (numpy, FastAPI, boto3, ...) and the loaded models leave a few hundred thousand
    long-lived objects. Python's full (generation 2) collection walks all of them, and it
    runs on whichever thread allocates: measured in the side-load bench, the loop stalled
    for 30-150 ms per full collection while fits were being installed, the largest share
    of the reading-to-alarm p99. Frozen objects are still freed by reference counting;
    only cycles among them would be kept, and start-up objects live until exit anyway.
    """
    import gc

    await agent.link.connected.wait()
    await asyncio.sleep(settle_s)  # let lazy imports of the first requests settle too
    gc.collect()
    gc.freeze()
    log.debug("start-up heap frozen: %d objects no longer scanned by the cyclic collector", gc.get_freeze_count())


LOOP_PROBE_S = 0.05


async def _probe_loop_lag(agent: Agent) -> None:
    """How late the event loop runs a timer: every alarm waits as long as the loop is busy
    with something else (a large HTTP request, a plot, a listing of every series). Exported
    as ``edge_agent_event_loop_lag_seconds``; 20 probes a second cost nothing measurable."""
    from edge_agent.stats import LatencyRecorder

    loop = asyncio.get_running_loop()
    agent.loop_lag = LatencyRecorder()
    while True:
        t0 = loop.time()
        await asyncio.sleep(LOOP_PROBE_S)
        agent.loop_lag.observe(max(0.0, loop.time() - t0 - LOOP_PROBE_S))


async def run_agent(cfg: AgentConfig, extra_tasks: list[Any] | None = None, stop: asyncio.Event | None = None) -> int:
    # Worker threads (outbox writer, fits, S3) hand the GIL back to the event loop only every
    # switch interval; at the 5 ms default a commit or a fit adds up to 5 ms to an alarm's
    # latency. 0.5 ms keeps the loop responsive for a small cost in thread throughput.
    sys.setswitchinterval(0.0005)
    agent = Agent(cfg)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    _writable_parent(cfg.state_dir)
    log.info("edge-agent %s starting on the %s event loop", __version__, event_loop.name(loop))
    from edge_agent.notify import Notifier, watchdog_loop

    notifier = Notifier.from_env()
    await agent.start()
    tasks = [asyncio.create_task(agent.link.run(), name="mqtt-link")]
    if notifier.enabled:

        async def tell_systemd() -> None:
            # READY=1 only once the agent does its job: connected, with its models loaded.
            await agent.link.connected.wait()
            notifier.ready(agent.status_line())
            await watchdog_loop(notifier, agent.status_line)

        tasks.append(asyncio.create_task(tell_systemd(), name="sd-notify"))
    if cfg.http.enabled:
        try:
            from edge_agent.http.server import serve
        except ImportError as exc:  # the HTTP port is optional at build time, never silently
            log.error("HTTP port disabled: %s", exc)
        else:
            tasks.append(asyncio.create_task(serve(agent), name="http"))
    if agent.s3 is not None:
        tasks.append(asyncio.create_task(agent.s3.run_forever(agent.s3_wake, on_report=agent.after_sync), name="s3-sync"))
    if agent.sparkplug is not None:
        tasks += agent.sparkplug.tasks()
    if agent.machines is not None:
        tasks += agent.machines.tasks()
    for factory in extra_tasks or []:
        tasks.append(asyncio.create_task(factory(agent)))
    tasks.append(asyncio.create_task(_freeze_startup_heap(agent), name="gc-freeze"))
    tasks.append(asyncio.create_task(_probe_loop_lag(agent), name="loop-lag"))
    tasks.append(asyncio.create_task(series_budget.upkeep(agent.pipeline, cfg.ingest.reject_log_interval_s), name="series-upkeep"))
    await stop.wait()
    notifier.stopping("shutting down: flushing the outbox")
    await agent.shutdown()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    log.info("stopped")
    return 0


def _finite(x: float | None) -> float | None:
    """A float for a JSON payload: None rather than NaN or infinity (not JSON)."""
    return x if x is not None and math.isfinite(x) else None


def _writable_parent(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
        return True
    except OSError as exc:
        log.error("state directory %s is not usable: %s", path, exc)
        return False
