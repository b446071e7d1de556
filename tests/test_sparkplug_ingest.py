"""Sparkplug B ingest, in process: payloads encoded by pysparkplug (an independent Sparkplug
implementation) go through ``SparkplugIngest.handle`` into a real ``Pipeline``.

The broker round trip (pysparkplug's MQTT client playing the PLC against a real mosquitto
and a real agent process) is in ``test_sparkplug_e2e.py``.
"""

from __future__ import annotations

import time
from typing import Any

import pysparkplug as psp
import pytest

from edge_agent.config import AgentConfig
from edge_agent.ingest import Ingest
from edge_agent.pipeline import InlineTrainer, Pipeline
from edge_agent.sparkplug.ingest import SparkplugIngest
from edge_agent.sparkplug.schema import Payload, parse_filter, parse_topic

G, N = "plant", "n1"
DT = psp.DataType


def ms(t: float) -> int:
    return int(t * 1000)


class Rig:
    """A real pipeline and ingest; ``ncmds`` collects what the agent would publish."""

    def __init__(self, clock: list[float] | None = None, **sparkplug_ingest: Any) -> None:
        cfg = AgentConfig.model_validate(
            {
                "subscriptions": [{"format": "sparkplug_b"}],
                "detector": {"name": "statistical", "min_train_samples": 20},
                "sparkplug": {"ingest": sparkplug_ingest},
                "ingest": {"reject_log_interval_s": 0},
            }
        )
        self.events: list[Any] = []
        self.pipeline = Pipeline(cfg, InlineTrainer(), self.events.append)
        self.ingest = Ingest(cfg, self.pipeline)
        self.ncmds: list[tuple[str, bytes]] = []
        self.now = clock or [1000.0]
        self.sp = SparkplugIngest(cfg, self.pipeline, self.ingest, publish=lambda t, p: self.ncmds.append((t, p)), own=("plant", "agent"), clock=lambda: self.now[0])
        self.seq = 0

    def send(self, mtype: str, payload: Any, device: str | None = None, node: str = N) -> None:
        topic = f"spBv1.0/{G}/{mtype}/{node}" + (f"/{device}" if device else "")
        raw = payload if isinstance(payload, bytes) else payload.encode(include_dtypes=mtype.endswith("BIRTH"))
        self.sp.handle(topic, raw)

    def next_seq(self) -> int:
        self.seq = (self.seq + 1) % 256
        return self.seq

    def births(self, t0: float, bdseq: int = 0) -> None:
        self.seq = 0
        self.send("NBIRTH", psp.NBirth(ms(t0), 0, (
            psp.Metric(ms(t0), "bdSeq", DT.INT64, value=bdseq),
            psp.Metric(ms(t0), "Node Control/Rebirth", DT.BOOLEAN, value=False),
            psp.Metric(ms(t0), "Supply/Voltage", DT.FLOAT, value=230.0, alias=1),
        )))
        self.send("DBIRTH", psp.DBirth(ms(t0), self.next_seq(), (
            psp.Metric(ms(t0), "Motor/Current", DT.DOUBLE, value=1.0, alias=10),
            psp.Metric(ms(t0), "Temp", DT.INT16, value=-5, alias=11),
            psp.Metric(ms(t0), "Mode", DT.STRING, value="auto", alias=12),
            psp.Metric(ms(t0), "Running", DT.BOOLEAN, value=True, alias=13),
        )), device="pump1")

    def ddata(self, t: float, *metrics: psp.Metric, device: str = "pump1", seq: int | None = None) -> None:
        self.send("DDATA", psp.DData(ms(t), self.next_seq() if seq is None else seq, metrics), device=device)

    def rejected(self, reason: str) -> int:
        return self.ingest.rejected.get(reason, 0)


