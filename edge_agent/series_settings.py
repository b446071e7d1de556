"""The settings a series runs with: the rules' resolution (``rules.py``) reduced to what the
pipeline reads per reading, shared between series.

``RuleSet.resolve`` returns a ``SeriesSettings`` with provenance (which rule set each key) for
``check-config``; a running series needs only the values. ``SettingsSource.for_series`` resolves
a series once, when it is created, and hands back an immutable ``Settings`` that is *interned*:
every series resolving to the same values shares one object (a plant's 10,000 temperatures
cost one ``Settings``, not 10,000). The series keeps a reference (``Series.settings``); nothing
is looked up per reading.

What each key does in the running agent:

- ``enabled: false``: the series' readings are kept (plots) but it is neither trained, scored
  nor checked against limits, and raises nothing; its state says ``disabled``.
- ``detector`` + ``params``, ``min_train_samples``: the first fit of the series (and its refits).
- ``on_delay``: consecutive readings beyond the threshold (or a limit) before an alarm is raised.
- ``clear_after``, ``deadband``: the learned-model alarm clears after ``clear_after`` readings
  below ``(1 - deadband)`` of the way from normal to the threshold. The default deadband is
  ``1 - alarms.hold_ratio`` (0.3): ``alarms.hold_ratio`` is the global form of the same key.
- ``priority``, ``unit``, ``description``: carried by every alarm, the state topic, the page.
- ``limits``: engineering limits checked beside the model (``limits.py``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge_agent.alarm_state import AlarmPolicy
from edge_agent.priority import Priority
from edge_agent.rules import Limits, RuleSet, SeriesSettings

if TYPE_CHECKING:
    from edge_agent.config import AgentConfig

_MAX_INTERNED = 10_000  # distinct settings kept for sharing; beyond, each series gets its own


@dataclass(frozen=True, slots=True, eq=False)
class Settings:
    enabled: bool
    detector: str
    params: Mapping[str, Any]
    min_train: int
    on_delay: int
    policy: AlarmPolicy  # clear_after and deadband, as the alarm state reads them
    priority: Priority
    unit: str | None
    description: str | None
    limits: Limits | None
    limits_priority: Priority
    rules: tuple[int, ...]  # the rules that matched, in order
    undecided: bool = False  # a rule needed a topic field the series id does not give

    @property
    def clear_after(self) -> int:
        return self.policy.clear_after

    @property
    def deadband(self) -> float:
        return round(1.0 - self.policy.hold_ratio, 12)

    def view(self) -> dict[str, Any]:
        """Plain data for the API and the status page."""
        return {
            "enabled": self.enabled,
            "detector": self.detector,
            "params": dict(self.params),
            "min_train_samples": self.min_train,
            "on_delay": self.on_delay,
            "clear_after": self.clear_after,
            "deadband": self.deadband,
            "priority": int(self.priority),
            "priority_name": self.priority.label,
            "unit": self.unit,
            "description": self.description,
            "limits": self.limits.model_dump(mode="json", exclude_none=True) if self.limits is not None else None,
            "matched_rules": list(self.rules),
        }


class SettingsSource:
    """Resolves series to shared ``Settings``. Without rules, every series gets the one default."""

    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.rules = RuleSet(cfg)
        self._interned: dict[tuple[Any, ...], Settings] = {}
        self.default = self._settings(self.rules.defaults(), ())

    def for_series(self, series_id: str, fields: Mapping[str, str] | None = None) -> Settings:
        """Once per series, at its creation: never per reading."""
        if not self.rules.rules:
            return self.default
        resolved = self.rules.resolve(series_id, fields)
        return self._settings(resolved, resolved.matched)

    def provenance(self, series_id: str, fields: Mapping[str, str] | None = None) -> SeriesSettings:
        """Which rule (or default) set each key, as ``check-config --series`` prints it."""
        return self.rules.resolve(series_id, fields)

    def _settings(self, r: SeriesSettings, matched: tuple[int, ...]) -> Settings:
        limits_json = r.limits.model_dump_json(exclude_none=True) if r.limits is not None else None
        key = (r.enabled, r.detector, json.dumps(dict(r.params), sort_keys=True, default=str), r.min_train_samples,
               r.on_delay, r.clear_after, r.deadband, int(r.priority), r.unit, r.description, limits_json, matched,
               bool(r.undecided))
        got = self._interned.get(key)
        if got is not None:
            return got
        alarms = self.cfg.alarms
        policy = AlarmPolicy(round(1.0 - r.deadband, 12), r.clear_after, alarms.accept_after_s, alarms.accept_min_readings)
        made = Settings(
            r.enabled, r.detector, dict(r.params), r.min_train_samples, r.on_delay, policy, r.priority, r.unit,
            r.description, r.limits, r.limits_priority, matched, bool(r.undecided),
        )
        if len(self._interned) < _MAX_INTERNED:
            self._interned[key] = made
        return made
