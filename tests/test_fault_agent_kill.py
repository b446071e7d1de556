"""The agent dies (SIGKILL) with alarms committed to its outbox but not yet acknowledged by
the broker, and with model fits under way. After a restart: every model version on disk
loads, every committed alarm is delivered, readings the broker queued while the agent was
down (QoS 1, persistent session, same client id) are scored, and new anomalies raise alarms.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from faults import (
    Collector,
    PacedPublisher,
    chunks,
    models_trained,
    outbox_rows,
    reading,
    sigcont,
    sigstop,
    store_snapshot,
)
from helpers import AgentProcess, Mosquitto, agent_config, wait_for

from edge_agent.model_store import ModelStore

OLD = 30  # series trained before the kill
NEW = 10  # series whose training data arrives right before the kill
TRAIN = 100
CLEAR_AFTER = 10


def topic(i: int) -> str:
    return f"plant/l/m{i:02d}/t"


def sid(i: int) -> str:
    return f"m{i:02d}/t"


def noise(rng: np.random.Generator) -> float:
    return float(rng.uniform(-1, 1))


def scored_rows(rng: np.random.Generator, t0: float, positions: range, spikes: tuple[int, ...]) -> list[tuple[str, bytes]]:
    return [(topic(i), reading(10.0 if k in spikes else noise(rng), t0 + k)) for k in positions for i in range(OLD)]


def expected(t0: float, spikes: tuple[int, ...]) -> set[tuple[str, str, float]]:
    return {(sid(i), st, t0 + k + (CLEAR_AFTER if st == "cleared" else 0)) for i in range(OLD) for k in spikes for st in ("raised", "cleared")}


@pytest.mark.timeout(150)
def test_agent_sigkill_loses_no_committed_alarm_and_resumes(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker").start()
    # hold_ratio 1: every clear exactly CLEAR_AFTER readings after its raise (this test is about
    # durability; a noise reading above 0.7 x threshold would otherwise hold an alarm a little longer)
    cfg = agent_config(tmp_path, broker, **{"alarms.clear_after": CLEAR_AFTER, "alarms.hold_ratio": 1.0})
    agent = AgentProcess(tmp_path, cfg, name="first").start()
    scada = Collector(broker, "edge/gw-test/alerts/#", client_id="scada-persistent")
    pub = PacedPublisher(broker)
    second = None
    try:
        agent.wait_connected()
        rng = np.random.default_rng(11)
        t0 = time.time() - 7200
        for c in chunks([(topic(i), reading(noise(rng), t0 + k)) for k in range(TRAIN) for i in range(OLD)], 500):
            pub.publish_chunk(c)
        wait_for(lambda: models_trained(agent.state_dir) == OLD, 30, "models for the first series")

        # Phase A, delivered into a paused agent: training data for NEW series, then scored
        # readings with spikes at 0 and 50. Then the broker is paused, the agent resumes and
        # scores what reached its socket: its alarms are committed but never acknowledged.
        ta = t0 + TRAIN
        phase_a = [(topic(OLD + j), reading(noise(rng), ta - TRAIN + k)) for k in range(TRAIN) for j in range(NEW)]
        phase_a += scored_rows(rng, ta, range(0, 100), (0, 50))
        sigstop(agent.proc)
        for c in chunks(phase_a, 500):
            pub.publish_chunk(c)
        sigstop(broker.proc)
        sigcont(agent.proc)
        outbox = agent.state_dir / "outbox.sqlite"
        alarm_rows = lambda: [json.loads(p) for _, t, p in outbox_rows(outbox) if "/alerts/" in t]  # noqa: E731
        wait_for(lambda: alarm_rows(), 20, "alarms committed to the outbox")
        agent.kill()  # mid-stream: fits and commits may be under way
        committed = alarm_rows()
        delivered_before = scada.json()
        snapshot = store_snapshot(agent.state_dir / "models")
        store = ModelStore(agent.state_dir / "models")
        versions = [(s, v) for s in store.list_series() for v in store.versions(s)]
        for s, v in versions:
            store.load(s, v)  # every complete version on disk loads; half-written ones are .tmp
        print(f"\nagent SIGKILLed with {len(committed)} alarm(s) committed and unacknowledged, "
              f"{len(versions)} model version(s) on disk ({models_trained(agent.state_dir)} active)")
        sigcont(broker.proc)

        # Phase B, published while the agent is down: queued in its persistent session.
        tb = ta + 100
        for c in chunks(scored_rows(rng, tb, range(0, 100), (20, 60)), 500):
            pub.publish_chunk(c)

        second = AgentProcess(tmp_path, cfg, name="second").start()
        second.wait_connected()
        n_active = len(list((agent.state_dir / "models").glob("*/ACTIVE")))
        m = re.search(r"loaded (\d+) model\(s\)", second.log())
        assert m and int(m.group(1)) >= n_active - NEW, second.log()[-2000:]
        # A kill between a fit's save and its ACTIVE file is a state the store reports, serves
        # and activates ("... did not activate; activated it"); any other model store line is a
        # version that failed to load.
        failed = [ln for ln in second.log().splitlines() if "model store:" in ln and "did not activate; activated it" not in ln]
        assert not failed, f"a stored model version failed to load: {failed[:3]}"

        # Every alarm committed before the kill reaches SCADA.
        committed_ids = {a["alert_id"] for a in committed}
        wait_for(lambda: committed_ids <= {a["alert_id"] for a in scada.json()}, 30, "every committed alarm delivered after the restart")

        # Scoring resumes on new data. The NEW series were killed mid-fit (their buffered
        # readings lived in memory only), so they get a fresh training window too.
        tc = tb + 100
        retrain = [(topic(OLD + j), reading(noise(rng), tc - TRAIN + k)) for k in range(TRAIN) for j in range(NEW)]
        for c in chunks(retrain + scored_rows(rng, tc, range(0, 40), (10,)), 500):
            pub.publish_chunk(c)
        want = expected(ta, (0, 50)) | expected(tb, (20, 60)) | expected(tc, (10,))
        # The raise/clear state is not persisted: a series killed between a raise and its
        # clear starts "normal" again, so that one clear is never sent (reported; see docs).
        state: dict[str, tuple[str, float]] = {}
        for a in sorted(delivered_before + committed, key=lambda a: a["ts"]):
            state[a["series"]] = (a["state"], a["ts"])
        stuck = {(s, "cleared", ts + CLEAR_AFTER) for s, (st, ts) in state.items() if st == "raised"}
        want -= stuck
        got = lambda: {(a["series"], a["state"], a["ts"]) for a in scada.json()}  # noqa: E731
        try:
            wait_for(lambda: want <= got(), 40, "every expected alarm")
        finally:
            print(f"alarms expected {len(want)}, received {len(got() & want)}; raised alarms left uncleared by the kill: {len(stuck)}")
        by_key: dict[tuple, set[str]] = {}
        for a in scada.json():
            by_key.setdefault((a["series"], a["state"], a["ts"]), set()).add(a["alert_id"])
        assert all(len(ids) == 1 for ids in by_key.values())
        # A series killed between its version and its ACTIVE file is served from that version and
        # never refits: the restart writes its ACTIVE (model_store.load_active). Before it did, CI
        # failed here: "35 model version(s) on disk (34 active)", 39 of 40 forever.
        wait_for(lambda: models_trained(agent.state_dir) == OLD + NEW, 60, "the new series trained")  # fits queue behind the restart's under load
        after = store_snapshot(agent.state_dir / "models")
        changed = {k for k in snapshot if after.get(k) != snapshot[k] and not k.startswith(tuple(f"m{OLD + j:02d}" for j in range(NEW)))}
        assert not changed, f"model files of trained series changed across the restart: {sorted(changed)[:5]}"
        # The restarted agent scores with the stored version 1 models (no retrain needed).
        assert {a["model"]["version"] for a in scada.json() if a["ts"] >= tb} == {1}
    finally:
        pub.close()
        scada.close()
        agent.kill()
        if second is not None:
            assert second.stop() == 0
        broker.stop()
