from __future__ import annotations

import numpy as np
import pytest

from edge_agent.config import AgentConfig
from edge_agent.pipeline import InlineTrainer, Pipeline, StaleReading, alert_id, stale_mask


def make(clear_after: int = 10, min_train: int = 50, **retrain: object) -> tuple[Pipeline, list]:
    cfg = AgentConfig.model_validate(
        {"detector": {"name": "statistical", "min_train_samples": min_train, "retrain": retrain}, "alarms": {"clear_after": clear_after}}
    )
    events: list = []
    return Pipeline(cfg, InlineTrainer(), events.append), events


def feed(p: Pipeline, values: list[float] | np.ndarray, t0: float = 1000.0) -> None:
    for i, v in enumerate(values):
        p.process("s", float(v), t0 + i)


def test_no_alarm_while_learning_then_trains_at_min_samples() -> None:
    p, ev = make()
    feed(p, [0.0] * 49 + [1e6])  # the 50th reading is wild, but the series is still learning
    assert ev == [] and p.series["s"].model is not None
    assert p.series["s"].state == "normal"


def test_alarm_raised_once_and_cleared_after_n_normal() -> None:
    p, ev = make(clear_after=3)
    rng = np.random.default_rng(0)
    feed(p, rng.uniform(-1, 1, 50))
    feed(p, [50, 60, 70, 0, 0, 55, 0, 0, 0, 0], t0=2000)
    states = [(e.state, e.ts) for e in ev]
    # three anomalous readings in a row raise once; a normal run shorter than 3 does not clear
    assert states == [("raised", 2000.0), ("cleared", 2008.0)]
    assert ev[1].raised_alert_id == ev[0].alert_id
    assert ev[0].version == 1 and ev[0].detector == "statistical"


def test_alert_ids_are_deterministic_and_distinct() -> None:
    a = alert_id("gw", "s", "raised", 1.5)
    assert a == alert_id("gw", "s", "raised", 1.5)
    assert len({a, alert_id("gw", "s", "cleared", 1.5), alert_id("gw", "t", "raised", 1.5), alert_id("gw", "s", "raised", 1.6)}) == 4


def test_retrain_every_n_creates_new_versions() -> None:
    p, _ = make(every_n=100)
    feed(p, np.random.default_rng(1).uniform(-1, 1, 50 + 250))
    assert p.series["s"].model.version == 3


def test_retrain_on_drift() -> None:
    p, _ = make(on_drift=True, drift_window=50, drift_ratio=3.0)
    rng = np.random.default_rng(2)
    feed(p, rng.uniform(-1, 1, 150))
    assert p.series["s"].model.version == 1
    feed(p, rng.uniform(-1, 1, 200) * 6, t0=5000)  # the spread grows six-fold: scores drift
    assert p.series["s"].model.version >= 2


def test_failed_fit_backs_off_instead_of_retrying_every_reading() -> None:
    p, _ = make(min_train=20)
    calls = []
    real = p.fit_model

    def failing(req):  # noqa: ANN001
        calls.append(req)
        raise RuntimeError("disk on fire")

    p.fit_model = failing  # type: ignore[method-assign]
    feed(p, [1.0, 2.0] * 20)
    assert len(calls) == 2  # at reading 20, then again one training window later
    p.fit_model = real  # type: ignore[method-assign]
    feed(p, [1.0, 2.0] * 20, t0=3000)
    assert p.series["s"].model is not None


def test_process_trainer_feeds_the_worker_a_few_fits_at_a_time(tmp_path) -> None:
    """A 40-series fit reaches the worker process at most 2 x workers at a time (the loop
    does not pickle and queue all 40 in one go) and every fit still completes in order."""
    import asyncio

    from edge_agent.model_store import ModelStore
    from edge_agent.pipeline import ProcessTrainer

    async def main() -> tuple[int, list[str], dict[str, int]]:
        loop = asyncio.get_running_loop()
        trainer = ProcessTrainer(loop, ModelStore(tmp_path / "models", fsync=False))
        pipe = Pipeline(AgentConfig.model_validate({"detector": {"name": "statistical", "min_train_samples": 50}}), trainer, lambda e: None)
        peak = 0
        done_order: list[str] = []
        finished = asyncio.Event()
        for k in range(40):
            s = pipe.get_or_create(f"m{k:02d}/temp")

            def done(model, exc, sid=s.id) -> None:
                assert exc is None, exc
                done_order.append(sid)
                if len(done_order) == 40:
                    finished.set()

            pipe.request_fit(s, reason="command", values=np.arange(60, dtype=np.float64) % 7, done=done)
            peak = max(peak, trainer.inflight)
        assert trainer.running == 40
        while not finished.is_set():
            peak = max(peak, trainer.inflight)
            await asyncio.sleep(0.001)
        trainer.close()
        return peak, done_order, {sid: s.model.version for sid, s in pipe.series.items()}

    peak, order, versions = asyncio.run(asyncio.wait_for(main(), 120))
    assert peak == 2
    assert order == [f"m{k:02d}/temp" for k in range(40)]
    assert set(versions.values()) == {1}


