"""Layers point one way (issue 16 point 7): the command handler and the HTTP layer call
operations.py and never import the running agent; the agent imports neither back; app.py
composes them."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_commands_and_http_do_not_import_the_agent_at_run_time() -> None:
    code = ("import sys, edge_agent.commands, edge_agent.http.server, edge_agent.operations; "
            "print('edge_agent.agent' in sys.modules, 'edge_agent.app' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


# The agent and the modules split out of it (its status and health, its models, the operator
# state it restores at start).
AGENT_MODULES = ("agent.py", "agent_status.py", "agent_models.py", "operator_restore.py")


def test_the_agent_imports_neither_commands_nor_http() -> None:
    for name in AGENT_MODULES:
        tree = ast.parse((REPO / "edge_agent" / name).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not {m for m in imported if m.startswith(("edge_agent.commands", "edge_agent.http", "edge_agent.app"))}, (name, imported)
