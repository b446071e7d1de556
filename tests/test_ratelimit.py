"""The rate limits for what an outsider can trigger: log lines, log filters, answers."""

from __future__ import annotations

import logging

from edge_agent.ratelimit import RateLimitedLog, RateLimitFilter, TokenBucket, clip


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_rate_limited_log_writes_one_line_per_interval_and_counts_the_rest(caplog) -> None:
    clock = Clock()
    rl = RateLimitedLog(logging.getLogger("t.rl"), 10.0, clock=clock)
    with caplog.at_level(logging.WARNING, "t.rl"):
        assert [rl.warning("refused %s", i) for i in range(1000)].count(True) == 1
        clock.t += 10.0
        assert rl.warning("refused %s", "x")
    assert [r.getMessage() for r in caplog.records] == ["refused 0", "refused x (and 999 more like it since the last such line)"]


def test_rate_limit_filter_per_kind_of_message(caplog) -> None:
    clock = Clock()
    lg = logging.getLogger("t.filter")
    lg.addFilter(RateLimitFilter(10.0, clock=clock))
    with caplog.at_level(logging.ERROR, "t.filter"):
        for _ in range(500):
            lg.error("socket.accept() out of system resource\nsocket: <fd=%d>", 10)
            lg.error("another kind")
        clock.t += 11.0
        lg.error("socket.accept() out of system resource\nsocket: <fd=%d>", 11)
    msgs = [r.getMessage().split("\n")[0] for r in caplog.records]
    assert msgs.count("another kind") == 1
    assert msgs.count("socket.accept() out of system resource") == 2
    assert "[499 more like this in the last 10 s, not logged]" in caplog.records[-1].getMessage()


def test_token_bucket_burst_then_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(2.0, 5, clock=clock)
    assert [bucket.take() for _ in range(10)].count(True) == 5
    clock.t += 1.0
    assert [bucket.take() for _ in range(10)].count(True) == 2
    clock.t += 100.0
    assert [bucket.take() for _ in range(10)].count(True) == 5
    assert not TokenBucket(0.0, 0, clock=clock).take()


def test_clip_bounds_outside_text() -> None:
    assert clip("abc") == "abc"
    long = clip("A" * 65_000)
    assert len(long) < 250 and long.endswith("...(65000 chars)")
