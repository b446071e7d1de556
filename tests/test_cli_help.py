"""Every option of every subcommand has help text, and every subcommand has a summary."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from edge_agent.cli import build_parser

REPO = Path(__file__).resolve().parents[1]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, tuple[argparse.ArgumentParser, str | None]]:
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                out[name] = (sub, helps.get(name))
    return out


def test_every_option_of_every_subcommand_has_help() -> None:
    parser = build_parser()
    subs = _subparsers(parser)
    # The plugin subcommands are there in a full install (the test suite has every extra).
    assert {"run", "check-config", "models", "simulate", "demo", "evaluate", "sign-command", "keygen"} <= set(subs)
    missing = []
    for name, (sub, summary) in subs.items():
        if not summary:
            missing.append(f"{name}: no summary")
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, f"options without help text: {missing}"


def test_simulate_help_describes_each_option() -> None:
    res = subprocess.run([sys.executable, "-m", "edge_agent", "simulate", "--help"], capture_output=True, text=True,
                         cwd=REPO, timeout=60)
    assert res.returncode == 0
    assert "production line" in res.stdout and "random seed" in res.stdout and "MQTT QoS" in res.stdout
