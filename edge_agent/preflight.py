"""What ``run`` checks before it connects, and ``check-config`` with it: one function, ``preflight``.

The schema (``config.py``) checks each value on its own. This checks what the values point
at: secret files exist, are readable and not empty; TLS files load as what they claim (a CA
bundle into an ``ssl.SSLContext``, a certificate with its key); the state directory can be
created and written; topic templates use only the fields the agent fills in; the optional
packages a configured feature needs are installed. Each problem names the key and where it
was set (``file:line`` or the environment variable), like schema errors do.

Before this, ``run`` found these one by one and late: a missing ``password_file`` as a
40-line traceback, a missing TLS ``ca_file`` as a reconnect loop blaming the broker.
"""

from __future__ import annotations

import importlib.util
import os
import ssl
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from edge_agent.config import AgentConfig, ConfigError, Issue, read_secret
from edge_agent.topics import TemplateError, TopicTemplate

# Publish-topic templates and the fields the agent fills into each.
_PUBLISH_TOPICS: tuple[tuple[tuple[str, str], frozenset[str]], ...] = (
    (("alarms", "topic"), frozenset({"gateway_id", "series"})),
    (("alarms", "state_topic"), frozenset({"gateway_id", "series"})),
    (("status", "topic"), frozenset({"gateway_id"})),
    (("ingest", "dead_letter_topic"), frozenset({"gateway_id"})),
    (("machines", "alarms", "topic"), frozenset({"gateway_id", "machine"})),
    (("machines", "alarms", "state_topic"), frozenset({"gateway_id", "machine"})),
)
_MIN_KEY_CHARS = 32  # `edge-agent keygen` writes 64 hex characters (32 random bytes)


@dataclass
class Report:
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def preflight(cfg: AgentConfig, *, for_run: bool = False) -> Report:
    """Every check ``run`` does before connecting. ``for_run``: create the state directory
    (``check-config`` only checks it could be made: it changes nothing), and treat a
    ``credential:NAME`` with no ``$CREDENTIALS_DIRECTORY`` as an error (``check-config`` run
    outside the systemd unit cannot see the credentials: a warning)."""
    report = Report()
    _secrets(cfg, report, for_run)
    _tls(cfg, report, for_run)
    _state_dir(cfg, report, for_run)
    _templates(cfg, report)
    _extras(cfg, report)
    return report


def _err(report: Report, cfg: AgentConfig, path: tuple[str, ...], msg: str) -> None:
    report.errors.append(Issue(".".join(path), msg, cfg.where(*path)))


def _warn(report: Report, cfg: AgentConfig, path: tuple[str, ...], msg: str) -> None:
    report.warnings.append(Issue(".".join(path), msg, cfg.where(*path)))


def _value(cfg: AgentConfig, path: tuple[str, ...]) -> object:
    node: object = cfg
    for part in path:
        node = getattr(node, part)
    return node


# ---- secrets -----------------------------------------------------------------------------
def _unseen_credential(cfg: AgentConfig, report: Report, path: tuple[str, ...], ref: str, for_run: bool) -> bool:
    """True (and a finding) for a ``credential:NAME`` that cannot be looked at here."""
    if not ref.startswith("credential:") or os.environ.get("CREDENTIALS_DIRECTORY"):
        return False
    msg = f"{ref}: CREDENTIALS_DIRECTORY is not set (not started by systemd with LoadCredential=?)"
    if for_run:
        _err(report, cfg, path, msg)
    else:
        _warn(report, cfg, path, f"{ref} not checked: it is a systemd credential, visible only inside the unit")
    return True


def credential_path(ref: str) -> str:
    """A ``*_file`` value as a filesystem path (``credential:NAME`` under $CREDENTIALS_DIRECTORY)."""
    if ref.startswith("credential:"):
        return os.path.join(os.environ.get("CREDENTIALS_DIRECTORY", ""), ref.split(":", 1)[1])
    return ref


