"""The per-series ring: what a fit trains on and what a plot shows, across the wrap-around."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.series import BLOCK, Series


@pytest.mark.parametrize("n", [0, 1, 15, 16, 100, 256, 700])
def test_recent_values_are_the_newest_readings_oldest_first(n: int) -> None:
    s = Series("s", 256)
    for i in range(n):
        s.append(float(i), 1000.0 + i)
    held = list(range(max(0, n - 256), n))
    assert s.recent_values().tolist() == [float(i) for i in held]
    assert s.recent_values(10).tolist() == [float(i) for i in held[-10:]]
    times, values = s.recent()
    assert values.tolist() == s.recent_values().tolist()
    # Timestamps: exact at every block start and at the newest reading (interpolated between).
    exact = [k for k, i in enumerate(held) if i % BLOCK == 0 or i == n - 1]
    assert [times[k] for k in exact] == [1000.0 + held[k] for k in exact]


def test_append_many_matches_append() -> None:
    a, b = Series("a", 64), Series("b", 64)
    vals = np.arange(150, dtype=np.float64)
    for v in vals:
        a.append(float(v), 5.0 + v)
    b.append_many(vals[:7], 5.0 + vals[:7])
    b.append_many(vals[7:], 5.0 + vals[7:])
    assert a.recent_values().tolist() == b.recent_values().tolist()
    assert a.recent()[0].tolist() == b.recent()[0].tolist()
    assert (a.count, a.pos, a.last_ts) == (b.count, b.pos, b.last_ts)
