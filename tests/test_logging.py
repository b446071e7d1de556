from __future__ import annotations

import json
import logging

import pytest

from edge_agent.logsetup import setup_logging


def test_json_log_lines(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO", "json")
    logging.getLogger("edge_agent.test").warning("rejected reading on %r", "plant/x")
    logging.getLogger("edge_agent.test").debug("not shown at INFO")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert len(lines) == 1
    assert lines[0]["level"] == "WARNING" and lines[0]["msg"] == "rejected reading on 'plant/x'"
    assert lines[0]["logger"] == "edge_agent.test" and lines[0]["ts"] > 0


def test_text_log_lines_and_gmqtt_noise_filter(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("DEBUG", "text")
    logging.getLogger("edge_agent.test").info("hello")
    logging.getLogger("edge_agent.gmqtt").error("[MqttPackageHandler] CONNACK 0x87 is permanent, not reconnecting")
    err = capsys.readouterr().err
    assert "INFO    edge_agent.test: hello" in err
    assert "not reconnecting" not in err