def make_windowed(window: float, clear_after: int = 3) -> tuple[Pipeline, list]:
    cfg = AgentConfig.model_validate(
        {"detector": {"name": "statistical", "min_train_samples": 50}, "alarms": {"clear_after": clear_after},
         "ingest": {"replay_window_s": window}}
    )
    events: list = []
    return Pipeline(cfg, InlineTrainer(), events.append), events


def test_a_replayed_spike_is_refused_and_does_not_raise_or_clear_again() -> None:
    # What a broker restarted from an old persistence file does: readings already scored come
    # back, out of order, among new ones. Scored again, the old spike would raise its alarm a
    # second time and the fresh readings after it would clear it at a reading that never
    # cleared anything.
    p, ev = make_windowed(1800.0)
    feed(p, np.random.default_rng(3).uniform(-1, 1, 50))
    feed(p, [50, 0, 0, 0, 0.1], t0=2000)
    assert [(e.state, e.ts) for e in ev] == [("raised", 2000.0), ("cleared", 2003.0)]
    for t, v in ((2000.0, 50.0), (2001.0, 0.0)):
        with pytest.raises(StaleReading) as exc:
            p.process("s", v, t)
        assert exc.value.reason == "stale" and "s older than the series' newest" in exc.value.detail
    feed(p, [0.2, 0.3, 0.1, 0.0], t0=2005)
    assert [(e.state, e.ts) for e in ev] == [("raised", 2000.0), ("cleared", 2003.0)]
    s = p.series["s"]
    assert s.n_readings == 59 and s.last_ts == 2008.0


def test_equal_timestamps_are_scored_and_a_reset_clock_is_followed() -> None:
    p, ev = make_windowed(1800.0)
    feed(p, np.random.default_rng(4).uniform(-1, 1, 50))
    p.process("s", 0.5, 1049.0)  # same second as the newest: a coarse device clock, not a replay
    assert p.series["s"].n_readings == 51
    p.process("s", 60.0, 1049.0 - 1801.0)  # further back than the window: the clock was reset
    assert [(e.state, e.ts) for e in ev] == [("raised", 1049.0 - 1801.0)]
    p.process("s", 0.0, 1049.0 - 1800.0)  # and the series goes on from the new clock
    assert p.series["s"].last_ts == 1049.0 - 1800.0


def test_window_zero_scores_every_reading() -> None:
    p, ev = make_windowed(0.0)
    feed(p, np.random.default_rng(5).uniform(-1, 1, 50))
    p.process("s", 70.0, 10.0)
    assert [(e.state, e.ts) for e in ev] == [("raised", 10.0)]


def test_batch_refuses_exactly_what_single_readings_would() -> None:
    rng = np.random.default_rng(6)
    for trial in range(200):
        window = float(rng.choice([0.0, 5.0, 50.0]))
        newest = float(rng.choice([np.nan, 100.0]))
        ts = 100.0 + np.cumsum(rng.choice([-60.0, -3.0, 0.0, 1.0, 2.0], size=int(rng.integers(1, 30))))
        expected, last = [], newest
        for t in ts.tolist():
            refused = t < last and last - t <= window
            expected.append(refused)
            if not refused:
                last = t
        mask = stale_mask(newest, ts, window)
        got = [False] * len(ts) if mask is None else mask.tolist()
        assert got == expected, (trial, window, newest, ts.tolist())


