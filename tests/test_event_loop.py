"""Choosing the event loop: the standard loop by default, uvloop on request, and a clear error
naming the key when uvloop is asked for but missing. The agent itself runs end to end on both
loops in test_e2e.py."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
import uvloop
import yaml

from edge_agent import event_loop
from edge_agent.config import AgentConfig


def test_the_standard_loop_is_the_default() -> None:
    assert AgentConfig().event_loop == "asyncio"
    assert event_loop.loop_factory("asyncio") is None
    assert event_loop.loop_factory("uvloop") is uvloop.new_event_loop


def test_run_uses_the_chosen_loop() -> None:
    async def which() -> str:
        return event_loop.name(asyncio.get_running_loop())

    assert event_loop.run(which()) == "asyncio"
    assert event_loop.run(which(), "uvloop") == "uvloop"


def test_missing_uvloop_fails_naming_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes `import uvloop` raise ImportError
    assert event_loop.loop_factory("asyncio") is None
    with pytest.raises(event_loop.EventLoopUnavailable, match="event_loop: uvloop"):
        event_loop.loop_factory("uvloop")


def test_bad_value_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(yaml.safe_dump({"event_loop": "tokio"}))
    r = subprocess.run([sys.executable, "-m", "edge_agent", "check-config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "event_loop" in r.stdout + r.stderr and str(cfg) in r.stdout + r.stderr
