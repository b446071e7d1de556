"""Per-series rules: settings chosen by series pattern or topic fields, resolved with provenance.

A plant has temperatures, vibrations, pressures and counters that need different settings.
``rules:`` in the config is a list; each rule has a ``match`` and sets some keys::

    rules:
      - name: temperatures
        match: {sensor: "temp*"}            # a topic field, glob; or series: "*/temp"
        detector: statistical
        params: {k: 4.0}
        unit: degC
      - name: discharge pressure
        match: {series: "m7/pressure"}
        priority: critical
        limits: {hihi: 9.5, hi: 8.0, lo: 1.0, deadband: 0.2}

**Precedence: rules apply in order, and a later rule overrides an earlier one, key by key.**
Write the general rules first and the exceptions after them, as a SCADA tag takes its
template's settings and then its own overrides: "all temperatures: statistical, k=4" above
"but m7/temp: priority high". Keys a rule does not set keep what came before (an earlier
rule, or the global default). Two pairs move as one: ``detector`` with ``params`` (params
belong to one detector, so a rule that sets params names its detector, and its params
replace earlier ones whole), and ``limits`` (HiHi..LoLo are checked as one set).

``RuleSet(cfg).resolve(series_id, fields)`` is a pure function of the config, the series id
and its topic fields; it returns ``SeriesSettings`` with, for every key, the rule (or default)
that set it. It is meant to run once per series (when the series is created), never per
reading. ``edge-agent check-config FILE --series m1/temp`` (or ``--topic plant/l1/m1/temp``)
prints it.

Matching: every condition of ``match`` must hold. ``series:`` is a glob on the series id
(``*`` also crosses ``/``); any other key is a topic-template field (``{sensor}`` in
``plant/{line}/{machine}/{sensor}``), also a glob. A value may be a list: any of them.
"""

from __future__ import annotations

import difflib
import fnmatch
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge_agent.config_source import Located
from edge_agent.priority import DEFAULT as DEFAULT_PRIORITY
from edge_agent.priority import Priority, PriorityField

if TYPE_CHECKING:
    from edge_agent.config import AgentConfig

