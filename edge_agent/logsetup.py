"""Logging: human-readable lines by default, JSON lines on request (for journald/log shippers)."""

from __future__ import annotations

import json
import logging
import sys
import time


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


class _DropGmqttNoise(logging.Filter):
    """gmqtt says "permanent, not reconnecting" on a refused CONNACK; our link does reconnect
    (and says why), so that line would only mislead whoever reads the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "not reconnecting" not in record.getMessage()


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # gmqtt logs every reconnect attempt at WARNING with tracebacks; the link says it once, better.
    gm = logging.getLogger("edge_agent.gmqtt")
    gm.setLevel(max(logging.getLevelName(level), logging.ERROR))
    gm.addFilter(_DropGmqttNoise())
    logging.getLogger("transitions").setLevel(logging.WARNING)  # amqtt's state machine (demo broker)
    logging.getLogger("gmqtt").setLevel(max(logging.getLevelName(level), logging.WARNING))
    # Loggers an outsider (or a flapping broker) can make talk: accept errors at a descriptor
    # limit, malformed HTTP requests, gmqtt's "[TRYING WRITE TO CLOSED SOCKET]" (10,858 lines
    # in 30 s of a link dropped again and again): at most one line per kind of message every
    # 10 s, with the count held back. (A filter applies to its own logger only, hence the list.)
    from edge_agent.ratelimit import RateLimitFilter

    for name in ("asyncio", "uvicorn.error", "uvicorn", "edge_agent.gmqtt", "gmqtt.client", "gmqtt.mqtt.connection",
                 "gmqtt.mqtt.handler", "gmqtt.mqtt.package", "gmqtt.mqtt.protocol", "gmqtt.mqtt.utils"):
        lg = logging.getLogger(name)
        lg.filters[:] = [f for f in lg.filters if not isinstance(f, RateLimitFilter)]
        lg.addFilter(RateLimitFilter(10.0))