def test_births_then_ddata_by_alias_are_scored_under_the_right_series() -> None:
    rig = Rig()
    t0 = time.time() - 100
    rig.births(t0)
    # Birth values are readings too (the node's current values).
    assert rig.pipeline.series["plant/n1/pump1/Motor/Current"].last_value == 1.0
    assert rig.pipeline.series["plant/n1/pump1/Temp"].last_value == -5.0  # Int16 two's complement
    assert rig.pipeline.series["plant/n1/Supply/Voltage"].last_value == 230.0  # node metric: no device part
    for k in range(1, 30):
        # By alias only, without name or datatype: what the specification asks of DDATA.
        rig.ddata(t0 + k, psp.Metric(ms(t0 + k), None, DT.DOUBLE, value=1.0 + 0.01 * k, alias=10),
                  psp.Metric(ms(t0 + k) + 500, None, DT.INT16, value=-k, alias=11))
    cur = rig.pipeline.series["plant/n1/pump1/Motor/Current"]
    temp = rig.pipeline.series["plant/n1/pump1/Temp"]
    assert cur.n_readings == 30 and cur.last_value == pytest.approx(1.29)
    assert temp.last_value == -29.0
    assert temp.last_ts == pytest.approx(t0 + 29 + 0.5)  # the metric's own timestamp
    assert cur.model is not None  # trained after 20 readings
    # The String and Boolean metrics were declared and are counted as not numeric, not scored.
    assert "plant/n1/pump1/Mode" not in rig.pipeline.series
    assert rig.ingest.readings == 3 + 2 * 29
    rig.ddata(t0 + 31, psp.Metric(ms(t0 + 31), None, DT.STRING, value="manual", alias=12),
              psp.Metric(ms(t0 + 31), None, DT.BOOLEAN, value=False, alias=13))
    assert rig.rejected("non_numeric") == 4  # 2 in the DBIRTH, 2 here
    assert not rig.ncmds


def test_ddata_by_name_and_unknown_metrics() -> None:
    rig = Rig()
    t0 = time.time() - 100
    rig.births(t0)
    rig.ddata(t0 + 1, psp.Metric(ms(t0 + 1), "Motor/Current", DT.DOUBLE, value=2.5))
    assert rig.pipeline.series["plant/n1/pump1/Motor/Current"].last_value == 2.5
    rig.ddata(t0 + 2, psp.Metric(ms(t0 + 2), None, DT.DOUBLE, value=2.5, alias=999))
    assert rig.rejected("unknown_metric") == 1


def test_data_before_birth_requests_one_rebirth_rate_limited() -> None:
    rig = Rig(rebirth_interval_s=30)
    t0 = time.time() - 100
    for k in range(5):
        rig.ddata(t0 + k, psp.Metric(ms(t0 + k), None, DT.DOUBLE, value=1.0, alias=10))
    assert rig.rejected("unborn") == 5
    assert len(rig.ncmds) == 1
    topic, raw = rig.ncmds[0]
    assert topic == "spBv1.0/plant/NCMD/n1"
    cmd = psp.NCmd.decode(raw)  # the independent implementation reads our request
    assert [(m.name, m.value) for m in cmd.metrics] == [("Node Control/Rebirth", True)]
    assert not Payload.FromString(raw).HasField("seq")  # tck-id-payloads-ncmd-seq
    rig.now[0] += 31
    rig.ddata(t0 + 9, psp.Metric(ms(t0 + 9), None, DT.DOUBLE, value=1.0, alias=10))
    assert len(rig.ncmds) == 2
    # The node answers with its births: data flows.
    rig.births(t0 + 10)
    rig.ddata(t0 + 11, psp.Metric(ms(t0 + 11), None, DT.DOUBLE, value=3.0, alias=10))
    assert rig.pipeline.series["plant/n1/pump1/Motor/Current"].last_value == 3.0


