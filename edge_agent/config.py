"""Agent configuration: one YAML file, validated by pydantic, overridable from the environment.

Every key is documented in ``config/agent.example.yaml``. Unknown keys are errors, so a
typo never silently falls back to a default. Any key can be overridden with an environment
variable ``EDGE_AGENT__SECTION__KEY=value`` (double underscore between levels); values are
parsed as YAML scalars, so ``EDGE_AGENT__MQTT__PORT=1884`` is an int.

Secrets never live in the YAML: keys ending in ``_file`` name a file holding the secret, or
``credential:NAME`` for a systemd credential (``$CREDENTIALS_DIRECTORY/NAME``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from edge_agent import config_source
from edge_agent.config_source import ENV_PREFIX, ConfigError, Issue, Located, Origins
from edge_agent.priority import Priority, PriorityField
from edge_agent.rules import SeriesRule

__all__ = ["AgentConfig", "ConfigError", "Issue", "ENV_PREFIX", "load_config", "masked_dump", "read_secret"]

# The largest ingest.max_abs_value allowed. Readings within +-1e30 keep every detector's state
# and score finite: squares of differences (4e60) summed over a 1e6-reading buffer stay far
# below float64's 1.8e308, and the Isolation Forest's float32 features (value, difference,
# rolling mean and std) below float32's 3.4e38. tests/test_detector_limits.py checks every
# registered detector at this limit.
MAX_ABS_LIMIT = 1e30


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def read_secret(ref: str | None) -> str | None:
    """Resolve a secret reference: a file path, or ``credential:NAME`` (systemd LoadCredential)."""
    if not ref:
        return None
    if ref.startswith("credential:"):
        cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
        if not cred_dir:
            raise ConfigError(ref, [(ref, "CREDENTIALS_DIRECTORY is not set (not run by systemd?)")])
        path = Path(cred_dir) / ref.split(":", 1)[1]
    else:
        path = Path(ref)
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(str(path), [(ref, f"cannot read secret: {exc.strerror}")]) from exc


class LogConfig(_Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class ReconnectConfig(_Strict):
    initial_delay_s: Annotated[float, Field(gt=0)] = 0.2
    max_delay_s: Annotated[float, Field(gt=0)] = 1.5
    jitter: Annotated[float, Field(ge=0, le=1)] = 0.3


class TlsConfig(_Strict):
    enabled: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify_hostname: bool = True


class MqttConfig(_Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    client_id: str | None = None
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    clean_start: bool = False
    session_expiry_s: Annotated[int, Field(ge=0, le=0xFFFFFFFF)] = 86400
    connect_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    reconnect: ReconnectConfig = ReconnectConfig()
    username: str | None = None
    password_file: str | None = None
    tls: TlsConfig = TlsConfig()
    max_inflight: Annotated[int, Field(ge=1, le=65000)] = 200
    message_expiry_s: Annotated[int, Field(ge=0)] = 86400
    max_packet_bytes: Annotated[int, Field(ge=0, le=268_435_460)] = 0


class SubscriptionConfig(_Strict):
    topic: str = "plant/{line}/{machine}/{sensor}"
    series: str = "{machine}/{sensor}"
    format: Literal["number", "json", "json_batch", "json_multi", "sparkplug_b"] = "json"
    qos: Literal[0, 1, 2] = 1
    value_field: str = "value"
    ts_field: str = "ts"
    ts_unit: Literal["auto", "s", "ms", "iso"] = "auto"
    share_group: str | None = None
    max_abs_value: Annotated[float, Field(gt=0, le=MAX_ABS_LIMIT)] | None = None
    # Machine-level detection (docs/machines.md): the machine id, from the topic's fields,
    # and the sensor's name within it (json_multi: each payload key is a sensor).
    machine: str | None = None
    sensor: str = "{sensor}"

    @model_validator(mode="after")
    def _templates(self) -> SubscriptionConfig:
        from edge_agent.topics import TopicTemplate, check_series_template, template_fields

        if self.format == "sparkplug_b":
            # Sparkplug topics are fixed by the specification: the subscription is a filter
            # and the series template names parts of each message (edge_agent/sparkplug/ingest.py).
            from edge_agent.sparkplug.schema import (
                DEFAULT_FILTER,
                DEFAULT_SERIES,
                check_series,
                parse_filter,
            )

            if self.share_group:
                raise ValueError("share_group cannot be used with format sparkplug_b: each edge node's messages must reach one agent, in order (seq)")
            if self.machine is not None:
                raise ValueError("machine is not supported with format sparkplug_b yet (docs/machines.md)")
            if "topic" not in self.model_fields_set:
                self.topic = DEFAULT_FILTER
            if "series" not in self.model_fields_set:
                self.series = DEFAULT_SERIES
            self.topic = parse_filter(self.topic)
            check_series(self.series)
            return self
        topic = TopicTemplate.parse(self.topic)
        # TemplateError is a ValueError: pydantic reports it under this subscription's key.
        if self.format == "json_multi":
            if "sensor" in topic.fields:
                raise ValueError(f"format json_multi: the payload's keys name the sensors, so topic {self.topic!r} must not define {{sensor}}")
            if "sensor" not in template_fields(self.series):
                raise ValueError(f"format json_multi: series template {self.series!r} must use {{sensor}} (the payload key), or every key would feed one series")
            check_series_template(self.series, topic, extra=("sensor",))
        else:
            check_series_template(self.series, topic)
        if self.machine is not None:
            if not self.machine.strip():
                raise ValueError("machine template is empty")
            if self.format == "json_batch":
                raise ValueError("format json_batch (many readings of one sensor) cannot feed a machine row: use json or json_multi")
            check_series_template(self.machine, topic, what="machine")
            if self.format != "json_multi":
                check_series_template(self.sensor, topic, what="sensor")
        return self


class RetrainConfig(_Strict):
    every_n: Annotated[int, Field(ge=0)] = 0
    on_drift: bool = False
    drift_window: Annotated[int, Field(ge=50)] = 500
    drift_ratio: Annotated[float, Field(gt=1)] = 3.0


def _default_detector() -> str:
    from edge_agent import detectors

    return detectors.DEFAULT


class DetectorConfig(_Strict):
    name: str = Field(default_factory=_default_detector)
    params: dict[str, Any] = {}
    min_train_samples: Annotated[int, Field(ge=2)] = 500
    retrain: RetrainConfig = RetrainConfig()
    fit_timeout_s: Annotated[float, Field(gt=0)] = 300.0

    @model_validator(mode="after")
    def _known_detector(self) -> DetectorConfig:
        from edge_agent import detectors
        from edge_agent.fit_bounds import check_fit_params

        # ParamProblems (a ValueError) is reported under detector.params.<name> by config_source;
        # a detector whose optional packages are missing is a preflight error, not a schema one.
        detectors.check_params(self.name, self.params)
        check_fit_params(self.name, self.params)  # what a fit may cost (edge_agent/fit_bounds.py)
        return self


def _default_machine_detector() -> str:
    from edge_agent import machine_detectors

    return machine_detectors.DEFAULT


class MachineDetectorConfig(_Strict):
    name: str = Field(default_factory=_default_machine_detector)
    params: dict[str, Any] = {}

    @model_validator(mode="after")
    def _known_detector(self) -> MachineDetectorConfig:
        from edge_agent import machine_detectors

        try:
            machine_detectors.create(self.name, self.params)
        except TypeError as exc:
            raise ValueError(str(exc)) from None
        return self


class MachineRowsConfig(_Strict):
    max_skew_s: Annotated[float, Field(ge=0)] = 0.5
    stale_after_s: Annotated[float, Field(gt=0)] = 30.0


class MachineAlarmsConfig(_Strict):
    # The same decision as a series' (alarm_state.py, AlarmPolicy.from_config reads the first
    # four keys), with the same defaults as ``alarms.*``: docs/machines.md has the SKAB figures.
    hold_ratio: Annotated[float, Field(gt=0, le=1)] = 0.7
    clear_after: Annotated[int, Field(ge=1)] = 10
    accept_after_s: Annotated[float, Field(ge=0)] | None = 7 * 86400.0
    accept_min_readings: Annotated[int, Field(ge=1)] = 1000
    # A sibling of the series' alerts/ level, so that no series id can render to a machine's
    # alarm topic and a subscriber of edge/+/alerts/# never gets a payload it does not know.
    topic: str = "edge/{gateway_id}/machine_alerts/{machine}"
    qos: Literal[0, 1, 2] = 1
    state_topic: str | None = None
    # In every machine alarm and on the operator's list (annunciator.py), as a series' rules set theirs.
    priority: PriorityField = Priority.MEDIUM

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "clear_ratio" in data:
            raise ValueError("clear_ratio is now hold_ratio, as in alarms.hold_ratio (a row below hold_ratio x threshold counts towards the clear)")
        return data


class MachinesConfig(_Strict):
    detector: MachineDetectorConfig = MachineDetectorConfig()
    min_train_rows: Annotated[int, Field(ge=50)] = 400
    buffer_rows: Annotated[int, Field(ge=64, le=1_000_000)] = 512
    max_machines: Annotated[int, Field(ge=1)] = 1000
    max_sensors: Annotated[int, Field(ge=1, le=256)] = 64
    rows: MachineRowsConfig = MachineRowsConfig()
    alarms: MachineAlarmsConfig = MachineAlarmsConfig()
    # Each machine's live state written this often (and at a clean stop): machines/checkpoint.py.
    live_state_every_s: Annotated[float, Field(ge=0)] = 600.0

    @model_validator(mode="after")
    def _buffer_holds_a_fit(self) -> MachinesConfig:
        if self.buffer_rows < self.min_train_rows:
            raise ValueError(f"machines.buffer_rows ({self.buffer_rows}) must hold machines.min_train_rows ({self.min_train_rows})")
        return self


class SeriesConfig(_Strict):
    buffer_size: Annotated[int, Field(ge=16, le=1_000_000)] = 4096
    max_series: Annotated[int, Field(ge=1)] = 100_000
    max_bytes: Annotated[int, Field(ge=1_048_576)] = 384 * 1024 * 1024
    idle_s: Annotated[float, Field(gt=0)] = 600.0
    # Streaming detectors' live state written this often (and at a clean stop): series_live.py.
    live_state_every_s: Annotated[float, Field(ge=0)] = 600.0


class AlarmConfig(_Strict):
    # Raise / hold / clear / accept: see alarm_state.py, which reads these four keys.
    hold_ratio: Annotated[float, Field(gt=0, le=1)] = 0.7
    clear_after: Annotated[int, Field(ge=1)] = 10
    accept_after_s: Annotated[float, Field(ge=0)] | None = 7 * 86400.0
    accept_min_readings: Annotated[int, Field(ge=1)] = 1000
    # After an operator's rebaseline of a move, a raise the same way within this many readings
    # of the last acceptance is the move going on, accepted in place (alarm_follow.py); 0: off.
    follow_readings: Annotated[int, Field(ge=0)] = 200
    topic: str = "edge/{gateway_id}/alerts/{series}"
    qos: Literal[0, 1, 2] = 1
    state_topic: str | None = None
    # Operators (annunciator.py): the longest shelve, and the alarm rate called a flood.
    max_shelve_s: Annotated[float, Field(gt=0)] = 86400.0
    flood_per_10min: Annotated[int, Field(ge=1)] = 10


class StatusConfig(_Strict):
    topic: str = "edge/{gateway_id}/status"


class IngestConfig(_Strict):
    max_payload_bytes: Annotated[int, Field(ge=16)] = 1_048_576
    max_abs_value: Annotated[float, Field(gt=0, le=MAX_ABS_LIMIT)] = 1e20
    max_batch: Annotated[int, Field(ge=1)] = 10_000
    max_future_skew_s: Annotated[float, Field(ge=0)] = 86400.0
    max_past_age_s: Annotated[float, Field(ge=0)] = 365 * 86400.0
    replay_window_s: Annotated[float, Field(ge=0)] = 1800.0
    clock_step_after_s: Annotated[float, Field(ge=0)] = 2.0
    dead_letter_topic: str | None = None
    reject_log_interval_s: Annotated[float, Field(ge=0)] = 10.0


class OutboxConfig(_Strict):
    path: str = "outbox.sqlite"
    synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = "FULL"
    max_rows: Annotated[int, Field(ge=1)] = 100_000
    max_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024 * 1024
    max_age_s: Annotated[float, Field(gt=0)] = 7 * 86400.0
    retry_s: Annotated[float, Field(gt=0)] = 30.0
    max_attempts: Annotated[int, Field(ge=1, le=1000)] = 5
    stuck_after_s: Annotated[float, Field(gt=0)] = 60.0


class CommandsConfig(_Strict):
    enabled: bool = True
    topic: str = "edge/{gateway_id}/cmd/{command}"
    key_file: str | None = None
    allow_unsigned: bool = False
    max_age_s: Annotated[float, Field(gt=0)] = 60.0
    qos: Literal[0, 1, 2] = 1
    refusal_answers_per_s: Annotated[float, Field(ge=0)] = 1.0
    refusal_answer_burst: Annotated[int, Field(ge=0)] = 10
    refusal_log_interval_s: Annotated[float, Field(ge=0)] = 10.0


class S3Config(_Strict):
    enabled: bool = False
    bucket: str = ""
    prefix: str = "edge-agent"
    fleet_prefix: str | None = None
    region: str | None = None
    endpoint_url: str | None = None
    credentials_file: str | None = None
    on_pull: Literal["activate", "stage"] = "activate"
    interval_s: Annotated[float, Field(gt=0)] = 300.0
    retry_initial_s: Annotated[float, Field(gt=0)] = 1.0
    retry_max_s: Annotated[float, Field(gt=0)] = 300.0
    timeout_s: Annotated[float, Field(gt=0)] = 10.0

    @model_validator(mode="after")
    def _bucket_when_enabled(self) -> S3Config:
        if self.enabled and not self.bucket:
            raise ValueError("s3.bucket is required when s3.enabled is true")
        return self


def _sparkplug_id(value: str | None, what: str) -> str | None:
    if value is not None and (not value or any(c in value for c in "+/#\x00")):
        raise ValueError(f"{what} {value!r} must be non-empty, without + / # (Sparkplug topic rules)")
    return value


class SparkplugIngestConfig(_Strict):
    request_rebirth: bool = True
    rebirth_interval_s: Annotated[float, Field(gt=0)] = 30.0
    rebirth_requests_per_s: Annotated[float, Field(gt=0)] = 5.0
    max_nodes: Annotated[int, Field(ge=1)] = 10_000
    max_metrics_per_birth: Annotated[int, Field(ge=1)] = 10_000
    max_metrics: Annotated[int, Field(ge=1)] = 200_000


class SparkplugConfig(_Strict):
    enabled: bool = False
    group_id: str = "edge-agent"
    edge_node_id: str | None = None
    primary_host_id: str | None = None
    client_id: str | None = None
    device_segments: Annotated[int, Field(ge=1, le=32)] = 1
    score_interval_s: Annotated[float, Field(gt=0)] = 10.0
    score_deadband: Annotated[float, Field(ge=0)] = 0.0
    rebirth_min_interval_s: Annotated[float, Field(ge=0)] = 2.0
    ingest: SparkplugIngestConfig = SparkplugIngestConfig()

    @model_validator(mode="after")
    def _ids(self) -> SparkplugConfig:
        _sparkplug_id(self.group_id, "sparkplug.group_id")
        _sparkplug_id(self.edge_node_id, "sparkplug.edge_node_id")
        _sparkplug_id(self.primary_host_id, "sparkplug.primary_host_id")
        return self


class HttpConfig(_Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    token_file: str | None = None
    series_label_limit: Annotated[int, Field(ge=0)] = 100
    plot_concurrency: Annotated[int, Field(ge=1, le=8)] = 2
    max_connections: Annotated[int, Field(ge=4, le=100_000)] = 100
    header_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    body_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    auth_max_failures: Annotated[int, Field(ge=1)] = 10
    auth_window_s: Annotated[float, Field(gt=0)] = 60.0


class AgentConfig(_Strict):
    gateway_id: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")] = "gw-01"
    state_dir: str = "./state"
    event_loop: Literal["asyncio", "uvloop"] = "asyncio"
    log: LogConfig = LogConfig()
    mqtt: MqttConfig = MqttConfig()
    subscriptions: list[SubscriptionConfig] = Field(default_factory=lambda: [SubscriptionConfig()])
    detector: DetectorConfig = DetectorConfig()
    series: SeriesConfig = SeriesConfig()
    machines: MachinesConfig = MachinesConfig()
    alarms: AlarmConfig = AlarmConfig()
    status: StatusConfig = StatusConfig()
    ingest: IngestConfig = IngestConfig()
    outbox: OutboxConfig = OutboxConfig()
    commands: CommandsConfig = CommandsConfig()
    s3: S3Config = S3Config()
    http: HttpConfig = HttpConfig()
    sparkplug: SparkplugConfig = SparkplugConfig()
    # Per-series rules (rules.py): matched in order, later ones override earlier ones key by key.
    rules: list[SeriesRule] = Field(default_factory=list)

    @field_validator("subscriptions")
    @classmethod
    def _at_least_one(cls, v: list[SubscriptionConfig]) -> list[SubscriptionConfig]:
        if not v:
            raise ValueError("at least one subscription is required")
        return v

    @field_validator("rules")
    @classmethod
    def _rule_fields(cls, rules: list[SeriesRule], info: ValidationInfo) -> list[SeriesRule]:
        from edge_agent.rules import check_rule_fields, subscription_fields

        subs = info.data.get("subscriptions")
        if not subs:
            return rules  # the subscriptions have errors of their own
        known = {f for s in subs for f in subscription_fields(s)}
        problems = check_rule_fields(rules, known)
        if problems:
            raise Located([(p[1:], m) for p, m in problems])  # relative to `rules`
        return rules

    _origins: Origins | None = PrivateAttr(default=None)

    def where(self, *path: str | int) -> str | None:
        """Where the key at ``path`` was set: ``file:line``, an environment variable, or None."""
        return self._origins.where(path) if self._origins is not None else None

    def set_at(self, *path: str | int) -> str | None:
        """Where exactly the key at ``path`` was set; None when it has its default."""
        return self._origins.exact(path) if self._origins is not None else None

    @property
    def source(self) -> str:
        return self._origins.source if self._origins is not None else "(defaults)"

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"edge-agent-{self.gateway_id}"

    def state_path(self, *parts: str) -> Path:
        return Path(self.state_dir).joinpath(*parts)


def load_config(path: str | os.PathLike | None, environ: dict[str, str] | None = None) -> AgentConfig:
    """Load, override from the environment, and validate. Raises ConfigError naming every bad
    key with the file and line (or the environment variable) that set it."""
    environ = dict(os.environ) if environ is None else environ
    source = str(path) if path else "(defaults)"
    data: Any = {}
    origins = Origins(source)
    errors: list[Issue] = []
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(source, [Issue("(file)", f"cannot read: {exc.strerror}", source)]) from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(source, [Issue("(file)", f"not UTF-8 text ({exc.reason} at byte {exc.start})", source)]) from exc
        data, origins, errors = config_source.parse_yaml(text, source)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(source, [Issue("(root)", "the file must hold a mapping of keys", f"{source}:1")])
    errors += config_source.apply_env(data, environ, origins)
    try:
        cfg = AgentConfig.model_validate(data)
    except ValidationError as exc:
        errors += config_source.issues(exc, AgentConfig, origins)
        raise ConfigError(source, config_source.by_place(errors)) from None
    if errors:
        raise ConfigError(source, config_source.by_place(errors))
    cfg._origins = origins
    return cfg


_SECRET_SUFFIXES = ("_file", "password", "token", "key")


def masked_dump(cfg: AgentConfig) -> dict:
    """The resolved config as plain data, with anything secret-looking masked."""

    def mask(node: Any, key: str = "") -> Any:
        if isinstance(node, dict):
            return {k: mask(v, k) for k, v in node.items()}
        if isinstance(node, list):
            return [mask(v, key) for v in node]
        if node and key.endswith(_SECRET_SUFFIXES) and key not in ("value_field",):
            # Secret *references* (paths) are not secrets, but the values behind them are; show the reference.
            return node if key.endswith("_file") else "***"
        return node

    data = cfg.model_dump(mode="json")
    # Rules as written: a key a rule leaves out means "keep the earlier setting", not null.
    data["rules"] = [r.model_dump(mode="json", exclude_unset=True) for r in cfg.rules]
    return mask(data)
