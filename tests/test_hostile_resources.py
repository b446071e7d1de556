"""Hostile-input campaign, attack class *resources*: junk series, a small series budget, a full
or read-only state directory. Each case: real broker, real agent, attack, then the invariants
(the agent scores, and its alarm reaches SCADA)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from campaign import MIN_TRAIN, Campaign
from helpers import wait_for

N_JUNK = 30_000


def junk(n: int, start: int = 0) -> list[tuple[str, bytes]]:
    """One good reading on each of ``n`` fresh topics: n one-reading series."""
    ts = time.time() - 60
    return [(f"plant/junk/j{start + k}/t", json.dumps({"value": 1.0, "ts": ts}).encode()) for k in range(n)]


def test_30k_junk_series_cost_little_memory_and_a_new_series_still_trains_and_alarms(make_campaign) -> None:
    # Issue 15, finding 2: each one-reading series held a whole ring (~36 kB); 100,000 took
    # RSS from 70 MB to 3.5 GB, past the unit's MemoryMax at ~19,500.
    c: Campaign = make_campaign(**{"http.enabled": True})
    received = c.metrics()["edge_agent_messages_received_total"]
    rss_before = c.agent.rss_kb()
    c.flood(junk(N_JUNK))
    c.wait_received(received + N_JUNK)
    growth_mb = (c.agent.rss_kb() - rss_before) / 1024
    budget = c.healthcheck()["series_budget"]
    print(f"\n{N_JUNK:,} one-reading junk series: RSS +{growth_mb:.1f} MB; budget counts {budget['bytes'] / 1e6:.1f} MB "
          f"for {budget['series']} series")
    assert budget["series"] >= N_JUNK
    assert growth_mb < 150, f"RSS grew {growth_mb:.1f} MB over {N_JUNK} junk series"
    c.train("plant/late/l1/temp")
    c.spike("plant/late/l1/temp", "l1/temp")
    c.assert_invariants()


def test_junk_cannot_keep_new_series_out_of_a_small_budget(make_campaign) -> None:
    # With a low max_series, junk used to fill every slot and real sensors were refused for
    # good. Now one-reading series are evicted first, counted, logged, and shown in health.
    c: Campaign = make_campaign(**{"http.enabled": True, "series.max_series": 200})
    received = c.metrics()["edge_agent_messages_received_total"]
    c.flood(junk(5000))
    c.wait_received(received + 5000)
    c.train("plant/late/l1/temp")
    c.spike("plant/late/l1/temp", "l1/temp")
    c.assert_invariants()
    health = c.healthcheck()
    assert health["series_budget"]["evicted"]["new"] >= 5000 - 200
    assert health["series_budget"]["refused_readings"] == 0 and health["series_budget"]["series"] <= 200
    metrics = c.metrics()
    assert metrics['edge_agent_series_evicted_total{class="new"}'] >= 5000 - 200
    c.agent.wait_log("evicted", timeout=15)


def test_a_budget_full_of_busy_series_refuses_new_ones_and_health_says_so(make_campaign) -> None:
    # Nothing idle to evict (every series has readings, none is idle yet): the new series is
    # refused, and health says why instead of "ok".
    c: Campaign = make_campaign(**{"http.enabled": True, "series.max_series": 3})
    for topic in ("plant/busy/b1/t", "plant/busy/b2/t"):
        c.publish(topic, 1.0)
        c.publish(topic, 1.0)
    c.publish("plant/busy/b3/t", 1.0)
    time.sleep(0.5)
    health = c.healthcheck()
    assert health["status"] == "degraded"
    assert any("series budget full" in p for p in health["problems"]), health["problems"]
    ready = json.loads(c.http("/readyz"))  # still serving: 200, and it says what is wrong
    assert ready["ready"] is True and any("series budget full" in p for p in ready["degraded"])
    assert c.metrics()["edge_agent_series_refused_total"] >= 1
    c.assert_invariants()



# ---- a full or read-only state directory ---------------------------------------------------------
class TinyDisk:
    """The agent's state directory on a tmpfs of its own: a real ENOSPC."""

    def __init__(self, path: Path, size: str = "16m") -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
        if res.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode(errors='replace').strip()}")
        self.filler = path / "filler"

    def fill(self) -> None:
        with open(self.filler, "ab", buffering=0) as fh:
            try:
                while fh.write(bytes(65536)):
                    pass
            except OSError:
                pass

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