def _secrets(cfg: AgentConfig, report: Report, for_run: bool) -> None:
    wanted = (
        (("mqtt", "password_file"), True),
        (("commands", "key_file"), cfg.commands.enabled),
        (("http", "token_file"), cfg.http.enabled),
        (("s3", "credentials_file"), cfg.s3.enabled),
    )
    for path, used in wanted:
        ref = _value(cfg, path)
        if not ref or not used or _unseen_credential(cfg, report, path, str(ref), for_run):
            continue
        try:
            text = read_secret(str(ref))
        except ConfigError as exc:
            _err(report, cfg, path, f"{ref}: {exc.errors[0][1] if exc.errors else exc}")
            continue
        if not text:
            _err(report, cfg, path, f"{ref} is empty")
            continue
        _loose_permissions(cfg, report, path, str(ref))
        if path == ("commands", "key_file") and len(text) < _MIN_KEY_CHARS:
            _warn(report, cfg, path, f"the key is {len(text)} characters; `edge-agent keygen` makes a 64-character one")
        if path == ("s3", "credentials_file"):
            from edge_agent.s3_client import load_credentials_file

            try:
                load_credentials_file(str(ref))
            except ConfigError as exc:
                _err(report, cfg, path, f"{ref}: {exc.errors[0][1] if exc.errors else exc}")
    if cfg.mqtt.password_file and not cfg.mqtt.username:
        _warn(report, cfg, ("mqtt", "password_file"), "set, but mqtt.username is not: no credentials are sent")


def _loose_permissions(cfg: AgentConfig, report: Report, path: tuple[str, ...], ref: str) -> None:
    if ref.startswith("credential:"):
        return  # systemd's copy, private to the unit
    try:
        mode = os.stat(ref).st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        _warn(report, cfg, path, f"{ref} is readable by others (mode {stat.S_IMODE(mode):04o}); chmod 600 it")


# ---- TLS ---------------------------------------------------------------------------------
def tls_context(cfg: AgentConfig) -> ssl.SSLContext:
    """The client context ``mqtt.tls`` describes; ssl/OS errors propagate."""
    tls = cfg.mqtt.tls
    ca, cert, key = (credential_path(f) if f else None for f in (tls.ca_file, tls.cert_file, tls.key_file))
    ctx = ssl.create_default_context(cafile=ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def _tls(cfg: AgentConfig, report: Report, for_run: bool) -> None:
    tls = cfg.mqtt.tls
    files = {"ca_file": tls.ca_file, "cert_file": tls.cert_file, "key_file": tls.key_file}
    if not tls.enabled:
        for name, value in files.items():
            if value:
                _warn(report, cfg, ("mqtt", "tls", name), "ignored: mqtt.tls.enabled is false")
        return
    bad = False
    for name, value in files.items():
        if value and _unseen_credential(cfg, report, ("mqtt", "tls", name), value, for_run):
            bad = True  # cannot load the set without it
        elif value and not os.access(credential_path(value), os.R_OK):
            why = "does not exist" if not os.path.exists(credential_path(value)) else "is not readable by this user"
            _err(report, cfg, ("mqtt", "tls", name), f"{value} {why}")
            bad = True
    if tls.key_file and not tls.cert_file:
        _err(report, cfg, ("mqtt", "tls", "key_file"), "set without mqtt.tls.cert_file (the client certificate)")
        bad = True
    if bad:
        return
    try:
        ssl.create_default_context(cafile=credential_path(tls.ca_file) if tls.ca_file else None)
    except (ssl.SSLError, OSError) as exc:
        _err(report, cfg, ("mqtt", "tls", "ca_file"), f"{tls.ca_file} is not a PEM CA bundle ({_ssl_reason(exc)})")
        return
    if tls.cert_file:
        try:
            tls_context(cfg)
        except (ssl.SSLError, OSError) as exc:
            reason = _ssl_reason(exc)
            if "KEY_VALUES_MISMATCH" in str(exc):
                msg = f"{tls.cert_file} and {tls.key_file} do not belong together (the key is not the certificate's)"
            else:
                msg = f"cannot load the client certificate {tls.cert_file} with key {tls.key_file or '(in the same file)'} ({reason})"
            _err(report, cfg, ("mqtt", "tls", "cert_file"), msg)


def _ssl_reason(exc: BaseException) -> str:
    return getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)


# ---- state directory ---------------------------------------------------------------------
def _state_dir(cfg: AgentConfig, report: Report, create: bool) -> None:
    state = Path(cfg.state_dir)
    outbox = cfg.state_path(cfg.outbox.path).parent
    for path, directory in ((("state_dir",), state), (("outbox", "path"), outbox)):
        if path == ("outbox", "path") and outbox == state:
            continue
        problem = _dir_problem(directory, create)
        if problem:
            _err(report, cfg, path, problem)


def _dir_problem(directory: Path, create: bool) -> str | None:
    """Why ``directory`` cannot be used, the same words whether or not it is then created."""
    problem = _probe(directory)
    if problem is None and create:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"cannot create {directory}: {exc.strerror}"
    return problem


def _probe(directory: Path) -> str | None:
    probe = directory
    while not probe.exists():
        if probe.parent == probe:
            return f"cannot create {directory}: no existing parent directory"
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a directory"
    try:
        fd, name = tempfile.mkstemp(prefix=".edge-agent-write-test-", dir=probe)
    except OSError as exc:
        verb = "write in" if probe == directory else f"create {directory} in"
        return f"cannot {verb} {probe}: {exc.strerror}"
    os.close(fd)
    os.unlink(name)
    return None


