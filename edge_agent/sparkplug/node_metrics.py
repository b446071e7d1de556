"""The edge node's own certificates and metrics: its NBIRTH, its NDEATH, and its NDATA.

* **NBIRTH**: ``bdSeq`` (the one of this CONNECT's will), ``Node Control/Rebirth`` = false
  (without an alias: tck-id-operational-behavior-data-commands-rebirth-name-aliases) and the
  agent's figures (``NODE_METRICS``), each with its name, alias, datatype and current value;
* **NDEATH**: ``bdSeq`` alone, no seq (tck-id-topics-ndeath-seq, tck-id-topics-ndeath-payload);
  the will of every CONNECT and what a clean MQTT 3.1.1 stop publishes;
* **NDATA**: the agent's figures that changed since last published, by alias.

Plain functions of the agent and the bdSeq, so what goes on the wire is built in one place
and the session logic in ``node.py`` (which gives these payloads their seq and sends them)
does not mix with it. The series' and machines' devices have their own modules
(``series_devices.py``, ``machine_devices.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edge_agent import __version__
from edge_agent.sparkplug import schema
from edge_agent.sparkplug.schema import BDSEQ, REBIRTH, DataType, Payload, now_ms

if TYPE_CHECKING:
    from edge_agent.agent import Agent

# Node metrics: (name, alias, datatype, value from the agent). Aliases below
# devices.FIRST_SERIES_ALIAS.
NODE_METRICS: list[tuple[str, int, int, Callable[[Agent], Any]]] = [
    ("Agent/Version", 1, DataType.String, lambda a: __version__),
    ("Agent/Healthy", 2, DataType.Boolean, lambda a: a.health()["ok"]),
    ("Agent/Outbox Depth", 3, DataType.Int64, lambda a: a.outbox.depth),
    ("Agent/Series", 4, DataType.Int64, lambda a: len(a.pipeline.series)),
    ("Agent/Alarms Active", 5, DataType.Int64, lambda a: sum(1 for s in a.pipeline.series.values() if s.active)),
    ("Agent/Alarms Raised", 6, DataType.Int64, lambda a: a.pipeline.n_raised),
    ("Agent/Readings Scored", 7, DataType.Int64, lambda a: a.pipeline.n_scored),
]


def ndeath(bdseq: int) -> bytes:
    ts = now_ms()
    p = Payload(timestamp=ts)  # no seq: tck-id-topics-ndeath-seq
    p.metrics.add(name=BDSEQ, timestamp=ts, datatype=DataType.Int64, long_value=bdseq)
    return p.SerializeToString()


def nbirth(agent: Agent, bdseq: int) -> tuple[Payload, dict[str, Any]]:
    """The NBIRTH (without its seq) and the node metric values it carries."""
    ts = now_ms()
    p = Payload(timestamp=ts)
    p.metrics.add(name=BDSEQ, timestamp=ts, datatype=DataType.Int64, long_value=bdseq)
    p.metrics.add(name=REBIRTH, timestamp=ts, datatype=DataType.Boolean, boolean_value=False)  # no alias
    sent: dict[str, Any] = {}
    for name, alias, dt, get in NODE_METRICS:
        value = get(agent)
        schema.set_value(p.metrics.add(name=name, alias=alias, timestamp=ts, datatype=dt), dt, value)
        sent[name] = value
    return p, sent


def ndata(agent: Agent, sent: dict[str, Any], ts: int) -> Payload:
    """An NDATA (without its seq) of the node metrics whose value is not ``sent``'s, which it
    updates; no metrics when nothing changed."""
    p = Payload(timestamp=ts)
    for name, alias, dt, get in NODE_METRICS:
        value = get(agent)
        if value != sent.get(name):
            schema.set_value(p.metrics.add(alias=alias, timestamp=ts), dt, value)
            sent[name] = value
    return p
