"""Where a reading enters: topic -> subscription -> decoded value(s) -> ``Pipeline.process``.

This runs inside the MQTT client's packet callback, once per message, so it is kept short:
a dict lookup for topics already seen, one decode, one pipeline call. Nothing here queues:
when scoring cannot keep up, TCP flow control pushes back to the broker, which holds QoS 1
readings in the agent's persistent session (bounded by the broker's own queue limits).

A subscription with ``machine`` set also feeds each reading the series took to the
machine's row (``machines.MachineSet``, when one is given); a ``json_multi`` message feeds
every sensor's series and then the machine's row at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge_agent.config import AgentConfig, SubscriptionConfig
from edge_agent.machines.machine_set import TooManyMachines
from edge_agent.payloads import FORMATS, MULTI_VALUE, Rejected, TsLimits
from edge_agent.pipeline import Pipeline, TooManySeries
from edge_agent.topics import TopicTemplate, check_series_template, render

if TYPE_CHECKING:
    from edge_agent.machines.machine_set import MachineSet

log = logging.getLogger(__name__)

_MAX_SERIES_ID = 256
_ROUTE_CACHE_MAX = 200_000
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
        opts = DecodeOptions(sc.value_field, sc.ts_field, sc.ts_unit, cfg.ingest.max_batch)
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
        # topic -> (subscription, series id), for topics that delivered a good reading. Junk
        # is never cached: a flood of unique hostile topics must not grow memory.
        self.routes: dict[str, tuple[Subscription, str]] = {}
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
            r = self.route(topic)
            if r is None:
                self.reject("unknown_topic", topic, payload, "topic matches no subscription or yields a bad series id")
                return
        sub, sid = r
        if len(payload) > self.max_payload:
            self.reject("too_large", topic, b"", f"{len(payload)} bytes")
            return
        now = time.time()
        try:
            if sub.is_batch:
                values, ts, dropped = sub.decode(payload, now, sub.opts, self.limits)
                if dropped:
                    self.reject("non_finite", topic, b"", f"{dropped} value(s) dropped from a batch", count=dropped)
                stale = self.pipeline.process_batch(sid, values, ts)
                self.readings += int(values.shape[0]) - stale
                if stale:
                    self.reject("stale", topic, b"", f"{stale} reading(s) of a batch older than the series' newest reading", count=stale)
            elif sub.multi:
                self._handle_multi(topic, sub, sid, payload, now)
            else:
                value, ts = sub.decode(payload, now, sub.opts, self.limits)
                self.pipeline.process(sid, value, ts)
                # Counted once taken: a refused reading is counted under its reason instead.
                self.readings += 1
                if sub.machine is not None and self.machines is not None:
                    key = self._machine_of(topic, sub)
                    if key is None:
                        self.reject("bad_machine_id", topic, b"", "the series took the reading; its machine id or sensor name is empty, longer than 256 or holds NUL")
                    else:
                        self.machines.feed(key[0], key[1], value, ts)  # type: ignore[arg-type]
            if not cached:
                if len(self.routes) >= _ROUTE_CACHE_MAX:
                    self.routes.clear()
                self.routes[topic] = r
        except Rejected as exc:
            self.reject(exc.reason, topic, payload, exc.detail)
        except TooManySeries as exc:
            self.reject("too_many_series", topic, payload, str(exc))
        except TooManyMachines as exc:
            self.reject("too_many_machines", topic, payload, str(exc))
        except Exception as exc:  # a bug must cost one reading, never the agent
            log.exception("unexpected error handling a reading on %r", topic[:200])
            self.reject("internal_error", topic, payload, repr(exc))

    def _handle_multi(self, topic: str, sub: Subscription, sid: str, payload: bytes, now: float) -> None:
        """A json_multi message: each reading to its own series, then the taken ones to the
        machine's row. A refused reading (bad value, stale, series limit) is counted on its
        own; the others go on."""
        readings, ts, refused = sub.decode(payload, now, sub.opts, self.limits)
        first = True
        for _key, reason, detail in refused:
            self.reject(reason, topic, payload if first else b"", detail)
            first = False
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