def test_sequence_gap_drops_the_node_and_requests_a_rebirth() -> None:
    rig = Rig()
    t0 = time.time() - 100
    rig.births(t0)
    rig.ddata(t0 + 1, psp.Metric(ms(t0 + 1), None, DT.DOUBLE, value=1.5, alias=10))
    rig.next_seq()  # a message lost
    rig.ddata(t0 + 2, psp.Metric(ms(t0 + 2), None, DT.DOUBLE, value=9.0, alias=10))
    assert rig.rejected("sequence_gap") == 1
    assert rig.pipeline.series["plant/n1/pump1/Motor/Current"].last_value == 1.5  # the gap message is not scored
    rig.ddata(t0 + 3, psp.Metric(ms(t0 + 3), None, DT.DOUBLE, value=9.0, alias=10))
    assert rig.rejected("unborn") == 1
    assert [t for t, _ in rig.ncmds] == ["spBv1.0/plant/NCMD/n1"]  # one request, not one per message


def test_seq_wraps_at_255() -> None:
    rig = Rig()
    t0 = time.time() - 1000
    rig.births(t0)
    for k in range(300):
        rig.ddata(t0 + 1 + k, psp.Metric(ms(t0 + 1 + k), None, DT.DOUBLE, value=1.0, alias=10))
    assert rig.rejected("sequence_gap") == 0
    assert rig.pipeline.series["plant/n1/pump1/Motor/Current"].n_readings == 301


def test_rebirth_requests_are_capped_over_all_nodes() -> None:
    rig = Rig(rebirth_requests_per_s=5)
    t0 = time.time() - 100
    for i in range(100):  # forged or real, 100 unknown nodes at once
        rig.send("NDATA", psp.NData(ms(t0), 1, (psp.Metric(ms(t0), None, DT.DOUBLE, value=1.0, alias=1),)), node=f"x{i}")
    assert len(rig.ncmds) == 5
    assert rig.sp.rebirths_suppressed == 95
    assert {t for t, _ in rig.ncmds} == {f"spBv1.0/plant/NCMD/x{i}" for i in range(5)}


def test_ndeath_marks_series_stale_and_raises_or_clears_nothing() -> None:
    rig = Rig()
    t0 = time.time() - 100
    rig.births(t0, bdseq=7)
    for k in range(1, 25):
        rig.ddata(t0 + k, psp.Metric(ms(t0 + k), None, DT.DOUBLE, value=1.0 + 0.01 * (k % 3), alias=10))
    rig.ddata(t0 + 25, psp.Metric(ms(t0 + 25), None, DT.DOUBLE, value=50.0, alias=10))
    assert [e.state for e in rig.events] == ["raised"]
    s = rig.pipeline.series["plant/n1/pump1/Motor/Current"]
    assert s.state == "alarm"
    # A late will of an older session (bdSeq 6) is ignored.
    rig.send("NDEATH", psp.NDeath(ms(t0 + 26), psp.Metric(ms(t0 + 26), "bdSeq", DT.INT64, value=6)))
    assert not s.stale and rig.sp.deaths_ignored == 1
    rig.send("NDEATH", psp.NDeath(ms(t0 + 26), psp.Metric(ms(t0 + 26), "bdSeq", DT.INT64, value=7)))
    assert s.stale and s.active and s.state == "alarm"  # the open alarm stays open
    assert rig.pipeline.series["plant/n1/Supply/Voltage"].state == "stale"
    assert [e.state for e in rig.events] == ["raised"]
    assert rig.sp.nodes == {} and rig.sp.entries == 0
    # Born again: not stale any more.
    rig.births(t0 + 27, bdseq=8)
    assert not s.stale and rig.pipeline.series["plant/n1/Supply/Voltage"].state != "stale"


def test_ddeath_marks_only_that_device_stale() -> None:
    rig = Rig()
    t0 = time.time() - 100
    rig.births(t0)
    rig.send("DDEATH", psp.DDeath(ms(t0 + 1), rig.next_seq()), device="pump1")
    assert rig.pipeline.series["plant/n1/pump1/Temp"].state == "stale"
    assert rig.pipeline.series["plant/n1/Supply/Voltage"].state != "stale"
    rig.ddata(t0 + 2, psp.Metric(ms(t0 + 2), None, DT.DOUBLE, value=1.0, alias=10))
    assert rig.rejected("unborn") == 1 and len(rig.ncmds) == 1


