from __future__ import annotations

import json
import time

import numpy as np
import pytest

from edge_agent.config import AgentConfig
from edge_agent.ingest import Ingest
from edge_agent.pipeline import InlineTrainer, Pipeline


def make_ingest(**sub: object) -> tuple[Ingest, list]:
    cfg = AgentConfig.model_validate(
        {
            "detector": {"name": "statistical", "min_train_samples": 20},
            "subscriptions": [{"topic": "plant/{line}/{machine}/{sensor}", **sub}],
            "ingest": {"max_payload_bytes": 4096, "max_batch": 100},
        }
    )
    events: list = []
    pipe = Pipeline(cfg, InlineTrainer(), events.append)
    return Ingest(cfg, pipe), events


def last(ing: Ingest, sid: str = "m1/temp") -> tuple[float, float]:
    s = ing.pipeline.series[sid]
    return s.last_value, s.last_ts


def test_plain_number_gets_receive_time() -> None:
    ing, _ = make_ingest(format="number")
    before = time.time()
    ing.handle("plant/l1/m1/temp", b"21.5")
    value, ts = last(ing)
    assert value == 21.5 and before <= ts <= time.time()


@pytest.mark.parametrize(
    "ts_raw,unit,expected",
    [
        (1700000000.5, "auto", 1700000000.5),
        (1700000000500, "auto", 1700000000.5),
        (1700000000500, "ms", 1700000000.5),
        (1700000000, "s", 1700000000.0),
        ("2023-11-14T22:13:20Z", "auto", 1700000000.0),
        ("2023-11-14T23:13:20+01:00", "iso", 1700000000.0),
    ],
)
def test_json_object_timestamps(ts_raw: object, unit: str, expected: float, monkeypatch: pytest.MonkeyPatch) -> None:
    ing, _ = make_ingest(format="json", ts_unit=unit)
    ing.limits = type(ing.limits)(1e12, 1e12)  # these fixed timestamps are in the past
    ing.handle("plant/l1/m1/temp", json.dumps({"value": 3, "ts": ts_raw}).encode())
    assert ing.rejected == {}
    assert last(ing) == (3.0, pytest.approx(expected))


def test_json_custom_fields_and_missing_ts() -> None:
    ing, _ = make_ingest(format="json", value_field="v", ts_field="t")
    ing.handle("plant/l1/m1/temp", b'{"v": -4.25}')
    assert last(ing)[0] == -4.25
    ing.handle("plant/l1/m1/temp", b'{"value": 1}')
    assert ing.rejected == {"missing_value": 1}


def test_batches_with_timestamps_and_with_start_interval() -> None:
    ing, _ = make_ingest(format="json_batch")
    now = time.time()
    ing.handle("plant/l1/m1/temp", json.dumps({"values": [1, 2, 3], "timestamps": [now - 2, now - 1, now]}).encode())
    ing.handle("plant/l1/m1/temp", json.dumps({"values": [4, 5], "start": now, "interval_ms": 500}).encode())
    s = ing.pipeline.series["m1/temp"]
    ts, values = s.recent()
    assert list(values) == [1, 2, 3, 4, 5]
    assert ts[-1] == pytest.approx(now + 0.5, abs=0.3)
    assert ing.readings == 5 and ing.rejected == {}


def test_batch_drops_non_finite_values_one_by_one() -> None:
    ing, _ = make_ingest(format="json_batch")
    ing.handle("plant/l1/m1/temp", b'{"values": [1, NaN, 2, Infinity, 3]}')
    assert list(ing.pipeline.series["m1/temp"].recent()[1]) == [1, 2, 3]
    assert ing.rejected == {"non_finite": 2}


def test_batch_is_scored_vectorised_like_single_readings() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, 400)  # bounded noise: no reading of it can reach 3 sigma
    x[100], x[300] = 25, -25
    single, ev1 = make_ingest(format="json")
    batch, ev2 = make_ingest(format="json_batch")
    now = time.time()
    ts = now - 400 + np.arange(400)
    for v, t in zip(x, ts, strict=True):
        single.handle("plant/l1/m1/temp", json.dumps({"value": float(v), "ts": float(t)}).encode())
    for i in range(0, 400, 50):
        batch.handle("plant/l1/m1/temp", json.dumps({"values": x[i:i + 50].tolist(), "timestamps": ts[i:i + 50].tolist()}).encode())
    assert [(e.state, e.ts) for e in ev1] == [(e.state, e.ts) for e in ev2]
    assert [e.state for e in ev1] == ["raised", "cleared", "raised", "cleared"]


