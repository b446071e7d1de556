"""Health and /readyz tell the truth about alarm delivery (issue 15): an outbox that is not
draining while the link looks connected, and a broker link that keeps failing, make /readyz
fail with the reason and show in /healthcheck and /metrics. (A quarantined row is a health
warning, not an outage: tests/test_hostile_sizes.py.)

Real mosquitto, real agent process; the stalled link is a TCP relay between them that stops
forwarding the agent's bytes (a half-dead network path), not a fake broker.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
from campaign import CANARY_TOPIC
from helpers import free_port, wait_for


class Relay:
    """agent <-> relay <-> broker; ``freeze_upstream()`` stops forwarding agent -> broker
    (the connection stays open, the broker hears nothing more)."""

    def __init__(self, broker_port: int) -> None:
        self.port = free_port()
        self.broker_port = broker_port
        self.frozen = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.broker_port))
            self.socks += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                for s in (src, dst):
                    try:
                        s.close()
                    except OSError:
                        pass
                return
            while upstream and self.frozen.is_set():
                time.sleep(0.05)
            try:
                dst.sendall(data)
            except OSError:
                return

    def freeze_upstream(self) -> None:
        self.frozen.set()

    def close(self) -> None:
        self.listener.close()
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass


@pytest.mark.timeout(120)
def test_readyz_fails_while_alarms_wait_in_the_outbox_on_a_stalled_link(make_campaign) -> None:
    """Before: the outbox could hold alarms for ever (a wedged head, a stalled broker) while
    /readyz said 200 and health 'ok'."""
    c = make_campaign(start_agent=False, http=True, **{"outbox.stuck_after_s": 2.0, "mqtt.keepalive_s": 60})
    relay = Relay(c.broker.port)
    try:
        c.agent.config["mqtt"]["port"] = relay.port
        c.agent.cfg_path.write_text(__import__("yaml").safe_dump(c.agent.config))
        c.start()
        assert c.get("/readyz")[0] == 200
        relay.freeze_upstream()
        c.publish(CANARY_TOPIC, 25.0)  # reaches the agent; its alarm cannot reach the broker
        wait_for(lambda: c.get("/healthcheck")[1]["outbox"]["depth"] > 0, 10, "the alarm in the outbox")
        status, body = wait_for(lambda: (r := c.get("/readyz")) and r[0] == 503 and r, 10, "/readyz to fail")
        assert any("outbox not draining" in r for r in body["reasons"]), body
        _, health = c.get("/healthcheck")
        assert health["status"] == "degraded" and any("outbox not draining" in p for p in health["problems"])
        _, metrics = c.get("/metrics")
        assert b"edge_agent_outbox_stuck 1.0" in metrics and b"edge_agent_ready 0.0" in metrics
    finally:
        relay.close()
    # The link is cut for good now: the agent reconnects to the broker directly? No: through
    # the relay, which is gone. Point it back at the broker and check it recovers.
    c.agent.stop()
    c.agent.config["mqtt"]["port"] = c.broker.port
    c.agent.cfg_path.write_text(__import__("yaml").safe_dump(c.agent.config))
    c.agent.start()
    c.agent.wait_connected()
    wait_for(lambda: c.get("/readyz")[0] == 200, 20, "ready again")
    c.assert_invariants()


@pytest.mark.timeout(120)
def test_readyz_fails_while_the_broker_link_keeps_failing(make_campaign) -> None:
    """A link that connects and drops again and again (here: a 3.1.1 broker dropping it for a
    packet over a limit it cannot advertise, with outbox.max_attempts set high so the
    message is not quarantined) is not 'ready', even in the moments it is connected.
    Before: /readyz said 200 whenever the link happened to be up."""
    c = make_campaign(broker_extra="max_packet_size 600\n", http=True, signed_commands=True,
                      **{"mqtt.protocol": "3.1.1", "outbox.max_attempts": 1000})
    for i in range(10):  # ten more series: the status answer lists them, well over 600 bytes
        c.publish(f"plant/more/m{i}/temp", 1.0)
    time.sleep(0.5)
    c.plc.publish(f"edge/{c.gateway_id}/cmd/status", c.sign("status", {}, request_id="big")).wait_for_publish(10)
    seen: set[str] = set()

    def flapping_named() -> bool:
        status, body = c.get("/readyz")
        reasons = body.get("reasons") or []
        seen.update(r.split(":")[0] for r in reasons)
        return status == 503 and any("broker connection unstable" in r for r in reasons)

    wait_for(flapping_named, 30, "/readyz to name the unstable link")
    _, metrics = c.get("/metrics")
    assert b"edge_agent_ready 0.0" in metrics
    _, health = c.get("/healthcheck")
    assert health["status"] == "degraded" and health["broker"]["reconnects"] >= 3
