"""Dockerfile sanity, since this environment cannot build the image (no Docker engine).

What can be checked without an engine: the structure the deployment relies on, that the
pip commands are the ones scripts/build_wheel_and_smoke.sh runs in CI (so CI exercises the
image's install steps), that COPY sources survive .dockerignore, and that the HEALTHCHECK's
Python one-liner really works against an HTTP server.
"""

from __future__ import annotations

import fnmatch
import http.server
import json
import re
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
SCRIPT = REPO / "scripts" / "build_wheel_and_smoke.sh"


def instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins, args in instructions():
        if ins == "FROM":
            result.append([])
        result[-1].append((ins, args))
    return result


def pip_calls(text: str) -> list[tuple[str, tuple[str, ...]]]:
    """``(subcommand, options)`` of every ``python -m pip`` call, options without their values."""
    calls = []
    for m in re.finditer(r'python"? -m pip (\w+)((?: +--?[\w-]+(?: +(?!--)[^\s&;]+)?)*)', text):
        opts = tuple(tok for tok in m.group(2).split() if tok.startswith("-"))
        calls.append((m.group(1), opts))
    return calls


def test_two_stages_on_python_311_slim():
    st = stages()
    assert len(st) == 2
    assert [s[0][1] for s in st] == ["python:3.11-slim AS builder", "python:3.11-slim AS runtime"]


def test_runtime_runs_as_non_root_with_state_volume_and_entrypoint():
    runtime = stages()[-1]
    users = [a for i, a in runtime if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    kinds = [i for i, _ in runtime]
    # USER comes after the last RUN, so nothing later runs as root by accident.
    assert max(k for k, i in enumerate(kinds) if i == "RUN") < kinds.index("USER")
    assert ("VOLUME", '["/var/lib/edge-agent"]') in runtime
    env = " ".join(a for i, a in runtime if i == "ENV")
    assert "EDGE_AGENT__STATE_DIR=/var/lib/edge-agent" in env
    assert "EDGE_AGENT__HTTP__HOST=0.0.0.0" in env
    assert "NUMBA_CACHE_DIR=/var/lib/edge-agent/" in env and "MPLCONFIGDIR=/var/lib/edge-agent/" in env
    assert json.loads(dict(runtime)["ENTRYPOINT"]) == ["edge-agent"]
    assert json.loads(dict(runtime)["CMD"]) == ["run", "-c", "/etc/edge-agent/agent.yaml"]


def test_runtime_stage_gets_only_the_wheel_not_the_source():
    runtime = stages()[-1]
    copies = [a for i, a in runtime if i == "COPY"]
    assert copies and all(a.startswith("--from=builder ") for a in copies), copies
    assert not any("edge_agent" in a.split()[-2] for a in copies)


def test_pip_commands_match_the_ci_build_script():
    builder, runtime = stages()
    docker_build = pip_calls(" ".join(a for i, a in builder if i == "RUN"))
    docker_install = pip_calls(" ".join(a for i, a in runtime if i == "RUN"))
    script = SCRIPT.read_text()
    script_build = pip_calls("\n".join(line for line in script.splitlines() if "# docker:builder" in line))
    script_install = pip_calls("\n".join(line for line in script.splitlines() if "# docker:runtime" in line))
    assert docker_build == script_build == [("wheel", ("--no-deps", "--wheel-dir"))], (docker_build, script_build)
    assert docker_install == script_install == [("install", ("--constraint",))], (docker_install, script_install)
    # And the script really runs those lines (they are not left behind in a comment).
    for line in script.splitlines():
        if "# docker:" in line:
            assert not line.lstrip().startswith("#")


def test_copy_sources_are_not_excluded_by_dockerignore():
    patterns = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")]

    def included(path: str) -> bool:
        keep = True
        for p in patterns:
            neg = p.startswith("!")
            pat = p[1:] if neg else p
            if fnmatch.fnmatch(path, pat.rstrip("/")) or path.startswith(pat.rstrip("/") + "/"):
                keep = neg
        return keep

    for ins, args in stages()[0]:
        if ins == "COPY" and not args.startswith("--from"):
            for src in shlex.split(args)[:-1]:
                if "[" in src:  # optional glob (README.m[d])
                    continue
                assert (REPO / src).exists(), f"COPY source {src} does not exist"
                assert included(src), f"COPY source {src} is excluded by .dockerignore"
    assert not included(".venv") and not included("tests/test_dockerfile.py") and not included("state")


def healthcheck_argv() -> list[str]:
    runtime = stages()[-1]
    hc = [a for i, a in runtime if i == "HEALTHCHECK"]
    assert len(hc) == 1
    m = re.search(r"\bCMD (\[.*\])\s*$", hc[0])
    assert m, hc[0]
    return json.loads(m.group(1))


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802
        code = self.server.status if self.path == "/healthz" else 404  # type: ignore[attr-defined]
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("status, healthy", [(200, True), (503, False)])
def test_healthcheck_command_works_with_stdlib_only(status, healthy):
    argv = healthcheck_argv()
    assert argv[0] == "python" and "127.0.0.1:8000/healthz" in argv[-1]
    server = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    server.status = status  # type: ignore[attr-defined]
    port = server.server_address[1]
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        code = argv[-1].replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        # -I: isolated mode, nothing from the repo or site-packages beyond the stdlib is needed.
        proc = subprocess.run([sys.executable, "-I", *argv[1:-1], code], capture_output=True, timeout=30)
        assert (proc.returncode == 0) == healthy, proc.stderr
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_fails_when_nothing_listens():
    argv = healthcheck_argv()
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        code = argv[-1].replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        proc = subprocess.run([sys.executable, "-I", *argv[1:-1], code], capture_output=True, timeout=30)
    assert proc.returncode != 0
