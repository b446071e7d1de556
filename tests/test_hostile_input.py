"""Hostile input at the point where a reading enters (``Ingest.handle``), in-process, with the
real pipeline, an inline trainer and a real model store on disk.

Properties: handle() never raises; every message is either a reading or counted under a
reason (never ``internal_error``, which means a bug); whatever the topic, nothing is written
outside the state directory and every store path stays under ``state_dir/models``.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest
from faults import PAYLOAD_CASES, hostile_topics, in_process_only_topics, materialise, tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.config import AgentConfig
from edge_agent.ingest import Ingest
from edge_agent.model_store import ModelStore
from edge_agent.pipeline import InlineTrainer, Pipeline

MIN_TRAIN = 5

SUBSCRIPTIONS = [
    {"topic": "plant/{line}/{machine}/{sensor}", "series": "{machine}/{sensor}", "format": "json"},
    {"topic": "raw/{path*}", "series": "{path}", "format": "json"},
    {"topic": "num/{path*}", "series": "num/{path}", "format": "number"},
    {"topic": "batch/{path*}", "series": "batch/{path}", "format": "json_batch"},
]


def build(state_dir: str, **ingest: object) -> tuple[Ingest, ModelStore, list]:
    cfg = AgentConfig.model_validate(
        {
            "state_dir": state_dir,
            "detector": {"name": "statistical", "min_train_samples": MIN_TRAIN},
            "subscriptions": SUBSCRIPTIONS,
            "ingest": {"max_batch": 1000, **ingest},
            "alarms": {"clear_after": 2},
        }
    )
    store = ModelStore(cfg.state_path("models"), fsync=False)
    events: list = []
    pipe = Pipeline(cfg, InlineTrainer(), events.append, store=store)
    return Ingest(cfg, pipe), store, events


def counted(ing: Ingest) -> tuple[int, int]:
    return ing.readings, sum(ing.rejected.values())


def handle_and_check(ing: Ingest, topic: str, payload: bytes) -> None:
    readings, rejected = counted(ing)
    ing.handle(topic, payload)  # must not raise
    r2, j2 = counted(ing)
    assert r2 > readings or j2 > rejected, f"message neither read nor counted: {topic[:80]!r} {payload[:80]!r}"
    assert "internal_error" not in ing.rejected, f"a bug surfaced as internal_error on {topic[:80]!r} {payload[:120]!r}"


# ---- property tests -------------------------------------------------------------------------
SEGMENT = st.one_of(st.sampled_from(["..", ".", "", "%2e", "~", "$SYS", "m1", "temp"]), st.text(max_size=12))
TOPICS = st.one_of(
    st.text(max_size=40),
    st.builds(lambda a, b, c: f"plant/{a}/{b}/{c}", SEGMENT, SEGMENT, SEGMENT),
    st.builds(lambda prefix, segs: prefix + "/".join(segs), st.sampled_from(["raw/", "num/", "batch/"]), st.lists(SEGMENT, max_size=6)),
)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**300, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
)
JSON_TREES = st.recursive(SCALARS, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4), max_leaves=20)
OBJECTS = st.fixed_dictionaries(
    {},
    optional={
        "value": JSON_TREES, "ts": JSON_TREES, "values": st.one_of(JSON_TREES, st.lists(SCALARS, max_size=8)),
        "timestamps": st.one_of(JSON_TREES, st.lists(SCALARS, max_size=8)), "start": JSON_TREES, "interval_ms": JSON_TREES,
    },
)
PAYLOADS = st.one_of(
    st.binary(max_size=200),
    JSON_TREES.map(lambda t: json.dumps(t, allow_nan=True).encode()),
    OBJECTS.map(lambda o: json.dumps(o, allow_nan=True).encode()),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda f: repr(f).encode()),
    st.text(max_size=30).map(lambda s: s.encode("utf-8", "surrogatepass")),
)


@pytest.mark.timeout(120)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(messages=st.lists(st.tuples(TOPICS, PAYLOADS), min_size=1, max_size=20))
def test_random_messages_never_raise_and_are_always_accounted(tmp_path: Path, messages: list[tuple[str, bytes]]) -> None:
    ing, _, _ = build(str(tmp_path / "state"))
    for topic, payload in messages:
        handle_and_check(ing, topic, payload)
    assert ing.received == len(messages)


@pytest.mark.timeout(120)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(topic=TOPICS, values=st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=MIN_TRAIN, max_size=MIN_TRAIN + 3))
def test_random_topics_that_train_stay_inside_the_store(tmp_path_factory: pytest.TempPathFactory, topic: str, values: list[float]) -> None:
    base = tmp_path_factory.mktemp("prop")
    ing, store, _ = build(str(base / "state"))
    before = tree(base)
    now = time.time()
    for i, v in enumerate(values):
        handle_and_check(ing, topic, json.dumps({"value": v, "ts": now - len(values) + i}).encode() if not topic.startswith(("num/", "batch/")) else (repr(v).encode() if topic.startswith("num/") else json.dumps({"values": [v]}).encode()))
    new = tree(base) - before
    assert all(p == "state" or p.startswith("state/models") for p in new), sorted(new)[:5]
    root = (base / "state" / "models").resolve()
    for sid in ing.pipeline.series:
        assert store.series_dir(sid).resolve().parent == root


# ---- the fuzz corpus, case by case ---------------------------------------------------------------
@pytest.mark.parametrize("name,payload,reason", PAYLOAD_CASES, ids=[c[0] for c in PAYLOAD_CASES])
def test_corpus_payload_is_read_or_rejected_with_its_reason(tmp_path: Path, name: str, payload: bytes, reason: str | None) -> None:
    ing, _, _ = build(str(tmp_path / "state"))
    handle_and_check(ing, "plant/l1/m1/temp", materialise(payload))
    if reason is None:
        assert ing.rejected == {} and ing.readings == 1
        assert math.isfinite(ing.pipeline.series["m1/temp"].last_value)
    else:
        assert ing.rejected == {reason: 1} and ing.readings == 0


BATCH_CASES = [
    (b'{"values": [1, 2], "timestamps": [@NOW@, ' + b"9" * 400 + b"]}", "ts_out_of_range"),
    (b'{"values": [1, 2], "start": ' + b"9" * 400 + b', "interval_ms": 1}', "ts_out_of_range"),
    (b'{"values": [1, 2], "start": @NOW@, "interval_ms": NaN}', "bad_batch"),
    (b'{"values": [1, 2], "start": @NOW@, "interval_ms": 1e300}', "bad_batch"),
    (b'{"values": [1, ' + b"9" * 400 + b"]}", "non_finite"),
    (b'{"values": [NaN, Infinity]}', "non_finite"),
    (b'{"values": [[1]]}', "not_a_number"),
    (b'{"values": "12"}', "bad_batch"),
    (b'{"values": [true]}', "not_a_number"),
]


@pytest.mark.parametrize("payload,reason", BATCH_CASES)
def test_corpus_batches(tmp_path: Path, payload: bytes, reason: str) -> None:
    ing, _, _ = build(str(tmp_path / "state"))
    handle_and_check(ing, "batch/m1", materialise(payload))
    assert set(ing.rejected) == {reason} and ing.readings == 0


NUMBER_CASES = [(b"1e999", "non_finite"), (b"-inf", "non_finite"), (b"NaN", "non_finite"), (b"\xff\xfe", "not_a_number"),
                (b"1" * 65, "not_a_number"), (b"", "empty"), (b"0x10", "not_a_number"), (b"\x00", "not_a_number")]


@pytest.mark.parametrize("payload,reason", NUMBER_CASES)
def test_corpus_numbers(tmp_path: Path, payload: bytes, reason: str) -> None:
    ing, _, _ = build(str(tmp_path / "state"))
    handle_and_check(ing, "num/m1", payload)
    assert ing.rejected == {reason: 1}


# ---- series-id traversal -------------------------------------------------------------------------
def test_hostile_topics_train_inside_the_state_dir_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every hostile topic gets enough readings to train a model (relative state dir, so a
    relative escape would land in the working directory), and nothing appears outside it."""
    outer = tmp_path.parent
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    before = tree(outer)
    ing, store, _ = build("state")
    topics = hostile_topics() + in_process_only_topics()
    # Timestamps rise across topics: several hostile topics map to one series id, and a reading
    # older than its series' newest would be refused as stale.
    ts = time.time() - 10 - len(topics) * (MIN_TRAIN + 2)
    for topic in topics:
        for i in range(MIN_TRAIN + 2):
            ts += 1
            handle_and_check(ing, topic, json.dumps({"value": float(i % 3), "ts": ts}).encode())
    new = tree(outer) - before
    prefix = f"{tmp_path.name}/cwd/state"
    stray = [p for p in new if not (p in (tmp_path.name + "/cwd", prefix, prefix + "/models") or p.startswith(prefix + "/models/"))]
    assert not stray, stray[:10]
    models_root = (work / "state" / "models").resolve()
    trained = {sid for sid, s in ing.pipeline.series.items() if s.model is not None}
    for sid in trained:
        d = store.series_dir(sid).resolve()
        assert d.parent == models_root and (d / "ACTIVE").exists()
    # Every accepted topic trained; the rest were refused as bad series ids, not crashed on.
    assert set(store.list_series()) == trained
    refused = 0
    for topic in topics:
        r = ing.route(topic)
        if r is None:
            refused += 1
        else:
            assert r[1] in trained, f"{topic[:80]!r} was accepted but did not train"
    assert refused >= 5  # NUL, 64 KB names, empty segments...
    assert ing.rejected.get("unknown_topic", 0) == refused * (MIN_TRAIN + 2)
    assert set(ing.rejected) <= {"unknown_topic"}, ing.rejected
    assert "../../etc/passwd" in trained and ".." in {s.split("/")[0] for s in trained}
    assert not any(os.sep + "passwd" in str(p) for p in models_root.rglob("*") if p.name == "passwd")


def test_stale_readings_are_counted_as_refused_not_as_readings(tmp_path: Path) -> None:
    ing, _, _ = build(str(tmp_path / "state"))
    t = time.time() - 100
    ing.handle("raw/m1", json.dumps({"value": 1.0, "ts": t + 10}).encode())
    ing.handle("raw/m1", json.dumps({"value": 1.0, "ts": t + 5}).encode())  # older than the newest: held...
    ing.handle("raw/m1", json.dumps({"value": 1.0, "ts": t + 11}).encode())  # ...and refused: the stream went on
    ing.handle("batch/m2", json.dumps({"values": [1, 2, 3, 4], "timestamps": [t + 3, t + 4, t + 1, t + 5]}).encode())
    assert ing.readings == 2 + 3 and ing.rejected == {"stale": 2}
    assert ing.pipeline.series["m1"].n_readings == 2 and ing.pipeline.series["batch/m2"].n_readings == 3
