"""The agent as a Sparkplug B edge node, seen by pysparkplug as the host application, through a
real mosquitto, with the agent a real process: births, data, death, seq and bdSeq across
reconnects, broker and agent restarts, rebirth requests, and the primary host's STATE."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pysparkplug as psp
import pytest
from helpers import (
    AgentProcess,
    Mosquitto,
    Publisher,
    Subscriber,
    agent_config,
    free_port,
    wait_for,
)
from sparkplug_peers import Host, ms

from edge_agent.sparkplug.schema import DataType, Payload

MT = psp.MessageType
GROUP, NODE = "edge", "gw-test"
TRAIN = 30


def node_agent(tmp_path: Path, broker: Mosquitto, **extra: Any) -> AgentProcess:
    cfg = agent_config(tmp_path, broker, **{
        "detector.min_train_samples": TRAIN, "alarms.clear_after": 3,
        "sparkplug.enabled": True, "sparkplug.group_id": GROUP, "sparkplug.score_interval_s": 0.3, **extra,
    })
    return AgentProcess(tmp_path, cfg).start()


def train(pub: Publisher, agent: AgentProcess, t0: float, series: tuple[str, ...] = ("temp", "vib")) -> None:
    infos = [pub.reading(f"plant/l1/m1/{s}", 1.0 + 0.01 * (k % 5), t0 + k) for k in range(TRAIN + 5) for s in series]
    for info in infos:
        info.wait_for_publish(10)
    wait_for(lambda: agent.models_active() >= len(series), 20, "models")


def metric(msg: psp.Message, name: str) -> Any:
    if isinstance(msg.payload, psp.NDeath):
        bd = msg.payload.bd_seq_metric
        return bd.value if name == "bdSeq" == bd.name else KeyError(name)
    return next((m.value for m in msg.payload.metrics if m.name == name), KeyError(name))


def session_seqs(host: Host) -> list[list[tuple[str, int]]]:
    """(type, seq) of every message but NDEATH, split into sessions at each NBIRTH."""
    out: list[list[tuple[str, int]]] = []
    for m in host.all():
        t = m.topic.message_type
        if t in (MT.NDEATH, MT.NCMD, MT.DCMD):
            continue  # NDEATH has no seq; commands are the host's
        if t == MT.NBIRTH:
            out.append([])
        if out:
            out[-1].append((str(t), m.payload.seq))
    return out


def assert_births_first(sessions: list[list[tuple[str, int]]]) -> None:
    """NBIRTH, then the DBIRTHs, before any data (tck-id-payloads-dbirth-order, -ndata-order)."""
    for msgs in sessions:
        types = [t for t, _ in msgs]
        first_data = next((i for i, t in enumerate(types) if t in ("NDATA", "DDATA")), len(types))
        assert types[0] == "NBIRTH" and set(types[1:first_data]) <= {"DBIRTH"} and "DBIRTH" in types[1:first_data], types[:10]


def assert_seq_consecutive(sessions: list[list[tuple[str, int]]]) -> None:
    for msgs in sessions:
        assert msgs[0] == ("NBIRTH", 0)
        for (_, a), (t, b) in zip(msgs, msgs[1:], strict=False):
            assert b == (a + 1) % 256, f"seq {a} then {b} ({t}) in {msgs}"


@pytest.mark.timeout(120)
def test_host_decodes_births_data_and_death_and_sees_an_alarm_within_1s(tmp_path: Path, mosquitto: Mosquitto) -> None:
    host = Host(mosquitto, GROUP)
    # The will's QoS shows in what a QoS 1 subscriber receives (the lower of the two).
    will_qos: list[int] = []
    death_sub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="death-watch")
    death_sub.on_message = lambda c, u, m: will_qos.append(m.qos)
    death_sub.connect(mosquitto.host, mosquitto.port)
    death_sub.subscribe(f"spBv1.0/{GROUP}/NDEATH/{NODE}", qos=1)
    death_sub.loop_start()
    agent = node_agent(tmp_path, mosquitto)
    pub = Publisher(mosquitto)
    try:
        agent.wait_connected()
        wait_for(lambda: host.of(MT.NBIRTH), 10, "NBIRTH")
        nb = host.of(MT.NBIRTH)[0]
        assert nb.payload.seq == 0 and metric(nb, "bdSeq") == 0 and metric(nb, "Node Control/Rebirth") is False
        assert metric(nb, "Agent/Version") and metric(nb, "Agent/Healthy") in (True, False)
        t0 = time.time() - 100
        train(pub, agent, t0)
        wait_for(lambda: host.of(MT.DBIRTH, "m1"), 10, "DBIRTH of device m1")
        db = host.of(MT.DBIRTH, "m1")[-1]
        names = {m.name for m in db.payload.metrics}
        assert {"temp/Anomaly Score", "temp/Alarm", "temp/Threshold", "temp/Model Version", "temp/State", "vib/Alarm"} <= names
        # AlarmEvent has kind and priority, so the DBIRTH declares them (devices.OPTIONAL_EVENT_FIELDS).
        assert {"temp/Alarm Kind", "temp/Alarm Priority"} <= names
        assert all(m.alias is not None and m.timestamp for m in db.payload.metrics)
        # A spike: the host sees the alarm state change, decoded by alias through the DBIRTH.
        sent = time.time()
        pub.reading("plant/l1/m1/temp", 50.0, t0 + TRAIN + 10).wait_for_publish(5)

        def alarm_seen() -> float | None:
            for at, m in host.timed():
                if m.topic.message_type == MT.DDATA and metric(m, "temp/Alarm") is True:
                    return at
            return None

        seen = wait_for(alarm_seen, 5, "DDATA temp/Alarm = true")
        assert seen - sent < 1.0, f"alarm reached the host {seen - sent:.3f} s after the reading"
        dd = next(m for m in host.of(MT.DDATA) if metric(m, "temp/Alarm") is True)
        assert metric(dd, "temp/Alarm Id") and metric(dd, "temp/State") == "alarm" and metric(dd, "temp/Anomaly Score") > 3
        assert metric(dd, "temp/Alarm Priority") == 2  # medium: no rule sets it
        assert all(m.name and m.alias is not None for m in dd.payload.metrics)  # resolved by the host from aliases
        time.sleep(1.0)  # scores flow as DDATA, at most every 0.3 s
        assert not host.errors
        assert_seq_consecutive(session_seqs(host))
        # Every message is QoS 0 and not retained (tck-id-topics-*-mqtt).
        assert {(q, r) for t, _, q, r in host.raw if "/STATE/" not in t} == {(0, False)}
        # On the wire: a timestamp on every payload and metric; births name, alias and type every
        # metric; data carry aliases only, no name, no datatype (tck-id-payloads-alias-*, -datatype-*).
        aliases = [m.alias for topic, raw, _, _ in host.raw if "BIRTH" in topic for m in Payload.FromString(raw).metrics if m.HasField("alias")]
        assert len(aliases) == len(set(aliases))  # unique across the edge node (tck-id-payloads-alias-uniqueness)
        rebirth = next(m for m in Payload.FromString(host.raw[0][1]).metrics if m.name == "Node Control/Rebirth")
        assert rebirth.datatype == DataType.Boolean and rebirth.boolean_value is False
        for topic, raw, _, _ in host.raw:
            p = Payload.FromString(raw)
            assert p.timestamp and p.HasField("seq") and all(m.timestamp for m in p.metrics), topic
            if "BIRTH" in topic:
                assert all(m.name and m.datatype for m in p.metrics), topic
                aliased = [m for m in p.metrics if m.name not in ("bdSeq", "Node Control/Rebirth")]
                assert all(m.HasField("alias") for m in aliased) and not any(m.HasField("alias") for m in p.metrics if m.name == "Node Control/Rebirth")
            else:
                assert all(m.HasField("alias") and not m.name and not m.datatype for m in p.metrics), topic
        agent.kill()  # the broker publishes the will
        wait_for(lambda: host.of(MT.NDEATH), 10, "NDEATH")
        assert metric(host.of(MT.NDEATH)[0], "bdSeq") == 0
        death = Payload.FromString(next(raw for topic, raw, _, _ in host.raw if "/NDEATH/" in topic))
        assert not death.HasField("seq") and [m.name for m in death.metrics] == ["bdSeq"]  # tck-id-topics-ndeath-payload, -seq
        assert death.metrics[0].datatype == DataType.Int64
        assert [r for topic, _, _, r in host.raw if "/NDEATH/" in topic] == [False]  # the will is not retained
        wait_for(lambda: will_qos, 5, "the will at the QoS 1 subscriber")
        assert will_qos == [1]
        assert not host.errors
    finally:
        death_sub.loop_stop()
        pub.close()
        host.close()
        agent.kill()


@pytest.mark.timeout(150)
def test_seq_and_bdseq_across_broker_restart_and_agent_restart(tmp_path: Path, mosquitto: Mosquitto) -> None:
    agent = node_agent(tmp_path, mosquitto)
    host = Host(mosquitto, GROUP)
    pub = Publisher(mosquitto)
    try:
        agent.wait_connected()
        t0 = time.time() - 100
        train(pub, agent, t0)
        pub.reading("plant/l1/m1/temp", 50.0, t0 + TRAIN + 10).wait_for_publish(5)
        wait_for(lambda: any(metric(m, "temp/Alarm") is True for m in host.of(MT.DDATA)), 10, "alarm DDATA")
        pub.close()
        host.close()
        # Broker killed and restarted on the same port: a new session, bdSeq + 1, births first.
        mosquitto.wait_saved(time.time())
        mosquitto.kill()
        mosquitto.start()
        host = Host(mosquitto, GROUP)
        wait_for(lambda: host.of(MT.NBIRTH) and host.of(MT.DBIRTH, "m1"), 20, "births after the broker restart")
        nb = host.of(MT.NBIRTH)[0]
        assert nb.payload.seq == 0 and metric(nb, "bdSeq") == 1
        db = host.of(MT.DBIRTH, "m1")[0]
        assert metric(db, "temp/Alarm") is True and metric(db, "temp/State") == "alarm"  # the current state, at once
        assert [str(m.topic.message_type) for m in host.all()[:2]] == ["NBIRTH", "DBIRTH"]
        # The agent restarts: its bdSeq goes on from the state directory; a clean stop sends NDEATH.
        assert agent.stop() == 0
        wait_for(lambda: host.of(MT.NDEATH), 10, "NDEATH on a clean stop")
        assert metric(host.of(MT.NDEATH)[-1], "bdSeq") == 1
        agent.start()
        wait_for(lambda: len(host.of(MT.NBIRTH)) == 2 and len(host.of(MT.DBIRTH, "m1")) >= 2, 20, "births after the agent restart")
        nb2 = host.of(MT.NBIRTH)[1]
        assert metric(nb2, "bdSeq") == 2 and nb2.payload.seq == 0
        assert metric(host.of(MT.DBIRTH, "m1")[-1], "temp/Alarm") is True  # restored from the outbox
        time.sleep(1.0)
        assert not host.errors
        assert_seq_consecutive(session_seqs(host))
    finally:
        pub.close()
        host.close()
        agent.kill()


@pytest.mark.timeout(90)
def test_rebirth_request_is_honoured(tmp_path: Path, mosquitto: Mosquitto) -> None:
    host = Host(mosquitto, GROUP)
    port = free_port()
    agent = node_agent(tmp_path, mosquitto, **{"sparkplug.rebirth_min_interval_s": 1.0, "http.enabled": True, "http.port": port})
    pub = Publisher(mosquitto)
    try:
        agent.wait_connected()
        train(pub, agent, time.time() - 100)
        wait_for(lambda: host.of(MT.DBIRTH, "m1"), 10, "DBIRTH")
        time.sleep(0.7)
        for _ in range(5):  # a burst of requests: answered, but not by five birth sequences
            host.rebirth(GROUP, NODE)
        wait_for(lambda: len(host.of(MT.NBIRTH)) >= 2, 10, "a second NBIRTH")
        time.sleep(2.5)
        births = host.of(MT.NBIRTH)
        assert 2 <= len(births) <= 3
        assert {metric(b, "bdSeq") for b in births} == {0}  # same session, same bdSeq
        assert all(b.payload.seq == 0 for b in births)
        assert len(host.of(MT.DBIRTH, "m1")) >= len(births)
        assert_seq_consecutive(session_seqs(host))
        assert_births_first(session_seqs(host)[1:])  # the first session had no series yet at its NBIRTH
        assert not host.errors
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthcheck", timeout=5) as r:
            doc = json.loads(r.read())
        node = doc["sparkplug"]["edge_node"]
        assert node["connected"] and node["born"] and node["bdseq"] == 0 and node["births"] == len(births)
        assert node["rebirth_requests"] == 5 and doc["series"]["stale"] == 0
    finally:
        pub.close()
        host.close()
        agent.kill()


@pytest.mark.timeout(120)
def test_waits_for_primary_host_and_replays_alarms_as_historical(tmp_path: Path, mosquitto: Mosquitto) -> None:
    host = Host(mosquitto, GROUP)
    agent = node_agent(tmp_path, mosquitto, **{"sparkplug.primary_host_id": "scada1"})
    pub = Publisher(mosquitto)
    scada = Subscriber(mosquitto, "edge/gw-test/alerts/#")
    try:
        agent.wait_connected()
        t0 = time.time() - 100
        train(pub, agent, t0)
        pub.reading("plant/l1/m1/temp", 50.0, t0 + TRAIN + 10).wait_for_publish(5)
        wait_for(lambda: scada.json(), 5, "the JSON alarm")  # committed to both outboxes by then
        time.sleep(1.0)
        assert host.all() == []  # no birth, no data while the primary host is not online
        ts = ms()
        host.state("scada1", True, ts)
        wait_for(lambda: host.of(MT.DBIRTH, "m1"), 10, "births once the host is online")
        assert metric(host.of(MT.DBIRTH, "m1")[0], "temp/Alarm") is True
        wait_for(lambda: host.of(MT.DDATA), 5, "the held alarm change")
        held = [m for m in host.of(MT.DDATA) if any(x.name == "temp/Alarm" for x in m.payload.metrics)]
        assert held and all(x.is_historical for x in held[0].payload.metrics)  # history, not live
        # An older offline STATE (a previous host session's will) is ignored ...
        host.state("scada1", False, ts - 1000)
        time.sleep(1.0)
        assert not host.of(MT.NDEATH)
        # ... a current one makes the node publish NDEATH and start over.
        host.state("scada1", False, ts + 1)
        wait_for(lambda: host.of(MT.NDEATH), 10, "NDEATH when the primary host goes offline")
        assert metric(host.of(MT.NDEATH)[0], "bdSeq") == 0
        time.sleep(1.5)
        assert len(host.of(MT.NBIRTH)) == 1  # reconnected, waiting again
        host.state("scada1", True, ts + 2)
        wait_for(lambda: len(host.of(MT.NBIRTH)) == 2, 10, "births after the host is back")
        assert metric(host.of(MT.NBIRTH)[1], "bdSeq") == 1
        assert not host.errors
    finally:
        scada.close()
        pub.close()
        host.close()
        agent.kill()


@pytest.mark.timeout(120)
def test_an_alarm_change_of_a_series_evicted_before_the_birth_does_not_stop_the_ones_after_it(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """Alarm changes wait in the Sparkplug outbox while the primary host is offline; meanwhile
    one series (its alarm raised and cleared) is evicted for the series budget. At the birth
    it is in no DBIRTH, so its changes have no metric to go to: they are dropped (the JSON
    alarms carried them), and the alarm committed after them is still published. Before, its
    row raised KeyError in the pump, which lost the rest of the batch: the host never saw the
    other series' alarm."""
    port = free_port()
    host = Host(mosquitto, GROUP)
    agent = node_agent(tmp_path, mosquitto, **{"sparkplug.primary_host_id": "scada1", "series.max_series": 2,
                                                "series.idle_s": 1.0, "http": {"enabled": True, "port": port}})
    pub = Publisher(mosquitto)
    scada = Subscriber(mosquitto, "edge/gw-test/alerts/#")

    def http_metric(name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            line = next((x for x in r.read().decode().splitlines() if x.startswith(name + " ")), None)
        return float(line.split()[1]) if line else 0.0

    def states() -> list[tuple[str, str]]:
        return [(a["series"], a["state"]) for a in scada.json()]

    try:
        agent.wait_connected()
        t0 = time.time() - 100
        train(pub, agent, t0)
        t = t0 + TRAIN + 10
        pub.reading("plant/l1/m1/temp", 50.0, t).wait_for_publish(5)
        for k in range(1, 4):
            pub.reading("plant/l1/m1/temp", 1.0, t + k).wait_for_publish(5)
        wait_for(lambda: ("m1/temp", "cleared") in states(), 10, "temp raised and cleared (JSON)")
        pub.reading("plant/l1/m1/vib", 50.0, t + 5).wait_for_publish(5)
        wait_for(lambda: ("m1/vib", "raised") in states(), 10, "vib raised (JSON)")
        # temp goes quiet and a new series needs its slot (vib, in alarm, is never evicted).
        evicted = 'edge_agent_series_evicted_total{class="idle_model"}'
        for attempt in range(20):  # bounded: the sweep that sees it idle runs once a second
            time.sleep(1.5)
            pub.reading(f"plant/l1/m2/new{attempt}", 1.0, t + 10 + attempt).wait_for_publish(5)
            try:
                wait_for(lambda: http_metric(evicted) >= 1, 3, "temp evicted")
                break
            except TimeoutError:
                continue
        assert http_metric(evicted) >= 1, agent.log()[-3000:]
        assert host.all() == []  # nothing published while the primary host is offline
        host.state("scada1", True, ms())
        wait_for(lambda: host.of(MT.DBIRTH, "m1"), 10, "births once the host is online")
        names = {m.name for m in host.of(MT.DBIRTH, "m1")[0].payload.metrics}
        assert "vib/Alarm" in names and "temp/Alarm" not in names  # temp is gone

        def vib_alarm() -> psp.Message | None:
            return next((m for m in host.of(MT.DDATA, "m1") if any(x.name == "vib/Alarm" and x.value is True for x in m.payload.metrics)), None)

        dd = wait_for(vib_alarm, 10, "vib's alarm, committed after temp's changes, as DDATA")
        assert all(x.is_historical for x in dd.payload.metrics)
        assert "Traceback" not in agent.log() and not host.errors
    finally:
        scada.close()
        pub.close()
        host.close()
        agent.kill()