def test_batch_drops_stale_readings_and_reports_how_many() -> None:
    p, ev = make_windowed(1800.0)
    feed(p, np.random.default_rng(7).uniform(-1, 1, 50))
    n = p.process_batch("s", np.array([0.0, 80.0, 0.1, 0.2]), np.array([1050.0, 1030.0, 1051.0, 1049.0]))
    assert n == 2 and ev == [] and p.series["s"].n_readings == 52 and p.series["s"].last_ts == 1051.0
    assert p.process_batch("s", np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 2  # all stale, nothing scored
    assert p.series["s"].n_readings == 52


class DeferredTrainer:
    """Holds fit requests until released: a fit worker that is slow to answer."""

    def __init__(self) -> None:
        self.pending: list = []

    def submit(self, pipeline: Pipeline, request, done=None) -> None:  # noqa: ANN001
        self.pending.append((pipeline, request, done))

    def release(self) -> None:
        while self.pending:
            pipeline, request, done = self.pending.pop(0)
            pipeline.install(request, pipeline.fit_model(request))


def test_readings_arriving_during_the_first_fit_are_scored_in_order_when_it_lands() -> None:
    """Before, every reading that arrived while the first fit ran passed unscored: a fast
    series (or a backlog after an outage) lost its first faults. Now they are kept and scored
    by the new model, in order, before any later reading."""
    cfg = AgentConfig.model_validate({"detector": {"name": "statistical", "min_train_samples": 50}, "alarms": {"clear_after": 2}})
    trainer = DeferredTrainer()
    events: list = []
    p = Pipeline(cfg, trainer, events.append)
    feed(p, np.random.default_rng(8).uniform(-1, 1, 50))
    assert p.series["s"].fit_pending and len(trainer.pending) == 1
    feed(p, [0.0, 40.0, 0.0, 0.0, 0.0, -40.0, 0.0, 0.0], t0=2000)  # the fit has not landed yet
    batch = np.array([0.1, 0.2, 50.0]), np.array([2008.0, 2009.0, 2010.0])
    p.process_batch("s", *batch)
    assert events == [] and p.series["s"].n_scored == 0
    trainer.release()
    assert [(e.state, e.ts) for e in events] == [("raised", 2001.0), ("cleared", 2003.0), ("raised", 2005.0), ("cleared", 2007.0), ("raised", 2010.0)]
    assert p.series["s"].n_scored == 11 and p.n_backlog_scored == 11
    p.process("s", 0.0, 2011.0)  # later readings go on from there
    assert p.series["s"].n_scored == 12


def test_backlog_is_bounded_by_the_buffer_and_counted() -> None:
    cfg = AgentConfig.model_validate({"detector": {"name": "statistical", "min_train_samples": 20}, "series": {"buffer_size": 32}})
    trainer = DeferredTrainer()
    p = Pipeline(cfg, trainer, lambda e: None)
    feed(p, np.random.default_rng(9).uniform(-1, 1, 20 + 100))
    assert p.n_backlog_dropped == 100 - 32
    trainer.release()
    assert p.series["s"].n_scored == 32


def test_a_raised_alarm_says_why() -> None:
    p, ev = make(clear_after=3)
    feed(p, np.random.default_rng(10).uniform(-1, 1, 50))
    feed(p, [25.0], t0=2000)
    (e,) = ev
    assert (e.kind, e.direction) == ("out_of_range", "up")
    assert e.expected_low < 0.0 < e.expected_high < 25.0
    assert e.message.startswith("out of range up:") and "value 25" in e.message


def test_a_lasting_deviation_is_accepted_after_the_acceptance_time_and_the_model_follows() -> None:
    cfg = AgentConfig.model_validate({"detector": {"name": "robust"}, "alarms": {"accept_after_s": 3600.0, "accept_min_readings": 100}})
    ev: list = []
    p = Pipeline(cfg, InlineTrainer(), ev.append)
    rng = np.random.default_rng(11)
    for i, v in enumerate(np.concatenate([rng.normal(10, 1, 600), rng.normal(30, 1, 400)])):
        p.process("s", float(v), 1000.0 + 10.0 * i)  # a reading every 10 s: 3600 s = 360 readings
    states = [(e.state, e.ts) for e in ev]
    assert states[0] == ("raised", 1000.0 + 6000.0)
    assert states[1][0] == "accepted" and states[1][1] == 1000.0 + 10.0 * (600 + 360)
    assert len(states) == 2  # the new level is normal now: nothing more
    acc = ev[1]
    assert acc.raised_alert_id == ev[0].alert_id and acc.held_s == 3600.0 and "accepted as the new normal" in acc.message
    assert p.n_accepted == 1 and p.series["s"].state == "normal"


def test_rebaseline_ends_a_raised_alarm_as_accepted_and_refits_a_frozen_model() -> None:
    p, ev = make(clear_after=3)
    feed(p, np.random.default_rng(12).uniform(-1, 1, 50))
    feed(p, [40.0, 41.0, 40.5], t0=2000)
    assert [e.state for e in ev] == ["raised"]
    out = p.rebaseline("s")
    assert out == {"series": "s", "was_in_alarm": True, "accepted_alert_id": ev[0].alert_id, "method": "refit"}
    assert [e.state for e in ev] == ["raised", "accepted"] and ev[1].raised_alert_id == ev[0].alert_id
    assert p.series["s"].model.version == 2  # statistical cannot re-centre: refitted on recent readings
    with pytest.raises(ValueError, match="no model"):
        p.rebaseline("nope")
