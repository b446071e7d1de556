"""The replay rule (replay.py, issue 15 finding 4): a redelivered reading is refused, a live
stream is never starved: not by a future-stamped reading, not by a clock stepped back, not by
a second topic feeding the same series."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from edge_agent.config import AgentConfig
from edge_agent.ingest import Ingest
from edge_agent.pipeline import InlineTrainer, Pipeline
from edge_agent.replay import ReplayGuard, Route

WINDOW = 1800.0
STEP = 2.0


class Stream:
    """One topic through a ReplayGuard, with the receive clock in our hands."""

    def __init__(self, window: float = WINDOW, step: float = STEP, max_held: int = 100_000) -> None:
        self.guard = ReplayGuard(window, step, max_held)
        self.route = Route(None, "s")
        self.scored: list[float] = []
        self.stale = 0

    def send(self, ts: float, now: float, value: float = 0.0) -> None:
        out, stale = self.guard.accept(self.route, value, ts, now, now)
        self.scored += [t for _, t in out]
        self.stale += stale


def test_a_replay_is_held_then_refused_when_the_stream_goes_on() -> None:
    s = Stream()
    for k in range(10):
        s.send(1000.0 + k, now=1000.2 + k)
    s.send(1003.0, now=1010.0)  # redelivered after a broker restart: already scored
    s.send(1004.0, now=1010.01)
    assert s.scored == [1000.0 + k for k in range(10)] and s.stale == 0  # held, not yet judged
    s.send(1010.0, now=1010.3)  # the stream goes on from where it was
    assert s.scored[-1] == 1010.0 and s.stale == 2 and s.guard.held_total == 0 and s.guard.n_replays == 1


def test_a_clock_stepped_back_is_followed_and_nothing_is_lost() -> None:
    # Issue 15: an NTP step back of 10 minutes cost 599 of the next 600 readings.
    s = Stream()
    for k in range(10):
        s.send(1000.0 + k, now=1000.0 + k)
    for k in range(600):
        s.send(1010.0 - 600 + 0.5 * k, now=1010.0 + 0.5 * k)
    assert len(s.scored) == 610 and s.stale == 0 and s.guard.n_steps == 1
    assert s.scored[10:] == [1010.0 - 600 + 0.5 * k for k in range(600)]  # in order, none lost


def test_a_future_stamped_reading_does_not_hold_the_topic() -> None:
    # Issue 15: one reading stamped 25 minutes ahead refused the next 400.
    s = Stream()
    for k in range(10):
        s.send(1000.0 + k, now=1000.0 + k)
    s.send(1010.0 + 1500, now=1010.0)  # scored; the topic's newest becomes the receive time
    for k in range(1, 400):
        s.send(1010.0 + k, now=1010.0 + k)
    assert len(s.scored) == 410 and s.stale == 0 and s.guard.n_steps == 0


def test_a_burst_of_old_readings_is_never_taken_for_a_clock_step() -> None:
    s = Stream()
    for k in range(10):
        s.send(1000.0 + k, now=1000.0 + k)
    for k in range(50):  # a replay: 50 old readings delivered in 50 ms
        s.send(1001.0 + k * 0.1, now=1020.0 + k * 0.001)
    s.send(1020.0, now=1023.0)  # 3 s later the stream goes on
    assert s.stale == 50 and s.guard.n_steps == 0


def test_a_replay_delivered_slowly_behind_a_backlog_is_not_a_clock_step() -> None:
    # Old readings trickling in over 10 s whose timestamps span 0.5 s: not a live clock.
    s = Stream()
    for k in range(10):
        s.send(1000.0 + k, now=1000.0 + k)
    for k in range(20):
        s.send(1002.0 + k * 0.025, now=1020.0 + k * 0.5)
    assert s.guard.n_steps == 0 and len(s.scored) == 10
    s.send(1021.0, now=1031.0)
    assert s.stale == 20


def test_equal_timestamps_are_scored_a_reset_clock_is_followed_and_window_zero_scores_all() -> None:
    s = Stream()
    s.send(1000.0, now=1000.0)
    s.send(1000.0, now=1000.1)  # a coarse device clock: the same second twice
    s.send(1000.0 - 1801.0, now=1000.2)  # further back than the window: a reset clock
    s.send(1000.0 - 1800.0, now=1000.3)
    assert s.scored == [1000.0, 1000.0, 1000.0 - 1801.0, 1000.0 - 1800.0] and s.stale == 0
    z = Stream(window=0.0)
    z.send(1000.0, now=1000.0)
    z.send(900.0, now=1000.1)
    assert z.scored == [1000.0, 900.0]


def test_readings_out_of_order_within_a_held_run_refuse_it_and_the_held_total_is_bounded() -> None:
    s = Stream(max_held=3)
    s.send(1000.0, now=1000.0)
    s.send(990.0, now=1000.1)
    s.send(995.0, now=1000.2)
    s.send(980.0, now=1000.3)  # behind the run: the run so far was no live stream
    assert s.stale == 2
    s.send(981.0, now=1000.4)
    s.send(982.0, now=1000.5)
    s.send(983.0, now=1000.6)  # a fourth held reading: over max_held, refused at once
    assert s.stale == 3 and s.guard.held_total == 3


# ---- through Ingest -------------------------------------------------------------------------------
def build(window: float = WINDOW, **ingest: object) -> tuple[Ingest, list]:
    cfg = AgentConfig.model_validate({
        "detector": {"name": "statistical", "min_train_samples": 50}, "alarms": {"clear_after": 3},
        "ingest": {"replay_window_s": window, **ingest},
        "subscriptions": [{"topic": "plant/{line}/{machine}/{sensor}", "series": "{machine}/{sensor}"},
                          {"topic": "batch/{machine}", "series": "b/{machine}", "format": "json_batch"}],
    })
    events: list = []
    pipe = Pipeline(cfg, InlineTrainer(), events.append)
    return Ingest(cfg, pipe), events


def send(ing: Ingest, topic: str, value: float, ts: float) -> None:
    ing.handle(topic, json.dumps({"value": value, "ts": ts}).encode())


def test_a_replayed_spike_is_refused_and_does_not_raise_or_clear_again() -> None:
    ing, ev = build()
    t0 = time.time() - 1000
    topic = "plant/l1/m1/temp"
    for k, v in enumerate(np.random.default_rng(3).uniform(-1, 1, 50)):
        send(ing, topic, float(v), t0 + k)
    for k, v in enumerate([50, 0, 0, 0, 0.1]):
        send(ing, topic, v, t0 + 100 + k)
    assert [(e.state, e.ts) for e in ev] == [("raised", t0 + 100), ("cleared", t0 + 103)]
    send(ing, topic, 50.0, t0 + 100)  # the broker resends the spike and the reading after it
    send(ing, topic, 0.0, t0 + 101)
    for k, v in enumerate([0.2, 0.3, 0.1, 0.0]):
        send(ing, topic, v, t0 + 105 + k)
    assert [(e.state, e.ts) for e in ev] == [("raised", t0 + 100), ("cleared", t0 + 103)]
    assert ing.rejected == {"stale": 2} and ing.pipeline.series["m1/temp"].n_readings == 59


def test_two_topics_feeding_one_series_each_keep_their_clock_and_are_reported(caplog: pytest.LogCaptureFixture) -> None:
    # Issue 15: the default series template drops {line}; with line 2's clock 60 s behind,
    # every one of its readings was refused as stale.
    ing, _ = build()
    t0 = time.time() - 1000
    for k in range(100):
        send(ing, "plant/L1/m1/temp", 1.0, t0 + k)
        send(ing, "plant/L2/m1/temp", 2.0, t0 + k - 60)
    assert ing.rejected == {} and ing.readings == 200
    assert ing.shared == {"m1/temp": ["plant/L2/m1/temp"]}
    assert "is fed by more than one topic" in caplog.text


@pytest.mark.parametrize("seed", range(40))
def test_a_batch_takes_and_refuses_exactly_what_single_readings_would(seed: int) -> None:
    rng = np.random.default_rng(seed)
    window = float(rng.choice([0.0, 5.0, 50.0]))
    t0 = time.time() - 500
    ts = (t0 + np.cumsum(rng.choice([-60.0, -3.0, 0.0, 1.0, 2.0], size=int(rng.integers(1, 30))))).tolist()
    lead = float(rng.choice([t0 - 1000, t0]))
    single, _ = build(window)
    batch, _ = build(window)
    send(single, "plant/l/m/s", 0.0, lead)
    batch.handle("batch/m", json.dumps({"values": [0.0], "timestamps": [lead]}).encode())
    for k, t in enumerate(ts):
        send(single, "plant/l/m/s", float(k), t)
    batch.handle("batch/m", json.dumps({"values": [float(k) for k in range(len(ts))], "timestamps": ts}).encode())
    send(single, "plant/l/m/s", -1.0, t0 + 100)  # one newer reading settles what is held
    batch.handle("batch/m", json.dumps({"values": [-1.0], "timestamps": [t0 + 100]}).encode())
    a, b = single.pipeline.series["m/s"].recent(), batch.pipeline.series["b/m"].recent()
    assert a[1].tolist() == b[1].tolist()
    assert single.rejected == batch.rejected and single.readings == batch.readings
