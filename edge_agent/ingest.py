"""Where a reading enters: topic -> subscription -> decoded value(s) -> ``Pipeline.process``.

This runs inside the MQTT client's packet callback, once per message, so it is kept short:
a dict lookup for topics already seen, one decode, one pipeline call. Nothing here queues:
when scoring cannot keep up, TCP flow control pushes back to the broker, which holds QoS 1
readings in the agent's persistent session (bounded by the broker's own queue limits).

A subscription with ``machine`` set also feeds each reading the series took to the
machine's row (``machines.MachineSet``, when one is given); a ``json_multi`` message feeds
every sensor's series and then the machine's row at once.

Replay protection lives here, per topic (``replay.py``): a broker redelivers a reading on the
topic it came on, and each topic keeps its own clock. The common case (a reading at or after
its topic's newest) costs two comparisons and a store.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent.config import AgentConfig, SubscriptionConfig
from edge_agent.machines.machine_set import TooManyMachines
from edge_agent.payloads import FORMATS, MULTI_VALUE, Rejected, TsLimits
from edge_agent.pipeline import Pipeline, TooManySeries
from edge_agent.replay import NEVER, ReplayGuard, Route
from edge_agent.series import Series
from edge_agent.topics import TopicTemplate, check_series_template, render

if TYPE_CHECKING:
    from edge_agent.machines.machine_set import MachineSet

log = logging.getLogger(__name__)

_MAX_SERIES_ID = 256
_ROUTE_CACHE_MAX = 200_000
_SHARED_TOPICS_KEPT = 8  # topics remembered per series fed by several (they are reported)
# json_multi: where the payload key goes in a topic's series id (NUL never survives route()).
_KEY = "\x00"


def max_packet_bytes(cfg: AgentConfig) -> int:
    """The MQTT packet size above which the link discards a PUBLISH unread (mqtt_framing):
    the payload limit plus room for the largest topic (64 KB) and MQTT 5 properties."""
    return cfg.ingest.max_payload_bytes + 131_072


@dataclass(frozen=True, slots=True)
class DecodeOptions:
    value_field: str
    ts_field: str
    ts_unit: str
    max_batch: int
    max_abs: float  # readings beyond +-max_abs are rejected (out_of_range)


@dataclass(slots=True)
class Subscription:
    cfg: SubscriptionConfig
    template: TopicTemplate
    mqtt_filter: str
    decode: Callable
    is_batch: bool
    opts: DecodeOptions
    multi: bool = False  # several named readings per message (payloads.MULTI_VALUE)
    machine: str | None = None  # machine id template, when readings also feed a machine row


def build_subscriptions(cfg: AgentConfig) -> list[Subscription]:
    subs = []
    for sc in cfg.subscriptions:
        if sc.format == "sparkplug_b":
            continue  # stateful: edge_agent/sparkplug/ingest.py takes these messages
        tpl = TopicTemplate.parse(sc.topic)
        multi = sc.format in MULTI_VALUE
        check_series_template(sc.series, tpl, extra=("sensor",) if multi else ())
        decode, is_batch = FORMATS[sc.format]
        flt = tpl.mqtt_filter()
        if sc.share_group:
            flt = f"$share/{sc.share_group}/{flt}"
        max_abs = sc.max_abs_value if sc.max_abs_value is not None else cfg.ingest.max_abs_value
        opts = DecodeOptions(sc.value_field, sc.ts_field, sc.ts_unit, cfg.ingest.max_batch, max_abs)
        subs.append(Subscription(sc, tpl, flt, decode, is_batch, opts, multi, sc.machine))
    return subs


class Ingest:
    def __init__(
        self,
        cfg: AgentConfig,
        pipeline: Pipeline,
        on_reject: Callable[[str, bytes, str, str], None] | None = None,
        machines: MachineSet | None = None,
    ) -> None:
        self.cfg = cfg
        self.pipeline = pipeline
        self.machines = machines
        # topic -> (machine id, sensor name; None for json_multi), for cached routes only.
        self.machine_of: dict[str, tuple[str, str | None]] = {}
        self.subscriptions = build_subscriptions(cfg)
        self.limits = TsLimits(cfg.ingest.max_future_skew_s, cfg.ingest.max_past_age_s)
        self.max_payload = cfg.ingest.max_payload_bytes
        # topic -> Route (subscription, series id, the topic's clock), for topics that delivered
        # a good reading. Junk is never cached: a flood of unique hostile topics must not grow
        # memory. Routes of evicted series go with them (forget_series).
        self.routes: dict[str, Route] = {}
        self.window = cfg.ingest.replay_window_s
        self.guard = ReplayGuard(cfg.ingest.replay_window_s, cfg.ingest.clock_step_after_s)
        # series id -> the newest reading ts it is known to have scored before a restart (the
        # last alarm edge, from the outbox): a new route of the series starts from there.
        self.floors: dict[str, float] = {}
        # series fed by more than one topic -> the other topics (first few), reported loudly.
        self.shared: dict[str, list[str]] = {}
        pipeline.on_evict.append(self.forget_series)
        self.received = 0
        self.readings = 0
        self.rejected: dict[str, int] = {}
        self.on_reject = on_reject
        self._log_interval = cfg.ingest.reject_log_interval_s
        self._last_log: dict[str, float] = {}  # per reject reason
        self._suppressed: dict[str, int] = {}

    def route(self, topic: str) -> tuple[Subscription, str] | None:
        """(subscription, series id); for json_multi the id holds ``_KEY`` where each key goes."""
        for sub in self.subscriptions:
            fields = sub.template.match(topic)
            if fields is not None:
                if sub.multi:
                    if any("\x00" in v for v in fields.values()):
                        return None
                    sid = render(sub.cfg.series, {**fields, "sensor": _KEY})
                    if len(sid) - sid.count(_KEY) > _MAX_SERIES_ID:
                        return None
                    return sub, sid
                sid = render(sub.cfg.series, fields)
                if len(sid) > _MAX_SERIES_ID or "\x00" in sid:
                    return None
                return sub, sid
        return None

    def _machine_of(self, topic: str, sub: Subscription) -> tuple[str, str | None] | None:
        key = self.machine_of.get(topic)
        if key is None:
            fields = sub.template.match(topic)
            if fields is None or sub.machine is None:
                return None
            key = (render(sub.machine, fields), None if sub.multi else render(sub.cfg.sensor, fields))
            if any(v is not None and (not v or len(v) > _MAX_SERIES_ID or "\x00" in v) for v in key):
                return None  # the reading's series took it; the machine cannot (its id would be unusable)
            if len(self.machine_of) >= _ROUTE_CACHE_MAX:
                self.machine_of.clear()
            self.machine_of[topic] = key
        return key

    def handle(self, topic: str, payload: bytes) -> None:
        """One MQTT message. Never raises: bad input is counted by reason and logged at a rate limit."""
        self.received += 1
        r = self.routes.get(topic)
        cached = r is not None
        if r is None:
            found = self.route(topic)
            if found is None:
                self.reject("unknown_topic", topic, payload, "topic matches no subscription or yields a bad series id")
                return
            r = Route(found[0], found[1], self.floors.get(found[1], NEVER))
        sub = r.sub
        if len(payload) > self.max_payload:
            self.reject("too_large", topic, b"", f"{len(payload)} bytes")
            return
        now = time.time()
        try:
            if sub.is_batch:
                self._batch(r, topic, payload, now)
            elif sub.multi:
                self._handle_multi(topic, r, payload, now)
            else:
                value, ts = sub.decode(payload, now, sub.opts, self.limits)
                newest = r.newest
                if (ts < newest and newest - ts <= self.window) or r.held is not None:
                    self._behind(r, topic, [(value, ts)], now)
                else:
                    r.newest = ts if ts < now else now
                    self.pipeline.process(r.sid, value, ts)
                    # Counted once taken: a refused reading is counted under its reason instead.
                    self.readings += 1
                    if sub.machine is not None and self.machines is not None:
                        self._feed_machine(topic, sub, value, ts)
            if not cached:
                self._cache(topic, r)
        except Rejected as exc:
            self.reject(exc.reason, topic, payload, exc.detail)
        except TooManySeries as exc:
            self.reject("too_many_series", topic, payload, str(exc))
        except TooManyMachines as exc:
            self.reject("too_many_machines", topic, payload, str(exc))
        except Exception as exc:  # a bug must cost one reading, never the agent
            log.exception("unexpected error handling a reading on %r", topic[:200])
            self.reject("internal_error", topic, payload, repr(exc))

    def _feed_machine(self, topic: str, sub: Subscription, value: float, ts: float) -> None:
        key = self._machine_of(topic, sub)
        if key is None:
            self.reject("bad_machine_id", topic, b"", "the series took the reading; its machine id or sensor name is empty, longer than 256 or holds NUL")
        else:
            self.machines.feed(key[0], key[1], value, ts)  # type: ignore[union-attr, arg-type]

    def _batch(self, r: Route, topic: str, payload: bytes, now: float) -> None:
        sub = r.sub
        values, ts, dropped = sub.decode(payload, now, sub.opts, self.limits)
        for reason, n in dropped.items():
            self.reject(reason, topic, b"", f"{n} value(s) dropped from a batch", count=n)
        newest = r.newest
        first = float(ts[0])
        if r.held is None and not (first < newest and newest - first <= self.window) and (ts.shape[0] == 1 or not (ts[1:] < ts[:-1]).any()):
            last = float(ts[-1])
            r.newest = last if last < now else now
            self.pipeline.process_batch(r.sid, values, ts)
            self.readings += int(values.shape[0])
        else:  # out of order somewhere: reading by reading, exactly as single readings would go
            self._behind(r, topic, zip(values.tolist(), ts.tolist(), strict=True), now, batch=True)

    def _behind(self, r: Route, topic: str, readings: Any, now: float, batch: bool = False) -> None:
        """Readings of a topic with held readings or behind its newest: the replay guard decides."""
        take = self._judge(r, topic, readings, now)
        if not take:
            return
        if batch or len(take) > 1:
            self.pipeline.process_batch(r.sid, np.array([v for v, _ in take]), np.array([t for _, t in take]))
        else:
            self.pipeline.process(r.sid, take[0][0], take[0][1])
        self.readings += len(take)
        sub = r.sub
        if not batch and sub.machine is not None and self.machines is not None:
            for value, ts in take:
                self._feed_machine(topic, sub, value, ts)

    def _judge(self, r: Route, topic: str, readings: Any, now: float) -> list[tuple[Any, float]]:
        """(item, ts) pairs through the replay guard: what to take now, in order; the held ones
        that proved a replay are counted as stale."""
        mono = time.monotonic()
        take: list[tuple[Any, float]] = []
        stale = 0
        for item, ts in readings:
            out, n = self.guard.accept(r, item, ts, now, mono)
            take += out
            stale += n
        if stale:
            self.reject("stale", topic, b"", f"{stale} reading(s) older than the topic's newest, redelivered (not a clock step)", count=stale)
        return take

    def _cache(self, topic: str, r: Route) -> None:
        if len(self.routes) >= _ROUTE_CACHE_MAX:
            # The older half goes (dict order is insertion order): a flood of fresh topics must
            # not wipe the clocks of the topics that have been here all along.
            for old in list(self.routes)[: _ROUTE_CACHE_MAX // 2]:
                self.guard.discard(self.routes.pop(old))
        self.routes[topic] = r
        s = self.pipeline.series.get(r.sid)
        if s is None:
            return
        if s.topic is None:
            s.topic = topic
        elif s.topic != topic:
            self._shared(s, topic)

    def _shared(self, s: Series, topic: str) -> None:
        """A second topic feeds a series: readings of two sources go into one model. Said loudly."""
        others = self.shared.setdefault(s.id, [])
        if topic in others:
            return
        if len(others) < _SHARED_TOPICS_KEPT:
            others.append(topic)
        if len(others) == 1 and len(self.shared) <= 20:
            log.warning(
                "series %r is fed by more than one topic (%r, %r, ...): their readings go into one model. If they are "
                "different sensors, give subscriptions[].series a field that tells them apart (e.g. {line}/{machine}/{sensor})",
                s.id, s.topic[:200] if s.topic else None, topic[:200],
            )

    def forget_series(self, s: Series) -> None:
        """An evicted series' routes go too (Pipeline.on_evict)."""
        for topic in [s.topic, *self.shared.pop(s.id, ())]:
            r = self.routes.pop(topic, None) if topic is not None else None
            if r is not None:
                self.guard.discard(r)

    def _handle_multi(self, topic: str, r: Route, payload: bytes, now: float) -> None:
        """A json_multi message: each reading to its own series, then the taken ones to the
        machine's row. A refused reading (bad value, series limit) is counted on its own; the
        others go on. Replay protection takes the message's row as one item (one timestamp)."""
        sub = r.sub
        readings, ts, refused = sub.decode(payload, now, sub.opts, self.limits)
        first = True
        for _key, reason, detail in refused:
            self.reject(reason, topic, payload if first else b"", detail)
            first = False
        newest = r.newest
        if (ts < newest and newest - ts <= self.window) or r.held is not None:
            rows = self._judge(r, topic, [(readings, ts)], now)
        else:
            r.newest = ts if ts < now else now
            rows = [(readings, ts)]
        for row, row_ts in rows:
            self._multi_row(topic, sub, r.sid, row, row_ts, payload if first else b"")

    def _multi_row(self, topic: str, sub: Subscription, sid: str, readings: list[tuple[str, float]], ts: float, payload: bytes) -> None:
        first = bool(payload)
        taken: list[tuple[str, float]] = []
        process = self.pipeline.process
        for key, value in readings:
            series = sid.replace(_KEY, key)
            if len(series) > _MAX_SERIES_ID:
                self.reject("bad_key", topic, payload if first else b"", f"{key[:40]!r}: series id longer than {_MAX_SERIES_ID}")
                first = False
                continue
            try:
                process(series, value, ts)
            except Rejected as exc:
                self.reject(exc.reason, topic, payload if first else b"", f"{key!r}: {exc.detail}")
                first = False
                continue
            except TooManySeries as exc:
                self.reject("too_many_series", topic, payload if first else b"", f"{key!r}: {exc}")
                first = False
                continue
            taken.append((key, value))
        self.readings += len(taken)
        if taken and sub.machine is not None and self.machines is not None:
            key = self._machine_of(topic, sub)
            if key is None:
                self.reject("bad_machine_id", topic, b"", "the series took the readings; the machine id is empty, longer than 256 or holds NUL")
            else:
                self.machines.feed_row(key[0], taken, ts)

    def oversize(self, topic: str, packet_bytes: int) -> None:
        """A PUBLISH the link discarded unread because of its size."""
        self.received += 1
        self.reject("too_large", topic, b"", f"{packet_bytes} bytes (discarded unread)")

    def reject(self, reason: str, topic: str, payload: bytes, detail: str, count: int = 1) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + count
        if self.on_reject is not None:
            self.on_reject(reason, payload, topic, detail)
        # Rate-limited per reason: a flood of one kind must not hide the first of another.
        now = time.monotonic()
        if now - self._last_log.get(reason, -self._log_interval) >= self._log_interval:
            suppressed = self._suppressed.pop(reason, 0)
            extra = f" ({suppressed} more {reason} since the last message)" if suppressed else ""
            totals = ", ".join(f"{k}={v}" for k, v in sorted(self.rejected.items()))
            log.warning("rejected reading on %r: %s %s%s; rejected so far: %s", topic[:200], reason, detail[:200], extra, totals)
            self._last_log[reason] = now
        else:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + count
