"""Remote commands on ``edge/{gateway_id}/cmd/{command}``: fit, rollback, status, sync, rebaseline.

Every command is verified first (``command_auth.py``: HMAC signature, freshness, nonce).
A refused command changes nothing and is answered ``refused`` with the reason. An accepted
one is answered ``accepted`` at once, then ``done`` (with results) or ``failed`` (with the
error) when it finishes. Fits run off the event loop; scoring goes on meanwhile.

Responses follow MQTT 5 request/response: when the request carries a ``response_topic``
the answer goes there with the request's ``correlation_data``. MQTT 3.1.1 requesters (or
v5 ones without a response topic) get the answer on ``{command topic}/response`` with their
``request_id`` echoed. Answers go through the durable outbox like alarms do.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.command_auth import CommandRefused, CommandVerifier, load_key
from edge_agent.nonce_journal import FILE_NAME as NONCE_FILE
from edge_agent.nonce_journal import NonceJournal
from edge_agent.topics import TopicTemplate, render

if TYPE_CHECKING:
    from edge_agent.agent import Agent

log = logging.getLogger(__name__)

COMMANDS = ("fit", "rollback", "status", "sync", "rebaseline")
_MAX_STATUS_SERIES = 1000
_FITS_PER_PASS = 8  # fit requests prepared per event-loop pass (see cmd_fit)


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
        self.done = 0
        self.failed = 0
        self.tasks: set[asyncio.Task[None]] = set()
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
        route = self._route(topic, properties)
        try:
            cmd = self.verifier.verify(command, payload)
            if command not in COMMANDS:
                raise CommandRefused("malformed", f"unknown command {command!r}; known: {', '.join(COMMANDS)}")
        except CommandRefused as exc:
            self.refused[exc.reason] = self.refused.get(exc.reason, 0) + 1
            log.warning("refused command %r on %r: %s", command, topic[:200], exc)
            self._respond(route, command, _best_effort_request_id(payload), "refused", reason=exc.reason, detail=exc.detail)
            return
        self._respond(route, command, cmd.request_id, "accepted")
        task = asyncio.ensure_future(self._run(route, command, cmd.request_id, cmd.args, cmd.nonce, cmd.ts))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _route(self, topic: str, properties: dict[str, Any]) -> tuple[str, bytes | None]:
        response_topic = _prop(properties, "response_topic")
        correlation = _prop(properties, "correlation_data")
        if isinstance(response_topic, bytes):
            response_topic = response_topic.decode("utf-8", "replace")
        if response_topic and "+" not in response_topic and "#" not in response_topic:
            return response_topic, correlation if isinstance(correlation, bytes) else None
        return f"{topic}/response", None

    def _respond(self, route: tuple[str, bytes | None], command: str, request_id: str | None, status: str, **extra: Any) -> None:
        topic, correlation = route
        doc = {"gateway_id": self.agent.cfg.gateway_id, "command": command, "request_id": request_id, "status": status, "ts": time.time(), **extra}
        props = {"correlation_data": correlation.decode("latin-1")} if correlation is not None else None
        self.agent.publish_durable(topic, json.dumps(doc, default=str).encode(), self.agent.cfg.commands.qos, props=props)

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
            log.warning("command %s (%s) failed: %s", command, request_id, exc)
            self._respond(route, command, request_id, "failed", error=str(exc), seconds=round(time.perf_counter() - t0, 4))
            return
        except Exception as exc:  # a bug: answer, log the traceback, keep running
            self.failed += 1
            log.exception("command %s (%s) crashed", command, request_id)
            self._respond(route, command, request_id, "failed", error=f"internal error: {exc!r}")
            return
        self.done += 1
        self._respond(route, command, request_id, "done", result=result, seconds=round(time.perf_counter() - t0, 4))

    def _select(self, args: dict[str, Any], require: bool = True) -> list[str]:
        pattern = args.get("series")
        if pattern is None:
            if require:
                raise CommandError("args.series is required (a series id or a glob pattern)")
            return sorted(self.agent.pipeline.series) if self.agent.pipeline else []
        if not isinstance(pattern, str) or not pattern:
            raise CommandError("args.series must be a non-empty string")
        known = self.agent.pipeline.series if self.agent.pipeline else {}
        if any(c in pattern for c in "*?["):
            matched = sorted(s for s in known if fnmatch.fnmatchcase(s, pattern))
            if not matched:
                raise CommandError(f"no series matches {pattern!r}")
            return matched
        return [pattern]

    async def cmd_fit(self, args: dict[str, Any]) -> dict[str, Any]:
        series = self._select(args)
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
                model = await self.agent.fit_series(sid, values=values, detector=args.get("detector"), params=params, last_n=last_n)
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
        results = []
        for sid in self._select(args):
            try:
                results.append(self.agent.rebaseline_series(sid))
            except ValueError as exc:
                results.append({"series": sid, "error": str(exc)})
        errors = [r for r in results if "error" in r]
        if errors and len(errors) == len(results):
            raise CommandError("; ".join(f"{r['series']}: {r['error']}" for r in errors[:10]))
        return {"rebaselined": [r for r in results if "error" not in r], "errors": errors}

    async def cmd_rollback(self, args: dict[str, Any]) -> dict[str, Any]:
        sid = args.get("series")
        if not isinstance(sid, str) or not sid:
            raise CommandError("args.series (one series id) is required")
        version = args.get("version")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise CommandError("args.version must be an integer")
        from edge_agent.model_store import ModelLoadError

        try:
            model = await self.agent.rollback_series(sid, version)
        except ModelLoadError as exc:
            raise CommandError(str(exc)) from None
        return {"series": sid, "version": model.version, "detector": model.detector.name}

    async def cmd_status(self, args: dict[str, Any]) -> dict[str, Any]:
        series = self._select(args, require=False)
        pipe = self.agent.pipeline
        out = []
        for sid in series[:_MAX_STATUS_SERIES]:
            s = pipe.series.get(sid) if pipe else None
            if s is None:
                out.append({"series": sid, "state": "unknown"})
                continue
            out.append(
                {
                    "series": sid,
                    "state": s.state,
                    "model": None if s.model is None else {"detector": s.model.detector.name, "version": s.model.version},
                    "last_value": s.last_value if s.n_readings else None,
                    "last_ts": s.last_ts if s.n_readings else None,
                    "readings": s.n_readings,
                    "scored": s.n_scored,
                    "alarms": s.n_alarms,
                }
            )
        return {"series": out, "total": len(series), "truncated": len(series) > _MAX_STATUS_SERIES, "health": self.agent.health()}

    async def cmd_sync(self, args: dict[str, Any]) -> dict[str, Any]:
        s3 = getattr(self.agent, "s3", None)
        if s3 is None:
            raise CommandError("S3 sync is not enabled (s3.enabled is false)")
        report = await asyncio.to_thread(s3.sync_once)
        await self.agent.after_sync(report)
        if not report.ok:
            raise CommandError(f"sync failed: {report.error} ({report.pending} item(s) pending, will retry)")
        return report.as_dict()


def _best_effort_request_id(payload: bytes) -> str | None:
    try:
        rid = json.loads(payload).get("request_id")
    except Exception:
        return None
    return rid if isinstance(rid, str) and len(rid) <= 128 else None
