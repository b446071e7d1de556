"""Hostile-input campaign, attack class *model files*: what a full disk, a crash or an attacker
leaves in the model store. The agent starts, reports each bad file (log, /healthcheck,
/metrics), serves what still loads, and keeps scoring and alarming."""

from __future__ import annotations

import json

import numpy as np
from campaign import Campaign
from faults import deep_json, npz_bomb
from helpers import Subscriber, wait_for

from edge_agent.detectors.statistical import StatisticalDetector
from edge_agent.model_store import ModelStore


def fitted() -> StatisticalDetector:
    d = StatisticalDetector()
    d.fit(np.array([9.0, 10.0, 11.0]))
    return d


def test_hostile_model_files_are_reported_and_never_stop_the_agent(make_campaign) -> None:
    # Issue 15, finding 9: a deeply nested meta.json made the agent exit 1 on every start; a
    # 1.9 MB arrays.npz inflating to gigabytes took RSS to 1.9 GB; a garbage ACTIVE or a
    # corrupt series.json was skipped without a word. Finding 8: a directory without its
    # series.json (a fit that met ENOSPC) was skipped, and the series learned again.
    c: Campaign = make_campaign(start_agent=False, **{"http.enabled": True})
    store = ModelStore(c.agent.state_dir / "models")
    for sid in ("deep/temp", "bomb/temp", "active/temp", "index/temp", "lost/temp"):
        store.save(sid, fitted(), n_samples=3)
        store.save(sid, fitted(), n_samples=3)
    (store.version_dir("deep/temp", 2) / "meta.json").write_bytes(deep_json(100_000))
    (store.version_dir("bomb/temp", 2) / "arrays.npz").write_bytes(npz_bomb(gib=2.0))
    (store.series_dir("active/temp") / "ACTIVE").write_bytes(b"\x00\xffnot a number")
    (store.series_dir("index/temp") / "series.json").unlink()
    (store.series_dir("lost/temp") / "series.json").write_bytes(deep_json(100_000))
    for v in (1, 2):
        (store.version_dir("lost/temp", v) / "meta.json").write_bytes(b"{broken")
    c.start()
    health = c.healthcheck()
    assert any("problem(s) with stored models" in p for p in health["problems"]), health["problems"]
    errors = "\n".join(health["model_errors"])
    for expected in ("nested too deeply", "members declare", "ACTIVE: unreadable", "recovered from its versions", "no version names the series"):
        assert expected in errors, (expected, errors)
    assert c.metrics()["edge_agent_model_load_errors"] >= 5
    ready = json.loads(c.http("/readyz"))
    assert ready["ready"] is True and any("stored models" in p for p in ready["degraded"])
    assert c.agent.rss_kb() < 400 * 1024, "a model file inflated in memory"
    assert (store.series_dir("index/temp") / "series.json").exists()  # rewritten
    # Each series that still has a good version scores with it: no relearning.
    for sid, version in (("deep/temp", 1), ("bomb/temp", 1), ("active/temp", 2), ("index/temp", 2)):
        topic = f"plant/mf/{sid.split('/')[0]}/temp"
        c.publish(topic, 10.0)
        alarm = c.spike(topic, sid)
        assert alarm["model"]["version"] == version, (sid, alarm)
    c.assert_invariants()


def test_a_model_pulled_into_the_store_while_running_cannot_stop_the_agent(make_campaign) -> None:
    # Files can change under a running agent (an operator's copy, a restore): a rollback to a
    # hostile version is refused with the reason, and the series keeps its model.
    c: Campaign = make_campaign(**{"http.enabled": True, "commands.allow_unsigned": True})
    c.train("plant/mf/live/temp")
    store = ModelStore(c.agent.state_dir / "models")
    wait_for(lambda: store.active_version("live/temp") == 1, 10, "the model on disk")
    store.save("live/temp", fitted(), n_samples=3, activate=False)
    (store.version_dir("live/temp", 2) / "meta.json").write_bytes(deep_json(100_000))
    answers = Subscriber(c.broker, "edge/gw-test/cmd/+/response")
    try:
        c.plc.publish("edge/gw-test/cmd/rollback", json.dumps({"cmd": "rollback", "args": {"series": "live/temp", "version": 2}})).wait_for_publish(10)
        wait_for(lambda: any(a.get("status") == "failed" for a in answers.json()), 10, "the rollback refused")
        assert "nested too deeply" in json.dumps(answers.json())
    finally:
        answers.close()
    c.spike("plant/mf/live/temp", "live/temp")
    c.assert_invariants()
