"""Request and response bodies of the JSON API (they make ``/docs`` and ``/openapi.json`` right)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edge_agent import detectors

# Strict: JSON true/false or "1" are not numbers here (lax pydantic would take them).
Finite = Annotated[float, Field(allow_inf_nan=False, strict=True)]
MAX_VALUES = 1_000_000
# The registered detectors, so /docs lists them and a typo is a 422 naming the choices.
DetectorName = Literal[tuple(sorted(detectors.REGISTRY))]  # type: ignore[valid-type]


class FitBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    values: Annotated[list[Finite] | None, Field(min_length=2, max_length=MAX_VALUES)] = Field(
        None, description="Training values; omitted: the last `last_n` readings the agent holds for the series")
    detector: DetectorName | None = Field(None, description="Detector name; default: the configured one")
    params: dict[str, Any] | None = Field(None, description="Detector parameters; default: the configured ones")
    last_n: Annotated[int, Field(ge=2, strict=True)] | None = Field(None, description="Without `values`: train on this many recent readings")


class FitResult(BaseModel):
    series: str
    version: int
    detector: str
    n_samples: int
    train_ms: float | None
    warnings: list[str] = []


class PredictBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: Finite | None = Field(None, description="One value to score")
    values: Annotated[list[Finite], Field(min_length=1, max_length=100_000)] | None = Field(None, description="Values to score, in order")


class Prediction(BaseModel):
    value: float
    score: float | None
    anomalous: bool


class PredictResult(BaseModel):
    series: str
    version: int
    detector: str
    threshold: float | None
    anomalous: bool = Field(description="True when any posted value is anomalous")
    predictions: list[Prediction]


class RollbackResult(BaseModel):
    series: str
    version: int
    detector: str


class ModelInfo(BaseModel):
    version: int
    detector: str
    threshold: float | None
    band: list[float | None] | None
    params: dict[str, Any]
    init_params: dict[str, Any] | None
    trained_at: float | None
    n_samples: int | None
    train_ms: float | None
    reason: str | None
    source: str | None


class SeriesSummary(BaseModel):
    id: str
    state: str = Field(description="learning | normal | alarm | stale (its Sparkplug source died)")
    model_version: int | None
    detector: str | None
    last_value: float | None
    last_ts: float | None
    last_score: float | None
    last_alarm_ts: float | None
    readings: int
    alarms: int


class SeriesList(BaseModel):
    total: int
    offset: int
    series: list[SeriesSummary]


class Mark(BaseModel):
    ts: float | None
    value: float | None
    state: str


class FollowInfo(BaseModel):
    direction: str = Field(description="up | down: the move an operator's rebaseline accepted")
    until_reading: int = Field(description="A raise that way up to this reading is the move going on (alarm_follow.py)")
    ends_at_reading: int = Field(description="The following ends here whatever happens")
    accepted_by: str


class AlarmInfo(BaseModel):
    active: bool
    raised_ts: float | None
    raised_alert_id: str | None
    last_alarm_ts: float | None
    alarms_raised: int
    anomalous_readings: int
    marks: list[Mark]
    following: FollowInfo | None = Field(None, description="A ramped move an operator accepted, followed while it goes on; null: none")


class RecentStats(BaseModel):
    n: int
    min: float | None
    max: float | None
    mean: float | None


class ReadingsInfo(BaseModel):
    total: int
    held: int
    scored: int
    last_value: float | None
    last_ts: float | None
    last_score: float | None
    recent: RecentStats


class SeriesDetail(BaseModel):
    id: str
    state: str
    model: ModelInfo | None
    alarm: AlarmInfo
    readings: ReadingsInfo
    fit_pending: bool
    stored_versions: list[int] = Field(description="Versions in the model store, oldest first")
    active_version: int | None = Field(description="The version the store marks active")


class Liveness(BaseModel):
    status: str
    problems: list[str] = Field(default_factory=list, description="What health reports (the agent is alive regardless)")


class Readiness(BaseModel):
    ready: bool
    reasons: list[str]
    degraded: list[str] = Field(default_factory=list, description="Serving, but with these problems (the `problems` of /healthcheck that do not stop it: series refused or evicted past the budget, a degraded outbox or model store, bad stored models)")