SERIES_KEY = "series"
BUILT_IN = "default (built in)"
# Keys a rule cannot set to null (null means "unset" only for unit, description and limits).
_NOT_NULL = ("enabled", "detector", "params", "min_train_samples", "on_delay", "clear_after", "deadband", "priority")
_Glob = Annotated[str, Field(min_length=1, max_length=256)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Limits(_Strict):
    """Engineering limits (setpoints from the datasheet) checked beside the learned model.

    ``deadband``, in the value's units, is how far back inside a limit the value must come
    before that limit's alarm clears. ``priority`` defaults to the series' priority."""

    hihi: float | None = None
    hi: float | None = None
    lo: float | None = None
    lolo: float | None = None
    deadband: Annotated[float, Field(ge=0)] = 0.0
    priority: PriorityField | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Limits:
        named = [(n, getattr(self, n)) for n in ("hihi", "hi", "lo", "lolo")]
        set_ = [(n, v) for n, v in named if v is not None]
        if not set_:
            raise ValueError("set at least one of hihi, hi, lo, lolo")
        for n, v in set_:
            if not math.isfinite(v):
                raise Located([((n,), "must be a finite number")])
        # hihi >= hi > lo >= lolo, over the ones that are set
        for i, (n1, v1) in enumerate(set_):
            for n2, v2 in set_[i + 1:]:
                high_low = n1 in ("hihi", "hi") and n2 in ("lo", "lolo")
                if v1 < v2 or (high_low and v1 == v2):
                    rel = "greater than" if high_low else "at least"
                    raise Located([((n2,), f"{n1} ({v1:g}) must be {rel} {n2} ({v2:g})")])
        highs = [v for n, v in set_ if n in ("hihi", "hi")]
        lows = [v for n, v in set_ if n in ("lo", "lolo")]
        if highs and lows and self.deadband >= min(highs) - max(lows):
            raise Located([(("deadband",), f"{self.deadband:g} must be smaller than the gap between the lowest "
                             f"high and the highest low limit ({min(highs) - max(lows):g})")])
        return self


class SeriesRule(_Strict):
    """One rule. Every key but ``match`` is optional; see the module docstring for precedence."""

    name: Annotated[str, Field(max_length=100)] | None = None
    match: dict[str, _Glob | list[_Glob]]
    enabled: bool | None = None
    detector: str | None = None
    params: dict[str, Any] | None = None
    min_train_samples: Annotated[int, Field(ge=2)] | None = None
    on_delay: Annotated[int, Field(ge=1)] | None = None
    clear_after: Annotated[int, Field(ge=1)] | None = None
    deadband: Annotated[float, Field(ge=0, lt=1)] | None = None
    priority: PriorityField | None = None
    unit: Annotated[str, Field(max_length=32)] | None = None
    description: Annotated[str, Field(max_length=300)] | None = None
    limits: Limits | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_null(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in _NOT_NULL:
                if key in data and data[key] is None:
                    raise Located([((key,), "cannot be null (leave the key out to keep the earlier setting)")])
        return data

    @field_validator("match")
    @classmethod
    def _match(cls, v: dict[str, Any]) -> dict[str, Any]:
        if not v:
            raise ValueError("match needs at least one condition, e.g. {series: '*/temp'} or {sensor: 'temp*'}")
        for key, pat in v.items():
            if isinstance(pat, list) and not pat:
                raise ValueError(f"match.{key}: an empty list matches nothing")
        return v

    @model_validator(mode="after")
    def _detector(self) -> SeriesRule:
        from edge_agent import detectors

        if self.params is not None and self.detector is None:
            raise Located([(("params",), "params belong to a detector: set detector in the same rule")])
        if self.detector is not None:
            detectors.check_params(self.detector, self.params)  # ParamProblems: reported per param
        if not (self.model_fields_set - {"name", "match"}):
            raise ValueError("the rule sets nothing (add e.g. priority, detector, unit or limits)")
        return self

    def patterns(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        return tuple((k, tuple(v) if isinstance(v, list) else (v,)) for k, v in self.match.items())


def subscription_fields(sub: Any) -> tuple[str, ...]:
    """The fields a subscription gives its series: its topic template's, or for ``sparkplug_b``
    the parts of each message (group, node, device, metric)."""
    if sub.format == "sparkplug_b":
        from edge_agent.sparkplug.schema import SERIES_FIELDS

        return tuple(SERIES_FIELDS)
    from edge_agent.topics import TopicTemplate

    return TopicTemplate.parse(sub.topic).fields


def check_rule_fields(rules: list[SeriesRule], known: set[str]) -> list[tuple[tuple[str | int, ...], str]]:
    """``(path, message)`` for match keys that no subscription's topic template defines."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    allowed = sorted(known | {SERIES_KEY})
    for i, rule in enumerate(rules):
        for key in rule.match:
            if key != SERIES_KEY and key not in known:
                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(allowed)}"
                out.append((("rules", i, "match", key), f"no subscription topic defines {{{key}}} ({hint})"))
    return out


# ---- resolution ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SeriesSettings:
    """The settings of one series after the rules, and which rule (or default) set each key."""

    series: str
    fields: Mapping[str, str]
    enabled: bool
    detector: str
    params: Mapping[str, Any]
    min_train_samples: int
    on_delay: int
    clear_after: int
    deadband: float
    priority: Priority
    unit: str | None
    description: str | None
    limits: Limits | None
    sources: Mapping[str, str] = field(default_factory=dict)
    matched: tuple[int, ...] = ()  # indexes of the rules that matched, in order
    undecided: tuple[str, ...] = ()  # rules skipped for want of a topic field (resolve by topic)

    KEYS = ("enabled", "detector", "params", "min_train_samples", "on_delay", "clear_after", "deadband",
            "priority", "unit", "description", "limits")

    @property
    def limits_priority(self) -> Priority:
        return self.limits.priority if self.limits is not None and self.limits.priority is not None else self.priority

    def value(self, key: str) -> Any:
        v = getattr(self, key)
        if isinstance(v, Priority):
            return v.label
        if isinstance(v, Limits):
            return v.model_dump(mode="json", exclude_none=True)
        if isinstance(v, Mapping):
            return dict(v)
        return v

    def as_dict(self) -> dict[str, Any]:
        return {
            "series": self.series,
            "fields": dict(self.fields),
            "settings": {k: self.value(k) for k in self.KEYS},
            "set_by": {k: self.sources[k] for k in self.KEYS},
            "matched_rules": list(self.matched),
            "undecided_rules": list(self.undecided),
        }

    def describe(self) -> str:
        import json

        head = f"series {self.series}"
        if self.fields:
            head += "   (" + ", ".join(f"{k}={v}" for k, v in self.fields.items()) + ")"
        rows = [(k, json.dumps(self.value(k), sort_keys=True) if not isinstance(self.value(k), str) else self.value(k),
                 self.sources[k]) for k in self.KEYS]
        w0 = max(len(r[0]) for r in rows)
        w1 = min(max(len(r[1]) for r in rows), 48)
        lines = [head, f"  {'KEY':{w0}}  {'VALUE':{w1}}  SET BY"]
        lines += [f"  {k:{w0}}  {v:{w1}}  {s}" for k, v, s in rows]
        for note in self.undecided:
            lines.append(f"  note: {note}")
        return "\n".join(lines)


class UnknownTopic(LookupError):
    pass


class RuleSet:
    """The rules of one config, ready to resolve series. Build once; ``resolve`` is pure."""

    def __init__(self, cfg: AgentConfig) -> None:
        from edge_agent.topics import TemplateError, TopicTemplate

        self.cfg = cfg
        self.rules: list[SeriesRule] = list(getattr(cfg, "rules", None) or [])
        self._patterns = [r.patterns() for r in self.rules]
        # Sparkplug B subscriptions take their fields from each message, not from a topic template.
        self._topics = [(TopicTemplate.parse(s.topic), s.series) for s in cfg.subscriptions if s.format != "sparkplug_b"]
        self._series_templates = []
        for _, series_tpl in self._topics:
            try:
                self._series_templates.append(TopicTemplate.parse(series_tpl))
            except TemplateError:
                pass  # e.g. "{machine}-{sensor}": fields cannot be read back from the id
        self._defaults = self._default_settings()

    def _default_settings(self) -> dict[str, tuple[Any, str]]:
        cfg = self.cfg

        def at(*path: str) -> str:
            where = cfg.set_at(*path)
            return f"{'.'.join(path)} ({where})" if where else f"default: {'.'.join(path)}"

        return {
            "enabled": (True, BUILT_IN),
            "detector": (cfg.detector.name, at("detector", "name")),
            "params": (dict(cfg.detector.params), at("detector", "params")),
            "min_train_samples": (cfg.detector.min_train_samples, at("detector", "min_train_samples")),
            "on_delay": (1, BUILT_IN),
            "clear_after": (cfg.alarms.clear_after, at("alarms", "clear_after")),
            # The learned-model alarm's hysteresis: alarms.hold_ratio is the global form of the key.
            "deadband": (round(1.0 - cfg.alarms.hold_ratio, 12), f"1 - {at('alarms', 'hold_ratio')}"),
            "priority": (DEFAULT_PRIORITY, BUILT_IN),
            "unit": (None, BUILT_IN),
            "description": (None, BUILT_IN),
            "limits": (None, BUILT_IN),
        }

    def rule_label(self, i: int, key: str | None = None) -> str:
        rule = self.rules[i]
        label = f"rules[{i}]" + (f" {rule.name!r}" if rule.name else "")
        where = (self.cfg.set_at("rules", i, key) if key else None) or self.cfg.where("rules", i)
        return label + (f" ({where})" if where else "")

    def fields_of(self, series_id: str) -> dict[str, str]:
        """Topic fields read back from a series id through the series templates (may be partial)."""
        for tpl in self._series_templates:
            got = tpl.match(series_id)
            if got is not None:
                return got
        return {}

    def for_topic(self, topic: str) -> SeriesSettings:
        from edge_agent.topics import render

        for tpl, series_tpl in self._topics:
            fields = tpl.match(topic)
            if fields is not None:
                return self.resolve(render(series_tpl, fields), fields)
        raise UnknownTopic(f"topic {topic!r} matches no subscription topic template "
                           f"({', '.join(t.template for t, _ in self._topics) or 'none'}; "
                           "for Sparkplug B series use --series)")

    def defaults(self) -> SeriesSettings:
        """What a series no rule matches gets."""
        return SeriesSettings(
            series="", fields={}, sources={k: s for k, (_, s) in self._defaults.items()},
            **{k: (dict(v) if k == "params" else v) for k, (v, _) in self._defaults.items()},
        )

    def resolve(self, series_id: str, fields: Mapping[str, str] | None = None) -> SeriesSettings:
        """The settings of ``series_id`` whose reading arrived with topic ``fields``.

        Without ``fields`` (or with some missing), those the series template can give are
        read back from the id; a rule that needs a field still unknown is skipped and listed
        in ``undecided``."""
        known = dict(fields or {})
        for k, v in self.fields_of(series_id).items():
            known.setdefault(k, v)
        values = {k: v for k, (v, _) in self._defaults.items()}
        sources = {k: s for k, (_, s) in self._defaults.items()}
        matched: list[int] = []
        undecided: list[str] = []
        for i, (rule, pats) in enumerate(zip(self.rules, self._patterns, strict=True)):
            hit = True
            for key, globs in pats:
                subject = series_id if key == SERIES_KEY else known.get(key)
                if subject is None:
                    undecided.append(f"{self.rule_label(i)} needs topic field {{{key}}}: resolve with --topic")
                    hit = False
                    break
                if not any(fnmatch.fnmatchcase(subject, g) for g in globs):
                    hit = False
                    break
            if not hit:
                continue
            matched.append(i)
            for key in rule.model_fields_set - {"name", "match"}:
                if key == "params":
                    continue  # with detector, below
                values[key] = getattr(rule, key)
                sources[key] = self.rule_label(i, key)
                if key == "detector":
                    values["params"] = dict(rule.params or {})
                    sources["params"] = self.rule_label(i, "params" if rule.params is not None else key)
        return SeriesSettings(
            series=series_id, fields=known, sources=sources, matched=tuple(matched), undecided=tuple(undecided),
            **{k: (dict(values[k]) if k == "params" else values[k]) for k in SeriesSettings.KEYS},
        )