BAD = [
    ("json", b"", "empty"),
    ("json", b"{not json", "bad_json"),
    ("json", b"[1, 2]", "not_an_object"),
    ("json", b'{"value": NaN}', "non_finite"),
    ("json", b'{"value": Infinity}', "non_finite"),
    ("json", b'{"value": -Infinity}', "non_finite"),
    ("json", b'{"value": 1e999}', "non_finite"),
    ("json", b'{"value": "21.5"}', "not_a_number"),
    ("json", b'{"value": true}', "not_a_number"),
    ("json", b'{"value": null}', "not_a_number"),
    ("json", b'{"value": {"x": 1}}', "not_a_number"),
    ("json", b'{"value": 1, "ts": "yesterday"}', "bad_timestamp"),
    ("json", b'{"value": 1, "ts": 1}', "ts_out_of_range"),
    ("json", b'{"value": 1, "ts": 99999999999999}', "ts_out_of_range"),
    ("json", b'{"value": 1' + b"\xff\xfe" + b"}", "bad_utf8"),
    ("json", b"[" * 100000 + b"]" * 100000, "too_large"),
    ("json", b'{"value": ' + b"9" * 5000 + b"}", "too_large"),
    ("number", b"abc", "not_a_number"),
    ("number", b"nan", "non_finite"),
    ("number", b"inf", "non_finite"),
    ("number", b"", "empty"),
    ("json_batch", b'{"values": []}', "empty"),
    ("json_batch", b'{"values": [1, "2"]}', "not_a_number"),
    ("json_batch", b'{"values": [1, 2], "timestamps": [1]}', "bad_batch"),
    ("json_batch", b'{"values": ' + json.dumps(list(range(101))).encode() + b"}", "batch_too_large"),
    ("json_batch", b'{"values": 5}', "bad_batch"),
]


@pytest.mark.parametrize("fmt,payload,reason", BAD)
def test_bad_input_is_rejected_with_a_reason(fmt: str, payload: bytes, reason: str) -> None:
    ing, _ = make_ingest(format=fmt)
    ing.handle("plant/l1/m1/temp", payload)
    assert ing.rejected == {reason: 1}
    assert "m1/temp" not in ing.pipeline.series or ing.pipeline.series["m1/temp"].n_readings == 0


def test_deeply_nested_json_within_size_limit_is_rejected_not_crashing() -> None:
    ing, _ = make_ingest(format="json")
    ing.max_payload = 10_000_000
    ing.handle("plant/l1/m1/temp", b"[" * 1_000_000 + b"]" * 1_000_000)
    assert sum(ing.rejected.values()) == 1


def test_unknown_topics_are_counted() -> None:
    ing, _ = make_ingest()
    ing.handle("other/topic", b"1")
    ing.handle("other/topic", b"1")
    assert ing.rejected == {"unknown_topic": 2}


def test_values_beyond_the_physical_range_are_rejected_with_a_reason() -> None:
    # Issue 15, finding 5: one finite 1e155+ reading overflowed detector state (the variance).
    ing, _ = make_ingest(format="json")
    ing.handle("plant/l1/m1/temp", b'{"value": 18446744073709551615}')  # a 64-bit counter's largest
    assert last(ing)[0] == 2.0**64 and ing.rejected == {}
    for payload in (b'{"value": 1.5e300}', b'{"value": -1e21}'):
        ing.handle("plant/l1/m1/temp", payload)
    assert ing.rejected == {"out_of_range": 2}
    num, _ = make_ingest(format="number", max_abs_value=100.0)  # per subscription
    num.handle("plant/l1/m1/temp", b"100")
    num.handle("plant/l1/m1/temp", b"100.5")
    num.handle("plant/l1/m1/temp", b"nan")
    assert num.rejected == {"out_of_range": 1, "non_finite": 1}
    batch, _ = make_ingest(format="json_batch")
    batch.handle("plant/l1/m1/temp", b'{"values": [1, 1e200, NaN, 2, -1e300]}')
    assert batch.rejected == {"out_of_range": 2, "non_finite": 1}
    assert batch.pipeline.series["m1/temp"].recent_values().tolist() == [1.0, 2.0]
    batch.handle("plant/l1/m1/temp", b'{"values": [1e200, -1e300]}')
    assert batch.rejected == {"out_of_range": 3, "non_finite": 1}
