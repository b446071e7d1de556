"""The running agent: wires the broker link, ingest, pipeline, model store and outbox together.

Data path (see README for the diagram)::

    MQTT message -> MqttLink._dispatch -> Ingest.handle (ingest.py)       reading enters
                 -> Pipeline.process (pipeline.py) -> detector.score_one   scored
                 -> Agent.on_alarm -> Outbox.put (outbox.py, committed)     alarm leaves
                 -> Agent.pump -> MqttLink.publish -> PUBACK -> Outbox.ack

What the agent says about itself (status topic, readiness, health) is ``agent_status.py``;
loading its models from the store ``agent_models.py``; operator state from the last run
(acks, shelves, limit alarms) ``operator_restore.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from edge_agent import agent_models, agent_status, operator_restore, series_live
from edge_agent.agent_status import status_payload
from edge_agent.alarm_event import AlarmEvent
from edge_agent.annunciator import Annunciator
from edge_agent.config import AgentConfig
from edge_agent.fitting import FitRequest
from edge_agent.ingest import Ingest, max_packet_bytes
from edge_agent.model_store import Model, ModelStore
from edge_agent.mqtt_limits import Unsendable, check_publish, payload_budget, properties_bytes
from edge_agent.mqtt_link import MqttLink
from edge_agent.outbox import Outbox, OutMessage
from edge_agent.outbox_tables import Record
from edge_agent.pipeline import Pipeline
from edge_agent.ratelimit import RateLimitedLog, clip
from edge_agent.series import Series
from edge_agent.topics import render
from edge_agent.trainers import ProcessTrainer

log = logging.getLogger(__name__)

# A connection lost within this long of sending a message counts as one failed attempt of
# the oldest message then unacknowledged (the broker handles a connection's packets in
# order, so that is the one it stopped at). After ``outbox.max_attempts`` it is quarantined.
BLAME_WINDOW_S = 10.0
# MQTT 5 DISCONNECT reasons that name the message just sent: quarantined at once.
_POISON_DISCONNECTS = {0x90: "topic name invalid", 0x95: "packet too large", 0x99: "payload format invalid"}


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
            will=(self.status_topic, status_payload(self, "offline", "connection lost")),
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
        self.commands: Any = None  # CommandHandler when commands.enabled (installed by app.py)
        self.s3: Any = None  # S3Sync when s3.enabled
        self.sparkplug: Any = None  # edge_agent.sparkplug.Sparkplug when a Sparkplug part is configured
        # Alarm conditions, acknowledgement, shelves, alarm rate (annunciator.py).
        self.annunciator = Annunciator(cfg, self, lambda sid: self.pipeline.series.get(sid) if self.pipeline is not None else None)
        self.machines: Any = None  # machines.live.LiveMachines when a subscription names a machine (issue 14)
        self.live_state: series_live.Keeper | None = None  # streaming series' live state (created in start())

    # ---- messages --------------------------------------------------------------------------
    def publish_durable(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        props: dict[str, Any] | None = None,
        kind: str = "",
        alarm: tuple[str, str, str, float, int] | None = None,
        condition: str = "model",
        records: list[Record] | None = None,
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
                condition=condition,
                records=records,
            )
        )
        return True

    def record(self, records: list[Record], alarm: tuple[str, str, str, float, int] | None = None, condition: str = "model") -> None:
        """Commit operator state (annunciator.py) with nothing to publish."""
        self.outbox.record(records, alarm, condition)

    def payload_budget(self, topic: str, qos: int, correlation: bytes | None = None) -> int:
        """The largest payload ``publish_durable`` takes for ``topic`` on the current broker."""
        return payload_budget(topic, qos, properties_bytes(bool(self.cfg.mqtt.message_expiry_s), correlation), self.link.max_packet)

    def on_alarm(self, ev: AlarmEvent) -> None:
        # The payload (alarm_payload.py), shelving, acknowledgement and the retained state
        # topic are the annunciator's; the hooks (Sparkplug) see every event, shelved or not.
        self.annunciator.on_event(ev)
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
        self.publish_durable(self.status_topic, status_payload(self, "online"), 1, retain=True)
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

    # ---- lifecycle -------------------------------------------------------------------------
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
            loaded = await self.loop.run_in_executor(self.executor, agent_models.load_models, self)
        except OSError as exc:
            loaded = []
            self.state_errors["models"] = f"cannot read model store: {exc}"
            log.error("cannot read model store %s: %s", self.store.root, exc)
        from edge_agent.outbox_tables import read_alarm_seqs, read_alarm_states

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
        self.pipeline.restorer = lambda s, live: agent_models.restore_model(self, s, live)
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
        # Where the streaming detectors were at the last write (series_live.py): a restart must
        # not send each trending series back to its fit-end state.
        self.live_state = series_live.Keeper(self.pipeline, self.cfg.state_path(series_live.FILE), self.cfg.series.live_state_every_s,
                                             self.loop, self.executor)
        self.model_errors.extend(await self.live_state.restore())
        # Alarms raised before a restart stay raised, so their "cleared" is sent in due course.
        for sid, (aid, ts) in open_alarms.items():
            try:
                s = self.pipeline.get_or_create(sid)
            except Exception:
                continue
            s.alarm.raise_at(ts)
            s.raised_id, s.last_alarm_ts = aid, ts
        await operator_restore.restore_operator_state(self, open_alarms)
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
        from edge_agent import sparkplug

        if sparkplug.wanted(self.cfg):
            self.sparkplug = await sparkplug.install(self)

    async def expire_shelves(self) -> None:
        """End shelves whose duration is up (their still-active alarms are announced then)."""
        while True:
            await asyncio.sleep(1.0)
            self.annunciator.expire()

    def _store_failed(self, error: str) -> None:
        self.store_error = error

    def _dead_letter(self, reason: str, payload: bytes, topic: str, detail: str) -> None:
        doc = {"reason": reason, "detail": detail[:200], "topic": topic[:1024], "payload_prefix": payload[:256].decode("utf-8", "replace")}
        dl = render(self.cfg.ingest.dead_letter_topic or "", {"gateway_id": self.cfg.gateway_id})
        try:
            self.link.publish(dl, json.dumps(doc).encode(), qos=0)
        except Unsendable as exc:  # best effort: a broker limit below ~2 KB
            self.unsendable[exc.reason] = self.unsendable.get(exc.reason, 0) + 1

    # ---- what the agent says about itself (agent_status.py) and its models (agent_models.py) --
    # Functions taking the agent first, so they serve as its methods: HTTP, commands, Sparkplug,
    # systemd's watchdog and the S3 sync loop call these.
    not_ready_reasons = agent_status.not_ready_reasons
    health = agent_status.health
    status_line = agent_status.status_line
    ready = agent_status.ready
    after_sync = agent_models.after_sync

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
        self.publish_durable(self.status_topic, status_payload(self, "offline", "shutdown"), 1, retain=True)
        flushed = await self.flush(3.0)
        if not flushed:
            left = max(self.outbox.depth, len(self.inflight) + len(self.outbox.ready))
            log.warning("shutdown: broker unreachable; %d message(s) stay in the outbox for the next start", left)
        if self.sparkplug is not None:
            await self.sparkplug.stop()
        await self.link.stop()
        if self.live_state is not None:
            await self.live_state.stop()  # ingest has stopped: the series' last live state
        await self.outbox.close(1.0)
        if self.s3 is not None:
            self.s3.close()
        if self.machines is not None:
            await self.machines.stop()  # machines/live.py: keeps their live state, then closes
        if self.commands is not None:
            self.commands.journal.close()
        self.trainer.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
