"""Test helpers: a real mosquitto broker (plain or TLS + passwords + ACL) and the real agent process.

Everything runs on loopback, on free ports, in a caller-supplied temporary directory, and
every wait has a deadline. Nothing here mocks the broker or the agent.

- ``make_pki(dir)``: a CA, a server certificate (CN 127.0.0.1, SAN IP:127.0.0.1 and
  DNS:localhost), a client certificate, and a second, *untrusted* CA, made with ``openssl``.
- ``MosquittoBroker``: writes a mosquitto config, starts/stops mosquitto as a subprocess.
  ``MosquittoBroker.plain(dir)`` is an anonymous plain listener; ``MosquittoBroker.tls(dir,
  gateway_id)`` is a TLS listener with ``password_file`` (``mosquitto_passwd -b``) and an
  ``acl_file``: user ``agent`` may read ``plant/#`` and read/write ``edge/<gw>/#``; user
  ``probe`` (the test's own eyes) may read everything and write ``plant/#``.
- ``AgentProcess``: ``python -m edge_agent run -c cfg.yaml`` with its output in a log file.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import helpers
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
AGENT_USER = "agent"
AGENT_PASSWORD = "agent-secret-pw"
PROBE_USER = "probe"
PROBE_PASSWORD = "probe-secret-pw"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll ``pred()`` until it returns a truthy value; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------- PKI


@dataclass(frozen=True)
class Pki:
    dir: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    untrusted_ca_cert: Path


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{proc.stderr}")


_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _make_ca(d: Path, name: str, cn: str) -> tuple[Path, Path]:
    ext = d / f"{name}.ext"
    ext.write_text(
        "[v3_ca]\n"
        "basicConstraints=critical,CA:TRUE\n"
        "keyUsage=critical,keyCertSign,cRLSign\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid:always\n"
    )
    _openssl("req", "-x509", *_EC, "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "3",
             "-subj", f"/CN={cn}", "-config", str(ext), "-extensions", "v3_ca", cwd=d)
    return d / f"{name}.crt", d / f"{name}.key"


def _make_leaf(d: Path, name: str, cn: str, ca_cert: Path, ca_key: Path, extensions: str) -> tuple[Path, Path]:
    _openssl("req", "-new", *_EC, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
    ext = d / f"{name}.ext"
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n" + extensions
    )
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", str(ca_cert), "-CAkey", str(ca_key),
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "3", "-extfile", str(ext), cwd=d)
    return d / f"{name}.crt", d / f"{name}.key"


def make_pki(directory: Path) -> Pki:
    """Generate all certificates and keys under ``directory`` (created if missing)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _make_ca(d, "ca", "edge-agent test CA")
    server_cert, server_key = _make_leaf(
        d, "server", "127.0.0.1", ca_cert, ca_key,
        "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    client_cert, client_key = _make_leaf(d, "client", AGENT_USER, ca_cert, ca_key, "extendedKeyUsage=clientAuth\n")
    untrusted_cert, _ = _make_ca(d, "untrusted-ca", "edge-agent UNTRUSTED test CA")
    for key in (ca_key, server_key, client_key):
        key.chmod(0o600)
    return Pki(d, ca_cert, ca_key, server_cert, server_key, client_cert, client_key, untrusted_cert)


# --------------------------------------------------------------------------- broker


class MosquittoBroker:
    """A mosquitto subprocess with a config written to ``dir``; ``start()``/``stop()`` restartable."""

    def __init__(self, directory: Path, config_lines: list[str], port: int, pki: Pki | None = None):
        self.dir = Path(directory)
        self.host = "127.0.0.1"
        self.port = port
        self.pki = pki
        self.conf_path = self.dir / "mosquitto.conf"
        self.log_path = self.dir / "mosquitto.log"
        self.conf_path.write_text("\n".join(config_lines) + "\n")
        self.proc: subprocess.Popen | None = None

    # -- factories
    @classmethod
    def plain(cls, directory: Path) -> MosquittoBroker:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        port = free_port()
        lines = _common_lines(d) + [f"listener {port} 127.0.0.1", "allow_anonymous true"]
        return cls(d, lines, port)

    @classmethod
    def tls(cls, directory: Path, gateway_id: str, require_certificate: bool = True) -> MosquittoBroker:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        pki = make_pki(d / "pki")
        passwd = d / "passwd"
        for i, (user, pw) in enumerate(((AGENT_USER, AGENT_PASSWORD), (PROBE_USER, PROBE_PASSWORD))):
            args = ["mosquitto_passwd", *(["-c"] if i == 0 else []), "-b", str(passwd), user, pw]
            subprocess.run(args, check=True, capture_output=True, timeout=30)
        acl = d / "acl"
        acl.write_text(
            f"user {AGENT_USER}\n"
            "topic read plant/#\n"
            f"topic readwrite edge/{gateway_id}/#\n"
            "\n"
            f"user {PROBE_USER}\n"
            "topic read #\n"
            "topic write plant/#\n"
        )
        port = free_port()
        lines = _common_lines(d) + [
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {passwd}",
            f"acl_file {acl}",
            f"listener {port} 127.0.0.1",
            f"cafile {pki.ca_cert}",
            f"certfile {pki.server_cert}",
            f"keyfile {pki.server_key}",
            f"require_certificate {'true' if require_certificate else 'false'}",
            "tls_version tlsv1.2",
        ]
        return cls(d, lines, port, pki)

    # -- lifecycle
    def start(self, timeout: float = 15.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        with open(self.dir / "mosquitto.stderr", "ab") as err:
            self.proc = subprocess.Popen(
                ["mosquitto", "-c", str(self.conf_path)], stdout=err, stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def listening() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return True
            except OSError:
                return False

        wait_until(listening, timeout, what=f"mosquitto listening on {self.port}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)

    def log_text(self) -> str:
        parts = []
        for p in (self.log_path, self.dir / "mosquitto.stderr"):
            if p.exists():
                parts.append(p.read_text(errors="replace"))
        return "\n".join(parts)

    # -- client-side helpers (mosquitto_sub / mosquitto_pub as the probe user)
    def _client_args(self) -> list[str]:
        args = ["-h", self.host, "-p", str(self.port)]
        if self.pki is not None:
            args += ["--cafile", str(self.pki.ca_cert), "--cert", str(self.pki.client_cert),
                     "--key", str(self.pki.client_key), "-u", PROBE_USER, "-P", PROBE_PASSWORD]
        return args

    def sub_one(self, topic: str, timeout_s: int = 10) -> str | None:
        """The first message on ``topic`` (retained counts) within ``timeout_s``, or None."""
        proc = subprocess.run(
            ["mosquitto_sub", *self._client_args(), "-t", topic, "-C", "1", "-W", str(timeout_s), "-V", "mqttv5"],
            capture_output=True, text=True, timeout=timeout_s + 10,
        )
        if proc.returncode != 0:
            return None
        return proc.stdout.rstrip("\n")

    def pub(self, topic: str, payload: str, qos: int = 1) -> None:
        subprocess.run(
            ["mosquitto_pub", *self._client_args(), "-t", topic, "-m", payload, "-q", str(qos), "-V", "mqttv5"],
            check=True, capture_output=True, timeout=20,
        )

    def pub_lines(self, topic: str, lines: list[str], qos: int = 1) -> None:
        """Publish each line as one message, over one connection (``mosquitto_pub -l``)."""
        subprocess.run(
            ["mosquitto_pub", *self._client_args(), "-t", topic, "-l", "-q", str(qos), "-V", "mqttv5"],
            input="\n".join(lines) + "\n", text=True, check=True, capture_output=True, timeout=60,
        )


def _common_lines(d: Path) -> list[str]:
    lines = [
        "persistence false",
        f"log_dest file {d / 'mosquitto.log'}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
    ]
    if os.geteuid() == 0:
        lines.append("user root")  # otherwise mosquitto drops to 'mosquitto' and cannot read tmp files
    return lines


# --------------------------------------------------------------------------- agent


def agent_command() -> list[str]:
    """How the tests start the agent: the venv's console script if installed, else ``-m``."""
    script = Path(sys.executable).parent / "edge-agent"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "edge_agent"]


def write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class AgentProcess(helpers.AgentProcess):
    """``edge-agent run -c <cfg>`` for a config file this module wrote; output in ``log_path``.

    The process handling is the shared one (``tests/helpers.py``); this adds a clean
    environment (no inherited EDGE_AGENT__/NOTIFY_SOCKET), the console script, and
    regex waits that fail early when the agent exits.
    """

    def __init__(self, config_path: Path, log_path: Path, extra_env: dict[str, str] | None = None):
        self.cfg_path = Path(config_path)
        self.log_path = Path(log_path)
        self.tmp = self.cfg_path.parent
        self.config = {}
        env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_AGENT__", "NOTIFY_SOCKET", "WATCHDOG_"))}
        env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env["PYTHONUNBUFFERED"] = "1"
        env.update(extra_env or {})
        self.env = env
        self.proc: subprocess.Popen | None = None

    def start(self) -> AgentProcess:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [*agent_command(), "run", "-c", str(self.cfg_path)],
                stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.cfg_path.parent,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return self.log()

    def count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.log(), flags=re.IGNORECASE | re.MULTILINE))

    def wait_log(self, pattern: str, timeout: float, count: int = 1) -> str:  # type: ignore[override]
        """Wait until ``pattern`` (regex, case-insensitive) matched ``count`` times in the log."""

        def seen() -> bool:
            if self.count(pattern) >= count:
                return True
            if not self.alive():
                raise AssertionError(
                    f"agent exited ({self.proc.returncode}) before logging {pattern!r} x{count}:\n{self.tail()}"
                )
            return False

        try:
            wait_until(seen, timeout, interval=0.1, what=f"agent log {pattern!r} x{count}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- agent log tail ---\n{self.tail()}") from None
        return self.log()

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-n:])

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait up to ``timeout``; SIGKILL if still running. Returns the exit code."""
        try:
            return self.stop(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"agent did not exit within {timeout}s of SIGTERM:\n{self.tail()}") from None


def have_mosquitto() -> bool:
    return all(shutil.which(t) for t in ("mosquitto", "mosquitto_passwd", "mosquitto_sub", "openssl"))
