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

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ENV_PREFIX = "EDGE_AGENT__"

# The largest ingest.max_abs_value allowed. Readings within +-1e30 keep every detector's state
# and score finite: squares of differences (4e60) summed over a 1e6-reading buffer stay far
# below float64's 1.8e308, and the Isolation Forest's float32 features (value, difference,
# rolling mean and std) below float32's 3.4e38. tests/test_detector_limits.py checks every
# registered detector at this limit.
MAX_ABS_LIMIT = 1e30


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class ConfigError(Exception):
    """A config file that cannot be used; ``errors`` lists ``(key.path, message)`` pairs."""

    def __init__(self, source: str, errors: list[tuple[str, str]]):
        self.source = source
        self.errors = errors
        lines = [f"{source}: {len(errors)} config error(s)"]
        lines += [f"  {key}: {msg}" for key, msg in errors]
        super().__init__("\n".join(lines))


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


class SubscriptionConfig(_Strict):
    topic: str = "plant/{line}/{machine}/{sensor}"
    series: str = "{machine}/{sensor}"
    format: Literal["number", "json", "json_batch"] = "json"
    qos: Literal[0, 1, 2] = 1
    value_field: str = "value"
    ts_field: str = "ts"
    ts_unit: Literal["auto", "s", "ms", "iso"] = "auto"
    share_group: str | None = None
    max_abs_value: Annotated[float, Field(gt=0, le=MAX_ABS_LIMIT)] | None = None

    @model_validator(mode="after")
    def _templates(self) -> SubscriptionConfig:
        from edge_agent.topics import TopicTemplate, check_series_template

        check_series_template(self.series, TopicTemplate.parse(self.topic))  # TemplateError is a ValueError
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

    @model_validator(mode="after")
    def _known_detector(self) -> DetectorConfig:
        from edge_agent import detectors

        try:
            detectors.create(self.name, self.params)
        except TypeError as exc:  # an unknown param; pydantic reports ValueErrors with the key path
            raise ValueError(str(exc)) from None
        return self


class SeriesConfig(_Strict):
    buffer_size: Annotated[int, Field(ge=16, le=1_000_000)] = 4096
    max_series: Annotated[int, Field(ge=1)] = 100_000
    max_bytes: Annotated[int, Field(ge=1_048_576)] = 384 * 1024 * 1024
    idle_s: Annotated[float, Field(gt=0)] = 600.0


class AlarmConfig(_Strict):
    clear_after: Annotated[int, Field(ge=1)] = 10
    topic: str = "edge/{gateway_id}/alerts/{series}"
    qos: Literal[0, 1, 2] = 1
    state_topic: str | None = None


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


class CommandsConfig(_Strict):
    enabled: bool = True
    topic: str = "edge/{gateway_id}/cmd/{command}"
    key_file: str | None = None
    allow_unsigned: bool = False
    max_age_s: Annotated[float, Field(gt=0)] = 60.0
    qos: Literal[0, 1, 2] = 1


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


class HttpConfig(_Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    token_file: str | None = None
    series_label_limit: Annotated[int, Field(ge=0)] = 100
    plot_concurrency: Annotated[int, Field(ge=1, le=8)] = 2


class AgentConfig(_Strict):
    gateway_id: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")] = "gw-01"
    state_dir: str = "./state"
    event_loop: Literal["asyncio", "uvloop"] = "asyncio"
    log: LogConfig = LogConfig()
    mqtt: MqttConfig = MqttConfig()
    subscriptions: list[SubscriptionConfig] = Field(default_factory=lambda: [SubscriptionConfig()])
    detector: DetectorConfig = DetectorConfig()
    series: SeriesConfig = SeriesConfig()
    alarms: AlarmConfig = AlarmConfig()
    status: StatusConfig = StatusConfig()
    ingest: IngestConfig = IngestConfig()
    outbox: OutboxConfig = OutboxConfig()
    commands: CommandsConfig = CommandsConfig()
    s3: S3Config = S3Config()
    http: HttpConfig = HttpConfig()

    @field_validator("subscriptions")
    @classmethod
    def _at_least_one(cls, v: list[SubscriptionConfig]) -> list[SubscriptionConfig]:
        if not v:
            raise ValueError("at least one subscription is required")
        return v

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"edge-agent-{self.gateway_id}"

    def state_path(self, *parts: str) -> Path:
        return Path(self.state_dir).joinpath(*parts)


def _env_overrides(environ: dict[str, str]) -> list[tuple[list[str], Any]]:
    out = []
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX):].split("__") if p]
        if not path:
            continue
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        out.append((path, value))
    return out


def _apply(data: dict, path: list[str], value: Any) -> None:
    node = data
    for i, key in enumerate(path[:-1]):
        if isinstance(node, list):
            idx = int(key)
            node = node[idx]
            continue
        nxt = node.get(key)
        if nxt is None:
            nxt = [] if (i + 1 < len(path) and path[i + 1].isdigit()) else {}
            node[key] = nxt
        node = nxt
    last = path[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def _format_errors(exc: ValidationError) -> list[tuple[str, str]]:
    return [(".".join(str(p) for p in err["loc"]) or "(root)", err["msg"]) for err in exc.errors()]


def load_config(path: str | os.PathLike | None, environ: dict[str, str] | None = None) -> AgentConfig:
    """Load, override from the environment, and validate. Raises ConfigError naming every bad key."""
    environ = dict(os.environ) if environ is None else environ
    source = str(path) if path else "(defaults)"
    data: Any = {}
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(source, [("(file)", f"cannot read: {exc.strerror}")]) from exc
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(source, [("(yaml)", str(exc).replace("\n", " "))]) from exc
        if not isinstance(data, dict):
            raise ConfigError(source, [("(root)", "the file must hold a mapping of keys")])
    errors: list[tuple[str, str]] = []
    for key_path, value in _env_overrides(environ):
        try:
            _apply(data, key_path, value)
        except (ValueError, IndexError, TypeError, AttributeError):
            errors.append((".".join(key_path), f"environment override {ENV_PREFIX}{'__'.join(key_path).upper()} does not fit the config"))
    try:
        cfg = AgentConfig.model_validate(data)
    except ValidationError as exc:
        errors += _format_errors(exc)
        raise ConfigError(source, errors) from None
    if errors:
        raise ConfigError(source, errors)
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

    return mask(cfg.model_dump(mode="json"))