@pytest.fixture
def tiny_state(request: pytest.FixtureRequest) -> Iterator[Callable[[Campaign], TinyDisk]]:
    disks: list[TinyDisk] = []

    def mount(c: Campaign) -> TinyDisk:
        disks.append(TinyDisk(c.agent.state_dir))
        return disks[-1]

    yield mount
    for d in disks:
        d.close()


def problems(c: Campaign) -> str:
    return "\n".join(c.healthcheck()["problems"])


def test_a_full_state_disk_is_reported_and_a_model_saved_after_it_loads_after_a_restart(make_campaign, tiny_state) -> None:
    # Issue 15, finding 8, through a real agent: a fit that met ENOSPC left the series'
    # directory without series.json; the version saved once there was room went there, and
    # after a restart the series was skipped without a word and learned again.
    c: Campaign = make_campaign(start_agent=False, **{"http.enabled": True, "outbox.retry_s": 1.0})
    disk = tiny_state(c)
    c.start()
    disk.fill()
    topic, series = "plant/disk/d1/temp", "d1/temp"
    for _ in range(MIN_TRAIN):  # not c.train(): it waits for a model, and this first fit must fail
        c.publish(topic, float(c.rng.uniform(-1, 1)))
    wait_for(lambda: "model store degraded" in problems(c), 20, "health to report the full model store")
    assert c.metrics()["edge_agent_model_store_degraded"] == 1.0
    c.assert_invariants()  # alarms still flow (the outbox holds them in memory meanwhile)
    disk.free()
    c.train(topic)  # the next training window is saved
    wait_for(lambda: "model store degraded" not in problems(c), 10, "health to clear")
    c.restart()
    assert "problem(s) with stored models" not in problems(c)
    c.publish(topic, 0.0)
    alarm = c.spike(topic, series)
    assert alarm["model"]["version"] == 1  # loaded, not learned again
    c.assert_invariants()


def test_a_model_store_gone_read_only_keeps_alarms_flowing_and_recovers(make_campaign, tiny_state) -> None:
    # The model store turning read-only under a running agent (a file system remounted
    # read-only after errors; staged as a read-only bind mount of state/models): fits fail,
    # health says so, the stored models serve and alarms flow; writable again, it recovers.
    # (A state directory read-only at start is refused before starting, by preflight; and the
    # kernel refuses to make the outbox's file system read-only while the outbox is open.)
    c: Campaign = make_campaign(start_agent=False, **{"http.enabled": True})
    tiny_state(c)
    c.start()  # trains the canary, whose model is then on the disk
    models = str(c.agent.state_dir / "models")
    subprocess.run(["mount", "--bind", models, models], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", models], check=True)
        for _ in range(MIN_TRAIN):
            c.publish("plant/ro/r1/temp", float(c.rng.uniform(-1, 1)))
        wait_for(lambda: "model store degraded" in problems(c), 20, "health to report the read-only model store")
        assert c.metrics()["edge_agent_model_store_degraded"] == 1.0
        c.assert_invariants()
        subprocess.run(["mount", "-o", "remount,bind,rw", models], check=True)
        c.train("plant/ro/r1/temp")  # the next training window is saved
        wait_for(lambda: "degraded" not in problems(c), 10, "health ok again")
        c.assert_invariants()
    finally:
        subprocess.run(["umount", "-l", models], check=False)
