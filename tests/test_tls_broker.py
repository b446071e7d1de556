"""The real agent against a real mosquitto with TLS, passwords and an ACL.

Broker (tests/tls_broker.py): TLS listener on a free loopback port, client certificates
required, user ``agent`` may read ``plant/#`` and read/write ``edge/<gw>/#``; the test itself
observes as user ``probe`` with mosquitto_sub/mosquitto_pub.

The agent is ``edge-agent run -c cfg.yaml`` as a subprocess; its log is a file the tests read.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

try:  # works whether or not tests/ is a package
    from tests.tls_broker import (
        AGENT_PASSWORD,
        AGENT_USER,
        AgentProcess,
        MosquittoBroker,
        have_mosquitto,
        write_config,
    )
except ImportError:
    from tls_broker import (
        AGENT_PASSWORD,
        AGENT_USER,
        AgentProcess,
        MosquittoBroker,
        have_mosquitto,
        write_config,
    )

pytestmark = pytest.mark.skipif(not have_mosquitto(), reason="mosquitto, mosquitto_passwd/sub/pub and openssl are required")

GW = "gw-tls"

# What an operator must be able to read in the log to fix each failure.
WRONG_PASSWORD = r"bad user ?name or password|not authori[sz]ed"
UNTRUSTED = r"certificate verify failed|certificate not trusted|CERTIFICATE_VERIFY_FAILED"
CONNECTED = r"connected to 127\.0\.0\.1|connected to localhost"


@pytest.fixture
def tls_broker(tmp_path):
    broker = MosquittoBroker.tls(tmp_path / "broker", GW)
    broker.start()
    yield broker
    broker.stop()


def agent_config(tmp_path: Path, broker: MosquittoBroker, *, host: str = "127.0.0.1", password: str = AGENT_PASSWORD,
                 ca_file: Path | None = None, **sections) -> Path:
    assert broker.pki is not None
    pw = tmp_path / "mqtt-password"
    pw.write_text(password + "\n")
    pw.chmod(0o600)
    cfg = {
        "gateway_id": GW,
        "state_dir": str(tmp_path / "state"),
        "log": {"level": "INFO"},
        "mqtt": {
            "host": host,
            "port": broker.port,
            "username": AGENT_USER,
            "password_file": str(pw),
            "connect_timeout_s": 5,
            "reconnect": {"initial_delay_s": 0.2, "max_delay_s": 1.0},
            "tls": {
                "enabled": True,
                "ca_file": str(ca_file or broker.pki.ca_cert),
                "cert_file": str(broker.pki.client_cert),
                "key_file": str(broker.pki.client_key),
                "verify_hostname": True,
            },
        },
        "http": {"enabled": False},
        "detector": {"name": "statistical", "min_train_samples": 20},
        **sections,
    }
    return write_config(tmp_path / "agent.yaml", cfg)


@pytest.fixture
def run_agent(tmp_path):
    started: list[AgentProcess] = []

    def start(cfg: Path) -> AgentProcess:
        agent = AgentProcess(cfg, tmp_path / f"agent-{len(started)}.log").start()
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.kill()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_good_tls_connection_publishes_retained_online_status(tls_broker, run_agent, tmp_path, host):
    agent = run_agent(agent_config(tmp_path, tls_broker, host=host))
    msg = tls_broker.sub_one(f"edge/{GW}/status", timeout_s=30)
    assert msg is not None, f"no status on edge/{GW}/status within 30 s\n--- agent ---\n{agent.tail()}\n--- broker ---\n{tls_broker.log_text()[-3000:]}"
    status = json.loads(msg)
    assert status["state"] == "online" and status["gateway_id"] == GW, msg
    assert agent.alive()
    # The broker saw the agent authenticate as 'agent' (not, say, anonymously via a fallback).
    assert f"u'{AGENT_USER}'" in tls_broker.log_text()
    assert agent.terminate(timeout=30) == 0, agent.tail()


def test_wrong_password_is_logged_clearly_and_retried(tls_broker, run_agent, tmp_path):
    agent = run_agent(agent_config(tmp_path, tls_broker, password="not-the-password"))
    agent.wait_log(WRONG_PASSWORD, timeout=30, count=3)  # three attempts: it keeps retrying
    time.sleep(1.0)
    assert agent.alive(), f"agent gave up on a wrong password:\n{agent.tail()}"
    assert f"u'{AGENT_USER}'" not in tls_broker.log_text(), "broker accepted a wrong password?"
    assert agent.terminate(timeout=30) == 0, agent.tail()


def test_untrusted_ca_is_logged_clearly_and_retried(tls_broker, run_agent, tmp_path):
    assert tls_broker.pki is not None
    agent = run_agent(agent_config(tmp_path, tls_broker, ca_file=tls_broker.pki.untrusted_ca_cert))
    agent.wait_log(UNTRUSTED, timeout=30, count=3)
    time.sleep(1.0)
    assert agent.alive(), f"agent gave up on an untrusted server certificate:\n{agent.tail()}"
    assert f"u'{AGENT_USER}'" not in tls_broker.log_text(), "agent connected despite an untrusted CA"
    assert agent.terminate(timeout=30) == 0, agent.tail()


def test_acl_denied_publish_is_reported_not_silently_lost(tls_broker, run_agent, tmp_path):
    """Alarms go to a topic outside the agent's ACL: the broker refuses them (PUBACK 0x87)."""
    cfg = agent_config(tmp_path, tls_broker, alarms={"topic": "alerts/{gateway_id}/{series}", "clear_after": 1})
    agent = run_agent(cfg)
    # The allowed topic works, so the refusal below is about the ACL, not the connection.
    assert tls_broker.sub_one(f"edge/{GW}/status", timeout_s=30) is not None, agent.tail()

    topic = "plant/line1/m1/s1"
    t0 = time.time()
    normal = [json.dumps({"value": 10.0 + (i % 5) * 0.1, "ts": t0 + i * 0.01}) for i in range(40)]
    tls_broker.pub_lines(topic, normal)
    agent.wait_log(r"model v\d+|fit", timeout=30)  # trained on the normal readings

    denied = r"(refused|denied|not authori[sz]ed|0x87|\b135\b).*alerts/|alerts/.*(refused|denied|not authori[sz]ed|0x87|\b135\b)"
    deadline = time.monotonic() + 30
    i = 0
    while agent.count(denied) == 0:
        assert time.monotonic() < deadline, f"an ACL-denied alarm publish left no trace in the log:\n{agent.tail()}"
        assert agent.alive(), agent.tail()
        i += 1
        tls_broker.pub_lines(topic, [json.dumps({"value": 1e6, "ts": t0 + 1 + i}),
                                     json.dumps({"value": 10.2, "ts": t0 + 1.5 + i})])
        time.sleep(0.5)
    assert agent.alive()
    assert agent.terminate(timeout=30) == 0, agent.tail()
