"""The series memory budget (issue 15, finding 2): junk cannot fill it for good, eviction goes
in the documented order, a series in alarm stays, and an evicted model comes back from disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent.config import AgentConfig
from edge_agent.model_store import ModelStore
from edge_agent.pipeline import InlineTrainer, Pipeline, TooManySeries

MIN_TRAIN = 50


def make(tmp: Path | None = None, **series: object) -> tuple[Pipeline, list]:
    cfg = AgentConfig.model_validate({
        "detector": {"name": "statistical", "min_train_samples": MIN_TRAIN},
        "alarms": {"clear_after": 3},
        "series": {"buffer_size": 256, **series},
    })
    events: list = []
    store = ModelStore(tmp / "models", fsync=False) if tmp is not None else None
    return Pipeline(cfg, InlineTrainer(), events.append, store=store), events


def train(p: Pipeline, sid: str, t0: float = 1000.0) -> float:
    for k, v in enumerate(np.random.default_rng(len(sid)).uniform(-1, 1, MIN_TRAIN)):
        p.process(sid, float(v), t0 + k)
    assert p.series[sid].model is not None
    return t0 + MIN_TRAIN


def test_junk_series_cannot_keep_a_real_series_out(tmp_path: Path) -> None:
    # Before: with max_series 50, junk filled every slot and real sensors were refused for good.
    p, events = make(tmp_path, max_series=50)
    for k in range(5):
        train(p, f"real{k}")
    for k in range(10_000):
        p.process(f"junk{k}", 1.0, 5000.0)
    assert len(p.series) <= 50
    assert all(f"real{k}" in p.series for k in range(5))
    assert p.n_evicted["new"] >= 10_000 - 45 and p.n_series_refused == 0
    t = train(p, "late")  # a new real series still learns...
    p.process("late", 40.0, t)  # ...and alarms
    assert [(e.series, e.state) for e in events] == [("late", "raised")]


def test_eviction_order_new_then_idle_then_idle_with_a_model_never_in_alarm(tmp_path: Path) -> None:
    p, events = make(tmp_path, max_series=5, idle_s=100.0)
    p.tick(0.0)
    t = train(p, "model_idle")
    train(p, "alarmed")
    p.process("alarmed", 40.0, 2000.0)
    assert p.series["alarmed"].active
    p.process("learning_idle", 1.0, 1.0)
    p.process("learning_idle", 1.0, 2.0)
    p.tick(1.0)  # a sweep sees all of them...
    p.tick(500.0)  # ...and the next finds no new reading: idle from here on
    p.process("new_one", 1.0, 3.0)
    p.process("learning_busy", 1.0, 1.0)
    p.process("learning_busy", 1.0, 2.0)
    assert len(p.series) == 5
    gone = []
    p.on_evict.append(lambda s: gone.append(s.id))
    for k in range(3):
        p.process(f"n{k}", 1.0, 3.0)
        p.process(f"n{k}", 1.0, 4.0)  # each newcomer leaves the one-reading class at once
    assert gone == ["new_one", "learning_idle", "model_idle"]
    with pytest.raises(TooManySeries, match="series.max_series 5"):
        p.process("n3", 1.0, 3.0)  # the rest are busy, or in alarm
    assert p.n_series_refused == 1 and "alarmed" in p.series
    assert p.n_evicted == {"new": 1, "idle": 1, "idle_model": 1}
    assert t and p.evicted_models == {"model_idle"}


def test_an_evicted_series_gets_its_model_back_from_disk_when_readings_return(tmp_path: Path) -> None:
    p, events = make(tmp_path, max_series=2, idle_s=10.0)
    t = train(p, "a")
    p.tick(1.0)
    p.tick(100.0)  # no reading of "a" between two sweeps 99 s apart: idle
    train(p, "b", t0=5000.0)
    p.process("c", 1.0, 1.0)  # "a" is idle with a model: it makes room
    assert "a" not in p.series and p.evicted_models == {"a"}
    p.process("a", 0.1, t)  # back: the model is reloaded, not learned again
    s = p.series["a"]
    assert s.model is not None and s.model.version == 1 and p.n_restored == 1
    p.process("a", 40.0, t + 1)
    assert [(e.series, e.state, e.version) for e in events] == [("a", "raised", 1)]


def test_series_with_a_model_are_evicted_only_as_needed_not_in_a_batch(tmp_path: Path) -> None:
    # The 1 % slack batches evictions of junk; a series with a model is a real sensor (and
    # keeping a streaming one's live state costs time on the loop): only what is needed goes.
    p, _ = make(tmp_path, max_series=500, idle_s=10.0)
    for k in range(500):
        train(p, f"m{k}")
    p.tick(1.0)
    p.tick(100.0)
    p.process("new", 1.0, 1.0)
    assert p.n_evicted == {"new": 0, "idle": 0, "idle_model": 1} and len(p.series) == 500
    for k in range(3):
        p.process(f"more{k}", 1.0, 1.0)
    assert p.n_evicted == {"new": 3, "idle": 0, "idle_model": 1}  # each newcomer evicts the one-reading one before it


def test_without_a_store_a_model_is_never_evicted() -> None:
    p, _ = make(None, max_series=2, idle_s=10.0)
    train(p, "a")
    train(p, "b")
    p.tick(100.0)
    with pytest.raises(TooManySeries):
        p.process("c", 1.0, 1.0)


def test_the_byte_budget_counts_rings_as_they_grow_and_evicts_within_it(tmp_path: Path) -> None:
    p, _ = make(tmp_path, max_bytes=1_048_576, idle_s=10.0)
    p.process("first", 1.0, 1.0)
    one = p.series_bytes.bytes
    assert one == p.series["first"].nbytes < 1000
    for k in range(255):
        p.process("first", 1.0, 2.0 + k)
    # The ring, grown, plus the plot's detector checkpoints (checkpoints.py), which count too.
    cps = sum(c.nbytes for c in p.series["first"].checkpoints or ())
    assert cps > 0
    assert p.series_bytes.bytes == p.series["first"].nbytes == one + 8 * (256 - 16) + 8 * (16 - 1) + cps
    for k in range(5000):
        p.process(f"junk{k}", 1.0, 1.0)
    assert p.series_bytes.bytes <= 1_048_576 and p.n_evicted["new"] > 0
    assert p.series_bytes.bytes == sum(s.nbytes for s in p.series.values())


def test_finding_victims_never_walks_all_series_on_the_reading_path(tmp_path: Path) -> None:
    # A pass over 100,000 series took 140 ms; a flood of refused topics must cost a lookup each.
    import edge_agent.series_budget as budget

    p, _ = make(tmp_path, max_series=1000, idle_s=10.0)
    for k in range(1000):
        p.process(f"busy{k}", 1.0, 1.0)
        p.process(f"busy{k}", 1.0, 2.0)
    calls = []
    real = budget.evictable_class
    budget.evictable_class = lambda *a: calls.append(1) or real(*a)
    try:
        with pytest.raises(TooManySeries):
            p.process("new0", 1.0, 1.0)  # the first refusal drops the busy ones from the new queue
        assert len(calls) == 1000
        for k in range(1, 500):
            with pytest.raises(TooManySeries):
                p.process(f"new{k}", 1.0, 1.0)
        assert len(calls) == 1000  # and the next ones look at nothing
        p.tick(1.0)
        p.tick(20.0)  # a sweep finds them idle...
        calls.clear()
        for k in range(200):  # ...and each batch of evictions takes from its heap
            p.process(f"late{k}", 1.0, 1.0)
            p.process(f"late{k}", 1.0, 2.0)
        assert all(f"late{k}" in p.series for k in range(200)) and p.n_evicted["idle"] >= 200
        assert len(calls) < 1000 + 2 * 400  # the sweep's look at each, and a few per eviction
    finally:
        budget.evictable_class = real


def test_eviction_at_a_full_100k_budget_costs_microseconds_per_new_series() -> None:
    import time

    p, _ = make(None, max_series=100_000)
    for k in range(100_000):
        p.process(f"j{k}", 1.0, 1.0)
    t0 = time.perf_counter()
    for k in range(100_000, 110_000):
        p.process(f"j{k}", 1.0, 1.0)
    per_series = (time.perf_counter() - t0) / 10_000
    assert p.n_evicted["new"] >= 10_000 and len(p.series) <= 100_000
    assert per_series < 200e-6, f"{per_series * 1e6:.0f} us per new series"
