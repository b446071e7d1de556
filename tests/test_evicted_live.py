"""A series evicted for the memory budget comes back with its live state (issue 13): a trending
``robust`` series evicted by other series and reloaded from the model store scores on from
where its detector was, not from its fit-end state (which alarms on every reading of the
trend); the states are counted in the byte budget, checked when put back, and kept by the
live-state file across a restart."""

from __future__ import annotations

import asyncio
import logging
import random
from pathlib import Path

import pytest

from edge_agent import series_live
from edge_agent.config import AgentConfig
from edge_agent.evicted_live import entry_bytes
from edge_agent.model_store import ModelStore
from edge_agent.pipeline import InlineTrainer, Pipeline

N_FIT, N_BEFORE, N_AFTER = 500, 1500, 500
SLOPE = 0.01  # per reading, noise sd 1: from its fit-end state every later reading is anomalous


def make(tmp: Path, **series: object) -> tuple[Pipeline, list]:
    cfg = AgentConfig.model_validate({
        "detector": {"name": "robust", "min_train_samples": N_FIT},
        "series": {"buffer_size": 1024, "idle_s": 10.0, **series},
    })
    events: list = []
    return Pipeline(cfg, InlineTrainer(), events.append, store=ModelStore(tmp / "models", fsync=False)), events


def trend(seed: int = 7) -> list[float]:
    rng = random.Random(seed)
    return [50.0 + SLOPE * i + rng.gauss(0.0, 1.0) for i in range(N_BEFORE + N_AFTER + 20)]


def feed(p: Pipeline, sid: str, values: list[float], start: int, stop: int, offset: float = 0.0) -> None:
    for i in range(start, stop):
        p.process(sid, values[i] + offset, 60.0 * i)


def evict(p: Pipeline, sid: str, others: list[str]) -> None:
    """``sid`` goes idle and other series take its place (max_series 2)."""
    p.tick(p.clock + 1.0)
    p.tick(p.clock + 100.0)  # no reading of ``sid`` between two sweeps 99 s apart: idle
    for k, other in enumerate(others):
        feed(p, other, trend(k + 100), 0, N_FIT + 1)
    assert sid not in p.series and sid in p.evicted_models
    p.tick(p.clock + 1.0)
    p.tick(p.clock + 100.0)  # the others idle in turn: room for ``sid`` when it comes back


def run_trend_evicted(tmp_path: Path) -> tuple[Pipeline, list]:
    p, events = make(tmp_path, max_series=2)
    values = trend()
    feed(p, "t", values, 0, N_BEFORE)
    assert p.series["t"].model is not None and events == []
    evict(p, "t", ["b", "c"])
    feed(p, "t", values, N_BEFORE, N_BEFORE + N_AFTER)  # back: reloaded, then scored on
    return p, events


def test_an_evicted_trending_series_comes_back_without_an_alarm_and_a_step_still_raises(tmp_path: Path) -> None:
    p, events = run_trend_evicted(tmp_path)
    assert p.n_restored == 1 and "t" not in p.evicted_live.entries  # taken back (b went for it, with its own)
    assert [(e.series, e.state) for e in events] == [], "the reload from the fit-end state alarmed on the trend"
    assert p.series["t"].n_scored >= N_AFTER - 1
    feed(p, "t", trend(), N_BEFORE + N_AFTER, N_BEFORE + N_AFTER + 20, offset=15.0)
    assert [(e.series, e.state) for e in events][:1] == [("t", "raised")]


def test_the_kept_states_count_in_the_byte_budget_and_the_oldest_go_first(tmp_path: Path) -> None:
    p, _ = make(tmp_path, max_series=2)
    feed(p, "t", trend(), 0, N_FIT + 10)
    before = p.series_bytes.bytes
    ring = p.series["t"].nbytes
    evict(p, "t", ["b", "c"])
    kept = p.evicted_live.entries["t"]
    assert p.evicted_live.nbytes == entry_bytes(kept) and 0 < entry_bytes(kept) < ring
    assert p.series_bytes.bytes == sum(s.nbytes for s in p.series.values()) + p.evicted_live.nbytes
    assert before  # the byte total covers the kept state: a budget it cannot pass
    feed(p, "b", trend(100), N_FIT + 1, N_FIT + 2)
    feed(p, "c", trend(101), N_FIT + 1, N_FIT + 2)
    # Nothing idle to evict (b and c are busy again) and over the byte budget: the kept state goes.
    p.max_bytes = p.series_bytes.bytes - 1
    p.make_room()
    assert len(p.evicted_live) == 0 and p.evicted_live.n_dropped == 1 and "t" in p.evicted_models
    assert p.series_bytes.bytes == sum(s.nbytes for s in p.series.values())