# ---- topic templates -----------------------------------------------------------------------
def _templates(cfg: AgentConfig, report: Report) -> None:
    from edge_agent.ingest import build_subscriptions

    try:
        build_subscriptions(cfg)  # what Ingest builds at start (the schema checked each template)
    except (ValueError, TypeError, KeyError) as exc:
        _err(report, cfg, ("subscriptions",), str(exc))
    for path, allowed in _PUBLISH_TOPICS:
        template = _value(cfg, path)
        if template:
            _check_publish_topic(cfg, report, path, str(template), allowed)
    _machine_topics_apart(cfg, report)
    if cfg.commands.enabled:
        path = ("commands", "topic")
        try:
            tpl = TopicTemplate.parse(cfg.commands.topic)
        except TemplateError as exc:
            _err(report, cfg, path, str(exc))
            return
        if "command" not in tpl.fields:
            _err(report, cfg, path, "must contain {command} (the last topic segment names the command)")
        unknown = set(tpl.fields) - {"gateway_id", "command"}
        if unknown:
            _err(report, cfg, path, f"unknown field(s) {_fields(unknown)}; the agent fills in {{gateway_id}} and {{command}}")


def _check_publish_topic(cfg: AgentConfig, report: Report, path: tuple[str, ...], template: str, allowed: frozenset[str]) -> None:
    import re

    if "+" in template or "#" in template:
        _err(report, cfg, path, f"{template!r}: MQTT wildcards (+, #) cannot be published to")
        return
    used = set(re.findall(r"\{([^{}]*)\}", template))
    unknown = used - allowed
    if unknown:
        _err(report, cfg, path, f"{template!r}: unknown field(s) {_fields(unknown)}; the agent fills in {_fields(allowed)}")


def _machine_topics_apart(cfg: AgentConfig, report: Report) -> None:
    """A warning when a machine's alarm topic can be a series' (series and machine ids are
    any strings): their literal heads, up to the first id, must differ somewhere."""
    if not any(sub.machine is not None for sub in cfg.subscriptions):
        return
    pairs = ((("machines", "alarms", "topic"), ("alarms", "topic")), (("machines", "alarms", "state_topic"), ("alarms", "state_topic")))
    for mpath, spath in pairs:
        mt, st = _value(cfg, mpath), _value(cfg, spath)
        if not mt or not st:
            continue
        mhead = str(mt).replace("{gateway_id}", cfg.gateway_id).split("{", 1)[0]
        shead = str(st).replace("{gateway_id}", cfg.gateway_id).split("{", 1)[0]
        if mhead.startswith(shead) or shead.startswith(mhead):
            _warn(report, cfg, mpath, f"{mt!r} and {'.'.join(spath)} {st!r} can render the same topic for a machine and a "
                  f"series (ids are free text): start them differently, e.g. the default edge/{{gateway_id}}/machine_alerts/{{machine}}")


def _fields(names: set[str] | frozenset[str]) -> str:
    return ", ".join("{" + n + "}" for n in sorted(names))


# ---- optional packages ---------------------------------------------------------------------
def _extras(cfg: AgentConfig, report: Report) -> None:
    from edge_agent import detectors

    uses: list[tuple[tuple[str, ...], str]] = [(("detector", "name"), cfg.detector.name)]
    for i, rule in enumerate(getattr(cfg, "rules", None) or []):
        if rule.detector is not None:
            uses.append((("rules", str(i), "detector"), rule.detector))
    for path, name in uses:
        missing = detectors.missing_packages(name)
        if missing:
            extra = detectors.EXTRAS[name][0]
            report.errors.append(Issue(_dotted(path), f"detector {name!r} needs {', '.join(missing)}: "
                                       f"pip install 'edge-agent[{extra}]'", cfg.where(*_typed(path))))
    if cfg.s3.enabled and importlib.util.find_spec("boto3") is None:
        _err(report, cfg, ("s3", "enabled"), "S3 sync needs boto3: pip install 'edge-agent[s3]'")
    if cfg.event_loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        _err(report, cfg, ("event_loop",), "uvloop is not installed: pip install 'edge-agent[uvloop]'")


def _typed(path: tuple[str, ...]) -> tuple[str | int, ...]:
    return tuple(int(p) if p.isdigit() else p for p in path)


def _dotted(path: tuple[str, ...]) -> str:
    from edge_agent.config_source import dotted

    return dotted(_typed(path))
