"""Sparkplug B, both directions (docs/sparkplug.md).

- ``schema``: the published ``sparkplug_b.proto`` (generated ``sparkplug_b_pb2.py``), topic
  forms, datatypes and values;
- ``ingest``: readings from Sparkplug edge nodes (subscriptions with ``format: sparkplug_b``);
- ``node``: the agent as a Sparkplug edge node (``sparkplug.enabled``): its session, with
  ``node_metrics`` (its own NBIRTH, NDEATH and NDATA), ``series_devices`` (the series'
  DBIRTHs, alarm DDATA and changes), ``devices`` (which series a device holds, and the
  metrics declared for each), ``machine_devices`` (machines as devices) and ``bdseq`` (the
  birth/death counter kept in the state directory).

``install(agent)`` is the one place the agent calls: it registers the ingest handler for
``spBv1.0/`` topics on the agent's broker connection and starts the edge node, which has a
connection of its own (see ``node.py`` for why).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edge_agent.config import AgentConfig

if TYPE_CHECKING:
    from edge_agent.agent import Agent


def wanted(cfg: AgentConfig) -> bool:
    return cfg.sparkplug.enabled or any(sc.format == "sparkplug_b" for sc in cfg.subscriptions)


class Sparkplug:
    """What ``install`` set up: ``ingest`` and/or ``node`` (None when not configured)."""

    def __init__(self, ingest: Any, node: Any) -> None:
        self.ingest = ingest
        self.node = node

    def tasks(self) -> list[Any]:
        return self.node.tasks() if self.node is not None else []

    def stats(self) -> dict[str, Any]:
        """For /healthcheck: the ingest's nodes and rebirth requests, the edge node's session."""
        return {
            "ingest": self.ingest.stats() if self.ingest is not None else None,
            "edge_node": self.node.stats() if self.node is not None else None,
        }

    def problems(self) -> list[str]:
        return self.node.problems() if self.node is not None else []

    async def stop(self) -> None:
        if self.node is not None:
            await self.node.stop()


async def install(agent: Agent) -> Sparkplug:
    cfg = agent.cfg
    own = (cfg.sparkplug.group_id, cfg.sparkplug.edge_node_id or cfg.gateway_id) if cfg.sparkplug.enabled else None
    ingest = None
    if any(sc.format == "sparkplug_b" for sc in cfg.subscriptions):
        from edge_agent.sparkplug.ingest import SparkplugIngest

        link = agent.link
        ingest = SparkplugIngest(cfg, agent.pipeline, agent.ingest, publish=lambda t, p: link.publish(t, p, qos=0), own=own)
        agent.message_handlers.append(("spBv1.0/", ingest.handle))
        for flt, qos in ingest.filters:
            link.subscribe(flt, qos)
    node = None
    if cfg.sparkplug.enabled:
        from edge_agent.sparkplug.node import EdgeNode

        node = EdgeNode(agent)
        await node.start()
    return Sparkplug(ingest, node)