@pytest.mark.parametrize("damage", ["params", "version"])
def test_a_state_of_another_model_or_a_bad_state_costs_the_state_only(tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str) -> None:
    p, events = make(tmp_path, max_series=2)
    values = trend()
    feed(p, "t", values, 0, N_BEFORE)
    evict(p, "t", ["b", "c"])
    sid, version, name, params, arrays = p.evicted_live.entries["t"]
    if damage == "params":
        p.evicted_live.put((sid, version, name, {**params, "rate": "fast"}, arrays))
    else:  # of a model no longer active (a rollback, a pull since)
        p.evicted_live.put((sid, version + 1, name, params, arrays))
    with caplog.at_level(logging.INFO):
        feed(p, "t", values, N_BEFORE, N_BEFORE + 1)
    if damage == "params":
        assert "series 't': live state not restored (TypeError" in caplog.text
    else:
        assert "series 't': its live state is of model v2, v1 is active" in caplog.text
    model = p.series["t"].model
    assert model is not None and model.version == version and p.n_restored == 1  # its stored model, as before
    # ... which is the fit-end state: the trend, far past it, is a level alarm (what the kept state avoids).
    assert [(e.series, e.state) for e in events] == [("t", "raised")]


def test_the_live_state_file_keeps_the_evicted_series_across_a_restart(tmp_path: Path) -> None:
    p, _ = make(tmp_path, max_series=2)
    values = trend()
    feed(p, "t", values, 0, N_BEFORE)
    evict(p, "t", ["b", "c"])
    path = tmp_path / series_live.FILE

    async def save_then_restart() -> tuple[Pipeline, list]:
        loop = asyncio.get_running_loop()
        assert await series_live.Keeper(p, path, 0.0, loop, None).save("stop") == 3  # b, c and the evicted t
        q, q_events = make(tmp_path, max_series=2)
        store = ModelStore(tmp_path / "models", fsync=False)
        for sid in ("b", "c", "t"):  # as the agent adopts its stored models: t is beyond the budget
            model, _ = store.load_active(sid)
            assert model is not None
            q.adopt(sid, model)
        assert "t" in q.evicted_models and "t" not in q.series
        assert await series_live.Keeper(q, path, 0.0, loop, None).restore() == []
        return q, q_events

    q, q_events = asyncio.run(save_then_restart())
    assert list(q.evicted_live.entries) == ["t"]
    q.tick(q.clock + 1.0)
    q.tick(q.clock + 100.0)
    feed(q, "t", values, N_BEFORE, N_BEFORE + N_AFTER)
    assert q.n_restored == 1 and q.series["t"].n_scored >= N_AFTER - 1
    assert q_events == [], "the series evicted at the restart came back from its fit-end state"


def test_a_file_past_its_bound_leaves_out_the_oldest_evicted_states_not_all(tmp_path: Path) -> None:
    p, _ = make(tmp_path, max_series=3)
    for k, sid in enumerate(("old", "new", "held")):
        feed(p, sid, trend(k), 0, N_FIT + 10)
    for sid in ("old", "new"):  # evicted in this order: "old" is the oldest kept state
        p.evict(p.series[sid], "idle_model")
    assert list(p.evicted_live.entries) == ["old", "new"]
    entries = asyncio.run(series_live.snapshot(p))
    assert [e[0] for e in entries] == ["held", "new", "old"]
    path = tmp_path / series_live.FILE
    one = len(series_live.encode(entries[:1])[0]) + sum(a.nbytes for a in entries[0][4].values())
    assert series_live.write(path, entries, fsync=False, max_bytes=int(2.6 * one)) == 2
    restored, errors, _, kept = series_live.read(path, series_live.versions(p), {"old", "new"})
    assert list(restored) == ["held"] and [e[0] for e in kept] == ["new"] and errors == []
