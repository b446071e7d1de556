"""Schemathesis against a live agent's own OpenAPI schema: no 5xx, no response that breaks it.

Two bounded runs of the ``st`` CLI: one with generated series ids (mostly unknown: the 404
paths), one pinned to a trained series so bodies and queries reach fit, predict, plots and
rollback for real. ``positive_data_acceptance`` is left out: whether detector params are
valid depends on the detector (a schema cannot say it), so a schema-valid fit can be a 400.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_http_live import TOKEN, HttpAgent, running

ST = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")
pytestmark = pytest.mark.skipif(ST is None, reason="schemathesis CLI (st) is not installed")

# This run checks conformance, not latency. The first plot spawns the plot worker process
# (Python, numpy, matplotlib) and the first isolation_forest fit compiles its kernels: with two
# CPU-bound processes beside it on this 2-core machine, each took over 10 s (a full-suite run
# failed once on the plot). The suite's latency bounds are in the tests that measure latency.
REQUEST_TIMEOUT_S = 60
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection,missing_required_header,unsupported_method,ignored_auth"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpAgent]:
    with running(tmp_path_factory, ["M1/temp"]) as (agent, _):
        yield agent

def run_st(agent: HttpAgent, tmp: Path, config: str = "") -> subprocess.CompletedProcess[str]:
    assert ST is not None
    cfg = tmp / "schemathesis.toml"
    cfg.write_text(config)
    cmd = [
        ST, "--config-file", str(cfg), "run", agent.base + "/openapi.json",
        "--checks", CHECKS, "--max-examples", "12", "--seed", "4242", "--workers", "1",
        "--phases", "examples,coverage,fuzzing", "--suppress-health-check", "filter_too_much",
        "-H", f"Authorization: Bearer {TOKEN}", "--request-timeout", str(REQUEST_TIMEOUT_S), "--no-color",
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp)


def assert_clean(agent: HttpAgent, res: subprocess.CompletedProcess[str]) -> None:
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
    log = agent.log()
    # The catch-all handler logs "HTTP <method> <path> failed" with a traceback for genuine bugs.
    assert "Traceback" not in log and not re.search(r"HTTP [A-Z]+ \S* failed", log), log[-4000:]


def test_generated_series_ids(live: HttpAgent, tmp_path: Path) -> None:
    assert_clean(live, run_st(live, tmp_path))


def test_against_a_trained_series(live: HttpAgent, tmp_path: Path) -> None:
    assert_clean(live, run_st(live, tmp_path, '[parameters]\n"path.series_id" = "M1/temp"\n'))
