from __future__ import annotations

import numpy as np

from edge_agent.config import AgentConfig
from edge_agent.pipeline import InlineTrainer, Pipeline, alert_id


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
    a = alert_id("gw", "s", "raised", 1, 1.5)
    assert a == alert_id("gw", "s", "raised", 1, 1.5)
    others = [alert_id("gw", "s", "cleared", 1, 1.5), alert_id("gw", "t", "raised", 1, 1.5),
              alert_id("gw", "s", "raised", 1, 1.6), alert_id("gw", "s", "raised", 2, 1.5)]
    assert len({a, *others}) == 5


def test_two_alarms_within_one_timestamp_have_two_ids_and_a_clear_shares_its_raise_seq() -> None:
    # Issue 15, finding 3: a coarse device clock stamps many readings alike; the id was a hash
    # of the reading timestamp, so two different alarms had one id.
    p, ev = make(clear_after=2)
    feed(p, np.random.default_rng(9).uniform(-1, 1, 50))
    for v in (40.0, 0.0, 0.0, 40.0, 0.0, 0.0):
        p.process("s", v, 2000.0)
    assert [(e.state, e.seq) for e in ev] == [("raised", 1), ("cleared", 1), ("raised", 2), ("cleared", 2)]
    assert len({e.alert_id for e in ev}) == 4
    assert ev[1].raised_alert_id == ev[0].alert_id and ev[3].raised_alert_id == ev[2].alert_id


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
