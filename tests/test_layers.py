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


# Modules split off a larger one, one concept each (files stay under ~400 lines): the larger
# one imports them; they import it back only for type checking, so there
# is no import cycle and either can be imported first.
SPLIT_OFF = {
    "machine_detectors/baseline_t2_fit.py": "edge_agent.machine_detectors.baseline_t2",
    "machine_detectors/baseline_t2_state.py": "edge_agent.machine_detectors.baseline_t2",
    "sparkplug/node_metrics.py": "edge_agent.sparkplug.node",
    "sparkplug/series_devices.py": "edge_agent.sparkplug.node",
    "sparkplug/machine_devices.py": "edge_agent.sparkplug.node",
}


def _run_time_imports(tree: ast.Module) -> set[str]:
    """Modules a file imports when it runs: not those under ``if TYPE_CHECKING:``."""
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING"
                   for stmt in block.body for n in ast.walk(stmt)}
    out: set[str] = set()
    for n in ast.walk(tree):
        if id(n) in typing_only:
            continue
        if isinstance(n, ast.ImportFrom) and n.module:
            out |= {n.module} | {f"{n.module}.{a.name}" for a in n.names}
        elif isinstance(n, ast.Import):
            out |= {a.name for a in n.names}
    return out


def test_split_off_modules_import_their_parent_only_for_type_checking() -> None:
    for name, parent in SPLIT_OFF.items():
        imported = _run_time_imports(ast.parse((REPO / "edge_agent" / name).read_text()))
        assert parent not in imported, (name, parent)
