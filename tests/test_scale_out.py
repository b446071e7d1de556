"""Scale-out by ownership: two agents on disjoint partitions of the topic space, one broker.
Every series must be scored by exactly one agent."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from helpers import AgentProcess, Mosquitto, Publisher, Subscriber, agent_config, wait_for

from edge_agent.model_store import ModelStore

LINES = {"gw-a": "line1", "gw-b": "line2"}
MACHINES = 5


@pytest.mark.timeout(120)
def test_two_agents_on_disjoint_partitions_score_every_series_once(tmp_path: Path, mosquitto: Mosquitto) -> None:
    agents = {}
    for gw, line in LINES.items():
        d = tmp_path / gw
        d.mkdir()
        cfg = agent_config(d, mosquitto, gateway_id=gw, subscriptions=[{"topic": f"plant/{line}/{{machine}}/{{sensor}}", "series": f"{line}/{{machine}}/{{sensor}}"}])
        agents[gw] = AgentProcess(d, cfg, name=gw).start()
    alarms = Subscriber(mosquitto, "edge/+/alerts/#")
    pub = Publisher(mosquitto)
    try:
        for a in agents.values():
            a.wait_connected()
        rng = np.random.default_rng(7)
        t0 = time.time() - 1000
        topics = [f"plant/{line}/m{m}/temp" for line in LINES.values() for m in range(MACHINES)]
        infos = [pub.reading(t, float(rng.uniform(-1, 1)), t0 + k) for k in range(100) for t in topics]
        for i in infos:
            i.wait_for_publish(20)
        for gw, a in agents.items():
            wait_for(lambda a=a: len(list((a.state_dir / "models").glob("*/ACTIVE"))) == MACHINES, 20, f"{gw} models")
        for t in topics:
            pub.reading(t, 42.0, t0 + 200).wait_for_publish(10)
        wait_for(lambda: len(alarms.json()) >= len(topics), 20, "one alarm per series")
        time.sleep(0.5)
        got = alarms.json()
        assert len(got) == len(topics)  # exactly once: no series scored by both agents
        for gw, line in LINES.items():
            mine = sorted(a["series"] for a in got if a["gateway_id"] == gw)
            assert mine == sorted(f"{line}/m{m}/temp" for m in range(MACHINES))
            store = ModelStore(agents[gw].state_dir / "models")
            assert sorted(store.list_series()) == mine  # and each agent trained only what it owns
    finally:
        pub.close()
        alarms.close()
        for a in agents.values():
            assert a.stop() == 0