def test_hostile_births_are_bounded() -> None:
    rig = Rig(max_metrics_per_birth=1000, max_metrics=1500, max_nodes=3)
    t0 = time.time() - 100
    many = tuple(psp.Metric(ms(t0), f"m{i}", DT.DOUBLE, value=1.0, alias=i) for i in range(1001))
    rig.send("NBIRTH", psp.NBirth(ms(t0), 0, many))
    assert rig.rejected("too_many_metrics") == 1 and rig.sp.entries == 0 and not rig.sp.nodes
    for i in range(2):  # 2 x 700 metrics fit in 1500, a third does not
        rig.send("NBIRTH", psp.NBirth(ms(t0), 0, many[:700]), node=f"n{i}")
    rig.send("NBIRTH", psp.NBirth(ms(t0), 0, many[:700]), node="n2")
    assert rig.rejected("too_many_metrics") == 2 and len(rig.sp.nodes) == 2
    assert rig.sp.entries <= 1500
    rig.send("NBIRTH", psp.NBirth(ms(t0), 0, many[:1]), node="n3")
    rig.send("NBIRTH", psp.NBirth(ms(t0), 0, many[:1]), node="n4")
    assert rig.rejected("too_many_nodes") == 1
    # A rebirth of a known node replaces its metrics: the count does not grow.
    before = rig.sp.entries
    rig.send("NBIRTH", psp.NBirth(ms(t0), 0, many[:700]), node="n0")
    assert rig.sp.entries == before


def test_bad_input_is_counted_never_raised() -> None:
    rig = Rig()
    rig.sp.handle("spBv1.0/plant/NDATA/n1", b"\xff\xff\xff not protobuf")
    assert rig.rejected("bad_protobuf") == 1
    rig.sp.handle("spBv1.0/plant/NDATA/n1", b"x" * (rig.sp.max_payload + 1))
    assert rig.rejected("too_large") == 1
    rig.sp.handle("spBv1.0/plant/BOGUS/n1", b"")
    assert rig.rejected("unknown_topic") == 1
    # Deeply nested property sets: protobuf's recursion limit, not a crash.
    p = Payload(timestamp=1)
    ps = p.metrics.add(name="x").properties
    for _ in range(200):
        v = ps.values.add()
        ps.keys.append("k")
        ps = v.propertyset_value
    raw = p.SerializeToString()
    rig.sp.handle("spBv1.0/plant/NBIRTH/n1", raw)
    assert rig.rejected("bad_protobuf") + rig.rejected("bad_birth") >= 2
    # Our own edge node's output and commands to nodes are not readings.
    received = rig.ingest.received
    rig.sp.handle("spBv1.0/plant/DDATA/agent/m1", b"")
    rig.sp.handle("spBv1.0/plant/NCMD/n1", b"")
    assert rig.ingest.received == received


def test_subscription_filter_and_topic_forms() -> None:
    assert parse_filter("spBv1.0/{group}/+/{node}/#") == "spBv1.0/+/+/+/#"
    assert parse_filter("spBv1.0/Plant1/+/+/#") == "spBv1.0/Plant1/+/+/#"
    for bad in ("spBv1.0/a/b/c/#", "spBv1.0/+/+/+", "plant/+/+/+/#", "spBv1.0/a#/+/+/#"):
        with pytest.raises(ValueError):
            parse_filter(bad)
    assert parse_topic("spBv1.0/g/DDATA/n/d").device == "d"
    assert parse_topic("spBv1.0/g/NDATA/n").device is None
    assert parse_topic("spBv1.0/g/DDATA/n") is None  # device messages need a device
    assert parse_topic("spBv1.0/g/NDATA/n/d") is None
    assert parse_topic("spBv1.0/STATE/host") is None
