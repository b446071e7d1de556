"""Remote commands on ``edge/{gateway_id}/cmd/{command}``: fit, rollback, status, sync, rebaseline,
ack, shelve, unshelve (the alarm operations are ``operations.py``'s, shared with HTTP).

Every command is verified first (``command_auth.py``: HMAC signature, freshness, nonce).
A refused command changes nothing and is answered ``refused`` with the reason. An accepted
one is answered ``accepted`` at once, then ``done`` (with results) or ``failed`` (with the
error) when it finishes. Fits run off the event loop; scoring goes on meanwhile.

Responses follow MQTT 5 request/response: when an *accepted* (signed) request carries a
``response_topic`` the answer goes there with the request's ``correlation_data``. MQTT 3.1.1
requesters (or v5 ones without a response topic) get the answer on ``{command topic}/response``
with their ``request_id`` echoed. Answers go through the durable outbox like alarms do.

What a requester can choose, and what it cannot (issue 15, findings 1 and 7):

- A *refused* command (unsigned, forged, stale, replayed, malformed) is answered only on the
  fixed ``{command topic}/response``, never on its ``response_topic``: an outsider cannot make
  the agent publish where it likes (onto SCADA's alarm topics, say). The refusal is answered
  only when that topic is valid and at most ``MAX_RESPONSE_TOPIC_BYTES`` long, and only while
  a token bucket (``commands.refusal_answers_per_s``, ``refusal_answer_burst``) has a token:
  a flood of forgeries is counted, logged at a rate limit, and cannot fill the outbox or put
  answers ahead of alarms.
- A signed command's ``response_topic`` must itself be a valid topic name of at most
  ``MAX_RESPONSE_TOPIC_BYTES``, without wildcards or a leading ``$``, and outside the agent's
  own topics (alarms, alarm state, status, commands, dead letters, the reading subscriptions).
  Otherwise the answer goes to the fixed topic and says ``response_topic_refused``. The
  signature covers the payload, not MQTT properties, hence the check.
- Machines (issue 14): ``fit``, ``rollback``, ``status``, ``rebaseline``, ``ack``, ``shelve``
  and ``unshelve`` take ``args.machine`` (one machine id, no glob) instead of ``args.series``;
  naming both is refused. A machine and a series may share an id (``line1/p1``): the
  argument's name says which. ``status`` without ``args.series`` lists the machines too.
- Every answer fits in one packet the broker takes (its CONNACK Maximum Packet Size): a
  ``status`` listing too large is cut and says ``truncated`` with the ``next_offset`` to ask
  for (``args.offset``/``args.limit`` page through it).
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent import operations
from edge_agent.chunked import filtered, sorted_chunked
from edge_agent.command_auth import CommandRefused, CommandVerifier, load_key
from edge_agent.mqtt_limits import topic_problem
from edge_agent.nonce_journal import FILE_NAME as NONCE_FILE
from edge_agent.nonce_journal import NonceJournal
from edge_agent.ratelimit import RateLimitedLog, TokenBucket, clip
from edge_agent.redact import scrub_paths
from edge_agent.topics import TopicTemplate, render

if TYPE_CHECKING:
    from edge_agent.agent import Agent

log = logging.getLogger(__name__)

COMMANDS = ("fit", "rollback", "status", "sync", "rebaseline", "ack", "shelve", "unshelve")
_MAX_STATUS_SERIES = 1000
_FITS_PER_PASS = 8  # fit requests prepared per event-loop pass (see cmd_fit)
MAX_RESPONSE_TOPIC_BYTES = 1024
MAX_CORRELATION_BYTES = 1024


class CommandError(Exception):
    """A command that was accepted but cannot be carried out as asked."""


def _prop(properties: dict[str, Any], name: str) -> Any:
    value = properties.get(name)
    if isinstance(value, list):
        return value[0] if value else None
    return value


class CommandHandler:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        cfg = agent.cfg.commands
        tpl = render(cfg.topic.replace("{command}", "\x00"), {"gateway_id": agent.cfg.gateway_id}).replace("\x00", "{command}")
        self.template = TopicTemplate.parse(tpl)
        if "command" not in self.template.fields:
            raise ValueError(f"commands.topic {cfg.topic!r} must contain {{command}}")
        self.filter = self.template.mqtt_filter()
        self.prefix = tpl.split("{", 1)[0]
        self.verifier = CommandVerifier(load_key(cfg.key_file), cfg.allow_unsigned, cfg.max_age_s)
        self.journal = NonceJournal(Path(agent.cfg.state_dir) / NONCE_FILE)
        self.received = 0
        self.refused: dict[str, int] = {}
        self.unanswered: dict[str, int] = {}  # refusals not answered: rate_limited | bad_topic
        self.response_topics_refused = 0
        self.done = 0
        self.failed = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.refusal_answers = TokenBucket(cfg.refusal_answers_per_s, cfg.refusal_answer_burst)
        self._refusal_log = RateLimitedLog(log, cfg.refusal_log_interval_s)
        self._forbidden = _own_topics(agent.cfg, tpl)
        if cfg.allow_unsigned:
            log.warning("commands.allow_unsigned is true: unsigned remote commands are accepted")

    async def install(self) -> None:
        # Nonces accepted before a restart are refused again: loaded before the subscription.
        loop = asyncio.get_running_loop()
        seen = await loop.run_in_executor(self.agent.executor, self.journal.load, time.time())
        self.verifier.preload(seen)
        self.agent.message_handlers.append((self.prefix, self.handle))
        self.agent.link.subscribe(self.filter, self.agent.cfg.commands.qos)

    # ---- receiving -------------------------------------------------------------------------
    def handle(self, topic: str, payload: bytes, properties: dict[str, Any]) -> None:
        fields = self.template.match(topic)
        if fields is None:
            return  # e.g. someone's response topic below ours
        command = fields["command"]
        self.received += 1
        try:
            cmd = self.verifier.verify(command, payload)
            if command not in COMMANDS:
                raise CommandRefused("malformed", f"unknown command {clip(command, 64)}; known: {', '.join(COMMANDS)}")
        except CommandRefused as exc:
            self._refuse(topic, command, payload, exc)
            return
        route, note = self._route(topic, properties)
        if note:
            self.response_topics_refused += 1
            log.warning("command %s (%s): response topic refused (%s); answering on %s", command, clip(cmd.request_id), note, route[0])
        self._respond(route, command, cmd.request_id, "accepted", **({"response_topic_refused": note} if note else {}))
        task = asyncio.ensure_future(self._run(route, command, cmd.request_id, cmd.args, cmd.nonce, cmd.ts))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _refuse(self, topic: str, command: str, payload: bytes, exc: CommandRefused) -> None:
        """Count, log at a rate limit, and answer on the fixed topic while tokens last."""
        self.refused[exc.reason] = self.refused.get(exc.reason, 0) + 1
        self._refusal_log.warning(
            "refused command %s on %s: %s; refused so far: %s",
            clip(command, 64), clip(topic), clip(str(exc)), ", ".join(f"{k}={v}" for k, v in sorted(self.refused.items())),
        )
        answer_topic = f"{topic}/response"
        if len(answer_topic.encode("utf-8", "surrogatepass")) > MAX_RESPONSE_TOPIC_BYTES or topic_problem(answer_topic):
            self.unanswered["bad_topic"] = self.unanswered.get("bad_topic", 0) + 1
            return
        if not self.refusal_answers.take():
            self.unanswered["rate_limited"] = self.unanswered.get("rate_limited", 0) + 1
            return
        self._respond((answer_topic, None), clip(command, 64), _best_effort_request_id(payload), "refused", reason=exc.reason, detail=clip(exc.detail))

    def _route(self, topic: str, properties: dict[str, Any]) -> tuple[tuple[str, bytes | None], str | None]:
        """Where a *signed* command's answers go: its response topic if acceptable, else the
        fixed one; the second value says why the response topic was refused."""
        default = (f"{topic}/response", None)
        response_topic = _prop(properties, "response_topic")
        if response_topic is None:
            return default, None
        if isinstance(response_topic, bytes):
            try:
                response_topic = response_topic.decode("utf-8")
            except UnicodeDecodeError:
                return default, "not UTF-8"
        problem = self.response_topic_problem(response_topic)
        if problem:
            return default, problem
        correlation = _prop(properties, "correlation_data")
        if not isinstance(correlation, bytes):
            correlation = None
        elif len(correlation) > MAX_CORRELATION_BYTES:
            return default, f"correlation data longer than {MAX_CORRELATION_BYTES} bytes"
        return (response_topic, correlation), None

    def response_topic_problem(self, topic: str) -> str | None:
        """Why a requester may not have answers sent to ``topic``, or None."""
        if not isinstance(topic, str) or not topic:
            return "empty"
        if len(topic.encode("utf-8", "surrogatepass")) > MAX_RESPONSE_TOPIC_BYTES:
            return f"longer than {MAX_RESPONSE_TOPIC_BYTES} bytes"
        problem = topic_problem(topic)
        if problem is not None:
            return problem.detail
        if topic.startswith("$"):
            return "a $ topic is the broker's"
        for name, pattern in self._forbidden:
            if pattern.fullmatch(topic):
                return f"inside the agent's own {name} topics"
        return None

    def _respond(self, route: tuple[str, bytes | None], command: str, request_id: str | None, status: str, **extra: Any) -> bool:
        topic, correlation = route
        qos = self.agent.cfg.commands.qos
        doc = {"gateway_id": self.agent.cfg.gateway_id, "command": command, "request_id": request_id, "status": status, "ts": time.time(), **extra}
        payload = fit_answer(doc, self.agent.payload_budget(topic, qos, correlation))
        if payload is None:
            log.error("command %s (%s): even a shortened %r answer does not fit the broker's packet limit", command, clip(request_id), status)
            return False
        props = {"correlation_data": correlation.decode("latin-1")} if correlation is not None else None
        return self.agent.publish_durable(topic, payload, qos, props=props)

    # ---- running -------------------------------------------------------------------------
    async def _run(self, route: tuple[str, bytes | None], command: str, request_id: str | None, args: dict[str, Any],
                   nonce: str | None = None, ts: float | None = None) -> None:
        t0 = time.perf_counter()
        if nonce is not None and ts is not None:
            # On disk before the command acts: a replay after a crash or restart is refused.
            forget_at = ts + self.verifier.max_age_s
            await asyncio.get_running_loop().run_in_executor(self.agent.executor, self.journal.record, nonce, forget_at, time.time())
        try:
            result = await getattr(self, f"cmd_{command}")(args)
        except (CommandError, ValueError, TypeError, LookupError) as exc:
            self.failed += 1
            log.warning("command %s (%s) failed: %s", command, clip(request_id), clip(str(exc), 1000))
            self._respond(route, command, request_id, "failed", error=scrub_paths(str(exc)), seconds=round(time.perf_counter() - t0, 4))
            return
        except Exception as exc:  # a bug: answer, log the traceback, keep running
            self.failed += 1
            log.exception("command %s (%s) crashed", command, clip(request_id))
            self._respond(route, command, request_id, "failed", error=f"internal error: {exc!r}")
            return
        self.done += 1
        self._respond(route, command, request_id, "done", result=result, seconds=round(time.perf_counter() - t0, 4))

    async def _select(self, args: dict[str, Any], require: bool = True) -> list[str]:
        """The series a command names, sorted. Scanned and sorted a slice per loop pass
        (``chunked.py``): a glob over 100,000 series in one go held the loop for ~100 ms."""
        pattern = args.get("series")
        known = self.agent.pipeline.series if self.agent.pipeline else {}
        if pattern is None:
            if require:
                raise CommandError("args.series is required (a series id or a glob pattern)")
            return await sorted_chunked(list(known))
        if not isinstance(pattern, str) or not pattern:
            raise CommandError("args.series must be a non-empty string")
        if any(c in pattern for c in "*?["):
            matched = await filtered(list(known), lambda s: fnmatch.fnmatchcase(s, pattern))
            if not matched:
                raise CommandError(f"no series matches {clip(pattern)}")
            return await sorted_chunked(matched)
        return [pattern]

    async def _machine(self, command: str, args: dict[str, Any]) -> dict[str, Any] | None:
        """Run ``command`` for ``args.machine`` through ``operations.MACHINE_DISPATCH``; None
        when the command names no machine (it is then about series)."""
        if "machine" not in args:
            return None
        if "series" in args:
            raise CommandError("give args.series or args.machine, not both")
        mid = operations.machine_id(args["machine"])
        run = operations.MACHINE_DISPATCH[command]
        if command == "fit":
            if "values" in args:
                raise CommandError("args.values trains a series; a machine fits on the complete rows it holds")
            last_n = args.get("last_n")
            if last_n is not None and (isinstance(last_n, bool) or not isinstance(last_n, int)):
                raise CommandError("args.last_n must be an integer")
            params = args.get("params")
            if params is not None and not isinstance(params, dict):
                raise CommandError("args.params must be an object")
            detector = args.get("detector")
            if detector is not None and not isinstance(detector, str):
                raise CommandError("args.detector must be a string")
            return await run(self.agent, mid, detector=detector, params=params, last_n=last_n)
        if command == "rollback":
            version = args.get("version")
            if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
                raise CommandError("args.version must be an integer")
            from edge_agent.model_store import ModelLoadError

            try:
                return await run(self.agent, mid, version)
            except ModelLoadError as exc:
                raise CommandError(str(exc)) from None
        if command == "rebaseline":
            return await run(self.agent, mid, by=operations.who("command", args.get("by")))
        return await run(self.agent, mid)

    async def cmd_fit(self, args: dict[str, Any]) -> dict[str, Any]:
        if (done := await self._machine("fit", args)) is not None:
            return done
        series = await self._select(args)
        values = args.get("values")
        if values is not None and len(series) != 1:
            raise CommandError("args.values trains one series: give a series id, not a pattern")
        last_n = args.get("last_n")
        if last_n is not None and (isinstance(last_n, bool) or not isinstance(last_n, int) or last_n < 2):
            raise CommandError("args.last_n must be an integer >= 2")
        params = args.get("params")
        if params is not None and not isinstance(params, dict):
            raise CommandError("args.params must be an object")

        async def one(sid: str) -> dict[str, Any]:
            try:
                model = await operations.fit(self.agent, sid, values=values, detector=args.get("detector"), params=params, last_n=last_n)
            except Exception as exc:
                return {"series": sid, "error": str(exc)}
            from edge_agent.fitting import few_samples_warning

            out = {
                "series": sid,
                "version": model.version,
                "detector": model.detector.name,
                "n_samples": model.meta.get("n_samples"),
                "train_ms": round(1000 * float(model.meta.get("train_seconds", 0.0)), 3),
            }
            warning = few_samples_warning(int(model.meta.get("n_samples") or 0), self.agent.cfg.detector.min_train_samples)
            if warning:
                out["warning"] = warning
            return out

        # Preparing a fit runs on the loop (copy the series' buffer, queue the request): tens of
        # µs each. A 100-series command prepared in one loop pass held the readings arriving
        # meanwhile for milliseconds; a few at a time, readings get in between.
        pending = []
        for i, sid in enumerate(series):
            if i and not i % _FITS_PER_PASS:
                await asyncio.sleep(0)
            pending.append(asyncio.ensure_future(one(sid)))
        results = await asyncio.gather(*pending)
        errors = [r for r in results if "error" in r]
        if errors and len(errors) == len(results):
            raise CommandError("; ".join(f"{r['series']}: {r['error']}" for r in errors[:10]))
        return {"fitted": [r for r in results if "error" not in r], "errors": errors}

    async def cmd_rebaseline(self, args: dict[str, Any]) -> dict[str, Any]:
        """Accept each selected series' current behaviour as its new normal: a raised alarm
        ends with an ``accepted`` message (not ``cleared``), and the model learns from now on."""
        if (done := await self._machine("rebaseline", args)) is not None:
            return done
        results = []
        for sid in await self._select(args):
            try:
                results.append(operations.rebaseline(self.agent, sid))
            except ValueError as exc:
                results.append({"series": sid, "error": str(exc)})
        errors = [r for r in results if "error" in r]
        if errors and len(errors) == len(results):
            raise CommandError("; ".join(f"{r['series']}: {r['error']}" for r in errors[:10]))
        return {"rebaselined": [r for r in results if "error" not in r], "errors": errors}

    async def cmd_rollback(self, args: dict[str, Any]) -> dict[str, Any]:
        if (done := await self._machine("rollback", args)) is not None:
            return done
        sid = args.get("series")
        if not isinstance(sid, str) or not sid:
            raise CommandError("args.series (one series id) is required")
        version = args.get("version")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise CommandError("args.version must be an integer")
        from edge_agent.model_store import ModelLoadError

        try:
            model = await operations.rollback(self.agent, sid, version)
        except ModelLoadError as exc:
            raise CommandError(str(exc)) from None
        return {"series": sid, "version": model.version, "detector": model.detector.name}

    async def cmd_status(self, args: dict[str, Any]) -> dict[str, Any]:
        """A machine's status (``args.machine``), or a page of series; without ``args.series``
        the first page lists every machine too (``machines``)."""
        if (done := await self._machine("status", args)) is not None:
            return done
        series = await self._select(args, require=False)
        offset = _int_arg(args, "offset", 0, 0, 1 << 62)
        limit = _int_arg(args, "limit", _MAX_STATUS_SERIES, 1, _MAX_STATUS_SERIES)
        return await operations.status(self.agent, series, offset, limit, machines=args.get("series") is None and offset == 0)

    # The alarm operations name a series (``args.series``) or a machine (``args.machine``).
    async def cmd_ack(self, args: dict[str, Any]) -> dict[str, Any]:
        """``{"series"|"machine": id, "condition"?: "model"|"hihi"|..., "alert_id"?: ..., "note"?: ..., "by"?: name}``"""
        return operations.ack(self.agent, args.get("series"), args.get("condition"), args.get("alert_id"),
                              by=operations.who("command", args.get("by")), note=args.get("note"), machine=args.get("machine"))

    async def cmd_shelve(self, args: dict[str, Any]) -> dict[str, Any]:
        """``{"series"|"machine": id, "duration_s": seconds, "reason": text, "by"?: name}``"""
        return operations.shelve(self.agent, args.get("series"), args.get("duration_s"), args.get("reason"),
                                 by=operations.who("command", args.get("by")), machine=args.get("machine"))

    async def cmd_unshelve(self, args: dict[str, Any]) -> dict[str, Any]:
        """``{"series"|"machine": id, "by"?: name}``"""
        return operations.unshelve(self.agent, args.get("series"), by=operations.who("command", args.get("by")),
                                   machine=args.get("machine"))

    async def cmd_sync(self, args: dict[str, Any]) -> dict[str, Any]:
        report = await operations.sync(self.agent)
        if not report.ok:
            raise CommandError(f"sync failed: {report.error} ({report.pending} item(s) pending, will retry)")
        return report.as_dict()


def _int_arg(args: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    value = args.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise CommandError(f"args.{name} must be an integer in [{lo}, {hi}]")
    return value


def _dumps(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, default=str, separators=(",", ":")).encode()


def fit_answer(doc: dict[str, Any], budget: int) -> bytes | None:
    """``doc`` as JSON of at most ``budget`` bytes, shortening it if it must; None if even
    the shortest form does not fit.

    A ``status`` listing keeps as many series as fit and says ``truncated`` with the
    ``next_offset`` to ask for; other lists in a result (a status' ``machines``, cut first, a
    fit's ``fitted`` and ``errors``) keep their head and say how many were left out; failing that, the result is replaced
    by a note. Shortening an answer is better than dropping it: the requester learns what
    it asked and how to get the rest.
    """
    payload = _dumps(doc)
    if len(payload) <= budget:
        return payload
    result = doc.get("result")
    if isinstance(result, dict):
        for key in ("machines", "series", "fitted", "errors"):
            items = result.get(key)
            if not isinstance(items, list) or not items:
                continue
            # The largest head that fits (binary search over the kept count).
            lo, hi = 0, len(items)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                trial = {**doc, "result": {**result, key: items[:mid], **_cut_note(result, key, items, mid)}}
                if len(_dumps(trial)) <= budget:
                    lo = mid
                else:
                    hi = mid - 1
            result = {**result, key: items[:lo], **_cut_note(result, key, items, lo)}
            doc = {**doc, "result": result}
            payload = _dumps(doc)
            if len(payload) <= budget:
                return payload
        doc = {**doc, "result": {"omitted": f"the result ({len(_dumps(result))} bytes) is larger than the broker's packet limit"}}
        payload = _dumps(doc)
        if len(payload) <= budget:
            return payload
    for key in ("detail", "error", "result", "health"):
        if key in doc:
            doc = {k: v for k, v in doc.items() if k != key}
            payload = _dumps(doc)
            if len(payload) <= budget:
                return payload
    return None


def _cut_note(result: dict[str, Any], key: str, items: list[Any], kept: int) -> dict[str, Any]:
    if key == "series":
        start = result.get("offset", 0) if isinstance(result.get("offset"), int) else 0
        return {"truncated": True, "next_offset": start + kept}
    return {f"{key}_omitted": len(items) - kept}


def _own_topics(cfg: Any, command_template: str) -> list[tuple[str, re.Pattern[str]]]:
    """The agent's own topic spaces, as patterns a response topic must not match."""
    gw = {"gateway_id": cfg.gateway_id}
    out = [("command", _template_pattern(command_template, {}, under=False))]
    for name, template in (
        ("alarm", cfg.alarms.topic),
        ("alarm state", cfg.alarms.state_topic),
        ("status", cfg.status.topic),
        ("dead letter", cfg.ingest.dead_letter_topic),
        ("machine alarm", cfg.machines.alarms.topic),
        ("machine alarm state", cfg.machines.alarms.state_topic),
    ):
        if template:
            out.append((name, _template_pattern(template, gw, under=True)))
    for sub in cfg.subscriptions:
        out.append(("reading", _template_pattern(sub.topic, gw, under=True)))
    return out


def _template_pattern(template: str, values: dict[str, str], under: bool) -> re.Pattern[str]:
    """A topic template as a regex: known fields literal, ``{series}`` and ``{x*}`` any
    levels, other fields one level; with ``under``, also every topic below it."""
    parts = []
    for piece in re.split(r"(\{[A-Za-z_][A-Za-z0-9_]*\*?\})", template):
        if piece.startswith("{") and piece.endswith("}"):
            name = piece[1:-1]
            if name in values:
                parts.append(re.escape(values[name]))
            elif name.endswith("*") or name == "series":
                parts.append(".+")
            else:
                parts.append("[^/]+")
        else:
            parts.append(re.escape(piece))
    return re.compile("".join(parts) + ("(?:/.*)?" if under else ""), re.DOTALL)


def _best_effort_request_id(payload: bytes) -> str | None:
    try:
        rid = json.loads(payload).get("request_id")
    except Exception:
        return None
    return rid if isinstance(rid, str) and len(rid) <= 128 else None
